/* catalog-volume.c: the volumes table.
 *
 * A row is the durable record of a volume: its name, size, state, where it
 * came from (clone source, peer replica) and which PVC asked for it. The
 * state column is text ("ready") so the file reads well in the sqlite3 CLI;
 * the C side uses enum cat_vol_state. Lookups by user input accept an id, a
 * name or "pvc/NAMESPACE/NAME". Lists are ordered by (created_ns, id) so a
 * page token stays valid when rows come and go between pages. */
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

static const char *const vol_states[_CAT_VOL_STATE_MAX] = {
    [CAT_VOL_CREATING] = "creating",
    [CAT_VOL_READY] = "ready",
    [CAT_VOL_DELETING] = "deleting",
    [CAT_VOL_REVERTING] = "reverting",
    [CAT_VOL_RESIZING] = "resizing",
    [CAT_VOL_RECEIVING] = "receiving",
};

const char *cat_vol_state_to_string(enum cat_vol_state s)
{
    return s >= 0 && s < _CAT_VOL_STATE_MAX ? vol_states[s] : NULL;
}

enum cat_vol_state cat_vol_state_from_string(const char *s)
{
    for (int i = 0; s && i < _CAT_VOL_STATE_MAX; i++)
        if (strcmp(vol_states[i], s) == 0)
            return (enum cat_vol_state)i;
    return _CAT_VOL_STATE_INVALID;
}

static void volume_clear(struct cat_volume *v)
{
    free(v->id);
    free(v->name);
    free(v->fs_type);
    free(v->source_snapshot_id);
    free(v->source_volume_id);
    free(v->pvc_namespace);
    free(v->pvc_name);
    free(v->replica_peer);
    free(v->replica_source_id);
    free(v->params);
    memset(v, 0, sizeof(*v));
}

void cat_volume_free(struct cat_volume *v)
{
    if (!v)
        return;
    volume_clear(v);
    free(v);
}

void cat_volume_list_free(struct cat_volume_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        volume_clear(&l->items[i]);
    free(l->items);
    free(l->next);
    memset(l, 0, sizeof(*l));
}

#define VOL_COLS "id, name, size_bytes, fs_type, state, created_ns, source_snapshot_id, " \
                 "source_volume_id, pvc_namespace, pvc_name, replica_peer, replica_source_id, params"

static void read_volume(sqlite3_stmt *st, struct cat_volume *v)
{
    v->id = col_str(st, 0);
    v->name = col_str(st, 1);
    v->size_bytes = col_u64(st, 2);
    v->fs_type = col_str(st, 3);
    v->state = cat_vol_state_from_string((const char *)sqlite3_column_text(st, 4));
    v->created_ns = col_u64(st, 5);
    v->source_snapshot_id = col_str(st, 6);
    v->source_volume_id = col_str(st, 7);
    v->pvc_namespace = col_str(st, 8);
    v->pvc_name = col_str(st, 9);
    v->replica_peer = col_str(st, 10);
    v->replica_source_id = col_str(st, 11);
    v->params = col_str(st, 12);
}

/* Everything but the id, which callers check for their own purpose. */
static int validate_volume(const struct cat_volume *v)
{
    int r;
    if (!v->name || name_validate(v->name) < 0)
        return cat_err(-EINVAL, "invalid volume name \"%s\"", v->name ? v->name : "");
    if (!cat_vol_state_to_string(v->state))
        return cat_err(-EINVAL, "invalid volume state %d", (int)v->state);
    if ((r = check_u64(v->size_bytes, "size_bytes")) < 0 ||
        (r = check_u64(v->created_ns, "created_ns")) < 0 ||
        (r = check_text(v->fs_type, 32, true, "fs_type")) < 0 ||
        (r = check_text(v->pvc_namespace, 253, true, "pvc_namespace")) < 0 ||
        (r = check_text(v->pvc_name, 253, true, "pvc_name")) < 0 ||
        (r = check_text(v->params, 65536, true, "params")) < 0)
        return r;
    if (v->source_snapshot_id && (r = check_uuid(v->source_snapshot_id, "source_snapshot_id")) < 0)
        return r;
    if (v->source_volume_id && (r = check_uuid(v->source_volume_id, "source_volume_id")) < 0)
        return r;
    if (v->replica_source_id && (r = check_uuid(v->replica_source_id, "replica_source_id")) < 0)
        return r;
    if (v->replica_peer && name_validate(v->replica_peer) < 0)
        return cat_err(-EINVAL, "invalid peer name \"%s\"", v->replica_peer);
    return 0;
}

