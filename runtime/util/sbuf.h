/* sbuf.h — a growable byte string for building output text. */
#ifndef LOUPE_SBUF_H
#define LOUPE_SBUF_H
#include <stddef.h>
#include "util/err.h"

typedef struct {
    char  *s;     /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    int    oom;   /* set once an allocation failed; later appends are ignored */
} sbuf;

void sb_init(sbuf *b);
void sb_free(sbuf *b);
void sb_putn(sbuf *b, const char *s, size_t n);
void sb_puts(sbuf *b, const char *s);
void sb_putc(sbuf *b, char c);
void sb_printf(sbuf *b, const char *fmt, ...) LP_PRINTF(2, 3);
void sb_html_escape(sbuf *b, const char *s);   /* & < > " escaped */
void sb_bytes(sbuf *b, unsigned long long n);  /* "12.3 KB", "4.5 MB", "1.23 GB" (10³ units) */
char *sb_take(sbuf *b);                        /* caller owns the string; b is reset */
const char *sb_str(sbuf *b);                   /* "" when empty */

#endif
