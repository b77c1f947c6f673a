/* test_ps.c — the loupe parser: statement forms, precedence, positions, continuation
 * lines, errors and their positions, limits. */
#include "lang/interp.h"
#include "lang/lexer.h"
#include "lang/parser.h"
#include "util/mem.h"
#include "t.h"
#include <stdlib.h>

static ps_tree tree;
static ps_error err;

static int parse(const char *src) {
    ps_free(&tree);
    return ps_parse(&tree, src, strlen(src), ev_find_cb, NULL, &err);
}

static ps_node *stmt(size_t i) { return tree.root->items[i]; }

static void test_statement_forms(void) {
    T_EQ_INT(parse("x = 1\nprint x\nx + 1\nrepeat 2 { }\nfor a in [1] { }\nif x { } else { }\nprint?\n"), 0);
    T_EQ_INT(tree.root->n, 7);
    T_EQ_INT(stmt(0)->kind, S_ASSIGN);
    T_EQ_INT(stmt(1)->kind, S_EXPR);
    T_EQ_INT(stmt(1)->a->kind, N_CALL);
    T_EQ_INT(stmt(2)->a->kind, N_BINOP);
    T_EQ_INT(stmt(3)->kind, S_REPEAT);
    T_EQ_INT(stmt(4)->kind, S_FOR);
    T_EQ_INT(stmt(5)->kind, S_IF);
    T_OK(stmt(5)->c != NULL);
    T_EQ_INT(stmt(6)->kind, S_HELP);
    T_OK(stmt(6)->cmd != NULL);
    T_EQ_INT(parse("?x\nx?\n?print\nrepeat?\n"), 0);
    T_EQ_INT(stmt(0)->kind, S_HELP);
    T_EQ_INT(stmt(1)->kind, S_HELP);
    T_OK(stmt(2)->cmd != NULL);
    T_OK(stmt(3)->name != NULL);
    T_EQ_INT(parse("x = sleep 1\n"), 0);
    T_EQ_INT(stmt(0)->a->kind, N_CALL);
    T_EQ_INT(parse("if a { } else if b { } else { }"), 0);
    T_EQ_INT(stmt(0)->c->kind, S_IF);
    T_EQ_INT(parse("if a { }\n\n else { }"), 0);
    T_OK(stmt(0)->c != NULL);
}

static void test_command_args(void) {
    T_EQ_INT(parse("print a \"b\" [1] sep=\",\" end=\"\""), 0);
    ps_node *c = stmt(0)->a;
    T_EQ_INT(c->n, 5);
    T_EQ_INT(c->items[0]->kind, N_ARG);
    T_EQ_INT(c->items[2]->kind, N_ARG);
    T_EQ_INT(c->items[2]->a->kind, N_LIST);   /* ` [1]` after a space: a new argument */
    T_EQ_INT(c->items[3]->kind, N_OPTION);
    T_OK(!strncmp(c->items[3]->name, "sep", 3));
    T_EQ_INT(parse("print xs[1]"), 0);
    T_EQ_INT(stmt(0)->a->n, 1);
    T_EQ_INT(stmt(0)->a->items[0]->a->kind, N_INDEX);
    T_EQ_INT(parse("print 7 -3 7 - 3 7-3"), 0);
    T_EQ_INT(stmt(0)->a->n, 4);
    T_EQ_INT(parse("print (sleep 0) (1 +\n 2)"), 0);
    T_EQ_INT(stmt(0)->a->n, 2);
    T_EQ_INT(stmt(0)->a->items[0]->a->kind, N_CALL);
    T_EQ_INT(parse("time x = 1"), 0);
    T_EQ_INT(stmt(0)->a->a->kind, S_ASSIGN);
    T_EQ_INT(parse("help repeat"), 0);
    T_EQ_INT(stmt(0)->a->items[0]->a->kind, N_NAME);
}

static void test_precedence(void) {
    T_EQ_INT(parse("1 + 2 * 3"), 0);
    ps_node *e = stmt(0)->a;
    T_EQ_INT(e->op, T_PLUS);
    T_EQ_INT(e->b->op, T_STAR);
    T_EQ_INT(parse("not a == b and c or d"), 0);
    e = stmt(0)->a;
    T_EQ_INT(e->kind, N_OR);
    T_EQ_INT(e->a->kind, N_AND);
    T_EQ_INT(e->a->a->kind, N_NOT);
    T_EQ_INT(e->a->a->a->op, T_EQ);
    T_EQ_INT(parse("-a.b[0]"), 0);
    e = stmt(0)->a;
    T_EQ_INT(e->kind, N_NEG);
    T_EQ_INT(e->a->kind, N_INDEX);
    T_EQ_INT(e->a->a->kind, N_ATTR);
    T_EQ_INT(parse("a not in b"), 0);
    T_EQ_INT(stmt(0)->a->kind, N_NOT);
    T_EQ_INT(parse("m.layers.0.self_attn"), 0);
    e = stmt(0)->a;
    T_EQ_INT(e->kind, N_ATTR);
    T_EQ_INT(e->a->kind, N_ATTR);
    T_EQ_INT(e->a->is_index, 1);
    T_EQ_INT(e->a->ival, 0);
    T_EQ_INT(parse("10 - 2 - 3"), 0);   /* left associative */
    T_EQ_INT(stmt(0)->a->a->op, T_MINUS);
}

static void test_positions(void) {
    T_EQ_INT(parse("x = 1\n  y + zz"), 0);
    ps_node *e = stmt(1)->a;
    T_EQ_INT(e->start, 8);
    T_EQ_INT(e->end, 14);
    T_EQ_INT(e->b->start, 12);
}

