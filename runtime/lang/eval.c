#define _GNU_SOURCE   /* memmem */
/* eval.c — runs parsed cells: expressions, statements, command calls, the display rule
 * and errors. Implements lp_execute and friends from loupe.h. */
#include "lang/interp.h"
#include "lang/lexer.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <utf8proc.h>

#define MAX_SEQ_BYTES ((size_t)256 << 20)   /* longest string/list built by `*` or `+` */

/* ---- errors ---------------------------------------------------------------------- */

static void set_loc(lp_interp *it, const ps_node *n) {
    if (it->has_loc || !n) return;
    it->has_loc = 1;
    it->err_start = n->start;
    it->err_end = n->end;
}

/* an error located at node n, with a name */
static lv_value *ev_err(lp_interp *it, const ps_node *n, const char *ename, const char *fmt, ...)
    LP_PRINTF(4, 5);
static lv_value *ev_err(lp_interp *it, const ps_node *n, const char *ename, const char *fmt, ...) {
    char buf[LP_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    lv_seterr_kind(ename, "%s", buf);
    set_loc(it, n);
    return NULL;
}

static lv_value *interrupted(lp_interp *it, const ps_node *n) {
    return ev_err(it, n, "Interrupted", "stopped by the user");
}

/* ---- commands lookup --------------------------------------------------------------- */

const lp_command *ev_find_cmd(lp_interp *it, const char *name, size_t n) {
    if (it)
        for (size_t i = 0; i < it->nextra; i++)
            if (strlen(it->extra[i]->name) == n && !memcmp(it->extra[i]->name, name, n)) return it->extra[i];
    return reg_find(name, n);
}

const lp_command *ev_find_cb(void *ctx, const char *name, size_t n) { return ev_find_cmd(ctx, name, n); }

int lp_interp_add_command(lp_interp *it, const lp_command *cmd) {
    const lp_command **e = lp_realloc(it->extra, (it->nextra + 1) * sizeof *e);
    if (!e) return lp_seterr("out of memory");
    it->extra = e;
    it->extra[it->nextra++] = cmd;
    return 0;
}

/* ---- expressions ------------------------------------------------------------------- */

static lv_value *eval(lp_interp *it, const ps_node *n);
static int exec_stmt(lp_interp *it, const ps_node *s, int top, int last, lv_value **shown);
static lv_value *call_command(lp_interp *it, const ps_node *n, int top);

static const char *names_of_vars(lp_interp *it, const char *word, size_t wl) {
    size_t nv = it->vars->u.dict.n;
    const char **names = lp_malloc((nv + 1) * sizeof *names);
    if (!names) return NULL;
    for (size_t i = 0; i < nv; i++) names[i] = it->vars->u.dict.e[i].key;
    char w[128];
    snprintf(w, sizeof w, "%.*s", (int)(wl < 127 ? wl : 127), word);
    const char *s = reg_suggest(w, names, nv);
    lp_free(names);
    return s;
}

static lv_value *eval_name(lp_interp *it, const ps_node *n) {
    lv_value *v = lv_dict_get(it->vars, n->name, n->nlen);
    if (v) return lv_incref(v);
    if (ev_find_cmd(it, n->name, n->nlen))
        return ev_err(it, n, "NameError",
                      "`%.*s` is a command, not a value; to use its result put it in parentheses: (%.*s ...)",
                      (int)n->nlen, n->name, (int)n->nlen, n->name);
    const char *s = names_of_vars(it, n->name, n->nlen);
    if (s) return ev_err(it, n, "NameError", "name `%.*s` is not defined; did you mean `%s`?",
                         (int)n->nlen, n->name, s);
    return ev_err(it, n, "NameError", "name `%.*s` is not defined", (int)n->nlen, n->name);
}

static lv_value *too_long(lp_interp *it, const ps_node *n) {
    return ev_err(it, n, "ValueError", "result too large (limit %zu MiB)", MAX_SEQ_BYTES >> 20);
}

static lv_value *concat(lp_interp *it, const ps_node *n, lv_value *a, lv_value *b) {
    if (a->kind == LV_STR) {
        if (a->u.str.n + b->u.str.n > MAX_SEQ_BYTES) return too_long(it, n);
        char *s = lp_malloc(a->u.str.n + b->u.str.n + 1);
        if (!s) return ev_err(it, n, "MemoryError", "out of memory");
        memcpy(s, a->u.str.s, a->u.str.n);
        memcpy(s + a->u.str.n, b->u.str.s, b->u.str.n + 1);
        return lv_str_take(s, a->u.str.n + b->u.str.n);
    }
    if ((a->u.list.n + b->u.list.n) * sizeof(void *) > MAX_SEQ_BYTES) return too_long(it, n);
    lv_value *l = lv_list_new(a->u.list.n + b->u.list.n);
    if (!l) return NULL;
    for (size_t i = 0; i < a->u.list.n; i++)
        if (lv_list_push(l, lv_incref(a->u.list.items[i]))) { lv_decref(l); return NULL; }
    for (size_t i = 0; i < b->u.list.n; i++)
        if (lv_list_push(l, lv_incref(b->u.list.items[i]))) { lv_decref(l); return NULL; }
    return l;
}

static lv_value *repeat_seq(lp_interp *it, const ps_node *n, lv_value *seq, int64_t k) {
    if (k < 0) k = 0;
    size_t unit = seq->kind == LV_STR ? seq->u.str.n : seq->u.list.n * sizeof(void *);
    if (unit && (uint64_t)k > MAX_SEQ_BYTES / unit) return too_long(it, n);
    if (seq->kind == LV_STR) {
        size_t len = seq->u.str.n * (size_t)k;
        char *s = lp_malloc(len + 1);
        if (!s) return ev_err(it, n, "MemoryError", "out of memory");
        for (int64_t i = 0; i < k; i++) memcpy(s + (size_t)i * seq->u.str.n, seq->u.str.s, seq->u.str.n);
        s[len] = 0;
        return lv_str_take(s, len);
    }
    lv_value *l = lv_list_new(seq->u.list.n * (size_t)k);
    if (!l) return NULL;
    for (int64_t i = 0; i < k; i++)
        for (size_t j = 0; j < seq->u.list.n; j++)
            if (lv_list_push(l, lv_incref(seq->u.list.items[j]))) { lv_decref(l); return NULL; }
    return l;
}

static const char *op_text(int op) {
    switch (op) {
    case T_PLUS: return "+";
    case T_MINUS: return "-";
    case T_STAR: return "*";
    case T_SLASH: return "/";
    case T_DSLASH: return "//";
    case T_PERCENT: return "%";
    case T_EQ: return "==";
    case T_NE: return "!=";
    case T_LT: return "<";
    case T_LE: return "<=";
    case T_GT: return ">";
    case T_GE: return ">=";
    case T_IN: return "in";
    }
    return "?";
}

static lv_value *bad_operands(lp_interp *it, const ps_node *n, lv_value *a, lv_value *b) {
    return ev_err(it, n, "TypeError", "cannot apply `%s` to %s and %s", op_text(n->op),
                  lv_type_name(a), lv_type_name(b));
}

static lv_value *arith(lp_interp *it, const ps_node *n, lv_value *a, lv_value *b) {
    int op = n->op;
    if (a->kind == LV_INT && b->kind == LV_INT) {
        int64_t x = a->u.i, y = b->u.i, r;
        switch (op) {
        case T_PLUS: if (__builtin_add_overflow(x, y, &r)) goto overflow; return lv_int(r);
        case T_MINUS: if (__builtin_sub_overflow(x, y, &r)) goto overflow; return lv_int(r);
        case T_STAR: if (__builtin_mul_overflow(x, y, &r)) goto overflow; return lv_int(r);
        case T_SLASH:
            if (y == 0) return ev_err(it, n, "ValueError", "division by zero");
            return lv_float((double)x / (double)y);
        case T_DSLASH: case T_PERCENT: {
            if (y == 0) return ev_err(it, n, "ValueError", "division by zero");
            if (x == INT64_MIN && y == -1) {
                if (op == T_PERCENT) return lv_int(0);
                goto overflow;
            }
            int64_t q = x / y, m = x % y;
            if (m != 0 && ((m < 0) != (y < 0))) { q--; m += y; }   /* floor, like Python */
            return lv_int(op == T_DSLASH ? q : m);
        }
        }
    }
    if (lv_is_number(a) && lv_is_number(b)) {
        double x = lv_as_double(a), y = lv_as_double(b);
        switch (op) {
        case T_PLUS: return lv_float(x + y);
        case T_MINUS: return lv_float(x - y);
        case T_STAR: return lv_float(x * y);
        case T_SLASH:
            if (y == 0) return ev_err(it, n, "ValueError", "division by zero");
            return lv_float(x / y);
        case T_DSLASH:
            if (y == 0) return ev_err(it, n, "ValueError", "division by zero");
            return lv_float(floor(x / y));
        case T_PERCENT: {
            if (y == 0) return ev_err(it, n, "ValueError", "division by zero");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return lv_float(m);
        }
        }
    }
    if (op == T_PLUS && a->kind == b->kind && (a->kind == LV_STR || a->kind == LV_LIST))
        return concat(it, n, a, b);
    if (op == T_STAR && (a->kind == LV_STR || a->kind == LV_LIST) && b->kind == LV_INT)
        return repeat_seq(it, n, a, b->u.i);
    if (op == T_STAR && (b->kind == LV_STR || b->kind == LV_LIST) && a->kind == LV_INT)
        return repeat_seq(it, n, b, a->u.i);
    return bad_operands(it, n, a, b);
overflow:
    return ev_err(it, n, "ValueError", "integer overflow in `%s` (ints are 64-bit)", op_text(op));
}

static lv_value *compare(lp_interp *it, const ps_node *n, lv_value *a, lv_value *b) {
    int op = n->op;
    if (op == T_EQ) return lv_bool(lv_equal(a, b));
    if (op == T_NE) return lv_bool(!lv_equal(a, b));
    if (op == T_IN) {
        if (b->kind == LV_LIST) {
            for (size_t i = 0; i < b->u.list.n; i++)
                if (lv_equal(a, b->u.list.items[i])) return lv_bool(1);
            return lv_bool(0);
        }
        if (b->kind == LV_DICT && a->kind == LV_STR)
            return lv_bool(lv_dict_get(b, a->u.str.s, a->u.str.n) != NULL);
        if (b->kind == LV_STR && a->kind == LV_STR)
            return lv_bool(a->u.str.n == 0 || memmem(b->u.str.s, b->u.str.n, a->u.str.s, a->u.str.n) != NULL);
        return bad_operands(it, n, a, b);
    }
    int c;
    if (a->kind == LV_INT && b->kind == LV_INT) c = (a->u.i > b->u.i) - (a->u.i < b->u.i);
    else if (lv_is_number(a) && lv_is_number(b)) {
        double x = lv_as_double(a), y = lv_as_double(b);
        if (isnan(x) || isnan(y)) return lv_bool(0);
        c = (x > y) - (x < y);
    } else if (a->kind == LV_STR && b->kind == LV_STR) {
        size_t m = a->u.str.n < b->u.str.n ? a->u.str.n : b->u.str.n;
        c = memcmp(a->u.str.s, b->u.str.s, m);   /* UTF-8 byte order = code point order */
        if (!c) c = (a->u.str.n > b->u.str.n) - (a->u.str.n < b->u.str.n);
    } else {
        return bad_operands(it, n, a, b);
    }
    switch (op) {
    case T_LT: return lv_bool(c < 0);
    case T_LE: return lv_bool(c <= 0);
    case T_GT: return lv_bool(c > 0);
    default: return lv_bool(c >= 0);
    }
}

static lv_value *eval_inner(lp_interp *it, const ps_node *n) {
    switch (n->kind) {
    case N_INT: return lv_int(n->ival);
    case N_FLOAT: return lv_float(n->fval);
    case N_STR: return lv_strn(n->name, n->nlen);
    case N_TRUE: return lv_bool(1);
    case N_FALSE: return lv_bool(0);
    case N_NONE: return lv_none();
    case N_NAME: return eval_name(it, n);
    case N_LIST: {
        lv_value *l = lv_list_new(n->n);
        if (!l) return NULL;
        for (size_t i = 0; i < n->n; i++) {
            lv_value *v = eval(it, n->items[i]);
            if (!v || lv_list_push(l, v)) { lv_decref(l); return NULL; }
        }
        return l;
    }
    case N_DICT: {
        lv_value *d = lv_dict_new();
        if (!d) return NULL;
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            const ps_node *k = n->items[i];
            lv_value *v = eval(it, n->items[i + 1]);
            if (!v || lv_dict_set(d, k->name, k->nlen, v)) { lv_decref(d); return NULL; }
        }
        return d;
    }
    case N_ATTR: {
        lv_value *o = eval(it, n->a), *r;
        if (!o) return NULL;
        if (n->is_index && (o->kind == LV_LIST || (o->kind == LV_OPAQUE && o->u.op.type->getindex))) {
            /* `layers.0` means `layers[0]` */
            lv_value *k = lv_int(n->ival);
            r = k ? lv_getindex(o, k) : NULL;
            lv_decref(k);
        } else {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)n->nlen, n->name);
            r = lv_getattr(o, name);
        }
        lv_decref(o);
        return r;
    }
    case N_SLICE: {
        int64_t lim[2] = { 0, 0 };
        ps_node *ends[2] = { n->a, n->b };
        for (int i = 0; i < 2; i++) {
            if (!ends[i]) continue;
            lv_value *x = eval(it, ends[i]);
            if (!x) return NULL;
            int ok = x->kind == LV_INT || x->kind == LV_NONE;
            if (x->kind == LV_INT) lim[i] = x->u.i;
            else if (x->kind == LV_NONE) ends[i] = NULL;
            lv_decref(x);
            if (!ok) return lv_seterr_kind("TypeError", "slice bounds must be int"), NULL;
        }
        return lv_slice(ends[0] != NULL, lim[0], ends[1] != NULL, lim[1]);
    }
    case N_INDEX: {
        lv_value *o = eval(it, n->a);
        if (!o) return NULL;
        lv_value *k = eval(it, n->b);
        if (!k) { lv_decref(o); return NULL; }
        lv_value *r = lv_getindex(o, k);
        lv_decref(o);
        lv_decref(k);
        return r;
    }
    case N_NEG: case N_POS: {
        lv_value *x = eval(it, n->a);
        if (!x) return NULL;
        lv_value *r;
        if (x->kind == LV_INT) {
            if (n->kind == N_NEG && x->u.i == INT64_MIN)
                r = ev_err(it, n, "ValueError", "integer overflow in `-` (ints are 64-bit)");
            else r = lv_int(n->kind == N_NEG ? -x->u.i : x->u.i);
        } else if (x->kind == LV_FLOAT) {
            r = lv_float(n->kind == N_NEG ? -x->u.f : x->u.f);
        } else {
            r = ev_err(it, n, "TypeError", "cannot apply unary `%s` to %s", n->kind == N_NEG ? "-" : "+",
                       lv_type_name(x));
        }
        lv_decref(x);
        return r;
    }
    case N_NOT: {
        lv_value *x = eval(it, n->a);
        if (!x) return NULL;
        int t = lv_truthy(x);
        lv_decref(x);
        return lv_bool(!t);
    }
    case N_AND: case N_OR: {
        lv_value *x = eval(it, n->a);
        if (!x) return NULL;
        int t = lv_truthy(x);
        lv_decref(x);
        if (n->kind == N_AND ? !t : t) return lv_bool(t);
        lv_value *y = eval(it, n->b);
        if (!y) return NULL;
        t = lv_truthy(y);
        lv_decref(y);
        return lv_bool(t);
    }
    case N_BINOP: {
        lv_value *a = eval(it, n->a);
        if (!a) return NULL;
        lv_value *b = eval(it, n->b);
        if (!b) { lv_decref(a); return NULL; }
        lv_value *r;
        if (n->op == T_PLUS || n->op == T_MINUS || n->op == T_STAR || n->op == T_SLASH ||
            n->op == T_DSLASH || n->op == T_PERCENT)
            r = arith(it, n, a, b);
        else
            r = compare(it, n, a, b);
        lv_decref(a);
        lv_decref(b);
        return r;
    }
    case N_CALL:
        if (it->pure) return ev_err(it, n, "ValueError", "commands do not run during completion");
        return call_command(it, n, 0);
    default:
        return ev_err(it, n, "SyntaxError", "not an expression");
    }
}

