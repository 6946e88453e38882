/* restore.c: write a manifest's exact bytes into a target file.
 *
 * The map's leaves (4 MiB of volume each) are the unit of work. Workers
 * (one per CPU, at least two) take leaves from a shared counter; for each
 * they fetch its pieces with ranged GETs, decrypt and decompress them
 * straight into a leaf-sized buffer at their place (a piece used whole
 * needs no copy; GCM authenticates each piece under its id, so restore
 * does not re-hash what it writes: verify does), and hand each run of
 * contiguous data (up to 1 MiB, or a piece) to the worker's io_uring as
 * one write as soon as it is complete, so what was fetched is on its way
 * to the disk (and found in place by a resume) without waiting for the
 * whole leaf. Two leaf buffers a worker: while one leaf's writes are in
 * flight the next is fetched, so network, CPU and disk overlap.
 * Holes are not written: the target is a fresh sparse file. Block-aligned
 * runs (all but a volume's last block) are written with O_DIRECT through a
 * second descriptor where the target allows it. Where io_uring
 * cannot be set up (old kernel, seccomp) the worker uses pwrite.
 *
 * Resume is by re-verification rather than by a state file: with
 * req->resume each entry already in the target is read back and compared
 * with its piece's block digests (a small ranged read), and fetched only if
 * it differs; holes holding data are punched. This needs no bookkeeping
 * that could disagree with the disk after a crash, costs a local read of
 * what was restored, and also repairs a target damaged since. */
#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define SLOTS 2
#define RING_ENTRIES 256
#define RUN_MAX (1u << 20)

struct leaf_ref {
    uint8_t id[ID_BYTES];
    uint64_t start;
};

struct restore_ctx {
    struct objstore *repo;
    const struct objstore_restore_req *req;
    struct manifest m;
    struct leaf_ref *leaves;
    size_t nleaves, cap;
    atomic_size_t next;
    atomic_int err;
    struct progress pr;
    atomic_uint_fast64_t written, fetched_bytes, fetched, skipped;
    /* The target opened again with O_DIRECT (-1: not possible there):
     * block-aligned runs are written through it, the rest through req->fd. */
    int dfd;
    atomic_bool direct;
};

struct seg {
    unsigned slot;
    uint64_t off;
    size_t len;
    uint8_t *p;
    bool direct;                /* written through c->dfd */
};

struct slot {
    uint8_t *buf;
    struct seg *segs;
    size_t nsegs;
    unsigned pending;
};

struct worker {
    struct restore_ctx *c;
    struct io_uring ring;
    bool use_ring;
    struct slot slots[SLOTS];
};

static void set_error(struct restore_ctx *c, int r)
{
    int zero = 0;
    atomic_compare_exchange_strong(&c->err, &zero, r);
}

static int pwrite_full(int fd, const uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ENOSPC;
        p += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return 0;
}

static int pread_full(int fd, uint8_t *p, size_t len, uint64_t off)
{
    while (len) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            memset(p, 0, len);
            return 0;
        }
        p += n, len -= (size_t)n, off += (uint64_t)n;
    }
    return 0;
}

static void wrote(struct restore_ctx *c, size_t len)
{
    atomic_fetch_add(&c->written, len);
    progress_add(&c->pr, &(struct objstore_progress){ .bytes_read = len }, false);
}

/* Reap one completion: a short write is finished with pwrite. */
static int reap(struct restore_ctx *c, struct io_uring *ring, struct slot *slots)
{
    struct io_uring_cqe *cqe;
    int r = io_uring_wait_cqe(ring, &cqe);
    if (r < 0)
        return r;
    struct seg *s = io_uring_cqe_get_data(cqe);
    int res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    struct slot *sl = &slots[s->slot];
    sl->pending--;
    if (res == -EINVAL && s->direct) {
        /* The filesystem refuses O_DIRECT after all: buffered from now on. */
        atomic_store(&c->direct, false);
        res = 0;
    }
    if (res < 0)
        return res;
    if ((size_t)res < s->len)
        r = pwrite_full(c->req->fd, s->p + res, s->len - (size_t)res, s->off + (uint64_t)res);
    if (r == 0) {
        wrote(c, s->len);
        os_crashpoint("objstore-restore-write");
    }
    return r;
}

/* Start writing one run of the slot's buffer: with O_DIRECT when it is
 * block-aligned (no page cache to fill, account and write back: that cost
 * more CPU than decrypting the data). */
