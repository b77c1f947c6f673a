/* model_explain.c — `explain`: what a module does, in words, with the numbers of the model in
 * front of the user. The notes this project grew from ask why layers are called q_proj and
 * what attention is; the answers live here, one entry per Hugging Face module name. */
#include "commands/model.h"
#include "lang/interp.h"
#include "lang/registry.h"
#include "model/arch.h"
#include "util/mem.h"
#include <stdio.h>
#include <string.h>

/* The model's numbers, or the config names when there is no model. */
typedef struct nums { char H[24], nh[24], kv[24], hd[24], I[24], V[24], L[24], q[24], k[24]; } nums;

static void fill(nums *n, const mdl_model *m) {
    const mdl_summary *s = m ? &m->summary : NULL;
#define F(f, v, name) do { if (s && (v)) snprintf(n->f, sizeof n->f, "%lld", (long long)(v)); \
                           else snprintf(n->f, sizeof n->f, "%s", name); } while (0)
    F(H, s ? s->hidden : 0, "hidden_size");
    F(nh, s ? s->heads : 0, "num_heads");
    F(kv, s ? s->kv_heads : 0, "num_kv_heads");
    F(hd, s ? s->head_dim : 0, "head_dim");
    F(I, s ? s->intermediate : 0, "intermediate_size");
    F(V, s ? s->vocab : 0, "vocab_size");
    F(L, s ? s->layers : 0, "num_layers");
    F(q, s ? s->heads * s->head_dim : 0, "num_heads·head_dim");
    F(k, s ? s->kv_heads * s->head_dim : 0, "num_kv_heads·head_dim");
#undef F
}

