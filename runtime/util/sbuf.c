#include "util/sbuf.h"
#include "util/mem.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void sb_init(sbuf *b) { memset(b, 0, sizeof *b); }
void sb_free(sbuf *b) { lp_free(b->s); sb_init(b); }

static int grow(sbuf *b, size_t extra) {
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + extra + 1) cap *= 2;
    char *s = lp_realloc(b->s, cap);
    if (!s) { b->oom = 1; return -1; }
    b->s = s;
    b->cap = cap;
    return 0;
}

void sb_putn(sbuf *b, const char *s, size_t n) {
    if (grow(b, n)) return;
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}
void sb_puts(sbuf *b, const char *s) { sb_putn(b, s, strlen(s)); }
void sb_putc(sbuf *b, char c) { sb_putn(b, &c, 1); }

void sb_printf(sbuf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n > 0 && !grow(b, (size_t)n)) {
        vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
        b->len += (size_t)n;
    }
    va_end(ap2);
}

void sb_html_escape(sbuf *b, const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_puts(b, "&amp;"); break;
        case '<': sb_puts(b, "&lt;"); break;
        case '>': sb_puts(b, "&gt;"); break;
        case '"': sb_puts(b, "&quot;"); break;
        default: sb_putc(b, *s);
        }
    }
}

char *sb_take(sbuf *b) {
    char *s = b->s;
    if (!s) s = lp_strdup("");
    sb_init(b);
    return s;
}
const char *sb_str(sbuf *b) { return b->s ? b->s : ""; }

void sb_bytes(sbuf *b, unsigned long long n) {
    if (n >= 1000000000ull) sb_printf(b, "%.2f GB", n / 1e9);
    else if (n >= 1000000ull) sb_printf(b, "%.1f MB", n / 1e6);
    else sb_printf(b, "%.1f KB", n / 1e3);
}