static lv_value *eval(lp_interp *it, const ps_node *n) {
    lv_value *v = eval_inner(it, n);
    if (!v) set_loc(it, n);
    return v;
}

lv_value *ev_eval_pure(lp_interp *it, const ps_node *n) {
    int saved = it->pure;
    it->pure = 1;
    lv_value *v = eval(it, n);
    it->pure = saved;
    return v;
}

lv_value *ev_default(lp_interp *it, const char *text) {
    ps_tree t;
    ps_error e;
    if (ps_parse_expr(&t, text, strlen(text), NULL, NULL, &e)) {
        ps_free(&t);
        return lv_seterr_kind("SyntaxError", "default `%s`: %s", text, e.msg), NULL;
    }
    lv_value *v = ev_eval_pure(it, t.root);
    ps_free(&t);
    return v;
}

/* ---- command calls ------------------------------------------------------------------ */

static size_t count_params(const lp_param *p) {
    size_t n = 0;
    while (p && p[n].name) n++;
    return n;
}


/* Check v against p, converting int → float. Returns the (new) value or NULL. */
static lv_value *check_type(lp_interp *it, const lp_command *cmd, const lp_param *p, int is_opt,
                            lv_value *v, const ps_node *where) {
    int ok;
    switch (p->type) {
    case LP_T_ANY: case LP_T_NAME: ok = 1; break;
    case LP_T_INT: ok = v->kind == LV_INT; break;
    case LP_T_FLOAT:
        if (v->kind == LV_INT) { lv_value *f = lv_float((double)v->u.i); lv_decref(v); return f; }
        ok = v->kind == LV_FLOAT;
        break;
    case LP_T_STRING: ok = v->kind == LV_STR; break;
    case LP_T_BOOL: ok = v->kind == LV_BOOL; break;
    case LP_T_LIST: ok = v->kind == LV_LIST; break;
    case LP_T_DICT: ok = v->kind == LV_DICT; break;
    case LP_T_VALUE: ok = v->kind == LV_OPAQUE && (!p->vtype || v->u.op.type == p->vtype); break;
    default: ok = 0;
    }
    if (!ok && v->kind == LV_NONE && p->def && !strcmp(p->def, "none")) ok = 1;
    if (ok) return v;
    ev_err(it, where, "TypeError", "%s `%s` of `%s` must be %s, not %s", is_opt ? "option" : "argument",
           p->name, cmd->name, reg_type_word(p), lv_type_name(v));
    lv_decref(v);
    return NULL;
}

