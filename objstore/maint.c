/* maint.c: verify and gc, the repository's maintenance.
 *
 * verify fetches every distinct chunk a manifest names, in parallel, and
 * checks it the way restore would (authenticated decryption, HMAC of the
 * plaintext against the id); it reports missing and corrupt chunks rather
 * than stopping at the first.
 *
 * gc is mark and sweep: read every manifest (if one cannot be read, stop
 * without deleting: better keep garbage than lose data), collect the ids
 * they reference, list chunks/ and delete the unreferenced chunks last
 * written more than grace_seconds ago. It holds the "gc" lock, and exports
 * hold "export" locks; each side refuses to start while the other's fresh
 * lock exists. The lock is what makes gc safe against an export that
 * decides to reuse an old unreferenced chunk; the grace period protects
 * chunks of writers that do not take locks (older versions, a clock-skewed
 * peer) and leaves the chunks of a just-interrupted export for its rerun. */
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

#define VERIFY_MAX_IDS 1000

static int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ID_BYTES);
}

/* Sort and deduplicate ids in place; returns the new count. */
static size_t ids_unique(uint8_t (*ids)[ID_BYTES], size_t n)
{
    if (n == 0)
        return 0;   /* ids may be NULL: qsort must not get it */
    qsort(ids, n, ID_BYTES, id_cmp);
    size_t w = 0;
    for (size_t i = 0; i < n; i++)
        if (w == 0 || memcmp(ids[w - 1], ids[i], ID_BYTES))
            memmove(ids[w++], ids[i], ID_BYTES);
    return w;
}

struct verify_ctx {
    struct objstore *repo;
    uint8_t (*ids)[ID_BYTES];
    size_t n;
    atomic_size_t next;
    atomic_int err;
    pthread_mutex_t lock;
    struct objstore_verify_result *res;
};

static void note(struct verify_ctx *c, const uint8_t id[ID_BYTES], bool missing)
{
    pthread_mutex_lock(&c->lock);
    struct objstore_verify_result *v = c->res;
    char ***arr = missing ? &v->missing_ids : &v->corrupt_ids;
    size_t *cnt = missing ? &v->nmissing_ids : &v->ncorrupt_ids;
    if (missing)
        v->missing++;
    else
        v->corrupt++;
    if (*cnt < VERIFY_MAX_IDS) {
        *arr = xrealloc(*arr, (*cnt + 1) * sizeof(char *));
        char *hex = xmalloc(OBJSTORE_ID_LEN + 1);
        id_to_hex(id, hex);
        (*arr)[(*cnt)++] = hex;
    }
    pthread_mutex_unlock(&c->lock);
}

static void *verify_worker(void *arg)
{
    struct verify_ctx *c = arg;
    struct buf stored = {}, plain = {};
    uint32_t cs = c->repo->chunk_size;
    for (;;) {
        if (atomic_load(&c->err))
            break;
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n)
            break;
        _cleanup_free_ char *key = chunk_key(c->ids[i]);
        stored.len = 0;
        int r = c->repo->be->ops->get(c->repo->be, key, 2 * (size_t)cs + 4096, &stored);
        if (r == -ENOENT) {
            note(c, c->ids[i], true);
            continue;
        }
        if (r == -EFBIG) {
            note(c, c->ids[i], false);
            continue;
        }
        if (r < 0) {
            int z = 0;
            atomic_compare_exchange_strong(&c->err, &z, r);
            break;
        }
        r = sealed_unpack(&c->repo->keys, SEALED_CHUNK, c->ids[i], stored.data, stored.len, cs, &plain);
        uint8_t id[ID_BYTES];
        if (r == 0)
            id_hmac(&c->repo->keys, NULL, 0, plain.data, plain.len, id);
        if (r < 0 || memcmp(id, c->ids[i], ID_BYTES))
            note(c, c->ids[i], false);
        pthread_mutex_lock(&c->lock);
        c->res->chunks_checked++;
        pthread_mutex_unlock(&c->lock);
    }
    buf_free(&stored);
    buf_free(&plain);
    return NULL;
}

void objstore_verify_result_free(struct objstore_verify_result *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->nmissing_ids; i++)
        free(v->missing_ids[i]);
    for (size_t i = 0; i < v->ncorrupt_ids; i++)
        free(v->corrupt_ids[i]);
    free(v->missing_ids);
    free(v->corrupt_ids);
    memset(v, 0, sizeof *v);
}

