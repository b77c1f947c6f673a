/* parser.h — the loupe grammar and its AST (internal to runtime/lang).
 *
 *   cell    := { stmt (NEWLINE | ';') }
 *   stmt    := NAME '=' rhs | rhs [ '?' ] | '?' target
 *            | 'repeat' expr block | 'for' NAME 'in' expr block
 *            | 'if' expr block [ 'else' ( block | if-stmt ) ]
 *   rhs     := command | expr
 *   command := CMD { expr | NAME '=' expr }     CMD: a name in the command registry;
 *              a command flagged LP_CMD_STATEMENT (`time`) takes one statement instead
 *   block   := '{' { stmt } '}'
 *   expr    := or;  or := and {'or' and};  and := not {'and' not};  not := 'not' not | cmp
 *   cmp     := sum [ ('=='|'!='|'<'|'<='|'>'|'>='|'in'|'not' 'in') sum ]
 *   sum     := term {('+'|'-') term};  term := unary {('*'|'/'|'//'|'%') unary}
 *   unary   := ('-'|'+') unary | postfix
 *   postfix := primary { '.' NAME | '.' INT | '[' expr ']' }
 *   primary := INT | FLOAT | STRING | true | false | none | NAME | '(' expr ')'
 *            | '(' command ')' | '[' [expr {',' expr} [',']] ']'
 *            | '{' [key ':' expr {',' key ':' expr} [',']] '}'     key: STRING or NAME
 *
 * Newlines end statements except inside ( ), [ ] and dict braces. All nodes live in one
 * arena that ps_free() releases at once, so error paths cannot leak. */
#ifndef LOUPE_PARSER_H
#define LOUPE_PARSER_H
#include <stddef.h>
#include <stdint.h>

struct lp_command;

/* Deepest bracket/block/unary nesting, and deepest expression tree, accepted. */
#define PS_MAX_NESTING 256
#define PS_MAX_EXPR_DEPTH 1000

typedef enum {
    /* expressions */
    N_INT, N_FLOAT, N_STR, N_TRUE, N_FALSE, N_NONE, N_NAME, N_LIST, N_DICT,
    N_ATTR,     /* a.name (name; `.0` gives name "0" and ival 0, is_index 1) */
    N_INDEX,    /* a[b]; a[i, j:k] has b = N_LIST with is_index 1 (an index tuple) */
    N_SLICE,    /* lo:hi inside brackets: a = lo, b = hi (either may be NULL) */
    N_NEG, N_POS, N_NOT, N_AND, N_OR,
    N_BINOP,    /* op: the token kind */
    N_CALL,     /* command call: cmd, items = N_ARG/N_OPTION, a = wrapped statement */
    N_ARG,      /* positional argument: a */
    N_OPTION,   /* key=value: name, a */
    /* statements */
    S_EXPR,     /* a: expression or N_CALL */
    S_ASSIGN,   /* name = a */
    S_REPEAT,   /* repeat a b */
    S_FOR,      /* for name in a b */
    S_IF,       /* if a b else c (c: S_BLOCK, S_IF or NULL) */
    S_HELP,     /* a: target expression, or cmd set for a command */
    S_BLOCK     /* items */
} ps_kind;

typedef struct ps_node ps_node;
/* Kept small (96 bytes): a 10 MB cell can hold a million statements. Offsets are 32-bit;
 * ps_parse refuses cells of 2 GiB or more. */
struct ps_node {
    uint8_t kind;               /* ps_kind */
    uint8_t is_index;           /* N_ATTR written as `.0` */
    uint16_t op;                /* N_BINOP: lx_kind of the operator */
    int32_t depth;              /* expression tree depth */
    uint32_t start, end;        /* byte range in the source */
    ps_node *a, *b, *c;
    ps_node **items;            /* N_LIST, N_DICT (key, value, key, value...), N_CALL, S_BLOCK */
    uint32_t n;
    uint32_t nlen;
    const char *name;           /* N_NAME, N_ATTR, N_STR (decoded), N_OPTION, S_ASSIGN, S_FOR */
    uint32_t name_start;        /* byte offset of `name` in the source (attribute/option/target) */
    union {
        int64_t ival;           /* N_INT; N_ATTR `.0` */
        double fval;            /* N_FLOAT */
    };
    const struct lp_command *cmd;   /* N_CALL, S_HELP of a command */
};

#define PS_MAX_CELL ((size_t)1 << 31)
_Static_assert(sizeof(ps_node) <= 96, "ps_node grew: a 10 MB cell would need much more memory");

/* How the parser knows command names (they decide between a command and an expression). */
typedef const struct lp_command *(*ps_find_cmd)(void *ctx, const char *name, size_t n);

typedef struct ps_error {
    char msg[300];              /* without position */
    size_t pos, end;            /* byte range of the offending text */
    int incomplete;             /* input ended inside a bracket, string or block */
} ps_error;

typedef struct ps_arena ps_arena;

typedef struct ps_tree {
    ps_node *root;              /* S_BLOCK */
    ps_arena *arena;
    int open_depth;             /* on an incomplete error: brackets/blocks still open */
} ps_tree;

/* Parse a cell (src must have passed lx_check_bytes). 0 on success; -1 fills *err.
 * Either way release with ps_free(). */
int  ps_parse(ps_tree *t, const char *src, size_t len, ps_find_cmd find, void *fctx, ps_error *err);
/* Parse a single expression (for user_expressions, defaults, completion). */
int  ps_parse_expr(ps_tree *t, const char *src, size_t len, ps_find_cmd find, void *fctx, ps_error *err);
void ps_free(ps_tree *t);

#endif
