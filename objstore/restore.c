/* restore.c: write a manifest's exact bytes into a target file.
 *
 * Workers (default one per CPU, at least two) take chunk indexes from a
 * shared counter. Each fetches a chunk, authenticates and decompresses it,
 * checks its HMAC against the id the manifest names and its length against
 * the chunk's place, and only then hands it to its own io_uring; while the
 * write is in flight the worker fetches the next chunk into its second
 * buffer, so network, CPU and disk overlap. Where io_uring cannot be set up
 * (old kernel, seccomp) the worker falls back to pwrite. Zero chunks are not
 * written: the target is a fresh sparse file, so they stay holes.
 *
 * Resume is by re-verification rather than by a state file: with
 * req->resume, each data chunk already in the target is read back and
 * HMAC'ed, and fetched only if it does not match; a zero chunk that holds
 * data is punched. This needs no bookkeeping that could disagree with the
 * disk after a crash (a state file would have to be fsync-ordered against
 * the data), costs a local read of what was restored, and also repairs a
 * target that was damaged since. */
#include <fcntl.h>
#include <liburing.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"

#define SLOTS 2

struct restore_ctx {
    struct objstore *repo;
    const struct objstore_restore_req *req;
    struct manifest m;
    uint64_t *todo;
    uint64_t ntodo;
    atomic_uint_fast64_t next;
    atomic_int err;
    struct progress pr;
    atomic_uint_fast64_t written, fetched_bytes, fetched, skipped;
};

