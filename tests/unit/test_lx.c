/* test_lx.c — the loupe lexer: tokens, positions, numbers, strings, `.0` paths, errors. */
#include "lang/lexer.h"
#include "util/mem.h"
#include "t.h"
#include <stdlib.h>

static void *alloc_cb(void *ctx, size_t n) {
    (void)ctx;
    static char *blocks[256];
    static int nb;
    if (nb == 256) { for (int i = 0; i < nb; i++) free(blocks[i]); nb = 0; }
    return blocks[nb++] = malloc(n);
}

/* kinds of all tokens of src, up to EOF or an error, into k; returns count */
static int kinds(const char *src, lx_kind *k, int max) {
    lx_lexer lx;
    lx_init(&lx, src, strlen(src), alloc_cb, NULL);
    int n = 0;
    while (n < max) {
        lx_token t = lx_next(&lx);
        k[n++] = t.kind;
        if (t.kind == T_EOF || t.kind == T_ERROR) break;
    }
    return n;
}

static lx_token first(const char *src, lx_lexer *lx) {
    lx_init(lx, src, strlen(src), alloc_cb, NULL);
    return lx_next(lx);
}

static void test_basic_tokens(void) {
    lx_kind k[32];
    int n = kinds("x = load \"m\" lr=2e-4 # comment\n", k, 32);
    T_EQ_INT(n, 9);
    T_EQ_INT(k[0], T_IDENT);
    T_EQ_INT(k[1], T_ASSIGN);
    T_EQ_INT(k[2], T_IDENT);
    T_EQ_INT(k[3], T_STRING);
    T_EQ_INT(k[4], T_IDENT);
    T_EQ_INT(k[5], T_ASSIGN);
    T_EQ_INT(k[6], T_FLOAT);
    T_EQ_INT(k[7], T_NEWLINE);
    T_EQ_INT(k[8], T_EOF);
    n = kinds("== != <= >= < > // / % * + - ? ; : , ( ) [ ] { } .", k, 32);
    lx_kind want[] = { T_EQ, T_NE, T_LE, T_GE, T_LT, T_GT, T_DSLASH, T_SLASH, T_PERCENT, T_STAR, T_PLUS,
                       T_MINUS, T_QUESTION, T_SEMI, T_COLON, T_COMMA, T_LPAREN, T_RPAREN, T_LBRACK,
                       T_RBRACK, T_LBRACE, T_RBRACE, T_DOT, T_EOF };
    T_EQ_INT(n, 24);
    for (int i = 0; i < 24 && i < n; i++) T_EQ_INT(k[i], want[i]);
}

static void test_keywords(void) {
    lx_kind k[16];
    int n = kinds("and or not in if else for repeat true false none andx", k, 16);
    lx_kind want[] = { T_AND, T_OR, T_NOT, T_IN, T_IF, T_ELSE, T_FOR, T_REPEAT, T_TRUE, T_FALSE, T_NONE,
                       T_IDENT, T_EOF };
    T_EQ_INT(n, 13);
    for (int i = 0; i < 13; i++) T_EQ_INT(k[i], want[i]);
    /* after a dot a keyword is an attribute name */
    n = kinds("x.in", k, 16);
    T_EQ_INT(k[2], T_IDENT);
}

