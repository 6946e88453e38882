/* sync-send.c: the sending side of a transfer, over a sync_chan, for pull
 * (we serve the peer's Pull) and push (we call the peer's Push) alike.
 *
 * From the receiver's Hello it picks the newest snapshot of the chain the
 * receiver holds (the base) and the snapshots after it up to the target.
 * For each, in order, the changed extents since the previous one come
 * from pool_diff (the first snapshot of a replica: its allocated extents,
 * pool_allocated); their bytes, concatenated, are the snapshot's stream,
 * cut into pieces of SYNC_PIECE bytes. Each piece is read from the
 * snapshot's read-only image, hashed, zstd-compressed and sent; the
 * running digest over the piece hashes is sent in End. A resumed snapshot
 * starts at the receiver's acknowledged offset: the pieces before it are
 * read and hashed (so the digest still covers the whole stream) but not
 * sent. Memory is one piece, its compressed form, and the extent list;
 * the window of unacknowledged bytes (SYNC_WINDOW) is the backpressure:
 * we stop reading until the receiver has made earlier pieces durable. The
 * snapshot being read is re-checked in the catalog as we go, so one
 * deleted mid-transfer ends the transfer with NOT_FOUND instead of
 * delivering a snapshot the sender no longer has. */
#include <fcntl.h>
#include <string.h>
#include <zstd.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store.h"
#include "snapd/sync/peer.h"

#define SYNC_READAHEAD (16ull << 20)

struct sender {
    struct amberd *d;
    struct sync_chan *ch;
    const char *peer;
    const char *snap_id;
    uint64_t sent, acked;
    bool committed;
};

/* Read acknowledgements until `acked` reaches `want` (or, with commit, the
 * snapshot is committed). */