static void e_q(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Query projection: a Linear %s → %s that turns each token's hidden vector into %s "
              "query vectors (one per attention head) of %s numbers each.\n", n->H, n->q, n->nh, n->hd);
    sb_puts(b, "A query says what this token is looking for; its dot product with every earlier "
               "token's key decides how much of that token's value is read. \"q_proj\" is the "
               "name the Llama code gives it; LoRA most often targets q_proj and v_proj.");
}
static void e_k(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Key projection: a Linear %s → %s giving each token %s key vectors of %s numbers.\n",
              n->H, n->k, n->kv, n->hd);
    sb_printf(b, "Keys are what queries are compared with. With %s query heads sharing %s key/value "
              "heads (grouped-query attention when fewer), k_proj and v_proj are smaller than "
              "q_proj, and the KV cache shrinks by the same factor.", n->nh, n->kv);
}
static void e_v(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Value projection: a Linear %s → %s giving each token %s value vectors of %s numbers.\n",
              n->H, n->k, n->kv, n->hd);
    sb_puts(b, "Values are what attention actually copies: each head mixes the values of the tokens "
               "it attends to, weighted by softmax(q·k / √head_dim).");
}
static void e_o(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Output projection: a Linear %s → %s that mixes the %s heads' outputs back into one "
              "hidden vector, which is added to the residual stream.", n->q, n->H, n->nh);
}
static void e_attn(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Self-attention: each token looks at the tokens before it (all of them in an "
              "encoder like BERT) through %s heads of %s dimensions.\n", n->nh, n->hd);
    sb_puts(b, "q_proj, k_proj and v_proj make queries, keys and values; scores softmax(q·k/√d) "
               "weight the values; o_proj brings the heads back to the hidden size.");
    if (m && m->arch && (m->arch->flags & AF_SOFTCAP))
        sb_printf(b, " Gemma 2 caps the scores with tanh(s/%g)·%g before the softmax and alternates "
                  "sliding-window (%lld tokens) and global layers.", m->config->attn_logit_softcapping,
                  m->config->attn_logit_softcapping, (long long)m->config->sliding_window);
}
static void e_gate(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Gate projection: a Linear %s → %s whose output, through the activation (%s), "
              "multiplies up_proj's output element by element (a gated MLP, \"SwiGLU\"/\"GeGLU\").",
              n->H, n->I, m && m->config && m->config->hidden_act ? m->config->hidden_act : "silu");
}
static void e_up(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Up projection: a Linear %s → %s that widens each token's vector before the "
              "non-linearity; the MLP is where most parameters of a layer live.", n->H, n->I);
}
static void e_down(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Down projection: a Linear %s → %s that brings the widened vector back to the "
              "hidden size: mlp(x) = down(act(gate(x)) · up(x)).", n->I, n->H);
}
static void e_mlp(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Feed-forward block (MLP): works on each token separately, widening %s → %s and "
              "back; attention moves information between tokens, the MLP transforms it.", n->H, n->I);
}
static void e_embed(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Token embedding: a table of %s rows, one %s-number vector per token id; the "
              "model's first step.", n->V, n->H);
    if (m && m->arch && (m->arch->flags & AF_EMB_SCALE))
        sb_printf(b, " Gemma multiplies it by √%s.", n->H);
}
static void e_head(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Language-model head: a Linear %s → %s giving one score (logit) per token of the "
              "vocabulary for the next token.", n->H, n->V);
    const mdl_module *h = m ? mdl_find(m, "lm_head") : NULL;
    if (h && h->tied) sb_puts(b, " Here it is tied: it reuses the token embedding's weights.");
}
static void e_rms(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "RMSNorm: rescales each token's %s-number vector to unit root-mean-square, then "
              "multiplies by a learned weight%s; keeps the numbers in range layer after layer.", n->H,
              m && m->arch && m->arch->norm == NORM_RMS_PLUS_ONE ? " (Gemma: by 1 + weight)" : "");
}
static void e_qkvproj(sbuf *b, const nums *n, const mdl_model *m) {
    (void)m;
    sb_printf(b, "Phi-3's fused q, k, v projection: one Linear %s → (%s + 2·%s)·%s whose output is "
              "cut into the queries (the first %s heads), keys and values; LoRA on it (target "
              "\"qkv_proj\") adapts all three with one A and one B, as PEFT does.", n->H, n->nh,
              n->kv, n->hd, n->nh);
}
static void e_gateup(sbuf *b, const nums *n, const mdl_model *m) {
    (void)m;
    sb_printf(b, "Phi-3's fused gate and up projections: one Linear %s → 2·%s; the first %s "
              "outputs are the gate, the rest the up values, and the MLP computes "
              "down(act(gate)·up) as Llama's does with two Linears.", n->H, n->I, n->I);
}
static void e_qknorm(sbuf *b, const nums *n, const mdl_model *m) {
    int g3 = m && m->arch && m->arch->norm == NORM_RMS_PLUS_ONE;
    sb_printf(b, "%s q_norm / k_norm: an RMSNorm over each attention head's %s numbers of the "
              "query (q_norm) or key (k_norm), right after q_proj / k_proj and before the rotary "
              "embedding, with a learned weight of %s values shared by every head%s; it keeps the "
              "attention scores from growing with training.", g3 ? "Gemma 3's" : "Qwen3's",
              n->hd, n->hd, g3 ? " (multiplied as 1 + weight)" : "");
}
static void e_prenorm(sbuf *b, const nums *n, const mdl_model *m) {
    e_rms(b, n, m);
    sb_puts(b, "\nApplied before the sub-block (pre-norm); the sub-block's output is added to the "
               "un-normalised residual stream.");
}
static void e_ln(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "LayerNorm: subtracts the mean of each token's %s-number vector, divides by its "
              "standard deviation, then scales and shifts by learned weight and bias.", n->H);
}
static void e_layer(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "The stack of %s identical blocks; each one is attention then MLP, each wrapped "
              "in a norm and a residual connection.", n->L);
}
static void e_cattn(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "GPT-2's fused q, k, v projection: a Conv1D %s → 3·%s (weights stored [in, out], "
              "y = x·W + b), split into query, key and value afterwards.", n->H, n->H);
}
static void e_cproj(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "GPT-2's output projection (Conv1D, weights [in, out]): attn.c_proj maps the heads "
               "back to the hidden size; mlp.c_proj maps the MLP back from 4× the hidden size.");
}
static void e_cfc(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "GPT-2's MLP input (Conv1D %s → %s, weights [in, out]), followed by GELU.", n->H, n->I);
}
static void e_wpe(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "Learned position embedding: one vector per position, added to the token "
               "embedding (GPT-2, BERT); Llama-style models use rotary embeddings (RoPE) instead, "
               "which have no weights.");
}
static void e_type(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "BERT's token-type (segment) embedding: tells sentence A from sentence B in a pair.");
}
static void e_pooler(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "BERT's pooler: a Linear %s → %s with tanh over the first token ([CLS]); its "
              "output feeds the classifier.", n->H, n->H);
}
static void e_classifier(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Classification head: a Linear %s → %lld giving one score per label", n->H,
              (long long)(m && m->config ? m->config->num_labels : 0));
    if (m && m->config && m->config->id2label && m->config->num_labels)
        sb_printf(b, " (%s … %s)", m->config->id2label[0], m->config->id2label[m->config->num_labels - 1]);
    sb_puts(b, "; newly trained when fine-tuning.");
}

