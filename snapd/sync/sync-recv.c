/* sync-recv.c: the receiving side of a transfer (we pull, or a peer pushes
 * to us).
 *
 * A replica is a volume of ours with replica_peer/replica_source_id set;
 * its snapshots keep the sender's ids, names, labels and creation times.
 * Pieces are written into the replica's own image, which holds exactly its
 * newest common snapshot (the base) when a snapshot starts: if anything
 * differs (an abandoned transfer, a local writer) it is reverted to the
 * base first; for a first, full transfer it is emptied. While a snapshot
 * is in flight the volume is `receiving`, so it cannot be attached or
 * snapshotted locally; only a finished, verified snapshot becomes visible.
 *
 * Durability and resume: every SYNC_ACK_EVERY bytes (and at the end of the
 * stream) the image is fdatasync'ed, then the catalog's sync_progress row
 * records the offset, the running digest, the base and the piece size,
 * then the sender is told (Ack). After a cut, a crash or a restart, the
 * Hello carries that row, and the sender resumes there; the meta key
 * "sync.inflight.<volume id>" names the snapshot in flight. Data before
 * the acknowledged offset is never accepted again (stream_offset must
 * follow on exactly).
 *
 * Commit: End's digest must equal ours; then one transaction adds the
 * snapshot row (`creating`) with a snapshot_create intent, the pool makes
 * the read-only snapshot with the sender's id, and a second transaction
 * marks it ready, drops the intent and the progress. A crash in between is
 * rolled back by recover.c, and the progress row (at the end of the
 * stream) lets the next attempt commit again without data. A full pool
 * (checked before starting, and ENOSPC while writing) gives
 * RESOURCE_EXHAUSTED and puts the image back to the base. */
#include <fcntl.h>
#include <linux/falloc.h>
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store.h"
#include "snapd/sync/peer.h"

#define VOL_MAX (64ULL << 40)

/* --- the session ------------------------------------------------------------ */

/* What sync_progress.digest_state holds. */
struct resume_blob {
    uint8_t digest[SYNC_DIGEST_LEN];
    uint8_t piece[4];
    char base[40];
};

struct recv_session {
    struct amberd *d;
    char *peer;
    struct cat_volume *vol;
    char **have;
    size_t n_have;
    /* resume state found at open */
    char *resume_snap;
    struct resume_blob resume;
    uint64_t resume_off;
    uint32_t resume_piece;
    /* the snapshot in flight */
    bool active;
    struct cat_snapshot snap;     /* id, name, labels, created_ns, size_bytes, parent_id */
    uint64_t total, pos, acked, ack_every;
    uint32_t piece;
    uint8_t digest[SYNC_DIGEST_LEN];
    int fd;
    uint8_t *raw;
    struct sync_stats st;
};

const struct sync_stats *recv_stats(const struct recv_session *rs) { return &rs->st; }
const char *recv_volume_name(const struct recv_session *rs) { return rs->vol->name; }
const char *recv_volume_id(const struct recv_session *rs) { return rs->vol->id; }

static char *inflight_key(const char *vol_id) { return xasprintf("sync.inflight.%s", vol_id); }

static void snap_clear(struct cat_snapshot *s)
{
    free(s->id);
    free(s->name);
    free(s->parent_id);
    for (size_t i = 0; i < s->n_labels; i++)
        cat_label_clear(&s->labels[i]);
    free(s->labels);
    *s = (struct cat_snapshot){0};
}

void recv_close(struct recv_session *rs)
{
    if (!rs)
        return;
    if (rs->fd >= 0)
        close(rs->fd);
    if (rs->vol)
        busy_release(rs->d, rs->vol->id);
    for (size_t i = 0; i < rs->n_have; i++)
        free(rs->have[i]);
    free(rs->have);
    free(rs->resume_snap);
    snap_clear(&rs->snap);
    free(rs->raw);
    cat_volume_free(rs->vol);
    free(rs->peer);
    free(rs);
}

static int cat_err(struct recv_session *rs, struct op_err *e, int r)
{
    return op_fail(e, r == -EBUSY ? RPC_ABORTED : RPC_INTERNAL, r, "catalog: %s",
                   cat_errmsg(rs->d->cat));
}

