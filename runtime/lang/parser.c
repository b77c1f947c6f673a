/* parser.c — recursive descent over the grammar in parser.h. Errors longjmp back to
 * ps_parse(); every node lives in the arena, so unwinding frees everything at once. */
#include "lang/parser.h"
#include "lang/lexer.h"
#include "lang/registry.h"
#include "util/mem.h"
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- arena ----------------------------------------------------------------------- */

typedef struct chunk { struct chunk *next; size_t used, cap; max_align_t data[]; } chunk;
struct ps_arena { chunk *head; };

static void *arena_alloc(ps_arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    chunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 60000 ? n : 64000;
        c = lp_malloc(sizeof(chunk) + cap);
        if (!c) return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

void ps_free(ps_tree *t) {
    if (!t->arena) return;
    chunk *c = t->arena->head;
    while (c) {
        chunk *n = c->next;
        lp_free(c);
        c = n;
    }
    lp_free(t->arena);
    t->arena = NULL;
    t->root = NULL;
}

/* ---- parser state ------------------------------------------------------------------ */

typedef struct {
    lx_lexer lx;
    lx_token cur, nxt;
    int has_next;
    int nl_skip;        /* > 0 inside ( ) [ ] and dict braces: newlines are spaces */
    int depth;          /* recursion depth (brackets, blocks, unary operators) */
    int open;           /* brackets and blocks open right now (for is_complete's indent) */
    int args_mode;      /* parsing command arguments outside brackets: ` [` starts a new argument */
    size_t prev_end;    /* end of the last token consumed */
    ps_arena *arena;
    ps_find_cmd find;
    void *fctx;
    ps_error *err;
    jmp_buf jb;
} parser;

static void *lx_alloc_cb(void *actx, size_t n) { return arena_alloc(actx, n); }

static _Noreturn void fail_at(parser *p, size_t pos, size_t end, int incomplete, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->err->msg, sizeof p->err->msg, fmt, ap);
    va_end(ap);
    p->err->pos = pos;
    p->err->end = end > pos ? end : pos + 1;
    p->err->incomplete = incomplete;
    longjmp(p->jb, 1);
}

static void *alloc(parser *p, size_t n) {
    void *m = arena_alloc(p->arena, n);
    if (!m) fail_at(p, 0, 0, 0, "out of memory");
    memset(m, 0, n);
    return m;
}

static lx_token lex(parser *p) {
    lx_token t = lx_next(&p->lx);
    if (t.kind == T_ERROR) fail_at(p, p->lx.err_pos, p->lx.err_end, p->lx.incomplete, "%s", p->lx.err);
    return t;
}

static void shift(parser *p) {
    p->prev_end = p->cur.end;
    if (p->has_next) { p->cur = p->nxt; p->has_next = 0; }
    else p->cur = lex(p);
}

static lx_token *cur(parser *p) {
    while (p->nl_skip && p->cur.kind == T_NEWLINE) shift(p);
    return &p->cur;
}

static lx_token *peek(parser *p) {
    cur(p);
    if (!p->has_next) { p->nxt = lex(p); p->has_next = 1; }
    while (p->nl_skip && p->nxt.kind == T_NEWLINE) p->nxt = lex(p);
    return &p->nxt;
}

static int at(parser *p, lx_kind k) { return cur(p)->kind == k; }

static _Noreturn void unexpected(parser *p, const char *what) {
    lx_token *t = cur(p);
    int eof = t->kind == T_EOF;
    if (t->kind == T_IDENT || (t->kind >= T_AND && t->kind <= T_NONE))
        fail_at(p, t->start, t->end, 0, "expected %s, found `%.*s`", what, (int)(t->end - t->start),
                p->lx.src + t->start);
    fail_at(p, t->start, t->end, eof && p->open > 0, "expected %s, found %s", what, lx_kind_name(t->kind));
}

/* A statement `st` is followed by something other than its end. Python's shapes get a
 * word on loupe's: a call with parentheses right after a name (`len(x)`, `m.generate("hi")`),
 * and `import` / `from`. */
