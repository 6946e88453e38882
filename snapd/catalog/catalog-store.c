/* catalog-store.c: the snapshot store's facts per snapshot (snapshot_store
 * table): its manifest in the pool's local object store, whether its
 * subvolume is resident, and its exact changed extents against its parent.
 *
 * A snapshot without a row is resident, unstored and without extents, so
 * every snapshot made before the store existed (or with --store-off) needs
 * no row. The extents are a blob of little-endian (offset, length) u64
 * pairs: one read per diff step, whatever the number of ranges.
 *
 * Tombstones (snapshot_tombstones) keep a deleted snapshot's place in its
 * volume's chain: its id, volume, creation time and exact extents against
 * the chain's previous member, so a delta from it is exact. Its child then
 * keeps its own extents against the tombstone (own_extents), while extents
 * stays against the live parent (what the mover exports against). The
 * trigger snapshots_tombstones_collect drops a tombstone once no later
 * snapshot of its volume remains. */
#include <endian.h>
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

#define INFO_COLS "s.id, s.volume_id, x.manifest, coalesce(x.resident, 1), x.extents IS NOT NULL, " \
                  "x.own_extents IS NOT NULL"

static const struct col info_cols[] = {
    COL_STR(struct cat_store_info, snapshot_id),
    COL_STR(struct cat_store_info, volume_id),
    COL_STR(struct cat_store_info, manifest),
    COL_BOOL(struct cat_store_info, resident),
    COL_BOOL(struct cat_store_info, has_extents),
    COL_BOOL(struct cat_store_info, has_own_extents),
};
static const struct row_type info_row = ROW_TYPE(struct cat_store_info, info_cols);

void cat_store_info_clear(struct cat_store_info *i)
{
    if (i)
        row_clear(&info_row, i);
}

/* The first row of sql (?1 = id) read as t into *ret (a t->size struct);
 * -ENOENT without a message when there is none. */
