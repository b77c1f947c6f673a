/* test_lang.c — the interpreter through loupe.h: the display rule, errors as the kernel
 * gets them, failed statements changing nothing, interrupts, input, is_complete,
 * completion, inspection, user_expressions, and bad input (huge cells, deep nesting,
 * invalid UTF-8, NUL bytes, allocation failures). */
#include "lang/interp.h"
#include "t.h"
#include "test_lang_harness.h"
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void test_display_rule(void) {
    lp_interp *it = lp_interp_new();
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    lp_outcome o;
    const char *code = "1\nx = 2\nprint \"p\"\nx + 1";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_EQ_INT(r.displays, 1);                 /* `1` went out as display_data */
    T_STR(sb_str(&r.text), "1\np\n");
    T_STR(json_string_value(json_object_get(o.result, "text/plain")), "3");   /* the last: execute_result */
    lp_outcome_free(&o);
    code = "x\nprint 1";                      /* last statement is none: no result */
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_OK(o.result == NULL);
    lp_outcome_free(&o);
    code = "none";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_OK(o.result == NULL);
    lp_outcome_free(&o);
    code = "display 5 id=\"a\"\ndisplay 6 id=\"a\" update=true";
    r.displays = 0;
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_EQ_INT(r.displays, 1);
    T_EQ_INT(r.updates, 1);
    lp_outcome_free(&o);
    code = "vars";                           /* tables carry text/html */
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_CONTAINS(json_string_value(json_object_get(o.result, "text/html")), "<table>");
    lp_outcome_free(&o);
    rec_free(&r);
    lp_interp_free(it);
}

static void test_error_outcome(void) {
    lp_interp *it = lp_interp_new();
    lp_outcome o;
    const char *code = "x = 1\nprint (x +)";
    T_EQ_INT(lp_execute(it, code, strlen(code), NULL, &o), -1);
    T_EQ_INT(o.error, 1);
    T_STR(o.ename, "SyntaxError");
    T_STR(o.evalue, "line 2:11: expected an expression, found `)`");
    T_EQ_INT(json_array_size(o.traceback), 3);
    T_STR(json_string_value(json_array_get(o.traceback, 0)), "SyntaxError: line 2:11: expected an expression, found `)`");
    T_STR(json_string_value(json_array_get(o.traceback, 1)), "  2 | print (x +)");
    T_STR(json_string_value(json_array_get(o.traceback, 2)), "    |           ^");
    lp_outcome_free(&o);
    /* a syntax error anywhere means nothing ran */
    code = "y = 1\nprint (";
    T_EQ_INT(lp_execute(it, code, strlen(code), NULL, &o), -1);
    lp_outcome_free(&o);
    json_t *r = lp_user_expression(it, "y");
    T_STR(json_string_value(json_object_get(r, "status")), "error");
    T_STR(json_string_value(json_object_get(r, "ename")), "NameError");
    json_decref(r);
    code = "z = 1 / 0";
    T_EQ_INT(lp_execute(it, code, strlen(code), NULL, &o), -1);
    T_STR(o.ename, "ValueError");
    T_STR(o.evalue, "division by zero");
    lp_outcome_free(&o);
    lp_interp_free(it);
}

static void test_failed_statement_changes_nothing(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    run_cell(it, "x = 1\ny = [1]", &rc);
    T_EQ_INT(rc, 0);
    run_cell(it, "x = x + \"a\"", &rc);
    T_EQ_INT(rc, -1);
    T_STR(run_cell(it, "x", &rc), "1\n");
    run_cell(it, "x = [2, undefined]", &rc);
    T_STR(run_cell(it, "x", &rc), "1\n");
    run_cell(it, "del x nope", &rc);          /* del checks every name first */
    T_EQ_INT(rc, -1);
    T_STR(run_cell(it, "x", &rc), "1\n");
    run_cell(it, "del x y", &rc);
    T_EQ_INT(rc, 0);
    run_cell(it, "x", &rc);
    T_EQ_INT(rc, -1);
    /* statements before the failing one keep their effects */
    run_cell(it, "a = 1\nb = a / 0\nc = 3", &rc);
    T_STR(run_cell(it, "a", &rc), "1\n");
    run_cell(it, "b", &rc);
    T_EQ_INT(rc, -1);
    lp_interp_free(it);
}

static void *interrupt_later(void *arg) {
    usleep(100 * 1000);
    lp_interrupt(arg);
    return NULL;
}

