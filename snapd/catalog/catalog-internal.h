/* catalog-internal.h: what catalog*.c share and nobody else sees: the
 * catalog object, its lock, the prepared-statement cache and the row/error
 * helpers. The public contract is in catalog.h. */
#ifndef AMBER_SNAPD_CATALOG_INTERNAL_H
#define AMBER_SNAPD_CATALOG_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <sqlite3.h>

#include "amber/util.h"
#include "snapd/catalog/catalog.h"

struct stmt_slot {
    const char *sql;            /* key: the address of a static string */
    sqlite3_stmt *st;
};

struct catalog {
    sqlite3 *db;
    pthread_mutex_t lock;       /* recursive; see catalog.h "Threads" */
    unsigned tx_depth;          /* 0: no transaction; 1: BEGIN; >1: savepoints */
    struct stmt_slot *stmts;
    size_t n_stmts, cap_stmts;
};

/* Take the catalog's lock for the rest of the enclosing scope. Declare it
 * before any statement variable so the statements are reset before the lock
 * is released (cleanups run in reverse order of declaration). */
static inline void cat_unlockp(struct catalog **c)
{
    if (*c)
        pthread_mutex_unlock(&(*c)->lock);
}
static inline struct catalog *cat_lock(struct catalog *c)
{
    pthread_mutex_lock(&c->lock);
    return c;
}
#define CAT_LOCKED(cat) _cleanup_(cat_unlockp) struct catalog *cat_held_ = cat_lock(cat)

/* A cached statement for the static string `sql` (matched by address),
 * freshly reset. Call with the lock held; reset it at the end of the scope
 * with _cleanup_reset_. */
int cat_stmt(struct catalog *cat, const char *sql, sqlite3_stmt **ret);
static inline void stmt_resetp(sqlite3_stmt **st)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
    }
}
static inline void stmt_finalizep(sqlite3_stmt **st)
{
    sqlite3_finalize(*st);
}
#define _cleanup_reset_ _cleanup_(stmt_resetp)
#define _cleanup_finalize_ _cleanup_(stmt_finalizep)

/* Record the sqlite error `rc` (and the connection's message) as the
 * thread's cat_errmsg() and return it as a negative errno. */
int cat_sqlerr(struct catalog *cat, int rc);
/* Record a message of our own and return err. */
int cat_err(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cat_verr(int err, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));

/* Step an UPDATE or DELETE that must change a row: 0; -ENOENT with the
 * message fmt when it changed none; or the step's error. */
int cat_step_one(struct catalog *cat, sqlite3_stmt *st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int cat_vstep_one(struct catalog *cat, sqlite3_stmt *st, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* Step a statement that returns no rows; the number of rows changed, or a
 * negative errno. */
int cat_step_done(struct catalog *cat, sqlite3_stmt *st);
/* Step once: 1 a row, 0 no more rows, negative errno. */
int cat_step_row(struct catalog *cat, sqlite3_stmt *st);

/* Binding: NULL text binds SQL NULL; strings must outlive the step. */
static inline int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC) : sqlite3_bind_null(st, i);
}
static inline int bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
    return sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}
static inline char *col_str(sqlite3_stmt *st, int i)
{
    const unsigned char *s = sqlite3_column_text(st, i);
    return s ? xstrdup((const char *)s) : NULL;
}
static inline uint64_t col_u64(sqlite3_stmt *st, int i)
{
    return (uint64_t)sqlite3_column_int64(st, i);
}

/* -ERANGE unless v fits an sqlite INTEGER as a non-negative value. */
static inline int check_u64(uint64_t v, const char *what)
{
    return v > (uint64_t)INT64_MAX ? cat_err(-ERANGE, "%s out of range", what) : 0;
}
int check_uuid(const char *id, const char *what);
int check_text(const char *s, size_t max, bool nullable, const char *what);