static _Noreturn void not_stmt_end(parser *p, const ps_node *st) {
    lx_token *t = cur(p);
    const char *src = p->lx.src + st->start;
    size_t n = st->end - st->start, k = t->start;   /* the dotted name right before `(` */
    while (k > st->start && (isalnum((unsigned char)p->lx.src[k - 1]) || p->lx.src[k - 1] == '_' ||
                             p->lx.src[k - 1] == '.' || (unsigned char)p->lx.src[k - 1] >= 0x80))
        k--;
    if (t->kind == T_LPAREN && st->end == t->start && k < t->start && t->start - k < 64)
        fail_at(p, t->start, t->end, 0, "expected end of statement, found `(`: `%.*s(…)` looks "
                "like a Python call; loupe's commands take their arguments after spaces, without "
                "parentheses (`generate m \"text\"`, `print x`; `help` lists them)",
                (int)(t->start - k), p->lx.src + k);
    if ((n == 6 && !memcmp(src, "import", 6)) || (n == 4 && !memcmp(src, "from", 4)))
        fail_at(p, st->start, st->end, 0, "loupe is not Python: there is nothing to import "
                "(`load` reads a checkpoint, `lora` attaches an adapter; `help` lists the commands)");
    unexpected(p, "end of statement");
}

static lx_token expect(parser *p, lx_kind k, const char *what) {
    if (!at(p, k)) unexpected(p, what);
    lx_token t = p->cur;
    shift(p);
    return t;
}

static void enter(parser *p, size_t pos) {
    if (++p->depth > PS_MAX_NESTING)
        fail_at(p, pos, pos + 1, 0, "nesting too deep (more than %d levels of brackets or blocks)",
                PS_MAX_NESTING);
}
static void leave(parser *p) { p->depth--; }

static ps_node *node(parser *p, ps_kind k, size_t start, size_t end) {
    ps_node *n = alloc(p, sizeof *n);
    n->kind = k;
    n->start = start;
    n->end = end;
    n->depth = 1;
    return n;
}

/* depth bookkeeping keeps the evaluator's recursion bounded (`1+1+...+1` is left-deep) */
static void set_depth(parser *p, ps_node *n) {
    int d = 0;
    if (n->a && n->a->depth > d) d = n->a->depth;
    if (n->b && n->b->depth > d) d = n->b->depth;
    n->depth = d + 1;
    if (n->depth > PS_MAX_EXPR_DEPTH)
        fail_at(p, n->start, n->end, 0, "expression too deep (more than %d operations nested)",
                PS_MAX_EXPR_DEPTH);
}

/* growable node list inside the arena (old arrays are abandoned: at most 2x waste) */
typedef struct { ps_node **v; size_t n, cap; } nvec;
static void push(parser *p, nvec *v, ps_node *x) {
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        ps_node **nv = alloc(p, cap * sizeof *nv);
        if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
        v->v = nv;
        v->cap = cap;
    }
    v->v[v->n++] = x;
}

static const lp_command *find_cmd(parser *p, const lx_token *t) {
    if (t->kind != T_IDENT || !p->find) return NULL;
    return p->find(p->fctx, p->lx.src + t->start, t->end - t->start);
}

static ps_node *parse_expr(parser *p);
static ps_node *parse_stmt(parser *p);
static ps_node *parse_command(parser *p, int in_parens);

static int starts_expr(lx_kind k) {
    switch (k) {
    case T_IDENT: case T_INT: case T_FLOAT: case T_STRING: case T_LPAREN: case T_LBRACK:
    case T_LBRACE: case T_MINUS: case T_PLUS: case T_NOT: case T_TRUE: case T_FALSE: case T_NONE:
        return 1;
    default:
        return 0;
    }
}

/* ---- expressions ------------------------------------------------------------------- */

/* An index item: an expression, or a slice `lo:hi` with either side left out. */
static ps_node *parse_index_item(parser *p) {
    size_t st = p->cur.start;
    ps_node *lo = NULL, *hi = NULL;
    if (!at(p, T_COLON)) {
        lo = parse_expr(p);
        if (!at(p, T_COLON)) return lo;
    }
    shift(p);
    if (!at(p, T_COMMA) && !at(p, T_RBRACK)) hi = parse_expr(p);
    ps_node *s = node(p, N_SLICE, st, p->prev_end);
    s->a = lo;
    s->b = hi;
    s->depth = 1 + (lo && lo->depth > (hi ? hi->depth : 0) ? lo->depth : hi ? hi->depth : 0);
    return s;
}

