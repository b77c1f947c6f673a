/* table.c — see table.h. */
#include "lang/table.h"
#include "util/mem.h"
#include "util/sbuf.h"
#include <string.h>
#include <utf8proc.h>

struct lp_table {
    size_t ncols, nrows, cap;
    char **cells;        /* (nrows + 1) × ncols, row 0 is the header */
    char *title, *footer;
};

lp_table *lp_table_new(size_t ncols, const char *const *headers) {
    lp_table *t = lp_calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ncols = ncols;
    t->cap = 8;
    t->cells = lp_calloc(t->cap * ncols + 1, sizeof(char *));
    if (!t->cells) { lp_free(t); return NULL; }
    for (size_t i = 0; i < ncols; i++)
        if (!(t->cells[i] = lp_strdup(headers[i] ? headers[i] : ""))) { lp_table_free(t); return NULL; }
    return t;
}

void lp_table_free(lp_table *t) {
    if (!t) return;
    for (size_t i = 0; i < (t->nrows + 1) * t->ncols; i++) lp_free(t->cells[i]);
    lp_free(t->cells);
    lp_free(t->title);
    lp_free(t->footer);
    lp_free(t);
}

int lp_table_row(lp_table *t, const char *const *cells) {
    if (t->nrows + 2 > t->cap) {
        size_t cap = t->cap * 2;
        char **c = lp_realloc(t->cells, cap * t->ncols * sizeof *c + sizeof *c);
        if (!c) return lp_seterr("out of memory");
        t->cells = c;
        t->cap = cap;
    }
    char **row = t->cells + (t->nrows + 1) * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        row[i] = lp_strdup(cells[i] ? cells[i] : "");
        if (!row[i]) {
            while (i--) lp_free(row[i]);
            return lp_seterr("out of memory");
        }
    }
    t->nrows++;
    return 0;
}

void lp_table_set_title(lp_table *t, const char *s) { lp_free(t->title); t->title = s ? lp_strdup(s) : NULL; }
void lp_table_set_footer(lp_table *t, const char *s) { lp_free(t->footer); t->footer = s ? lp_strdup(s) : NULL; }
size_t lp_table_rows(const lp_table *t) { return t->nrows; }

static size_t width(const char *s) {
    size_t w = 0;
    utf8proc_int32_t cp;
    for (utf8proc_ssize_t k; *s; s += k) {
        k = utf8proc_iterate((const utf8proc_uint8_t *)s, -1, &cp);
        if (k <= 0) { k = 1; w++; continue; }
        int cw = utf8proc_charwidth(cp);
        w += cw < 0 ? 1 : (size_t)cw;
    }
    return w;
}

static int numeric(const char *s) {
    if (!*s) return 1;
    int digits = 0;
    for (; *s; s++) {
        if (*s >= '0' && *s <= '9') digits = 1;
        else if (!strchr("+-.,eE%", *s)) return 0;
    }
    return digits;
}

char *lp_table_text(const lp_table *t) {
    size_t *w = lp_calloc(t->ncols + 1, sizeof *w);
    int *right = lp_calloc(t->ncols + 1, sizeof *right);
    if (!w || !right) { lp_free(w); lp_free(right); return NULL; }
    for (size_t c = 0; c < t->ncols; c++) {
        right[c] = t->nrows > 0;
        for (size_t r = 0; r <= t->nrows; r++) {
            const char *s = t->cells[r * t->ncols + c];
            size_t cw = width(s);
            if (cw > w[c]) w[c] = cw;
            if (r && !numeric(s)) right[c] = 0;
        }
    }
    sbuf b;
    sb_init(&b);
    if (t->title) sb_printf(&b, "%s\n", t->title);
    for (size_t r = 0; r <= t->nrows; r++) {
        size_t line_start = b.len;
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            size_t pad = w[c] - width(s);
            if (c) sb_puts(&b, "  ");
            if (right[c]) for (size_t k = 0; k < pad; k++) sb_putc(&b, ' ');
            sb_puts(&b, s);
            if (!right[c] && c + 1 < t->ncols) for (size_t k = 0; k < pad; k++) sb_putc(&b, ' ');
        }
        /* no trailing spaces (goldens and terminals both prefer it) */
        while (b.len > line_start && b.s[b.len - 1] == ' ') b.s[--b.len] = 0;
        sb_putc(&b, '\n');
        if (r == 0) {
            for (size_t c = 0; c < t->ncols; c++) {
                if (c) sb_puts(&b, "  ");
                for (size_t k = 0; k < w[c]; k++) sb_putc(&b, '-');
            }
            sb_putc(&b, '\n');
        }
    }
    if (t->footer) sb_printf(&b, "%s\n", t->footer);
    lp_free(w);
    lp_free(right);
    if (b.len && b.s[b.len - 1] == '\n') b.s[--b.len] = 0;   /* the display adds the newline */
    if (b.oom) { sb_free(&b); return NULL; }
    return sb_take(&b);
}

