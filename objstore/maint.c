/* maint.c: verify and gc, the repository's maintenance.
 *
 * verify walks a manifest's map, fetching and checking every node (GCM and
 * its keyed id) and then every distinct piece it names, in parallel, the
 * way restore would and more: the plaintext's block digests and id are
 * recomputed, and the stored digests are checked against the id too. It
 * reports missing and corrupt blobs rather than stopping at the first.
 * Without a manifest it checks every blob of every index.
 *
 * gc is mark and sweep in two phases, so that it may run while exports run
 * and readers read:
 *   mark     every manifest's nodes and pieces (if one cannot be read, stop
 *            without changing anything: better keep garbage than lose data);
 *   phase 2  (of trash left by an earlier gc) a trashed pack is deleted
 *            once no export that started before it was trashed still runs;
 *            its blobs that a manifest now references (an export reused
 *            them) are indexed again instead;
 *   phase 1  a pack older than the grace period and than every running
 *            export whose blobs are all unreferenced is trashed: its index
 *            entries go to trash/<pack> and it leaves the index; one mostly
 *            unreferenced is repacked: its live blobs are copied, still
 *            sealed, into a new pack with a new index, and it is trashed.
 *            The indexes gc read are rewritten as one. Then the manifests
 *            are read again: a blob trashed that a manifest written since
 *            the mark names is indexed again at once;
 *   orphans  packs no index names (an export died between a pack and its
 *            index) older than the grace period and every running export.
 * Exports for their part refresh the index at their start (dropping what
 * gc trashed) and, after writing their manifest, index again any reused
 * piece gc trashed meanwhile (export.c). Either the export looks after gc
 * trashed and fixes it, or gc's second look sees the export's manifest:
 * nothing referenced is ever deleted, and a manifest's blobs are indexed
 * once the export that wrote it returns. */
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

#define VERIFY_MAX_IDS 1000
#define REPACK_DEAD_PERCENT 50

/* A growable sorted set of ids. */
struct ids {
    uint8_t (*v)[ID_BYTES];
    size_t n, cap;
};

static void ids_push(struct ids *s, const uint8_t id[ID_BYTES])
{
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 1024;
        s->v = xrealloc(s->v, s->cap * ID_BYTES);
    }
    memcpy(s->v[s->n++], id, ID_BYTES);
}

static void ids_sort(struct ids *s)
{
    if (s->n)
        qsort(s->v, s->n, ID_BYTES, id_cmp);
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++)
        if (w == 0 || memcmp(s->v[w - 1], s->v[i], ID_BYTES))
            memmove(s->v[w++], s->v[i], ID_BYTES);
    s->n = w;
}

static bool ids_has(const struct ids *s, const uint8_t id[ID_BYTES])
{
    return s->n && bsearch(id, s->v, s->n, ID_BYTES, id_cmp) != NULL;
}

/* ---- marking: the nodes and pieces of a map (uncached reads) ---------- */

struct mark {
    struct objstore *r;
    struct ids nodes, pieces;
    /* verify: report instead of failing */
    void (*bad)(void *ud, const uint8_t id[ID_BYTES], int err);
    void *ud;
};

static int mark_node(struct mark *k, const uint8_t id[ID_BYTES], unsigned level, uint64_t start)
{
    if (id_is_zero(id))
        return 0;
    ids_push(&k->nodes, id);
    struct buf plain = {};
    int rc = blob_fetch(k->r, id, BLOB_NODE, true, &plain, NULL);
    if (rc == 0 && level == 0) {
        struct leaf l = {};
        rc = leaf_decode(plain.data, plain.len, start, &l);
        for (size_t i = 0; i < l.n; i++)
            ids_push(&k->pieces, l.e[i].id);
        leaf_free(&l);
    } else if (rc == 0) {
        uint8_t (*ch)[ID_BYTES] = xmalloc((size_t)FANOUT * ID_BYTES);
        rc = inner_decode(plain.data, plain.len, level, ch);
        for (unsigned i = 0; rc == 0 && i < FANOUT; i++)
            rc = mark_node(k, ch[i], level - 1, start + i * map_span(level - 1));
        free(ch);
    }
    buf_free(&plain);
    if (rc == -ENOENT || rc == -EBADMSG) {
        if (k->bad) {
            k->bad(k->ud, id, rc);
            rc = 0;
        }
    }
    return rc;
}

