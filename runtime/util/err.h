/* err.h — the error convention for everything a user, a file or the network can cause.
 *
 * A function that fails returns NULL or -1 and first calls lp_seterr() with a message
 * written for the user ("model.safetensors: tensor `x`: byte size 12 does not match
 * shape [2, 2] × F32 (16)"). The message lives in a thread-local buffer until the next
 * lp_seterr(); callers that add context use lp_preferr("loading %s", path), which
 * prepends "loading PATH: ". Broken internal invariants use assert(), nothing else. */
#ifndef LOUPE_ERR_H
#define LOUPE_ERR_H

#if defined(__GNUC__)
#define LP_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define LP_PRINTF(a, b)
#endif

#define LP_ERR_MAX 2048

int  lp_seterr(const char *fmt, ...) LP_PRINTF(1, 2);   /* always returns -1 */
int  lp_preferr(const char *fmt, ...) LP_PRINTF(1, 2);  /* prefix context; returns -1 */
const char *lp_geterr(void);
void lp_clearerr(void);

#endif