/* Bind columns 2.. (everything but id, created_ns) in VOL_COLS order. */
static void bind_volume(sqlite3_stmt *st, const struct cat_volume *v)
{
    bind_text(st, 2, v->name);
    bind_u64(st, 3, v->size_bytes);
    bind_text(st, 4, v->fs_type);
    bind_text(st, 5, cat_vol_state_to_string(v->state));
    bind_text(st, 7, v->source_snapshot_id);
    bind_text(st, 8, v->source_volume_id);
    bind_text(st, 9, v->pvc_namespace);
    bind_text(st, 10, v->pvc_name);
    bind_text(st, 11, v->replica_peer);
    bind_text(st, 12, v->replica_source_id);
    bind_text(st, 13, v->params);
}

int cat_volume_add(struct catalog *cat, const struct cat_volume *v)
{
    static const char sql[] = "INSERT INTO volumes (" VOL_COLS ") VALUES "
                              "(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)";
    int r;
    if (!v)
        return cat_err(-EINVAL, "no volume");
    if ((r = check_uuid(v->id, "volume id")) < 0 || (r = validate_volume(v)) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, v->id);
    bind_volume(st, v);
    bind_u64(st, 6, v->created_ns ? v->created_ns : now_real_ns());
    r = cat_step_done(cat, st);
    if (r == -EEXIST)
        return cat_err(r, "a volume named %s (or with id %s) exists", v->name, v->id);
    return r < 0 ? r : 0;
}

int cat_volume_update(struct catalog *cat, const struct cat_volume *v)
{
    static const char sql[] =
        "UPDATE volumes SET name = ?2, size_bytes = ?3, fs_type = ?4, state = ?5, "
        "source_snapshot_id = ?7, source_volume_id = ?8, pvc_namespace = ?9, pvc_name = ?10, "
        "replica_peer = ?11, replica_source_id = ?12, params = ?13 WHERE id = ?1";
    int r;
    if (!v || !v->id)
        return cat_err(-EINVAL, "no volume");
    if ((r = validate_volume(v)) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, v->id);
    bind_volume(st, v);
    r = cat_step_done(cat, st);
    if (r == -EEXIST)
        return cat_err(r, "a volume named %s exists", v->name);
    if (r == 0)
        return cat_err(-ENOENT, "no volume %s", v->id);
    return r < 0 ? r : 0;
}

int cat_volume_set_state(struct catalog *cat, const char *id, enum cat_vol_state state)
{
    static const char sql[] = "UPDATE volumes SET state = ?2 WHERE id = ?1";
    const char *s = cat_vol_state_to_string(state);
    if (!id || !s)
        return cat_err(-EINVAL, "invalid volume or state");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    bind_text(st, 2, s);
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no volume %s", id);
    return r < 0 ? r : 0;
}

int cat_volume_set_size(struct catalog *cat, const char *id, uint64_t size_bytes)
{
    static const char sql[] = "UPDATE volumes SET size_bytes = ?2 WHERE id = ?1";
    int r;
    if (!id)
        return cat_err(-EINVAL, "no volume");
    if ((r = check_u64(size_bytes, "size_bytes")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, id);
    bind_u64(st, 2, size_bytes);
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no volume %s", id);
    return r < 0 ? r : 0;
}

int cat_volume_delete(struct catalog *cat, const char *id)
{
    static const char sql[] = "DELETE FROM volumes WHERE id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no volume");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, id);
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no volume %s", id);
    return r < 0 ? r : 0;
}

/* Run a cached single-row query with up to two text parameters. */
static int volume_query1(struct catalog *cat, const char *sql, const char *a, const char *b,
                         struct cat_volume **ret)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, a);
    if (b)
        bind_text(st, 2, b);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    struct cat_volume *v = xcalloc(1, sizeof(*v));
    read_volume(st, v);
    *ret = v;
    return 0;
}

int cat_volume_get(struct catalog *cat, const char *id, struct cat_volume **ret)
{
    static const char sql[] = "SELECT " VOL_COLS " FROM volumes WHERE id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    int r = volume_query1(cat, sql, id, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no volume %s", id) : r;
}

