/* table.h — tables as MIME bundles: text/plain with aligned columns and text/html <table>.
 * Several commands show tables (vars, layers, stats...), so they share this.
 *
 *   const char *hdr[] = { "name", "shape", "dtype" };
 *   lp_table *t = lp_table_new(3, hdr);
 *   const char *row[] = { "model.embed_tokens.weight", "[256000, 2304]", "bf16" };
 *   lp_table_row(t, row);
 *   *result = lp_table_value(t);     // a value of type "table"; owns t (NULL on OOM)
 *   // or: json_t *b = lp_table_bundle(t); lp_table_free(t);
 *
 * Columns whose cells all look like numbers are right-aligned; widths count display
 * columns (a Japanese character is two). */
#ifndef LOUPE_TABLE_H
#define LOUPE_TABLE_H
#include <stddef.h>
#include <jansson.h>
#include "lang/value.h"

typedef struct lp_table lp_table;

lp_table *lp_table_new(size_t ncols, const char *const *headers);   /* NULL on OOM */
int       lp_table_row(lp_table *t, const char *const *cells);     /* copies; -1 on OOM */
void      lp_table_set_title(lp_table *t, const char *title);      /* a line above the table */
void      lp_table_set_footer(lp_table *t, const char *footer);    /* a line below it */
size_t    lp_table_rows(const lp_table *t);
char     *lp_table_text(const lp_table *t);                        /* text/plain */
json_t   *lp_table_bundle(const lp_table *t);                      /* text/plain + text/html */
lv_value *lp_table_value(lp_table *t);                             /* takes t */
void      lp_table_free(lp_table *t);

extern const lv_type lv_table_type;

#endif
