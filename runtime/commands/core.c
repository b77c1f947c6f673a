/* core.c — the language's own commands: print, display, help, vars, del, sleep, input, time. */
#include "backend/backend.h"
#include "lang/interp.h"
#include "lang/registry.h"
#include "lang/table.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

/* ---- print ------------------------------------------------------------------------- */

static int run_print(lp_call *c, lv_value **result) {
    lv_value *args = lp_arg(c, "values");
    const char *sep = lp_arg_str(c, "sep"), *end = lp_arg_str(c, "end");
    sbuf b;
    sb_init(&b);
    for (size_t i = 0; i < args->u.list.n; i++) {
        if (i) sb_puts(&b, sep);
        char *s = lv_tostr(args->u.list.items[i]);
        if (!s) { sb_free(&b); return -1; }
        sb_puts(&b, s);
        lp_free(s);
    }
    sb_puts(&b, end);
    if (b.oom) { sb_free(&b); return lp_fail(c, "MemoryError", "out of memory"); }
    lp_out_text(c, lp_arg_bool(c, "stderr") ? 2 : 1, sb_str(&b), b.len);
    sb_free(&b);
    return 0;
}
static const lp_param print_params[] = {
    { "values", LP_T_ANY, .def = "[]", .help = "what to print; strings as they are, the rest as shown",
      .flags = LP_P_VARIADIC },
    { 0 } };
static const lp_param print_opts[] = {
    { "sep", LP_T_STRING, .def = "\" \"", .help = "between values" },
    { "end", LP_T_STRING, .def = "\"\\n\"", .help = "after the last value" },
    { "stderr", LP_T_BOOL, .def = "false", .help = "write to stderr instead of stdout" },
    { 0 } };
const lp_command lp_cmd_print = {
    "print", print_params, print_opts, run_print,
    .summary = "Write values as text to the output",
    .help = "Example:\n    print \"loss\" 0.25 sep=\": \"      # loss: 0.25\n    print [1, 2] \"東京\"            # [1, 2] 東京",
};

/* ---- display ----------------------------------------------------------------------- */

static int run_display(lp_call *c, lv_value **result) {
    json_t *b = lv_bundle(lp_arg(c, "value"));
    if (!b) return -1;
    const char *id = lp_arg_str(c, "id");
    int update = lp_arg_bool(c, "update");
    if (update && !id) { json_decref(b); return lp_fail(c, "ArgumentError", "update=true needs id=\"...\""); }
    lp_out_display(c, b, id, update);
    json_decref(b);
    return 0;
}
static const lp_param display_params[] = { { "value", LP_T_ANY, .help = "the value to show" }, { 0 } };
static const lp_param display_opts[] = {
    { "id", LP_T_STRING, .def = "none", .help = "display id, to update this output later" },
    { "update", LP_T_BOOL, .def = "false", .help = "replace the earlier output with this id" },
    { 0 } };
const lp_command lp_cmd_display = {
    "display", display_params, display_opts, run_display,
    .summary = "Show a value now (as rich output), even in the middle of a cell",
    .help = "Example:\n    display [1, 2, 3]\n    display \"step 1\" id=\"progress\"\n"
            "    display \"step 2\" id=\"progress\" update=true   # redraws the first one",
};

/* ---- help -------------------------------------------------------------------------- */

/* `help` shows its text as cell output (kept in the notebook and its HTML copy, like
 * IPython's help()); `NAME?` is the pager form (eval.c). */
static int show_text(lp_call *c, const char *text) {
    json_t *b = json_object();
    json_t *s = json_string(text);
    if (!b || !s) { json_decref(b); json_decref(s); return lp_fail(c, "MemoryError", "out of memory"); }
    json_object_set_new(b, "text/plain", s);
    lp_out_display(c, b, NULL, 0);
    json_decref(b);
    return 0;
}

static int help_all(lp_call *c) {
    sbuf b;
    sb_init(&b);
    sb_puts(&b, "Commands (`help NAME` or `NAME?` for details):\n\n");
    lp_interp *it = lp_call_interp(c);
    size_t w = 0;
    for (const lp_command *const *p = lp_all_commands; *p; p++)
        if (strlen((*p)->name) > w) w = strlen((*p)->name);
    for (size_t i = 0; i < it->nextra; i++)
        if (strlen(it->extra[i]->name) > w) w = strlen(it->extra[i]->name);
    for (const lp_command *const *p = lp_all_commands; *p; p++)
        sb_printf(&b, "  %-*s  %s\n", (int)w, (*p)->name, (*p)->summary);
    for (size_t i = 0; i < it->nextra; i++)
        sb_printf(&b, "  %-*s  %s\n", (int)w, it->extra[i]->name, it->extra[i]->summary);
    sb_puts(&b, "\nStatements: NAME = VALUE, repeat N { }, for X in LIST { }, if COND { } else { }.\n"
                "Values: 1, 2.5, 1e-4, \"text\", true, false, none, [lists], {\"dicts\": 1}.\n"
                "The language reference is docs/language.md.");
    if (b.oom) { sb_free(&b); return lp_fail(c, "MemoryError", "out of memory"); }
    int rc = show_text(c, sb_str(&b));
    sb_free(&b);
    return rc;
}

