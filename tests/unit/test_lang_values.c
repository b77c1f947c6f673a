/* test_lang_values.c — values: rendering (floats like Python's repr, string escapes),
 * equality, dicts (order, big ones through the hash index, deletion), the nesting cap,
 * opaque types through their vtable, reference counts, and the parser/evaluator's stack
 * use on a small thread stack (the kernel runs cells on its shell thread). */
#include "lang/interp.h"
#include "lang/value.h"
#include "t.h"
#include "test_lang_harness.h"
#include <pthread.h>

static const char *fmt(double f) {
    static char buf[64];
    lv_format_float(f, buf, sizeof buf);
    return buf;
}

static void test_floats(void) {
    T_STR(fmt(0.1), "0.1");
    T_STR(fmt(1.0), "1.0");
    T_STR(fmt(-2.5), "-2.5");
    T_STR(fmt(1e-4), "0.0001");
    T_STR(fmt(1e-5), "1e-05");
    T_STR(fmt(2500), "2500.0");
    T_STR(fmt(1e15), "1000000000000000.0");
    T_STR(fmt(1e16), "1e+16");
    T_STR(fmt(1.5e300), "1.5e+300");
    T_STR(fmt(0.1 + 0.2), "0.30000000000000004");
    T_STR(fmt(1.0 / 3), "0.3333333333333333");
    T_STR(fmt(123456789.125), "123456789.125");
    T_STR(fmt(-0.0), "-0.0");
    T_STR(fmt(0.0), "0.0");
    T_STR(fmt(5e-324), "5e-324");
    T_STR(fmt(1.0 / 0.0), "inf");
    T_STR(fmt(-1.0 / 0.0), "-inf");
    T_STR(fmt(0.0 / 0.0), "nan");
}

static void test_repr(void) {
    lv_value *l = lv_list_new(0);
    lv_list_push(l, lv_str("a\"b\\c\n\t\x01日本"));
    lv_list_push(l, lv_int(-3));
    lv_list_push(l, lv_none());
    lv_list_push(l, lv_bool(1));
    lv_value *d = lv_dict_new();
    lv_dict_set(d, "k", 1, lv_float(2));
    lv_list_push(l, d);
    char *r = lv_repr(l);
    T_STR(r, "[\"a\\\"b\\\\c\\n\\t\\u0001日本\", -3, none, true, {\"k\": 2.0}]");
    lp_free(r);
    lv_value *s = lv_str("plain 東京");
    r = lv_tostr(s);
    T_STR(r, "plain 東京");
    lp_free(r);
    r = lv_summary(s);
    T_STR(r, "string (8 characters): \"plain 東京\"");
    lp_free(r);
    json_t *b = lv_bundle(l);
    T_OK(json_string_value(json_object_get(b, "text/plain")) != NULL);
    json_decref(b);
    lv_decref(s);
    lv_decref(l);
}

static void test_equality(void) {
    lv_value *a = lv_int(1), *b = lv_float(1.0), *c = lv_bool(1);
    T_OK(lv_equal(a, b));
    T_OK(!lv_equal(a, c));   /* bool is not a number */
    lv_value *d1 = lv_dict_new(), *d2 = lv_dict_new();
    lv_dict_set(d1, "x", 1, lv_int(1));
    lv_dict_set(d1, "y", 1, lv_int(2));
    lv_dict_set(d2, "y", 1, lv_int(2));
    lv_dict_set(d2, "x", 1, lv_int(1));
    T_OK(lv_equal(d1, d2));   /* order does not matter for equality */
    lv_decref(a); lv_decref(b); lv_decref(d1); lv_decref(d2);
}

static void test_big_dict(void) {
    lv_value *d = lv_dict_new();
    char k[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "key%d", i);
        T_EQ_INT(lv_dict_set(d, k, strlen(k), lv_int(i)), 0);
    }
    lv_dict_set(d, "key17", 5, lv_int(-1));   /* replace keeps the position */
    T_EQ_INT(d->u.dict.n, 5000);
    T_EQ_INT(lv_dict_get(d, "key17", 5)->u.i, -1);
    T_EQ_INT(lv_dict_get(d, "key4999", 7)->u.i, 4999);
    T_OK(lv_dict_get(d, "nope", 4) == NULL);
    T_EQ_INT(lv_dict_del(d, "key0", 4), 0);
    T_EQ_INT(lv_dict_del(d, "key0", 4), -1);
    T_OK(lv_dict_get(d, "key0", 4) == NULL);
    T_EQ_INT(lv_dict_get(d, "key1", 4)->u.i, 1);
    T_STR(d->u.dict.e[0].key, "key1");
    lv_decref(d);
}