static void test_interrupt(void) {
    lp_interp *it = lp_interp_new();
    lp_outcome o;
    pthread_t th;
    double t0 = now();
    pthread_create(&th, NULL, interrupt_later, it);
    const char *code = "x = 1\nsleep 30\nx = 2";
    T_EQ_INT(lp_execute(it, code, strlen(code), NULL, &o), -1);
    pthread_join(th, NULL);
    T_OK(now() - t0 < 2.0);
    T_STR(o.ename, "Interrupted");
    T_STR(json_string_value(json_array_get(o.traceback, 0)), "Interrupted: stopped by the user");
    lp_outcome_free(&o);
    int rc;
    T_STR(run_cell(it, "x", &rc), "1\n");     /* and the next cell runs */
    /* loops check the flag every iteration */
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    r.interrupt_after_streams = 3;
    code = "repeat 1000000 { print \"tick\" }";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), -1);
    T_EQ_INT(r.streams, 3);
    T_STR(o.ename, "Interrupted");
    lp_outcome_free(&o);
    r.streams = 0;
    code = "for i in [1, 2, 3, 4, 5, 6] { print i }";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), -1);
    T_EQ_INT(r.streams, 3);
    lp_outcome_free(&o);
    rec_free(&r);
    /* a request while nothing runs is dropped by the next cell */
    lp_interrupt(it);
    T_STR(run_cell(it, "1 + 1", &rc), "2\n");
    T_EQ_INT(rc, 0);
    lp_interp_free(it);
}

static void test_input(void) {
    lp_interp *it = lp_interp_new();
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    r.input = "Ada\r\nsecond\n";
    lp_outcome o;
    const char *code = "a = input \"name: \"\nb = input password=true\nprint a b";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_STR(sb_str(&r.text), "Ada second\n");
    lp_outcome_free(&o);
    code = "c = input";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), -1);
    T_STR(o.ename, "IOError");
    lp_outcome_free(&o);
    /* no input channel at all (stdin not allowed) */
    T_EQ_INT(lp_execute(it, code, strlen(code), NULL, &o), -1);
    T_STR(o.ename, "IOError");
    lp_outcome_free(&o);
    rec_free(&r);
    lp_interp_free(it);
}

static int is_complete(lp_interp *it, const char *code, char *indent) {
    return lp_is_complete(it, code, strlen(code), indent, 64);
}

static void test_is_complete(void) {
    lp_interp *it = lp_interp_new();
    char ind[64];
    T_EQ_INT(is_complete(it, "x = 1", ind), LP_COMPLETE);
    T_EQ_INT(is_complete(it, "", ind), LP_COMPLETE);
    T_EQ_INT(is_complete(it, "# just a comment", ind), LP_COMPLETE);
    T_EQ_INT(is_complete(it, "x = [1,", ind), LP_INCOMPLETE);
    T_STR(ind, "    ");
    T_EQ_INT(is_complete(it, "repeat 3 {", ind), LP_INCOMPLETE);
    T_STR(ind, "    ");
    T_EQ_INT(is_complete(it, "repeat 3 {\n  if x {\n", ind), LP_INCOMPLETE);
    T_STR(ind, "        ");
    T_EQ_INT(is_complete(it, "print \"abc", ind), LP_INCOMPLETE);
    T_EQ_INT(is_complete(it, "print (1 +", ind), LP_INCOMPLETE);
    T_EQ_INT(is_complete(it, "print 1 \\", ind), LP_INCOMPLETE);
    T_EQ_INT(is_complete(it, "repeat 3 { print 1 }", ind), LP_COMPLETE);
    T_EQ_INT(is_complete(it, "print (1 + )", ind), LP_INVALID);
    T_EQ_INT(is_complete(it, "x = 1 +", ind), LP_INVALID);
    T_EQ_INT(is_complete(it, "]", ind), LP_INVALID);
    T_EQ_INT(is_complete(it, "x = \xff", ind), LP_INVALID);
    T_EQ_INT(lp_is_complete(it, "a\0b", 3, ind, sizeof ind), LP_INVALID);
    lp_interp_free(it);
}

/* the texts of a completion reply, joined by spaces */
static const char *complete(lp_interp *it, const char *code, size_t cursor, size_t *s, size_t *e) {
    static char buf[8192];
    json_t *a = lp_complete(it, code, strlen(code), cursor, s, e);
    buf[0] = 0;
    size_t i;
    json_t *x;
    json_array_foreach(a, i, x) {
        if (i) strcat(buf, " ");
        strcat(buf, json_string_value(json_object_get(x, "text")));
        strcat(buf, ":");
        strcat(buf, json_string_value(json_object_get(x, "type")));
    }
    json_decref(a);
    return buf;
}