static void call_free(lp_call *c) {
    for (size_t i = 0; c->vals && i < c->np + c->no; i++) lv_decref(c->vals[i]);
    lp_free(c->vals);
    lp_free(c->given);
}

static int param_names(const lp_param *ps, const char **out) {
    int n = 0;
    for (; ps && ps->name; ps++) out[n++] = ps->name;
    return n;
}

/* Evaluate and bind the arguments of call node n. 0 or -1 (error set, c freed). */
static int bind_args(lp_interp *it, const ps_node *n, lp_call *c) {
    const lp_command *cmd = n->cmd;
    c->np = count_params(cmd->params);
    c->no = count_params(cmd->options);
    size_t total = c->np + c->no;
    c->vals = lp_calloc(total + 1, sizeof *c->vals);
    c->given = lp_calloc(total + 1, 1);
    if (!c->vals || !c->given) {
        ev_err(it, n, "MemoryError", "out of memory");
        goto fail;
    }
    int variadic = c->np && (cmd->params[c->np - 1].flags & LP_P_VARIADIC);
    size_t npos = 0;
    for (size_t i = 0; i < n->n; i++) {
        const ps_node *a = n->items[i];
        if (a->kind == N_OPTION) {
            size_t k;
            for (k = 0; k < c->no; k++)
                if (strlen(cmd->options[k].name) == a->nlen && !memcmp(cmd->options[k].name, a->name, a->nlen))
                    break;
            if (k == c->no) {
                /* the same name as a positional parameter is allowed: `sleep seconds=1` */
                size_t q;
                for (q = 0; q < c->np; q++)
                    if (strlen(cmd->params[q].name) == a->nlen && !memcmp(cmd->params[q].name, a->name, a->nlen))
                        break;
                if (q < c->np && !(cmd->params[q].flags & LP_P_VARIADIC)) {
                    if (c->given[q]) {
                        ev_err(it, a, "ArgumentError", "argument `%s` of `%s` given twice", cmd->params[q].name, cmd->name);
                        goto fail;
                    }
                    lv_value *v = eval(it, a->a);
                    if (!v || !(v = check_type(it, cmd, &cmd->params[q], 0, v, a->a))) goto fail;
                    c->vals[q] = v;
                    c->given[q] = 1;
                    continue;
                }
                const char *names[128];
                int nn = param_names(cmd->options, names);
                char w[128];
                snprintf(w, sizeof w, "%.*s", (int)(a->nlen < 127 ? a->nlen : 127), a->name);
                const char *s = reg_suggest(w, names, (size_t)nn);
                const char *hf = reg_hf_option(cmd->options, w);
                const ps_node here = { .start = a->name_start, .end = a->name_start + a->nlen };
                if (hf)
                    ev_err(it, &here, "ArgumentError", "unknown option `%s` for `%s`: Hugging Face's "
                           "`%s` is `%s` here", w, cmd->name, w, hf);
                else if (s)
                    ev_err(it, &here, "ArgumentError", "unknown option `%s` for `%s`; did you mean `%s`?", w,
                           cmd->name, s);
                else if (nn)
                    ev_err(it, &here, "ArgumentError", "unknown option `%s` for `%s` (see `help %s`)", w,
                           cmd->name, cmd->name);
                else
                    ev_err(it, &here, "ArgumentError", "unknown option `%s`: `%s` takes no options", w,
                           cmd->name);
                goto fail;
            }
            size_t slot = c->np + k;
            if (c->given[slot]) {
                ev_err(it, a, "ArgumentError", "option `%s` of `%s` given twice", cmd->options[k].name, cmd->name);
                goto fail;
            }
            lv_value *v = eval(it, a->a);
            if (!v || !(v = check_type(it, cmd, &cmd->options[k], 1, v, a->a))) goto fail;
            c->vals[slot] = v;
            c->given[slot] = 1;
            continue;
        }
        /* positional */
        size_t slot = npos;
        if (variadic && slot >= c->np - 1) slot = c->np - 1;
        if (slot >= c->np) {
            ev_err(it, a, "ArgumentError", "too many arguments for `%s`: it takes %zu", cmd->name, c->np);
            goto fail;
        }
        const lp_param *p = &cmd->params[slot];
        while (slot < c->np && c->given[slot] && !(p->flags & LP_P_VARIADIC)) {
            slot++;   /* already given as name=value */
            p = &cmd->params[slot];
            if (slot >= c->np) {
                ev_err(it, a, "ArgumentError", "too many arguments for `%s`: it takes %zu", cmd->name, c->np);
                goto fail;
            }
        }
        lv_value *v;
        if (p->type == LP_T_NAME && a->a->kind == N_NAME) v = lv_strn(a->a->name, a->a->nlen);
        else v = eval(it, a->a);
        if (!v || !(v = check_type(it, cmd, p, 0, v, a->a))) goto fail;
        if (p->flags & LP_P_VARIADIC) {
            if (!c->vals[slot] && !(c->vals[slot] = lv_list_new(4))) { lv_decref(v); goto fail; }
            if (lv_list_push(c->vals[slot], v)) goto fail;
        } else {
            c->vals[slot] = v;
        }
        c->given[slot] = 1;
        npos++;
    }
    /* defaults and missing arguments */
    for (size_t i = 0; i < total; i++) {
        if (c->vals[i]) continue;
        const lp_param *p = i < c->np ? &cmd->params[i] : &cmd->options[i - c->np];
        if (p->flags & LP_P_VARIADIC) {
            if (!p->def) {
                ev_err(it, n, "ArgumentError", "missing argument `%s` for `%s` (usage: see `help %s`)", p->name,
                       cmd->name, cmd->name);
                goto fail;
            }
            if (!(c->vals[i] = lv_list_new(0))) goto fail;
            continue;
        }
        if (!p->def) {
            ev_err(it, n, "ArgumentError", "missing argument `%s` for `%s` (see `help %s`)", p->name, cmd->name,
                   cmd->name);
            goto fail;
        }
        lv_value *v = ev_default(it, p->def);
        if (!v) { set_loc(it, n); goto fail; }
        c->vals[i] = v;
    }
    return 0;
fail:
    call_free(c);
    return -1;
}