static int get_one(struct catalog *cat, const char *sql, const struct row_type *t, const char *id,
                   void *ret)
{
    if (!id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    void *item;
    int r = row_query(cat, sql, t, id, NULL, NULL, &item);
    if (r < 0)
        return r;
    memcpy(ret, item, t->size);
    free(item);
    return 0;
}

int cat_store_get(struct catalog *cat, const char *snapshot_id, struct cat_store_info *ret)
{
    static const char sql[] = "SELECT " INFO_COLS " FROM snapshots s "
                              "LEFT JOIN snapshot_store x ON x.snapshot_id = s.id WHERE s.id = ?1";
    int r = get_one(cat, sql, &info_row, snapshot_id, ret);
    return r == -ENOENT ? cat_err(r, "no snapshot %s", snapshot_id) : r;
}

/* Make sure the snapshot has a row (with the defaults). */
static int ensure_row(struct catalog *cat, const char *id)
{
    static const char sql[] = "INSERT OR IGNORE INTO snapshot_store (snapshot_id) "
                              "SELECT id FROM snapshots WHERE id = ?1";
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

/* Run an UPDATE of the snapshot's row (made first) with ?1 = id. */
static int update_row(struct catalog *cat, const char *sql, const char *id,
                      void (*bind)(sqlite3_stmt *st, const void *data), const void *data)
{
    if (!id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    int r = ensure_row(cat, id);
    if (r < 0)
        return r;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    bind(st, data);
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no snapshot %s", id);
    return r < 0 ? r : 0;
}

static void bind_manifest(sqlite3_stmt *st, const void *data)
{
    bind_text(st, 2, data);
}

int cat_store_set_manifest(struct catalog *cat, const char *snapshot_id, const char *manifest)
{
    static const char sql[] = "UPDATE snapshot_store SET manifest = ?2 WHERE snapshot_id = ?1";
    if (manifest && strlen(manifest) > 128)
        return cat_err(-EINVAL, "manifest id too long");
    return update_row(cat, sql, snapshot_id, bind_manifest, manifest);
}

static void bind_bool(sqlite3_stmt *st, const void *data)
{
    sqlite3_bind_int(st, 2, *(const bool *)data);
}

int cat_store_set_resident(struct catalog *cat, const char *snapshot_id, bool resident)
{
    static const char sql[] = "UPDATE snapshot_store SET resident = ?2 WHERE snapshot_id = ?1";
    return update_row(cat, sql, snapshot_id, bind_bool, &resident);
}

struct blob {
    const void *p;
    size_t n;
};

static void bind_blob(sqlite3_stmt *st, const void *data)
{
    const struct blob *b = data;
    sqlite3_bind_blob64(st, 2, b->n ? b->p : "", b->n, SQLITE_STATIC);
}

/* The ranges as a blob of little-endian u64 pairs (free *ret). */
static int encode(const struct cat_range *v, size_t n, uint64_t **ret)
{
    if (n > (SIZE_MAX / 16))
        return cat_err(-EINVAL, "too many extents");
    uint64_t *enc = xmalloc(n ? n * 16 : 1);
    for (size_t i = 0; i < n; i++) {
        enc[2 * i] = htole64(v[i].off);
        enc[2 * i + 1] = htole64(v[i].len);
    }
    *ret = enc;
    return 0;
}

static int set_ranges(struct catalog *cat, const char *sql, const char *snapshot_id,
                      const struct cat_range *v, size_t n)
{
    _cleanup_free_ uint64_t *enc = NULL;
    int r = encode(v, n, &enc);
    if (r < 0)
        return r;
    struct blob b = { enc, n * 16 };
    return update_row(cat, sql, snapshot_id, bind_blob, &b);
}

int cat_store_set_extents(struct catalog *cat, const char *snapshot_id,
                          const struct cat_range *v, size_t n)
{
    static const char sql[] = "UPDATE snapshot_store SET extents = ?2 WHERE snapshot_id = ?1";
    return set_ranges(cat, sql, snapshot_id, v, n);
}

int cat_store_set_own_extents(struct catalog *cat, const char *snapshot_id,
                              const struct cat_range *v, size_t n)
{
    static const char sql[] = "UPDATE snapshot_store SET own_extents = ?2 WHERE snapshot_id = ?1";
    return set_ranges(cat, sql, snapshot_id, v, n);
}

/* The blob column of the first row of sql (?1 = id) as ranges; -ENOENT
 * when there is no row or the value is NULL. */
static int get_ranges(struct catalog *cat, const char *sql, const char *id, struct cat_range **ret,
                      size_t *ret_n)
{
    if (!id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = row_stmt(cat, sql, id, NULL, NULL, &st);
    if (r < 0)
        return r;
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    if (sqlite3_column_type(st, 0) == SQLITE_NULL)
        return -ENOENT;
    const uint8_t *p = sqlite3_column_blob(st, 0);
    size_t len = (size_t)sqlite3_column_bytes(st, 0);
    if (len % 16)
        return cat_err(-EIO, "snapshot %s: corrupt extents (%zu bytes)", id, len);
    size_t n = len / 16;
    struct cat_range *v = n ? xmalloc(n * sizeof *v) : NULL;
    for (size_t i = 0; i < n; i++) {
        uint64_t a, b;
        memcpy(&a, p + 16 * i, 8);
        memcpy(&b, p + 16 * i + 8, 8);
        v[i] = (struct cat_range){ le64toh(a), le64toh(b) };
    }
    *ret = v;
    *ret_n = n;
    return 0;
}

int cat_store_get_extents(struct catalog *cat, const char *snapshot_id,
                          struct cat_range **ret, size_t *ret_n)
{
    static const char sql[] = "SELECT extents FROM snapshot_store WHERE snapshot_id = ?1";
    return get_ranges(cat, sql, snapshot_id, ret, ret_n);
}

int cat_store_get_own_extents(struct catalog *cat, const char *snapshot_id,
                              struct cat_range **ret, size_t *ret_n)
{
    static const char sql[] = "SELECT coalesce(own_extents, extents) FROM snapshot_store "
                              "WHERE snapshot_id = ?1";
    return get_ranges(cat, sql, snapshot_id, ret, ret_n);
}

/* Collect the first text column of every row into a NULL-terminated array. */
static int collect_ids(struct catalog *cat, sqlite3_stmt *st, char ***ret)
{
    char **v = NULL;
    size_t n = 0;
    int r;
    while ((r = cat_step_row(cat, st)) > 0) {
        v = xrealloc(v, (n + 2) * sizeof *v);
        v[n++] = col_str(st, 0);
        v[n] = NULL;
    }
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            free(v[i]);
        free(v);
        return r;
    }
    if (!v)
        v = xcalloc(1, sizeof *v);
    *ret = v;
    return 0;
}

int cat_store_backlog(struct catalog *cat, size_t limit, char ***ret_ids)
{
    static const char sql[] =
        "SELECT s.id FROM snapshots s LEFT JOIN snapshot_store x ON x.snapshot_id = s.id "
        "WHERE s.state = 'ready' AND x.manifest IS NULL ORDER BY s.created_ns, s.id LIMIT ?1";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    sqlite3_bind_int64(st, 1, limit ? (sqlite3_int64)limit : -1);
    return collect_ids(cat, st, ret_ids);
}

int cat_store_droppable(struct catalog *cat, uint32_t keep, char ***ret_ids)
{
    /* Resident stored rows are few (at most keep+1 per volume plus what is
     * cached for a reader), so the subqueries run a handful of times. */
    static const char sql[] =
        "SELECT s.id FROM snapshot_store x JOIN snapshots s ON s.id = x.snapshot_id "
        "WHERE x.resident = 1 AND x.manifest IS NOT NULL AND s.state = 'ready' "
        "AND EXISTS (SELECT 1 FROM snapshots c JOIN snapshot_store cx ON cx.snapshot_id = c.id "
        "  WHERE c.parent_id = s.id AND cx.extents IS NOT NULL) "
        "AND (SELECT count(*) FROM snapshots n WHERE n.volume_id = s.volume_id AND n.state = 'ready' "
        "  AND (n.created_ns, n.id) > (s.created_ns, s.id)) >= ?1 "
        "ORDER BY s.created_ns, s.id";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    sqlite3_bind_int64(st, 1, keep);
    return collect_ids(cat, st, ret_ids);
}

int cat_store_list(struct catalog *cat, struct cat_store_info **ret, size_t *ret_n)
{
    static const char sql[] = "SELECT " INFO_COLS " FROM snapshot_store x "
                              "JOIN snapshots s ON s.id = x.snapshot_id ORDER BY s.created_ns, s.id";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &info_row, NULL, NULL, ret, ret_n);
}

int cat_store_counts(struct catalog *cat, uint64_t *ret_resident, uint64_t *ret_stored,
                     uint64_t *ret_backlog)
{
    static const char sql[] =
        "SELECT coalesce(sum(coalesce(x.resident, 1)), 0), count(x.manifest), "
        "coalesce(sum(s.state = 'ready' AND x.manifest IS NULL), 0) "
        "FROM snapshots s LEFT JOIN snapshot_store x ON x.snapshot_id = s.id";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : cat_err(-EIO, "count returned nothing");
    *ret_resident = col_u64(st, 0);
    *ret_stored = col_u64(st, 1);
    *ret_backlog = col_u64(st, 2);
    return 0;
}

int cat_store_nearest_resident(struct catalog *cat, const char *volume_id, uint64_t created_ns,
                               const char *except_id, char **ret_id)
{
    static const char sql[] =
        "SELECT s.id FROM snapshots s LEFT JOIN snapshot_store x ON x.snapshot_id = s.id "
        "WHERE s.volume_id = ?1 AND s.state = 'ready' AND coalesce(x.resident, 1) = 1 "
        "AND s.id != ?3 ORDER BY abs(s.created_ns - ?2), s.created_ns DESC LIMIT 1";
    if (!volume_id || !except_id)
        return cat_err(-EINVAL, "no volume or snapshot id");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, volume_id);
    bind_u64(st, 2, created_ns);
    bind_text(st, 3, except_id);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    *ret_id = col_str(st, 0);
    return 0;
}

int cat_store_child(struct catalog *cat, const char *snapshot_id, char **ret_id)
{
    static const char sql[] = "SELECT id FROM snapshots WHERE parent_id = ?1 "
                              "ORDER BY created_ns, id LIMIT 1";
    if (!snapshot_id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    return row_query_text(cat, sql, snapshot_id, NULL, NULL, ret_id);
}

/* --- tombstones ------------------------------------------------------------------ */

#define TOMB_COLS "id, volume_id, created_ns, size_bytes, extents IS NOT NULL"

static const struct col tomb_cols[] = {
    COL_STR(struct cat_tombstone, id),
    COL_STR(struct cat_tombstone, volume_id),
    COL_U64(struct cat_tombstone, created_ns),
    COL_U64(struct cat_tombstone, size_bytes),
    COL_BOOL(struct cat_tombstone, has_extents),
};
static const struct row_type tomb_row = ROW_TYPE(struct cat_tombstone, tomb_cols);

void cat_tombstone_clear(struct cat_tombstone *t)
{
    if (t)
        row_clear(&tomb_row, t);
}

void cat_tombstone_list_free(struct cat_tombstone *v, size_t n)
{
    if (v)
        row_list_free(&tomb_row, v, n);
}

int cat_tombstone_put(struct catalog *cat, const struct cat_tombstone *t,
                      const struct cat_range *v, size_t n)
{
    static const char sql[] = "INSERT OR REPLACE INTO snapshot_tombstones "
                              "(id, volume_id, created_ns, size_bytes, extents) "
                              "VALUES (?1, ?2, ?3, ?4, ?5)";
    if (!t->id || !t->volume_id)
        return cat_err(-EINVAL, "no snapshot or volume id");
    _cleanup_free_ uint64_t *enc = NULL;
    int r;
    if (v && (r = encode(v, n, &enc)) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, t->id);
    bind_text(st, 2, t->volume_id);
    bind_u64(st, 3, t->created_ns);
    bind_u64(st, 4, t->size_bytes);
    if (v)
        sqlite3_bind_blob64(st, 5, n ? (const void *)enc : "", n * 16, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 5);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

int cat_tombstone_get(struct catalog *cat, const char *id, struct cat_tombstone *ret)
{
    static const char sql[] = "SELECT " TOMB_COLS " FROM snapshot_tombstones WHERE id = ?1";
    return get_one(cat, sql, &tomb_row, id, ret);
}

int cat_tombstone_get_extents(struct catalog *cat, const char *id, struct cat_range **ret,
                              size_t *ret_n)
{
    static const char sql[] = "SELECT extents FROM snapshot_tombstones WHERE id = ?1";
    return get_ranges(cat, sql, id, ret, ret_n);
}

int cat_tombstone_delete(struct catalog *cat, const char *id)
{
    static const char sql[] = "DELETE FROM snapshot_tombstones WHERE id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = row_stmt(cat, sql, id, NULL, NULL, &st);
    if (r < 0)
        return r;
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

int cat_tombstone_list(struct catalog *cat, const char *volume_id, struct cat_tombstone **ret,
                       size_t *ret_n)
{
    static const char sql[] = "SELECT " TOMB_COLS " FROM snapshot_tombstones WHERE volume_id = ?1 "
                              "ORDER BY created_ns, id";
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &tomb_row, volume_id, NULL, ret, ret_n);
}