/* Paging tokens are "CREATED_NS:ID" of the last row returned. */
int page_parse(const struct cat_page *p, uint64_t *ret_ns, const char **ret_id);
char *page_token(uint64_t created_ns, const char *id);
/* Clamp a page's limit: 0 -> CAT_LIST_LIMIT_MAX. */
uint32_t page_limit(const struct cat_page *p);

/* Append a zeroed item to a growable array (capacity implied by n: it
 * doubles at powers of two); evaluates to a pointer to the new item. */
#define ARRAY_PUSH(arr, n) ({                                                  \
    if ((n) == 0 || ((n) >= 4 && ((n) & ((n) - 1)) == 0))                      \
        (arr) = xrealloc((arr), ((n) < 4 ? 4 : (n) * 2) * sizeof(*(arr)));    \
    memset(&(arr)[n], 0, sizeof(*(arr)));                                      \
    &(arr)[(n)++];                                                             \
})

/* ---- rows (catalog-row.c) ---------------------------------------------------
 * A row type says how the columns of a table's *_COLS list, in order, map
 * onto the fields of its struct; one table then serves reading a row,
 * binding a struct as the parameters ?1, ?2, ... of an INSERT or UPDATE
 * written in the same order, freeing the struct, and reading one row or a
 * list of rows. What does not fit a column (a snapshot's labels) goes
 * through the read_more/clear_more hooks. */

enum col_type {
    COL_TEXT,       /* char *: col_str / bind_text */
    COL_U64,        /* uint64_t */
    COL_I64,        /* int64_t */
    COL_U32,        /* uint32_t, stored as an INTEGER */
    COL_BOOL,       /* bool, stored as 0/1 */
    COL_ENUM,       /* an int-sized enum stored as the text names[value] */
    COL_BLOB,       /* void * with its size_t length at len_off */
};
#define COL_NOW    (1u << 0)    /* bind: 0 binds now_real_ns() */
#define COL_NOBIND (1u << 1)    /* read only (a subquery): bind skips it */

struct col {
    enum col_type type;
    unsigned flags;
    size_t off;
    size_t len_off;             /* COL_BLOB: offset of the length */
    const char *const *names;   /* COL_ENUM: value -> text, n_names of them */
    int n_names;
    int invalid;                /* COL_ENUM: what text not in names reads as */
    const char *dflt;           /* COL_TEXT: what a NULL field binds as */
};

/* Column entries checked against the field's type at compile time. */
#define COL_IS_(T, f, ty) \
    (0 * sizeof(char[__builtin_types_compatible_p(__typeof__(((T *)0)->f), ty) ? 1 : -1]))
#define COL_STR(T, f, ...)  { .type = COL_TEXT, .off = offsetof(T, f) + COL_IS_(T, f, char *), __VA_ARGS__ }
#define COL_U64(T, f, ...)  { .type = COL_U64, .off = offsetof(T, f) + COL_IS_(T, f, uint64_t), __VA_ARGS__ }
#define COL_I64(T, f, ...)  { .type = COL_I64, .off = offsetof(T, f) + COL_IS_(T, f, int64_t), __VA_ARGS__ }
#define COL_U32(T, f, ...)  { .type = COL_U32, .off = offsetof(T, f) + COL_IS_(T, f, uint32_t), __VA_ARGS__ }
#define COL_BOOL(T, f, ...) { .type = COL_BOOL, .off = offsetof(T, f) + COL_IS_(T, f, bool), __VA_ARGS__ }
#define COL_ENUM(T, f, tab, inval)                                                   \
    { .type = COL_ENUM, .off = offsetof(T, f) + 0 * sizeof(char[sizeof(((T *)0)->f) == sizeof(int) ? 1 : -1]), \
      .names = (tab), .n_names = (int)ARRAY_SIZE(tab), .invalid = (inval) }
#define COL_BLOB(T, f, len)                                                          \
    { .type = COL_BLOB, .off = offsetof(T, f) + COL_IS_(T, f, void *),               \
      .len_off = offsetof(T, len) + COL_IS_(T, len, size_t) }

