/* compute.h (commands) — the compute state behind a model value, for commands outside
 * forward.c (train, data, adapters). forward.c keeps one fw_model (f32 weights, arena,
 * adapters, trainable parameters) per loaded model in a small cache; these reach it.
 *
 *   fw_model *fm = cmd_compute(c, "model", 1);   // NULL after lp_fail (not a model, unknown arch)
 *   tok_tokenizer *tok = cmd_tokenizer(c, "model");   // NULL: the model has no tokenizer.json
 *
 * `runs` = 1 when the command will run a forward on fm: earlier `forward` outputs then know
 * their logits were replaced (they read the same arena). The fw_model stays valid while the
 * model value is alive and the cache keeps it (at most two models hold compute state; a third
 * evicts the least recently used one that holds no adapters, trainable or trained weights
 * (fw_has_training), so hold the model value and re-fetch, never cache fm across
 * cells without checking cmd_compute_of_value gives the same pointer). */
#ifndef LOUPE_COMMANDS_COMPUTE_H
#define LOUPE_COMMANDS_COMPUTE_H
#include "lang/registry.h"
#include "model/tok.h"
#include "nn/forward.h"
#include "nn/migrate.h"
#include "util/sbuf.h"

fw_model *cmd_compute(lp_call *c, const char *arg, int runs);
/* The same for a model value (not an argument name). */
fw_model *cmd_compute_of_value(lp_call *c, lv_value *model, int runs);
tok_tokenizer *cmd_tokenizer(lp_call *c, const char *arg);
/* `to` moved the compute state of a model value to another device (nn/migrate.h) and dropped
 * its activations: outputs of earlier forwards are no longer current. */
void cmd_compute_moved(lv_value *model);
/* The compute state a model value already has (its live, maybe trained weights), or NULL;
 * makes none. */
fw_model *cmd_compute_peek(lv_value *model);
/* The same, found by the loaded model a value refers to (a module or tensor view's model). */
fw_model *cmd_compute_peek_model(const mdl_model *m);
/* save_model.c: `save MODEL DIR [dtype=]` (save.c hands a model value over). */
int cmd_save_model(lp_call *c, lv_value *model, const char *dir, const char *dtype);
tok_tokenizer *cmd_tokenizer_of_value(lp_call *c, lv_value *model);
/* The compute state whose last forward made the forward output `out` (what `backward` needs);
 * NULL after lp_fail when `out` is not one, or a later forward on that model replaced it. */
fw_model *cmd_forward_output_model(lp_call *c, lv_value *out);

/* train.c: drop the training runs (optimizer state, loss curve) of models the user no longer
 * holds, except `keep`; the cache calls it before choosing a slot. */
void cmd_train_release(const lv_value *keep);

/* train.c, for `to`: copy the state of every optimizer and `train` run over the model being
 * moved (0, or -1 + lp_seterr: abort the move), naming them in `what` (", optimizer opt");
 * then, once every copy is made, point them at the copies (before fw_move_commit). */
int  cmd_train_move_copy(lp_call *c, fw_move *mv, sbuf *what);
void cmd_train_move_commit(const fw_move *mv);

/* Option `arg` as module names: a list of strings, or one string (*is_str: a regex, or a
 * keyword such as "all-linear"); *out (borrowed strings; free the array) NULL for none.
 * -1 after lp_fail on another type. */
int cmd_names(lp_call *c, const char *arg, const char ***out, size_t *n, int *is_str);

/* Options exclude=, layers=, layers_pattern= (CMD_FILTER_OPTS, in lora, ia3 and adalora) into
 * f; cmd_filter_free frees what it made. -1 after lp_fail. */
struct tr_filter;
int  cmd_filter(lp_call *c, struct tr_filter *f);
void cmd_filter_free(struct tr_filter *f);
#define CMD_FILTER_OPTS                                                                        \
    {"exclude", LP_T_ANY, .def = "none",                                                       \
     .help = "modules never adapted: names (a name matches itself or a .suffix) or one regex "  \
             "(full match)", .hf = "exclude_modules"},                                          \
    {"layers", LP_T_ANY, .def = "none",                                                        \
     .help = "only these layers (an index or a list), for targets matched by suffix",           \
     .hf = "layers_to_transform"},                                                             \
    {"layers_pattern", LP_T_ANY, .def = "none",                                                \
     .help = "the name of the layer list whose index `layers` reads (\"layers\", \"h\"); "      \
             "default: the first numbered part of the module's name"}

#endif