static char *attrs_text(void *p) { return lp_strdup("<attn>"); }
static int attrs_list(void *p, lv_attr_fn add, void *actx) {
    add(actx, "q_proj"); add(actx, "k_proj"); add(actx, "v_proj"); add(actx, "o_proj");
    return 0;
}
static lv_value *attrs_get(void *p, const char *name);
static const char *attrs_type(void *p, const char *name) { return name[0] == 'q' ? "module" : NULL; }
static const lv_type attn_type = { .name = "module", .text = attrs_text, .attrs = attrs_list, .getattr = attrs_get,
                                   .attr_type = attrs_type };
static lv_value *attrs_get(void *p, const char *name) {
    if (!strcmp(name, "q_proj")) return lv_str("Linear 64 → 64");
    return NULL;
}
static int run_mkattn(lp_call *c, lv_value **result) {
    *result = lv_new_opaque(&attn_type, NULL);
    return 0;
}
static const lp_command mkattn = { "mkattn", NULL, NULL, run_mkattn, .summary = "an attention module" };

static const char *inspect_text(lp_interp *it, const char *code, size_t cursor) {
    json_t *b = lp_inspect(it, code, strlen(code), cursor, 0);
    const char *r = b ? "(something)" : "(null)";
    json_decref(b);
    return r;
}

static void test_complete(void) {
    lp_interp *it = lp_interp_new();
    lp_interp_add_command(it, &mkattn);
    run_cell(it, "learning_rate = 1\nblocks = [{\"self_attn\": 1}]\nattn = mkattn\ncfg = {\"hidden\": 64}", NULL);
    size_t s, e;
    T_STR(complete(it, "pr", 2, &s, &e), "print:command");
    T_EQ_INT(s, 0);
    T_EQ_INT(e, 2);
    T_STR(complete(it, "x = 1\nsl", 8, &s, &e), "sleep:command");
    T_EQ_INT(s, 6);
    T_STR(complete(it, "print 1 se", 10, &s, &e), "sep=:option");
    T_STR(complete(it, "print 1 sep=\",\" s", 17, &s, &e), "stderr=:option");
    T_STR(complete(it, "print lea", 9, &s, &e), "learning_rate:variable");
    T_STR(complete(it, "x = learn", 9, &s, &e), "learning_rate:variable");
    T_STR(complete(it, "rep", 3, &s, &e), "repeat:keyword");
    T_STR(complete(it, "x = tru", 7, &s, &e), "true:keyword");
    T_STR(complete(it, "attn.", 5, &s, &e), "q_proj:module k_proj:attribute v_proj:attribute o_proj:attribute");
    T_EQ_INT(s, 5);
    T_STR(complete(it, "print attn.k", 12, &s, &e), "k_proj:attribute");
    T_EQ_INT(s, 11);
    T_STR(complete(it, "blocks[0].se", 12, &s, &e), "self_attn:attribute");
    T_STR(complete(it, "blocks.0.se", 11, &s, &e), "self_attn:attribute");
    T_STR(complete(it, "cfg.h", 5, &s, &e), "hidden:attribute");
    T_STR(complete(it, "x = (sleep 1 se", 15, &s, &e), "");   /* sleep has no options */
    T_STR(complete(it, "opt = adamw", 11, &s, &e), "adamw:command");
    /* the cursor in the middle of a word replaces the whole word */
    T_STR(complete(it, "prxyz", 2, &s, &e), "print:command");
    T_EQ_INT(e, 5);
    /* inside a block the statement starts after `{` */
    T_STR(complete(it, "repeat 2 { pr", 13, &s, &e), "print:command");
    /* nothing inside comments */
    T_STR(complete(it, "x = 1 # pri", 11, &s, &e), "");
    T_STR(complete(it, "# pri\npri", 9, &s, &e), "print:command");
    T_STR(inspect_text(it, "# sleep", 4), "(null)");
    /* completion never runs commands */
    T_STR(complete(it, "(sleep 100).", 12, &s, &e), "");
    /* file paths inside strings */
    mkdir("/tmp/loupe_complete_test", 0755);
    mkdir("/tmp/loupe_complete_test/models", 0755);
    FILE *f = fopen("/tmp/loupe_complete_test/model.safetensors", "w");
    if (f) fclose(f);
    const char *code = "x = load \"/tmp/loupe_complete_test/mo";
    T_STR(complete(it, code, strlen(code), &s, &e),
          "/tmp/loupe_complete_test/model.safetensors:path /tmp/loupe_complete_test/models/:path");
    T_EQ_INT(s, 10);
    T_EQ_INT(e, strlen(code));
    /* garbage does not crash and gives nothing odd */
    complete(it, "\xff\xfe", 2, &s, &e);
    complete(it, "]]]...[[[", 9, &s, &e);
    complete(it, "x", 100, &s, &e);
    T_EQ_INT(s, 0);
    lp_interp_free(it);
}

