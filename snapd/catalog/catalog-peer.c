/* catalog-peer.c: peers, publications, subscriptions and sync progress.
 *
 * A peer is another amberd we trust (by pinned fingerprint, unique so the
 * TLS callback can map a certificate to exactly one peer). A publication
 * lets a peer (or "*", every peer) read a volume; removing a peer removes
 * its publications (trigger), subscriptions and sync progress (foreign
 * keys), so nothing it was granted survives it. Sync progress holds what a
 * resumed transfer needs: the acknowledged offset of the snapshot in flight
 * and an opaque running digest; `complete` rows say which snapshots a peer
 * holds, which makes the newest one the base of the next incremental
 * transfer and keeps it from retention. */
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

#define DIGEST_STATE_MAX 4096

/* ---- peers ----------------------------------------------------------------- */

#define PEER_COLS "name, address, fingerprint, allow_push, created_ns"

static const struct col peer_cols[] = {
    COL_STR(struct cat_peer, name),
    COL_STR(struct cat_peer, address),
    COL_STR(struct cat_peer, fingerprint),
    COL_BOOL(struct cat_peer, allow_push),
    COL_U64(struct cat_peer, created_ns, .flags = COL_NOW),
};
static const struct row_type peer_row = ROW_TYPE(struct cat_peer, peer_cols);

void cat_peer_free(struct cat_peer *p)
{
    row_free(&peer_row, p);
}

void cat_peer_list_free(struct cat_peer_list *l)
{
    if (!l)
        return;
    row_list_free(&peer_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

static int validate_peer(const struct cat_peer *p)
{
    int r;
    if (!p || !p->name || name_validate(p->name) < 0)
        return cat_err(-EINVAL, "invalid peer name \"%s\"", p && p->name ? p->name : "");
    if ((r = check_text(p->address, 512, false, "address")) < 0 ||
        (r = check_text(p->fingerprint, 256, true, "fingerprint")) < 0 ||
        (r = check_u64(p->created_ns, "created_ns")) < 0)
        return r;
    if (!*p->address)
        return cat_err(-EINVAL, "a peer needs an address");
    return 0;
}

int cat_peer_add(struct catalog *cat, const struct cat_peer *p)
{
    static const char sql[] = "INSERT INTO peers (" PEER_COLS ") VALUES (?1, ?2, ?3, ?4, ?5)";
    int r = validate_peer(p);
    if (r < 0)
        return r;
    CAT_LOCKED(cat);
    r = row_insert(cat, sql, &peer_row, p);
    if (r == -EEXIST)
        return cat_err(r, "a peer named %s or with that fingerprint exists", p->name);
    return r;
}

int cat_peer_update(struct catalog *cat, const struct cat_peer *p)
{
    static const char sql[] = "UPDATE peers SET address = ?2, fingerprint = ?3, allow_push = ?4 WHERE name = ?1";
    int r = validate_peer(p);
    if (r < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    row_bind(&peer_row, st, p);     /* ?1..?4: name, address, fingerprint, allow_push */
    r = cat_step_one(cat, st, "no peer %s", p->name);
    return r == -EEXIST ? cat_err(r, "another peer has that fingerprint") : r;
}

int cat_peer_delete(struct catalog *cat, const char *name)
{
    static const char sql[] = "DELETE FROM peers WHERE name = ?1";
    if (!name)
        return cat_err(-EINVAL, "no peer");
    CAT_LOCKED(cat);
    return row_change(cat, sql, name, NULL, NULL, "no peer %s", name);
}

int cat_peer_get(struct catalog *cat, const char *name, struct cat_peer **ret)
{
    static const char sql[] = "SELECT " PEER_COLS " FROM peers WHERE name = ?1";
    if (!name)
        return cat_err(-EINVAL, "no peer");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &peer_row, name, NULL, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no peer %s", name) : r;
}

int cat_peer_find_fingerprint(struct catalog *cat, const char *fingerprint, struct cat_peer **ret)
{
    static const char sql[] = "SELECT " PEER_COLS " FROM peers WHERE fingerprint = ?1";
    if (!fingerprint)
        return cat_err(-EINVAL, "no fingerprint");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &peer_row, fingerprint, NULL, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no peer pinned to %s", fingerprint) : r;
}

int cat_peer_list(struct catalog *cat, struct cat_peer_list *ret)
{
    static const char sql[] = "SELECT " PEER_COLS " FROM peers ORDER BY name";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &peer_row, NULL, NULL, &ret->items, &ret->n);
}

/* ---- publications ---------------------------------------------------------- */

static int peer_exists(struct catalog *cat, const char *name)
{
    static const char sql[] = "SELECT 1 FROM peers WHERE name = ?1";
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, name);
    return cat_step_row(cat, st);
}

int cat_publish(struct catalog *cat, const char *volume_id, const char *peer)
{
    static const char sql[] = "INSERT OR IGNORE INTO publications (volume_id, peer, created_ns) "
                              "VALUES (?1, ?2, ?3)";
    if (!volume_id || !peer)
        return cat_err(-EINVAL, "publish needs a volume and a peer");
    CAT_LOCKED(cat);
    int r;
    if (strcmp(peer, "*") != 0) {
        r = peer_exists(cat, peer);
        if (r <= 0)
            return r < 0 ? r : cat_err(-ENOENT, "no peer %s", peer);
    }
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, volume_id);
    bind_text(st, 2, peer);
    bind_u64(st, 3, now_real_ns());
    r = cat_step_done(cat, st);
    if (r == -ENOENT)
        return cat_err(r, "no volume %s", volume_id);
    return r < 0 ? r : 0;
}