static int run_help(lp_call *c, lv_value **result) {
    lv_value *topic = lp_arg(c, "topic");
    if (topic->kind == LV_NONE) return help_all(c);
    lp_interp *it = lp_call_interp(c);
    if (topic->kind == LV_STR) {
        const char *name = topic->u.str.s;
        const lp_command *cmd = ev_find_cmd(it, name, topic->u.str.n);
        if (cmd) {
            json_t *b = reg_help_bundle(cmd);
            if (!b) return lp_fail(c, "MemoryError", "out of memory");
            lp_out_display(c, b, NULL, 0);
            json_decref(b);
            return 0;
        }
        const char *kw = reg_keyword_help(name);
        if (kw) return show_text(c, kw);
        lv_value *v = lp_arg_given(c, "topic") && lv_dict_get(it->vars, name, topic->u.str.n)
                          ? lv_dict_get(it->vars, name, topic->u.str.n) : NULL;
        if (!v) {
            char *opts = reg_option_help(name);   /* `help lora_alpha`, `help lr` */
            if (opts) {
                int rc = show_text(c, opts);
                lp_free(opts);
                return rc;
            }
            const char *names[256];
            size_t n = 0;
            for (const lp_command *const *p = lp_all_commands; *p && n < 200; p++) names[n++] = (*p)->name;
            for (size_t i = 0; i < it->vars->u.dict.n && n < 256; i++) names[n++] = it->vars->u.dict.e[i].key;
            const char *s = reg_suggest(name, names, n);
            if (s) return lp_fail(c, "NameError", "no command or variable named `%s`; did you mean `%s`?", name, s);
            return lp_fail(c, "NameError", "no command or variable named `%s` (try `help` for the list)", name);
        }
        topic = v;
    }
    char *sum = lv_summary(topic);
    if (!sum) return -1;
    int rc = show_text(c, sum);
    lp_free(sum);
    return rc;
}
static const lp_param help_params[] = {
    { "topic", LP_T_NAME, .def = "none", .help = "a command, a statement keyword, a variable, or an option (by its name or Hugging Face's)" }, { 0 } };
const lp_command lp_cmd_help = {
    "help", help_params, NULL, run_help,
    .summary = "List the commands, or explain one command or value",
    .help = "Example:\n    help            # all commands\n    help print      # one command (same as `print?`)\n"
            "    help x          # what the variable x holds (same as `x?`)\n"
            "    help lora_alpha # the options called so (here or in Hugging Face): lora's alpha=",
};

/* ---- vars -------------------------------------------------------------------------- */

static int run_vars(lp_call *c, lv_value **result) {
    lp_interp *it = lp_call_interp(c);
    static const char *const hdr[] = { "name", "type", "value" };
    lp_table *t = lp_table_new(3, hdr);
    if (!t) return lp_fail(c, "MemoryError", "out of memory");
    for (size_t i = 0; i < it->vars->u.dict.n; i++) {
        lv_value *v = it->vars->u.dict.e[i].val;
        char *r = lv_repr(v);
        if (!r) { lp_table_free(t); return -1; }
        /* one line per variable: cut at the first newline or 60 bytes (on a character edge) */
        size_t n = strcspn(r, "\n");
        int cut = r[n] != 0;
        if (n > 60) { n = 60; cut = 1; }
        while (n > 0 && ((unsigned char)r[n] & 0xC0) == 0x80) n--;
        r[n] = 0;
        sbuf b;
        sb_init(&b);
        sb_puts(&b, r);
        if (cut) sb_puts(&b, "…");
        lp_free(r);
        const char *row[] = { it->vars->u.dict.e[i].key, lv_type_name(v), sb_str(&b) };
        int rc = lp_table_row(t, row);
        sb_free(&b);
        if (rc) { lp_table_free(t); return lp_fail(c, "MemoryError", "out of memory"); }
    }
    if (!lp_table_rows(t)) {
        lp_table_free(t);
        lp_out_text(c, 1, "no variables\n", 13);
        return 0;
    }
    *result = lp_table_value(t);
    return *result ? 0 : -1;
}
const lp_command lp_cmd_vars = {
    "vars", NULL, NULL, run_vars,
    .summary = "Show a table of the variables: name, type, value",
    .help = "Example:\n    x = 1\n    vars",
};

/* ---- del --------------------------------------------------------------------------- */