/* ---- the open questions of the tutorials: heads, rope, and LoRA's knobs -------------------- */

static void e_heads(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "Attention heads: the hidden vector is split into %s heads of %s numbers; each head "
              "does its own attention (its own idea of which tokens matter) and o_proj mixes them.\n",
              n->nh, n->hd);
    sb_printf(b, "Keys and values have %s heads. When that is fewer than the query heads "
              "(grouped-query attention), each key/value head serves a group of query heads: "
              "k_proj and v_proj shrink, and so does the KV cache that generation keeps.",
              n->kv);
}
static void e_head_dim(sbuf *b, const nums *n, const mdl_model *m) {
    sb_printf(b, "head_dim: the size of one head's query, key and value vectors, here %s. "
              "Scores are q·k / √head_dim, so they do not grow with the head size; rotary "
              "position embeddings rotate the head_dim numbers in pairs.", n->hd);
}
static void e_rope(sbuf *b, const nums *n, const mdl_model *m) {
    double theta = m && m->config ? m->config->rope_theta : 0;
    sb_puts(b, "RoPE (rotary position embedding): before attention, each query and key is rotated by "
               "an angle that grows with the token's position, pair of numbers by pair of numbers, "
               "at different speeds. The dot product q·k then depends on how far apart two tokens "
               "are, not where they are: there is no position table to learn.\n");
    if (theta > 0)
        sb_printf(b, "This model: rope_theta = %g (the slowest pair turns once every ~2π·%g^(1 - 2/%s) "
                  "positions); rope_scaling stretches the angles for contexts longer than training.",
                  theta, theta, n->hd);
    else
        sb_puts(b, "rope_theta (often 10000 or 500000) sets the speeds; rope_scaling stretches them "
                   "for longer contexts.");
    if (m && m->config && m->config->nope_layers) {
        int64_t L = m->config->num_hidden_layers, count = 0;
        for (int64_t l = 0; l < L; l++) count += m->config->nope_layers[l];
        sb_printf(b, "\nSmolLM3: some layers use no RoPE at all (NoPE: their attention sees no "
                  "position, only the causal order); here %s", count == 1 ? "layer" : "layers");
        int any = 0;
        for (int64_t l = 0; l < L; l++)
            if (m->config->nope_layers[l]) sb_printf(b, "%s %lld", any++ ? "," : "", (long long)l);
        sb_puts(b, any ? "." : " none.");
    }
    if (m && m->arch && (m->arch->flags & AF_DUAL_ROPE))
        sb_printf(b, "\nGemma 3: the sliding-window layers rotate with their own base (%g here), "
                  "the full-attention layers with rope_theta and its scaling.",
                  m->config->rope_local_theta > 0 ? m->config->rope_local_theta : 10000.0);
}
/* q_proj's shape, for LoRA's arithmetic. */
static void q_dims(const mdl_model *m, long long *in, long long *out) {
    *in = m ? m->summary.hidden : 0;
    *out = m ? m->summary.heads * m->summary.head_dim : 0;
}
static void e_lora(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "LoRA (low-rank adaptation): the base weight W stays frozen, and a small update is "
               "learned beside it: y = W·x + (alpha/r)·B·(A·x), with A of shape [r, in] and B of "
               "shape [out, r]. B starts at zero, so training starts from the base model exactly.\n");
    long long in, out;
    q_dims(m, &in, &out);
    if (in && out)
        sb_printf(b, "On this model's q_proj (%lld → %lld, %lld weights), r=8 trains %lld numbers "
                  "(%.1f%%). Try: lora model r=8 alpha=16 target=[\"q_proj\", \"v_proj\"]",
                  in, out, in * out, 8 * (in + out), 100.0 * 8 * (in + out) / (double)(in * out));
    else
        sb_puts(b, "Try: lora model r=8 alpha=16 target=[\"q_proj\", \"v_proj\"]");
}
static void e_r(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "r (LoRA rank): the width of the bottleneck between A and B. Larger r can express "
               "more of a change and trains more numbers: r·(in + out) per adapted layer. "
               "Typical values are 4 to 64; PEFT's default is 8.\n");
    long long in, out;
    q_dims(m, &in, &out);
    if (in && out)
        sb_printf(b, "Here, per q_proj: r=4 → %lld, r=8 → %lld, r=64 → %lld numbers (the weight "
                  "itself has %lld).", 4 * (in + out), 8 * (in + out), 64 * (in + out), in * out);
}
static void e_alpha(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "alpha (lora_alpha): scales the update: it is multiplied by alpha/r (alpha/√r with "
               "rsLoRA). With alpha = 2·r the update counts twice; changing r while keeping alpha/r "
               "fixed keeps the learning rate meaningful. PEFT's default is alpha = 8.");
}
static void e_dropout(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "dropout (lora_dropout): during training, each input to the LoRA branch is zeroed "
               "with this probability (the rest scaled up by 1/(1-p)), so the adapter cannot rely "
               "on single features; it does nothing at inference. 0.05 to 0.1 is common; 0 by default.");
}
static void e_targets(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "target modules: which layers get a LoRA adapter, by name: \"q_proj\" matches every "
               "module called q_proj (or ending in .q_proj); a string is a regular expression over "
               "the full path; \"all-linear\" takes every Linear layer except the output head. "
               "q_proj and v_proj are the classic choice; all-linear usually learns more.\n");
    if (m && m->arch)
        sb_puts(b, "See the names with: layers model \"layers.0.*\"");
}
static void e_qlora(sbuf *b, const nums *n, const mdl_model *m) {
    sb_puts(b, "QLoRA: LoRA on top of a base model stored in 4 bits. Each block of 64 weights keeps "
               "one scale (its largest magnitude) and 16 levels (NF4: spaced like a normal "
               "distribution, so common small weights get fine steps); the weights are widened "
               "only to compute (bitsandbytes to its compute dtype; loupe to f32, or to bf16 with "
               "dtype=\"bf16\" on a GPU). The adapters stay "
               "in full precision and are trained as usual. In loupe: `m = load PATH "
               "quantize=\"nf4\"`, then `lora m ...`. quantize=\"fp4\" is bitsandbytes' 4-bit "
               "float instead; double_quant=true (bnb_4bit_use_double_quant) stores the scales "
               "in 8 bits too, a scale a block of 256 scales (0.127 instead of 0.5 bit a "
               "weight). A checkpoint saved from a 4-bit model (the Hub's \"-bnb-4bit\" ones) "
               "loads as stored.\n");
    if (m) {
        double p = (double)m->summary.params;
        sb_printf(b, "This model's %.0f parameters: ", p);
        sb_bytes(b, (unsigned long long)(p * 2));
        sb_puts(b, " in bf16, about ");
        sb_bytes(b, (unsigned long long)(p * 0.5 + p / 64 * 4));
        sb_puts(b, " in NF4 (0.5 byte each + a 4-byte scale per 64; ");
        sb_bytes(b, (unsigned long long)(p * 0.5 + p / 64 + p / 16384 * 4));
        sb_puts(b, " with double_quant) if every one were quantized; the embeddings and the "
                   "output layer stay in full precision, as with transformers.");
    }
}
static void e_int8(sbuf *b, const nums *n, const mdl_model *m) {
    (void)n, (void)m;
    sb_puts(b, "LLM.int8 (BitsAndBytesConfig(load_in_8bit=True), bitsandbytes' Linear8bitLt): "
               "every Linear weight but the output layer stored as int8, each row scaled by its "
               "largest value (1 byte a weight instead of 4). A product rounds its input to f16 "
               "and each row of it to int8 the same way, multiplies the int8 values exactly, and "
               "scales back; input columns holding a value of at least llm_int8_threshold (6) "
               "are outliers, multiplied apart in full precision, since rounding them would "
               "lose the few large features transformers rely on. The weights stay frozen; "
               "LoRA adapters train beside them, as with QLoRA's 4 bits. Try: m = load PATH "
               "quantize=\"int8\" (int8_threshold=6)");
}