struct row_type {
    size_t size;                /* sizeof the struct */
    const struct col *cols;
    size_t n_cols;
    /* Optional: read the columns after the table's (from column n_cols
     * on), and free what that read. */
    void (*read_more)(sqlite3_stmt *st, int col, void *item);
    void (*clear_more)(void *item);
};
#define ROW_TYPE(T, columns, ...) \
    { .size = sizeof(T), .cols = (columns), .n_cols = ARRAY_SIZE(columns), __VA_ARGS__ }

/* The text of an enum value by its column's table, or NULL out of range. */
const char *col_enum_name(const struct col *c, int value);
/* The index of s in names[0..n), or `invalid`. */
int names_lookup(const char *const *names, int n, const char *s, int invalid);
/* Append " AND col IN (?n+1, ?n+2, ...)", a parameter a bit of states below
 * max (nothing when states is 0), and return the last parameter's number. */
int states_clause(struct buf *sql, const char *col, unsigned states, int max, int n);
/* Read the current row of st into item (zeroed, t->size bytes). */
void row_read(const struct row_type *t, sqlite3_stmt *st, void *item);
/* Bind item's fields as ?1, ?2, ... in column order (COL_NOBIND columns
 * skipped), up to the statement's highest parameter. */
void row_bind(const struct row_type *t, sqlite3_stmt *st, const void *item);
/* Free what item's fields own and zero it; row_free also frees item
 * (NULL is fine); row_list_free clears n items and frees the array. */
void row_clear(const struct row_type *t, void *item);
void row_free(const struct row_type *t, void *item);
void row_list_free(const struct row_type *t, void *items, size_t n);
/* Step st once and return its row as a new item in *ret (ret is a T **):
 * 0, -ENOENT without a message when there is no row (the caller words it),
 * or the step's error. */
int row_get(struct catalog *cat, sqlite3_stmt *st, const struct row_type *t, void *ret);
/* The cached statement sql with the text keys a, b, c bound as ?1, ?2, ?3
 * (as many as it has parameters; NULL binds NULL). */
int row_stmt(struct catalog *cat, const char *sql, const char *a, const char *b, const char *c,
             sqlite3_stmt **ret);
/* Run the cached query sql with the text keys a, b, c as ?1, ?2, ?3 (as
 * many as it has; NULL binds NULL) and return its first row as row_get. */
int row_query(struct catalog *cat, const char *sql, const struct row_type *t,
              const char *a, const char *b, const char *c, void *ret);
/* The same for a query of one text column: its first row's value in *ret,
 * -ENOENT without a message when there is no row, or the step's error. */
int row_query_text(struct catalog *cat, const char *sql, const char *a, const char *b,
                   const char *c, char **ret);
/* Every row of the cached query sql with the text keys a, b as ?1, ?2 (as
 * many as it has), into a new array as row_list with no limit. */
int row_query_all(struct catalog *cat, const char *sql, const struct row_type *t,
                  const char *a, const char *b, void *ret_items, size_t *ret_n);
/* Run the cached UPDATE or DELETE sql with the text keys a, b, c as ?1, ?2,
 * ?3 (as many as it has): 0 when it changed a row; -ENOENT with the
 * message fmt when it changed none; or the step's error. */
int row_change(struct catalog *cat, const char *sql, const char *a, const char *b, const char *c,
               const char *fmt, ...) __attribute__((format(printf, 6, 7)));
/* Run the cached INSERT (or upsert) sql with item bound as row_bind does:
 * 0; -EEXIST (a unique key) or -ENOENT (a foreign key) for the caller to
 * word; or the step's error. Call with the lock held. */
int row_insert(struct catalog *cat, const char *sql, const struct row_type *t, const void *item);
/* Read the rows of st, at most `limit` (0: all), into a new array: *ret_items
 * (ret_items is a T **) and *ret_n. 1 when it stopped at the limit with a
 * row left, 0 at the end; on an error nothing is returned. */
int row_list(struct catalog *cat, sqlite3_stmt *st, const struct row_type *t, size_t limit,
             void *ret_items, size_t *ret_n);

#endif