static void test_depth_cap(void) {
    lv_value *v = lv_list_new(0);
    int i, rc = 0;
    for (i = 0; i < LV_MAX_DEPTH + 5 && rc == 0; i++) {
        lv_value *outer = lv_list_new(1);
        rc = lv_list_push(outer, v);   /* steals v even on failure */
        v = outer;
    }
    T_EQ_INT(rc, -1);
    T_STR(lv_errkind(), "ValueError");
    T_CONTAINS(lp_geterr(), "nested too deep");
    lv_decref(v);
}

/* an opaque type with every callback */
static int freed;
static void o_free(void *p) { freed++; }
static char *o_text(void *p) { return lp_strdup("<thing>"); }
static json_t *o_bundle(void *p) { return json_pack("{s:s}", "text/html", "<b>thing</b>"); }
static lv_value *o_attr(void *p, const char *n) {
    if (!strcmp(n, "size")) return lv_int(3);
    if (!strcmp(n, "broken")) return lv_seterr_kind("IOError", "cannot read"), NULL;
    return NULL;
}
static lv_value *o_index(void *p, lv_value *k) { return lv_int(k->u.i * 10); }
static size_t o_len(void *p) { return 2; }
static lv_value *o_item(void *p, size_t i) { return lv_int((int64_t)i + 100); }
static const lv_type thing_type = { .name = "thing", .free = o_free, .text = o_text, .bundle = o_bundle,
    .getattr = o_attr, .getindex = o_index, .len = o_len, .item = o_item };
static int run_thing(lp_call *c, lv_value **result) {
    *result = lv_new_opaque(&thing_type, (void *)1);
    return 0;
}
static const lp_command thing_cmd = { "thing", NULL, NULL, run_thing, .summary = "make a thing" };

static void test_opaque(void) {
    lv_value *v = lv_new_opaque(&thing_type, (void *)1);
    T_OK(lv_opaque_ptr(v, &thing_type) == (void *)1);
    json_t *b = lv_bundle(v);
    T_STR(json_string_value(json_object_get(b, "text/plain")), "<thing>");   /* filled in */
    T_STR(json_string_value(json_object_get(b, "text/html")), "<b>thing</b>");
    json_decref(b);
    lv_incref(v);
    lv_decref(v);
    T_EQ_INT(freed, 0);
    lv_decref(v);
    T_EQ_INT(freed, 1);
    /* through the language */
    lp_interp *it = lp_interp_new();
    lp_interp_add_command(it, &thing_cmd);
    int rc;
    T_STR(run_cell(it, "t = thing\nprint t t.size t[4] t.2\nfor x in t { print x }", &rc),
          "<thing> 3 40 20\n100\n101\n");
    T_STR(run_cell(it, "t.nope", &rc), "AttributeError: thing has no attribute `nope`\n  1 | t.nope\n    | ^^^^^^\n");
    T_STR(run_cell(it, "t.broken", &rc), "IOError: cannot read\n  1 | t.broken\n    | ^^^^^^^^\n");
    T_STR(run_cell(it, "t?", &rc), "thing: <thing>\n");
    lp_interp_free(it);
    T_EQ_INT(freed, 2);
}

static void *deep_work(void *arg) {
    int *ok = arg;
    lp_interp *it = lp_interp_new();
    lp_outcome o;
    /* the deepest cells that are accepted, and some that are refused */
    char *s = malloc(1 << 16);
    strcpy(s, "x = ");
    for (int i = 0; i < 250; i++) strcat(s, "[");
    strcat(s, "1");
    for (int i = 0; i < 250; i++) strcat(s, "]");
    strcat(s, "\nx");
    int a = lp_execute(it, s, strlen(s), NULL, &o);
    lp_outcome_free(&o);
    strcpy(s, "y = 1");
    for (int i = 0; i < 998; i++) strcat(s, " + 1");
    strcat(s, "\ny");
    int b = lp_execute(it, s, strlen(s), NULL, &o);
    lp_outcome_free(&o);
    strcpy(s, "");
    for (int i = 0; i < 250; i++) strcat(s, "if true {");
    for (int i = 0; i < 250; i++) strcat(s, "}");
    int c = lp_execute(it, s, strlen(s), NULL, &o);
    lp_outcome_free(&o);
    memset(s, '(', 20000);
    s[20000] = 0;
    int d = lp_execute(it, s, strlen(s), NULL, &o);
    lp_outcome_free(&o);
    free(s);
    lp_interp_free(it);
    *ok = a == 0 && b == 0 && c == 0 && d == -1;
    return NULL;
}

static void test_small_stack(void) {
    /* 1 MiB is far below the 8 MiB default; the limits must keep us inside it */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1 << 20);
    pthread_t th;
    int ok = 0;
    T_EQ_INT(pthread_create(&th, &attr, deep_work, &ok), 0);
    pthread_join(th, NULL);
    T_OK(ok);
}

int main(void) {
    T_RUN(test_floats);
    T_RUN(test_repr);
    T_RUN(test_equality);
    T_RUN(test_big_dict);
    T_RUN(test_depth_cap);
    T_RUN(test_opaque);
    T_RUN(test_small_stack);
    return t_done();
}
