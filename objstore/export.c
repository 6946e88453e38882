/* export.c: export a snapshot image into the repository.
 *
 * The caller names the byte ranges worth reading (changed extents since the
 * parent, or allocated extents for a first export). They are rounded out to
 * 4 KiB blocks, coalesced, and cut at multiples of the chunk size into work
 * items; only those bytes are read. Workers (one per CPU, at least two)
 * take items from a shared counter, pread, and digest each block (SHA-256,
 * 16 bytes kept); all-zero blocks become holes, each run of non-zero blocks
 * a piece whose id derives from its digests. A piece the index already
 * lists (any volume, any snapshot: dedup) or another worker just made is
 * reused; a new one is sealed into the worker's own pack, uploaded with its
 * index when full. Comparing each block's digest with the parent's (the
 * parent's map says which piece and block held that offset; piece digests
 * are small ranged reads, cached) gives the exact `changed` ranges, cheaply
 * and without the parent's data.
 *
 * Then the map: the parent's map with the read ranges replaced (map.c),
 * only the touched leaves and their ancestors new, stored as nodes in one
 * more pack; then the manifest, after a flush. An interrupted export leaves
 * no manifest; its rerun finds the pieces of every pack whose index was
 * written (a failing or cancelled export still stores the packs it was
 * filling) and uploads only the rest. An export holds an "export" lock
 * (with its start time) that gc reads: gc never deletes a pack an export
 * that was running when gc trashed it may have decided to reuse. */
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>

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
    size_t cap, n;
};

static void idset_init(struct idset *s, size_t expect)
{
    pthread_mutex_init(&s->lock, NULL);
    s->cap = 16;
    while (s->cap < 2 * expect)
        s->cap *= 2;
    s->slots = xcalloc(s->cap, ID_BYTES);
}

static void idset_put(uint8_t (*slots)[ID_BYTES], size_t cap, const uint8_t id[ID_BYTES])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    for (size_t i = h & (cap - 1);; i = (i + 1) & (cap - 1))
        if (id_is_zero(slots[i])) {
            memcpy(slots[i], id, ID_BYTES);
            return;
        }
}

