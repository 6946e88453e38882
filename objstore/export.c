/* export.c: export a snapshot image into the repository.
 *
 * The caller names the byte ranges worth reading (changed extents since the
 * parent, or allocated extents for a first export). Every chunk a range
 * touches is read whole; the other chunks come from the parent manifest's
 * map, or are zero without a parent. When the volume size differs from the
 * parent's, the last chunk of each is re-read too, because a short tail
 * chunk's bytes (and so its id) depend on where the volume ends.
 *
 * Workers (default: one per CPU, at least two) take chunk indexes from a
 * shared counter, pread, skip all-zero chunks, HMAC, and upload only ids the
 * repository lacks (a HEAD per chunk: its latency is hidden by the other
 * workers, and it costs the size of the change, where a LIST of chunks/
 * would cost the size of the repository). An in-memory set of the ids seen
 * in this export stops two workers uploading the same data twice.
 *
 * The manifest is written last and only if everything before succeeded: an
 * interrupted export leaves no manifest, and its rerun finds the chunks that
 * were completely written (puts are atomic) and uploads only the rest. An
 * export holds an "export" lock in the repository so that gc, which takes
 * a "gc" lock, never deletes an old unreferenced chunk this export has just
 * decided to reuse. */
#include <stdatomic.h>
#include <string.h>

#include "amber/crashpoint.h"
#include "internal.h"

#define PROGRESS_INTERVAL_NS 100000000ull

void progress_init(struct progress *pr, objstore_progress_fn fn, void *ud, bool each)
{
    memset(pr, 0, sizeof *pr);
    pthread_mutex_init(&pr->lock, NULL);
    pr->fn = fn;
    pr->ud = ud;
    pr->interval_ns = each ? 0 : PROGRESS_INTERVAL_NS;
}

void progress_add(struct progress *pr, const struct objstore_progress *d, bool force)
{
    pthread_mutex_lock(&pr->lock);
    pr->p.bytes_total += d->bytes_total;
    pr->p.bytes_read += d->bytes_read;
    pr->p.bytes_uploaded += d->bytes_uploaded;
    pr->p.chunks_total += d->chunks_total;
    pr->p.chunks_uploaded += d->chunks_uploaded;
    pr->p.chunks_reused += d->chunks_reused;
    pr->p.chunks_zero += d->chunks_zero;
    uint64_t now = now_mono_ns();
    if (pr->fn && (force || now - pr->last_ns >= pr->interval_ns)) {
        pr->last_ns = now;
        pr->fn(pr->ud, &pr->p);
    }
    pthread_mutex_unlock(&pr->lock);
}

/* A set of ids, open addressing on the id's first bytes (already uniformly
 * random: they are HMAC outputs). */
struct idset {
    pthread_mutex_t lock;
    uint8_t (*slots)[ID_BYTES];
    size_t cap;
};

static void idset_init(struct idset *s, size_t expect)
{
    pthread_mutex_init(&s->lock, NULL);
    s->cap = 16;
    while (s->cap < 2 * expect)
        s->cap *= 2;
    s->slots = xcalloc(s->cap, ID_BYTES);
}

/* Insert; returns true if the id was already there. */
static bool idset_add(struct idset *s, const uint8_t id[ID_BYTES])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    pthread_mutex_lock(&s->lock);
    bool found = false;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (id_is_zero(s->slots[i])) {
            memcpy(s->slots[i], id, ID_BYTES);
            break;
        }
        if (!memcmp(s->slots[i], id, ID_BYTES)) {
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

struct export_ctx {
    struct objstore *repo;
    const struct objstore_export_req *req;
    uint64_t *todo;             /* chunk indexes to read */
    uint64_t ntodo;
    atomic_uint_fast64_t next;
    uint8_t (*ids)[ID_BYTES];
    struct idset seen;
    struct progress pr;
    atomic_int err;
    const char *lock_key;
    atomic_uint_fast64_t lock_refreshed_ns;
    atomic_uint_fast64_t bytes_read, bytes_uploaded, uploaded, reused, zero;
};

static void set_error(struct export_ctx *c, int r)
{
    int zero = 0;
    atomic_compare_exchange_strong(&c->err, &zero, r);
}

static bool should_stop(struct export_ctx *c)
{
    if (atomic_load(&c->err))
        return true;
    if (c->req->cancel && atomic_load(c->req->cancel)) {
        set_error(c, -ECANCELED);
        return true;
    }
    return false;
}

static int read_full(int fd, void *p, size_t len, uint64_t off)
{
    if (faultpoint("export-read") < 0)    /* tests: a disk read error */
        return -EIO;
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, (uint8_t *)p + got, len - got, (off_t)(off + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0) {
            /* A shorter file reads as zeros past its end, like a hole. */
            memset((uint8_t *)p + got, 0, len - got);
            break;
        }
        got += (size_t)n;
    }
    return 0;
}