/* Find the replica of (peer, src_id), or make it. */
static int replica_get(struct recv_session *rs, const char *src_id, const char *src_name,
                       uint64_t size, const char *as_name, struct op_err *e)
{
    struct amberd *d = rs->d;
    struct cat_volume_filter f = { .replica_peer = rs->peer };
    struct cat_volume_list vl = {0};
    int r = cat_volume_list(d->cat, &f, NULL, &vl);
    if (r < 0)
        return cat_err(rs, e, r);
    for (size_t i = 0; i < vl.n && !rs->vol; i++)
        if (vl.items[i].replica_source_id && strcmp(vl.items[i].replica_source_id, src_id) == 0)
            r = cat_volume_get(d->cat, vl.items[i].id, &rs->vol);
    cat_volume_list_free(&vl);
    if (r < 0)
        return cat_err(rs, e, r);
    if (rs->vol)
        return busy_acquire(d, rs->vol->id, "sync receive", e);

    const char *name = as_name && *as_name ? as_name : src_name;
    if (name_validate(name) < 0)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "invalid replica name \"%s\"", name);
    if (size == 0 || size % POOL_ALIGN || size > VOL_MAX)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "bad volume size %llu",
                       (unsigned long long)size);
    struct cat_volume *old = NULL;
    if (cat_volume_find(d->cat, name, &old) == 0) {
        cat_volume_free(old);
        return op_fail(e, RPC_ALREADY_EXISTS, -EEXIST,
                       "volume %s exists here and is not a replica of %s/%s: choose a name with --as",
                       name, rs->peer, src_name);
    }
    char id[37];
    uuid_new(id);
    struct cat_volume v = { .id = id, .name = (char *)name, .size_bytes = size,
                            .state = CAT_VOL_RECEIVING, .replica_peer = rs->peer,
                            .replica_source_id = (char *)src_id };
    if ((r = busy_acquire(d, id, "sync receive", e)) < 0)
        return r;
    int64_t intent = 0;
    /* Made like any volume (volume_create intent: a crash rolls it back). */
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_volume_add(d->cat, &v);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_VOLUME_CREATE, id, NULL, &intent);
        r = cat_end(d->cat, r);
    }
    if (r < 0) {
        busy_release(d, id);
        return r == -EEXIST ? op_fail(e, RPC_ABORTED, -EBUSY, "volume %s is being created", name)
                            : cat_err(rs, e, r);
    }
    r = pool_vol_create(d->pool, id, size);
    if (r < 0) {
        cat_begin(d->cat);
        cat_volume_delete(d->cat, id);
        cat_intent_delete(d->cat, intent);
        cat_commit(d->cat);
        busy_release(d, id);
        if (r == -ENOSPC)
            return op_fail(e, RPC_RESOURCE_EXHAUSTED, r, "replica %s: the pool has no room", name);
        return op_fail(e, RPC_INTERNAL, r, "replica %s: %s", name, strerror(-r));
    }
    if ((r = cat_intent_delete(d->cat, intent)) < 0 ||
        (r = cat_volume_get(d->cat, id, &rs->vol)) < 0) {
        busy_release(d, id);
        return cat_err(rs, e, r);
    }
    log_info("sync", "created replica %s id=%s of %s/%s", name, id, rs->peer, src_name);
    return 0;
}

