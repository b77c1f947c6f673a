/* registry.h — how commands are declared, checked and run.
 *
 * Adding a command = one declaration in your own file + one line in
 * runtime/commands/list.h. The declaration drives argument checking ("unknown option
 * `lr_rate` for `adamw`; did you mean `lr`?"), `help`, completion and inspection.
 *
 *   // runtime/commands/train.c
 *   #include "lang/registry.h"
 *   static int run_adamw(lp_call *c, lv_value **result) {
 *       my_model *m = lp_arg_ptr(c, "model", &lv_model_type);    // checked by the registry
 *       double lr = lp_arg_float(c, "lr");
 *       if (lr <= 0) return lp_fail(c, "ValueError", "lr must be positive, got %g", lr);
 *       *result = lv_new_opaque(&lv_optimizer_type, make_adamw(m, lr));
 *       return *result ? 0 : -1;
 *   }
 *   static const lp_param adamw_params[] = {
 *       { "model", LP_T_VALUE, .vtype = &lv_model_type, .help = "the model to train" }, { 0 } };
 *   static const lp_param adamw_opts[] = {
 *       { "lr", LP_T_FLOAT, .def = "2e-4", .help = "learning rate" },
 *       { "betas", LP_T_LIST, .def = "[0.9, 0.999]", .help = "Adam's beta1, beta2" }, { 0 } };
 *   const lp_command lp_cmd_adamw = { "adamw", adamw_params, adamw_opts, run_adamw,
 *       .summary = "Make an AdamW optimizer for the trainable weights",
 *       .help = "Example:\n    opt = adamw model lr=1e-4\n    step opt" };
 *   // runtime/commands/list.h:   LP_CMD(adamw)
 *
 * Defaults are written as loupe literals ("2e-4", "\"cosine\"", "[1, 2]", "none"); a NULL
 * default makes the parameter required. A parameter whose default is "none" also accepts
 * none. Arguments reach the command already checked and converted (an int passed to a
 * float parameter arrives as a float).
 *
 * Failing: return -1 after lp_fail(c, "ValueError", ...) or plain lp_seterr(...); the user
 * sees "ValueError: `adamw`: lr must be positive, got -1" with the source line and a caret.
 * A command that fails must leave things as they were (the language's promise: a failed
 * statement changes nothing).
 *
 * Long work: call lp_check_interrupt(c) at every step boundary and stop cleanly when it
 * returns -1 (return -1 yourself; the error is already set to "Interrupted").
 * Live output: lp_out_display(c, bundle, id, 0) once, then lp_out_display(c, bundle, id, 1)
 * to redraw it in place (update_display_data). Tables: see lang/table.h. */
#ifndef LOUPE_REGISTRY_H
#define LOUPE_REGISTRY_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "lang/value.h"

typedef enum {
    LP_T_ANY,      /* any value */
    LP_T_INT,
    LP_T_FLOAT,    /* int accepted, converted */
    LP_T_STRING,
    LP_T_BOOL,
    LP_T_LIST,
    LP_T_DICT,
    LP_T_VALUE,    /* an opaque value of type .vtype (any opaque value when .vtype is NULL) */
    LP_T_NAME,     /* a bare name is passed as its text, not evaluated (`help print`, `del x`);
                      anything else is evaluated as usual */
} lp_ptype;

enum {
    LP_P_VARIADIC = 1,   /* last positional only: takes all remaining arguments, as a list */
};

typedef struct lp_param {
    const char *name;
    lp_ptype type;
    const char *def;         /* default as a loupe literal; NULL: required */
    const char *help;        /* one line, shown by `help COMMAND` */
    const lv_type *vtype;    /* LP_T_VALUE */
    int flags;
    const char *hf;          /* options: what Hugging Face (transformers, PEFT) calls it, when
                                that differs, space-separated: typing one of those names is an
                                error that names this option ("loupe calls it `alpha`") */
} lp_param;

typedef struct lp_call lp_call;

enum {
    LP_CMD_STATEMENT = 1,    /* takes one statement instead of arguments (`time STATEMENT`) */
};

