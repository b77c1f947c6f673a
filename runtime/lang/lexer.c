/* lexer.c — turns a cell into tokens. See lexer.h. */
#include "lang/lexer.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

static const struct { const char *word; lx_kind kind; } keywords[] = {
    { "and", T_AND }, { "or", T_OR }, { "not", T_NOT }, { "in", T_IN }, { "if", T_IF },
    { "else", T_ELSE }, { "for", T_FOR }, { "repeat", T_REPEAT }, { "true", T_TRUE },
    { "false", T_FALSE }, { "none", T_NONE },
};

int lx_keyword(const char *s, size_t n) {
    for (size_t i = 0; i < sizeof keywords / sizeof *keywords; i++)
        if (strlen(keywords[i].word) == n && !memcmp(keywords[i].word, s, n)) return keywords[i].kind;
    return T_IDENT;
}

const char *lx_kind_name(lx_kind k) {
    switch (k) {
    case T_EOF: return "end of input";
    case T_NEWLINE: return "end of line";
    case T_IDENT: return "a name";
    case T_INT: return "an integer";
    case T_FLOAT: return "a number";
    case T_STRING: return "a string";
    case T_LPAREN: return "`(`";
    case T_RPAREN: return "`)`";
    case T_LBRACK: return "`[`";
    case T_RBRACK: return "`]`";
    case T_LBRACE: return "`{`";
    case T_RBRACE: return "`}`";
    case T_COMMA: return "`,`";
    case T_COLON: return "`:`";
    case T_DOT: return "`.`";
    case T_SEMI: return "`;`";
    case T_QUESTION: return "`?`";
    case T_ASSIGN: return "`=`";
    case T_EQ: return "`==`";
    case T_NE: return "`!=`";
    case T_LT: return "`<`";
    case T_LE: return "`<=`";
    case T_GT: return "`>`";
    case T_GE: return "`>=`";
    case T_PLUS: return "`+`";
    case T_MINUS: return "`-`";
    case T_STAR: return "`*`";
    case T_SLASH: return "`/`";
    case T_DSLASH: return "`//`";
    case T_PERCENT: return "`%`";
    case T_AND: return "`and`";
    case T_OR: return "`or`";
    case T_NOT: return "`not`";
    case T_IN: return "`in`";
    case T_IF: return "`if`";
    case T_ELSE: return "`else`";
    case T_FOR: return "`for`";
    case T_REPEAT: return "`repeat`";
    case T_TRUE: return "`true`";
    case T_FALSE: return "`false`";
    case T_NONE: return "`none`";
    case T_ERROR: return "an error";
    }
    return "?";
}

int lx_is_ident_start(int c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
int lx_is_ident_char(int c) { return lx_is_ident_start(c) || (c >= '0' && c <= '9'); }

/* Non-ASCII names (`東京 = 1`) follow Unicode's identifier rules, roughly: letters start
 * a name; letters, marks, digits and connectors continue it. Returns the byte length of
 * the character at s when it qualifies, else 0. */
static size_t uni_ident(const char *s, size_t n, int start) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (k <= 0) return 0;
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_NL:
        return (size_t)k;
    case UTF8PROC_CATEGORY_MN: case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_PC:
        return start ? 0 : (size_t)k;
    default:
        return 0;
    }
}

void lx_linecol(const char *src, size_t len, size_t off, int *line, int *col) {
    int l = 1, c = 1;
    if (off > len) off = len;
    for (size_t i = 0; i < off; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '\n') { l++; c = 1; }
        else if ((ch & 0xC0) != 0x80) c++;
    }
    *line = l;
    *col = c;
}

/* Length of the UTF-8 sequence at s (valid and shortest form, no surrogates), or 0. */
static size_t utf8_seq(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
    else return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
    if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
    return len;
}

int lx_check_bytes(const char *src, size_t len, size_t *bad, char *msg, size_t cap) {
    const unsigned char *s = (const unsigned char *)src;
    for (size_t i = 0; i < len;) {
        if (s[i] == 0) {
            int l, c;
            lx_linecol(src, len, i, &l, &c);
            *bad = i;
            snprintf(msg, cap, "line %d:%d: NUL byte in the cell (byte offset %zu)", l, c, i);
            return -1;
        }
        size_t k = utf8_seq(s + i, len - i);
        if (!k) {
            int l, c;
            lx_linecol(src, len, i, &l, &c);
            *bad = i;
            snprintf(msg, cap, "line %d:%d: invalid UTF-8 byte 0x%02X (byte offset %zu)", l, c, s[i], i);
            return -1;
        }
        i += k;
    }
    return 0;
}

void lx_init(lx_lexer *lx, const char *src, size_t len,
             void *(*alloc)(void *actx, size_t n), void *actx) {
    memset(lx, 0, sizeof *lx);
    lx->src = src;
    lx->len = len;
    lx->prev = T_NEWLINE;
    lx->alloc = alloc;
    lx->actx = actx;
}