int cat_volume_find_pvc(struct catalog *cat, const char *ns, const char *name,
                        struct cat_volume **ret)
{
    static const char sql[] = "SELECT " VOL_COLS " FROM volumes "
                              "WHERE pvc_namespace = ?1 AND pvc_name = ?2 AND state != 'deleting' "
                              "ORDER BY created_ns DESC, id DESC LIMIT 1";
    if (!ns || !name || !*ns || !*name)
        return cat_err(-EINVAL, "a PVC needs a namespace and a name");
    CAT_LOCKED(cat);
    int r = volume_query1(cat, sql, ns, name, ret);
    return r == -ENOENT ? cat_err(r, "no volume for pvc %s/%s", ns, name) : r;
}

int cat_volume_find(struct catalog *cat, const char *ref, struct cat_volume **ret)
{
    static const char by_id[] = "SELECT " VOL_COLS " FROM volumes WHERE id = ?1";
    static const char by_name[] = "SELECT " VOL_COLS " FROM volumes WHERE name = ?1";
    if (!ref || !*ref)
        return cat_err(-EINVAL, "no volume reference");
    if (strncmp(ref, "pvc/", 4) == 0) {
        const char *ns = ref + 4, *slash = strchr(ns, '/');
        if (!slash || slash == ns || !slash[1] || strchr(slash + 1, '/'))
            return cat_err(-EINVAL, "\"%s\" is not pvc/NAMESPACE/NAME", ref);
        _cleanup_free_ char *nsbuf = strndup(ns, (size_t)(slash - ns));
        if (!nsbuf)
            return cat_err(-ENOMEM, "out of memory");
        return cat_volume_find_pvc(cat, nsbuf, slash + 1, ret);
    }
    CAT_LOCKED(cat);
    int r = -ENOENT;
    if (uuid_is_valid(ref))
        r = volume_query1(cat, by_id, ref, NULL, ret);
    if (r == -ENOENT)
        r = volume_query1(cat, by_name, ref, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no volume %s", ref) : r;
}

int cat_volume_list(struct catalog *cat, const struct cat_volume_filter *f,
                    const struct cat_page *page, struct cat_volume_list *ret)
{
    struct cat_volume_filter none = {};
    uint64_t after_ns = 0;
    const char *after_id;
    int r, n = 0;

    if (!f)
        f = &none;
    if ((r = page_parse(page, &after_ns, &after_id)) < 0)
        return r;
    uint32_t limit = page_limit(page);

    /* Only the shape of the query varies; every value is bound. */
    struct buf sql = {};
    buf_printf(&sql, "SELECT " VOL_COLS " FROM volumes WHERE 1");
    if (f->pvc_namespace)
        buf_printf(&sql, " AND pvc_namespace = ?%d", ++n);
    if (f->replica_peer)
        buf_printf(&sql, " AND replica_peer = ?%d", ++n);
    if (f->states) {
        buf_printf(&sql, " AND state IN (");
        for (int i = 0, first = 1; i < _CAT_VOL_STATE_MAX; i++)
            if (f->states & (1u << i)) {
                buf_printf(&sql, "%s?%d", first ? "" : ", ", ++n);
                first = 0;
            }
        buf_printf(&sql, ")");
    }
    if (after_id) {
        buf_printf(&sql, " AND (created_ns, id) > (?%d, ?%d)", n + 1, n + 2);
        n += 2;
    }
    buf_printf(&sql, " ORDER BY created_ns, id LIMIT ?%d", ++n);
    buf_append(&sql, "", 1);

    CAT_LOCKED(cat);
    _cleanup_finalize_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->db, (const char *)sql.data, -1, &st, NULL);
    buf_free(&sql);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    n = 0;
    if (f->pvc_namespace)
        bind_text(st, ++n, f->pvc_namespace);
    if (f->replica_peer)
        bind_text(st, ++n, f->replica_peer);
    for (int i = 0; f->states && i < _CAT_VOL_STATE_MAX; i++)
        if (f->states & (1u << i))
            bind_text(st, ++n, vol_states[i]);
    if (after_id) {
        bind_u64(st, ++n, after_ns);
        bind_text(st, ++n, after_id);
    }
    /* One more than asked tells whether there is a next page. */
    sqlite3_bind_int64(st, ++n, (sqlite3_int64)limit + 1);

    struct cat_volume_list l = {};
    while ((r = cat_step_row(cat, st)) > 0) {
        if (l.n == limit) {
            l.next = page_token(l.items[l.n - 1].created_ns, l.items[l.n - 1].id);
            break;
        }
        read_volume(st, ARRAY_PUSH(l.items, l.n));
    }
    if (r < 0) {
        cat_volume_list_free(&l);
        return r;
    }
    *ret = l;
    return 0;
}
