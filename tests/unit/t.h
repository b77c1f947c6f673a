/* t.h — the unit-test harness: a handful of macros, one executable per module.
 *
 *   #include "t.h"
 *   static void test_something(void) { T_EQ_INT(1 + 1, 2); T_STR("a", "a"); }
 *   int main(void) { T_RUN(test_something); return t_done(); }
 *
 * A failed check prints file:line and the values, and the test goes on; t_done()
 * prints "N passed, N failed" and returns the exit status. */
#ifndef LOUPE_T_H
#define LOUPE_T_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int t_pass, t_fail;
static const char *t_current = "";

#define T_CHECK(cond, ...) do { if (cond) t_pass++; else { t_fail++; \
    fprintf(stderr, "%s:%d: %s: ", __FILE__, __LINE__, t_current); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define T_OK(cond) T_CHECK((cond), "expected %s", #cond)
#define T_EQ_INT(a, b) do { long long _a = (long long)(a), _b = (long long)(b); \
    T_CHECK(_a == _b, "%s == %lld, expected %lld", #a, _a, _b); } while (0)
#define T_STR(a, b) do { const char *_a = (a), *_b = (b); \
    T_CHECK(_a && _b && strcmp(_a, _b) == 0, "%s == \"%s\", expected \"%s\"", #a, \
            _a ? _a : "(null)", _b ? _b : "(null)"); } while (0)
#define T_CONTAINS(hay, needle) do { const char *_h = (hay), *_n = (needle); \
    T_CHECK(_h && strstr(_h, _n), "%s == \"%s\" does not contain \"%s\"", #hay, \
            _h ? _h : "(null)", _n); } while (0)
#define T_NEAR(a, b, rel) do { double _a = (a), _b = (b); \
    T_CHECK(fabs(_a - _b) <= (rel) * fmax(1.0, fmax(fabs(_a), fabs(_b))), \
            "%s == %.9g, expected %.9g (rel %g)", #a, _a, _b, (double)(rel)); } while (0)
#define T_RUN(fn) do { t_current = #fn; fn(); } while (0)

/* A whole file, NUL-terminated, its length in *len (when len is not NULL); NULL when it
 * cannot be opened. The caller frees it. */
static inline char *t_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)(n > 0 ? n : 0) + 1);
    if (n < 0 || fread(b, 1, (size_t)n, f) != (size_t)n) n = 0;
    b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

static inline int t_done(void) {
    printf("%d passed, %d failed\n", t_pass, t_fail);
    return t_fail ? 1 : 0;
}
#endif