int recv_open(struct amberd *d, const char *peer, const char *src_id, const char *src_name,
              uint64_t size, const char *as_name, struct recv_session **ret, struct op_err *e)
{
    if (!src_id || name_validate(src_id) < 0 || !src_name || name_validate(src_name) < 0)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "bad source volume");
    struct recv_session *rs = xcalloc(1, sizeof *rs);
    rs->d = d;
    rs->peer = xstrdup(peer);
    rs->fd = -1;
    rs->ack_every = SYNC_ACK_EVERY;
    const char *env = getenv("AMBER_SYNC_ACK_BYTES");
    uint64_t v;
    if (env && parse_size(env, &v) == 0 && v > 0)
        rs->ack_every = v;
    int r = replica_get(rs, src_id, src_name, size, as_name, e);
    if (r < 0) {
        recv_close(rs);
        return r;
    }
    struct cat_snapshot_list sl = {0};
    r = sync_chain(d, rs->vol->id, &sl);
    if (r < 0) {
        cat_err(rs, e, r);
        recv_close(rs);
        return r;
    }
    rs->have = xcalloc(sl.n + 1, sizeof *rs->have);
    for (size_t i = 0; i < sl.n; i++)
        rs->have[rs->n_have++] = xstrdup(sl.items[i].id);
    cat_snapshot_list_free(&sl);

    _cleanup_free_ char *key = inflight_key(rs->vol->id), *snap = NULL;
    struct cat_sync_progress *p = NULL;
    if (cat_meta_get(d->cat, key, &snap) == 0 && *snap &&
        cat_sync_progress_get(d->cat, peer, CAT_SYNC_RECEIVE, snap, &p) == 0) {
        if (p->digest_len == sizeof rs->resume) {
            memcpy(&rs->resume, p->digest_state, sizeof rs->resume);
            rs->resume.base[sizeof rs->resume.base - 1] = 0;
            rs->resume_snap = xstrdup(snap);
            rs->resume_off = p->acked_offset;
            rs->resume_piece = (uint32_t)rs->resume.piece[0] | (uint32_t)rs->resume.piece[1] << 8 |
                               (uint32_t)rs->resume.piece[2] << 16 | (uint32_t)rs->resume.piece[3] << 24;
        }
        cat_sync_progress_free(p);
    }
    *ret = rs;
    return 0;
}

void recv_hello(struct recv_session *rs, Amber__Peer__V1__Hello *h)
{
    h->have = xcalloc(rs->n_have + 1, sizeof *h->have);
    for (size_t i = 0; i < rs->n_have; i++)
        h->have[i] = rs->have[i];
    h->n_have = rs->n_have;
    if (rs->resume_snap) {
        h->resume_snapshot = rs->resume_snap;
        h->resume_base = rs->resume.base;
        h->resume_offset = rs->resume_off;
        h->resume_piece = rs->resume_piece;
    }
}

/* Record the durable prefix [0, pos) of the snapshot in flight. */
static int progress_put(struct recv_session *rs)
{
    struct resume_blob b = {0};
    memcpy(b.digest, rs->digest, SYNC_DIGEST_LEN);
    for (int i = 0; i < 4; i++)
        b.piece[i] = (uint8_t)(rs->piece >> (8 * i));
    snprintf(b.base, sizeof b.base, "%s", rs->snap.parent_id ? rs->snap.parent_id : "");
    struct cat_sync_progress p = { .peer = rs->peer, .dir = CAT_SYNC_RECEIVE,
                                   .snapshot_id = rs->snap.id, .volume_id = rs->vol->id,
                                   .acked_offset = rs->pos, .digest_state = &b,
                                   .digest_len = sizeof b };
    return cat_sync_progress_put(rs->d->cat, &p);
}

/* Forget the snapshot in flight (its progress), e.g. before another. */
static void progress_drop(struct recv_session *rs, const char *snap_id)
{
    _cleanup_free_ char *key = inflight_key(rs->vol->id);
    if (snap_id)
        cat_sync_progress_delete(rs->d->cat, rs->peer, CAT_SYNC_RECEIVE, snap_id);
    cat_meta_set(rs->d->cat, key, "");
}

static int any_extent(uint64_t off, uint64_t len, void *data) { return 1; }

