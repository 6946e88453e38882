/* catalog-snapshot.c: snapshots, their labels, and the retention question.
 *
 * Labels live in their own table indexed by (key, value, snapshot_id), so a
 * filter `run=R` walks only the matching index entries however many
 * snapshots the pool holds; several terms are ANDed as IN-subqueries over
 * that index. A listed snapshot carries its labels, fetched in the same
 * query as one group_concat string joined with the ASCII unit and record
 * separators (0x1f, 0x1e), which labels may not contain: one round trip for
 * any number of snapshots instead of a query per row.
 *
 * The parent chain is kept linked by a trigger: deleting a snapshot hands
 * its parent to its children. */
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

static const char *const snap_states[_CAT_SNAP_STATE_MAX] = {
    [CAT_SNAP_CREATING] = "creating",
    [CAT_SNAP_READY] = "ready",
    [CAT_SNAP_DELETING] = "deleting",
};

const char *cat_snap_state_to_string(enum cat_snap_state s)
{
    return s >= 0 && s < _CAT_SNAP_STATE_MAX ? snap_states[s] : NULL;
}


/* ---- labels ---------------------------------------------------------------- */

static bool has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

int cat_label_validate(const char *key, const char *value)
{
    if (!key || !*key || strlen(key) > CAT_LABEL_KEY_MAX || strchr(key, '=') || has_control(key))
        return cat_err(-EINVAL, "invalid label key \"%s\"", key ? key : "");
    if (!value || strlen(value) > CAT_LABEL_VALUE_MAX || has_control(value))
        return cat_err(-EINVAL, "invalid value for label %s", key);
    return 0;
}

int cat_label_parse(const char *kv, struct cat_label *ret)
{
    const char *eq = kv ? strchr(kv, '=') : NULL;
    if (!eq)
        return cat_err(-EINVAL, "label \"%s\" is not KEY=VALUE", kv ? kv : "");
    _cleanup_free_ char *key = strndup(kv, (size_t)(eq - kv));
    if (!key)
        return cat_err(-ENOMEM, "out of memory");
    int r = cat_label_validate(key, eq + 1);
    if (r < 0)
        return r;
    ret->key = TAKE_PTR(key);
    ret->value = xstrdup(eq + 1);
    return 0;
}

void cat_label_clear(struct cat_label *l)
{
    if (!l)
        return;
    free(l->key);
    free(l->value);
    l->key = l->value = NULL;
}

static int label_cmp(const void *a, const void *b)
{
    return strcmp(((const struct cat_label *)a)->key, ((const struct cat_label *)b)->key);
}

/* Parse "k\x1fv\x1ek\x1fv" into s->labels, sorted by key. */
static void parse_labels(const char *packed, struct cat_snapshot *s)
{
    if (!packed || !*packed)
        return;
    const char *p = packed;
    for (;;) {
        const char *end = strchr(p, '\x1e');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        const char *sep = memchr(p, '\x1f', len);
        if (sep) {
            struct cat_label *l = ARRAY_PUSH(s->labels, s->n_labels);
            l->key = strndup(p, (size_t)(sep - p));
            l->value = strndup(sep + 1, len - (size_t)(sep - p) - 1);
            if (!l->key || !l->value)
                abort();    /* OOM, as xmalloc */
        }
        if (!end)
            break;
        p = end + 1;
    }
    qsort(s->labels, s->n_labels, sizeof(*s->labels), label_cmp);
}

static int insert_labels(struct catalog *cat, const char *id, const struct cat_label *labels, size_t n)
{
    static const char sql[] = "INSERT INTO snapshot_labels (snapshot_id, key, value) VALUES (?1, ?2, ?3)";
    for (size_t i = 0; i < n; i++) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r = cat_stmt(cat, sql, &st);
        if (r < 0)
            return r;
        bind_text(st, 1, id);
        bind_text(st, 2, labels[i].key);
        bind_text(st, 3, labels[i].value);
        r = cat_step_done(cat, st);
        if (r == -EEXIST)
            return cat_err(-EINVAL, "label %s given twice", labels[i].key);
        if (r == -ENOENT)
            return cat_err(r, "no snapshot %s", id);
        if (r < 0)
            return r;
    }
    return 0;
}