static const char *inspect(lp_interp *it, const char *code, size_t cursor) {
    static char buf[8192];
    json_t *b = lp_inspect(it, code, strlen(code), cursor, 0);
    snprintf(buf, sizeof buf, "%s", b ? json_string_value(json_object_get(b, "text/plain")) : "(null)");
    json_decref(b);
    return buf;
}

static void test_inspect(void) {
    lp_interp *it = lp_interp_new();
    run_cell(it, "xs = [1, 2, 3]\nname = \"東京\"", NULL);
    T_CONTAINS(inspect(it, "sleep 1", 2), "sleep SECONDS");
    T_CONTAINS(inspect(it, "sleep 1", 5), "sleep SECONDS");
    T_CONTAINS(inspect(it, "sleep 1", 7), "sleep SECONDS");       /* on an argument: the command */
    T_STR(inspect(it, "print xs", 8), "list (3 items): [1, 2, 3]");
    T_STR(inspect(it, "xs", 1), "list (3 items): [1, 2, 3]");
    T_STR(inspect(it, "name", 4), "string (2 characters): \"東京\"");
    T_STR(inspect(it, "xs.length", 9), "int: 3");
    T_CONTAINS(inspect(it, "repeat 3 { }", 3), "repeat N { STATEMENTS }");
    T_STR(inspect(it, "nothing", 3), "(null)");
    T_STR(inspect(it, "", 0), "(null)");
    T_STR(inspect(it, "\xff", 1), "(null)");
    lp_interp_free(it);
}

static void test_page(void) {
    lp_interp *it = lp_interp_new();
    rec r;
    lp_sink sink;
    rec_init(&r, it, &sink);
    lp_outcome o;
    const char *code = "x = 1\nprint?";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_EQ_INT(r.pages, 1);
    T_CONTAINS(sb_str(&r.text), "print [VALUES...]");
    lp_outcome_free(&o);
    /* `?x` pages; `help …` writes into the cell's output instead */
    r.displays = 0;
    code = "?x\nhelp x\nhelp\nhelp for";
    T_EQ_INT(lp_execute(it, code, strlen(code), &sink, &o), 0);
    T_EQ_INT(r.pages, 2);
    T_EQ_INT(r.displays, 3);
    lp_outcome_free(&o);
    rec_free(&r);
    lp_interp_free(it);
}

static void test_user_expression(void) {
    lp_interp *it = lp_interp_new();
    run_cell(it, "a = 20", NULL);
    json_t *r = lp_user_expression(it, "a * 2 + 2");
    T_STR(json_string_value(json_object_get(r, "status")), "ok");
    T_STR(json_string_value(json_object_get(json_object_get(r, "data"), "text/plain")), "42");
    T_OK(json_is_object(json_object_get(r, "metadata")));
    json_decref(r);
    r = lp_user_expression(it, "a +");
    T_STR(json_string_value(json_object_get(r, "ename")), "SyntaxError");
    T_OK(json_array_size(json_object_get(r, "traceback")) == 3);
    json_decref(r);
    r = lp_user_expression(it, "\xff");
    T_STR(json_string_value(json_object_get(r, "status")), "error");
    json_decref(r);
    lp_interp_free(it);
}