/* Make the image hold exactly `base` (NULL: nothing). */
static int reset_to_base(struct recv_session *rs, const char *base, struct op_err *e)
{
    struct amberd *d = rs->d;
    int r;
    if (!base) {
        _cleanup_free_ char *path = pool_disk_path(d->pool, rs->vol->id, NULL);
        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
            return op_fail(e, RPC_INTERNAL, -errno, "replica %s: %m", rs->vol->name);
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0,
                      (off_t)rs->vol->size_bytes) < 0 && errno != EOPNOTSUPP)
            return op_fail(e, RPC_INTERNAL, -errno, "replica %s: punch: %m", rs->vol->name);
        return 0;
    }
    r = pool_diff(d->pool, rs->vol->id, base, NULL, any_extent, NULL, NULL);
    if (r == 0)
        return 0;            /* already the base */
    r = pool_vol_revert(d->pool, rs->vol->id, base);
    if (r == -ENOENT) {
        /* The base was moved off the pool to the store (it is not the
         * replica's newest snapshot when the sender deleted its newest: a
         * cluster clone's hidden snapshot): bring it back for the revert. */
        _cleanup_(cat_snapshot_freep) struct cat_snapshot *bs = NULL;
        if ((r = cat_snapshot_get(d->cat, base, &bs)) < 0)
            return op_fail(e, RPC_INTERNAL, r, "replica %s: base snapshot %s: %s", rs->vol->name,
                           base, cat_errmsg(d->cat));
        if ((r = store_hydrate(d, bs, e)) < 0)
            return r;
        r = pool_vol_revert(d->pool, rs->vol->id, base);
        store_release(d, base);
    }
    if (r == -EBUSY)
        return op_fail(e, RPC_FAILED_PRECONDITION, r,
                       "replica %s is attached: detach it so it can follow its source", rs->vol->name);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "replica %s: revert to %s: %s", rs->vol->name, base,
                       strerror(-r));
    struct pool_file_info fi = {0};
    if (pool_stat(d->pool, rs->vol->id, NULL, &fi) == 0) {
        rs->vol->size_bytes = fi.size;
        cat_volume_set_size(d->cat, rs->vol->id, fi.size);
    }
    free(fi.device);
    log_info("sync", "replica %s put back to its snapshot %s before receiving", rs->vol->name, base);
    return 0;
}

/* After a failure that must leave the replica as it was. */
static void abandon(struct recv_session *rs)
{
    struct op_err ignore = {0};
    if (rs->fd >= 0) {
        close(rs->fd);
        rs->fd = -1;
    }
    progress_drop(rs, rs->snap.id);
    reset_to_base(rs, rs->snap.parent_id, &ignore);
    op_err_clear(&ignore);
    if (rs->n_have > 0)
        cat_volume_set_state(rs->d->cat, rs->vol->id, CAT_VOL_READY);
    rs->active = false;
}

static bool have(const struct recv_session *rs, const char *id)
{
    for (size_t i = 0; i < rs->n_have; i++)
        if (strcmp(rs->have[i], id) == 0)
            return true;
    return false;
}

static int send_ack(struct recv_session *rs, struct sync_chan *ch, bool committed, struct op_err *e)
{
    Amber__Peer__V1__Ack a = AMBER__PEER__V1__ACK__INIT;
    a.snapshot_id = rs->snap.id;
    a.offset = rs->pos;
    a.committed = committed;
    Amber__Peer__V1__RecvMsg m = AMBER__PEER__V1__RECV_MSG__INIT;
    m.m_case = AMBER__PEER__V1__RECV_MSG__M_ACK;
    m.ack = &a;
    int r = chan_send(ch, &m.base);
    if (r == -EPIPE)
        return 0;   /* the sender has ended its side: its Abort or status follows */
    if (r < 0)
        return op_fail(e, RPC_UNAVAILABLE, r, "lost the sender: %s", strerror(-r));
    return 0;
}