static int validate_labels(const struct cat_label *labels, size_t n)
{
    if (n > CAT_LABELS_MAX)
        return cat_err(-EINVAL, "more than %d labels", CAT_LABELS_MAX);
    if (n && !labels)
        return cat_err(-EINVAL, "no labels");
    for (size_t i = 0; i < n; i++) {
        int r = cat_label_validate(labels[i].key, labels[i].value);
        if (r < 0)
            return r;
    }
    return 0;
}

/* ---- snapshots ------------------------------------------------------------- */

#define SNAP_COLS                                                                           \
    "s.id, s.volume_id, (SELECT v.name FROM volumes v WHERE v.id = s.volume_id), s.name, "  \
    "s.parent_id, s.created_ns, s.size_bytes, s.generation, s.state, s.origin, "            \
    "s.k8s_namespace, s.k8s_name, "                                                         \
    "(SELECT group_concat(l.key || char(31) || l.value, char(30)) FROM snapshot_labels l "  \
    "WHERE l.snapshot_id = s.id)"

static void read_labels(sqlite3_stmt *st, int col, void *item)
{
    parse_labels((const char *)sqlite3_column_text(st, col), item);
}

static void clear_labels(void *item)
{
    struct cat_snapshot *s = item;
    for (size_t i = 0; i < s->n_labels; i++)
        cat_label_clear(&s->labels[i]);
    free(s->labels);
}

/* SNAP_COLS without the volume name (a subquery) is the INSERT's column
 * order; the labels, the last column, are read by read_labels. */
static const struct col snapshot_cols[] = {
    COL_STR(struct cat_snapshot, id),
    COL_STR(struct cat_snapshot, volume_id),
    COL_STR(struct cat_snapshot, volume_name, .flags = COL_NOBIND),
    COL_STR(struct cat_snapshot, name),
    COL_STR(struct cat_snapshot, parent_id),
    COL_U64(struct cat_snapshot, created_ns, .flags = COL_NOW),
    COL_U64(struct cat_snapshot, size_bytes),
    COL_U64(struct cat_snapshot, generation),
    COL_ENUM(struct cat_snapshot, state, snap_states, _CAT_SNAP_STATE_INVALID),
    COL_STR(struct cat_snapshot, origin, .dflt = "local"),
    COL_STR(struct cat_snapshot, k8s_namespace),
    COL_STR(struct cat_snapshot, k8s_name),
};
static const struct row_type snapshot_row =
    ROW_TYPE(struct cat_snapshot, snapshot_cols, .read_more = read_labels, .clear_more = clear_labels);

enum cat_snap_state cat_snap_state_from_string(const char *s)
{
    return (enum cat_snap_state)names_lookup(snap_states, _CAT_SNAP_STATE_MAX, s,
                                             _CAT_SNAP_STATE_INVALID);
}

void cat_snapshot_free(struct cat_snapshot *s)
{
    row_free(&snapshot_row, s);
}

void cat_snapshot_list_free(struct cat_snapshot_list *l)
{
    if (!l)
        return;
    row_list_free(&snapshot_row, l->items, l->n);
    free(l->next);
    memset(l, 0, sizeof(*l));
}

static int validate_snapshot(const struct cat_snapshot *s)
{
    int r;
    if (!s->name || name_validate(s->name) < 0)
        return cat_err(-EINVAL, "invalid snapshot name \"%s\"", s->name ? s->name : "");
    if (!cat_snap_state_to_string(s->state))
        return cat_err(-EINVAL, "invalid snapshot state %d", (int)s->state);
    if (s->parent_id && (r = check_uuid(s->parent_id, "parent_id")) < 0)
        return r;
    if (s->origin && strcmp(s->origin, "local") != 0 && name_validate(s->origin) < 0)
        return cat_err(-EINVAL, "invalid origin \"%s\"", s->origin);
    if ((r = check_u64(s->size_bytes, "size_bytes")) < 0 ||
        (r = check_u64(s->generation, "generation")) < 0 ||
        (r = check_u64(s->created_ns, "created_ns")) < 0 ||
        (r = check_text(s->k8s_namespace, 253, true, "k8s_namespace")) < 0 ||
        (r = check_text(s->k8s_name, 253, true, "k8s_name")) < 0)
        return r;
    return 0;
}