static int mark_manifest(struct mark *k, const uint8_t mid[ID_BYTES])
{
    struct manifest m = {};
    int rc = manifest_load(k->r, mid, &m, NULL);
    if (rc == 0)
        rc = mark_node(k, m.root, m.root_level, 0);
    manifest_free(&m);
    return rc;
}

static int mf_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct ids *l = ud;
    uint8_t id[ID_BYTES];
    if (id_from_hex(key + strlen("manifests/"), id) == 0)
        ids_push(l, id);
    return 0;
}

/* Mark every manifest not in `done` (adding it there). */
static int mark_all(struct mark *k, struct ids *done)
{
    struct ids l = {};
    int rc = k->r->be->ops->list(k->r->be, "manifests/", mf_cb, &l);
    for (size_t i = 0; rc == 0 && i < l.n; i++) {
        if (ids_has(done, l.v[i]))
            continue;
        rc = mark_manifest(k, l.v[i]);
        if (rc == -ENOENT)  /* deleted meanwhile: its blobs are garbage anyway */
            rc = 0;
    }
    for (size_t i = 0; i < l.n; i++)
        ids_push(done, l.v[i]);
    ids_sort(done);
    free(l.v);
    ids_sort(&k->nodes);
    ids_sort(&k->pieces);
    return rc;
}

/* ---- verify ----------------------------------------------------------- */

struct verify_ctx {
    struct objstore *repo;
    uint8_t (*ids)[ID_BYTES];
    enum blob_type *types;
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

static void note_bad(void *ud, const uint8_t id[ID_BYTES], int err)
{
    note(ud, id, err == -ENOENT);
}

static int check_digests(struct objstore *r, const uint8_t id[ID_BYTES], const struct buf *plain)
{
    /* The stored digests must be the plaintext's (the id was checked from
     * the plaintext already). */
    const uint8_t *d;
    size_t nd;
    struct cache_ent *ce;
    int rc = digests_get(r, id, &d, &nd, &ce);
    if (rc < 0)
        return rc;
    size_t nb = (plain->len + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK;
    _cleanup_free_ uint8_t *mine = xmalloc(nb ? nb * DIGEST_BYTES : 1);
    block_digests(plain->data, plain->len, mine);
    rc = nd == nb * DIGEST_BYTES && !memcmp(mine, d, nd) ? 0 : -EBADMSG;
    cache_put(r, ce);
    return rc;
}

static void *verify_worker(void *arg)
{
    struct verify_ctx *c = arg;
    struct buf plain = {};
    for (;;) {
        if (atomic_load(&c->err))
            break;
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n)
            break;
        plain.len = 0;
        int r = blob_fetch(c->repo, c->ids[i], c->types[i], true, &plain, NULL);
        if (r == 0 && c->types[i] == BLOB_PIECE)
            r = check_digests(c->repo, c->ids[i], &plain);
        if (r == -ENOENT || r == -EBADMSG || r == -EPROTONOSUPPORT) {
            note(c, c->ids[i], r == -ENOENT);
        } else if (r < 0) {
            int z = 0;
            atomic_compare_exchange_strong(&c->err, &z, r);
            break;
        }
        pthread_mutex_lock(&c->lock);
        c->res->chunks_checked++;
        pthread_mutex_unlock(&c->lock);
    }
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
    memset(res, 0, sizeof *res);
    struct verify_ctx c = { .repo = repo, .res = res };
    pthread_mutex_init(&c.lock, NULL);
    int r = index_refresh(repo, true);
    if (r < 0)
        goto out;
    /* Cached digests would hide damage done since they were read. */
    cache_free(repo);
    if (id_or_prefix) {
        struct manifest m = {};
        uint8_t mid[ID_BYTES];
        if ((r = manifest_load_prefix(repo, id_or_prefix, &m, mid)) < 0)
            goto out;
        struct mark k = { .r = repo, .bad = note_bad, .ud = &c };
        r = mark_node(&k, m.root, m.root_level, 0);
        manifest_free(&m);
        ids_sort(&k.nodes);
        ids_sort(&k.pieces);
        res->chunks_checked += k.nodes.n;
        c.n = k.pieces.n;
        c.ids = TAKE_PTR(k.pieces.v);
        c.types = xcalloc(c.n ? c.n : 1, sizeof *c.types);
        for (size_t i = 0; i < c.n; i++)
            c.types[i] = BLOB_PIECE;
        free(k.nodes.v);
        if (r < 0)
            goto out;
    } else {
        pthread_mutex_lock(&repo->ilock);
        c.ids = xcalloc(repo->in ? repo->in : 1, ID_BYTES);
        c.types = xcalloc(repo->in ? repo->in : 1, sizeof *c.types);
        for (size_t i = 0; i < repo->icap; i++)
            if (repo->islots[i].used) {
                memcpy(c.ids[c.n], repo->islots[i].id, ID_BYTES);
                c.types[c.n++] = repo->islots[i].loc.type;
            }
        pthread_mutex_unlock(&repo->ilock);
    }
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
    r = atomic_load(&c.err);
out:
    free(c.ids);
    free(c.types);
    pthread_mutex_destroy(&c.lock);
    if (r < 0)
        return r;
    return res->missing || res->corrupt ? -EBADMSG : 0;
}

/* ---- gc ----------------------------------------------------------------- */

struct pack_stat {
    uint8_t id[ID_BYTES];
    uint64_t size;
    int64_t mtime;
};

struct stats {
    struct pack_stat *v;
    size_t n, cap;
};

static int stat_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ID_BYTES);
}