static int export_one(struct export_ctx *c, uint64_t idx, uint8_t *data, struct buf *sealed)
{
    const struct objstore_export_req *req = c->req;
    uint64_t cs = c->repo->chunk_size, off = idx * cs;
    size_t len = (size_t)MIN(cs, req->size - off);
    struct objstore_progress d = {};
    int r = read_full(req->fd, data, len, off);
    if (r < 0)
        return r;
    d.bytes_read = len;
    atomic_fetch_add(&c->bytes_read, len);
    if (mem_is_zero(data, len)) {
        memset(c->ids[idx], 0, ID_BYTES);
        atomic_fetch_add(&c->zero, 1);
        d.chunks_zero = 1;
        progress_add(&c->pr, &d, false);
        return 0;
    }
    uint8_t id[ID_BYTES];
    id_hmac(&c->repo->keys, NULL, 0, data, len, id);
    memcpy(c->ids[idx], id, ID_BYTES);
    bool have = idset_add(&c->seen, id);
    _cleanup_free_ char *key = chunk_key(id);
    if (!have) {
        r = c->repo->be->ops->head(c->repo->be, key, NULL);
        if (r == 0)
            have = true;
        else if (r != -ENOENT)
            return r;
    }
    if (have) {
        atomic_fetch_add(&c->reused, 1);
        d.chunks_reused = 1;
    } else {
        sealed->len = 0;
        if ((r = sealed_pack(&c->repo->keys, SEALED_CHUNK, id, data, len, sealed)) < 0)
            return r;
        if ((r = c->repo->be->ops->put(c->repo->be, key, sealed->data, sealed->len)) < 0)
            return r;
        atomic_fetch_add(&c->uploaded, 1);
        atomic_fetch_add(&c->bytes_uploaded, sealed->len);
        d.chunks_uploaded = 1;
        d.bytes_uploaded = sealed->len;
    }
    progress_add(&c->pr, &d, false);
    return 0;
}

static void maybe_refresh_lock(struct export_ctx *c)
{
    uint64_t now = now_mono_ns(), last = atomic_load(&c->lock_refreshed_ns);
    if (now - last < repo_lock_refresh_ns())
        return;
    if (atomic_compare_exchange_strong(&c->lock_refreshed_ns, &last, now))
        repo_lock_refresh(c->repo, c->lock_key);    /* failure: retried next time */
}

static void *export_worker(void *arg)
{
    struct export_ctx *c = arg;
    uint8_t *data = xmalloc(c->repo->chunk_size);
    struct buf sealed = {};
    for (;;) {
        if (should_stop(c))
            break;
        uint64_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->ntodo)
            break;
        int r = export_one(c, c->todo[i], data, &sealed);
        if (r < 0) {
            set_error(c, r);
            break;
        }
        maybe_refresh_lock(c);
    }
    free(data);
    buf_free(&sealed);
    return NULL;
}

static int validate(const struct objstore_export_req *req)
{
    if (!req || req->fd < 0 || !req->snapshot_uuid || (req->nranges && !req->ranges) ||
        (req->nlabels && !req->labels) || req->size > (1ull << 56))
        return -EINVAL;
    for (size_t i = 0; i < req->nranges; i++) {
        const struct objstore_range *g = &req->ranges[i];
        if (g->offset > req->size || g->length > req->size - g->offset)
            return -EINVAL;
    }
    for (size_t i = 0; i < req->nlabels; i++)
        if (!req->labels[i].key || !req->labels[i].value)
            return -EINVAL;
    return 0;
}

int objstore_export(struct objstore *repo, const struct objstore_export_req *req,
                    struct objstore_export_result *res)
{
    int r = validate(req);
    if (r < 0)
        return r;
    uint64_t t0 = now_mono_ns(), cs = repo->chunk_size;
    uint64_t nchunks = (req->size + cs - 1) / cs;
    struct manifest parent = {}, m = {};
    uint8_t parent_id[ID_BYTES];
    _cleanup_free_ uint8_t *touched = NULL;
    _cleanup_free_ char *lock = NULL;
    struct export_ctx c = { .repo = repo, .req = req };
    pthread_t *threads = NULL;
    unsigned nthreads = 0;

    if ((r = repo_lock(repo, "export", "gc", &lock)) < 0)
        return r;
    if (req->parent) {
        if ((r = manifest_load_prefix(repo, req->parent, &parent, parent_id)) < 0)
            goto out;
        if (parent.chunk_size != cs) {
            r = -EINVAL;
            goto out;
        }
    }