static int snapshot_add_tx(struct catalog *cat, void *data)
{
    static const char sql[] =
        "INSERT INTO snapshots (id, volume_id, name, parent_id, created_ns, size_bytes, "
        "generation, state, origin, k8s_namespace, k8s_name) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    const struct cat_snapshot *s = data;
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    row_bind(&snapshot_row, st, s);
    r = cat_step_done(cat, st);
    if (r == -EEXIST)
        return cat_err(r, "snapshot %s exists (id %s)", s->name, s->id);
    if (r < 0)
        return r;
    return insert_labels(cat, s->id, s->labels, s->n_labels);
}

int cat_snapshot_add(struct catalog *cat, const struct cat_snapshot *s)
{
    int r;
    if (!s)
        return cat_err(-EINVAL, "no snapshot");
    if ((r = check_uuid(s->id, "snapshot id")) < 0 ||
        (r = check_uuid(s->volume_id, "volume id")) < 0 ||
        (r = validate_snapshot(s)) < 0 ||
        (r = validate_labels(s->labels, s->n_labels)) < 0)
        return r;
    return cat_tx(cat, snapshot_add_tx, (void *)s);
}

int cat_snapshot_update(struct catalog *cat, const struct cat_snapshot *s)
{
    /* Numbered as the INSERT (row_bind); volume_id and created_ns stay. */
    static const char sql[] =
        "UPDATE snapshots SET name = ?3, parent_id = ?4, size_bytes = ?6, generation = ?7, "
        "state = ?8, origin = ?9, k8s_namespace = ?10, k8s_name = ?11 WHERE id = ?1";
    int r;
    if (!s || !s->id)
        return cat_err(-EINVAL, "no snapshot");
    if ((r = validate_snapshot(s)) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    row_bind(&snapshot_row, st, s);
    r = cat_step_one(cat, st, "no snapshot %s", s->id);
    return r == -EEXIST ? cat_err(r, "the volume has a snapshot named %s", s->name) : r;
}

int cat_snapshot_set_state(struct catalog *cat, const char *id, enum cat_snap_state state)
{
    static const char sql[] = "UPDATE snapshots SET state = ?2 WHERE id = ?1";
    const char *s = cat_snap_state_to_string(state);
    if (!id || !s)
        return cat_err(-EINVAL, "invalid snapshot or state");
    CAT_LOCKED(cat);
    return row_change(cat, sql, id, s, NULL, "no snapshot %s", id);
}

struct set_labels_args {
    const char *id;
    const struct cat_label *labels;
    size_t n;
};

static int set_labels_tx(struct catalog *cat, void *data)
{
    static const char del[] = "DELETE FROM snapshot_labels WHERE snapshot_id = ?1";
    static const char exists[] = "SELECT 1 FROM snapshots WHERE id = ?1";
    const struct set_labels_args *a = data;
    {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r = cat_stmt(cat, exists, &st);
        if (r < 0)
            return r;
        bind_text(st, 1, a->id);
        r = cat_step_row(cat, st);
        if (r <= 0)
            return r < 0 ? r : cat_err(-ENOENT, "no snapshot %s", a->id);
    }
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, del, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, a->id);
    r = cat_step_done(cat, st);
    if (r < 0)
        return r;
    return insert_labels(cat, a->id, a->labels, a->n);
}

int cat_snapshot_set_labels(struct catalog *cat, const char *id,
                            const struct cat_label *labels, size_t n)
{
    if (!id)
        return cat_err(-EINVAL, "no snapshot");
    int r = validate_labels(labels, n);
    if (r < 0)
        return r;
    struct set_labels_args a = { id, labels, n };
    return cat_tx(cat, set_labels_tx, &a);
}

