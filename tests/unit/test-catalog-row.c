/* test-catalog-row.c: the catalog's table-driven row code (catalog-row.c)
 * on a scratch table of a real catalog file: every column type read and
 * bound back, read-only columns skipped and binding stopped at the
 * statement's last parameter, unknown enum text, text defaults and "now"
 * for a zero time, one-row and list queries with and without a limit, the
 * keyed query helpers, and the not-found message of cat_step_one and
 * row_change. */
#include <stdbool.h>
#include <string.h>

#include "snapd/catalog/catalog-internal.h"
#include "tests/unit/check.h"

struct thing {
    char *name;
    uint64_t big;
    int64_t neg;
    uint32_t small;
    bool flag;
    enum color { RED, GREEN, _COLOR_INVALID = -1 } color;
    void *blob;
    size_t blob_len;
    char *shown;        /* read only: a subquery */
    char *note;         /* binds "none" when NULL */
};

static const char *const colors[] = { [RED] = "red", [GREEN] = "green" };

static const struct col thing_cols[] = {
    COL_STR(struct thing, name),
    COL_U64(struct thing, big, .flags = COL_NOW),
    COL_I64(struct thing, neg),
    COL_U32(struct thing, small),
    COL_BOOL(struct thing, flag),
    COL_ENUM(struct thing, color, colors, _COLOR_INVALID),
    COL_BLOB(struct thing, blob, blob_len),
    COL_STR(struct thing, shown, .flags = COL_NOBIND),
    COL_STR(struct thing, note, .dflt = "none"),
};
static const struct row_type thing_row = ROW_TYPE(struct thing, thing_cols);

#define THING_COLS "name, big, neg, small, flag, color, blob, upper(name), note"
static const char sql_insert[] = "INSERT INTO things (name, big, neg, small, flag, color, blob, note) "
                                 "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
static const char sql_rename[] = "UPDATE things SET name = ?1 WHERE name = 'a'";
static const char sql_all[] = "SELECT " THING_COLS " FROM things ORDER BY name";
static const char sql_one[] = "SELECT " THING_COLS " FROM things WHERE name = ?1";
static const char sql_touch[] = "UPDATE things SET small = small + 1 WHERE name = ?1";

