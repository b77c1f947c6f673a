/* value.h — loupe values: none, bool, int, float, string, list, dict, and opaque domain
 * objects (model, module, tensor, tokenizer, dataset, adapter, optimizer, plot, ...).
 *
 * Lifetime: reference counted, single-threaded (the shell thread). Every function that
 * returns `lv_value *` returns a NEW reference unless it says "borrowed"; release it with
 * lv_decref(). Functions that "steal" a reference take over the caller's one.
 * none/true/false are immortal singletons, so lv_none() never fails.
 * Values are immutable from the language (no item assignment), so sharing is safe.
 *
 * Adding a value type = a static vtable + a constructor that wraps your C pointer:
 *
 *   static char *tensor_text(void *p) { ... return lp_strdup("Tensor [2048, 2304] bf16"); }
 *   static void tensor_free(void *p) { my_tensor_release(p); }
 *   static lv_value *tensor_attr(void *p, const char *name) {
 *       if (!strcmp(name, "shape")) return ...;
 *       return NULL;                     // no such attribute: NULL without lp_seterr()
 *   }
 *   static int tensor_attrs(void *p, lv_attr_fn add, void *actx) { add(actx, "shape"); return 0; }
 *   const lv_type lv_tensor_type = { .name = "tensor", .free = tensor_free,
 *       .text = tensor_text, .getattr = tensor_attr, .attrs = tensor_attrs };
 *   lv_value *v = lv_new_opaque(&lv_tensor_type, t);   // owns t; NULL on OOM (t freed)
 *   my_tensor *t2 = lv_opaque_ptr(v, &lv_tensor_type); // NULL if v is not a tensor
 *
 * Error convention in callbacks: return NULL (or -1) after lp_seterr(); use
 * lv_seterr_kind("ValueError", ...) to choose the error name the user sees. */
#ifndef LOUPE_VALUE_H
#define LOUPE_VALUE_H
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include "util/err.h"

typedef struct lv_value lv_value;
typedef void (*lv_attr_fn)(void *actx, const char *name);

typedef struct lv_type {
    const char *name;                                  /* "model", "tensor", ... */
    void   (*free)(void *ptr);                         /* release the wrapped pointer; may be NULL */
    char  *(*text)(void *ptr);                         /* text/plain, lp_malloc'd; required */
    json_t *(*bundle)(void *ptr);                      /* optional: full MIME bundle (new ref);
                                                          text/plain is filled from text() if missing */
    /* attribute lookup (new ref). NULL without lp_seterr() means "no such attribute";
     * NULL after lv_seterr_kind()/lp_seterr() is a real error. Optional. */
    lv_value *(*getattr)(void *ptr, const char *name);
    lv_value *(*getindex)(void *ptr, lv_value *key);   /* `v[key]`; NULL + lp_seterr(). Optional */
    int    (*attrs)(void *ptr, lv_attr_fn add, void *actx); /* completer: add(actx, name) each */
    char  *(*summary)(void *ptr);                      /* inspection (Shift+Tab); default text() */
    /* completion type of attribute `name` ("module", "attribute", ...). Optional:
     * "attribute" when absent or NULL. */
    const char *(*attr_type)(void *ptr, const char *name);
    /* iteration for `for x in v`: length and item i (new ref). Optional. */
    size_t (*len)(void *ptr);
    lv_value *(*item)(void *ptr, size_t i);
} lv_type;

typedef enum { LV_NONE, LV_BOOL, LV_INT, LV_FLOAT, LV_STR, LV_LIST, LV_DICT, LV_OPAQUE } lv_kind;

typedef struct lv_dict_entry { char *key; size_t klen; lv_value *val; } lv_dict_entry;

/* The struct is public so that code can read it; create and change values only through
 * the functions below. */
struct lv_value {
    int refs;        /* < 0: immortal */
    lv_kind kind;
    union {
        int b;
        int64_t i;
        double f;
        struct { char *s; size_t n; } str;                       /* NUL-terminated too */
        struct { lv_value **items; size_t n, cap; int depth; } list;
        struct { lv_dict_entry *e; size_t n, cap; size_t *idx; size_t icap; int depth; } dict;
        struct { const lv_type *type; void *ptr; } op;
    } u;
};