static int packs_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct stats *s = ud;
    const char *name = strrchr(key, '/');
    uint8_t id[ID_BYTES];
    if (!name || id_from_hex(name + 1, id) < 0)
        return 0;   /* not ours: leave it alone */
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = xrealloc(s->v, s->cap * sizeof *s->v);
    }
    memcpy(s->v[s->n].id, id, ID_BYTES);
    s->v[s->n].size = st->size;
    s->v[s->n++].mtime = st->mtime;
    return 0;
}

static struct pack_stat *stat_find(struct stats *s, const uint8_t id[ID_BYTES])
{
    return s->n ? bsearch(id, s->v, s->n, sizeof *s->v, stat_cmp) : NULL;
}

static bool referenced(struct mark *k, const uint8_t id[ID_BYTES], const struct blob_loc *l)
{
    return ids_has(l->type == BLOB_NODE ? &k->nodes : &k->pieces, id);
}

struct gc {
    struct objstore *r;
    struct objstore_gc_result *res;
    struct mark k;
    struct ids done;                /* manifests marked */
    uint64_t *starts;               /* running exports' start (ns) */
    size_t nstarts;
    int64_t cutoff;                 /* seconds: indexed packs older than this may go */
    int64_t orphan_cutoff;          /* seconds: unindexed packs older than this may go */
    struct stats packs, trash;
    struct ids trashed_now;         /* packs this gc trashed */
};

static bool old_enough(struct gc *g, int64_t mtime, int64_t cutoff)
{
    if (mtime >= cutoff)
        return false;
    for (size_t i = 0; i < g->nstarts; i++)
        if ((uint64_t)mtime * 1000000000ull + 1000000000ull >= g->starts[i])
            return false;
    return true;
}