static int exec_sql(struct catalog *cat, const char *sql)
{
    return sqlite3_exec(cat->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static void insert(struct catalog *cat, const struct thing *t)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    CHECK_EQ(cat_stmt(cat, sql_insert, &st), 0);
    row_bind(&thing_row, st, t);
    CHECK_EQ(cat_step_done(cat, st), 1);
}

int main(void)
{
    char dir[] = "/tmp/amber-test-catalog-row.XXXXXX";
    if (!mkdtemp(dir))
        SKIP("mkdtemp: %m");
    _cleanup_free_ char *path = xasprintf("%s/catalog.db", dir);
    struct catalog *cat = NULL;
    CHECK_EQ(cat_open(path, &cat), 0);
    if (!cat)
        return CHECK_DONE();
    CHECK_EQ(exec_sql(cat, "CREATE TEMP TABLE things (name TEXT, big INTEGER, neg INTEGER, "
                           "small INTEGER, flag INTEGER, color TEXT, blob BLOB, note TEXT)"), 0);

    uint64_t before = now_real_ns();
    struct thing a = { .name = "a", .big = 0, .neg = -5, .small = 4000000000u, .flag = true,
                       .color = GREEN, .blob = "\x01\x02\x03", .blob_len = 3, .shown = "ignored" };
    struct thing b = { .name = "b", .big = 1ULL << 62, .color = _COLOR_INVALID, .note = "hi" };
    insert(cat, &a);
    insert(cat, &b);
    CHECK_EQ(exec_sql(cat, "INSERT INTO things (name, color) VALUES ('c', 'mauve')"), 0);

    /* A list, whole and cut at a limit. */
    {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        CHECK_EQ(cat_stmt(cat, sql_all, &st), 0);
        struct thing *items = NULL;
        size_t n = 0;
        CHECK_EQ(row_list(cat, st, &thing_row, 0, &items, &n), 0);
        CHECK_EQ(n, 3);
        if (n == 3) {
            CHECK_STR(items[0].name, "a");
            CHECK(items[0].big >= before);          /* 0 bound as now */
            CHECK_EQ(items[0].neg, -5);
            CHECK_EQ(items[0].small, 4000000000u);
            CHECK(items[0].flag);
            CHECK_EQ(items[0].color, GREEN);
            CHECK_EQ(items[0].blob_len, 3);
            CHECK(items[0].blob && memcmp(items[0].blob, "\x01\x02\x03", 3) == 0);
            CHECK_STR(items[0].shown, "A");         /* read, never bound */
            CHECK_STR(items[0].note, "none");       /* NULL bound as the default */
            CHECK_EQ(items[1].big, 1ULL << 62);
            CHECK(!items[1].flag);
            CHECK(!items[1].blob && items[1].blob_len == 0);
            CHECK_EQ(items[1].color, _COLOR_INVALID);   /* NULL text */
            CHECK_STR(items[1].note, "hi");
            CHECK_EQ(items[2].color, _COLOR_INVALID);   /* text not in the table */
            CHECK(!items[2].note);
        }
        row_list_free(&thing_row, items, n);
    }
    {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        CHECK_EQ(cat_stmt(cat, sql_all, &st), 0);
        struct thing *items = NULL;
        size_t n = 0;
        CHECK_EQ(row_list(cat, st, &thing_row, 2, &items, &n), 1);     /* a row left */
        CHECK_EQ(n, 2);
        row_list_free(&thing_row, items, n);
        sqlite3_reset(st);
        CHECK_EQ(row_list(cat, st, &thing_row, 3, &items, &n), 0);     /* exactly all */
        CHECK_EQ(n, 3);
        row_list_free(&thing_row, items, n);
    }

    /* One row, and none. */
    {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        CHECK_EQ(cat_stmt(cat, sql_one, &st), 0);
        bind_text(st, 1, "b");
        struct thing *t = NULL;
        CHECK_EQ(row_get(cat, st, &thing_row, &t), 0);
        CHECK(t && strcmp(t->name, "b") == 0);
        row_free(&thing_row, t);
        row_free(&thing_row, NULL);
        sqlite3_reset(st);
        bind_text(st, 1, "zzz");
        t = NULL;
        CHECK_EQ(row_get(cat, st, &thing_row, &t), -ENOENT);
        CHECK(!t);
    }

    /* Binding stops at the statement's last parameter (?1 here). */
    {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        CHECK_EQ(cat_stmt(cat, sql_rename, &st), 0);
        struct thing r = { .name = "a2", .big = 1 };
        row_bind(&thing_row, st, &r);
        CHECK_EQ(cat_step_done(cat, st), 1);
    }

    /* cat_step_one: a row changed, none changed (with the message). */
    {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        CHECK_EQ(cat_stmt(cat, sql_touch, &st), 0);
        bind_text(st, 1, "a2");
        CHECK_EQ(cat_step_one(cat, st, "no thing %s", "a2"), 0);
        sqlite3_reset(st);
        bind_text(st, 1, "a");
        CHECK_EQ(cat_step_one(cat, st, "no thing %s", "a"), -ENOENT);
        CHECK_STR(cat_errmsg(cat), "no thing a");
    }

    /* The keyed helpers: ?1.. bound from the keys, as many as there are. */
    {
        struct thing *items = NULL, *t = NULL;
        size_t n = 0;
        CHECK_EQ(row_query_all(cat, sql_all, &thing_row, "unused", NULL, &items, &n), 0);
        CHECK_EQ(n, 3);
        row_list_free(&thing_row, items, n);
        CHECK_EQ(row_query(cat, sql_one, &thing_row, "c", "unused", NULL, &t), 0);
        CHECK(t && t->color == _COLOR_INVALID);
        row_free(&thing_row, t);
        CHECK_EQ(row_change(cat, sql_touch, "c", NULL, NULL, "no thing %s", "c"), 0);
        CHECK_EQ(row_change(cat, sql_touch, "zz", NULL, NULL, "no thing %s", "zz"), -ENOENT);
        CHECK_STR(cat_errmsg(cat), "no thing zz");
    }

    cat_close(cat);
    _cleanup_free_ char *cmd = xasprintf("rm -rf %s", dir);
    CHECK_EQ(system(cmd), 0);
    return CHECK_DONE();
}