static void e_pattern(sbuf *b, const nums *n, const mdl_model *m) {
    (void)n, (void)m;
    sb_puts(b, "rank_pattern / alpha_pattern (PEFT's LoraConfig): another r, or another "
               "lora_alpha, for the modules a key matches. A key is a regex that must match the end "
               "of the module's name after a dot (\"q_proj\" matches every q_proj, "
               "\"layers\\\\.0\\\\.self_attn\\\\.q_proj\" one of them); the first key that matches "
               "wins; modules no key matches take r and alpha. Each module's scale is its own alpha/r. "
               "Try: lora model r=8 alpha=16 target=\"all-linear\" rank_pattern={\"down_proj\": 16}");
}
static void e_dora(sbuf *b, const nums *n, const mdl_model *m) {
    (void)n;
    sb_puts(b, "DoRA (PEFT's use_dora=True, weight-decomposed LoRA): the updated weight "
               "W' = W + (alpha/r)·B·A is split into a direction and a length per output channel. "
               "Each row W'_j is rescaled to a trained magnitude m_j: the layer computes "
               "(m_j / ||W'_j||)·(W'·x)_j + b_j. m starts at the rows' norms ||W_j||, so an untrained "
               "adapter changes nothing; the norms ||W'_j|| are recomputed every forward but get no "
               "gradient (the paper's section 4.3). It trains `out` numbers more per layer than "
               "LoRA and merges into the weight as LoRA does, then rescaled by m/||W'||.");
    long long in, out;
    q_dims(m, &in, &out);
    if (in && out)
        sb_printf(b, "\nOn this model's q_proj (%lld → %lld), r=8 DoRA trains %lld numbers: "
                  "LoRA's %lld and a magnitude of %lld.", in, out, 8 * (in + out) + out,
                  8 * (in + out), out);
    sb_puts(b, "\nTry: lora model r=8 alpha=16 dora=true target=\"all-linear\"");
}
static void e_ia3(sbuf *b, const nums *n, const mdl_model *m) {
    (void)n;
    sb_puts(b, "IA3 (PEFT's IA3Config): instead of adding B·A, it learns one scaling vector per "
               "targeted layer, initialised to ones: k_proj's and v_proj's outputs are multiplied "
               "by it channel by channel, and down_proj's input (a \"feed-forward\" target). "
               "Far fewer numbers than LoRA, and it merges into the weight as a column or row "
               "scale. `ia3 model` attaches it with PEFT's defaults for the model type.");
    const mdl_summary *s = m ? &m->summary : NULL;
    const char *mt = m && m->config && m->config->model_type ? m->config->model_type : "";
    int q = !strcmp(mt, "qwen2") || !strcmp(mt, "qwen3") || !strcmp(mt, "gemma") ||
            !strcmp(mt, "gemma2") || !strcmp(mt, "gemma3_text");
    if (s && s->kv_heads && s->head_dim && s->intermediate && s->layers &&
        (q || !strcmp(mt, "llama") || !strcmp(mt, "mistral"))) {
        long long first = (long long)((q ? s->heads : s->kv_heads) * s->head_dim);
        long long v = (long long)(s->kv_heads * s->head_dim), d = (long long)s->intermediate;
        sb_printf(b, "\nOn this model `ia3 model` trains %s_proj, v_proj and down_proj: %lld "
                  "numbers a layer (%lld + %lld + %lld), %lld in all.", q ? "q" : "k",
                  first + v + d, first, v, d, (first + v + d) * (long long)s->layers);
    }
}
static void e_adalora(sbuf *b, const nums *n, const mdl_model *m) {
    (void)n;
    sb_puts(b, "AdaLoRA (PEFT's AdaLoraConfig): LoRA written as B·diag(E)·A, with E a column of "
               "init_r learned singular values (12 by default). After every optimizer step each "
               "(A row, E value, B column) is scored by how much the loss depends on it "
               "(moving averages of |weight·gradient|); between steps tinit and total_step - "
               "tfinal the lowest-scoring E values are set to zero until the ranks left average "
               "target_r (8), so rank goes where it helps. A penalty (orth_reg_weight) keeps A's "
               "rows and B's columns orthonormal. `adalora model total_step=N` attaches it; "
               "`trainable model` shows the ranks each module keeps.");
    const mdl_summary *s = m ? &m->summary : NULL;
    const char *mt = m && m->config && m->config->model_type ? m->config->model_type : "";
    int qv = !strcmp(mt, "llama") || !strcmp(mt, "qwen2") || !strcmp(mt, "qwen3") ||
             !strcmp(mt, "gemma") || !strcmp(mt, "gemma2") || !strcmp(mt, "gemma3_text");
    if (s && qv && s->hidden && s->heads && s->kv_heads && s->head_dim && s->layers) {
        long long H = (long long)s->hidden, q = (long long)(s->heads * s->head_dim);
        long long v = (long long)(s->kv_heads * s->head_dim);
        long long per = 12 * (H + q + 1) + 12 * (H + v + 1);
        sb_printf(b, "\nOn this model `adalora model` trains q_proj and v_proj at init_r 12: %lld "
                  "numbers a layer (A, B and E), %lld in all, of which the allocator keeps about "
                  "two thirds of the ranks (target_r 8) by the end.", per,
                  per * (long long)s->layers);
    }
}