json_t *lp_table_bundle(const lp_table *t) {
    char *text = lp_table_text(t);
    if (!text) return NULL;
    sbuf h;
    sb_init(&h);
    if (t->title) { sb_puts(&h, "<p>"); sb_html_escape(&h, t->title); sb_puts(&h, "</p>"); }
    sb_puts(&h, "<table>\n<thead><tr>");
    for (size_t c = 0; c < t->ncols; c++) {
        sb_puts(&h, "<th>");
        sb_html_escape(&h, t->cells[c]);
        sb_puts(&h, "</th>");
    }
    sb_puts(&h, "</tr></thead>\n<tbody>\n");
    for (size_t r = 1; r <= t->nrows; r++) {
        sb_puts(&h, "<tr>");
        for (size_t c = 0; c < t->ncols; c++) {
            sb_puts(&h, "<td>");
            sb_html_escape(&h, t->cells[r * t->ncols + c]);
            sb_puts(&h, "</td>");
        }
        sb_puts(&h, "</tr>\n");
    }
    sb_puts(&h, "</tbody>\n</table>");
    if (t->footer) { sb_puts(&h, "<p>"); sb_html_escape(&h, t->footer); sb_puts(&h, "</p>"); }
    json_t *b = json_object();
    json_t *tp = json_string(text), *th = h.oom ? NULL : json_string(sb_str(&h));
    lp_free(text);
    sb_free(&h);
    if (!b || !tp) { json_decref(b); json_decref(tp); json_decref(th); return NULL; }
    json_object_set_new(b, "text/plain", tp);
    if (th) json_object_set_new(b, "text/html", th);
    return b;
}

static void t_free(void *p) { lp_table_free(p); }
static char *t_text(void *p) { return lp_table_text(p); }
static json_t *t_bundle(void *p) { return lp_table_bundle(p); }
static char *t_summary(void *p) {
    const lp_table *t = p;
    sbuf b;
    sb_init(&b);
    sb_printf(&b, "table: %zu rows × %zu columns (", t->nrows, t->ncols);
    for (size_t c = 0; c < t->ncols; c++) sb_printf(&b, "%s%s", c ? ", " : "", t->cells[c]);
    sb_puts(&b, ")");
    return b.oom ? (sb_free(&b), NULL) : sb_take(&b);
}
static size_t t_len(void *p) { return ((lp_table *)p)->nrows; }
static lv_value *t_item(void *p, size_t i) {
    /* a row as a dict: header → cell */
    lp_table *t = p;
    lv_value *d = lv_dict_new();
    if (!d) return NULL;
    for (size_t c = 0; c < t->ncols; c++) {
        const char *k = t->cells[c];
        if (lv_dict_set(d, k, strlen(k), lv_str(t->cells[(i + 1) * t->ncols + c]))) { lv_decref(d); return NULL; }
    }
    return d;
}
static lv_value *t_index(void *p, lv_value *key) {
    lp_table *t = p;
    if (key->kind != LV_INT) return lv_seterr_kind("TypeError", "table index must be int"), NULL;
    int64_t i = key->u.i < 0 ? key->u.i + (int64_t)t->nrows : key->u.i;
    if (i < 0 || (uint64_t)i >= t->nrows)
        return lv_seterr_kind("IndexError", "row %lld out of range for a table of %zu rows", (long long)key->u.i,
                              t->nrows), NULL;
    return t_item(p, (size_t)i);
}
static lv_value *t_attr(void *p, const char *name) {
    if (!strcmp(name, "rows")) return lv_int((int64_t)((lp_table *)p)->nrows);
    return NULL;
}
static int t_attrs(void *p, lv_attr_fn add, void *actx) { add(actx, "rows"); return 0; }

const lv_type lv_table_type = {
    .name = "table", .free = t_free, .text = t_text, .bundle = t_bundle, .getattr = t_attr,
    .getindex = t_index, .attrs = t_attrs, .summary = t_summary, .len = t_len, .item = t_item,
};

lv_value *lp_table_value(lp_table *t) { return lv_new_opaque(&lv_table_type, t); }