static int run_del(lp_call *c, lv_value **result) {
    lp_interp *it = lp_call_interp(c);
    lv_value *names = lp_arg(c, "names");
    /* check them all first: a failed statement changes no variable */
    for (size_t i = 0; i < names->u.list.n; i++) {
        lv_value *n = names->u.list.items[i];
        if (n->kind != LV_STR) return lp_fail(c, "TypeError", "expected variable names, got %s", lv_type_name(n));
        if (!lv_dict_get(it->vars, n->u.str.s, n->u.str.n))
            return lp_fail(c, "NameError", "name `%s` is not defined", n->u.str.s);
    }
    for (size_t i = 0; i < names->u.list.n; i++) {
        lv_value *n = names->u.list.items[i];
        lv_dict_del(it->vars, n->u.str.s, n->u.str.n);
    }
    return 0;
}
static const lp_param del_params[] = {
    { "names", LP_T_NAME, .help = "variables to remove", .flags = LP_P_VARIADIC }, { 0 } };
const lp_command lp_cmd_del = {
    "del", del_params, NULL, run_del,
    .summary = "Remove variables (and free what only they held)",
    .help = "Example:\n    x = 1\n    del x",
};

/* ---- sleep ------------------------------------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run_sleep(lp_call *c, lv_value **result) {
    double s = lp_arg_float(c, "seconds");
    if (!(s >= 0) || s > 1e6) return lp_fail(c, "ValueError", "seconds must be between 0 and 1000000, got %g", s);
    double end = now() + s;
    for (;;) {
        if (lp_check_interrupt(c)) return -1;
        double left = end - now();
        if (left <= 0) break;
        /* poll the interrupt flag every 10 ms at most */
        double step = left < 0.005 ? left : 0.005;
        struct timespec ts = { 0, (long)(step * 1e9) };
        while (nanosleep(&ts, &ts) && errno == EINTR) {
            if (lp_check_interrupt(c)) return -1;
        }
    }
    return 0;
}
static const lp_param sleep_params[] = { { "seconds", LP_T_FLOAT, .help = "how long" }, { 0 } };
const lp_command lp_cmd_sleep = {
    "sleep", sleep_params, NULL, run_sleep,
    .summary = "Wait some seconds (stops at once when interrupted)",
    .help = "Example:\n    sleep 0.5",
};

/* ---- input ------------------------------------------------------------------------- */

static int run_input(lp_call *c, lv_value **result) {
    const char *prompt = lp_arg_str(c, "prompt");
    char *line = lp_in_line(c, prompt ? prompt : "", lp_arg_bool(c, "password"));
    if (!line) return -1;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
    *result = lv_str_take(line, n);
    return *result ? 0 : -1;
}
static const lp_param input_params[] = { { "prompt", LP_T_STRING, .def = "\"\"", .help = "text shown before the answer" }, { 0 } };
static const lp_param input_opts[] = { { "password", LP_T_BOOL, .def = "false", .help = "hide what is typed" }, { 0 } };
const lp_command lp_cmd_input = {
    "input", input_params, input_opts, run_input,
    .summary = "Ask the user for one line of text",
    .help = "Example:\n    name = input \"Your name: \"\n    print \"hello\" name",
};

/* ---- time -------------------------------------------------------------------------- */

typedef struct { double seconds; } duration;

static void dur_free(void *p) { lp_free(p); }
static char *dur_text(void *p) {
    double s = ((duration *)p)->seconds;
    char buf[64];
    if (s < 1e-3) snprintf(buf, sizeof buf, "time: %.1f µs", s * 1e6);
    else if (s < 1) snprintf(buf, sizeof buf, "time: %.1f ms", s * 1e3);
    else snprintf(buf, sizeof buf, "time: %.2f s", s);
    return lp_strdup(buf);
}
static lv_value *dur_attr(void *p, const char *name) {
    double s = ((duration *)p)->seconds;
    if (!strcmp(name, "seconds")) return lv_float(s);
    if (!strcmp(name, "ms")) return lv_float(s * 1e3);
    return NULL;
}
static int dur_attrs(void *p, lv_attr_fn add, void *actx) { add(actx, "seconds"); add(actx, "ms"); return 0; }
static const lv_type duration_type = {
    .name = "duration", .free = dur_free, .text = dur_text, .getattr = dur_attr, .attrs = dur_attrs,
};

static int run_time(lp_call *c, lv_value **result) {
    double t0 = now();
    if (lp_run_statement(c)) return -1;
    be_sync_all();   /* a GPU's work counts when it is done, not when it was queued */
    duration *d = lp_malloc(sizeof *d);
    if (!d) return lp_fail(c, "MemoryError", "out of memory");
    d->seconds = now() - t0;
    *result = lv_new_opaque(&duration_type, d);
    return *result ? 0 : -1;
}
const lp_command lp_cmd_time = {
    "time", NULL, NULL, run_time,
    .summary = "Run one statement and show how long it took",
    .help = "The value is a duration: shown as `time: 12.3 ms`, with attributes `seconds` and `ms`.\n"
            "Work the statement queued on a GPU counts: the clock is read once it is done.\n\n"
            "Example:\n    time sleep 0.1          # time: 100.2 ms\n    t = time x = 2 * 10\n    print t.seconds < 1",
    .flags = LP_CMD_STATEMENT,
};