static ps_node *parse_list(parser *p) {
    lx_token open = p->cur;
    int saved_args = p->args_mode;
    p->args_mode = 0;
    enter(p, open.start);
    shift(p);
    p->nl_skip++;
    p->open++;
    nvec v = { 0 };
    int d = 0;
    while (!at(p, T_RBRACK)) {
        ps_node *e = parse_expr(p);
        if (e->depth > d) d = e->depth;
        push(p, &v, e);
        if (!at(p, T_COMMA)) break;
        shift(p);
    }
    if (!at(p, T_RBRACK)) unexpected(p, "`,` or `]`");
    p->nl_skip--;
    p->open--;
    ps_node *n = node(p, N_LIST, open.start, p->cur.end);
    shift(p);
    n->items = v.v;
    n->n = v.n;
    n->depth = d + 1;
    leave(p);
    p->args_mode = saved_args;
    return n;
}

static ps_node *parse_dict(parser *p) {
    lx_token open = p->cur;
    int saved_args = p->args_mode;
    p->args_mode = 0;
    enter(p, open.start);
    shift(p);
    p->nl_skip++;
    p->open++;
    nvec v = { 0 };
    int d = 0;
    while (!at(p, T_RBRACE)) {
        lx_token *k = cur(p);
        ps_node *key;
        if (k->kind == T_STRING) {
            key = node(p, N_STR, k->start, k->end);
            key->name = k->sval;
            key->nlen = k->slen;
        } else if (k->kind == T_IDENT || (k->kind >= T_AND && k->kind <= T_NONE)) {
            /* bare names are keys, as in {lr: 1e-4} */
            key = node(p, N_STR, k->start, k->end);
            key->name = p->lx.src + k->start;
            key->nlen = k->end - k->start;
        } else {
            unexpected(p, "a dict key (a string or a name)");
        }
        shift(p);
        expect(p, T_COLON, "`:` after the dict key");
        ps_node *val = parse_expr(p);
        if (val->depth > d) d = val->depth;
        push(p, &v, key);
        push(p, &v, val);
        if (!at(p, T_COMMA)) break;
        shift(p);
    }
    if (!at(p, T_RBRACE)) unexpected(p, "`,` or `}`");
    p->nl_skip--;
    p->open--;
    ps_node *n = node(p, N_DICT, open.start, p->cur.end);
    shift(p);
    n->items = v.v;
    n->n = v.n;
    n->depth = d + 1;
    leave(p);
    p->args_mode = saved_args;
    return n;
}

static ps_node *parse_primary(parser *p) {
    lx_token *t = cur(p);
    ps_node *n;
    switch (t->kind) {
    case T_INT:
        n = node(p, N_INT, t->start, t->end);
        n->ival = t->ival;
        shift(p);
        return n;
    case T_FLOAT:
        n = node(p, N_FLOAT, t->start, t->end);
        n->fval = t->fval;
        shift(p);
        return n;
    case T_STRING:
        n = node(p, N_STR, t->start, t->end);
        n->name = t->sval;
        n->nlen = t->slen;
        shift(p);
        return n;
    case T_TRUE: n = node(p, N_TRUE, t->start, t->end); shift(p); return n;
    case T_FALSE: n = node(p, N_FALSE, t->start, t->end); shift(p); return n;
    case T_NONE: n = node(p, N_NONE, t->start, t->end); shift(p); return n;
    case T_IDENT:
        n = node(p, N_NAME, t->start, t->end);
        n->name = p->lx.src + t->start;
        n->nlen = t->end - t->start;
        n->name_start = t->start;
        shift(p);
        return n;
    case T_LBRACK: return parse_list(p);
    case T_LBRACE: return parse_dict(p);
    case T_LPAREN: {
        lx_token open = *t;
        int saved_args = p->args_mode;
        p->args_mode = 0;
        enter(p, open.start);
        shift(p);
        p->nl_skip++;
        p->open++;
        if (find_cmd(p, cur(p)) && peek(p)->kind != T_ASSIGN) n = parse_command(p, 1);
        else n = parse_expr(p);
        if (!at(p, T_RPAREN)) unexpected(p, "`)`");
        p->nl_skip--;
        p->open--;
        /* keep the inner node (its position points at the text inside) */
        shift(p);
        leave(p);
        p->args_mode = saved_args;
        return n;
    }
    default:
        unexpected(p, "an expression");
    }
}