int cat_snapshot_delete(struct catalog *cat, const char *id)
{
    static const char sql[] = "DELETE FROM snapshots WHERE id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no snapshot");
    CAT_LOCKED(cat);
    return row_change(cat, sql, id, NULL, NULL, "no snapshot %s", id);
}

/* Run a cached query with up to two text parameters; the first row in *ret,
 * -ENOENT if none, -ENOTUNIQ if `unique` and there is a second. */
static int snapshot_query1(struct catalog *cat, const char *sql, const char *a, const char *b,
                           bool unique, struct cat_snapshot **ret)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    struct cat_snapshot *s = NULL;
    if ((r = row_get(cat, st, &snapshot_row, &s)) < 0)
        return r;
    if (unique) {
        r = cat_step_row(cat, st);
        if (r != 0) {
            cat_snapshot_free(s);
            return r < 0 ? r : cat_err(-ENOTUNIQ, "several volumes have a snapshot named %s", a);
        }
    }
    *ret = s;
    return 0;
}

int cat_snapshot_get(struct catalog *cat, const char *id, struct cat_snapshot **ret)
{
    static const char sql[] = "SELECT " SNAP_COLS " FROM snapshots s WHERE s.id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    int r = snapshot_query1(cat, sql, id, NULL, false, ret);
    return r == -ENOENT ? cat_err(r, "no snapshot %s", id) : r;
}

int cat_snapshot_find(struct catalog *cat, const char *volume_id, const char *ref,
                      struct cat_snapshot **ret)
{
    static const char by_id[] = "SELECT " SNAP_COLS " FROM snapshots s WHERE s.id = ?1";
    static const char by_vol_name[] = "SELECT " SNAP_COLS " FROM snapshots s "
                                      "WHERE s.volume_id = ?2 AND s.name = ?1";
    static const char by_name[] = "SELECT " SNAP_COLS " FROM snapshots s WHERE s.name = ?1 LIMIT 2";
    if (!ref || !*ref)
        return cat_err(-EINVAL, "no snapshot reference");

    const char *at = strrchr(ref, '@');
    if (at) {
        _cleanup_free_ char *volref = strndup(ref, (size_t)(at - ref));
        struct cat_volume *v = NULL;
        if (!volref)
            return cat_err(-ENOMEM, "out of memory");
        int r = cat_volume_find(cat, volref, &v);
        if (r < 0)
            return r;
        if (volume_id && strcmp(volume_id, v->id) != 0) {
            cat_volume_free(v);
            return cat_err(-ENOENT, "no snapshot %s", ref);
        }
        CAT_LOCKED(cat);
        r = snapshot_query1(cat, by_vol_name, at + 1, v->id, false, ret);
        cat_volume_free(v);
        return r == -ENOENT ? cat_err(r, "no snapshot %s", ref) : r;
    }

    CAT_LOCKED(cat);
    int r = -ENOENT;
    if (uuid_is_valid(ref)) {
        r = snapshot_query1(cat, by_id, ref, NULL, false, ret);
        if (r == 0 && volume_id && strcmp((*ret)->volume_id, volume_id) != 0) {
            cat_snapshot_free(*ret);
            *ret = NULL;
            r = -ENOENT;
        }
    }
    if (r == -ENOENT)
        r = volume_id ? snapshot_query1(cat, by_vol_name, ref, volume_id, false, ret)
                      : snapshot_query1(cat, by_name, ref, NULL, true, ret);
    return r == -ENOENT ? cat_err(r, "no snapshot %s", ref) : r;
}

int cat_snapshot_latest(struct catalog *cat, const char *volume_id, struct cat_snapshot **ret)
{
    static const char sql[] = "SELECT " SNAP_COLS " FROM snapshots s "
                              "WHERE s.volume_id = ?1 AND s.state = 'ready' "
                              "ORDER BY s.created_ns DESC, s.id DESC LIMIT 1";
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    int r = snapshot_query1(cat, sql, volume_id, NULL, false, ret);
    return r == -ENOENT ? cat_err(r, "volume %s has no snapshot", volume_id) : r;
}

