/* history.h — the kernel's input history, kept across restarts.
 *
 * File: JSON lines, one per executed cell, mode 0600:
 *   {"session": 3, "line": 12, "input": "model = load …", "output": "…" | null}
 * Default place: $JUPYTER_DATA_DIR/loupe/history.jsonl, else
 * $XDG_DATA_HOME/jupyter/loupe/history.jsonl, else ~/.local/share/jupyter/loupe/history.jsonl.
 * The file is read only when a history request needs it, so start-up does not pay for it.
 * Each kernel start is a new session, numbered by a counter file beside it
 * (history.jsonl.session). Cells over 1 MB are not kept. */
#ifndef KN_HISTORY_H
#define KN_HISTORY_H
#include <jansson.h>

typedef struct kn_history kn_history;

kn_history *kn_hist_open(const char *path);   /* NULL path: the default place */
void kn_hist_close(kn_history *h);
const char *kn_hist_path(const kn_history *h);
int kn_hist_session(kn_history *h);

/* Append one cell (output may be NULL). Errors are reported on stderr and ignored: a
 * read-only home must not stop a cell from running. */
void kn_hist_add(kn_history *h, int line, const char *input, const char *output);

/* Answer a history_request's content: returns a new array of [session, line, input] or
 * [session, line, [input, output]] when output is true. */
json_t *kn_hist_query(kn_history *h, json_t *request);

/* Glob match with * and ? (history search patterns). */
int kn_glob(const char *pat, const char *s);

#endif