static int del_key(struct objstore *r, const char *prefix, const uint8_t id[ID_BYTES])
{
    char hex[OBJSTORE_ID_LEN + 1];
    id_to_hex(id, hex);
    _cleanup_free_ char *key = !strcmp(prefix, "packs/") ? pack_key(id) : xasprintf("%s%s", prefix, hex);
    return r->be->ops->del(r->be, key);
}

/* Index again the trashed blobs of `tp` that are referenced and not
 * indexed. *ret_keep: some referenced blob is indexed in this pack (again,
 * by us or by an export), so the pack stays. */
static int reindex(struct gc *g, const struct index_pack *tp, bool *ret_keep)
{
    struct index_pack keep = { .ids = xcalloc(tp->n + 1, ID_BYTES), .locs = xcalloc(tp->n + 1, sizeof *keep.locs) };
    memcpy(keep.pack, tp->pack, ID_BYTES);
    bool used = false;
    for (size_t i = 0; i < tp->n; i++) {
        if (!referenced(&g->k, tp->ids[i], &tp->locs[i]))
            continue;
        struct blob_loc now;
        if (index_peek(g->r, tp->ids[i], &now) == 0) {
            used |= !memcmp(now.pack, tp->pack, ID_BYTES);
            continue;
        }
        memcpy(keep.ids[keep.n], tp->ids[i], ID_BYTES);
        keep.locs[keep.n++] = tp->locs[i];
    }
    int rc = 0;
    if (keep.n) {
        struct index_obj x = { .npacks = 1, .packs = &keep };
        rc = index_store(g->r, &x, NULL);   /* also into the in-memory index */
        used = true;
    }
    *ret_keep = used;
    free(keep.ids);
    free(keep.locs);
    return rc;
}

static int phase2(struct gc *g)
{
    int rc = 0;
    for (size_t t = 0; rc == 0 && t < g->trash.n; t++) {
        const struct pack_stat *ts = &g->trash.v[t];
        bool waiting = false;
        for (size_t i = 0; i < g->nstarts; i++)
            if (g->starts[i] <= (uint64_t)(ts->mtime + 1) * 1000000000ull)
                waiting = true;
        if (waiting)
            continue;
        struct index_obj x = {};
        if ((rc = trash_load(g->r, ts->id, &x)) < 0)
            break;
        bool back = false;
        rc = reindex(g, &x.packs[0], &back);
        if (rc == 0 && back) {
            g->res->packs_restored++;
        } else if (rc == 0) {
            struct pack_stat *ps = stat_find(&g->packs, ts->id);
            if ((rc = del_key(g->r, "packs/", ts->id)) == 0 && ps) {
                g->res->packs_deleted++;
                g->res->bytes_deleted += ps->size;
                g->res->chunks_deleted += x.packs[0].n;
            }
        }
        if (rc == 0)
            rc = del_key(g->r, "trash/", ts->id);
        index_obj_free(&x);
    }
    return rc;
}

/* Copy the live blobs of pack `ip` into w, sealed as they are. */
static int repack(struct gc *g, const struct index_pack *ip, struct pack_writer *w)
{
    _cleanup_free_ char *key = pack_key(ip->pack);
    struct buf part = {};
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < ip->n; i++) {
        const struct blob_loc *l = &ip->locs[i];
        if (!referenced(&g->k, ip->ids[i], l))
            continue;
        part.len = 0;
        rc = g->r->be->ops->get_range(g->r->be, key, l->off, (size_t)l->dlen + l->slen, &part);
        if (rc == 0)
            rc = pack_add_sealed(g->r, w, ip->ids[i], l, part.data, part.len);
    }
    buf_free(&part);
    return rc;
}