static int on_begin(struct recv_session *rs, const Amber__Peer__V1__Begin *b, struct op_err *e)
{
    struct amberd *d = rs->d;
    const Amber__Peer__V1__SnapshotInfo *si = b->snapshot;
    int r;
    if (rs->active)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "Begin inside a snapshot");
    if (!si || !uuid_is_valid(si->id) || name_validate(si->name) < 0 || si->created_ns <= 0 ||
        si->size_bytes == 0 || si->size_bytes % POOL_ALIGN || si->size_bytes > VOL_MAX ||
        si->n_labels > CAT_LABELS_MAX)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "bad snapshot description");
    for (size_t i = 0; i < si->n_labels; i++)
        if (cat_label_validate(si->labels[i]->key, si->labels[i]->value) < 0)
            return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "bad label");
    if (b->piece_size < SYNC_PIECE_MIN || b->piece_size > SYNC_PIECE_MAX ||
        b->total_bytes > si->size_bytes || b->start_offset > b->total_bytes ||
        (b->start_offset % b->piece_size && b->start_offset != b->total_bytes))
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "bad stream description");
    if (*b->base_id && !have(rs, b->base_id))
        return op_fail(e, RPC_FAILED_PRECONDITION, -ENOENT, "base snapshot %s is not here", b->base_id);
    if (!*b->base_id && rs->n_have > 0)
        return op_fail(e, RPC_FAILED_PRECONDITION, -EINVAL,
                       "the sender has none of this replica's snapshots: remove the replica first");
    struct cat_snapshot *old = NULL;
    if (cat_snapshot_get(d->cat, si->id, &old) == 0) {
        cat_snapshot_free(old);
        return op_fail(e, RPC_ALREADY_EXISTS, -EEXIST, "snapshot %s exists here already", si->id);
    }
    snap_clear(&rs->snap);
    rs->snap.id = xstrdup(si->id);
    rs->snap.name = xstrdup(si->name);
    rs->snap.parent_id = *b->base_id ? xstrdup(b->base_id) : NULL;
    rs->snap.created_ns = (uint64_t)si->created_ns;
    rs->snap.size_bytes = si->size_bytes;
    rs->snap.labels = xcalloc(si->n_labels + 1, sizeof *rs->snap.labels);
    for (size_t i = 0; i < si->n_labels; i++) {
        rs->snap.labels[i].key = xstrdup(si->labels[i]->key);
        rs->snap.labels[i].value = xstrdup(si->labels[i]->value);
    }
    rs->snap.n_labels = si->n_labels;
    rs->total = b->total_bytes;
    rs->piece = b->piece_size;
    rs->st.snapshot = rs->snap.name;
    rs->st.index = b->index;
    rs->st.count = b->count;
    rs->st.stream_total = rs->total;
    memset(rs->digest, 0, sizeof rs->digest);

    if (b->start_offset > 0) {
        if (!rs->resume_snap || strcmp(rs->resume_snap, si->id) != 0 ||
            strcmp(rs->resume.base, b->base_id) != 0 || rs->resume_off != b->start_offset ||
            rs->resume_piece != b->piece_size)
            return op_fail(e, RPC_FAILED_PRECONDITION, -EPROTO,
                           "the sender resumes at an offset this side did not acknowledge");
        memcpy(rs->digest, rs->resume.digest, SYNC_DIGEST_LEN);
        rs->st.resumed_bytes += b->start_offset;
        log_info("sync", "resuming snapshot %s of replica %s at offset %llu of %llu", si->name,
                 rs->vol->name, (unsigned long long)b->start_offset,
                 (unsigned long long)b->total_bytes);
    } else {
        struct pool_space sp;
        if (pool_get_space(d->pool, &sp) == 0 && sp.free < rs->total + sp.reserve)
            return op_fail(e, RPC_RESOURCE_EXHAUSTED, -ENOSPC,
                           "the pool has no room for snapshot %s (%llu bytes changed, %llu free)",
                           si->name, (unsigned long long)rs->total, (unsigned long long)sp.free);
        if (rs->resume_snap) {
            progress_drop(rs, rs->resume_snap);
            free(rs->resume_snap);
            rs->resume_snap = NULL;
        }
        if ((r = reset_to_base(rs, rs->snap.parent_id, e)) < 0)
            return r;
        _cleanup_free_ char *key = inflight_key(rs->vol->id);
        rs->pos = 0;
        if ((r = cat_meta_set(d->cat, key, rs->snap.id)) < 0 || (r = progress_put(rs)) < 0)
            return cat_err(rs, e, r);
    }
    if (si->size_bytes > rs->vol->size_bytes) {
        r = pool_vol_resize(d->pool, rs->vol->id, si->size_bytes);
        if (r < 0)
            return op_fail(e, r == -ENOSPC ? RPC_RESOURCE_EXHAUSTED : RPC_INTERNAL, r,
                           "replica %s: resize: %s", rs->vol->name, strerror(-r));
        rs->vol->size_bytes = si->size_bytes;
        cat_volume_set_size(d->cat, rs->vol->id, si->size_bytes);
    }
    if (rs->vol->state != CAT_VOL_RECEIVING) {
        if ((r = cat_volume_set_state(d->cat, rs->vol->id, CAT_VOL_RECEIVING)) < 0)
            return cat_err(rs, e, r);
        rs->vol->state = CAT_VOL_RECEIVING;
    }
    _cleanup_free_ char *path = pool_disk_path(d->pool, rs->vol->id, NULL);
    rs->fd = open(path, O_RDWR | O_CLOEXEC);
    if (rs->fd < 0)
        return op_fail(e, RPC_INTERNAL, -errno, "replica %s: %m", rs->vol->name);
    if (!rs->raw)
        rs->raw = xmalloc(SYNC_PIECE_MAX);
    rs->pos = rs->acked = b->start_offset;
    rs->st.stream_done = rs->pos;
    rs->active = true;
    return 0;
}