struct slot {
    struct buf plain;
    uint64_t off;
    bool busy;
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

/* Finish one completed write: a short write is completed with pwrite. */
static int reap(struct restore_ctx *c, struct io_uring *ring, struct slot *slots)
{
    struct io_uring_cqe *cqe;
    int r = io_uring_wait_cqe(ring, &cqe);
    if (r < 0)
        return r;
    struct slot *s = &slots[io_uring_cqe_get_data64(cqe)];
    int res = cqe->res;
    io_uring_cqe_seen(ring, cqe);
    s->busy = false;
    if (res < 0)
        return res;
    if ((size_t)res < s->plain.len)
        r = pwrite_full(c->req->fd, s->plain.data + res, s->plain.len - (size_t)res,
                        s->off + (uint64_t)res);
    if (r == 0) {
        atomic_fetch_add(&c->written, s->plain.len);
        progress_add(&c->pr, &(struct objstore_progress){ .bytes_read = s->plain.len }, false);
    }
    return r;
}

/* Is the target's copy of chunk idx already right? */
static int already_there(struct restore_ctx *c, uint64_t idx, size_t len, uint8_t *scratch)
{
    uint64_t off = idx * c->m.chunk_size;
    int r = pread_full(c->req->fd, scratch, len, off);
    if (r < 0)
        return r;
    if (id_is_zero(c->m.ids[idx])) {
        if (mem_is_zero(scratch, len))
            return 1;
        if (fallocate(c->req->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
            return 1;
        memset(scratch, 0, len);
        r = pwrite_full(c->req->fd, scratch, len, off);
        return r < 0 ? r : 1;
    }
    uint8_t id[ID_BYTES];
    id_hmac(&c->repo->keys, NULL, 0, scratch, len, id);
    return memcmp(id, c->m.ids[idx], ID_BYTES) == 0;
}

static int fetch(struct restore_ctx *c, uint64_t idx, size_t len, struct buf *stored, struct buf *plain)
{
    _cleanup_free_ char *key = chunk_key(c->m.ids[idx]);
    stored->len = 0;
    int r = c->repo->be->ops->get(c->repo->be, key, 2 * (size_t)c->m.chunk_size + 4096, stored);
    if (r == -EFBIG)
        return -EBADMSG;
    if (r < 0)
        return r;
    r = sealed_unpack(&c->repo->keys, SEALED_CHUNK, c->m.ids[idx], stored->data, stored->len,
                      c->m.chunk_size, plain);
    if (r < 0)
        return r;
    uint8_t id[ID_BYTES];
    id_hmac(&c->repo->keys, NULL, 0, plain->data, plain->len, id);
    if (plain->len != len || memcmp(id, c->m.ids[idx], ID_BYTES))
        return -EBADMSG;
    atomic_fetch_add(&c->fetched, 1);
    atomic_fetch_add(&c->fetched_bytes, stored->len);
    progress_add(&c->pr, &(struct objstore_progress){ .bytes_uploaded = stored->len,
                                                      .chunks_uploaded = 1 }, false);
    return 0;
}

static void *restore_worker(void *arg)
{
    struct restore_ctx *c = arg;
    struct io_uring ring;
    bool use_ring = io_uring_queue_init(SLOTS * 2, &ring, 0) == 0;
    struct slot slots[SLOTS] = {};
    struct buf stored = {};
    uint8_t *scratch = c->req->resume ? xmalloc(c->m.chunk_size) : NULL;
    unsigned inflight = 0;
    int r = 0;
    for (;;) {
        if (atomic_load(&c->err))
            break;
        if (c->req->cancel && atomic_load(c->req->cancel)) {
            r = -ECANCELED;
            break;
        }
        uint64_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->ntodo)
            break;
        uint64_t idx = c->todo[i], off = idx * c->m.chunk_size;
        size_t len = (size_t)MIN((uint64_t)c->m.chunk_size, c->m.volume_size - off);
        if (scratch) {
            r = already_there(c, idx, len, scratch);
            if (r < 0)
                break;
            if (r == 1) {
                r = 0;
                atomic_fetch_add(&c->skipped, 1);
                progress_add(&c->pr, &(struct objstore_progress){ .chunks_reused = 1 }, false);
                continue;
            }
            if (id_is_zero(c->m.ids[idx]))
                continue;
        }
        struct slot *s = NULL;
        unsigned si = 0;
        while (!s) {
            for (si = 0; si < SLOTS; si++)
                if (!slots[si].busy) {
                    s = &slots[si];
                    break;
                }
            if (!s) {
                inflight--;
                if ((r = reap(c, &ring, slots)) < 0)
                    goto out;
            }
        }
        if ((r = fetch(c, idx, len, &stored, &s->plain)) < 0)
            break;
        s->off = off;
        if (!use_ring) {
            if ((r = pwrite_full(c->req->fd, s->plain.data, len, off)) < 0)
                break;
            atomic_fetch_add(&c->written, len);
            progress_add(&c->pr, &(struct objstore_progress){ .bytes_read = len }, false);
            continue;
        }
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        if (!sqe) {
            r = -EBUSY;
            break;
        }
        io_uring_prep_write(sqe, c->req->fd, s->plain.data, (unsigned)len, off);
        io_uring_sqe_set_data64(sqe, si);
        s->busy = true;
        inflight++;
        if ((r = io_uring_submit(&ring)) < 0)
            break;
        r = 0;
    }
out:
    /* Drain what is in flight even after an error: the buffers are ours. */
    while (use_ring && inflight) {
        inflight--;
        int r2 = reap(c, &ring, slots);
        if (r2 < 0 && r == 0)
            r = r2;
        if (r2 == -EINTR || r2 == -EAGAIN)
            break;
    }
    if (r < 0)
        set_error(c, r);
    if (use_ring)
        io_uring_queue_exit(&ring);
    for (unsigned i = 0; i < SLOTS; i++)
        buf_free(&slots[i].plain);
    buf_free(&stored);
    free(scratch);
    return NULL;
}

int objstore_restore(struct objstore *repo, const struct objstore_restore_req *req,
                     struct objstore_restore_result *res)
{
    if (!req || req->fd < 0 || !req->manifest)
        return -EINVAL;
    uint64_t t0 = now_mono_ns();
    struct restore_ctx c = { .repo = repo, .req = req };
    uint8_t mid[ID_BYTES];
    int r = manifest_load_prefix(repo, req->manifest, &c.m, mid);
    if (r < 0)
        return r;
    if (c.m.chunk_size != repo->chunk_size) {
        r = -EBADMSG;
        goto out;
    }
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

    c.todo = xcalloc(c.m.nchunks ? c.m.nchunks : 1, sizeof(uint64_t));
    uint64_t total = 0, zero = 0;
    for (uint64_t k = 0; k < c.m.nchunks; k++) {
        bool z = id_is_zero(c.m.ids[k]);
        zero += z;
        if (!z)
            total += MIN((uint64_t)c.m.chunk_size, c.m.volume_size - k * c.m.chunk_size);
        if (!z || req->resume)
            c.todo[c.ntodo++] = k;
    }
    progress_init(&c.pr, req->progress, req->progress_ud, req->progress_each_chunk);
    progress_add(&c.pr, &(struct objstore_progress){ .bytes_total = total, .chunks_total = c.ntodo - (req->resume ? zero : 0),
                                                     .chunks_zero = zero }, true);

    unsigned n = (unsigned)MIN((uint64_t)default_parallelism(req->parallelism), c.ntodo);
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
        res->chunks_zero = zero;
        res->seconds = (double)(now_mono_ns() - t0) / 1e9;
    }
    r = 0;
out:
    free(c.todo);
    manifest_free(&c.m);
    return r;
}
