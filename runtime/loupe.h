/* loupe.h — the interpreter interface: all that the Jupyter kernel (kernel/) and the
 * `loupe` command (cli/) see of the runtime. The kernel knows nothing about models;
 * the runtime knows nothing about ZeroMQ.
 *
 * Byte offsets: every position here is a byte offset into UTF-8 `code`. The kernel
 * converts Jupyter's code-point cursor positions to and from bytes.
 *
 * Threads: lp_execute/lp_complete/lp_inspect/lp_is_complete are called from one thread
 * (the kernel's shell thread). lp_interrupt may be called from any thread or a signal
 * handler. */
#ifndef LOUPE_H
#define LOUPE_H
#include <stddef.h>
#include <jansson.h>

typedef struct lp_interp lp_interp;

/* Where a running cell sends what it shows. Any callback may be NULL (output dropped).
 * Callbacks never take ownership of json arguments (they incref what they keep). */
typedef struct lp_sink {
    void *ctx;
    /* text for stdout (fd 1) or stderr (fd 2), n bytes of UTF-8 */
    void (*stream)(void *ctx, int fd, const char *text, size_t n);
    /* data: MIME bundle {"text/plain": "...", "text/html": "...", ...}; metadata: object or NULL.
     * display_id: NULL, or an id for later updates; update != 0 means update_display_data
     * of an earlier display with that id (display_id is then required). */
    void (*display)(void *ctx, json_t *data, json_t *metadata, const char *display_id, int update);
    void (*clear)(void *ctx, int wait);
    /* Ask the user for one line. Returns text owned by the caller (lp_free), or NULL after
     * lp_seterr() (stdin not allowed for this request, interrupted, client gone). */
    char *(*input)(void *ctx, const char *prompt, int password);
    /* Show a MIME bundle in the pager (Jupyter's "page" payload); `print?` uses it. */
    void (*page)(void *ctx, json_t *data);
} lp_sink;

typedef struct lp_outcome {
    int     error;      /* 0: ok; 1: the cell failed */
    json_t *result;     /* ok: MIME bundle of the value of a final expression statement, or NULL */
    char   *ename;      /* error: "SyntaxError", "NameError", "TypeError", "Interrupted", ... */
    char   *evalue;     /* error: one-line message */
    json_t *traceback;  /* error: array of strings (lines shown to the user) */
} lp_outcome;

lp_interp *lp_interp_new(void);
void       lp_interp_free(lp_interp *it);

/* Run a cell. Returns 0 when it ran to the end, -1 when it failed (details in *out).
 * A failed statement changes no variable; statements before it keep their effects. */
int  lp_execute(lp_interp *it, const char *code, size_t len, lp_sink *sink, lp_outcome *out);
void lp_outcome_free(lp_outcome *out);

/* Evaluate one expression for Jupyter's user_expressions. Returns a new object exactly as
 * the reply wants it: {"status":"ok","data":{bundle},"metadata":{}} or
 * {"status":"error","ename":..,"evalue":..,"traceback":[..]}. Never NULL except on OOM. */
json_t *lp_user_expression(lp_interp *it, const char *expr);

/* Completion at byte offset `cursor`. Returns a new array of {"text": "...", "type": "..."}
 * (type: "command", "option", "variable", "attribute", "module", "path", "keyword"), and the
 * byte range [*start, *end) that a chosen match replaces. */
json_t *lp_complete(lp_interp *it, const char *code, size_t len, size_t cursor,
                    size_t *start, size_t *end);

/* Inspection at byte offset `cursor`: help of the command under the cursor, or the summary
 * of the value. Returns a new MIME bundle, or NULL when there is nothing to show. */
json_t *lp_inspect(lp_interp *it, const char *code, size_t len, size_t cursor, int detail);

/* Is `code` a complete cell? LP_INCOMPLETE also fills `indent` (NUL-terminated). */
enum { LP_COMPLETE, LP_INCOMPLETE, LP_INVALID };
int lp_is_complete(lp_interp *it, const char *code, size_t len, char *indent, size_t indent_cap);

/* Ask the running cell to stop at its next interrupt point; it then fails with ename
 * "Interrupted". Async-signal-safe. A request that arrives while nothing runs is dropped
 * by the next lp_execute. */
void lp_interrupt(lp_interp *it);

/* Language facts for kernel_info. */
const char *lp_version(void);
const char *lp_banner(void);

#endif