static void test_continuation(void) {
    T_EQ_INT(parse("x = [1,\n 2,\n]\ny = {\"a\":\n 1}\nz = (1\n+ 2)\nprint 1 \\\n 2"), 0);
    T_EQ_INT(tree.root->n, 4);
    T_EQ_INT(parse("repeat 2 {\n print 1\n\n print 2 }"), 0);
    T_EQ_INT(stmt(0)->b->n, 2);
    T_EQ_INT(parse("x = 1; y = 2;; print x"), 0);
    T_EQ_INT(tree.root->n, 3);
}

static void expect_error(const char *src, const char *msg, size_t pos, int incomplete) {
    int rc = parse(src);
    T_EQ_INT(rc, -1);
    if (rc != -1) return;
    T_CONTAINS(err.msg, msg);
    T_EQ_INT(err.pos, pos);
    T_EQ_INT(err.incomplete, incomplete);
}

static void test_errors(void) {
    expect_error("print (1 + )", "expected an expression, found `)`", 11, 0);
    expect_error("x = [1, 2", "expected `,` or `]`, found end of input", 9, 1);
    expect_error("repeat 2 {", "never closed", 9, 1);
    expect_error("print \"abc", "unterminated string", 6, 1);
    expect_error("x = 1 +", "expected an expression, found end of input", 7, 0);
    expect_error("print = 1", "cannot assign to `print`", 0, 0);
    expect_error("1 < 2 < 3", "cannot be chained", 6, 0);
    expect_error("else { }", "`else` without `if`", 0, 0);
    expect_error("]", "unexpected `]`", 0, 0);
    expect_error("}", "unexpected `}`", 0, 0);
    expect_error("x.y = 1", "only a plain name", 4, 0);
    expect_error("for x [1] { }", "expected `in`", 6, 0);
    expect_error("repeat 3 print 1", "expected `{`", 9, 0);
    expect_error("print 1?", "without arguments", 0, 0);
    expect_error("x = ", "a value after `=`", 4, 0);
    expect_error("d = {1: 2}", "a dict key", 5, 0);
    expect_error("a b", "expected end of statement", 2, 0);
    expect_error("time", "a statement after the command", 4, 0);
}

static void test_limits(void) {
    /* nesting is capped with a clear error, long chains are bounded, flat data is fine */
    size_t n = 10000;
    char *s = malloc(2 * n + 2);
    memset(s, '[', n);
    memset(s + n, ']', n);
    s[2 * n] = 0;
    expect_error(s, "nesting too deep", PS_MAX_NESTING, 0);
    memset(s, '(', n);
    memset(s + n, ')', n);
    expect_error(s, "nesting too deep", PS_MAX_NESTING, 0);
    memset(s, '-', n);
    s[n] = '1';
    s[n + 1] = 0;
    expect_error(s, "nesting too deep", PS_MAX_NESTING, 0);
    free(s);
    /* 1+1+...: left-deep tree */
    size_t terms = 5000;
    s = malloc(terms * 2 + 1);
    for (size_t i = 0; i < terms; i++) { s[2 * i] = '1'; s[2 * i + 1] = '+'; }
    s[terms * 2 - 1] = 0;
    expect_error(s, "expression too deep", 0, 0);
    free(s);
    /* nested blocks at the limit */
    char buf[8192] = "";
    for (int i = 0; i < 100; i++) strcat(buf, "if true {\n");
    strcat(buf, "x = 1\n");
    for (int i = 0; i < 100; i++) strcat(buf, "}\n");
    T_EQ_INT(parse(buf), 0);
    /* a big flat list parses */
    size_t items = 200000;
    s = malloc(items * 2 + 8);
    size_t k = 0;
    s[k++] = 'x'; s[k++] = '='; s[k++] = '[';
    for (size_t i = 0; i < items; i++) { s[k++] = '7'; s[k++] = ','; }
    s[k++] = ']';
    s[k] = 0;
    T_EQ_INT(parse(s), 0);
    T_EQ_INT(stmt(0)->a->n, items);
    free(s);
}

static void test_expr_only(void) {
    ps_tree t;
    ps_error e;
    T_EQ_INT(ps_parse_expr(&t, "[1,\n 2]", 7, NULL, NULL, &e), 0);
    T_EQ_INT(t.root->kind, N_LIST);
    ps_free(&t);
    T_EQ_INT(ps_parse_expr(&t, "1 2", 3, NULL, NULL, &e), -1);
    ps_free(&t);
}

static void test_oom(void) {
    /* every allocation failure gives an error, never a crash or a leak (run under ASan) */
    const char *src = "x = [1, 2, {\"a\": \"b\"}]\nrepeat 2 { print x }\n";
    for (long i = 1; i < 40; i++) {
        lp_mem_fail_after(i);
        ps_tree t;
        ps_error e;
        int rc = ps_parse(&t, src, strlen(src), ev_find_cb, NULL, &e);
        lp_mem_fail_after(0);
        if (rc) T_CONTAINS(e.msg, "out of memory");
        ps_free(&t);
    }
}

int main(void) {
    T_RUN(test_statement_forms);
    T_RUN(test_command_args);
    T_RUN(test_precedence);
    T_RUN(test_positions);
    T_RUN(test_continuation);
    T_RUN(test_errors);
    T_RUN(test_limits);
    T_RUN(test_expr_only);
    T_RUN(test_oom);
    ps_free(&tree);
    return t_done();
}