    c.ids = xcalloc(nchunks ? nchunks : 1, ID_BYTES);
    touched = xcalloc(nchunks ? nchunks : 1, 1);
    for (size_t i = 0; i < req->nranges; i++) {
        const struct objstore_range *g = &req->ranges[i];
        if (!g->length)
            continue;
        for (uint64_t k = g->offset / cs; k <= (g->offset + g->length - 1) / cs; k++)
            touched[k] = 1;
    }
    if (req->parent) {
        for (uint64_t k = 0; k < MIN(nchunks, parent.nchunks); k++)
            memcpy(c.ids[k], parent.ids[k], ID_BYTES);
        if (parent.volume_size != req->size && nchunks) {
            touched[nchunks - 1] = 1;
            if (parent.nchunks && parent.nchunks - 1 < nchunks)
                touched[parent.nchunks - 1] = 1;
        }
    }
    c.todo = xcalloc(nchunks ? nchunks : 1, sizeof(uint64_t));
    uint64_t total_bytes = 0;
    for (uint64_t k = 0; k < nchunks; k++)
        if (touched[k]) {
            c.todo[c.ntodo++] = k;
            total_bytes += MIN(cs, req->size - k * cs);
        }

    idset_init(&c.seen, c.ntodo);
    progress_init(&c.pr, req->progress, req->progress_ud, req->progress_each_chunk);
    progress_add(&c.pr, &(struct objstore_progress){ .bytes_total = total_bytes,
                                                     .chunks_total = c.ntodo }, true);
    c.lock_key = lock;
    atomic_store(&c.lock_refreshed_ns, now_mono_ns());

    nthreads = (unsigned)MIN((uint64_t)default_parallelism(req->parallelism), c.ntodo);
    threads = xcalloc(nthreads ? nthreads : 1, sizeof *threads);
    unsigned started = 0;
    for (; started < nthreads; started++)
        if ((r = -pthread_create(&threads[started], NULL, export_worker, &c)) < 0) {
            set_error(&c, r);
            break;
        }
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    progress_add(&c.pr, &(struct objstore_progress){}, true);
    if ((r = atomic_load(&c.err)) < 0)
        goto out_ctx;
    if (req->cancel && atomic_load(req->cancel)) {
        r = -ECANCELED;
        goto out_ctx;
    }

    m.volume_size = req->size;
    m.chunk_size = (uint32_t)cs;
    m.created_ns = req->created_ns ? req->created_ns : now_real_ns();
    m.nchunks = nchunks;
    m.ids = TAKE_PTR(c.ids);
    if (req->parent) {
        m.has_parent = true;
        memcpy(m.parent, parent_id, ID_BYTES);
    }
    m.snapshot_uuid = xstrdup(req->snapshot_uuid);
    m.volume_name = xstrdup(req->volume_name ? req->volume_name : "");
    m.label_keys = xcalloc(req->nlabels ? req->nlabels : 1, sizeof(char *));
    m.label_values = xcalloc(req->nlabels ? req->nlabels : 1, sizeof(char *));
    for (; m.nlabels < req->nlabels; m.nlabels++) {
        m.label_keys[m.nlabels] = xstrdup(req->labels[m.nlabels].key);
        m.label_values[m.nlabels] = xstrdup(req->labels[m.nlabels].value);
    }
    uint8_t mid[ID_BYTES];
    if ((r = manifest_store(repo, &m, mid)) < 0)
        goto out_ctx;

    if (res) {
        memset(res, 0, sizeof *res);
        id_to_hex(mid, res->manifest);
        res->bytes_read = atomic_load(&c.bytes_read);
        res->bytes_uploaded = atomic_load(&c.bytes_uploaded);
        res->chunks_uploaded = atomic_load(&c.uploaded);
        res->chunks_reused = atomic_load(&c.reused);
        res->chunks_zero = atomic_load(&c.zero);
        uint64_t from_parent = 0;
        if (req->parent)
            for (uint64_t k = 0; k < nchunks; k++)
                from_parent += !touched[k] && !id_is_zero(m.ids[k]);
        res->chunks_from_parent = from_parent;
        res->seconds = (double)(now_mono_ns() - t0) / 1e9;
    }
    r = 0;
out_ctx:
    pthread_mutex_destroy(&c.seen.lock);
    pthread_mutex_destroy(&c.pr.lock);
    free(c.seen.slots);
out:
    free(threads);
    free(c.todo);
    free(c.ids);
    manifest_free(&m);
    manifest_free(&parent);
    repo_unlock(repo, lock);
    return r;
}