static ps_node *parse_postfix(parser *p) {
    ps_node *n = parse_primary(p);
    for (;;) {
        if (at(p, T_DOT)) {
            shift(p);
            lx_token *t = cur(p);
            ps_node *a = node(p, N_ATTR, n->start, t->end);
            a->a = n;
            a->name_start = t->start;
            if (t->kind == T_IDENT) {
                a->name = p->lx.src + t->start;
                a->nlen = t->end - t->start;
            } else if (t->kind == T_INT) {
                a->name = p->lx.src + t->start;
                a->nlen = t->end - t->start;
                a->ival = t->ival;
                a->is_index = 1;
            } else {
                unexpected(p, "an attribute name or index after `.`");
            }
            shift(p);
            set_depth(p, a);
            n = a;
        } else if (at(p, T_LBRACK) && !(p->args_mode && p->cur.start > p->prev_end)) {
            /* in command arguments, `x [1]` is two arguments and `x[1]` one */
            lx_token open = p->cur;
            int saved_args = p->args_mode;
            p->args_mode = 0;
            enter(p, open.start);
            shift(p);
            p->nl_skip++;
            p->open++;
            /* one index, or a tuple of indices and slices: w[0:4, 2] */
            nvec v = { 0 };
            int d = 0;
            for (;;) {
                ps_node *e = parse_index_item(p);
                if (e->depth > d) d = e->depth;
                push(p, &v, e);
                if (!at(p, T_COMMA)) break;
                shift(p);
            }
            if (!at(p, T_RBRACK)) unexpected(p, "`]`");
            ps_node *idx = v.v[0];
            if (v.n > 1) {
                idx = node(p, N_LIST, open.start, p->cur.end);
                idx->items = v.v;
                idx->n = v.n;
                idx->is_index = 1;
                idx->depth = d + 1;
            }
            p->nl_skip--;
            p->open--;
            ps_node *x = node(p, N_INDEX, n->start, p->cur.end);
            shift(p);
            x->a = n;
            x->b = idx;
            set_depth(p, x);
            leave(p);
            p->args_mode = saved_args;
            n = x;
        } else {
            return n;
        }
    }
}

static ps_node *parse_unary(parser *p) {
    lx_token *t = cur(p);
    if (t->kind == T_MINUS || t->kind == T_PLUS) {
        size_t st = t->start;
        ps_kind k = t->kind == T_MINUS ? N_NEG : N_POS;
        enter(p, st);
        shift(p);
        ps_node *x = parse_unary(p);
        leave(p);
        /* fold `-5` into a literal so that -9223372036854775808 stays an int */
        if (k == N_NEG && x->kind == N_FLOAT) { x->fval = -x->fval; x->start = st; return x; }
        ps_node *n = node(p, k, st, x->end);
        n->a = x;
        set_depth(p, n);
        return n;
    }
    return parse_postfix(p);
}

static ps_node *parse_term(parser *p) {
    ps_node *l = parse_unary(p);
    for (;;) {
        lx_kind k = cur(p)->kind;
        if (k != T_STAR && k != T_SLASH && k != T_DSLASH && k != T_PERCENT) return l;
        shift(p);
        ps_node *r = parse_unary(p);
        ps_node *n = node(p, N_BINOP, l->start, r->end);
        n->op = k;
        n->a = l;
        n->b = r;
        set_depth(p, n);
        l = n;
    }
}

/* In command arguments `print 7 -3` is two arguments: a sign with space before it and
 * none after starts a new argument; `7 - 3` and `7-3` stay subtractions. */