static int submit(struct worker *w, struct seg *sg)
{
    struct restore_ctx *c = w->c;
    sg->direct = c->dfd >= 0 && atomic_load(&c->direct) && !(sg->off % OBJSTORE_BLOCK) &&
                 !(sg->len % OBJSTORE_BLOCK) && !((uintptr_t)sg->p % OBJSTORE_BLOCK);
    int fd = sg->direct ? c->dfd : c->req->fd;
    if (!w->use_ring) {
        int r = sg->direct ? pwrite_full(fd, sg->p, sg->len, sg->off) : -EINVAL;
        if (r == -EINVAL) {
            if (sg->direct)
                atomic_store(&c->direct, false);
            r = pwrite_full(c->req->fd, sg->p, sg->len, sg->off);
        }
        if (r == 0) {
            wrote(c, sg->len);
            os_crashpoint("objstore-restore-write");
        }
        return r;
    }
    struct io_uring_sqe *sqe;
    int r;
    while (!(sqe = io_uring_get_sqe(&w->ring))) {
        if ((r = io_uring_submit(&w->ring)) < 0 || (r = reap(c, &w->ring, w->slots)) < 0)
            return r;
    }
    io_uring_prep_write(sqe, fd, sg->p, (unsigned)sg->len, sg->off);
    io_uring_sqe_set_data(sqe, sg);
    w->slots[sg->slot].pending++;
    r = io_uring_submit(&w->ring);
    return r < 0 ? r : 0;
}

static int leaf_cb(void *ud, const uint8_t id[ID_BYTES], uint64_t start)
{
    struct restore_ctx *c = ud;
    if (c->nleaves == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 256;
        c->leaves = xrealloc(c->leaves, c->cap * sizeof *c->leaves);
    }
    memcpy(c->leaves[c->nleaves].id, id, ID_BYTES);
    c->leaves[c->nleaves++].start = start;
    return 0;
}

/* Resume: make the gap [s, e) a hole if it holds data. */
static int clear_gap(struct restore_ctx *c, uint64_t s, uint64_t e, uint8_t *scratch)
{
    for (uint64_t o = s; o < e;) {
        size_t n = (size_t)MIN(e - o, (uint64_t)LEAF_SPAN);
        int r = pread_full(c->req->fd, scratch, n, o);
        if (r < 0)
            return r;
        if (!mem_is_zero(scratch, n) &&
            fallocate(c->req->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)o, (off_t)n) < 0) {
            memset(scratch, 0, n);
            if ((r = pwrite_full(c->req->fd, scratch, n, o)) < 0)
                return r;
        }
        o += n;
    }
    return 0;
}

