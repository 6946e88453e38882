/* catalog-internal.h: what catalog*.c share and nobody else sees: the
 * catalog object, its lock, the prepared-statement cache and the row/error
 * helpers. The public contract is in catalog.h. */
#ifndef AMBER_SNAPD_CATALOG_INTERNAL_H
#define AMBER_SNAPD_CATALOG_INTERNAL_H

#include <pthread.h>
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

#endif