static int phase1(struct gc *g, struct index_obj *idx, uint8_t (*idx_ids)[ID_BYTES], size_t nidx)
{
    struct index_obj keep = { .packs = NULL };
    size_t kcap = 0;
    struct pack_writer w = {};
    const struct index_pack **trashed = NULL;
    size_t ntrash = 0, ctrash = 0;
    bool changed = false;
    int rc = 0;
    for (size_t o = 0; rc == 0 && o < nidx; o++)
        for (size_t p = 0; rc == 0 && p < idx[o].npacks; p++) {
            struct index_pack *ip = &idx[o].packs[p];
            struct pack_stat *ps = stat_find(&g->packs, ip->pack);
            g->res->packs_total++;
            /* !ps: written after we listed packs, not ours to judge: kept. */
            uint64_t live = 0, dead = 0, nlive = 0;
            for (size_t i = 0; i < ip->n; i++) {
                uint64_t sz = (uint64_t)ip->locs[i].dlen + ip->locs[i].slen;
                g->res->chunks_total++;
                if (referenced(&g->k, ip->ids[i], &ip->locs[i]))
                    live += sz, nlive++;
                else
                    dead += sz;
            }
            g->res->chunks_referenced += nlive;
            bool may = ps && old_enough(g, ps->mtime, g->cutoff);
            if (!may && dead)
                g->res->chunks_young += ip->n - nlive;
            bool trash = may && nlive == 0;
            bool rp = may && nlive && dead * 100 >= (live + dead) * REPACK_DEAD_PERCENT;
            if (rp) {
                rc = repack(g, ip, &w);
                g->res->packs_repacked++;
            }
            if (rc == 0 && (trash || rp)) {
                if (ntrash == ctrash) {
                    ctrash = ctrash ? 2 * ctrash : 16;
                    trashed = xrealloc(trashed, ctrash * sizeof *trashed);
                }
                trashed[ntrash++] = ip;
                changed = true;
                continue;
            }
            if (kcap == keep.npacks) {
                kcap = kcap ? 2 * kcap : 64;
                keep.packs = xrealloc(keep.packs, kcap * sizeof *keep.packs);
            }
            keep.packs[keep.npacks++] = *ip;    /* borrowed */
        }
    if (rc == 0)
        rc = pack_flush(g->r, &w);
    /* One index instead of many; the new one first, then the old go. */
    if (rc == 0 && (changed || nidx > 16)) {
        /* Index ids are content hashes: the new one may be an old one (a
         * single kept index unchanged), which must not then be deleted. */
        uint8_t nid[ID_BYTES] = {};
        if (keep.npacks)
            rc = index_store(g->r, &keep, nid);
        for (size_t o = 0; rc == 0 && o < nidx; o++)
            if (!keep.npacks || memcmp(idx_ids[o], nid, ID_BYTES))
                rc = del_key(g->r, "index/", idx_ids[o]);
    }
    /* Trash records last: their time is when the packs left the index, and
     * phase 2 waits for every export that started before it. */
    for (size_t t = 0; rc == 0 && t < ntrash; t++) {
        rc = trash_store(g->r, trashed[t]);
        ids_push(&g->trashed_now, trashed[t]->pack);
        g->res->packs_trashed++;
    }
    free(trashed);
    pack_writer_free(&w);
    free(keep.packs);
    ids_sort(&g->trashed_now);
    return rc;
}

static int orphans(struct gc *g, struct index_obj *idx, size_t nidx)
{
    struct ids named = {};
    for (size_t o = 0; o < nidx; o++)
        for (size_t p = 0; p < idx[o].npacks; p++)
            ids_push(&named, idx[o].packs[p].pack);
    ids_sort(&named);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < g->packs.n; i++) {
        const struct pack_stat *ps = &g->packs.v[i];
        if (ids_has(&named, ps->id) || stat_find(&g->trash, ps->id) || ids_has(&g->trashed_now, ps->id) ||
            !old_enough(g, ps->mtime, g->orphan_cutoff))
            continue;
        if ((rc = del_key(g->r, "packs/", ps->id)) == 0) {
            g->res->packs_deleted++;
            g->res->bytes_deleted += ps->size;
        }
    }
    free(named.v);
    return rc;
}

static int trash_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    return packs_cb(ud, key, st);
}