static int starts_signed_arg(parser *p) {
    if (!p->args_mode || p->nl_skip) return 0;
    lx_token *t = cur(p);
    if (t->start == p->prev_end) return 0;
    lx_token *n = peek(p);
    return n->start == t->end && n->kind != T_NEWLINE && n->kind != T_EOF;
}

static ps_node *parse_sum(parser *p) {
    ps_node *l = parse_term(p);
    for (;;) {
        lx_kind k = cur(p)->kind;
        if (k != T_PLUS && k != T_MINUS) return l;
        if (starts_signed_arg(p)) return l;
        shift(p);
        ps_node *r = parse_term(p);
        ps_node *n = node(p, N_BINOP, l->start, r->end);
        n->op = k;
        n->a = l;
        n->b = r;
        set_depth(p, n);
        l = n;
    }
}

static int is_cmp(lx_kind k) {
    return k == T_EQ || k == T_NE || k == T_LT || k == T_LE || k == T_GT || k == T_GE || k == T_IN;
}

static ps_node *parse_cmp(parser *p) {
    ps_node *l = parse_sum(p);
    lx_kind k = cur(p)->kind;
    int negate = 0;
    if (k == T_NOT && peek(p)->kind == T_IN) { negate = 1; shift(p); k = T_IN; }
    if (!is_cmp(k)) return l;
    shift(p);
    ps_node *r = parse_sum(p);
    ps_node *n = node(p, N_BINOP, l->start, r->end);
    n->op = k;
    n->a = l;
    n->b = r;
    set_depth(p, n);
    if (is_cmp(cur(p)->kind))
        fail_at(p, cur(p)->start, cur(p)->end, 0,
                "comparisons cannot be chained; write `a < b and b < c`");
    if (negate) {
        ps_node *x = node(p, N_NOT, n->start, n->end);
        x->a = n;
        set_depth(p, x);
        n = x;
    }
    return n;
}

static ps_node *parse_not(parser *p) {
    if (at(p, T_NOT)) {
        size_t st = p->cur.start;
        enter(p, st);
        shift(p);
        ps_node *x = parse_not(p);
        leave(p);
        ps_node *n = node(p, N_NOT, st, x->end);
        n->a = x;
        set_depth(p, n);
        return n;
    }
    return parse_cmp(p);
}

static ps_node *parse_and(parser *p) {
    ps_node *l = parse_not(p);
    while (at(p, T_AND)) {
        shift(p);
        ps_node *r = parse_not(p);
        ps_node *n = node(p, N_AND, l->start, r->end);
        n->a = l;
        n->b = r;
        set_depth(p, n);
        l = n;
    }
    return l;
}

static ps_node *parse_expr(parser *p) {
    ps_node *l = parse_and(p);
    while (at(p, T_OR)) {
        shift(p);
        ps_node *r = parse_and(p);
        ps_node *n = node(p, N_OR, l->start, r->end);
        n->a = l;
        n->b = r;
        set_depth(p, n);
        l = n;
    }
    return l;
}

/* ---- statements -------------------------------------------------------------------- */

static int stmt_end(lx_kind k) {
    return k == T_NEWLINE || k == T_SEMI || k == T_EOF || k == T_RBRACE || k == T_QUESTION;
}

static int takes_name(const lp_command *cmd) {
    for (const lp_param *q = cmd->params; q && q->name; q++)
        if (q->type == LP_T_NAME) return 1;
    return 0;
}

