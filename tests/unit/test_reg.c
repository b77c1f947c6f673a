/* test_reg.c — the command registry: declarations, argument checking and conversion,
 * "did you mean", help texts, and the built-in commands' declarations. */
#include "lang/interp.h"
#include "lang/registry.h"
#include "lang/table.h"
#include "t.h"
#include "test_lang_harness.h"

static const lv_type model_type = { .name = "model", .text = NULL };

static char *fake_text(void *p) { return lp_strdup("<fake model>"); }
static const lv_type fake_model_type = { .name = "model", .text = fake_text };

static int run_adamw(lp_call *c, lv_value **result) {
    char buf[256];
    lv_value *betas = lp_arg(c, "betas");
    snprintf(buf, sizeof buf, "lr=%g steps=%lld name=%s betas=%zu clip=%s given_lr=%d", lp_arg_float(c, "lr"),
             (long long)lp_arg_int(c, "steps"), lp_arg_str(c, "name") ? lp_arg_str(c, "name") : "none",
             betas->u.list.n, lv_type_name(lp_arg(c, "clip")), lp_arg_given(c, "lr"));
    *result = lv_str(buf);
    return 0;
}
static const lp_param adamw_params[] = {
    { "model", LP_T_VALUE, .vtype = &fake_model_type, .help = "the model" }, { 0 } };
static const lp_param adamw_opts[] = {
    { "lr", LP_T_FLOAT, .def = "2e-4", .help = "learning rate" },
    { "steps", LP_T_INT, .def = "10" },
    { "name", LP_T_STRING, .def = "none" },
    { "betas", LP_T_LIST, .def = "[0.9, 0.999]" },
    { "clip", LP_T_FLOAT, .def = "none" },
    { "weight_decay", LP_T_FLOAT, .def = "0.0" },
    { 0 } };
static const lp_command adamw = { "adamw", adamw_params, adamw_opts, run_adamw,
    .summary = "Make an optimizer", .help = "Example:\n    opt = adamw model lr=1e-4" };

static int run_fails(lp_call *c, lv_value **result) {
    return lp_fail(c, "IOError", "models/x: no such file");
}
static int run_fails_plain(lp_call *c, lv_value **result) { return lp_seterr("plain failure"); }
static const lp_command failing = { "failing", NULL, NULL, run_fails, .summary = "fails" };
static const lp_command failing2 = { "failing2", NULL, NULL, run_fails_plain, .summary = "fails" };

static int run_mk(lp_call *c, lv_value **result) {
    *result = lv_new_opaque(&fake_model_type, NULL);
    return 0;
}
static const lp_command mk = { "mkmodel", NULL, NULL, run_mk, .summary = "a fake model" };

/* the example of docs/language.md, "adding commands", verbatim */
static int run_double(lp_call *c, lv_value **result) {
    int64_t n = lp_arg_int(c, "n");                      /* checked and converted already */
    if (lp_arg_bool(c, "loud")) lp_out_text(c, 1, "doubling\n", 9);
    *result = lv_int(2 * n);
    return *result ? 0 : -1;                              /* or: return lp_fail(c, "ValueError", ...) */
}
static const lp_param double_params[] = { { "n", LP_T_INT, .help = "a number" }, { 0 } };
static const lp_param double_opts[] = { { "loud", LP_T_BOOL, .def = "false" }, { 0 } };
const lp_command lp_cmd_double = { "double", double_params, double_opts, run_double,
    .summary = "Twice a number", .help = "Example:\n    double 21      # 42" };

static void test_doc_example(void) {
    lp_interp *it = lp_interp_new();
    lp_interp_add_command(it, &lp_cmd_double);
    int rc;
    T_STR(run_cell(it, "double 21 loud=true", &rc), "doubling\n42\n");
    T_EQ_INT(reg_validate(&lp_cmd_double), 0);
    lp_interp_free(it);
}

