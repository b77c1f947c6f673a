/* lexer.h — tokens of the loupe language (internal to runtime/lang).
 *
 * The lexer is pull-based (one token at a time, no token array) so a 10 MB cell costs
 * memory only for its AST. It always emits NEWLINE tokens; the parser decides where a
 * newline ends a statement and where (inside ( [ and dict braces) it is just space.
 * Before lexing, lx_check_bytes() rejects NUL bytes and invalid UTF-8 for the whole cell,
 * so everything after works on valid UTF-8. */
#ifndef LOUPE_LEXER_H
#define LOUPE_LEXER_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    T_EOF, T_NEWLINE, T_IDENT, T_INT, T_FLOAT, T_STRING,
    T_LPAREN, T_RPAREN, T_LBRACK, T_RBRACK, T_LBRACE, T_RBRACE,
    T_COMMA, T_COLON, T_DOT, T_SEMI, T_QUESTION,
    T_ASSIGN, T_EQ, T_NE, T_LT, T_LE, T_GT, T_GE,
    T_PLUS, T_MINUS, T_STAR, T_SLASH, T_DSLASH, T_PERCENT,
    /* keywords */
    T_AND, T_OR, T_NOT, T_IN, T_IF, T_ELSE, T_FOR, T_REPEAT, T_TRUE, T_FALSE, T_NONE,
    T_ERROR
} lx_kind;

typedef struct lx_token {
    lx_kind kind;
    size_t start, end;      /* byte range in the source */
    int64_t ival;
    double fval;
    char *sval;             /* T_STRING: decoded text (owned by the lexer's allocator) */
    size_t slen;
} lx_token;

typedef struct lx_lexer {
    const char *src;
    size_t len, pos;
    lx_kind prev;           /* previous token, to tell `.0` (attribute) from `.5` (number) */
    int prev_after_dot;     /* previous token was a number right after `.` */
    /* decoded strings are allocated with this callback (the parser's arena) */
    void *(*alloc)(void *actx, size_t n);
    void *actx;
    /* on T_ERROR: */
    char err[256];
    size_t err_pos, err_end;
    int incomplete;         /* the error is "input ended too early" (unclosed string) */
} lx_lexer;

void lx_init(lx_lexer *lx, const char *src, size_t len,
             void *(*alloc)(void *actx, size_t n), void *actx);
/* Next token. T_ERROR fills err/err_pos. Comments are skipped; NEWLINE is kept. */
lx_token lx_next(lx_lexer *lx);
const char *lx_kind_name(lx_kind k);   /* "identifier", "`)`", "end of line", ... */

/* Whole-cell byte check: -1 and a message naming line:column on a NUL byte or invalid
 * UTF-8 (*bad = byte offset), 0 when clean. */
int lx_check_bytes(const char *src, size_t len, size_t *bad, char *msg, size_t cap);

/* 1-based line and column (in code points) of byte offset `off`. */
void lx_linecol(const char *src, size_t len, size_t off, int *line, int *col);
int  lx_is_ident_start(int c);
int  lx_is_ident_char(int c);
int  lx_keyword(const char *s, size_t n);   /* lx_kind of a keyword, or T_IDENT */

#endif