typedef struct lp_command {
    const char *name;
    const lp_param *params;  /* positional, terminated by { 0 }; NULL: none */
    const lp_param *options; /* key=value, terminated by { 0 }; NULL: none */
    /* Run. *result: a new reference to show/assign, or leave NULL for none. */
    int (*run)(lp_call *c, lv_value **result);
    const char *summary;     /* one line */
    const char *help;        /* longer text with an example */
    int flags;
} lp_command;

/* ---- inside a command ------------------------------------------------------------- */

/* Argument by parameter or option name: borrowed; none when an optional one is absent.
 * Asking for a name the command did not declare is a programming error (asserts). */
lv_value   *lp_arg(lp_call *c, const char *name);
int64_t     lp_arg_int(lp_call *c, const char *name);
double      lp_arg_float(lp_call *c, const char *name);
const char *lp_arg_str(lp_call *c, const char *name);     /* NULL when none */
int         lp_arg_bool(lp_call *c, const char *name);
void       *lp_arg_ptr(lp_call *c, const char *name, const lv_type *t);  /* NULL when none */
int         lp_arg_given(lp_call *c, const char *name);   /* 1 if the user wrote it */

const lp_command *lp_call_command(lp_call *c);
struct lp_interp *lp_call_interp(lp_call *c);

/* Set an error with a name ("ValueError", "IOError", ...); returns -1. */
int lp_fail(lp_call *c, const char *ename, const char *fmt, ...) LP_PRINTF(3, 4);
/* -1 with the error "Interrupted" once the user asked to stop; 0 otherwise. */
int lp_check_interrupt(lp_call *c);

/* Output while running (any may be dropped when the front end has no such channel). */
void  lp_out_text(lp_call *c, int fd, const char *text, size_t n);
void  lp_out_display(lp_call *c, json_t *bundle, const char *display_id, int update);
void  lp_out_page(lp_call *c, json_t *bundle);
void  lp_out_clear(lp_call *c, int wait);
/* A fresh display id ("loupe-<n>") for live output; buf of at least 32 bytes. */
void  lp_new_display_id(lp_call *c, char *buf, size_t cap);
/* Read a line from the user; lp_free() it. NULL after an error. */
char *lp_in_line(lp_call *c, const char *prompt, int password);

/* Variables (borrowed, NULL when unset). */
lv_value *lp_var_get(lp_call *c, const char *name);

/* LP_CMD_STATEMENT commands: run the wrapped statement; 0 or -1. */
int lp_run_statement(lp_call *c);

/* ---- the registry itself ---------------------------------------------------------- */

/* All built-in commands (runtime/commands/all.c), NULL-terminated. */
extern const lp_command *const lp_all_commands[];

/* Look up among the built-ins. */
const lp_command *reg_find(const char *name, size_t n);
/* Closest name to `word` among `names` (Levenshtein distance at most 2, or a prefix), or NULL. */
const char *reg_suggest(const char *word, const char *const *names, size_t n);
/* Help text of a command (`help NAME`): usage line, summary, parameters, options, help. */
char *reg_help_text(const lp_command *cmd);
json_t *reg_help_bundle(const lp_command *cmd);   /* text/plain + text/html */
char *reg_usage(const lp_command *cmd);           /* "sleep SECONDS" */
/* The type a parameter wants, as help and errors name it: "int", "string", "model", ... */
const char *reg_type_word(const lp_param *p);
/* 1 when `word` is one of the space-separated words of `list` (NULL: none): lp_param.hf,
 * explain's aliases. */
int reg_has_word(const char *list, const char *word);
/* The option of `options` that Hugging Face calls `word` (lp_param.hf), or NULL. */
const char *reg_hf_option(const lp_param *options, const char *word);
/* The options of any command named `word`, or that Hugging Face calls `word` (lp_param.hf),
 * one help line each after the command's name (`help lora_alpha`); NULL when none. */
char *reg_option_help(const char *word);
/* Help for the statement keywords (repeat, for, if), or NULL. */
const char *reg_keyword_help(const char *word);
/* Check a declaration (defaults parse, names unique); 0 or -1 with lp_seterr. Tests use it. */
int reg_validate(const lp_command *cmd);

#endif