static const struct {
    const char *names;   /* space-separated aliases */
    void (*fn)(sbuf *b, const nums *n, const mdl_model *m);
} entries[] = {
    {"q_proj query", e_q}, {"k_proj key", e_k}, {"v_proj value", e_v},
    {"o_proj", e_o}, {"self_attn attn attention self", e_attn},
    {"gate_proj", e_gate}, {"up_proj", e_up}, {"down_proj", e_down},
    {"mlp intermediate", e_mlp},
    {"embed_tokens wte word_embeddings", e_embed}, {"lm_head", e_head},
    {"input_layernorm post_attention_layernorm pre_feedforward_layernorm", e_prenorm},
    {"post_feedforward_layernorm norm rmsnorm", e_rms},
    {"q_norm k_norm qk_norm", e_qknorm},
    {"qkv_proj", e_qkvproj}, {"gate_up_proj", e_gateup},
    {"ln_1 ln_2 ln_f LayerNorm layernorm", e_ln},
    {"layers h layer", e_layer},
    {"c_attn", e_cattn}, {"c_proj", e_cproj}, {"c_fc", e_cfc},
    {"wpe position_embeddings", e_wpe}, {"token_type_embeddings", e_type},
    {"pooler", e_pooler}, {"classifier", e_classifier},
    {"heads num_attention_heads kv_heads num_key_value_heads gqa", e_heads},
    {"head_dim", e_head_dim}, {"rope rotary_emb rope_theta rotary", e_rope},
    {"lora", e_lora}, {"r rank", e_r}, {"alpha lora_alpha", e_alpha},
    {"dropout lora_dropout", e_dropout}, {"target_modules targets target", e_targets},
    {"qlora nf4 fp4 double_quant bnb_4bit_use_double_quant bnb_4bit_quant_type load_in_4bit",
     e_qlora},
    {"ia3 IA3", e_ia3}, {"adalora AdaLoRA", e_adalora},
    {"dora DoRA use_dora lora_magnitude_vector magnitude", e_dora},
    {"rank_pattern alpha_pattern", e_pattern},
    {"int8 load_in_8bit llm_int8_threshold LLM.int8 Linear8bitLt", e_int8},
};