int cat_unpublish(struct catalog *cat, const char *volume_id, const char *peer)
{
    static const char sql[] = "DELETE FROM publications WHERE volume_id = ?1 AND peer = ?2";
    if (!volume_id || !peer)
        return cat_err(-EINVAL, "unpublish needs a volume and a peer");
    CAT_LOCKED(cat);
    return row_change(cat, sql, volume_id, peer, NULL,
                      "volume %s is not published to %s", volume_id, peer);
}

int cat_is_published(struct catalog *cat, const char *volume_id, const char *peer)
{
    static const char sql[] = "SELECT 1 FROM publications WHERE volume_id = ?1 AND peer IN (?2, '*')";
    if (!volume_id || !peer)
        return cat_err(-EINVAL, "no volume or peer");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, volume_id);
    bind_text(st, 2, peer);
    return cat_step_row(cat, st);
}

static const struct col publication_cols[] = {
    COL_STR(struct cat_publication, volume_id),
    COL_STR(struct cat_publication, peer),
    COL_U64(struct cat_publication, created_ns),
};
static const struct row_type publication_row = ROW_TYPE(struct cat_publication, publication_cols);

void cat_publication_list_free(struct cat_publication_list *l)
{
    if (!l)
        return;
    row_list_free(&publication_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

int cat_publication_list(struct catalog *cat, const char *volume_id, struct cat_publication_list *ret)
{
    static const char sql[] = "SELECT volume_id, peer, created_ns FROM publications "
                              "WHERE ?1 IS NULL OR volume_id = ?1 ORDER BY volume_id, peer";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &publication_row, volume_id, NULL, &ret->items, &ret->n);
}

/* ---- subscriptions --------------------------------------------------------- */

#define SUB_COLS "peer, remote_volume, local_name, local_volume_id, every_ms, last_sync_ns, " \
                 "last_error, created_ns"

static const struct col subscription_cols[] = {
    COL_STR(struct cat_subscription, peer),
    COL_STR(struct cat_subscription, remote_volume),
    COL_STR(struct cat_subscription, local_name),
    COL_STR(struct cat_subscription, local_volume_id),
    COL_U64(struct cat_subscription, every_ms),
    COL_U64(struct cat_subscription, last_sync_ns),
    COL_STR(struct cat_subscription, last_error),
    COL_U64(struct cat_subscription, created_ns, .flags = COL_NOW),
};
static const struct row_type subscription_row = ROW_TYPE(struct cat_subscription, subscription_cols);

void cat_subscription_free(struct cat_subscription *s)
{
    row_free(&subscription_row, s);
}

void cat_subscription_list_free(struct cat_subscription_list *l)
{
    if (!l)
        return;
    row_list_free(&subscription_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

static int validate_subscription(const struct cat_subscription *s)
{
    int r;
    if (!s || !s->peer || !s->remote_volume || !*s->remote_volume)
        return cat_err(-EINVAL, "a subscription needs a peer and a remote volume");
    if (!s->local_name || name_validate(s->local_name) < 0)
        return cat_err(-EINVAL, "invalid local name \"%s\"", s->local_name ? s->local_name : "");
    if ((r = check_text(s->remote_volume, 512, false, "remote_volume")) < 0 ||
        (r = check_text(s->last_error, 4096, true, "last_error")) < 0 ||
        (r = check_u64(s->every_ms, "every_ms")) < 0 ||
        (r = check_u64(s->last_sync_ns, "last_sync_ns")) < 0 ||
        (r = check_u64(s->created_ns, "created_ns")) < 0)
        return r;
    if (s->local_volume_id && (r = check_uuid(s->local_volume_id, "local_volume_id")) < 0)
        return r;
    return 0;
}

int cat_subscription_add(struct catalog *cat, const struct cat_subscription *s)
{
    static const char sql[] = "INSERT INTO subscriptions (" SUB_COLS ") "
                              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    int r = validate_subscription(s);
    if (r < 0)
        return r;
    CAT_LOCKED(cat);
    r = row_insert(cat, sql, &subscription_row, s);
    if (r == -EEXIST)
        return cat_err(r, "already subscribed to %s/%s, or %s is taken", s->peer, s->remote_volume,
                       s->local_name);
    if (r == -ENOENT)
        return cat_err(r, "no peer %s", s->peer);
    return r;
}

int cat_subscription_update(struct catalog *cat, const struct cat_subscription *s)
{
    /* Numbered as SUB_COLS (row_bind); ?3, local_name, is not changed. */
    static const char sql[] = "UPDATE subscriptions SET local_volume_id = ?4, every_ms = ?5, "
                              "last_sync_ns = ?6, last_error = ?7 WHERE peer = ?1 AND remote_volume = ?2";
    int r = validate_subscription(s);
    if (r < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    row_bind(&subscription_row, st, s);
    return cat_step_one(cat, st, "no subscription to %s/%s", s->peer, s->remote_volume);
}

int cat_subscription_delete(struct catalog *cat, const char *peer, const char *remote_volume)
{
    static const char sql[] = "DELETE FROM subscriptions WHERE peer = ?1 AND remote_volume = ?2";
    if (!peer || !remote_volume)
        return cat_err(-EINVAL, "no peer or remote volume");
    CAT_LOCKED(cat);
    return row_change(cat, sql, peer, remote_volume, NULL,
                      "no subscription to %s/%s", peer, remote_volume);
}

int cat_subscription_get(struct catalog *cat, const char *peer, const char *remote_volume,
                         struct cat_subscription **ret)
{
    static const char sql[] = "SELECT " SUB_COLS " FROM subscriptions WHERE peer = ?1 AND remote_volume = ?2";
    if (!peer || !remote_volume)
        return cat_err(-EINVAL, "no peer or remote volume");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &subscription_row, peer, remote_volume, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no subscription to %s/%s", peer, remote_volume) : r;
}

int cat_subscription_list(struct catalog *cat, const char *peer, struct cat_subscription_list *ret)
{
    static const char sql[] = "SELECT " SUB_COLS " FROM subscriptions "
                              "WHERE ?1 IS NULL OR peer = ?1 ORDER BY peer, remote_volume";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &subscription_row, peer, NULL, &ret->items, &ret->n);
}

/* ---- sync progress --------------------------------------------------------- */

#define SYNC_COLS "peer, dir, snapshot_id, volume_id, acked_offset, digest_state, complete, updated_ns"

static const char *const sync_dirs[] = {
    [CAT_SYNC_SEND] = "send",
    [CAT_SYNC_RECEIVE] = "receive",
};

/* A dir that reads as neither is a send, as it always has. */
static const struct col sync_cols[] = {
    COL_STR(struct cat_sync_progress, peer),
    COL_ENUM(struct cat_sync_progress, dir, sync_dirs, CAT_SYNC_SEND),
    COL_STR(struct cat_sync_progress, snapshot_id),
    COL_STR(struct cat_sync_progress, volume_id),
    COL_U64(struct cat_sync_progress, acked_offset),
    COL_BLOB(struct cat_sync_progress, digest_state, digest_len),
    COL_BOOL(struct cat_sync_progress, complete),
    COL_U64(struct cat_sync_progress, updated_ns),
};
static const struct row_type sync_row = ROW_TYPE(struct cat_sync_progress, sync_cols);

static const char *dir_str(enum cat_sync_dir d)
{
    return (unsigned)d < ARRAY_SIZE(sync_dirs) ? sync_dirs[d] : NULL;
}

void cat_sync_progress_free(struct cat_sync_progress *p)
{
    row_free(&sync_row, p);
}

int cat_sync_progress_put(struct catalog *cat, const struct cat_sync_progress *p)
{
    static const char sql[] = "INSERT OR REPLACE INTO sync_progress (" SYNC_COLS ") "
                              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
    int r;
    if (!p || !p->peer || !dir_str(p->dir))
        return cat_err(-EINVAL, "invalid sync progress");
    if ((r = check_uuid(p->snapshot_id, "snapshot_id")) < 0 ||
        (r = check_uuid(p->volume_id, "volume_id")) < 0 ||
        (r = check_u64(p->acked_offset, "acked_offset")) < 0)
        return r;
    if (p->digest_len > DIGEST_STATE_MAX || (p->digest_len && !p->digest_state))
        return cat_err(-EINVAL, "digest state over %d bytes", DIGEST_STATE_MAX);
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    row_bind(&sync_row, st, p);
    bind_u64(st, 8, now_real_ns());     /* updated_ns is the time of this put */
    r = cat_step_done(cat, st);
    if (r == -ENOENT)
        return cat_err(r, "no peer %s", p->peer);
    return r < 0 ? r : 0;
}

int cat_sync_progress_get(struct catalog *cat, const char *peer, enum cat_sync_dir dir,
                          const char *snapshot_id, struct cat_sync_progress **ret)
{
    static const char sql[] = "SELECT " SYNC_COLS " FROM sync_progress "
                              "WHERE peer = ?1 AND dir = ?2 AND snapshot_id = ?3";
    if (!peer || !dir_str(dir) || !snapshot_id)
        return cat_err(-EINVAL, "invalid sync progress key");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &sync_row, peer, dir_str(dir), snapshot_id, ret);
    return r == -ENOENT ? cat_err(r, "no progress for %s with %s", snapshot_id, peer) : r;
}

int cat_sync_progress_delete(struct catalog *cat, const char *peer, enum cat_sync_dir dir,
                             const char *snapshot_id)
{
    static const char sql[] = "DELETE FROM sync_progress WHERE peer = ?1 AND dir = ?2 AND snapshot_id = ?3";
    if (!peer || !dir_str(dir) || !snapshot_id)
        return cat_err(-EINVAL, "invalid sync progress key");
    CAT_LOCKED(cat);
    return row_change(cat, sql, peer, dir_str(dir), snapshot_id,
                      "no progress for %s with %s", snapshot_id, peer);
}

int cat_sync_progress_latest(struct catalog *cat, const char *peer, enum cat_sync_dir dir,
                             const char *volume_id, struct cat_sync_progress **ret)
{
    static const char sql[] =
        "SELECT p.peer, p.dir, p.snapshot_id, p.volume_id, p.acked_offset, p.digest_state, "
        "p.complete, p.updated_ns FROM sync_progress p JOIN snapshots s ON s.id = p.snapshot_id "
        "WHERE p.peer = ?1 AND p.dir = ?2 AND p.volume_id = ?3 AND p.complete "
        "ORDER BY s.created_ns DESC, s.id DESC LIMIT 1";
    if (!peer || !dir_str(dir) || !volume_id)
        return cat_err(-EINVAL, "invalid sync progress key");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &sync_row, peer, dir_str(dir), volume_id, ret);
    return r == -ENOENT ? cat_err(r, "%s holds no snapshot of %s", peer, volume_id) : r;
}