int cat_snapshot_count(struct catalog *cat, const char *volume_id, uint64_t *ret)
{
    /* Two statements, so the per-volume count keeps using its index. */
    static const char sql_vol[] = "SELECT count(*) FROM snapshots WHERE volume_id = ?1";
    static const char sql_all[] = "SELECT count(*) FROM snapshots";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, volume_id ? sql_vol : sql_all, &st);
    if (r < 0)
        return r;
    if (volume_id)
        bind_text(st, 1, volume_id);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : cat_err(-EIO, "count returned nothing");
    *ret = col_u64(st, 0);
    return 0;
}

/* The label term matching the fewest snapshots (counted up to a cap, so
 * this stays cheap whatever the pool holds). */
static int pick_driver(struct catalog *cat, const struct cat_label *labels, size_t n, size_t *ret)
{
    static const char sql[] = "SELECT count(*) FROM (SELECT 1 FROM snapshot_labels "
                              "WHERE key = ?1 AND value = ?2 LIMIT 2000)";
    int64_t best = INT64_MAX;
    for (size_t i = 0; i < n; i++) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r = cat_stmt(cat, sql, &st);
        if (r < 0)
            return r;
        bind_text(st, 1, labels[i].key);
        bind_text(st, 2, labels[i].value);
        r = cat_step_row(cat, st);
        if (r <= 0)
            return r < 0 ? r : cat_err(-EIO, "count returned nothing");
        int64_t c = sqlite3_column_int64(st, 0);
        if (c < best) {
            best = c;
            *ret = i;
        }
    }
    return 0;
}

int cat_snapshot_list(struct catalog *cat, const struct cat_snapshot_filter *f,
                      const struct cat_page *page, struct cat_snapshot_list *ret)
{
    struct cat_snapshot_filter none = {};
    uint64_t after_ns = 0;
    const char *after_id;
    int r, n = 0;

    if (!f)
        f = &none;
    if (f->n_labels > CAT_FILTER_LABELS_MAX)
        return cat_err(-EINVAL, "more than %d label terms", CAT_FILTER_LABELS_MAX);
    if (f->n_labels && !f->labels)
        return cat_err(-EINVAL, "no labels");
    for (size_t i = 0; i < f->n_labels; i++)
        if (!f->labels[i].key || !f->labels[i].value)
            return cat_err(-EINVAL, "a label term needs a key and a value");
    if ((r = page_parse(page, &after_ns, &after_id)) < 0)
        return r;
    uint32_t limit = page_limit(page);

    /* Only the shape of the query varies; every value is bound. */
    struct buf sql = {};
    buf_printf(&sql, "SELECT " SNAP_COLS " FROM snapshots s WHERE 1");
    /* With labels, the most selective term drives the query from the (key,
     * value) index; "+" keeps the planner off the volume index, which would
     * visit every snapshot of the volume. The other terms are one
     * primary-key probe a candidate (EXISTS), not whole lists built up
     * front. */
    size_t drive = 0;
    if (f->n_labels > 1) {
        CAT_LOCKED(cat);
        if ((r = pick_driver(cat, f->labels, f->n_labels, &drive)) < 0) {
            buf_free(&sql);
            return r;
        }
    }
    if (f->volume_id)
        buf_printf(&sql, " AND %ss.volume_id = ?%d", f->n_labels ? "+" : "", ++n);
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i == drive)
            buf_printf(&sql, " AND s.id IN (SELECT snapshot_id FROM snapshot_labels "
                             "WHERE key = ?%d AND value = ?%d)", n + 1, n + 2);
        else
            buf_printf(&sql, " AND EXISTS (SELECT 1 FROM snapshot_labels l%zu WHERE l%zu.snapshot_id = s.id "
                             "AND l%zu.key = ?%d AND l%zu.value = ?%d)", i, i, i, n + 1, i, n + 2);
        n += 2;
    }
    if (f->label_key)
        buf_printf(&sql, " AND EXISTS (SELECT 1 FROM snapshot_labels lk WHERE lk.snapshot_id = s.id "
                         "AND lk.key = ?%d)", ++n);
    n = states_clause(&sql, "s.state", f->states, _CAT_SNAP_STATE_MAX, n);
    if (f->pvc_namespace) {
        buf_printf(&sql, " AND (s.volume_id IN (SELECT id FROM volumes WHERE pvc_namespace = ?%d)"
                         " OR s.k8s_namespace = ?%d)", n + 1, n + 1);
        n++;
    }
    if (after_id) {
        buf_printf(&sql, " AND (s.created_ns, s.id) > (?%d, ?%d)", n + 1, n + 2);
        n += 2;
    }
    buf_printf(&sql, " ORDER BY s.created_ns, s.id LIMIT ?%d", ++n);
    buf_append(&sql, "", 1);

    CAT_LOCKED(cat);
    _cleanup_finalize_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->db, (const char *)sql.data, -1, &st, NULL);
    buf_free(&sql);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    n = 0;
    if (f->volume_id)
        bind_text(st, ++n, f->volume_id);
    for (size_t i = 0; i < f->n_labels; i++) {
        bind_text(st, ++n, f->labels[i].key);
        bind_text(st, ++n, f->labels[i].value);
    }
    if (f->label_key)
        bind_text(st, ++n, f->label_key);
    for (int i = 0; f->states && i < _CAT_SNAP_STATE_MAX; i++)
        if (f->states & (1u << i))
            bind_text(st, ++n, snap_states[i]);
    if (f->pvc_namespace)
        bind_text(st, ++n, f->pvc_namespace);
    if (after_id) {
        bind_u64(st, ++n, after_ns);
        bind_text(st, ++n, after_id);
    }
    sqlite3_bind_int64(st, ++n, (sqlite3_int64)limit + 1);

    struct cat_snapshot_list l = {};
    if ((r = row_list(cat, st, &snapshot_row, limit, &l.items, &l.n)) < 0)
        return r;
    if (r > 0)
        l.next = page_token(l.items[l.n - 1].created_ns, l.items[l.n - 1].id);
    *ret = l;
    return 0;
}