/* CMD args...   (cur is the command name) */
static ps_node *parse_command(parser *p, int in_parens) {
    lx_token name = p->cur;
    const lp_command *cmd = find_cmd(p, &name);
    ps_node *n = node(p, N_CALL, name.start, name.end);
    n->cmd = cmd;
    n->name = p->lx.src + name.start;
    n->nlen = name.end - name.start;
    shift(p);
    if (cmd->flags & LP_CMD_STATEMENT) {
        if (stmt_end(cur(p)->kind) || at(p, T_RPAREN))
            unexpected(p, "a statement after the command");
        enter(p, name.start);
        int saved = p->nl_skip;
        p->nl_skip = 0;
        n->a = parse_stmt(p);
        p->nl_skip = saved;
        leave(p);
        n->end = n->a->end;
        return n;
    }
    nvec v = { 0 };
    for (;;) {
        lx_token *t = cur(p);
        if (in_parens && t->kind == T_RPAREN) break;
        if (t->kind == T_IDENT && peek(p)->kind == T_ASSIGN) {
            ps_node *o = node(p, N_OPTION, t->start, t->end);
            o->name = p->lx.src + t->start;
            o->nlen = t->end - t->start;
            o->name_start = t->start;
            shift(p);
            shift(p);
            if (stmt_end(cur(p)->kind)) unexpected(p, "a value after `=`");
            int saved_args = p->args_mode;
            p->args_mode = 1;
            o->a = parse_expr(p);
            p->args_mode = saved_args;
            o->end = o->a->end;
            push(p, &v, o);
        } else if (t->kind >= T_AND && t->kind <= T_REPEAT && t->kind != T_NOT && takes_name(cmd)) {
            /* `help repeat`: a keyword given to a command that takes names */
            ps_node *e = node(p, N_NAME, t->start, t->end);
            e->name = p->lx.src + t->start;
            e->nlen = t->end - t->start;
            e->name_start = t->start;
            shift(p);
            ps_node *a = node(p, N_ARG, e->start, e->end);
            a->a = e;
            push(p, &v, a);
        } else if (starts_expr(t->kind)) {
            int saved_args = p->args_mode;
            p->args_mode = 1;
            ps_node *e = parse_expr(p);
            p->args_mode = saved_args;
            ps_node *a = node(p, N_ARG, e->start, e->end);
            a->a = e;
            push(p, &v, a);
        } else {
            break;
        }
        n->end = v.v[v.n - 1]->end;
    }
    n->items = v.v;
    n->n = v.n;
    return n;
}

static ps_node *parse_block(parser *p) {
    lx_token open = expect(p, T_LBRACE, "`{` to start the block");
    enter(p, open.start);
    int saved = p->nl_skip;
    p->nl_skip = 0;
    p->open++;
    nvec v = { 0 };
    for (;;) {
        while (at(p, T_NEWLINE) || at(p, T_SEMI)) shift(p);
        if (at(p, T_RBRACE)) break;
        if (at(p, T_EOF))
            fail_at(p, open.start, open.end, 1, "block opened here is never closed with `}`");
        ps_node *st = parse_stmt(p);
        push(p, &v, st);
        if (!stmt_end(cur(p)->kind) || at(p, T_QUESTION)) not_stmt_end(p, st);
    }
    p->open--;
    ps_node *b = node(p, S_BLOCK, open.start, p->cur.end);
    shift(p);
    p->nl_skip = saved;
    b->items = v.v;
    b->n = v.n;
    leave(p);
    return b;
}

static ps_node *parse_if(parser *p) {
    lx_token kw = p->cur;
    shift(p);
    ps_node *n = node(p, S_IF, kw.start, kw.end);
    if (at(p, T_LBRACE)) unexpected(p, "a condition after `if`");
    n->a = parse_expr(p);
    n->b = parse_block(p);
    n->end = n->b->end;
    /* `else` may follow `}` on the same line or on a later one */
    int found_else = at(p, T_ELSE);
    if (!found_else && at(p, T_NEWLINE)) {
        /* look past blank lines without consuming a real statement */
        lx_lexer save = p->lx;
        lx_token scur = p->cur, snxt = p->nxt;
        int shas = p->has_next;
        while (at(p, T_NEWLINE)) shift(p);
        if (at(p, T_ELSE)) found_else = 1;
        else { p->lx = save; p->cur = scur; p->nxt = snxt; p->has_next = shas; }
    }
    if (found_else) {
        shift(p);
        if (at(p, T_IF)) {
            enter(p, p->cur.start);
            n->c = parse_if(p);
            leave(p);
        } else {
            n->c = parse_block(p);
        }
        n->end = n->c->end;
    }
    return n;
}

static ps_node *help_node(parser *p, ps_node *target, size_t start, size_t end) {
    ps_node *h = node(p, S_HELP, start, end);
    if (target->kind == N_CALL) {
        if (target->n || target->a)
            fail_at(p, target->start, target->end, 0,
                    "`?` shows the help of a command or a value; write `%.*s?` without arguments",
                    (int)target->nlen, target->name);
        h->cmd = target->cmd;
    }
    h->a = target;
    return h;
}