/* Make [0, pos) durable, record it, tell the sender. */
static int checkpoint(struct recv_session *rs, struct sync_chan *ch, struct op_err *e)
{
    if (fdatasync(rs->fd) < 0) {
        int r = -errno;
        if (r == -ENOSPC) {
            abandon(rs);
            return op_fail(e, RPC_RESOURCE_EXHAUSTED, r, "replica %s: the pool is full", rs->vol->name);
        }
        return op_fail(e, RPC_INTERNAL, r, "replica %s: fdatasync: %s", rs->vol->name, strerror(-r));
    }
    int r = progress_put(rs);
    if (r < 0)
        return cat_err(rs, e, r);
    rs->acked = rs->pos;
    return send_ack(rs, ch, false, e);
}

static int on_data(struct recv_session *rs, struct sync_chan *ch, const Amber__Peer__V1__Data *m,
                   struct op_err *e)
{
    if (!rs->active)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "Data outside a snapshot");
    if (m->stream_offset != rs->pos || rs->pos >= rs->total ||
        m->raw_len != MIN((uint64_t)rs->piece, rs->total - rs->pos))
        return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "piece at %llu: expected offset %llu",
                       (unsigned long long)m->stream_offset, (unsigned long long)rs->pos);
    const char *why = NULL;
    int r = sync_piece_decode(m, rs->piece, rs->snap.size_bytes, rs->raw, &why);
    if (r < 0)
        return op_fail(e, r == -EILSEQ ? RPC_DATA_LOSS : RPC_INVALID_ARGUMENT, r, "piece at %llu: %s",
                       (unsigned long long)m->stream_offset, why);
    const uint8_t *p = rs->raw;
    for (size_t i = 0; i < m->n_segments; i++) {
        uint64_t off = m->segments[i]->offset, len = m->segments[i]->length;
        while (len > 0) {
            ssize_t n = pwrite(rs->fd, p, len, (off_t)off);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                r = n < 0 ? -errno : -EIO;
                if (r == -ENOSPC || r == -EDQUOT) {
                    abandon(rs);
                    return op_fail(e, RPC_RESOURCE_EXHAUSTED, -ENOSPC,
                                   "replica %s: the pool is full; the replica is left as it was",
                                   rs->vol->name);
                }
                return op_fail(e, RPC_INTERNAL, r, "replica %s: write: %s", rs->vol->name, strerror(-r));
            }
            p += n;
            off += (uint64_t)n;
            len -= (uint64_t)n;
        }
    }
    sync_digest_step(rs->digest, m->sha256.data);
    rs->pos += m->raw_len;
    rs->st.bytes_changed += m->raw_len;
    rs->st.stream_done = rs->pos;
    if (rs->pos - rs->acked >= rs->ack_every || rs->pos == rs->total)
        return checkpoint(rs, ch, e);
    return 0;
}

