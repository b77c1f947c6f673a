/* test_lang_docs.c — every example in docs/language.md: a ```loupe block runs as one cell
 * in a fresh interpreter, and its output (the `loupe run` format) must equal the ```output
 * block that follows it. A ```loupe block without an output block fails the test. */
#include "lang/interp.h"
#include "t.h"
#include "test_lang_harness.h"
#include <stdlib.h>

/* the text of the fenced block starting at *p with fence line `fence`; advances *p */
static char *next_block(const char **p, const char *fence) {
    const char *s = strstr(*p, fence);
    if (!s) return NULL;
    s += strlen(fence);
    const char *e = strstr(s, "\n```");
    if (!e) return NULL;
    *p = e + 4;
    return strndup(s, (size_t)(e - s + 1));   /* keep the final newline */
}

int main(void) {
    FILE *f = fopen("docs/language.md", "rb");
    if (!f) { fprintf(stderr, "run from the project root (ctest does)\n"); return 1; }
    static char doc[1 << 20];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    doc[n] = 0;
    fclose(f);
    const char *p = doc;
    int examples = 0;
    for (;;) {
        const char *before = p;
        char *code = next_block(&p, "\n```loupe\n");
        if (!code) break;
        examples++;
        /* the output block must come right after */
        const char *q = p;
        while (*q == '\n') q++;
        char *want = NULL;
        if (!strncmp(q, "```output\n", 10)) {
            q--;
            want = next_block(&q, "\n```output\n");
            p = q;
        }
        int line = 1;
        for (const char *c = doc; c < before; c++) line += *c == '\n';
        char name[64];
        snprintf(name, sizeof name, "example %d (after line %d)", examples, line);
        t_current = name;
        lp_interp *it = lp_interp_new();
        int rc;
        const char *got = run_cell(it, code, &rc);
        T_CHECK(want && !strcmp(got, want), "\n%s--- got\n%s--- want\n%s", code, got, want ? want : "(no output block)\n");
        lp_interp_free(it);
        free(code);
        free(want);
    }
    T_OK(examples >= 20);
    return t_done();
}