static lv_value *call_command(lp_interp *it, const ps_node *n, int top) {
    lp_call c = { .it = it, .cmd = n->cmd, .node = n, .top = top };
    if (bind_args(it, n, &c)) return NULL;
    lv_value *result = NULL;
    lv_clear_errkind();
    lp_clearerr();
    int rc = n->cmd->run(&c, &result);
    call_free(&c);
    if (rc != 0) {
        lv_decref(result);
        if (c.inner_failed) return NULL;
        const char *k = lv_errkind();
        if (k && !strcmp(k, "Interrupted")) return ev_err(it, n, "Interrupted", "%s", lp_geterr());
        if (k && !strcmp(k, "MemoryError")) return ev_err(it, n, "MemoryError", "%s", lp_geterr());
        char msg[LP_ERR_MAX];
        snprintf(msg, sizeof msg, "%s", lp_geterr());
        return ev_err(it, n, k ? k : "RuntimeError", "`%s`: %s", n->cmd->name, msg);
    }
    return result ? result : lv_none();
}

/* ---- the API for commands (registry.h) ----------------------------------------------- */

static size_t slot_of(lp_call *c, const char *name) {
    for (size_t i = 0; i < c->np; i++)
        if (!strcmp(c->cmd->params[i].name, name)) return i;
    for (size_t i = 0; i < c->no; i++)
        if (!strcmp(c->cmd->options[i].name, name)) return c->np + i;
    assert(!"lp_arg: the command did not declare this parameter");
    return (size_t)-1;
}