static void test_bad_input(void) {
    lp_interp *it = lp_interp_new();
    int rc;
    lp_outcome o;
    /* a 10 MB cell: 10 MB string literal, then 10 MB of statements; both linear */
    size_t big = 10u << 20;
    char *s = malloc(big + 64);
    strcpy(s, "s = \"");
    memset(s + 5, 'a', big);
    strcpy(s + 5 + big, "\"\nprint s.length");
    double t0 = now();
    T_STR(run_cell(it, s, &rc), "10485760\n");
    T_OK(now() - t0 < 10);
    size_t k = 0;
    while (k + 16 < big) { memcpy(s + k, "x = x + 1 # pad\n", 16); k += 16; }
    s[k] = 0;
    run_cell(it, "x = 0", &rc);
    t0 = now();
    run_cell(it, s, &rc);
    T_EQ_INT(rc, 0);
    T_OK(now() - t0 < 20);
    T_STR(run_cell(it, "x", &rc), "655359\n");
    /* a 10 MB cell with an error at the very end */
    strcpy(s + k - 16, "x = ]          \n");
    T_EQ_INT(lp_execute(it, s, strlen(s), NULL, &o), -1);
    T_STR(o.evalue, "line 655359:5: expected an expression, found `]`");
    lp_outcome_free(&o);
    free(s);
    /* 10,000 nested brackets */
    s = malloc(30000);
    memset(s, '[', 10000);
    s[10000] = 0;
    T_EQ_INT(lp_execute(it, s, 10000, NULL, &o), -1);
    T_STR(o.ename, "SyntaxError");
    T_CONTAINS(o.evalue, "nesting too deep");
    lp_outcome_free(&o);
    for (int i = 0; i < 10000; i += 2) { s[i] = '('; s[i + 1] = '['; }
    T_EQ_INT(lp_execute(it, s, 10000, NULL, &o), -1);
    T_CONTAINS(o.evalue, "nesting too deep");
    lp_outcome_free(&o);
    strcpy(s, "x = ");
    for (int i = 0; i < 5000; i++) strcat(s, "not ");
    strcat(s, "1");
    T_EQ_INT(lp_execute(it, s, strlen(s), NULL, &o), -1);
    T_CONTAINS(o.evalue, "nesting too deep");
    lp_outcome_free(&o);
    free(s);
    /* values nested deeper than the parser allows, built by a loop, are refused too */
    run_cell(it, "v = []\nrepeat 2000 { v = [v] }", &rc);
    T_EQ_INT(rc, -1);
    /* invalid UTF-8 and NUL bytes */
    T_EQ_INT(lp_execute(it, "x = \"\xc3\x28\"", 8, NULL, &o), -1);
    T_STR(o.evalue, "line 1:6: invalid UTF-8 byte 0xC3 (byte offset 5)");
    T_OK(json_array_size(o.traceback) == 3);   /* shown with U+FFFD, still valid JSON text */
    lp_outcome_free(&o);
    T_EQ_INT(lp_execute(it, "print 1\0", 8, NULL, &o), -1);
    T_STR(o.evalue, "line 1:8: NUL byte in the cell (byte offset 7)");
    lp_outcome_free(&o);
    /* and the next cell runs */
    T_STR(run_cell(it, "print \"still here\"", &rc), "still here\n");
    /* big results are refused, not attempted */
    run_cell(it, "s = \"ab\" * 1000000000", &rc);
    T_EQ_INT(rc, -1);
    lp_interp_free(it);
}

static void test_oom(void) {
    /* allocation failure at every point of a cell: an error, never a crash or a leak */
    const char *code = "x = [1, \"a\", {\"k\": 2.5}]\nfor i in x { print i }\ny = x[2].k * 2\nvars\nx";
    int failures = 0;
    for (long n = 1; n < 400; n++) {
        lp_interp *it = lp_interp_new();
        if (!it) continue;
        rec r;
        lp_sink sink;
        rec_init(&r, it, &sink);
        lp_outcome o;
        lp_mem_fail_after(n);
        int rc = lp_execute(it, code, strlen(code), &sink, &o);
        lp_mem_fail_after(0);
        if (rc) failures++;
        lp_outcome_free(&o);
        rec_free(&r);
        lp_interp_free(it);
    }
    T_OK(failures > 10);
}

static void test_version(void) {
    T_OK(strlen(lp_version()) > 0);
    T_CONTAINS(lp_banner(), "loupe");
}

int main(void) {
    T_RUN(test_display_rule);
    T_RUN(test_error_outcome);
    T_RUN(test_failed_statement_changes_nothing);
    T_RUN(test_interrupt);
    T_RUN(test_input);
    T_RUN(test_is_complete);
    T_RUN(test_complete);
    T_RUN(test_inspect);
    T_RUN(test_page);
    T_RUN(test_user_expression);
    T_RUN(test_bad_input);
    T_RUN(test_oom);
    T_RUN(test_version);
    return t_done();
}