static int on_end(struct recv_session *rs, struct sync_chan *ch, const Amber__Peer__V1__End *m,
                  struct op_err *e)
{
    struct amberd *d = rs->d;
    int r;
    if (!rs->active || rs->pos != rs->total)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "End before the stream is complete");
    if (m->digest.len != SYNC_DIGEST_LEN || memcmp(m->digest.data, rs->digest, SYNC_DIGEST_LEN)) {
        abandon(rs);
        return op_fail(e, RPC_DATA_LOSS, -EILSEQ,
                       "snapshot %s: the digest of the received data does not match the sender's",
                       rs->snap.name);
    }
    if (rs->pos != rs->acked && (r = checkpoint(rs, ch, e)) < 0)
        return r;
    if (fdatasync(rs->fd) < 0)
        return op_fail(e, RPC_INTERNAL, -errno, "replica %s: fdatasync: %m", rs->vol->name);
    close(rs->fd);
    rs->fd = -1;

    struct cat_snapshot *s = &rs->snap;
    s->volume_id = rs->vol->id;
    s->state = CAT_SNAP_CREATING;
    s->origin = rs->peer;
    int64_t intent = 0;
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_snapshot_add(d->cat, s);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_SNAPSHOT_CREATE, s->id, NULL, &intent);
        r = cat_end(d->cat, r);
    }
    s->volume_id = NULL;
    s->origin = NULL;
    if (r == -EEXIST)
        return op_fail(e, RPC_ALREADY_EXISTS, r, "replica %s already has a snapshot named %s",
                       rs->vol->name, s->name);
    if (r < 0)
        return cat_err(rs, e, r);
    crashpoint("sync-receive:intent");
    r = pool_snap_create(d->pool, rs->vol->id, s->id, &s->generation);
    crashpoint("sync-receive:pool");
    if (r < 0) {
        cat_begin(d->cat);
        cat_snapshot_delete(d->cat, s->id);
        cat_intent_delete(d->cat, intent);
        cat_commit(d->cat);
        return op_fail(e, r == -ENOSPC ? RPC_RESOURCE_EXHAUSTED : RPC_INTERNAL, r,
                       "replica %s: snapshot: %s", rs->vol->name, strerror(-r));
    }
    _cleanup_free_ char *key = inflight_key(rs->vol->id);
    s->volume_id = rs->vol->id;
    s->origin = rs->peer;
    s->state = CAT_SNAP_READY;
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_snapshot_update(d->cat, s);
        if (r == 0)
            r = cat_intent_delete(d->cat, intent);
        if (r == 0)
            r = cat_sync_progress_delete(d->cat, rs->peer, CAT_SYNC_RECEIVE, s->id);
        if (r == 0)
            r = cat_meta_set(d->cat, key, "");
        if (r == 0)
            r = cat_volume_set_state(d->cat, rs->vol->id, CAT_VOL_READY);
        r = cat_end(d->cat, r);
    }
    s->volume_id = NULL;
    s->origin = NULL;
    if (r < 0)
        return cat_err(rs, e, r);
    crashpoint("sync-receive:done");
    store_kick(d);          /* the new snapshot goes to the store too */
    rs->vol->state = CAT_VOL_READY;
    rs->have = xrealloc(rs->have, (rs->n_have + 1) * sizeof *rs->have);
    rs->have[rs->n_have++] = xstrdup(s->id);
    free(rs->resume_snap);
    rs->resume_snap = NULL;
    rs->active = false;
    rs->st.snapshots++;
    log_info("sync", "received snapshot %s id=%s of replica %s from %s bytes=%llu", s->name, s->id,
             rs->vol->name, rs->peer, (unsigned long long)rs->total);
    return send_ack(rs, ch, true, e);
}

int recv_handle(struct recv_session *rs, struct sync_chan *ch, const Amber__Peer__V1__SendMsg *m,
                sync_progress_fn progress, void *userdata, struct op_err *e)
{
    int r;
    rs->st.chan = ch;
    switch (m->m_case) {
    case AMBER__PEER__V1__SEND_MSG__M_BEGIN:
        r = on_begin(rs, m->begin, e);
        break;
    case AMBER__PEER__V1__SEND_MSG__M_DATA:
        r = on_data(rs, ch, m->data, e);
        break;
    case AMBER__PEER__V1__SEND_MSG__M_END:
        r = on_end(rs, ch, m->end, e);
        break;
    case AMBER__PEER__V1__SEND_MSG__M_ABORT: {
        int code = m->abort->code > 0 && m->abort->code <= RPC_UNAUTHENTICATED ? m->abort->code
                                                                                : RPC_UNKNOWN;
        return op_fail(e, code, rpc_errno_from_code(code), "peer %s: %.300s", rs->peer,
                       m->abort->message);
    }
    case AMBER__PEER__V1__SEND_MSG__M_DONE:
        if (rs->active)
            return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "Done inside a snapshot");
        return 1;
    default:
        return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "unexpected message from the sender");
    }
    if (r == 0 && progress && (r = progress(&rs->st, userdata)) < 0)
        op_fail(e, RPC_CANCELLED, r, "cancelled");
    return r;
}
