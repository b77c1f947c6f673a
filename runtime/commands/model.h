/* model.h (commands) — the language values for models: `model`, `module`, `tensor`.
 *
 *   m = load "tests/fixtures/models/llama"      # a model value
 *   m.layers[0].self_attn.q_proj                # a module value (shares the model)
 *   m.layers[0].self_attn.q_proj.weight         # a tensor value (a view into the mapping)
 *
 * Module and tensor values keep their model alive (a reference count on the loaded
 * checkpoint), so `q = m.layers[0].self_attn.q_proj; del m` leaves q usable.
 *
 * Other commands (train, generate, adapters) get at the C model through these: */
#ifndef LOUPE_COMMANDS_MODEL_H
#define LOUPE_COMMANDS_MODEL_H
#include "lang/value.h"
#include "model/model.h"
#include "util/sbuf.h"

extern const lv_type lv_model_type, lv_module_type, lv_tensor_type;

/* The loaded model behind a model, module or tensor value (borrowed), or NULL. */
mdl_model        *mv_model_of(lv_value *v);
/* The module behind a module value (a model value gives its root), or NULL. */
const mdl_module *mv_module_of(lv_value *v);
/* The tensor behind a tensor value, or a module value's weight; NULL otherwise. */
const mdl_tensor *mv_tensor_of(lv_value *v);

/* A new model value holding m (taken: freed with the value, also when this fails; NULL on
 * OOM), in training mode (1) or eval mode (0). */
lv_value *mv_new_model(mdl_model *m, int training);
/* The mode of a model value (PyTorch's module.training): `load` gives eval, `create` train. */
int  mv_training(lv_value *v);
void mv_set_training(lv_value *v, int on);
/* Gradient checkpointing (`gradient_checkpointing MODEL`): 0 until switched on. */
int  mv_checkpointing(lv_value *v);
void mv_set_checkpointing(lv_value *v, int on);

/* The device a model value computes on: "cpu", "cuda" or "guard" (the test device of
 * backend/guard: memory the host cannot touch). Static strings. */
const char *mv_device(lv_value *v);
/* The compute dtype `load dtype=` asked for ("auto", "f32", "bf16", "f16"): with the device,
 * which backend computes (be_get_dtype). */
const char *mv_dtype(lv_value *v);
/* NN_Q4_NF4 / NN_Q4_FP4 when the model was loaded with quantize="nf4" / "fp4" (its compute
 * stores 4-bit weights), else 0; mv_q4_double: 1 with double_quant=true. */
int mv_q4(lv_value *v);
int mv_q4_double(lv_value *v);
float mv_q8_threshold(lv_value *v);   /* quantize="int8": its outlier threshold */
/* A dtype by loupe's name or torch's ("f32"/"float32", "bf16"/"bfloat16", "f16"/"float16"):
 * 0 with it in *out, -1 for anything else. `load`, `create` and `save` take these. */
int mv_parse_dtype(const char *s, st_dtype *out);
void mv_set_device(lv_value *v, const char *device);
/* `device` checked (a known name whose backend is usable here): the static name, or NULL with
 * a message for the user in why ("device=\"cuda\": no CUDA device: …"). */
const char *mv_check_device(const char *device, char *why, size_t cap);
/* Tests: when set, every `load`/`create` that would compute on the CPU uses this device
 * instead, so whole scripts run on the guard device or a GPU (tests/unit/t_device.h). */
extern const char *mv_device_override;

/* What a module named `name` ("q_proj", "input_layernorm", "attention"…) does, in a few
 * sentences with m's numbers (m may be NULL: generic words). Appends to b; nothing when the
 * name is unknown. First line: one sentence that stands alone. (model_explain.c) */
void mv_explain(sbuf *b, const char *name, const mdl_model *m);
/* The words of training (lr, warmup, weight_decay, …, under the Trainer's names too): 1 when
 * `name` is one (its explanation appended to b), else 0. train_explain.c */
int mv_explain_training(sbuf *b, const char *name, const mdl_model *m);

#endif