static ps_node *parse_stmt(parser *p) {
    lx_token *t = cur(p);
    if ((t->kind == T_REPEAT || t->kind == T_FOR || t->kind == T_IF) && peek(p)->kind == T_QUESTION) {
        /* `repeat?`: help of the statement */
        ps_node *h = node(p, S_HELP, t->start, p->nxt.end);
        h->name = p->lx.src + t->start;
        h->nlen = t->end - t->start;
        shift(p);
        shift(p);
        return h;
    }
    switch (t->kind) {
    case T_REPEAT: {
        size_t st = t->start;
        shift(p);
        ps_node *n = node(p, S_REPEAT, st, st);
        if (at(p, T_LBRACE)) unexpected(p, "a count after `repeat`");
        n->a = parse_expr(p);
        n->b = parse_block(p);
        n->end = n->b->end;
        return n;
    }
    case T_FOR: {
        size_t st = t->start;
        shift(p);
        lx_token var = expect(p, T_IDENT, "a variable name after `for`");
        expect(p, T_IN, "`in` after the loop variable");
        ps_node *n = node(p, S_FOR, st, st);
        n->name = p->lx.src + var.start;
        n->nlen = var.end - var.start;
        n->name_start = var.start;
        if (at(p, T_LBRACE))
            fail_at(p, p->cur.start, p->cur.end, 0,
                    "expected a list to loop over, found `{` (a dict literal here needs parentheses)");
        n->a = parse_expr(p);
        n->b = parse_block(p);
        n->end = n->b->end;
        return n;
    }
    case T_IF: return parse_if(p);
    case T_ELSE: fail_at(p, t->start, t->end, 0, "`else` without `if` (it must follow the `}` of an `if` block)");
    case T_QUESTION: {
        size_t st = t->start;
        shift(p);
        ps_node *target;
        lx_kind kk = cur(p)->kind;
        if (kk == T_REPEAT || kk == T_FOR || kk == T_IF) {
            lx_token k = p->cur;
            shift(p);
            ps_node *h = node(p, S_HELP, st, k.end);
            h->name = p->lx.src + k.start;
            h->nlen = k.end - k.start;
            return h;
        }
        if (find_cmd(p, cur(p))) {
            lx_token c = p->cur;
            target = node(p, N_CALL, c.start, c.end);
            target->cmd = find_cmd(p, &c);
            target->name = p->lx.src + c.start;
            target->nlen = c.end - c.start;
            shift(p);
        } else {
            target = parse_expr(p);
        }
        return help_node(p, target, st, target->end);
    }
    case T_IDENT: {
        lx_kind nk = peek(p)->kind;
        if (nk == T_ASSIGN) {
            lx_token name = p->cur;
            if (find_cmd(p, &name))
                fail_at(p, name.start, name.end, 0, "cannot assign to `%.*s`: it is a command",
                        (int)(name.end - name.start), p->lx.src + name.start);
            shift(p);
            shift(p);
            ps_node *n = node(p, S_ASSIGN, name.start, name.end);
            n->name = p->lx.src + name.start;
            n->nlen = name.end - name.start;
            n->name_start = name.start;
            if (stmt_end(cur(p)->kind)) unexpected(p, "a value after `=`");
            if (find_cmd(p, cur(p)) && peek(p)->kind != T_ASSIGN) n->a = parse_command(p, 0);
            else n->a = parse_expr(p);
            n->end = n->a->end;
            return n;
        }
        if (find_cmd(p, t)) {
            ps_node *c = parse_command(p, 0);
            if (at(p, T_QUESTION)) {
                size_t e = p->cur.end;
                shift(p);
                return help_node(p, c, c->start, e);
            }
            ps_node *s = node(p, S_EXPR, c->start, c->end);
            s->a = c;
            return s;
        }
        break;
    }
    default:
        break;
    }
    if (!starts_expr(cur(p)->kind)) unexpected(p, "a statement");
    ps_node *e = parse_expr(p);
    if (at(p, T_ASSIGN))
        fail_at(p, p->cur.start, p->cur.end, 0,
                "only a plain name can be assigned to (`x = ...`); use `==` to compare");
    if (at(p, T_QUESTION)) {
        size_t end = p->cur.end;
        shift(p);
        return help_node(p, e, e->start, end);
    }
    ps_node *s = node(p, S_EXPR, e->start, e->end);
    s->a = e;
    return s;
}