/* Deepest allowed nesting of lists/dicts inside each other (rendering and freeing recurse). */
#define LV_MAX_DEPTH 1000

lv_value *lv_incref(lv_value *v);        /* returns v */
void      lv_decref(lv_value *v);        /* NULL is fine */

lv_value *lv_none(void);
lv_value *lv_bool(int b);
lv_value *lv_int(int64_t i);
lv_value *lv_float(double f);
lv_value *lv_str(const char *s);                  /* copies */
lv_value *lv_strn(const char *s, size_t n);       /* copies */
lv_value *lv_str_take(char *s, size_t n);         /* owns s (lp_malloc'd); frees it on failure */
lv_value *lv_list_new(size_t cap_hint);
int       lv_list_push(lv_value *list, lv_value *item);   /* steals item (also on failure) */
lv_value *lv_dict_new(void);
int       lv_dict_set(lv_value *d, const char *key, size_t klen, lv_value *val); /* steals val */
lv_value *lv_dict_get(lv_value *d, const char *key, size_t klen);   /* borrowed or NULL */
int       lv_dict_del(lv_value *d, const char *key, size_t klen);   /* 0 found, -1 not */
lv_value *lv_new_opaque(const lv_type *t, void *ptr);   /* owns ptr; NULL on OOM (ptr freed) */
void     *lv_opaque_ptr(lv_value *v, const lv_type *t); /* NULL unless v is of type t */

const char *lv_type_name(const lv_value *v);      /* "int", "string", "model", ... */
int   lv_truthy(const lv_value *v);
int   lv_equal(const lv_value *a, const lv_value *b);
int   lv_is_number(const lv_value *v);            /* int or float (not bool) */
double lv_as_double(const lv_value *v);           /* int or float */

/* Renderings (lp_malloc'd text, NULL on OOM):
 *   lv_repr: how a value is shown as a result: strings quoted, floats round-trip.
 *   lv_tostr: what `print` writes: strings as they are, everything else as lv_repr. */
char   *lv_repr(lv_value *v);
char   *lv_tostr(lv_value *v);
json_t *lv_bundle(lv_value *v);                   /* MIME bundle, always with text/plain */
char   *lv_summary(lv_value *v);                  /* one paragraph for inspection */

/* Attribute and index access with the built-in rules (dict keys, `length`, list[int],
 * `.0` on lists) and the opaque vtables. NULL after lv_seterr_kind(). */
/* Slices, `lo:hi` inside brackets (either end may be absent): an opaque value of type
 * "slice". lv_slice_bounds resolves one against a length n like Python (negative counts from
 * the end, clamped): returns 0 and [*from, *to), or -1 when v is not a slice. */
extern const lv_type lv_slice_type;
lv_value *lv_slice(int has_lo, int64_t lo, int has_hi, int64_t hi);
int lv_slice_bounds(lv_value *v, size_t n, size_t *from, size_t *to);

lv_value *lv_getattr(lv_value *v, const char *name);
lv_value *lv_getindex(lv_value *v, lv_value *key);
/* Names offered by completion after `v.` */
void lv_attrs(lv_value *v, lv_attr_fn add, void *actx);

/* Errors with a name ("TypeError", ...): sets the message (lp_seterr) and the name that
 * lv_errkind() returns until the next lv_seterr_kind / lv_clear_errkind. Returns -1. */
int  lv_seterr_kind(const char *ename, const char *fmt, ...) LP_PRINTF(2, 3);
const char *lv_errkind(void);   /* NULL when the last error had no name */
void lv_clear_errkind(void);

/* Helpers for renderers. */
void lv_format_float(double f, char *buf, size_t cap);   /* shortest round-trip, "1.0" style */
size_t lv_utf8_len(const char *s, size_t n);             /* code points */

#endif
