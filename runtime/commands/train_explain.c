/* train_explain.c — `explain` for the words of training: learning rate, warmup, schedules,
 * weight decay, AdamW, clipping, accumulation, batch, loss and perplexity, labels, bf16. The
 * Trainer's argument names are aliases, so `explain "gradient_accumulation_steps"` answers
 * as `explain "accumulate"` does; where the model changes the answer, its numbers are used. */
#include "commands/model.h"
#include "lang/registry.h"
#include <math.h>

static void t_lr(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "learning rate (lr; the Trainer's learning_rate): how far each optimizer step moves "
               "the weights along the (Adam-normalised) gradient. Too high and the loss jumps or "
               "becomes NaN; too low and it barely moves. LoRA usually takes 1e-4 to 1e-3, full "
               "fine-tuning 1e-5 to 5e-5 (the Trainer's default is 5e-5, loupe's train and adamw "
               "2e-4). `step` prints the lr it used; a schedule changes it step by step.");
}
static void t_warmup(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "warmup (warmup_steps, num_warmup_steps): the lr grows linearly from 0 to its peak "
               "over the first N steps, so the first updates, made while Adam's statistics are "
               "still noise, stay small. As in transformers, the first step runs at lr 0. A few "
               "percent of the run is common.");
}
static void t_schedule(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "schedule (lr_scheduler_type): how the lr changes after warmup. \"linear\" (the "
               "Trainer's default) falls in a straight line to 0 at the last step; \"cosine\" "
               "follows half a cosine down to 0, staying high longer; \"constant\" keeps the peak. "
               "Decaying schedules need the run's length: steps= (train knows it).");
}
static void t_decay(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "weight_decay: AdamW shrinks every trained weight a little each step, w -= "
               "lr·weight_decay·w, apart from the gradient (\"decoupled\"), which keeps weights "
               "small. torch's AdamW and loupe default to 0.01; the Trainer passes 0.0 unless told. "
               "For LoRA it pulls A and B, and so the update, towards zero.");
}
static void t_adam(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "AdamW: keeps two running averages per trained number, of the gradient (betas[0] = "
               "0.9) and of its square (betas[1] = 0.999), and steps by lr·m / (√v + eps) with eps "
               "= 1e-8: every weight moves about lr per step whatever its gradient's scale. "
               "The two averages cost 8 bytes per trained number, which is small for LoRA and "
               "twice the f32 model for full fine-tuning. \"W\": weight decay apart from the "
               "gradient (see weight_decay).");
}
static void t_clip(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "gradient clipping (clip; the Trainer's max_grad_norm, 1.0 by default): when the L2 "
               "norm of all gradients together is above the limit, every gradient is scaled down "
               "by the same factor to meet it, so one bad batch cannot throw the weights far. "
               "`step` and the progress line show the norm before clipping.");
}
static void t_accumulate(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "gradient accumulation (accumulate; gradient_accumulation_steps): N forwards and "
               "backwards add their gradients before one optimizer step, each weighted by its share "
               "of the counted tokens (as transformers' num_items_in_batch), so the step takes the "
               "gradient of one batch of batch·N examples while memory holds only one batch.");
}
static void t_batch(sbuf *b, const mdl_model *m) {
    sb_puts(b, "batch (per_device_train_batch_size): examples per forward. A step sees batch × "
               "sequence length tokens; activation memory grows with both. Larger batches give "
               "smoother gradients and usually take a larger lr.");
    if (m && m->summary.hidden && m->summary.layers)
        sb_printf(b, "\nHere each token is a vector of %lld numbers through each of %lld layers, "
                  "and training keeps several such vectors per token and layer for the backward.",
                  (long long)m->summary.hidden, (long long)m->summary.layers);
}
static void t_epochs(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "epochs and steps (num_train_epochs, max_steps): an epoch is one pass over the "
               "training set; a step is one optimizer update (batch × accumulate examples). train "
               "takes one of them (epochs= becomes the steps it needs). A new seeded shuffle starts "
               "every epoch.");
}
static void t_loss(sbuf *b, const mdl_model *m) {
    sb_puts(b, "loss (cross-entropy): for each position, -log of the probability the model gave "
               "the true next token, averaged over the positions that count (labels -100 do not). "
               "perplexity = e^loss: the number of tokens the model is as unsure as choosing "
               "between.");
    if (m && m->summary.vocab > 1)
        sb_printf(b, "\nWith this model's %lld-token vocabulary, guessing uniformly scores "
                  "ln %lld = %.2f; a trained model scores far less.", (long long)m->summary.vocab,
                  (long long)m->summary.vocab, log((double)m->summary.vocab));
}
static void t_labels(sbuf *b, const mdl_model *m) {
    (void)m;
    sb_puts(b, "labels and masks: for a causal LM the labels are the input ids themselves; the "
               "model shifts them by one to predict each next token. -100 marks positions left out "
               "of the loss (padding, and the prompt when dataset has prompt= and response=). "
               "attention_mask is 1 for real tokens and 0 for padding, which loupe puts on the "
               "right. `next data` shows a batch's ids, pieces, mask and labels.");
}
static void t_bf16(sbuf *b, const mdl_model *m) {
    sb_puts(b, "bf16 (bfloat16): 16-bit floats with f32's 8-bit exponent (the same range) and 7 "
               "mantissa bits (about 3 significant digits). f16 has 10 mantissa bits but overflows "
               "past 65504, hence loss scaling in f16 training. Mixed precision keeps weights or "
               "products in 16 bits and the sums in f32. dtype=\"bf16\" in loupe: matrix products "
               "take bf16-rounded inputs and add in f32.");
    if (m && m->summary.params)
        sb_printf(b, "\nThis model's %lld parameters: %.1f MB in f32, %.1f MB in bf16.",
                  (long long)m->summary.params, m->summary.params * 4 / 1e6,
                  m->summary.params * 2 / 1e6);
}
static void t_ckpt(sbuf *b, const mdl_model *m) {
    sb_puts(b, "gradient checkpointing (gradient_checkpointing_enable, TrainingArguments "
               "gradient_checkpointing=True): the backward needs each layer's intermediate "
               "values (norm outputs, q/k/v, the MLP's hidden activations); instead of keeping "
               "them from the forward, keep only each layer's input and run the layer's forward "
               "again just before its backward. The same gradients, for about one more forward "
               "a step. In loupe: `gradient_checkpointing m`, or `train ... "
               "gradient_checkpointing=true`.");
    if (m && m->summary.hidden && m->summary.layers && m->summary.intermediate)
        sb_printf(b, "\nHere a layer keeps %lld floats a token instead of roughly %lld (4 × %lld "
                  "hidden + 2 × %lld intermediate and the attention's q/k/v), over %lld layers.",
                  (long long)m->summary.hidden,
                  (long long)(6 * m->summary.hidden + 2 * m->summary.intermediate),
                  (long long)m->summary.hidden, (long long)m->summary.intermediate,
                  (long long)m->summary.layers);
}