/* Resume: is the target's copy of entry e right? */
static int entry_in_place(struct restore_ctx *c, const struct map_entry *e, uint8_t *scratch)
{
    int r = pread_full(c->req->fd, scratch, e->len, e->off);
    if (r < 0)
        return r;
    const uint8_t *dig;
    size_t nd;
    struct cache_ent *ce;
    if ((r = digests_get(c->repo, e->id, &dig, &nd, &ce)) < 0)
        return r;
    size_t first = e->poff / OBJSTORE_BLOCK, nb = (e->len + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK;
    bool ok = (first + nb) * DIGEST_BYTES <= nd;
    uint8_t d[DIGEST_BYTES * 64];
    for (size_t b = 0; ok && b < nb; b += 64) {
        size_t k = MIN((size_t)64, nb - b);
        size_t bytes = MIN((size_t)k * OBJSTORE_BLOCK, e->len - b * OBJSTORE_BLOCK);
        block_digests(scratch + b * OBJSTORE_BLOCK, bytes, d);
        ok = !memcmp(d, dig + (first + b) * DIGEST_BYTES, k * DIGEST_BYTES);
    }
    cache_put(c->repo, ce);
    return ok;
}

/* Fill the slot's buffer with the leaf's data and list its write runs. */
static int fill_leaf(struct worker *w, const struct leaf_ref *lr, unsigned si, struct buf *piece,
                     uint8_t *piece_id_cur, uint8_t *scratch)
{
    struct restore_ctx *c = w->c;
    struct slot *sl = &w->slots[si];
    struct leaf l = {};
    int r = map_load_leaf(c->repo, lr->id, lr->start, &l);
    if (r < 0)
        return r;
    uint64_t end = MIN(lr->start + LEAF_SPAN, c->m.volume_size), gap = lr->start;
    sl->nsegs = 0;
    sl->segs = xrealloc(sl->segs, (l.n ? l.n : 1) * sizeof *sl->segs);
    for (size_t i = 0; i < l.n && r == 0; i++) {
        const struct map_entry *e = &l.e[i];
        if (e->off + e->len > end) {
            r = -EBADMSG;
            break;
        }
        if (c->req->resume) {
            if ((r = clear_gap(c, gap, e->off, scratch)) < 0)
                break;
            gap = e->off + e->len;
            r = entry_in_place(c, e, scratch);
            if (r < 0)
                break;
            if (r == 1) {
                r = 0;
                atomic_fetch_add(&c->skipped, 1);
                progress_add(&c->pr, &(struct objstore_progress){ .chunks_reused = 1 }, false);
                continue;
            }
        }
        uint8_t *dst = sl->buf + (e->off - lr->start);
        struct blob_loc loc;
        if ((r = index_lookup(c->repo, e->id, &loc)) < 0)
            break;
        if ((uint64_t)e->poff + e->len > loc.plen) {
            r = -EBADMSG;
            break;
        }
        uint64_t got = 0;
        if (e->poff == 0 && e->len == loc.plen) {
            r = piece_fetch_into(c->repo, e->id, dst, e->len, &got);
        } else {
            /* Part of a piece (split by later writes): often the same piece
             * as the entry before. */
            if (!piece->len || memcmp(piece_id_cur, e->id, ID_BYTES)) {
                piece->len = 0;
                buf_reserve(piece, loc.plen);
                r = piece_fetch_into(c->repo, e->id, piece->data, loc.plen, &got);
                if (r == 0) {
                    piece->len = loc.plen;
                    memcpy(piece_id_cur, e->id, ID_BYTES);
                }
            }
            if (r == 0)
                memcpy(dst, piece->data + e->poff, e->len);
        }
        if (r < 0)
            break;
        if (got) {
            atomic_fetch_add(&c->fetched, 1);
            atomic_fetch_add(&c->fetched_bytes, got);
            progress_add(&c->pr, &(struct objstore_progress){ .bytes_uploaded = got, .chunks_uploaded = 1 },
                         false);
        }
        struct seg *last = sl->nsegs ? &sl->segs[sl->nsegs - 1] : NULL;
        if (last && last->off + last->len == e->off && last->len < RUN_MAX) {
            last->len += e->len;
        } else {
            if (last && (r = submit(w, last)) < 0)
                break;
            sl->segs[sl->nsegs++] = (struct seg){ .slot = si, .off = e->off, .len = e->len, .p = dst };
        }
    }
    if (r == 0 && sl->nsegs)
        r = submit(w, &sl->segs[sl->nsegs - 1]);
    if (r == 0 && c->req->resume)
        r = clear_gap(c, gap, end, scratch);
    leaf_free(&l);
    return r;
}

static void *restore_worker(void *arg)
{
    struct restore_ctx *c = arg;
    struct worker *w = xcalloc(1, sizeof *w);
    w->c = c;
    w->use_ring = io_uring_queue_init(RING_ENTRIES, &w->ring, 0) == 0;
    for (unsigned i = 0; i < SLOTS; i++)
        if (posix_memalign((void **)&w->slots[i].buf, OBJSTORE_BLOCK, LEAF_SPAN) != 0)
            w->slots[i].buf = xmalloc(LEAF_SPAN);   /* unaligned: written buffered */
    struct buf piece = {};
    uint8_t piece_cur[ID_BYTES] = {};
    uint8_t *scratch = c->req->resume ? xmalloc(LEAF_SPAN) : NULL;
    unsigned cur = 0;
    int r = 0;
    for (;;) {
        if (atomic_load(&c->err))
            break;
        if (c->req->cancel && atomic_load(c->req->cancel)) {
            r = -ECANCELED;
            break;
        }
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->nleaves)
            break;
        /* The slot's buffer is reused once its writes are done. */
        while (w->use_ring && w->slots[cur].pending)
            if ((r = reap(c, &w->ring, w->slots)) < 0)
                goto out;
        if ((r = fill_leaf(w, &c->leaves[i], cur, &piece, piece_cur, scratch)) < 0)
            break;
        cur = (cur + 1) % SLOTS;
    }
out:
    /* Drain what is in flight even after an error: the buffers are ours. */
    while (w->use_ring && (w->slots[0].pending || w->slots[1].pending)) {
        int r2 = reap(c, &w->ring, w->slots);
        if (r2 < 0 && r == 0)
            r = r2;
        if (r2 == -EINTR || r2 == -EAGAIN)
            break;
    }
    if (r < 0)
        set_error(c, r);
    if (w->use_ring)
        io_uring_queue_exit(&w->ring);
    for (unsigned k = 0; k < SLOTS; k++) {
        free(w->slots[k].buf);
        free(w->slots[k].segs);
    }
    free(w);
    buf_free(&piece);
    free(scratch);
    return NULL;
}

