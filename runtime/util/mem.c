#include "util/mem.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

static atomic_long fail_countdown;   /* 0: never fail */

static int should_fail(void) {
    long c = atomic_load(&fail_countdown);
    if (c <= 0) return 0;
    if (atomic_fetch_sub(&fail_countdown, 1) == 1) return 1;
    return 0;
}

void lp_mem_fail_after(long n) { atomic_store(&fail_countdown, n); }

void *lp_malloc(size_t n) { return should_fail() ? NULL : malloc(n ? n : 1); }
void *lp_calloc(size_t c, size_t s) { return should_fail() ? NULL : calloc(c ? c : 1, s ? s : 1); }
void *lp_realloc(void *p, size_t n) { return should_fail() ? NULL : realloc(p, n ? n : 1); }
void lp_free(void *p) { free(p); }

void *lp_malloc_huge(size_t n) {
    enum { HUGE = 2 << 20 };
    if (should_fail()) return NULL;
    size_t whole = (n + HUGE - 1) / HUGE * HUGE;
    void *p = aligned_alloc(HUGE, whole ? whole : HUGE);
#ifdef MADV_HUGEPAGE
    if (p) madvise(p, whole, MADV_HUGEPAGE);   /* a hint: refused or ignored is fine */
#endif
    return p;
}

char *lp_strndup(const char *s, size_t n) {
    char *d = lp_malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}
char *lp_strdup(const char *s) { return lp_strndup(s, strlen(s)); }
