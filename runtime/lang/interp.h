/* interp.h — the interpreter's state, shared by eval.c, complete.c, registry.c and the
 * core commands (internal to the runtime; the kernel sees only loupe.h). */
#ifndef LOUPE_INTERP_H
#define LOUPE_INTERP_H
#include <stdatomic.h>
#include "loupe.h"
#include "lang/parser.h"
#include "lang/registry.h"
#include "lang/value.h"

struct lp_interp {
    lv_value *vars;                 /* dict name → value, in creation order */
    atomic_int interrupted;         /* set by lp_interrupt (lock-free: signal-safe) */
    const lp_command **extra;       /* commands added with lp_interp_add_command */
    size_t nextra;
    unsigned long display_seq;      /* for lp_new_display_id */
    /* while a cell runs */
    lp_sink *sink;
    const char *src;
    size_t srclen;
    int pure;                       /* completion/inspection: no command may run */
    /* the current error */
    const char *ename;
    size_t err_start, err_end;
    int has_loc;
    long step_budget;               /* > 0: statements left before the cell stops (fuzzing) */
};

struct lp_call {
    lp_interp *it;
    const lp_command *cmd;
    const ps_node *node;
    lv_value **vals;                /* params then options, in declaration order */
    unsigned char *given;
    size_t np, no;
    int inner_failed;               /* lp_run_statement failed: pass its error through */
    int top;                        /* the call is a top-level statement of the cell */
};

/* Find a command: the interpreter's extras, then the built-ins. */
const lp_command *ev_find_cmd(lp_interp *it, const char *name, size_t n);
/* ps_find_cmd adapter (ctx is the interp, or NULL for built-ins only). */
const lp_command *ev_find_cb(void *ctx, const char *name, size_t n);
/* Evaluate an expression tree with side effects off (completion, inspection). */
lv_value *ev_eval_pure(lp_interp *it, const ps_node *n);
/* Evaluate a default literal of a parameter (new ref), NULL after lp_seterr. */
lv_value *ev_default(lp_interp *it, const char *text);
/* Build a SyntaxError/other outcome with the source line and caret. */
void ev_make_error(lp_outcome *out, const char *ename, const char *evalue, const char *src,
                   size_t len, size_t start, size_t end, int has_loc);

/* Add a command only for this interpreter (tests, plug-ins); the pointer must outlive it. */
int lp_interp_add_command(lp_interp *it, const lp_command *cmd);
/* Stop every later cell after `steps` statements (0: no limit). For fuzzing the
 * evaluator, where `repeat 1000000000 { }` must not hang. */
void lp_interp_set_step_budget(lp_interp *it, long steps);
/* Syntax check only: 0, or -1 with the SyntaxError in *out. */
int lp_check(lp_interp *it, const char *code, size_t len, lp_outcome *out);

#endif
