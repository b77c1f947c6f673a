/* mem.h — every allocation in loupe goes through here, so tests can make it fail.
 *
 * lp_malloc/lp_calloc/lp_realloc return NULL on failure like their libc
 * counterparts; callers turn that into a user-visible "out of memory" error.
 * lp_mem_fail_after(n) makes the n-th following allocation fail (tests only). */
#ifndef LOUPE_MEM_H
#define LOUPE_MEM_H
#include <stddef.h>

void *lp_malloc(size_t n);
void *lp_calloc(size_t count, size_t size);
void *lp_realloc(void *p, size_t n);
void  lp_free(void *p);
/* n bytes on 2 MB boundaries, marked for transparent huge pages (Linux's default "madvise"
 * mode backs only marked memory with them): for big compute buffers, where 4 KB pages cost
 * TLB misses in every matrix product. Freed with lp_free. */
void *lp_malloc_huge(size_t n);
char *lp_strdup(const char *s);
char *lp_strndup(const char *s, size_t n);

/* Test hook: the n-th allocation from now fails (n = 0 disables). */
void lp_mem_fail_after(long n);

#endif
