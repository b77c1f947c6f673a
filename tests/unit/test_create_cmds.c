/* test_create_cmds.c — `create`, `save MODEL DIR` and util/savedir through the interpreter and
 * directly: how a directory is replaced (swapped whole, or file by file beside other entries),
 * stale temporaries cleaned, and an allocation failure anywhere in create / save / save_adapter
 * is an error, never a crash (run under ASan too: LOUPE_SANITIZE). Numbers against transformers
 * are in tests/parity/test_create_save.py. */
#include "t.h"

#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lang/interp.h"
#include "lang/registry.h"
#include "test_lang_harness.h"
#include "util/err.h"
#include "util/mem.h"
#include "util/savedir.h"

static int exists(const char *dir, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    struct stat s;
    return stat(p, &s) == 0;
}

static void put(const char *dir, const char *name, const char *text) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (f) { fputs(text, f); fclose(f); }
}

static int count_temps(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) n += strstr(e->d_name, ".loupe-tmp-") != NULL;
    if (d) closedir(d);
    return n;
}

static const char *const mine[] = {"b.txt", "a.txt", NULL};

static void test_savedir(void) {
    char root[] = "/tmp/loupe_sd_XXXXXX", target[256];
    if (!mkdtemp(root)) return;
    snprintf(target, sizeof target, "%s/out/sub", root);   /* parents made */
    sd_dir d;
    T_CHECK(sd_begin(&d, target) == 0, "%s", lp_geterr());
    T_OK(sd_write_text(&d, "a.txt", "1") == 0);
    T_OK(sd_write_text(&d, "b.txt", "1") == 0);
    T_OK(sd_commit(&d, mine) == 0);
    T_OK(exists(target, "a.txt") && exists(target, "b.txt"));
    /* only our files there: swapped whole; an old extra of ours disappears */
    put(target, "a.txt.tmp.123", "stale");
    T_OK(sd_begin(&d, target) == 0);
    T_OK(!exists(target, "a.txt.tmp.123"));   /* old-style leftovers removed at begin */
    T_OK(sd_write_text(&d, "a.txt", "2") == 0);
    T_OK(sd_commit(&d, mine) == 0);
    T_OK(exists(target, "a.txt") && !exists(target, "b.txt"));
    /* a foreign file: moved file by file, the foreign file stays */
    put(target, "notes.md", "mine");
    T_OK(sd_begin(&d, target) == 0);
    T_OK(sd_write_text(&d, "b.txt", "3") == 0);
    T_OK(sd_commit(&d, mine) == 0);
    T_OK(exists(target, "notes.md") && exists(target, "a.txt") && exists(target, "b.txt"));
    T_EQ_INT(count_temps(root), 0);
    char parent[300];
    snprintf(parent, sizeof parent, "%s/out", root);
    T_EQ_INT(count_temps(parent), 0);
    /* a temp left by a dead process is removed by the next save; an abort leaves none */
    char stale[400];
    snprintf(stale, sizeof stale, "%s/.sub.loupe-tmp-999999999-1", parent);
    T_OK(mkdir(stale, 0755) == 0);
    put(stale, "x", "half");
    T_OK(sd_begin(&d, target) == 0);
    T_EQ_INT(count_temps(parent), 1);   /* only ours */
    sd_abort(&d);
    T_EQ_INT(count_temps(parent), 0);
    /* a symbolic link to the directory stays a link, its files replaced */
    char link[300];
    snprintf(link, sizeof link, "%s/link", root);
    T_OK(symlink(target, link) == 0);
    T_OK(sd_begin(&d, link) == 0);
    T_OK(sd_write_text(&d, "a.txt", "4") == 0);
    T_OK(sd_commit(&d, mine) == 0);
    struct stat ls;
    T_OK(lstat(link, &ls) == 0 && S_ISLNK(ls.st_mode));
    T_OK(exists(target, "notes.md") && exists(target, "a.txt"));
    T_EQ_INT(count_temps(root), 0);
    /* errors */
    char file[300];
    snprintf(file, sizeof file, "%s/file", root);
    put(root, "file", "x");
    T_OK(sd_begin(&d, file) < 0);
    T_CONTAINS(lp_geterr(), "not a directory");
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", root);
    T_OK(system(cmd) == 0);
}

/* Every allocation of create, then of save / save_adapter, failing in turn: an error each
 * time until the cell runs through. */
static void test_oom(void) {
    char dir[] = "/tmp/loupe_coom_XXXXXX";
    if (!mkdtemp(dir)) return;
    lp_interp *it = lp_interp_new();
    int rc;
    char cells[2][1024];
    snprintf(cells[0], sizeof cells[0],
             "m = create \"gpt2\" hidden=16 layers=1 heads=2 vocab=20 seed=1\nm");
    snprintf(cells[1], sizeof cells[1],
             "save m \"%s/ckpt\"\nlora m r=2 target=[\"c_attn\"]\nsave_adapter m \"%s/ad\"", dir, dir);
    for (int k = 0; k < 2; k++) {
        int failures = 0, done = 0;
        for (long n = 1; n < 100000 && !done; n++) {
            if (k == 1) run_cell(it, "adapter m \"default\" action=\"delete\"", &rc);
            rec r;
            lp_sink sink;
            rec_init(&r, it, &sink);
            lp_outcome o;
            lp_mem_fail_after(n);
            rc = lp_execute(it, cells[k], strlen(cells[k]), &sink, &o);
            if (!rc) {   /* still armed means it never fired: done */
                long left = 0;
                void *p;
                while (left < 1000000 && (p = lp_malloc(1))) lp_free(p), left++;
                if (left < 1000000) done = 1;
            } else {
                failures++;
            }
            lp_mem_fail_after(0);
            lp_outcome_free(&o);
            rec_free(&r);
        }
        printf("oom cell %d: %d failures\n", k, failures);
        T_CHECK(done, "cell %d never ran through", k);
        T_CHECK(failures > 20, "cell %d: %d failures", k, failures);
    }
    char cell[400];
    snprintf(cell, sizeof cell, "m2 = load \"%s/ckpt\"\nm2.num_params == m.num_params", dir);
    T_STR(run_cell(it, cell, &rc), "true\n");
    lp_interp_free(it);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    T_OK(system(cmd) == 0);
}

int main(void) {
    T_RUN(test_savedir);
    T_RUN(test_oom);
    return t_done();
}
