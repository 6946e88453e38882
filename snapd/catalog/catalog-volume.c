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

#define VOL_COLS "id, name, size_bytes, fs_type, state, created_ns, source_snapshot_id, " \
                 "source_volume_id, pvc_namespace, pvc_name, replica_peer, replica_source_id, params"

static const struct col volume_cols[] = {
    COL_STR(struct cat_volume, id),
    COL_STR(struct cat_volume, name),
    COL_U64(struct cat_volume, size_bytes),
    COL_STR(struct cat_volume, fs_type),
    COL_ENUM(struct cat_volume, state, vol_states, _CAT_VOL_STATE_INVALID),
    COL_U64(struct cat_volume, created_ns, .flags = COL_NOW),
    COL_STR(struct cat_volume, source_snapshot_id),
    COL_STR(struct cat_volume, source_volume_id),
    COL_STR(struct cat_volume, pvc_namespace),
    COL_STR(struct cat_volume, pvc_name),
    COL_STR(struct cat_volume, replica_peer),
    COL_STR(struct cat_volume, replica_source_id),
    COL_STR(struct cat_volume, params),
};
static const struct row_type volume_row = ROW_TYPE(struct cat_volume, volume_cols);

enum cat_vol_state cat_vol_state_from_string(const char *s)
{
    return (enum cat_vol_state)names_lookup(vol_states, _CAT_VOL_STATE_MAX, s,
                                            _CAT_VOL_STATE_INVALID);
}

void cat_volume_free(struct cat_volume *v)
{
    row_free(&volume_row, v);
}

void cat_volume_list_free(struct cat_volume_list *l)
{
    if (!l)
        return;
    row_list_free(&volume_row, l->items, l->n);
    free(l->next);
    memset(l, 0, sizeof(*l));
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
    r = row_insert(cat, sql, &volume_row, v);
    if (r == -EEXIST)
        return cat_err(r, "a volume named %s (or with id %s) exists", v->name, v->id);
    return r;
}

int cat_volume_update(struct catalog *cat, const struct cat_volume *v)
{
    /* Numbered as VOL_COLS (row_bind); ?6, created_ns, is not changed. */
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
    row_bind(&volume_row, st, v);
    r = cat_step_one(cat, st, "no volume %s", v->id);
    return r == -EEXIST ? cat_err(r, "a volume named %s exists", v->name) : r;
}

int cat_volume_set_state(struct catalog *cat, const char *id, enum cat_vol_state state)
{
    static const char sql[] = "UPDATE volumes SET state = ?2 WHERE id = ?1";
    const char *s = cat_vol_state_to_string(state);
    if (!id || !s)
        return cat_err(-EINVAL, "invalid volume or state");
    CAT_LOCKED(cat);
    return row_change(cat, sql, id, s, NULL, "no volume %s", id);
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
    return cat_step_one(cat, st, "no volume %s", id);
}

int cat_volume_delete(struct catalog *cat, const char *id)
{
    static const char sql[] = "DELETE FROM volumes WHERE id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no volume");
    CAT_LOCKED(cat);
    return row_change(cat, sql, id, NULL, NULL, "no volume %s", id);
}

int cat_volume_get(struct catalog *cat, const char *id, struct cat_volume **ret)
{
    static const char sql[] = "SELECT " VOL_COLS " FROM volumes WHERE id = ?1";
    if (!id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &volume_row, id, NULL, NULL, ret);
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
    int r = row_query(cat, sql, &volume_row, ns, name, NULL, ret);
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
        r = row_query(cat, by_id, &volume_row, ref, NULL, NULL, ret);
    if (r == -ENOENT)
        r = row_query(cat, by_name, &volume_row, ref, NULL, NULL, ret);
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
    n = states_clause(&sql, "state", f->states, _CAT_VOL_STATE_MAX, n);
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
    if ((r = row_list(cat, st, &volume_row, limit, &l.items, &l.n)) < 0)
        return r;
    if (r > 0)
        l.next = page_token(l.items[l.n - 1].created_ns, l.items[l.n - 1].id);
    *ret = l;
    return 0;
}