lv_value *lp_arg(lp_call *c, const char *name) {
    size_t s = slot_of(c, name);
    return s == (size_t)-1 || !c->vals[s] ? lv_none() : c->vals[s];
}
int lp_arg_given(lp_call *c, const char *name) {
    size_t s = slot_of(c, name);
    return s != (size_t)-1 && c->given[s];
}
int64_t lp_arg_int(lp_call *c, const char *name) {
    lv_value *v = lp_arg(c, name);
    if (v->kind == LV_INT) return v->u.i;
    if (v->kind != LV_FLOAT || !(v->u.f == v->u.f)) return 0;
    /* clamp: converting an out-of-range double is undefined */
    if (v->u.f >= 9.2e18) return INT64_MAX;
    if (v->u.f <= -9.2e18) return INT64_MIN;
    return (int64_t)v->u.f;
}
double lp_arg_float(lp_call *c, const char *name) { return lv_as_double(lp_arg(c, name)); }
const char *lp_arg_str(lp_call *c, const char *name) {
    lv_value *v = lp_arg(c, name);
    return v->kind == LV_STR ? v->u.str.s : NULL;
}
int lp_arg_bool(lp_call *c, const char *name) { return lv_truthy(lp_arg(c, name)); }
void *lp_arg_ptr(lp_call *c, const char *name, const lv_type *t) { return lv_opaque_ptr(lp_arg(c, name), t); }
const lp_command *lp_call_command(lp_call *c) { return c->cmd; }
struct lp_interp *lp_call_interp(lp_call *c) { return c->it; }