static int wait_ack(struct sender *s, uint64_t want, bool commit, struct op_err *e)
{
    while (commit ? !s->committed : s->acked < want) {
        Amber__Peer__V1__RecvMsg *m = NULL;
        int r = chan_recv(s->ch, &amber__peer__v1__recv_msg__descriptor, (ProtobufCMessage **)&m);
        if (r == 0)
            return op_fail(e, RPC_ABORTED, -ECONNRESET, "the receiver ended the transfer");
        if (r < 0)
            return op_fail(e, RPC_UNAVAILABLE, r, "lost the receiver: %s", strerror(-r));
        if (m->m_case == AMBER__PEER__V1__RECV_MSG__M_ABORT) {
            int code = m->abort->code > 0 && m->abort->code <= RPC_UNAUTHENTICATED ? m->abort->code
                                                                                    : RPC_UNKNOWN;
            op_fail(e, code, rpc_errno_from_code(code), "peer %s: %.300s", s->peer,
                    m->abort->message);
            protobuf_c_message_free_unpacked(&m->base, NULL);
            return rpc_errno_from_code(code);
        }
        const Amber__Peer__V1__Ack *a = m->m_case == AMBER__PEER__V1__RECV_MSG__M_ACK ? m->ack : NULL;
        if (!a || strcmp(a->snapshot_id, s->snap_id) != 0 || a->offset > s->sent ||
            a->offset < s->acked) {
            protobuf_c_message_free_unpacked(&m->base, NULL);
            return op_fail(e, RPC_INVALID_ARGUMENT, -EPROTO, "unexpected message from the receiver");
        }
        s->acked = a->offset;
        s->committed = a->committed;
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    return 0;
}

static int collect(uint64_t off, uint64_t len, void *data)
{
    range_add(data, off, len);
    return 0;
}

static int still_there(struct sender *s, struct op_err *e)
{
    struct cat_snapshot *x = NULL;
    int r = cat_snapshot_get(s->d->cat, s->snap_id, &x);
    bool ok = r == 0 && x->state == CAT_SNAP_READY;
    cat_snapshot_free(x);
    if (!ok)
        return op_fail(e, RPC_NOT_FOUND, -ENOENT,
                       "snapshot %s was deleted on the sender during the transfer", s->snap_id);
    return 0;
}

struct piece_buf {
    uint8_t *raw, *z;
    size_t zcap;
    uint64_t *offs, *lens;
    Amber__Peer__V1__Segment *seg;
    Amber__Peer__V1__Segment **pseg;
    size_t nseg, segcap;
    ZSTD_CCtx *zc;
};

static void piece_buf_free(struct piece_buf *b)
{
    free(b->raw);
    free(b->z);
    free(b->offs);
    free(b->lens);
    free(b->seg);
    free(b->pseg);
    ZSTD_freeCCtx(b->zc);
}

static void seg_add(struct piece_buf *b, uint64_t off, uint64_t len)
{
    if (b->nseg == b->segcap) {
        b->segcap = b->segcap ? b->segcap * 2 : 64;
        b->offs = xrealloc(b->offs, b->segcap * sizeof *b->offs);
        b->lens = xrealloc(b->lens, b->segcap * sizeof *b->lens);
    }
    b->offs[b->nseg] = off;
    b->lens[b->nseg] = len;
    b->nseg++;
}

/* Send one snapshot: Begin, the pieces from `start`, End; wait for the
 * commit. */
static int send_snapshot(struct sender *s, const struct cat_volume *v, const struct cat_snapshot *snap,
                         const struct cat_snapshot *base, uint64_t start, uint32_t index,
                         uint32_t count, struct piece_buf *b, sync_progress_fn progress,
                         void *userdata, struct sync_stats *st, struct op_err *e)
{
    struct amberd *d = s->d;
    struct range_list rl = {0};
    struct store_reader *rd = NULL;
    int fd = -1;
    int r;
    s->snap_id = snap->id;
    s->sent = s->acked = 0;
    s->committed = false;
    /* Exact extents from the store where the snapshots were moved off the
     * pool; the bytes from the image or, once moved, from the store. */
    const char *method = NULL;
    r = store_diff(d, base, snap, v->id, collect, &rl, &method);
    if (r < 0) {
        range_list_free(&rl);
        if (r == -ENOENT)
            return op_fail(e, RPC_NOT_FOUND, r, "snapshot %s was deleted on the sender", snap->name);
        return op_fail(e, RPC_INTERNAL, r, "changed extents of %s: %s", snap->name, strerror(-r));
    }
    uint64_t total = 0;
    for (size_t i = 0; i < rl.n; i++)
        total += rl.v[i].len;
    if (start > total || (start % SYNC_PIECE && start != total))
        start = 0;
    if ((r = store_reader_open(d, snap, &rd, e)) < 0) {
        range_list_free(&rl);
        return r == -ENOENT ? op_fail(e, RPC_NOT_FOUND, r, "snapshot %s was deleted on the sender",
                                      snap->name) : r;
    }
    fd = store_reader_fd(rd);

    Amber__Peer__V1__Label *lab = xcalloc(snap->n_labels + 1, sizeof *lab);
    Amber__Peer__V1__Label **plab = xcalloc(snap->n_labels + 1, sizeof *plab);
    for (size_t i = 0; i < snap->n_labels; i++) {
        Amber__Peer__V1__Label l = AMBER__PEER__V1__LABEL__INIT;
        l.key = snap->labels[i].key;
        l.value = snap->labels[i].value;
        lab[i] = l;
        plab[i] = &lab[i];
    }
    Amber__Peer__V1__SnapshotInfo si = AMBER__PEER__V1__SNAPSHOT_INFO__INIT;
    si.id = snap->id;
    si.name = snap->name;
    si.created_ns = (int64_t)snap->created_ns;
    si.size_bytes = snap->size_bytes;
    si.labels = plab;
    si.n_labels = snap->n_labels;
    Amber__Peer__V1__Begin bg = AMBER__PEER__V1__BEGIN__INIT;
    bg.snapshot = &si;
    bg.base_id = base ? base->id : "";
    bg.total_bytes = total;
    bg.start_offset = start;
    bg.piece_size = SYNC_PIECE;
    bg.index = index;
    bg.count = count;
    Amber__Peer__V1__SendMsg m = AMBER__PEER__V1__SEND_MSG__INIT;
    m.m_case = AMBER__PEER__V1__SEND_MSG__M_BEGIN;
    m.begin = &bg;
    r = chan_send(s->ch, &m.base);
    free(lab);
    free(plab);
    if (r < 0) {
        store_reader_close(rd);
        range_list_free(&rl);
        return op_fail(e, RPC_UNAVAILABLE, r, "lost the receiver: %s", strerror(-r));
    }
    s->sent = s->acked = start;
    st->snapshot = snap->name;
    st->index = index;
    st->count = count;
    st->stream_total = total;
    st->stream_done = start;
    st->resumed_bytes += start;

    uint8_t digest[SYNC_DIGEST_LEN] = {0}, ph[SYNC_DIGEST_LEN];
    /* Read-ahead: keep the kernel reading the extents of the next
     * SYNC_READAHEAD bytes of the stream while we hash, compress and send
     * (scattered 4 KiB extents would otherwise be one synchronous read
     * each). */
    size_t ai = 0;
    uint64_t ahead = 0;
    size_t ri = 0;
    uint64_t rpos = 0, pos = 0;     /* range index, offset inside it, stream offset */
    unsigned npieces = 0;
    while (pos < total) {
        while (ai < rl.n && ahead < pos + SYNC_READAHEAD) {
            if (fd >= 0)
                posix_fadvise(fd, (off_t)rl.v[ai].off, (off_t)rl.v[ai].len, POSIX_FADV_WILLNEED);
            ahead += rl.v[ai++].len;
        }
        b->nseg = 0;
        uint64_t n = 0;
        while (n < SYNC_PIECE && ri < rl.n) {
            uint64_t take = MIN(SYNC_PIECE - n, rl.v[ri].len - rpos);
            seg_add(b, rl.v[ri].off + rpos, take);
            if ((r = store_reader_pread(rd, b->raw + n, take, rl.v[ri].off + rpos)) < 0) {
                op_fail(e, RPC_INTERNAL, r, "reading snapshot %s: %s", snap->name, strerror(-r));
                goto out;
            }
            n += take;
            rpos += take;
            if (rpos == rl.v[ri].len) {
                ri++;
                rpos = 0;
            }
        }
        sync_piece_hash(b->offs, b->lens, b->nseg, b->raw, n, ph);
        sync_digest_step(digest, ph);
        if (pos < start) {          /* acknowledged before: hash only */
            pos += n;
            continue;
        }
        size_t zn = ZSTD_compressCCtx(b->zc, b->z, b->zcap, b->raw, n, 1);
        if (ZSTD_isError(zn)) {
            r = op_fail(e, RPC_INTERNAL, -EIO, "zstd: %s", ZSTD_getErrorName(zn));
            goto out;
        }
        b->seg = xrealloc(b->seg, b->segcap * sizeof *b->seg);
        b->pseg = xrealloc(b->pseg, b->segcap * sizeof *b->pseg);
        for (size_t i = 0; i < b->nseg; i++) {
            Amber__Peer__V1__Segment sg = AMBER__PEER__V1__SEGMENT__INIT;
            sg.offset = b->offs[i];
            sg.length = b->lens[i];
            b->seg[i] = sg;
            b->pseg[i] = &b->seg[i];
        }
        Amber__Peer__V1__Data dm = AMBER__PEER__V1__DATA__INIT;
        dm.stream_offset = pos;
        dm.segments = b->pseg;
        dm.n_segments = b->nseg;
        dm.raw_len = (uint32_t)n;
        dm.zdata = (ProtobufCBinaryData){ zn, b->z };
        dm.sha256 = (ProtobufCBinaryData){ SYNC_DIGEST_LEN, ph };
        m.m_case = AMBER__PEER__V1__SEND_MSG__M_DATA;
        m.data = &dm;
        if ((r = chan_send(s->ch, &m.base)) < 0) {
            op_fail(e, RPC_UNAVAILABLE, r, "lost the receiver: %s", strerror(-r));
            goto out;
        }
        pos += n;
        s->sent = pos;
        st->bytes_changed += n;
        st->stream_done = pos;
        if (++npieces % 16 == 0 && (r = still_there(s, e)) < 0)
            goto out;
        if (s->sent - s->acked > SYNC_WINDOW && (r = wait_ack(s, s->sent - SYNC_WINDOW, false, e)) < 0)
            goto out;
        if (progress && (r = progress(st, userdata)) < 0) {
            op_fail(e, RPC_CANCELLED, r, "cancelled");
            goto out;
        }
    }
    if ((r = still_there(s, e)) < 0)
        goto out;
    Amber__Peer__V1__End end = AMBER__PEER__V1__END__INIT;
    end.digest = (ProtobufCBinaryData){ SYNC_DIGEST_LEN, digest };
    m.m_case = AMBER__PEER__V1__SEND_MSG__M_END;
    m.end = &end;
    if ((r = chan_send(s->ch, &m.base)) < 0) {
        op_fail(e, RPC_UNAVAILABLE, r, "lost the receiver: %s", strerror(-r));
        goto out;
    }
    r = wait_ack(s, total, true, e);
out:
    store_reader_close(rd);
    range_list_free(&rl);
    return r;
}

int sync_send(struct amberd *d, struct sync_chan *ch, const char *peer,
              const struct cat_volume *v, const Amber__Peer__V1__Hello *h,
              sync_progress_fn progress, void *userdata, struct sync_stats *st, struct op_err *e)
{
    struct cat_snapshot_list chain = {0};
    struct piece_buf b = {0};
    int r = sync_chain(d, v->id, &chain);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    if (h->n_have > CAT_LIST_LIMIT_MAX) {
        r = op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "too many snapshots in Hello");
        goto out;
    }
    /* The target: the newest, or the one asked for. */
    ssize_t target = (ssize_t)chain.n - 1;
    if (*h->upto) {
        target = -1;
        for (size_t i = 0; i < chain.n; i++)
            if (strcmp(chain.items[i].id, h->upto) == 0 || strcmp(chain.items[i].name, h->upto) == 0)
                target = (ssize_t)i;
        if (target < 0) {
            r = op_fail(e, RPC_NOT_FOUND, -ENOENT, "volume %s has no snapshot %s", v->name, h->upto);
            goto out;
        }
    }
    ssize_t base = -1;
    for (ssize_t i = target; i >= 0 && base < 0; i--)
        for (size_t k = 0; k < h->n_have; k++)
            if (strcmp(chain.items[i].id, h->have[k]) == 0) {
                base = i;
                break;
            }
    b.raw = xmalloc(SYNC_PIECE);
    b.zcap = ZSTD_compressBound(SYNC_PIECE);
    b.z = xmalloc(b.zcap);
    b.zc = ZSTD_createCCtx();
    if (!b.zc) {
        r = op_fail(e, RPC_RESOURCE_EXHAUSTED, -ENOMEM, "zstd context");
        goto out;
    }
    struct sender s = { .d = d, .ch = ch, .peer = peer };
    st->chan = ch;
    uint32_t count = (uint32_t)(target - base);
    for (ssize_t i = base + 1; i <= target; i++) {
        const struct cat_snapshot *snap = &chain.items[i];
        /* Each diffs against the one before it; the first against the base. */
        const struct cat_snapshot *bs = base >= 0 || i > base + 1 ? &chain.items[i - 1] : NULL;
        uint64_t start = 0;
        if (h->resume_piece == SYNC_PIECE && strcmp(h->resume_snapshot, snap->id) == 0 &&
            strcmp(h->resume_base, bs ? bs->id : "") == 0)
            start = h->resume_offset;
        r = send_snapshot(&s, v, snap, bs, start, (uint32_t)(i - base), count, &b, progress,
                          userdata, st, e);
        if (r < 0)
            goto out;
        st->snapshots++;
        struct cat_sync_progress sp = { .peer = (char *)peer, .dir = CAT_SYNC_SEND,
                                        .snapshot_id = snap->id, .volume_id = v->id,
                                        .acked_offset = st->stream_total, .complete = true };
        /* The newest snapshot a peer holds is kept by retention (sync-base). */
        if (cat_sync_progress_put(d->cat, &sp) == 0 && bs)
            cat_sync_progress_delete(d->cat, peer, CAT_SYNC_SEND, bs->id);
    }
    Amber__Peer__V1__Done done = AMBER__PEER__V1__DONE__INIT;
    done.snapshots = st->snapshots;
    Amber__Peer__V1__SendMsg m = AMBER__PEER__V1__SEND_MSG__INIT;
    m.m_case = AMBER__PEER__V1__SEND_MSG__M_DONE;
    m.done = &done;
    r = chan_send(ch, &m.base);
    if (r < 0)
        op_fail(e, RPC_UNAVAILABLE, r, "lost the receiver: %s", strerror(-r));
out:
    piece_buf_free(&b);
    cat_snapshot_list_free(&chain);
    return r;
}
