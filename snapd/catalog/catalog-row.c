/* catalog-row.c: the table-driven row code every catalog table shares.
 *
 * Each table's file describes its struct once as a row type (catalog-
 * internal.h): the columns of its *_COLS list in order, each with the
 * field it fills and how the value is stored. From that one description
 * come reading a row into the struct, binding the struct as an INSERT's or
 * UPDATE's parameters, freeing it, and the one-row and list queries, which
 * were written out again for every table before. */
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

#define FIELD(item, c, type) ((type *)((char *)(item) + (c)->off))

const char *col_enum_name(const struct col *c, int value)
{
    return value >= 0 && value < c->n_names ? c->names[value] : NULL;
}

int states_clause(struct buf *sql, const char *col, unsigned states, int max, int n)
{
    if (!states)
        return n;
    buf_printf(sql, " AND %s IN (", col);
    for (int i = 0, first = 1; i < max; i++)
        if (states & (1u << i)) {
            buf_printf(sql, "%s?%d", first ? "" : ", ", ++n);
            first = 0;
        }
    buf_printf(sql, ")");
    return n;
}

int names_lookup(const char *const *names, int n, const char *s, int invalid)
{
    for (int i = 0; s && i < n; i++)
        if (names[i] && strcmp(names[i], s) == 0)
            return i;
    return invalid;
}

static int col_enum_value(const struct col *c, const char *s)
{
    return names_lookup(c->names, c->n_names, s, c->invalid);
}

void row_read(const struct row_type *t, sqlite3_stmt *st, void *item)
{
    for (size_t i = 0; i < t->n_cols; i++) {
        const struct col *c = &t->cols[i];
        int k = (int)i;
        switch (c->type) {
        case COL_TEXT:
            *FIELD(item, c, char *) = col_str(st, k);
            break;
        case COL_U64:
            *FIELD(item, c, uint64_t) = col_u64(st, k);
            break;
        case COL_I64:
            *FIELD(item, c, int64_t) = sqlite3_column_int64(st, k);
            break;
        case COL_U32:
            *FIELD(item, c, uint32_t) = (uint32_t)sqlite3_column_int64(st, k);
            break;
        case COL_BOOL:
            *FIELD(item, c, bool) = sqlite3_column_int(st, k) != 0;
            break;
        case COL_ENUM:
            *FIELD(item, c, int) = col_enum_value(c, (const char *)sqlite3_column_text(st, k));
            break;
        case COL_BLOB: {
            const void *blob = sqlite3_column_blob(st, k);
            int len = sqlite3_column_bytes(st, k);
            if (blob && len > 0) {
                void *copy = xmalloc((size_t)len);
                memcpy(copy, blob, (size_t)len);
                *FIELD(item, c, void *) = copy;
                *(size_t *)((char *)item + c->len_off) = (size_t)len;
            }
            break;
        }
        }
    }
    if (t->read_more)
        t->read_more(st, (int)t->n_cols, item);
}

void row_bind(const struct row_type *t, sqlite3_stmt *st, const void *item)
{
    int n = sqlite3_bind_parameter_count(st), k = 0;
    void *it = (void *)item;
    for (size_t i = 0; i < t->n_cols && k < n; i++) {
        const struct col *c = &t->cols[i];
        if (c->flags & COL_NOBIND)
            continue;
        k++;
        switch (c->type) {
        case COL_TEXT: {
            const char *s = *FIELD(it, c, char *);
            bind_text(st, k, s ? s : c->dflt);
            break;
        }
        case COL_U64: {
            uint64_t v = *FIELD(it, c, uint64_t);
            bind_u64(st, k, v == 0 && (c->flags & COL_NOW) ? now_real_ns() : v);
            break;
        }
        case COL_I64:
            sqlite3_bind_int64(st, k, *FIELD(it, c, int64_t));
            break;
        case COL_U32:
            sqlite3_bind_int64(st, k, *FIELD(it, c, uint32_t));
            break;
        case COL_BOOL:
            sqlite3_bind_int(st, k, *FIELD(it, c, bool));
            break;
        case COL_ENUM:
            bind_text(st, k, col_enum_name(c, *FIELD(it, c, int)));
            break;
        case COL_BLOB: {
            size_t len = *(size_t *)((char *)it + c->len_off);
            if (len)
                sqlite3_bind_blob(st, k, *FIELD(it, c, void *), (int)len, SQLITE_STATIC);
            else
                sqlite3_bind_null(st, k);
            break;
        }
        }
    }
}