static lx_token error_at(lx_lexer *lx, size_t pos, size_t end, int incomplete, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lx->err, sizeof lx->err, fmt, ap);
    va_end(ap);
    lx->err_pos = pos;
    lx->err_end = end;
    lx->incomplete = incomplete;
    lx->pos = lx->len;   /* nothing after an error */
    return (lx_token){ .kind = T_ERROR, .start = pos, .end = end };
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string literal: "..." or '...', may span lines; escapes \n \t \r \\ \" \' \uXXXX
 * \U00XXXXXX. The decoded text is never longer than the source text. */
static lx_token lex_string(lx_lexer *lx, size_t start) {
    char q = lx->src[start];
    size_t i = start + 1;
    /* find the end first so the decoded buffer can be sized once */
    size_t j = i;
    while (j < lx->len && lx->src[j] != q) {
        if (lx->src[j] == '\\') j++;
        j++;
    }
    if (j >= lx->len) return error_at(lx, start, start + 1, 1, "unterminated string");
    char *out = lx->alloc(lx->actx, j - i + 1);
    if (!out) return error_at(lx, start, start + 1, 0, "out of memory");
    size_t n = 0;
    while (i < j) {
        char c = lx->src[i];
        if (c != '\\') { out[n++] = c; i++; continue; }
        size_t esc = i;
        char e = lx->src[i + 1];
        i += 2;
        switch (e) {
        case 'n': out[n++] = '\n'; break;
        case 't': out[n++] = '\t'; break;
        case 'r': out[n++] = '\r'; break;
        case '\\': out[n++] = '\\'; break;
        case '"': out[n++] = '"'; break;
        case '\'': out[n++] = '\''; break;
        case 'u': case 'U': {
            int digits = e == 'u' ? 4 : 8;
            unsigned cp = 0;
            for (int k = 0; k < digits; k++) {
                int h = i < j ? hexval((unsigned char)lx->src[i]) : -1;
                if (h < 0)
                    return error_at(lx, esc, i + 1 > j ? j : i + 1, 0,
                                    "\\%c needs %d hex digits", e, digits);
                cp = cp * 16 + (unsigned)h;
                i++;
            }
            if (cp == 0 || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                return error_at(lx, esc, i, 0, "\\%c%0*X is not a valid character", e, digits, cp);
            n += put_utf8(out + n, cp);
            break;
        }
        default: {
            size_t k = utf8_seq((const unsigned char *)lx->src + esc + 1, lx->len - esc - 1);
            return error_at(lx, esc, esc + 1 + (k ? k : 1), 0, "unknown escape `\\%.*s` in string",
                            (int)(k ? k : 1), lx->src + esc + 1);
        }
        }
    }
    out[n] = 0;
    lx->pos = j + 1;
    return (lx_token){ .kind = T_STRING, .start = start, .end = j + 1, .sval = out, .slen = n };
}

static lx_token lex_number(lx_lexer *lx, size_t start, int digits_only) {
    const char *s = lx->src;
    size_t i = start;
    int is_float = 0;
    while (i < lx->len && s[i] >= '0' && s[i] <= '9') i++;
    if (!digits_only) {
        if (i + 1 < lx->len && s[i] == '.' && s[i + 1] >= '0' && s[i + 1] <= '9') {
            is_float = 1;
            i++;
            while (i < lx->len && s[i] >= '0' && s[i] <= '9') i++;
        } else if (i < lx->len && s[i] == '.' && !(i + 1 < lx->len && lx_is_ident_start((unsigned char)s[i + 1]))) {
            is_float = 1;   /* `1.` is 1.0, but `1.x` stays attribute syntax */
            i++;
        }
        if (i < lx->len && (s[i] == 'e' || s[i] == 'E')) {
            size_t k = i + 1;
            if (k < lx->len && (s[k] == '+' || s[k] == '-')) k++;
            if (k < lx->len && s[k] >= '0' && s[k] <= '9') {
                is_float = 1;
                i = k;
                while (i < lx->len && s[i] >= '0' && s[i] <= '9') i++;
            } else {
                return error_at(lx, start, k, 0, "malformed number: exponent needs digits");
            }
        }
    }
    if (i < lx->len && lx_is_ident_start((unsigned char)s[i]))
        return error_at(lx, start, i + 1, 0, "malformed number `%.*s`", (int)(i + 1 - start), s + start);
    lx->pos = i;
    char buf[400];
    size_t n = i - start;
    if (n >= sizeof buf) return error_at(lx, start, i, 0, "number literal too long");
    memcpy(buf, s + start, n);
    buf[n] = 0;
    lx_token t = { .start = start, .end = i };
    errno = 0;
    if (is_float) {
        t.kind = T_FLOAT;
        t.fval = strtod(buf, NULL);
        if (isinf(t.fval)) return error_at(lx, start, i, 0, "number `%s` is too large", buf);
    } else {
        t.kind = T_INT;
        unsigned long long v = strtoull(buf, NULL, 10);
        if (errno == ERANGE || v > (unsigned long long)INT64_MAX)
            return error_at(lx, start, i, 0, "integer `%s` is too large (the limit is 9223372036854775807)", buf);
        t.ival = (int64_t)v;
    }
    return t;
}

lx_token lx_next(lx_lexer *lx) {
    const char *s = lx->src;
    for (;;) {
        while (lx->pos < lx->len && (s[lx->pos] == ' ' || s[lx->pos] == '\t' || s[lx->pos] == '\r'))
            lx->pos++;
        if (lx->pos < lx->len && s[lx->pos] == '#') {
            while (lx->pos < lx->len && s[lx->pos] != '\n') lx->pos++;
            continue;
        }
        /* a backslash at the end of a line joins it with the next one */
        if (lx->pos + 1 < lx->len && s[lx->pos] == '\\' &&
            (s[lx->pos + 1] == '\n' || (s[lx->pos + 1] == '\r' && lx->pos + 2 < lx->len && s[lx->pos + 2] == '\n'))) {
            lx->pos += s[lx->pos + 1] == '\n' ? 2 : 3;
            continue;
        }
        break;
    }
    size_t st = lx->pos;
    lx_token t = { .start = st, .end = st + 1 };
    int after_dot = lx->prev == T_DOT;
    lx_kind prev = lx->prev;
    int prev_num_after_dot = lx->prev_after_dot;
    lx->prev_after_dot = 0;
    if (st >= lx->len) {
        t.kind = T_EOF;
        t.end = st;
        lx->prev = T_EOF;
        return t;
    }
    unsigned char c = (unsigned char)s[st];
    char c1 = st + 1 < lx->len ? s[st + 1] : 0;
    lx->pos = st + 1;
    switch (c) {
    case '\n': t.kind = T_NEWLINE; break;
    case '(': t.kind = T_LPAREN; break;
    case ')': t.kind = T_RPAREN; break;
    case '[': t.kind = T_LBRACK; break;
    case ']': t.kind = T_RBRACK; break;
    case '{': t.kind = T_LBRACE; break;
    case '}': t.kind = T_RBRACE; break;
    case ',': t.kind = T_COMMA; break;
    case ':': t.kind = T_COLON; break;
    case ';': t.kind = T_SEMI; break;
    case '?': t.kind = T_QUESTION; break;
    case '+': t.kind = T_PLUS; break;
    case '-': t.kind = T_MINUS; break;
    case '*': t.kind = T_STAR; break;
    case '%': t.kind = T_PERCENT; break;
    case '/':
        if (c1 == '/') { t.kind = T_DSLASH; lx->pos++; } else t.kind = T_SLASH;
        break;
    case '=':
        if (c1 == '=') { t.kind = T_EQ; lx->pos++; } else t.kind = T_ASSIGN;
        break;
    case '!':
        if (c1 == '=') { t.kind = T_NE; lx->pos++; break; }
        return error_at(lx, st, st + 1, 0, "unexpected `!` (did you mean `not` or `!=`?)");
    case '<':
        if (c1 == '=') { t.kind = T_LE; lx->pos++; } else t.kind = T_LT;
        break;
    case '>':
        if (c1 == '=') { t.kind = T_GE; lx->pos++; } else t.kind = T_GT;
        break;
    case '.':
        /* `x.0` (Hugging Face's own path spelling) is attribute access; `.5` a number */
        if (c1 >= '0' && c1 <= '9' &&
            !(prev == T_IDENT || prev == T_RBRACK || prev == T_RPAREN || prev == T_STRING ||
              prev == T_RBRACE || (prev == T_INT && prev_num_after_dot))) {
            t = lex_number(lx, st, 0);
            break;
        }
        t.kind = T_DOT;
        break;
    case '"': case '\'':
        t = lex_string(lx, st);
        break;
    default:
        if (c >= '0' && c <= '9') {
            t = lex_number(lx, st, after_dot);
            if (t.kind == T_INT && after_dot) lx->prev_after_dot = 1;
            break;
        }
        if (lx_is_ident_start(c) || (c >= 0x80 && uni_ident(s + st, lx->len - st, 1))) {
            size_t i = st;
            for (;;) {
                if (i < lx->len && lx_is_ident_char((unsigned char)s[i])) { i++; continue; }
                size_t k = i < lx->len && (unsigned char)s[i] >= 0x80 ? uni_ident(s + i, lx->len - i, 0) : 0;
                if (!k) break;
                i += k;
            }
            lx->pos = i;
            t.end = i;
            t.kind = after_dot ? T_IDENT : (lx_kind)lx_keyword(s + st, i - st);
            break;
        }
        {
            size_t k = utf8_seq((const unsigned char *)s + st, lx->len - st);
            if (!k) k = 1;
            if (c < 0x20 || c == 0x7f)
                return error_at(lx, st, st + 1, 0, "unexpected control character 0x%02X", c);
            return error_at(lx, st, st + k, 0, "unexpected character `%.*s`", (int)k, s + st);
        }
    }
    if (t.kind != T_ERROR) {
        if (t.kind != T_STRING && t.kind != T_INT && t.kind != T_FLOAT && t.kind != T_IDENT &&
            !(t.kind >= T_AND && t.kind <= T_NONE))
            t.end = lx->pos;
        lx->prev = t.kind;
    }
    return t;
}