int objstore_restore(struct objstore *repo, const struct objstore_restore_req *req,
                     struct objstore_restore_result *res)
{
    if (!req || req->fd < 0 || !req->manifest)
        return -EINVAL;
    uint64_t t0 = now_mono_ns();
    struct restore_ctx c = { .repo = repo, .req = req, .dfd = -1 };
    uint8_t mid[ID_BYTES];
    int r = manifest_load_prefix(repo, req->manifest, &c.m, mid);
    if (r < 0)
        return r;
    struct stat st;
    if (fstat(req->fd, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (S_ISREG(st.st_mode) && (uint64_t)st.st_size != c.m.volume_size &&
        ftruncate(req->fd, (off_t)c.m.volume_size) < 0) {
        r = -errno;
        goto out;
    }
    if ((r = index_refresh(repo, true)) < 0 || (r = map_walk(repo, c.m.root, c.m.root_level, leaf_cb, &c)) < 0)
        goto out;
    if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
        _cleanup_free_ char *path = xasprintf("/proc/self/fd/%d", req->fd);
        c.dfd = open(path, O_WRONLY | O_DIRECT | O_CLOEXEC);
    }
    atomic_init(&c.direct, c.dfd >= 0);
    /* Resume: the holes of leaves that are entirely holes. */
    if (req->resume) {
        _cleanup_free_ uint8_t *scratch = xmalloc(LEAF_SPAN);
        uint64_t pos = 0;
        for (size_t i = 0; i <= c.nleaves && r == 0; i++) {
            uint64_t s = i < c.nleaves ? c.leaves[i].start : c.m.volume_size;
            r = clear_gap(&c, pos, s, scratch);
            if (i < c.nleaves)
                pos = MIN(c.leaves[i].start + LEAF_SPAN, c.m.volume_size);
        }
        if (r < 0)
            goto out;
    }
    progress_init(&c.pr, req->progress, req->progress_ud, req->progress_each_chunk);
    progress_add(&c.pr, &(struct objstore_progress){ .bytes_total = c.m.data_bytes,
                                                     .chunks_total = c.m.nentries }, true);

    unsigned n = (unsigned)MIN((uint64_t)io_parallelism(req->parallelism), (uint64_t)c.nleaves);
    pthread_t *th = xcalloc(n ? n : 1, sizeof *th);
    unsigned started = 0;
    for (; started < n; started++)
        if ((r = -pthread_create(&th[started], NULL, restore_worker, &c)) < 0) {
            set_error(&c, r);
            break;
        }
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
    progress_add(&c.pr, &(struct objstore_progress){}, true);
    pthread_mutex_destroy(&c.pr.lock);
    if ((r = atomic_load(&c.err)) < 0)
        goto out;
    /* The data is the point of a restore: make it durable before we say so. */
    if (fdatasync(req->fd) < 0 && errno != EINVAL) {
        r = -errno;
        goto out;
    }
    if (res) {
        memset(res, 0, sizeof *res);
        id_to_hex(mid, res->manifest);
        res->volume_size = c.m.volume_size;
        res->bytes_written = atomic_load(&c.written);
        res->bytes_fetched = atomic_load(&c.fetched_bytes);
        res->chunks_fetched = atomic_load(&c.fetched);
        res->chunks_skipped = atomic_load(&c.skipped);
        res->chunks_zero = 0;
        res->seconds = (double)(now_mono_ns() - t0) / 1e9;
    }
    r = 0;
out:
    if (c.dfd >= 0)
        close(c.dfd);
    free(c.leaves);
    manifest_free(&c.m);
    return r;
}