static int setup(parser *p, ps_tree *t, const char *src, size_t len, ps_find_cmd find, void *fctx,
                 ps_error *err) {
    memset(p, 0, sizeof *p);
    memset(t, 0, sizeof *t);
    memset(err, 0, sizeof *err);
    t->arena = lp_calloc(1, sizeof(ps_arena));
    if (!t->arena) {
        snprintf(err->msg, sizeof err->msg, "out of memory");
        return -1;
    }
    p->arena = t->arena;
    p->find = find;
    p->fctx = fctx;
    p->err = err;
    lx_init(&p->lx, src, len, lx_alloc_cb, t->arena);
    return 0;
}

static int too_big(ps_tree *t, size_t len, ps_error *err) {
    if (len < PS_MAX_CELL) return 0;
    memset(t, 0, sizeof *t);
    memset(err, 0, sizeof *err);
    snprintf(err->msg, sizeof err->msg, "cell too large (%zu bytes; the limit is 2 GiB)", len);
    return 1;
}

int ps_parse(ps_tree *t, const char *src, size_t len, ps_find_cmd find, void *fctx, ps_error *err) {
    if (too_big(t, len, err)) return -1;
    parser *p = lp_malloc(sizeof *p);   /* jmp_buf + lexer: keep them off small thread stacks */
    if (!p) { memset(t, 0, sizeof *t); snprintf(err->msg, sizeof err->msg, "out of memory"); return -1; }
    if (setup(p, t, src, len, find, fctx, err)) { lp_free(p); return -1; }
    if (setjmp(p->jb)) {
        t->open_depth = p->open;
        lp_free(p);
        return -1;
    }
    shift(p);
    nvec v = { 0 };
    for (;;) {
        while (at(p, T_NEWLINE) || at(p, T_SEMI)) shift(p);
        if (at(p, T_EOF)) break;
        if (at(p, T_RBRACE)) fail_at(p, p->cur.start, p->cur.end, 0, "unexpected `}` (no block is open)");
        if (at(p, T_RPAREN) || at(p, T_RBRACK))
            fail_at(p, p->cur.start, p->cur.end, 0, "unexpected %s (no bracket is open)", lx_kind_name(p->cur.kind));
        ps_node *st = parse_stmt(p);
        push(p, &v, st);
        if (at(p, T_RBRACE)) fail_at(p, p->cur.start, p->cur.end, 0, "unexpected `}` (no block is open)");
        if (!stmt_end(cur(p)->kind) || at(p, T_QUESTION)) {
            if (at(p, T_RPAREN) || at(p, T_RBRACK))
                fail_at(p, p->cur.start, p->cur.end, 0, "unexpected %s (no bracket is open)",
                        lx_kind_name(p->cur.kind));
            not_stmt_end(p, st);
        }
    }
    ps_node *root = node(p, S_BLOCK, 0, len);
    root->items = v.v;
    root->n = v.n;
    t->root = root;
    lp_free(p);
    return 0;
}

int ps_parse_expr(ps_tree *t, const char *src, size_t len, ps_find_cmd find, void *fctx, ps_error *err) {
    if (too_big(t, len, err)) return -1;
    parser *p = lp_malloc(sizeof *p);
    if (!p) { memset(t, 0, sizeof *t); snprintf(err->msg, sizeof err->msg, "out of memory"); return -1; }
    if (setup(p, t, src, len, find, fctx, err)) { lp_free(p); return -1; }
    if (setjmp(p->jb)) {
        t->open_depth = p->open;
        lp_free(p);
        return -1;
    }
    shift(p);
    p->nl_skip = 1;   /* an expression may span lines */
    ps_node *e = parse_expr(p);
    if (!at(p, T_EOF)) unexpected(p, "end of the expression");
    t->root = e;
    lp_free(p);
    return 0;
}
