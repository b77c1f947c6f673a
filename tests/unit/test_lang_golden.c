/* test_lang_golden.c — every tests/lang/NAME.loupe run in-process as one cell, through a
 * sink that rebuilds the golden text the way the kernel's messages would (streams as
 * they are; display_data, update_display_data, page payloads and the execute_result as
 * text/plain + "\n"; on error the traceback lines + "\n"), compared with NAME.out.
 * NAME.in feeds `input`. The same files are checked through `loupe run` by
 * tests/lang/run.sh and through the kernel by tests/protocol. */
#include "lang/interp.h"
#include "t.h"
#include "test_lang_harness.h"
#include <dirent.h>
#include <stdlib.h>
#include <unistd.h>

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(void) {
    if (chdir("tests/lang") != 0) {
        fprintf(stderr, "run from the project root (ctest does)\n");
        return 1;
    }
    DIR *d = opendir(".");
    char *names[1024];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 1024) {
        size_t l = strlen(de->d_name);
        if (l > 6 && !strcmp(de->d_name + l - 6, ".loupe")) names[n++] = strndup(de->d_name, l - 6);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_names);
    for (int i = 0; i < n; i++) {
        char path[512];
        size_t len = 0;
        snprintf(path, sizeof path, "%s.loupe", names[i]);
        char *code = t_slurp(path, &len);
        snprintf(path, sizeof path, "%s.out", names[i]);
        char *want = t_slurp(path, NULL);
        snprintf(path, sizeof path, "%s.in", names[i]);
        char *in = t_slurp(path, NULL);
        lp_interp *it = lp_interp_new();
        rec r;
        lp_sink sink;
        rec_init(&r, it, &sink);
        r.input = in;
        lp_outcome o;
        int rc = lp_execute(it, code, len, &sink, &o);
        if (rc == 0 && o.result) rec_bundle(&r, o.result);
        if (rc) {
            size_t k;
            json_t *l;
            json_array_foreach(o.traceback, k, l) { sb_puts(&r.text, json_string_value(l)); sb_putc(&r.text, '\n'); }
        }
        t_current = names[i];
        T_CHECK(want && !strcmp(sb_str(&r.text), want), "output differs:\n--- got\n%s--- want\n%s", sb_str(&r.text),
                want ? want : "(no .out file)\n");
        lp_outcome_free(&o);
        rec_free(&r);
        lp_interp_free(it);
        free(code);
        free(want);
        free(in);
        free(names[i]);
    }
    T_OK(n >= 60);
    return t_done();
}