void mv_explain(sbuf *b, const char *name, const mdl_model *m) {
    nums n;
    fill(&n, m);
    for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++)
        if (reg_has_word(entries[i].names, name)) { entries[i].fn(b, &n, m); return; }
    mv_explain_training(b, name, m);
}

/* The model the user most likely means: the last model-valued variable. */
static mdl_model *last_model(lp_call *c) {
    lp_interp *it = lp_call_interp(c);
    for (size_t i = it->vars->u.dict.n; i-- > 0;) {
        mdl_model *m = mv_model_of(it->vars->u.dict.e[i].val);
        if (m) return m;
    }
    return NULL;
}

static int run_explain(lp_call *c, lv_value **result) {
    lv_value *what = lp_arg(c, "what");
    lv_value *mv = lp_arg(c, "model");
    mdl_model *m = mv->kind != LV_NONE ? mv_model_of(mv) : NULL;
    const char *name = NULL;
    const mdl_module *mod = NULL;
    if (what->kind == LV_STR) name = what->u.str.s;
    else if ((mod = mv_module_of(what))) { name = mod->local; if (!m) m = mv_model_of(what); }
    else if (mv_tensor_of(what)) return lp_fail(c, "TypeError", "explain a module, not a tensor: "
                                                 "drop the `.weight`");
    else return lp_fail(c, "TypeError", "expected a module or a name like q_proj, got %s",
                        lv_type_name(what));
    if (!m) m = last_model(c);
    /* `layers.0.self_attn.q_proj` as a string: the last word names it */
    const char *dot = strrchr(name, '.');
    if (dot && dot[1]) name = dot + 1;
    sbuf b;
    sb_init(&b);
    if (mod) {
        sb_printf(&b, "%s (%s", mod->path[0] ? mod->path : "the model", mod->cls);
        if (mod->type == MT_LINEAR || mod->type == MT_CONV1D)
            sb_printf(&b, " %lld → %lld", (long long)mod->in, (long long)mod->out);
        sb_puts(&b, ")\n");
    }
    size_t before = b.len;
    mv_explain(&b, name, m);
    if (b.len == before) {
        sb_free(&b);
        return lp_fail(c, "ValueError", "no explanation for `%s` yet; try q_proj, k_proj, v_proj, "
                       "o_proj, self_attn, mlp, gate_proj, up_proj, down_proj, embed_tokens, "
                       "lm_head, input_layernorm, layers, lora, r, alpha, qlora, ia3, adalora, lr, warmup, schedule, "
                       "weight_decay, adamw, clip, accumulate, batch, loss, labels, bf16", name);
    }
    if (b.oom) { sb_free(&b); return lp_fail(c, "MemoryError", "out of memory"); }
    sb_putc(&b, '\n');
    lp_out_text(c, 1, sb_str(&b), b.len);   /* prose reads better as text than as a string value */
    sb_free(&b);
    return 0;
}
static const lp_param explain_params[] = {
    {"what", LP_T_NAME, .help = "a module (m.layers[0].self_attn.q_proj), a name (q_proj), or a word of "
                                "training (lr, warmup, weight_decay, loss, bf16; the Trainer's names too)"}, {0}};
static const lp_param explain_opts[] = {
    {"model", LP_T_VALUE, .def = "none", .vtype = &lv_model_type,
     .help = "whose numbers to use (default: the module's model, else the last loaded)"}, {0}};
const lp_command lp_cmd_explain = {
    "explain", explain_params, explain_opts, run_explain,
    .summary = "What a layer or a training setting does, with this model's numbers",
    .help = "Example:\n    explain q_proj\n    explain m.layers[0].mlp.down_proj\n"
            "    explain attention model=m\n    explain gradient_accumulation_steps",
};
