/* test_lang_harness.h — a sink that records what a cell shows, as the golden text
 * (`loupe run` format) and as a list of events, for the language's unit tests. */
#ifndef TEST_LANG_HARNESS_H
#define TEST_LANG_HARNESS_H
#include "loupe.h"
#include "util/sbuf.h"
#include "util/mem.h"
#include <stdlib.h>
#include <string.h>

typedef struct {
    sbuf text;             /* golden format */
    int displays, updates, pages, streams;
    json_t *last_display;  /* borrowed copy (incref'd) */
    const char *input;     /* what `input` reads, lines separated by \n */
    size_t input_pos;
    int interrupt_after_streams;   /* > 0: call lp_interrupt after that many stream writes */
    lp_interp *it;
} rec;

static inline void rec_bundle(rec *r, json_t *data) {
    const char *t = json_string_value(json_object_get(data, "text/plain"));
    sb_puts(&r->text, t ? t : "");
    sb_putc(&r->text, '\n');
}
static inline void rec_stream(void *ctx, int fd, const char *s, size_t n) {
    rec *r = ctx;
    sb_putn(&r->text, s, n);
    r->streams++;
    if (r->interrupt_after_streams && r->streams >= r->interrupt_after_streams) lp_interrupt(r->it);
}
static inline void rec_display(void *ctx, json_t *data, json_t *md, const char *id, int update) {
    rec *r = ctx;
    rec_bundle(r, data);
    if (update) r->updates++; else r->displays++;
    json_decref(r->last_display);
    r->last_display = json_incref(data);
}
static inline void rec_page(void *ctx, json_t *data) {
    rec *r = ctx;
    rec_bundle(r, data);
    r->pages++;
}
static inline char *rec_input(void *ctx, const char *prompt, int password) {
    rec *r = ctx;
    if (!r->input || !r->input[r->input_pos]) { lp_seterr("end of input: stdin has no more lines"); return NULL; }
    const char *s = r->input + r->input_pos, *e = strchr(s, '\n');
    size_t n = e ? (size_t)(e - s + 1) : strlen(s);
    r->input_pos += n;
    return lp_strndup(s, n);
}

static inline void rec_init(rec *r, lp_interp *it, lp_sink *sink) {
    memset(r, 0, sizeof *r);
    r->it = it;
    sb_init(&r->text);
    memset(sink, 0, sizeof *sink);
    sink->ctx = r;
    sink->stream = rec_stream;
    sink->display = rec_display;
    sink->page = rec_page;
    sink->input = rec_input;
}
static inline void rec_free(rec *r) {
    sb_free(&r->text);
    json_decref(r->last_display);
}

/* Run code as one cell; return the golden text (static buffer until the next call). */
static inline const char *run_cell(lp_interp *it, const char *code, int *rc_out) {
    static char *last;
    free(last);
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    lp_outcome o;
    int rc = lp_execute(it, code, strlen(code), &sink, &o);
    if (rc == 0 && o.result) rec_bundle(&r, o.result);
    if (rc) {
        size_t i;
        json_t *l;
        json_array_foreach(o.traceback, i, l) { sb_puts(&r.text, json_string_value(l)); sb_putc(&r.text, '\n'); }
    }
    if (rc_out) *rc_out = rc;
    lp_outcome_free(&o);
    last = strdup(sb_str(&r.text));
    rec_free(&r);
    return last;
}
#endif