int objstore_verify(struct objstore *repo, const char *id_or_prefix, unsigned parallelism,
                    struct objstore_verify_result *res)
{
    struct manifest m = {};
    uint8_t mid[ID_BYTES];
    memset(res, 0, sizeof *res);
    int r = manifest_load_prefix(repo, id_or_prefix, &m, mid);
    if (r < 0)
        return r;
    struct verify_ctx c = { .repo = repo, .res = res };
    pthread_mutex_init(&c.lock, NULL);
    c.ids = xcalloc(m.nchunks ? m.nchunks : 1, ID_BYTES);
    for (uint64_t k = 0; k < m.nchunks; k++)
        if (!id_is_zero(m.ids[k]))
            memcpy(c.ids[c.n++], m.ids[k], ID_BYTES);
    c.n = ids_unique(c.ids, c.n);
    unsigned n = (unsigned)MIN((size_t)default_parallelism(parallelism), c.n);
    pthread_t *th = xcalloc(n ? n : 1, sizeof *th);
    unsigned started = 0;
    for (; started < n; started++)
        if (pthread_create(&th[started], NULL, verify_worker, &c)) {
            atomic_store(&c.err, -EAGAIN);
            break;
        }
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    free(th);
    free(c.ids);
    manifest_free(&m);
    pthread_mutex_destroy(&c.lock);
    if ((r = atomic_load(&c.err)) < 0)
        return r;
    return res->missing || res->corrupt ? -EBADMSG : 0;
}

struct gc_ctx {
    uint8_t (*refs)[ID_BYTES];
    size_t nrefs;
    int64_t cutoff;
    char **doomed;
    size_t ndoomed, cap;
    uint64_t doomed_bytes;
    struct objstore_gc_result *res;
};

struct mf_ids {
    uint8_t (*ids)[ID_BYTES];
    size_t n, cap;
};

static int mf_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct mf_ids *l = ud;
    uint8_t id[ID_BYTES];
    if (id_from_hex(key + strlen("manifests/"), id) < 0)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->ids = xrealloc(l->ids, l->cap * ID_BYTES);
    }
    memcpy(l->ids[l->n++], id, ID_BYTES);
    return 0;
}

static int chunk_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct gc_ctx *g = ud;
    uint8_t id[ID_BYTES];
    const char *name = strrchr(key, '/');
    if (!name || id_from_hex(name + 1, id) < 0)
        return 0;   /* not a chunk of ours: leave it alone */
    g->res->chunks_total++;
    /* No manifest left: nothing is referenced (and bsearch must not get NULL). */
    if (g->nrefs && bsearch(id, g->refs, g->nrefs, ID_BYTES, id_cmp)) {
        g->res->chunks_referenced++;
        return 0;
    }
    if (st->mtime > g->cutoff) {
        g->res->chunks_young++;
        return 0;
    }
    if (g->ndoomed == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->doomed = xrealloc(g->doomed, g->cap * sizeof(char *));
    }
    g->doomed[g->ndoomed++] = xstrdup(key);
    g->doomed_bytes += st->size;
    return 0;
}

int objstore_gc(struct objstore *repo, uint64_t grace_seconds, struct objstore_gc_result *res)
{
    struct objstore_gc_result local = {};
    _cleanup_free_ char *lock = NULL;
    struct mf_ids mf = {};
    struct gc_ctx g = { .res = &local };
    int r = repo_lock(repo, "gc", "export", &lock);
    if (r < 0)
        return r;
    if ((r = repo->be->ops->list(repo->be, "manifests/", mf_cb, &mf)) < 0)
        goto out;
    size_t cap = 0;
    for (size_t i = 0; i < mf.n; i++) {
        struct manifest m = {};
        r = manifest_load(repo, mf.ids[i], &m, NULL);
        if (r == -ENOENT)
            continue;   /* deleted meanwhile: its chunks are garbage anyway */
        if (r < 0)
            goto out;
        for (uint64_t k = 0; k < m.nchunks; k++) {
            if (id_is_zero(m.ids[k]))
                continue;
            if (g.nrefs == cap) {
                cap = cap ? 2 * cap : 1024;
                g.refs = xrealloc(g.refs, cap * ID_BYTES);
            }
            memcpy(g.refs[g.nrefs++], m.ids[k], ID_BYTES);
        }
        manifest_free(&m);
        g.nrefs = ids_unique(g.refs, g.nrefs);
    }
    g.cutoff = (int64_t)(now_real_ns() / 1000000000ull) - (int64_t)MIN(grace_seconds, (uint64_t)INT32_MAX);
    if ((r = repo->be->ops->list(repo->be, "chunks/", chunk_cb, &g)) < 0)
        goto out;
    for (size_t i = 0; i < g.ndoomed; i++) {
        if ((r = repo->be->ops->del(repo->be, g.doomed[i])) < 0)
            goto out;
        local.chunks_deleted++;
    }
    local.bytes_deleted = g.doomed_bytes;
    r = 0;
out:
    if (res)
        *res = local;
    for (size_t i = 0; i < g.ndoomed; i++)
        free(g.doomed[i]);
    free(g.doomed);
    free(g.refs);
    free(mf.ids);
    repo_unlock(repo, lock);
    return r;
}