int lp_fail(lp_call *c, const char *ename, const char *fmt, ...) {
    char buf[LP_ERR_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return lv_seterr_kind(ename, "%s", buf);
}

int lp_check_interrupt(lp_call *c) {
    if (!atomic_load(&c->it->interrupted)) return 0;
    return lv_seterr_kind("Interrupted", "stopped by the user");
}

void lp_out_text(lp_call *c, int fd, const char *text, size_t n) {
    lp_sink *s = c->it->sink;
    if (s && s->stream && n) s->stream(s->ctx, fd, text, n);
}
void lp_out_display(lp_call *c, json_t *bundle, const char *id, int update) {
    lp_sink *s = c->it->sink;
    if (s && s->display) s->display(s->ctx, bundle, NULL, id, update);
}
void lp_out_page(lp_call *c, json_t *bundle) {
    lp_sink *s = c->it->sink;
    if (s && s->page) s->page(s->ctx, bundle);
    else if (s && s->stream) {
        /* no pager (the `loupe` command): show the text in line */
        const char *t = json_string_value(json_object_get(bundle, "text/plain"));
        if (t) {
            s->stream(s->ctx, 1, t, strlen(t));
            s->stream(s->ctx, 1, "\n", 1);
        }
    }
}
void lp_out_clear(lp_call *c, int wait) {
    lp_sink *s = c->it->sink;
    if (s && s->clear) s->clear(s->ctx, wait);
}
void lp_new_display_id(lp_call *c, char *buf, size_t cap) {
    snprintf(buf, cap, "loupe-%lu", ++c->it->display_seq);
}
char *lp_in_line(lp_call *c, const char *prompt, int password) {
    lp_sink *s = c->it->sink;
    if (!s || !s->input) return lv_seterr_kind("IOError", "this front end cannot read input"), NULL;
    lp_clearerr();
    char *r = s->input(s->ctx, prompt, password);
    if (!r) {
        if (atomic_load(&c->it->interrupted)) lv_seterr_kind("Interrupted", "stopped by the user");
        else lv_seterr_kind("IOError", "%s", lp_geterr());
    }
    return r;
}
lv_value *lp_var_get(lp_call *c, const char *name) { return lv_dict_get(c->it->vars, name, strlen(name)); }

int lp_run_statement(lp_call *c) {
    lv_value *shown = NULL;
    /* a wrapped statement at the top level shows its value like any top-level statement,
     * but never as the cell's result (the wrapping command's value comes last) */
    int rc = exec_stmt(c->it, c->node->a, c->top, 0, &shown);
    lv_decref(shown);
    if (rc) c->inner_failed = 1;
    return rc;
}

/* ---- statements --------------------------------------------------------------------- */

static void show(lp_interp *it, lv_value *v) {
    if (!it->sink || !it->sink->display) return;
    json_t *b = lv_bundle(v);
    if (b) {
        it->sink->display(it->sink->ctx, b, NULL, NULL, 0);
        json_decref(b);
    }
}

static int exec_block(lp_interp *it, const ps_node *b) {
    for (size_t i = 0; i < b->n; i++)
        if (exec_stmt(it, b->items[i], 0, 0, NULL)) return -1;
    return 0;
}

static int exec_help(lp_interp *it, const ps_node *s) {
    json_t *bundle = NULL;
    if (s->name) {
        char kw[16];
        snprintf(kw, sizeof kw, "%.*s", (int)s->nlen, s->name);
        const char *h = reg_keyword_help(kw);
        bundle = json_object();
        if (bundle && h) json_object_set_new(bundle, "text/plain", json_string(h));
    } else if (s->cmd) {
        bundle = reg_help_bundle(s->cmd);
    } else {
        lv_value *v = eval(it, s->a);
        if (!v) return -1;
        char *sum = lv_summary(v);
        lv_decref(v);
        if (sum) {
            bundle = json_object();
            json_t *str = json_string(sum);
            if (!str) str = json_string("(summary is not valid UTF-8)");
            json_object_set_new(bundle, "text/plain", str);
            lp_free(sum);
        }
    }
    if (!bundle) { ev_err(it, s, "MemoryError", "out of memory"); return -1; }
    lp_call c = { .it = it };
    lp_out_page(&c, bundle);
    json_decref(bundle);
    return 0;
}

/* top: the statement is at the top level of the cell (its value is shown);
 * last: it is the cell's last statement (its value becomes the result, in *shown). */
static int exec_stmt(lp_interp *it, const ps_node *s, int top, int last, lv_value **shown) {
    if (atomic_load(&it->interrupted)) { interrupted(it, s); return -1; }
    if (it->step_budget > 0 && --it->step_budget == 0) {
        ev_err(it, s, "Interrupted", "step budget exhausted");
        return -1;
    }
    switch (s->kind) {
    case S_EXPR: {
        lv_value *v = s->a->kind == N_CALL ? call_command(it, s->a, top) : eval(it, s->a);
        if (!v) { set_loc(it, s->a); return -1; }
        if (top && v->kind != LV_NONE) {
            if (last && shown) { *shown = v; return 0; }
            show(it, v);
        }
        lv_decref(v);
        return 0;
    }
    case S_ASSIGN: {
        lv_value *v = s->a->kind == N_CALL ? call_command(it, s->a, 0) : eval(it, s->a);
        if (!v) { set_loc(it, s->a); return -1; }
        if (lv_dict_set(it->vars, s->name, s->nlen, v)) { set_loc(it, s); return -1; }
        return 0;
    }
    case S_REPEAT: {
        lv_value *n = eval(it, s->a);
        if (!n) return -1;
        if (n->kind != LV_INT) {
            ev_err(it, s->a, "TypeError", "`repeat` needs an int count, not %s", lv_type_name(n));
            lv_decref(n);
            return -1;
        }
        int64_t k = n->u.i;
        lv_decref(n);
        if (k < 0) { ev_err(it, s->a, "ValueError", "`repeat` count must be 0 or more, got %lld", (long long)k); return -1; }
        for (int64_t i = 0; i < k; i++) {
            if (atomic_load(&it->interrupted)) { interrupted(it, s); return -1; }
            if (it->step_budget > 0 && --it->step_budget == 0) {
                ev_err(it, s, "Interrupted", "step budget exhausted");
                return -1;
            }
            if (exec_block(it, s->b)) return -1;
        }
        return 0;
    }
    case S_FOR: {
        lv_value *seq = eval(it, s->a);
        if (!seq) return -1;
        size_t count;
        switch (seq->kind) {
        case LV_LIST: count = seq->u.list.n; break;
        case LV_DICT: count = seq->u.dict.n; break;
        case LV_STR: count = lv_utf8_len(seq->u.str.s, seq->u.str.n); break;
        case LV_OPAQUE:
            if (seq->u.op.type->len && seq->u.op.type->item) { count = seq->u.op.type->len(seq->u.op.ptr); break; }
            /* fall through */
        default:
            ev_err(it, s->a, "TypeError", "cannot loop over %s", lv_type_name(seq));
            lv_decref(seq);
            return -1;
        }
        int rc = 0;
        const char *sp = seq->kind == LV_STR ? seq->u.str.s : NULL;
        for (size_t i = 0; i < count; i++) {
            if (atomic_load(&it->interrupted)) { interrupted(it, s); rc = -1; break; }
            lv_value *x;
            if (seq->kind == LV_LIST) x = lv_incref(seq->u.list.items[i]);
            else if (seq->kind == LV_DICT) x = lv_strn(seq->u.dict.e[i].key, seq->u.dict.e[i].klen);
            else if (seq->kind == LV_STR) {
                const char *e = sp + 1;
                while (*e && ((unsigned char)*e & 0xC0) == 0x80) e++;
                x = lv_strn(sp, (size_t)(e - sp));
                sp = e;
            } else {
                x = seq->u.op.type->item(seq->u.op.ptr, i);
            }
            if (!x || lv_dict_set(it->vars, s->name, s->nlen, x)) { set_loc(it, s->a); rc = -1; break; }
            if (exec_block(it, s->b)) { rc = -1; break; }
        }
        lv_decref(seq);
        return rc;
    }
    case S_IF: {
        lv_value *c = eval(it, s->a);
        if (!c) return -1;
        int t = lv_truthy(c);
        lv_decref(c);
        if (t) return exec_block(it, s->b);
        if (!s->c) return 0;
        if (s->c->kind == S_IF) return exec_stmt(it, s->c, 0, 0, NULL);
        return exec_block(it, s->c);
    }
    case S_HELP:
        return exec_help(it, s);
    case S_BLOCK:
        return exec_block(it, s);
    default:
        ev_err(it, s, "SyntaxError", "not a statement");
        return -1;
    }
}

/* ---- error outcome ------------------------------------------------------------------ */

/* Append `s[0..n)` to b, replacing what JSON cannot carry (it is valid UTF-8 except when
 * the error is about invalid bytes). */
static void put_clean(sbuf *b, const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (k <= 0) { sb_puts(b, "\xEF\xBF\xBD"); i++; continue; }
        if (cp == 0) sb_puts(b, "\xE2\x90\x80");   /* ␀ */
        else sb_putn(b, s + i, (size_t)k);
        i += (size_t)k;
    }
}