int cat_snapshot_protected(struct catalog *cat, const char *id, const char **ret_reason)
{
    /* One row per reason that applies, in this order of precedence. */
    static const char sql[] =
        "WITH me AS (SELECT id, volume_id, created_ns FROM snapshots WHERE id = ?1) "
        "SELECT 'hold' FROM snapshot_labels WHERE snapshot_id = ?1 AND key = 'hold' AND value = 'true' "
        "UNION ALL SELECT 'run' FROM snapshot_labels WHERE snapshot_id = ?1 AND key = 'run' "
        "UNION ALL SELECT 'export-base' FROM exports e, me WHERE e.snapshot_id = me.id "
        "  AND e.state = 'done' AND NOT EXISTS (SELECT 1 FROM exports e2 "
        "  JOIN snapshots s2 ON s2.id = e2.snapshot_id WHERE e2.repo = e.repo "
        "  AND e2.state = 'done' AND s2.volume_id = me.volume_id AND s2.created_ns > me.created_ns) "
        "UNION ALL SELECT 'sync-base' FROM sync_progress p, me WHERE p.snapshot_id = me.id "
        "  AND p.complete AND NOT EXISTS (SELECT 1 FROM sync_progress p2 "
        "  JOIN snapshots s2 ON s2.id = p2.snapshot_id WHERE p2.peer = p.peer AND p2.dir = p.dir "
        "  AND p2.complete AND s2.volume_id = me.volume_id AND s2.created_ns > me.created_ns) "
        "LIMIT 1";
    static const char *const reasons[] = { "hold", "run", "export-base", "sync-base" };
    if (!id)
        return cat_err(-EINVAL, "no snapshot id");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r;
    const char *why = (const char *)sqlite3_column_text(st, 0);
    for (size_t i = 0; i < ARRAY_SIZE(reasons); i++)
        if (why && strcmp(why, reasons[i]) == 0 && ret_reason)
            *ret_reason = reasons[i];
    return 1;
}