static void test_numbers(void) {
    lx_lexer lx;
    lx_token t = first("42", &lx);
    T_EQ_INT(t.kind, T_INT);
    T_EQ_INT(t.ival, 42);
    t = first("1e-4", &lx);
    T_EQ_INT(t.kind, T_FLOAT);
    T_NEAR(t.fval, 1e-4, 1e-15);
    t = first("2.5E3", &lx);
    T_NEAR(t.fval, 2500, 1e-15);
    t = first(".5", &lx);
    T_EQ_INT(t.kind, T_FLOAT);
    T_NEAR(t.fval, 0.5, 1e-15);
    t = first("3.", &lx);
    T_EQ_INT(t.kind, T_FLOAT);
    t = first("9223372036854775807", &lx);
    T_EQ_INT(t.kind, T_INT);
    T_EQ_INT(t.ival, INT64_MAX);
    t = first("9223372036854775808", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_CONTAINS(lx.err, "too large");
    t = first("1e", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    t = first("3abc", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_CONTAINS(lx.err, "malformed number");
    t = first("1e999", &lx);
    T_EQ_INT(t.kind, T_ERROR);
}

static void test_dot_paths(void) {
    /* model.layers.0.self_attn: `.0` is attribute syntax, not the float .0 */
    lx_kind k[16];
    int n = kinds("model.layers.0.self_attn", k, 16);
    lx_kind want[] = { T_IDENT, T_DOT, T_IDENT, T_DOT, T_INT, T_DOT, T_IDENT, T_EOF };
    T_EQ_INT(n, 8);
    for (int i = 0; i < 8; i++) T_EQ_INT(k[i], want[i]);
    n = kinds("x.0.1", k, 16);
    lx_kind want2[] = { T_IDENT, T_DOT, T_INT, T_DOT, T_INT, T_EOF };
    T_EQ_INT(n, 6);
    for (int i = 0; i < 6; i++) T_EQ_INT(k[i], want2[i]);
    n = kinds("xs[0].5", k, 16);   /* after `]` too */
    T_EQ_INT(k[4], T_DOT);
    T_EQ_INT(k[5], T_INT);
    n = kinds("1 .5", k, 16);
    T_EQ_INT(k[1], T_FLOAT);
}

static void test_strings(void) {
    lx_lexer lx;
    lx_token t = first("\"a\\n\\t\\\"\\\\b\"", &lx);
    T_EQ_INT(t.kind, T_STRING);
    T_STR(t.sval, "a\n\t\"\\b");
    t = first("'it\\'s'", &lx);
    T_STR(t.sval, "it's");
    t = first("\"\\u00e9\\U0001F600\"", &lx);
    T_STR(t.sval, "é😀");
    t = first("\"日本語\"", &lx);
    T_STR(t.sval, "日本語");
    T_EQ_INT(t.slen, 9);
    t = first("\"two\nlines\"", &lx);
    T_STR(t.sval, "two\nlines");
    t = first("\"abc", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_EQ_INT(lx.incomplete, 1);
    T_STR(lx.err, "unterminated string");
    t = first("\"\\q\"", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_EQ_INT(lx.incomplete, 0);
    T_CONTAINS(lx.err, "unknown escape");
    t = first("\"\\u12\"", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    t = first("\"\\uD800\"", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    t = first("\"\\u0000\"", &lx);
    T_EQ_INT(t.kind, T_ERROR);
}

static void test_positions(void) {
    lx_lexer lx;
    lx_init(&lx, "ab  \"日\"\n  cd", 15, alloc_cb, NULL);
    lx_token t = lx_next(&lx);
    T_EQ_INT(t.start, 0);
    T_EQ_INT(t.end, 2);
    t = lx_next(&lx);
    T_EQ_INT(t.start, 4);
    T_EQ_INT(t.end, 9);
    t = lx_next(&lx);
    T_EQ_INT(t.kind, T_NEWLINE);
    t = lx_next(&lx);
    T_EQ_INT(t.start, 12);
    int line, col;
    lx_linecol(lx.src, lx.len, 12, &line, &col);
    T_EQ_INT(line, 2);
    T_EQ_INT(col, 3);
    lx_linecol("日本x", 7, 6, &line, &col);   /* columns count characters */
    T_EQ_INT(col, 3);
}

static void test_unicode_idents(void) {
    lx_lexer lx;
    lx_token t = first("東京 = 1", &lx);
    T_EQ_INT(t.kind, T_IDENT);
    T_EQ_INT(t.end, 6);
    t = first("café", &lx);
    T_EQ_INT(t.kind, T_IDENT);
    T_EQ_INT(t.end, 5);
    t = first("→", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_CONTAINS(lx.err, "unexpected character `→`");
}

static void test_bytes(void) {
    size_t bad;
    char msg[256];
    T_EQ_INT(lx_check_bytes("ok 日本", 9, &bad, msg, sizeof msg), 0);
    T_EQ_INT(lx_check_bytes("a\0b", 3, &bad, msg, sizeof msg), -1);
    T_EQ_INT(bad, 1);
    T_CONTAINS(msg, "NUL byte");
    T_CONTAINS(msg, "line 1:2");
    T_EQ_INT(lx_check_bytes("x\n\xff", 3, &bad, msg, sizeof msg), -1);
    T_EQ_INT(bad, 2);
    T_CONTAINS(msg, "line 2:1: invalid UTF-8 byte 0xFF");
    T_EQ_INT(lx_check_bytes("\xc0\xaf", 2, &bad, msg, sizeof msg), -1);          /* overlong */
    T_EQ_INT(lx_check_bytes("\xed\xa0\x80", 3, &bad, msg, sizeof msg), -1);      /* surrogate */
    T_EQ_INT(lx_check_bytes("\xe6\x97", 2, &bad, msg, sizeof msg), -1);          /* truncated */
    T_EQ_INT(lx_check_bytes("\xf4\x90\x80\x80", 4, &bad, msg, sizeof msg), -1);  /* > U+10FFFF */
}

static void test_errors(void) {
    lx_lexer lx;
    lx_token t = first("!x", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_CONTAINS(lx.err, "did you mean `not`");
    t = first("\x01", &lx);
    T_EQ_INT(t.kind, T_ERROR);
    T_CONTAINS(lx.err, "control character");
    lx_kind k[8];
    int n = kinds("a \\\n b", k, 8);   /* backslash joins lines */
    T_EQ_INT(n, 3);
    T_EQ_INT(k[1], T_IDENT);
}

int main(void) {
    T_RUN(test_basic_tokens);
    T_RUN(test_keywords);
    T_RUN(test_numbers);
    T_RUN(test_dot_paths);
    T_RUN(test_strings);
    T_RUN(test_positions);
    T_RUN(test_unicode_idents);
    T_RUN(test_bytes);
    T_RUN(test_errors);
    return t_done();
}