static const struct {
    const char *names;   /* space-separated aliases */
    void (*fn)(sbuf *b, const mdl_model *m);
} entries[] = {
    {"gradient_checkpointing checkpointing activation_checkpointing", t_ckpt},
    {"lr learning_rate", t_lr},
    {"warmup warmup_steps num_warmup_steps", t_warmup},
    {"schedule lr_scheduler_type scheduler linear cosine constant", t_schedule},
    {"weight_decay decay", t_decay},
    {"adamw adam betas eps adam_epsilon optimizer optim", t_adam},
    {"clip clipping max_grad_norm grad_norm", t_clip},
    {"accumulate gradient_accumulation_steps accumulation", t_accumulate},
    {"batch batch_size per_device_train_batch_size", t_batch},
    {"epochs epoch num_train_epochs steps max_steps step", t_epochs},
    {"loss cross_entropy perplexity ppl", t_loss},
    {"labels label -100 attention_mask mask padding", t_labels},
    {"bf16 bfloat16 f16 float16 fp16 mixed_precision dtype", t_bf16},
};

int mv_explain_training(sbuf *b, const char *name, const mdl_model *m) {
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        if (reg_has_word(entries[i].names, name)) {
            entries[i].fn(b, m);
            return 1;
        }
    return 0;
}