static int cp_width(const char *s, size_t n, size_t *adv) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &cp);
    if (k <= 0) { *adv = 1; return 1; }
    *adv = (size_t)k;
    if (cp == 0) return 1;
    int w = utf8proc_charwidth(cp);
    return w < 0 ? 1 : w;
}

void ev_make_error(lp_outcome *out, const char *ename, const char *evalue, const char *src, size_t len,
                   size_t start, size_t end, int has_loc) {
    out->error = 1;
    out->ename = lp_strdup(ename);
    sbuf ev;
    sb_init(&ev);
    put_clean(&ev, evalue, strlen(evalue));
    out->evalue = sb_take(&ev);
    out->traceback = json_array();
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "%s: %s", ename, out->evalue ? out->evalue : "");
    json_array_append_new(out->traceback, json_string(sb_str(&b)));
    sb_free(&b);
    if (!has_loc || !src) return;
    if (start > len) start = len;
    if (end > len) end = len;
    if (end <= start) end = start + 1;
    size_t ls = start, le = start;
    while (ls > 0 && src[ls - 1] != '\n') ls--;
    while (le < len && src[le] != '\n') le++;
    if (end > le) end = le > start ? le : start + 1;
    int line, col;
    lx_linecol(src, len, start, &line, &col);
    /* a long line is shown as a window around the error */
    size_t ws = ls, we = le;
    int cut_left = 0, cut_right = 0;
    if (start - ls > 60) {
        ws = start - 40;
        while (ws < start && ((unsigned char)src[ws] & 0xC0) == 0x80) ws++;
        cut_left = 1;
    }
    if (we - ws > 160) {
        we = ws + 160;
        if (we < end) we = end;
        while (we < le && ((unsigned char)src[we] & 0xC0) == 0x80) we++;
        cut_right = we < le;
    }
    char num[32];
    int nw = snprintf(num, sizeof num, "%d", line);
    sb_init(&b);
    sb_printf(&b, "  %s | ", num);
    if (cut_left) sb_puts(&b, "…");
    size_t srcline = b.len;
    (void)srcline;
    put_clean(&b, src + ws, we - ws);
    if (cut_right) sb_puts(&b, "…");
    /* drop a trailing \r of CRLF files */
    if (b.len && b.s[b.len - 1] == '\r') b.s[--b.len] = 0;
    json_array_append_new(out->traceback, json_string(sb_str(&b)));
    sb_free(&b);
    sb_init(&b);
    sb_printf(&b, "  %*s | ", nw, "");
    if (cut_left) sb_putc(&b, ' ');
    for (size_t i = ws; i < start && i < we;) {
        size_t adv;
        if (src[i] == '\t') { sb_putc(&b, '\t'); i++; continue; }
        int w = cp_width(src + i, we - i, &adv);
        for (int k = 0; k < w; k++) sb_putc(&b, ' ');
        i += adv;
    }
    int carets = 0;
    for (size_t i = start; i < end && i < we;) {
        size_t adv;
        int w = src[i] == '\t' ? 1 : cp_width(src + i, we - i, &adv);
        if (src[i] == '\t') adv = 1;
        for (int k = 0; k < w; k++) { sb_putc(&b, '^'); carets++; }
        i += adv;
    }
    if (!carets) sb_putc(&b, '^');
    json_array_append_new(out->traceback, json_string(sb_str(&b)));
    sb_free(&b);
}