static lp_interp *setup(void) {
    lp_interp *it = lp_interp_new();
    lp_interp_add_command(it, &adamw);
    lp_interp_add_command(it, &failing);
    lp_interp_add_command(it, &failing2);
    lp_interp_add_command(it, &mk);
    run_cell(it, "m = mkmodel", NULL);
    return it;
}

static void test_defaults_and_conversion(void) {
    lp_interp *it = setup();
    int rc;
    T_STR(run_cell(it, "adamw m", &rc),
          "\"lr=0.0002 steps=10 name=none betas=2 clip=none given_lr=0\"\n");
    T_STR(run_cell(it, "adamw m lr=1 steps=3 name=\"x\" betas=[] clip=none", &rc),
          "\"lr=1 steps=3 name=x betas=0 clip=none given_lr=1\"\n");   /* int 1 → float */
    T_STR(run_cell(it, "adamw model=m", &rc), "\"lr=0.0002 steps=10 name=none betas=2 clip=none given_lr=0\"\n");
    lp_interp_free(it);
}

static void test_argument_errors(void) {
    lp_interp *it = setup();
    int rc;
    const char *out = run_cell(it, "opt = adamw m lr_rate=1e-4", &rc);
    T_EQ_INT(rc, -1);
    T_CONTAINS(out, "ArgumentError: unknown option `lr_rate` for `adamw`; did you mean `lr`?\n"
                    "  1 | opt = adamw m lr_rate=1e-4\n"
                    "    |               ^^^^^^^\n");
    out = run_cell(it, "adamw m weight_decy=0.1", &rc);
    T_CONTAINS(out, "did you mean `weight_decay`?");
    out = run_cell(it, "adamw m stpes=1", &rc);
    T_CONTAINS(out, "did you mean `steps`?");
    out = run_cell(it, "adamw", &rc);
    T_CONTAINS(out, "ArgumentError: missing argument `model` for `adamw`");
    out = run_cell(it, "adamw 1", &rc);
    T_CONTAINS(out, "TypeError: argument `model` of `adamw` must be model, not int");
    out = run_cell(it, "adamw m steps=1.5", &rc);
    T_CONTAINS(out, "TypeError: option `steps` of `adamw` must be int, not float");
    out = run_cell(it, "adamw m name=3", &rc);
    T_CONTAINS(out, "option `name` of `adamw` must be string, not int");
    out = run_cell(it, "adamw m betas=\"x\"", &rc);
    T_CONTAINS(out, "must be list, not string");
    out = run_cell(it, "adamw m m", &rc);
    T_CONTAINS(out, "ArgumentError: too many arguments for `adamw`: it takes 1");
    out = run_cell(it, "adamw m lr=1 lr=2", &rc);
    T_CONTAINS(out, "ArgumentError: option `lr` of `adamw` given twice");
    out = run_cell(it, "adamw m lr=none", &rc);
    T_CONTAINS(out, "must be float, not none");   /* none only where the default is none */
    lp_interp_free(it);
}

static void test_command_failures(void) {
    lp_interp *it = setup();
    int rc;
    const char *out = run_cell(it, "x = 1\nfailing", &rc);
    T_STR(out, "IOError: `failing`: models/x: no such file\n  2 | failing\n    | ^^^^^^^\n");
    out = run_cell(it, "failing2", &rc);
    T_CONTAINS(out, "RuntimeError: `failing2`: plain failure");
    lp_interp_free(it);
}

static void test_suggest(void) {
    const char *names[] = { "lr", "steps", "weight_decay", "batch" };
    T_STR(reg_suggest("lr_rate", names, 4), "lr");
    T_STR(reg_suggest("step", names, 4), "steps");
    T_STR(reg_suggest("bacth", names, 4), "batch");
    T_OK(reg_suggest("zzzzzz", names, 4) == NULL);
    T_OK(reg_suggest("x", names, 4) == NULL);
    T_STR(reg_suggest("weight", names, 4), "weight_decay");
}