void row_clear(const struct row_type *t, void *item)
{
    for (size_t i = 0; i < t->n_cols; i++) {
        const struct col *c = &t->cols[i];
        if (c->type == COL_TEXT)
            free(*FIELD(item, c, char *));
        else if (c->type == COL_BLOB)
            free(*FIELD(item, c, void *));
    }
    if (t->clear_more)
        t->clear_more(item);
    memset(item, 0, t->size);
}

void row_free(const struct row_type *t, void *item)
{
    if (!item)
        return;
    row_clear(t, item);
    free(item);
}

void row_list_free(const struct row_type *t, void *items, size_t n)
{
    for (size_t i = 0; i < n; i++)
        row_clear(t, (char *)items + i * t->size);
    free(items);
}

int row_get(struct catalog *cat, sqlite3_stmt *st, const struct row_type *t, void *ret)
{
    int r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    void *item = xcalloc(1, t->size);
    row_read(t, st, item);
    memcpy(ret, &item, sizeof(item));
    return 0;
}

int row_list(struct catalog *cat, sqlite3_stmt *st, const struct row_type *t, size_t limit,
             void *ret_items, size_t *ret_n)
{
    char *items = NULL;
    size_t n = 0;
    int r;
    while ((r = cat_step_row(cat, st)) > 0) {
        if (limit && n == limit)
            break;              /* r == 1: there is more */
        /* Grow as ARRAY_PUSH does: capacity doubles at powers of two. */
        if (n == 0 || (n >= 4 && (n & (n - 1)) == 0))
            items = xrealloc(items, (n < 4 ? 4 : n * 2) * t->size);
        void *item = items + n * t->size;
        memset(item, 0, t->size);
        row_read(t, st, item);
        n++;
    }
    if (r < 0) {
        row_list_free(t, items, n);
        return r;
    }
    memcpy(ret_items, &items, sizeof(items));
    *ret_n = n;
    return r;
}

int row_stmt(struct catalog *cat, const char *sql, const char *a, const char *b,
             const char *c, sqlite3_stmt **ret)
{
    int r = cat_stmt(cat, sql, ret);
    if (r < 0)
        return r;
    const char *keys[] = { a, b, c };
    int n = sqlite3_bind_parameter_count(*ret);
    for (int i = 0; i < 3 && i < n; i++)
        bind_text(*ret, i + 1, keys[i]);
    return 0;
}

int row_query(struct catalog *cat, const char *sql, const struct row_type *t,
              const char *a, const char *b, const char *c, void *ret)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = row_stmt(cat, sql, a, b, c, &st);
    return r < 0 ? r : row_get(cat, st, t, ret);
}

int row_query_text(struct catalog *cat, const char *sql, const char *a, const char *b,
                   const char *c, char **ret)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = row_stmt(cat, sql, a, b, c, &st);
    if (r < 0)
        return r;
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    *ret = col_str(st, 0);
    return 0;
}

int row_query_all(struct catalog *cat, const char *sql, const struct row_type *t,
                  const char *a, const char *b, void *ret_items, size_t *ret_n)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = row_stmt(cat, sql, a, b, NULL, &st);
    return r < 0 ? r : row_list(cat, st, t, 0, ret_items, ret_n);
}

int row_change(struct catalog *cat, const char *sql, const char *a, const char *b, const char *c,
               const char *fmt, ...)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = row_stmt(cat, sql, a, b, c, &st);
    if (r < 0)
        return r;
    va_list ap;
    va_start(ap, fmt);
    r = cat_vstep_one(cat, st, fmt, ap);
    va_end(ap);
    return r;
}

int row_insert(struct catalog *cat, const char *sql, const struct row_type *t, const void *item)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    row_bind(t, st, item);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}