static int syntax_error(lp_outcome *out, const char *src, size_t len, const ps_error *err) {
    ps_error e0 = *err;
    const ps_error *e = &e0;
    if (e0.pos >= len) {
        /* "found end of input": point just after the last text, not at an empty last line */
        size_t p = len;
        while (p > 0 && (src[p - 1] == '\n' || src[p - 1] == ' ' || src[p - 1] == '\t' || src[p - 1] == '\r')) p--;
        e0.pos = p;
        e0.end = p + 1;
    }
    int line, col;
    lx_linecol(src, len, e->pos, &line, &col);
    char msg[512];
    snprintf(msg, sizeof msg, "line %d:%d: %s", line, col, e->msg);
    ev_make_error(out, "SyntaxError", msg, src, len, e->pos, e->end, 1);
    return -1;
}

static int bytes_error(lp_outcome *out, const char *src, size_t len) {
    size_t bad;
    char msg[256];
    if (!lx_check_bytes(src, len, &bad, msg, sizeof msg)) return 0;
    ev_make_error(out, "SyntaxError", msg, src, len, bad, bad + 1, 1);
    return -1;
}

/* ---- loupe.h ------------------------------------------------------------------------ */

lp_interp *lp_interp_new(void) {
    lp_interp *it = lp_calloc(1, sizeof *it);
    if (!it) return NULL;
    it->vars = lv_dict_new();
    if (!it->vars) { lp_free(it); return NULL; }
    atomic_init(&it->interrupted, 0);
    return it;
}

void lp_interp_free(lp_interp *it) {
    if (!it) return;
    lv_decref(it->vars);
    lp_free(it->extra);
    lp_free(it);
}

void lp_interp_set_step_budget(lp_interp *it, long steps) { it->step_budget = steps; }

void lp_interrupt(lp_interp *it) { atomic_store(&it->interrupted, 1); }

void lp_outcome_free(lp_outcome *out) {
    json_decref(out->result);
    lp_free(out->ename);
    lp_free(out->evalue);
    json_decref(out->traceback);
    memset(out, 0, sizeof *out);
}

const char *lp_version(void) {
#ifdef LOUPE_VERSION
    return LOUPE_VERSION;
#else
    return "0.1.0";
#endif
}
const char *lp_banner(void) {
    return "loupe " 
#ifdef LOUPE_VERSION
        LOUPE_VERSION
#endif
        " — look inside transformer models. Type `help` for commands.";
}

static void runtime_error(lp_interp *it, lp_outcome *out) {
    const char *k = lv_errkind();
    ev_make_error(out, k ? k : "RuntimeError", lp_geterr(), it->src, it->srclen, it->err_start, it->err_end,
                  it->has_loc);
}

int lp_check(lp_interp *it, const char *code, size_t len, lp_outcome *out) {
    memset(out, 0, sizeof *out);
    if (bytes_error(out, code, len)) return -1;
    ps_tree t;
    ps_error e;
    int rc = ps_parse(&t, code, len, ev_find_cb, it, &e);
    if (rc) syntax_error(out, code, len, &e);
    ps_free(&t);
    return rc;
}

int lp_execute(lp_interp *it, const char *code, size_t len, lp_sink *sink, lp_outcome *out) {
    memset(out, 0, sizeof *out);
    atomic_store(&it->interrupted, 0);
    if (!code) code = "";
    if (bytes_error(out, code, len)) return -1;
    ps_tree t;
    ps_error e;
    if (ps_parse(&t, code, len, ev_find_cb, it, &e)) {
        syntax_error(out, code, len, &e);
        ps_free(&t);
        return -1;
    }
    it->sink = sink;
    it->src = code;
    it->srclen = len;
    int rc = 0;
    const ps_node *root = t.root;
    for (size_t i = 0; i < root->n; i++) {
        it->has_loc = 0;
        lv_clear_errkind();
        lp_clearerr();
        lv_value *shown = NULL;
        if (exec_stmt(it, root->items[i], 1, i + 1 == root->n, &shown)) {
            runtime_error(it, out);
            rc = -1;
            break;
        }
        if (shown) {
            out->result = lv_bundle(shown);
            lv_decref(shown);
        }
    }
    it->sink = NULL;
    it->src = NULL;
    ps_free(&t);
    return rc;
}

json_t *lp_user_expression(lp_interp *it, const char *expr) {
    size_t len = strlen(expr);
    lp_outcome out;
    memset(&out, 0, sizeof out);
    json_t *r = json_object();
    if (!r) return NULL;
    if (!bytes_error(&out, expr, len)) {
        ps_tree t;
        ps_error e;
        if (ps_parse_expr(&t, expr, len, ev_find_cb, it, &e)) {
            syntax_error(&out, expr, len, &e);
        } else {
            it->src = expr;
            it->srclen = len;
            it->has_loc = 0;
            lv_clear_errkind();
            lv_value *v = eval(it, t.root);
            if (v) {
                json_t *b = lv_bundle(v);
                lv_decref(v);
                json_object_set_new(r, "status", json_string("ok"));
                json_object_set_new(r, "data", b ? b : json_object());
                json_object_set_new(r, "metadata", json_object());
            } else {
                runtime_error(it, &out);
            }
            it->src = NULL;
        }
        ps_free(&t);
    }
    if (out.error) {
        json_object_set_new(r, "status", json_string("error"));
        json_object_set_new(r, "ename", json_string(out.ename ? out.ename : "Error"));
        json_object_set_new(r, "evalue", json_string(out.evalue ? out.evalue : ""));
        json_object_set_new(r, "traceback", out.traceback ? json_incref(out.traceback) : json_array());
    }
    lp_outcome_free(&out);
    return r;
}
