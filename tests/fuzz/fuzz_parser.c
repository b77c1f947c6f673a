#define _GNU_SOURCE   /* memmem */
/* fuzz_parser.c — libFuzzer target for the loupe language front end: the byte check,
 * lexer and parser (ps_parse, ps_parse_expr), and the kernel services that parse cell
 * text (is_complete, completion and inspection at a few cursors). Cells that parse are
 * also executed by a fresh interpreter with a step budget (so loops end) and no front end
 * (so `input` fails at once); cells naming `sleep` are not run, they would only wait.
 *
 *   CC=clang cmake -S . -B build-fuzz-lang -DLOUPE_FUZZ=ON
 *   cmake --build build-fuzz-lang --target fuzz_parser
 *   build-fuzz-lang/tests/fuzz_parser tests/fuzz/corpus/parser -max_total_time=600 */
#include "lang/interp.h"
#include "lang/lexer.h"
#include "lang/parser.h"
#include "loupe.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static lp_interp *it;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!it) it = lp_interp_new();
    const char *src = (const char *)data;
    size_t bad;
    char msg[256];
    if (lx_check_bytes(src, size, &bad, msg, sizeof msg) == 0) {
        ps_tree t;
        ps_error e;
        ps_parse(&t, src, size, ev_find_cb, it, &e);
        ps_free(&t);
        ps_parse_expr(&t, src, size, ev_find_cb, it, &e);
        ps_free(&t);
    }
    if (size < 4096 && !memmem(data, size, "sleep", 5)) {
        lp_interp *ex = lp_interp_new();
        if (ex) {
            lp_interp_set_step_budget(ex, 2000);
            lp_outcome o;
            lp_execute(ex, src, size, NULL, &o);
            lp_outcome_free(&o);
            lp_interp_free(ex);
        }
    }
    /* the public entry points must cope with anything, including invalid UTF-8 */
    char indent[64];
    lp_is_complete(it, src, size, indent, sizeof indent);
    lp_outcome o;
    lp_check(it, src, size, &o);
    lp_outcome_free(&o);
    size_t cursors[3] = { size, size / 2, size ? (size_t)data[0] % (size + 1) : 0 };
    for (int i = 0; i < 3; i++) {
        size_t s, e;
        json_t *c = lp_complete(it, src, size, cursors[i], &s, &e);
        if (c && (s > size || e > size || s > e)) abort();
        json_decref(c);
        json_t *b = lp_inspect(it, src, size, cursors[i], i & 1);
        json_decref(b);
    }
    return 0;
}