int objstore_gc(struct objstore *repo, uint64_t grace_seconds, struct objstore_gc_result *res)
{
    struct objstore_gc_result local = {};
    _cleanup_free_ char *lock = NULL;
    struct gc g = { .r = repo, .res = &local, .k = { .r = repo } };
    struct index_obj *idx = NULL;
    uint8_t (*idx_ids)[ID_BYTES] = NULL;
    size_t nidx = 0;
    int r = repo_lock(repo, "gc", "gc", &lock);
    if (r < 0)
        return r;
    int64_t now = (int64_t)(now_real_ns() / 1000000000ull);
    /* Grace 0 trashes unreferenced indexed packs whatever their age (they
     * are still protected from running exports by their start times); a
     * pack no index names is an orphan only when it is older than a second
     * more than the grace, so that an export's pack whose index is being
     * written is not one. */
    g.cutoff = grace_seconds ? now - 1 - (int64_t)MIN(grace_seconds, (uint64_t)INT32_MAX) : INT64_MAX;
    g.orphan_cutoff = now - 2 - (int64_t)MIN(grace_seconds, (uint64_t)INT32_MAX);
    /* Order matters: running exports, then packs, then indexes (a pack
     * listed without its index is an orphan or an export's, which the
     * exports' start times protect), then the marks. */
    if ((r = repo_locks_started(repo, "export", &g.starts, &g.nstarts)) < 0 ||
        (r = repo->be->ops->list(repo->be, "packs/", packs_cb, &g.packs)) < 0 ||
        (r = repo->be->ops->list(repo->be, "trash/", trash_cb, &g.trash)) < 0 ||
        (r = index_list(repo, &idx_ids, &nidx)) < 0)
        goto out;
    if (g.packs.n)
        qsort(g.packs.v, g.packs.n, sizeof *g.packs.v, stat_cmp);
    if (g.trash.n)
        qsort(g.trash.v, g.trash.n, sizeof *g.trash.v, stat_cmp);
    idx = xcalloc(nidx ? nidx : 1, sizeof *idx);
    for (size_t i = 0; i < nidx; i++) {
        /* Gone meanwhile: an export replaced its per-pack indexes by one
         * (its packs are younger than it, so no orphans of ours). */
        r = index_load_obj(repo, idx_ids[i], &idx[i]);
        if (r == -ENOENT) {
            memmove(idx_ids + i, idx_ids + i + 1, (nidx - i - 1) * ID_BYTES);
            nidx--, i--;
            continue;
        }
        if (r < 0)
            goto out;
    }
    if ((r = index_refresh(repo, true)) < 0 || (r = mark_all(&g.k, &g.done)) < 0)
        goto out;
    if ((r = phase2(&g)) < 0)
        goto out;
    if ((r = phase1(&g, idx, idx_ids, nidx)) < 0)
        goto out;
    /* The second look: manifests written since the mark, against the index
     * as it is now. */
    index_free(repo);
    if ((r = mark_all(&g.k, &g.done)) < 0 || (r = index_refresh(repo, true)) < 0)
        goto out;
    for (size_t t = 0; r == 0 && t < g.trashed_now.n; t++) {
        struct index_obj x = {};
        bool back = false;
        if ((r = trash_load(repo, g.trashed_now.v[t], &x)) == 0)
            r = reindex(&g, &x.packs[0], &back);
        index_obj_free(&x);
    }
    if (r == 0)
        r = orphans(&g, idx, nidx);
out:
    if (res)
        *res = local;
    for (size_t i = 0; idx && i < nidx; i++)
        index_obj_free(&idx[i]);
    free(idx);
    free(idx_ids);
    free(g.k.nodes.v);
    free(g.k.pieces.v);
    free(g.done.v);
    free(g.starts);
    free(g.packs.v);
    free(g.trash.v);
    free(g.trashed_now.v);
    repo_unlock(repo, lock);
    /* What this handle holds in memory may name trashed packs. */
    index_free(repo);
    cache_free(repo);
    return r;
}