/* Insert; returns true if the id was already there. */
static bool idset_add(struct idset *s, const uint8_t id[ID_BYTES])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    pthread_mutex_lock(&s->lock);
    if (2 * (s->n + 1) > s->cap) {
        size_t cap = 2 * s->cap;
        uint8_t (*slots)[ID_BYTES] = xcalloc(cap, ID_BYTES);
        for (size_t i = 0; i < s->cap; i++)
            if (!id_is_zero(s->slots[i]))
                idset_put(slots, cap, s->slots[i]);
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    bool found = false;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        if (id_is_zero(s->slots[i])) {
            memcpy(s->slots[i], id, ID_BYTES);
            s->n++;
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

struct item {
    uint64_t off;
    uint32_t len;
    struct map_entry *pieces;
    size_t npieces;
    struct objstore_range *changed;
    size_t nchanged;
};

struct export_ctx {
    struct objstore *repo;
    const struct objstore_export_req *req;
    const struct export_src *src;
    struct manifest parent;
    bool has_parent;
    struct item *items;
    size_t nitems;
    atomic_size_t next;
    struct idset seen;
    struct progress pr;
    struct pack_stats ps;
    pthread_mutex_t rlock;          /* reused: pieces found in the index */
    uint8_t (*reused_ids)[ID_BYTES];
    size_t nreused, creused;
    atomic_int err;
    const char *lock_key;
    atomic_uint_fast64_t lock_refreshed_ns;
    atomic_uint_fast64_t bytes_read, uploaded, reused, zero;
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

/* The image is read with O_DIRECT where the filesystem allows it (a second
 * descriptor opened through /proc/self/fd): no copy through the page cache,
 * which was a tenth of a full export's CPU, and no eviction of the node's
 * cache by a volume read once. Small reads (scattered 4 KiB changes: on
 * btrfs a direct read of 4 KiB took twice as long as a buffered one), reads
 * that are not block-aligned (a volume's end), and reads the filesystem
 * refuses (EINVAL) use the caller's fd. */
#define DIRECT_READ_MIN (256u << 10)
struct fd_src {
    int fd, dfd;
    atomic_bool direct;
};

static int pread_all(int fd, uint8_t *p, size_t len, uint64_t off)
{
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

static int fd_read(void *ud, void *p, size_t len, uint64_t off)
{
    if (faultpoint("export-read") < 0)    /* tests: a disk read error */
        return -EIO;
    struct fd_src *s = ud;
    if (s->dfd >= 0 && atomic_load(&s->direct) && len >= DIRECT_READ_MIN && !(len % OBJSTORE_BLOCK) &&
        !(off % OBJSTORE_BLOCK) &&
        !((uintptr_t)p % OBJSTORE_BLOCK)) {
        int r = pread_all(s->dfd, p, len, off);
        if (r != -EINVAL)
            return r;
        atomic_store(&s->direct, false);
    }
    return pread_all(s->fd, p, len, off);
}

static void add_range(struct objstore_range **v, size_t *n, uint64_t off, uint64_t len)
{
    if (*n && (*v)[*n - 1].offset + (*v)[*n - 1].length == off) {
        (*v)[*n - 1].length += len;
        return;
    }
    if ((*n & (*n - 1)) == 0)   /* grow at powers of two */
        *v = xrealloc(*v, (*n ? 2 * *n : 1) * sizeof **v);
    (*v)[(*n)++] = (struct objstore_range){ off, len };
}

/* Per worker: the parent leaf and piece digests last looked at. */
struct cmp_state {
    struct leaf leaf;
    bool have_leaf;
    uint64_t leaf_start;
    uint8_t dig_id[ID_BYTES];
    const uint8_t *dig;
    size_t ndig;
    struct cache_ent *dig_ent;
};

static void cmp_state_free(struct export_ctx *c, struct cmp_state *s)
{
    leaf_free(&s->leaf);
    cache_put(c->repo, s->dig_ent);
    memset(s, 0, sizeof *s);
}

/* Is block `off` (new digest d, or zero) different from the parent's? */
/* A block at an end of the volume (shorter than a block now or in the
 * parent): digests of different lengths say nothing, compare the bytes. */
static int tail_changed(struct export_ctx *c, const struct map_entry *e, uint64_t off, const uint8_t *data,
                        size_t blen)
{
    const uint8_t *p;
    size_t n;
    struct cache_ent *ce;
    int r = cached_blob(c->repo, e->id, BLOB_PIECE, &p, &n, &ce);
    if (r < 0)
        return r;
    uint64_t po = e->poff + (off - e->off);
    size_t plen = (size_t)MIN((uint64_t)OBJSTORE_BLOCK, e->off + e->len - off);
    plen = (size_t)MIN((uint64_t)plen, c->parent.volume_size - off);
    if (po + plen > n) {
        cache_put(c->repo, ce);
        return -EBADMSG;
    }
    size_t common = MIN(plen, blen);
    bool diff = memcmp(p + po, data, common) != 0;
    if (!diff && blen > common)     /* past the parent's end: zero there */
        diff = !mem_is_zero(data + common, blen - common);
    cache_put(c->repo, ce);
    return diff;
}

static int block_changed(struct export_ctx *c, struct cmp_state *s, uint64_t off, const uint8_t *d,
                         const uint8_t *new_id, uint32_t new_bi, const uint8_t *data, size_t blen)
{
    if (!c->has_parent)
        return d != NULL;
    if (off >= c->parent.volume_size)
        return d != NULL;
    uint64_t ls = off / LEAF_SPAN * LEAF_SPAN;
    if (!s->have_leaf || s->leaf_start != ls) {
        leaf_free(&s->leaf);
        s->have_leaf = false;
        uint8_t lid[ID_BYTES];
        int r = map_leaf_at(c->repo, c->parent.root, c->parent.root_level, off, lid);
        if (r < 0)
            return r;
        if (!id_is_zero(lid) && (r = map_load_leaf(c->repo, lid, ls, &s->leaf)) < 0)
            return r;
        s->have_leaf = true;
        s->leaf_start = ls;
    }
    /* The entry covering off (binary search). */
    size_t lo = 0, hi = s->leaf.n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->leaf.e[mid].off + s->leaf.e[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo >= s->leaf.n || s->leaf.e[lo].off > off)
        return d != NULL;               /* a hole in the parent */
    const struct map_entry *e = &s->leaf.e[lo];
    if (blen < OBJSTORE_BLOCK || e->off + e->len - off < OBJSTORE_BLOCK ||
        c->parent.volume_size - off < OBJSTORE_BLOCK)
        return tail_changed(c, e, off, data, blen);
    if (!d)
        return 1;                       /* zeroed */
    uint32_t bi = (uint32_t)((e->poff + (off - e->off)) / OBJSTORE_BLOCK);
    if (new_id && !memcmp(new_id, e->id, ID_BYTES) && bi == new_bi)
        return 0;                       /* the very same piece block */
    if (!s->dig || memcmp(s->dig_id, e->id, ID_BYTES)) {
        cache_put(c->repo, s->dig_ent);
        s->dig_ent = NULL;
        s->dig = NULL;
        int r = digests_get(c->repo, e->id, &s->dig, &s->ndig, &s->dig_ent);
        if (r < 0)
            return r;
        memcpy(s->dig_id, e->id, ID_BYTES);
    }
    if ((size_t)(bi + 1) * DIGEST_BYTES > s->ndig)
        return -EBADMSG;
    return memcmp(s->dig + (size_t)bi * DIGEST_BYTES, d, DIGEST_BYTES) != 0;
}

/* A blob the index had: revalidate() checks it is still indexed at the end. */
static void note_reused(void *ud, const uint8_t id[ID_BYTES])
{
    struct export_ctx *c = ud;
    pthread_mutex_lock(&c->rlock);
    if (c->nreused == c->creused) {
        c->creused = c->creused ? 2 * c->creused : 256;
        c->reused_ids = xrealloc(c->reused_ids, c->creused * ID_BYTES);
    }
    memcpy(c->reused_ids[c->nreused++], id, ID_BYTES);
    pthread_mutex_unlock(&c->rlock);
}

static int export_item(struct export_ctx *c, struct item *it, uint8_t *data, uint8_t *dig,
                       struct pack_writer *w, struct cmp_state *cs)
{
    struct objstore *repo = c->repo;
    int r = c->src->read(c->src->ud, data, it->len, it->off);
    if (r < 0)
        return r;
    atomic_fetch_add(&c->bytes_read, it->len);
    size_t nb = (it->len + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK;
    struct objstore_progress d = { .bytes_read = it->len };
    uint8_t *isnz = dig + nb * DIGEST_BYTES;    /* a flag a block */
    for (size_t b = 0; b < nb; b++) {
        size_t bl = MIN((size_t)OBJSTORE_BLOCK, it->len - b * OBJSTORE_BLOCK);
        const uint8_t *p = data + b * OBJSTORE_BLOCK;
        isnz[b] = !mem_is_zero(p, bl);
        if (isnz[b])
            block_digests(p, bl, dig + b * DIGEST_BYTES);
        else
            d.chunks_zero++;
    }
    atomic_fetch_add(&c->zero, d.chunks_zero);
    /* Runs of non-zero blocks are pieces. */
    for (size_t b = 0; b < nb;) {
        if (!isnz[b]) {
            r = c->req->no_changed ? 0 : block_changed(c, cs, it->off + b * OBJSTORE_BLOCK, NULL, NULL, 0,
                                                       data + b * OBJSTORE_BLOCK,
                                                       MIN((size_t)OBJSTORE_BLOCK, it->len - b * OBJSTORE_BLOCK));
            if (r < 0)
                return r;
            if (r)
                add_range(&it->changed, &it->nchanged, it->off + b * OBJSTORE_BLOCK,
                          MIN((uint64_t)OBJSTORE_BLOCK, it->len - b * OBJSTORE_BLOCK));
            b++;
            continue;
        }
        size_t e = b;
        while (e < nb && isnz[e])
            e++;
        uint64_t poff = it->off + b * OBJSTORE_BLOCK;
        size_t plen = MIN((size_t)(e - b) * OBJSTORE_BLOCK, it->len - b * OBJSTORE_BLOCK);
        struct map_entry m = { .off = poff, .len = (uint32_t)plen };
        piece_id(&repo->keys, dig + b * DIGEST_BYTES, plen, m.id);
        bool indexed = index_has(repo, m.id) == 0;
        bool have = indexed || idset_add(&c->seen, m.id);
        if (indexed)
            note_reused(c, m.id);
        if (have) {
            atomic_fetch_add(&c->reused, 1);
            d.chunks_reused++;
        } else {
            if ((r = pack_add(repo, w, BLOB_PIECE, m.id, data + b * OBJSTORE_BLOCK, plen,
                              dig + b * DIGEST_BYTES, (e - b) * DIGEST_BYTES)) < 0)
                return r;
            atomic_fetch_add(&c->uploaded, 1);
            d.chunks_uploaded++;
        }
        if ((it->npieces & (it->npieces - 1)) == 0)
            it->pieces = xrealloc(it->pieces, (it->npieces ? 2 * it->npieces : 1) * sizeof *it->pieces);
        it->pieces[it->npieces++] = m;
        if (!c->req->no_changed)
            for (size_t k = b; k < e; k++) {
                uint64_t o = it->off + k * OBJSTORE_BLOCK;
                r = block_changed(c, cs, o, dig + k * DIGEST_BYTES, m.id, (uint32_t)(k - b),
                                  data + k * OBJSTORE_BLOCK, MIN((size_t)OBJSTORE_BLOCK, it->len - k * OBJSTORE_BLOCK));
                if (r < 0)
                    return r;
                if (r)
                    add_range(&it->changed, &it->nchanged, o,
                              MIN((uint64_t)OBJSTORE_BLOCK, it->len - k * OBJSTORE_BLOCK));
            }
        b = e;
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
    size_t cs = c->repo->chunk_size, nb = cs / OBJSTORE_BLOCK;
    uint8_t *data = NULL, *dig = xmalloc(nb * (DIGEST_BYTES + 1));
    if (posix_memalign((void **)&data, OBJSTORE_BLOCK, cs) != 0)
        data = xmalloc(cs);     /* unaligned: fd_read reads buffered */
    struct pack_writer w = { .stats = &c->ps };
    struct cmp_state cst = {};
    for (;;) {
        if (should_stop(c))
            break;
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->nitems)
            break;
        int r = export_item(c, &c->items[i], data, dig, &w, &cst);
        if (r < 0) {
            set_error(c, r);
            break;
        }
        maybe_refresh_lock(c);
    }
    /* Also after an error or a cancel: what was sealed is good, and stored
     * now it need not be read and sent again by the rerun. */
    int r = pack_flush(c->repo, &w);
    if (r < 0)
        set_error(c, r);
    cmp_state_free(c, &cst);
    pack_writer_free(&w);
    free(data);
    free(dig);
    return NULL;
}

static int validate(const struct objstore_export_req *req)
{
    if (!req || !req->snapshot_uuid || (req->nranges && !req->ranges) ||
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

static int range_cmp(const void *a, const void *b)
{
    const struct objstore_range *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Round out to blocks, clip, sort, coalesce. */
static size_t normalize(const struct objstore_range *in, size_t n, const struct objstore_range *extra,
                        size_t nextra, uint64_t size, struct objstore_range **ret)
{
    struct objstore_range *v = xcalloc(n + nextra + 1, sizeof *v);
    size_t k = 0;
    for (size_t i = 0; i < n + nextra; i++) {
        const struct objstore_range *g = i < n ? &in[i] : &extra[i - n];
        if (!g->length || g->offset >= size)
            continue;
        uint64_t s = g->offset / OBJSTORE_BLOCK * OBJSTORE_BLOCK;
        uint64_t e = MIN(size, g->offset + g->length);
        e = MIN(size, (e + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK * OBJSTORE_BLOCK);
        v[k++] = (struct objstore_range){ s, e - s };
    }
    qsort(v, k, sizeof *v, range_cmp);
    size_t w = 0;
    for (size_t i = 0; i < k; i++) {
        if (w && v[w - 1].offset + v[w - 1].length >= v[i].offset) {
            uint64_t e = MAX(v[w - 1].offset + v[w - 1].length, v[i].offset + v[i].length);
            v[w - 1].length = e - v[w - 1].offset;
        } else {
            v[w++] = v[i];
        }
    }
    *ret = v;
    return w;
}

void objstore_export_result_free(struct objstore_export_result *res)
{
    if (!res)
        return;
    free(res->changed);
    res->changed = NULL;
    res->nchanged = 0;
}

/* After the manifest names them, before the lock goes: every piece and node
 * reused from the index must still be indexed. A gc that ran meanwhile may have
 * trashed one (nothing referenced it when gc looked); its pack still
 * exists, because gc deletes trashed packs only once every export older
 * than the trashing ended, so index it again. (If this looks before gc
 * trashed it, gc's second look at the manifests, after trashing, sees our
 * manifest and indexes it again itself.) */
static int revalidate(struct export_ctx *c)
{
    if (!c->nreused)
        return 0;
    uint8_t (*live)[ID_BYTES] = NULL;
    size_t nlive = 0, nlost = 0;
    int r = index_list(c->repo, &live, &nlive);
    if (r < 0)
        return r;
    uint8_t (*lost)[ID_BYTES] = xcalloc(c->nreused, ID_BYTES);
    for (size_t i = 0; i < c->nreused; i++)
        if (!index_entry_live(c->repo, c->reused_ids[i], live, nlive))
            memcpy(lost[nlost++], c->reused_ids[i], ID_BYTES);
    free(live);
    if (nlost) {
        /* Moved into a new index (repacked), or trashed. */
        size_t w = 0;
        if ((r = index_refresh(c->repo, true)) == 0) {
            for (size_t i = 0; i < nlost; i++)
                if (index_has(c->repo, lost[i]) < 0)
                    memcpy(lost[w++], lost[i], ID_BYTES);
            size_t found = 0;
            if (w && (r = trash_reindex(c->repo, lost, w, &found)) == 0 && found < w)
                r = -ENOENT;
        }
    }
    free(lost);
    return r;
}

int export_run(struct objstore *repo, const struct objstore_export_req *req, const struct export_src *src,
               struct objstore_export_result *res)
{
    int r = validate(req);
    if (r < 0)
        return r;
    uint64_t t0 = now_mono_ns(), cs = repo->chunk_size;
    _cleanup_free_ char *lock = NULL;
    struct export_ctx c = { .repo = repo, .req = req, .src = src };
    struct objstore_range *rd = NULL;
    size_t nrd = 0;
    struct map_entry *pieces = NULL;
    struct objstore_range *changed = NULL;
    size_t npieces = 0, nchanged = 0;
    struct manifest m = {};
    struct pack_writer nw = { .stats = &c.ps };
    uint8_t parent_id[ID_BYTES];
    pthread_t *threads = NULL;

    if ((r = repo_lock(repo, "export", NULL, &lock)) < 0)
        return r;
    if ((r = index_refresh(repo, true)) < 0)
        goto out;
    if (req->parent) {
        if ((r = manifest_load_prefix(repo, req->parent, &c.parent, parent_id)) < 0)
            goto out;
        if (c.parent.chunk_size != cs) {
            r = -EINVAL;
            goto out;
        }
        c.has_parent = true;
    }
    /* A resized volume: the blocks where the old and new volumes end hold
     * bytes whose meaning changed. */
    struct objstore_range extra[2] = {};
    size_t nextra = 0;
    if (c.has_parent && c.parent.volume_size != req->size) {
        uint64_t lo = MIN(c.parent.volume_size, req->size) / OBJSTORE_BLOCK * OBJSTORE_BLOCK;
        extra[nextra++] = (struct objstore_range){ lo, OBJSTORE_BLOCK };
    }
    nrd = normalize(req->ranges, req->nranges, extra, nextra, req->size, &rd);
    uint64_t total = 0;
    for (size_t i = 0; i < nrd; i++)
        for (uint64_t o = rd[i].offset; o < rd[i].offset + rd[i].length;) {
            uint64_t e = MIN(rd[i].offset + rd[i].length, (o / cs + 1) * cs);
            if ((c.nitems & (c.nitems - 1)) == 0)
                c.items = xrealloc(c.items, (c.nitems ? 2 * c.nitems : 1) * sizeof *c.items);
            c.items[c.nitems++] = (struct item){ .off = o, .len = (uint32_t)(e - o) };
            total += e - o;
            o = e;
        }

    idset_init(&c.seen, 1024);
    pthread_mutex_init(&c.rlock, NULL);
    pthread_mutex_init(&c.ps.lock, NULL);
    c.ps.collect = true;
    progress_init(&c.pr, req->progress, req->progress_ud, req->progress_each_chunk);
    progress_add(&c.pr, &(struct objstore_progress){ .bytes_total = total, .chunks_total = c.nitems }, true);
    c.lock_key = lock;
    atomic_store(&c.lock_refreshed_ns, now_mono_ns());

    unsigned nthreads = (unsigned)MIN((uint64_t)io_parallelism(req->parallelism), (uint64_t)c.nitems);
    threads = xcalloc(nthreads ? nthreads : 1, sizeof *threads);
    unsigned started = 0;
    for (; started < nthreads; started++)
        if ((r = -pthread_create(&threads[started], NULL, export_worker, &c)) < 0) {
            set_error(&c, r);
            break;
        }
    for (unsigned i = 0; i < started; i++)
        pthread_join(threads[i], NULL);
    if ((r = atomic_load(&c.err)) < 0)
        goto out_ctx;
    if (req->cancel && atomic_load(req->cancel)) {
        r = -ECANCELED;
        goto out_ctx;
    }
    for (size_t i = 0; i < c.nitems; i++) {
        npieces += c.items[i].npieces;
        nchanged += c.items[i].nchanged;
    }
    pieces = xcalloc(npieces ? npieces : 1, sizeof *pieces);
    changed = xcalloc(nchanged ? nchanged : 1, sizeof *changed);
    npieces = nchanged = 0;
    uint64_t bytes_changed = 0;
    for (size_t i = 0; i < c.nitems; i++) {
        if (c.items[i].npieces)
            memcpy(pieces + npieces, c.items[i].pieces, c.items[i].npieces * sizeof *pieces);
        npieces += c.items[i].npieces;
        for (size_t k = 0; k < c.items[i].nchanged; k++) {
            const struct objstore_range *g = &c.items[i].changed[k];
            if (nchanged && changed[nchanged - 1].offset + changed[nchanged - 1].length == g->offset)
                changed[nchanged - 1].length += g->length;
            else
                changed[nchanged++] = *g;
            bytes_changed += g->length;
        }
    }

    os_crashpoint("objstore-export-pieces");
    /* The map, then the manifest. */
    uint8_t zero_root[ID_BYTES] = {};
    uint64_t nodes = 0;
    int64_t dbytes = 0, dentries = 0;
    unsigned level = 0;
    r = map_build(repo, &nw, c.has_parent ? c.parent.root : zero_root, c.has_parent ? c.parent.root_level : 0,
                  c.has_parent ? c.parent.volume_size : 0, req->size, rd, nrd, pieces, npieces, m.root,
                  &level, &nodes, &dbytes, &dentries, note_reused, &c);
    if (r == 0)
        r = pack_flush(repo, &nw);
    if (r < 0)
        goto out_ctx;
    m.volume_size = req->size;
    m.chunk_size = (uint32_t)cs;
    m.created_ns = req->created_ns ? req->created_ns : now_real_ns();
    m.root_level = level;
    m.data_bytes = (uint64_t)((int64_t)(c.has_parent ? c.parent.data_bytes : 0) + dbytes);
    m.nentries = (uint64_t)((int64_t)(c.has_parent ? c.parent.nentries : 0) + dentries);
    if (m.data_bytes > m.volume_size)   /* cannot be; never write a manifest that fails to load */
        m.data_bytes = m.volume_size;
    if (c.has_parent) {
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
    os_crashpoint("objstore-export-manifest");
    if ((r = manifest_store(repo, &m, mid)) < 0)
        goto out_ctx;
    /* Still under our lock, after the manifest: see revalidate and gc. */
    if ((r = revalidate(&c)) < 0)
        goto out_ctx;
    /* One index for all our packs; a failure here only leaves more of them. */
    pack_stats_consolidate(repo, &c.ps);
    progress_add(&c.pr, &(struct objstore_progress){ .bytes_uploaded = atomic_load(&c.ps.bytes) }, true);

    if (res) {
        memset(res, 0, sizeof *res);
        id_to_hex(mid, res->manifest);
        res->bytes_read = atomic_load(&c.bytes_read);
        res->bytes_uploaded = atomic_load(&c.ps.bytes);
        res->chunks_uploaded = atomic_load(&c.uploaded);
        res->chunks_reused = atomic_load(&c.reused);
        res->chunks_zero = atomic_load(&c.zero);
        res->chunks_from_parent = c.has_parent ? (uint64_t)MAX(0, (int64_t)m.nentries - (int64_t)npieces) : 0;
        res->packs_uploaded = atomic_load(&c.ps.packs);
        res->nodes_uploaded = nodes;
        if (!req->no_changed) {
            res->changed = TAKE_PTR(changed);
            res->nchanged = nchanged;
            res->bytes_changed = bytes_changed;
        }
        res->seconds = (double)(now_mono_ns() - t0) / 1e9;
    }
    r = 0;
out_ctx:
    pack_stats_free(&c.ps);
    pthread_mutex_destroy(&c.ps.lock);
    pthread_mutex_destroy(&c.rlock);
    free(c.reused_ids);
    pthread_mutex_destroy(&c.seen.lock);
    pthread_mutex_destroy(&c.pr.lock);
    free(c.seen.slots);
out:
    for (size_t i = 0; i < c.nitems; i++) {
        free(c.items[i].pieces);
        free(c.items[i].changed);
    }
    free(c.items);
    free(threads);
    free(rd);
    free(pieces);
    free(changed);
    pack_writer_free(&nw);
    manifest_free(&m);
    manifest_free(&c.parent);
    repo_unlock(repo, lock);
    return r;
}

int objstore_export(struct objstore *repo, const struct objstore_export_req *req,
                    struct objstore_export_result *res)
{
    if (!req || req->fd < 0)
        return -EINVAL;
    struct fd_src fs = { .fd = req->fd, .dfd = -1 };
    struct stat st;
    if (fstat(req->fd, &st) == 0 && S_ISREG(st.st_mode)) {
        _cleanup_free_ char *path = xasprintf("/proc/self/fd/%d", req->fd);
        fs.dfd = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    }
    atomic_init(&fs.direct, fs.dfd >= 0);
    struct export_src src = { .read = fd_read, .ud = &fs };
    int r = export_run(repo, req, &src, res);
    if (fs.dfd >= 0)
        close(fs.dfd);
    return r;
}