static void test_builtins_valid(void) {
    int n = 0;
    for (const lp_command *const *c = lp_all_commands; *c; c++, n++) {
        int rc = reg_validate(*c);
        T_CHECK(rc == 0, "%s: %s", (*c)->name, lp_geterr());
        T_OK((*c)->help != NULL && strstr((*c)->help, "Example") != NULL);
        T_OK(reg_find((*c)->name, strlen((*c)->name)) == *c);
    }
    T_OK(n >= 8);
    T_OK(reg_find("nope", 4) == NULL);
    T_EQ_INT(reg_validate(&adamw), 0);
    static const lp_param bad_opts[] = { { "lr", LP_T_FLOAT, .def = "2e-" }, { 0 } };
    static const lp_command bad = { "bad", NULL, bad_opts, run_fails, .summary = "bad" };
    T_EQ_INT(reg_validate(&bad), -1);
    T_CONTAINS(lp_geterr(), "default of `lr`");
    static const lp_param dup_opts[] = { { "a", LP_T_INT, .def = "1" }, { "a", LP_T_INT, .def = "2" }, { 0 } };
    static const lp_command dup = { "dup", NULL, dup_opts, run_fails, .summary = "dup" };
    T_EQ_INT(reg_validate(&dup), -1);
    /* Hugging Face's name of an option is not another option's own name */
    static const lp_param hf_opts[] = { { "lr", LP_T_FLOAT, .def = "1", .hf = "learning_rate rate" },
                                        { "rate", LP_T_INT, .def = "2" }, { 0 } };
    static const lp_command hf = { "hf", NULL, hf_opts, run_fails, .summary = "hf" };
    T_EQ_INT(reg_validate(&hf), -1);
    T_CONTAINS(lp_geterr(), "`hf`: `rate` is an option's name and Hugging Face's name of `lr`");
    T_STR(reg_hf_option(hf_opts, "learning_rate"), "lr");
    T_STR(reg_hf_option(hf_opts, "rate"), "lr");
    T_OK(reg_hf_option(hf_opts, "learning") == NULL && reg_hf_option(hf_opts, "lr") == NULL);
}

static void test_help_text(void) {
    char *u = reg_usage(&adamw);
    T_STR(u, "adamw MODEL [lr=2e-4] [steps=10] [name=none] [betas=[0.9, 0.999]] [clip=none] [weight_decay=0.0]");
    lp_free(u);
    char *h = reg_help_text(reg_find("sleep", 5));
    T_STR(h, "sleep SECONDS\n\nWait some seconds (stops at once when interrupted)\n\nArguments:\n"
             "  seconds  float — how long\n\nExample:\n    sleep 0.5\n");
    lp_free(h);
    json_t *b = reg_help_bundle(&adamw);
    T_CONTAINS(json_string_value(json_object_get(b, "text/html")), "<pre>adamw MODEL");
    json_decref(b);
}

static void test_table(void) {
    const char *hdr[] = { "name", "params", "note" };
    lp_table *t = lp_table_new(3, hdr);
    const char *r1[] = { "q_proj", "1,024", "<query>" };
    const char *r2[] = { "東京", "12", "" };
    lp_table_row(t, r1);
    lp_table_row(t, r2);
    lp_table_set_title(t, "layers");
    char *text = lp_table_text(t);
    T_STR(text, "layers\nname    params  note\n------  ------  -------\nq_proj   1,024  <query>\n東京        12");
    lp_free(text);
    json_t *b = lp_table_bundle(t);
    T_CONTAINS(json_string_value(json_object_get(b, "text/html")), "<td>&lt;query&gt;</td>");
    json_decref(b);
    lv_value *v = lp_table_value(t);
    T_STR(lv_type_name(v), "table");
    lv_decref(v);
}

int main(void) {
    T_RUN(test_defaults_and_conversion);
    T_RUN(test_argument_errors);
    T_RUN(test_command_failures);
    T_RUN(test_suggest);
    T_RUN(test_builtins_valid);
    T_RUN(test_help_text);
    T_RUN(test_table);
    T_RUN(test_doc_example);
    (void)model_type;
    return t_done();
}
