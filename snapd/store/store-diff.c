/* store-diff.c: exact diffs over a volume's whole snapshot chain, and
 * keeping the chain exact when a snapshot in the middle is deleted.
 *
 * The chain of a volume is its snapshots (ready or being deleted) and the
 * tombstones of deleted ones (catalog-store.c), in creation order; each
 * member has exact extents against the member before it (a snapshot's
 * own_extents when that one is a tombstone, else its extents, which are
 * against its live parent). A diff from A to B (A may be a tombstone) is
 * the union of those of the members after A up to B, then, from the first
 * one that has none, the pool's diff from the last one that had them (a
 * snapshot, resident by the store's invariant) to B.
 *
 * Deleting a snapshot S with a child C leaves a tombstone with S's own
 * extents; C keeps its own extents against S (own_extents) and its extents
 * become the union of S's and its own (against its new live parent, which
 * the mover exports against). When C or S has none yet they are computed
 * exactly right then: a snapshot without extents has a resident parent, so
 * both images are there. With --store-off nothing is computed: the
 * tombstone has no extents and a delta from it is FAILED_PRECONDITION
 * (-ENODATA here). */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store-internal.h"

/* --- diffs ------------------------------------------------------------------------ */

static int collect(uint64_t off, uint64_t len, void *ud)
{
    range_add(ud, off, len);
    return 0;
}

static size_t chain_index(const struct cat_snapshot_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].id, id) == 0)
            return i;
    return SIZE_MAX;
}

struct member {
    const char *id;
    uint64_t created_ns, size;
    bool tomb;
};

struct chain {
    struct cat_snapshot_list live;
    struct cat_tombstone *tombs;
    size_t ntombs;
    struct member *m;
    size_t n;
};

static void chain_free(struct chain *c)
{
    cat_snapshot_list_free(&c->live);
    cat_tombstone_list_free(c->tombs, c->ntombs);
    free(c->m);
}

static bool member_before(uint64_t ca, const char *ia, uint64_t cb, const char *ib)
{
    return ca < cb || (ca == cb && strcmp(ia, ib) < 0);
}

/* The volume's snapshots (ready or being deleted: one stays in the chain
 * until its row goes) and tombstones, oldest first. */
static int chain_load(struct amberd *d, const char *volume_id, struct chain *c)
{
    struct cat_snapshot_filter f = { .volume_id = volume_id,
                                     .states = (1u << CAT_SNAP_READY) | (1u << CAT_SNAP_DELETING) };
    int r = cat_snapshot_list(d->cat, &f, NULL, &c->live);
    if (r < 0)
        return r;
    if ((r = cat_tombstone_list(d->cat, volume_id, &c->tombs, &c->ntombs)) < 0)
        return r;
    c->m = xcalloc(c->live.n + c->ntombs + 1, sizeof *c->m);
    size_t i = 0, k = 0;
    while (i < c->live.n || k < c->ntombs) {
        /* A tombstone of a snapshot still listed (a delete that failed
         * and was undone) is not a member. */
        if (k < c->ntombs && chain_index(&c->live, c->tombs[k].id) != SIZE_MAX) {
            k++;
            continue;
        }
        bool take_tomb = k < c->ntombs &&
            (i == c->live.n || member_before(c->tombs[k].created_ns, c->tombs[k].id,
                                             c->live.items[i].created_ns, c->live.items[i].id));
        if (take_tomb) {
            c->m[c->n++] = (struct member){ c->tombs[k].id, c->tombs[k].created_ns,
                                            c->tombs[k].size_bytes, true };
            k++;
        } else {
            const struct cat_snapshot *s = &c->live.items[i++];
            c->m[c->n++] = (struct member){ s->id, s->created_ns, s->size_bytes, false };
        }
    }
    return 0;
}

static size_t member_index(const struct chain *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++)
        if (strcmp(c->m[i].id, id) == 0)
            return i;
    return SIZE_MAX;
}

/* One attempt: -ENOENT when a base went away under us (try again), -ENODATA
 * when FROM is a tombstone the chain after it has no recorded extents for. */
static int diff_once(struct amberd *d, const struct cat_snapshot *from, const struct cat_snapshot *to,
                     const char *vol_id, struct range_list *out, const char **ret_method, uint64_t *limit)
{
    struct chain chain = {0};
    int r = chain_load(d, from->volume_id, &chain);
    if (r < 0)
        goto out;
    size_t a = member_index(&chain, from->id), b = to ? member_index(&chain, to->id) : chain.n;
    if (a == SIZE_MAX || b == SIZE_MAX) {
        /* Not in the ready chain (being made or deleted): the pool alone. */
        struct pool_diff_stats ps = {0};
        r = pool_diff(d->pool, from->volume_id, from->id, to ? to->id : NULL, collect, out, &ps);
        *ret_method = ps.method ? ps.method : "generation";
        goto out;
    }
    if (a > b) {            /* symmetric (a tombstone is never the later one: snap_diff) */
        size_t t = a;
        a = b;
        b = t;
    }
    *limit = 0;
    size_t base = a;
    bool used = false;
    for (size_t i = a + 1; i <= b && i < chain.n; i++) {
        struct cat_range *v = NULL;
        size_t n = 0;
        r = chain.m[i].tomb ? cat_tombstone_get_extents(d->cat, chain.m[i].id, &v, &n)
                            : cat_store_get_own_extents(d->cat, chain.m[i].id, &v, &n);
        if (r == -ENOENT)
            break;
        if (r < 0)
            goto out;
        for (size_t k = 0; k < n; k++)
            range_add(out, v[k].off, v[k].len);
        free(v);
        *limit = MAX(*limit, chain.m[i].size);
        base = i;
        used = true;
    }
    r = 0;
    bool done = b < chain.n && base == b;
    *ret_method = used ? "store" : NULL;
    if (!done) {
        if (chain.m[base].tomb) {
            /* Only a pool diff is left and a tombstone has no image. */
            r = -ENODATA;
            goto out;
        }
        const char *end_id = b < chain.n ? chain.m[b].id : NULL;
        struct pool_diff_stats ps = {0};
        r = pool_diff(d->pool, from->volume_id, chain.m[base].id, end_id, collect, out, &ps);
        if (!used)
            *ret_method = ps.method ? ps.method : "generation";
    }
    *limit = MAX(*limit, MAX(chain.m[a].size, b < chain.n ? chain.m[b].size : 0));
    if (!to && vol_id) {
        struct pool_file_info fi = {0};
        if (pool_stat(d->pool, vol_id, NULL, &fi) == 0) {
            *limit = MAX(*limit, fi.size);
            free(fi.device);
        }
    }
out:
    chain_free(&chain);
    return r;
}

int store_tombstone_find(struct amberd *d, const char *id, struct cat_snapshot **ret)
{
    struct cat_tombstone t = {0};
    int r = cat_tombstone_get(d->cat, id, &t);
    if (r < 0)
        return r;
    struct cat_snapshot *s = xcalloc(1, sizeof *s);
    s->id = TAKE_PTR(t.id);
    s->volume_id = TAKE_PTR(t.volume_id);
    s->name = xasprintf("(deleted %s)", s->id);
    s->created_ns = t.created_ns;
    s->size_bytes = t.size_bytes;
    s->state = CAT_SNAP_DELETING;
    cat_tombstone_clear(&t);
    *ret = s;
    return 0;
}

int store_diff(struct amberd *d, const struct cat_snapshot *from, const struct cat_snapshot *to,
               const char *vol_id, pool_extent_cb cb, void *userdata, const char **ret_method)
{
    if (!from) {
        /* Allocated extents of a volume or of one snapshot. */
        *ret_method = "allocated";
        if (!to)
            return pool_allocated(d->pool, vol_id, NULL, cb, userdata);
        struct op_err e = {0};
        int r = store_hydrate(d, to, &e);
        op_err_clear(&e);
        if (r < 0)
            return r;
        r = pool_allocated(d->pool, to->volume_id, to->id, cb, userdata);
        store_release(d, to->id);
        return r;
    }
    int r = -ENOENT;
    for (int attempt = 0; attempt < 3 && r == -ENOENT; attempt++) {
        struct range_list l = {0};
        uint64_t limit = UINT64_MAX;
        const char *method = NULL;
        r = diff_once(d, from, to, vol_id, &l, &method, &limit);
        if (r == 0) {
            range_normalize(&l, limit ? limit : UINT64_MAX);
            r = range_emit(&l, cb, userdata, NULL);
            *ret_method = method ? method : "generation";
        }
        range_list_free(&l);
    }
    return r;
}

static int count_cb(uint64_t off, uint64_t len, void *ud)
{
    *(uint64_t *)ud += len;
    return 0;
}

int store_changed_bytes(struct amberd *d, const struct cat_snapshot *prev,
                        const struct cat_snapshot *s, uint64_t *ret_bytes, const char **ret_method)
{
    struct cat_range *v = NULL;
    size_t n = 0;
    uint64_t bytes = 0;
    int r = cat_store_get_extents(d->cat, s->id, &v, &n);
    if (r == 0) {
        for (size_t i = 0; i < n; i++)
            bytes += v[i].len;
        free(v);
        *ret_bytes = bytes;
        *ret_method = "store";
        return 0;
    }
    struct pool_diff_stats st = {0};
    if (prev)
        r = pool_diff(d->pool, s->volume_id, prev->id, s->id, count_cb, &bytes, &st);
    else
        r = pool_allocated(d->pool, s->volume_id, s->id, count_cb, &bytes);
    if (r < 0)
        return r;
    *ret_bytes = bytes;
    *ret_method = prev ? (st.method ? st.method : "generation") : "allocated";
    return 0;
}

/* --- deleting a snapshot in the middle of the chain ---------------------------------- */

static void ranges_add(struct range_list *l, const struct cat_range *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        range_add(l, v[i].off, v[i].len);
}

static void list_add(struct range_list *l, const struct range_list *from)
{
    for (size_t i = 0; i < from->n; i++)
        range_add(l, from->v[i].off, from->v[i].len);
}

static struct cat_range *to_cat(const struct range_list *l)
{
    struct cat_range *v = xcalloc(l->n ? l->n : 1, sizeof *v);
    for (size_t i = 0; i < l->n; i++)
        v[i] = (struct cat_range){ l->v[i].off, l->v[i].len };
    return v;
}

/* The exact changed blocks of TO against FROM (NULL: its allocated ones),
 * computed now; FROM must be resident (the invariant says it is when TO has
 * no extents). */
static int exact_now(struct amberd *d, const char *vol, const char *from, const char *to,
                     uint64_t size, struct range_list *out)
{
    struct store_state *st = S(d);
    struct cat_store_info si = {0};
    bool resident = true;
    if (from) {
        int r = cat_store_get(d->cat, from, &si);
        if (r == -ENOENT)
            from = NULL;    /* a parent only a peer has: as the mover, its allocated blocks */
        else if (r < 0)
            return r;
        resident = !from || si.resident;
        cat_store_info_clear(&si);
    }
    if (!resident) {
        log_warn("store", "snapshot %s: its base %s is not resident; every block counts as changed",
                 to, from);
        range_add(out, 0, size);
        return 0;
    }
    if (from)
        store_pin(st, from);
    store_pin(st, to);
    int r = store_exact_diff(d, vol, from, to, out);
    store_unpin(st, to);
    if (from)
        store_unpin(st, from);
    return r;
}

struct deleting {
    struct cat_tombstone t;
    const char *child;
    struct range_list s_own, c_own, c_ext;
    bool have_s_own, set_c_own;
};

static int deleting_tx(struct catalog *cat, void *data)
{
    struct deleting *x = data;
    _cleanup_free_ struct cat_range *sv = x->have_s_own ? to_cat(&x->s_own) : NULL;
    int r = cat_tombstone_put(cat, &x->t, sv, x->s_own.n);
    if (r < 0 || !x->have_s_own)
        return r;
    if (x->set_c_own) {
        _cleanup_free_ struct cat_range *cv = to_cat(&x->c_own);
        if ((r = cat_store_set_own_extents(cat, x->child, cv, x->c_own.n)) < 0)
            return r;
    }
    _cleanup_free_ struct cat_range *ev = to_cat(&x->c_ext);
    return cat_store_set_extents(cat, x->child, ev, x->c_ext.n);
}

int store_snapshot_deleting(struct amberd *d, const struct cat_snapshot *s)
{
    struct store_state *st = S(d);
    _cleanup_free_ char *child = NULL;
    struct cat_tombstone old = {0};
    int r = cat_tombstone_get(d->cat, s->id, &old);
    cat_tombstone_clear(&old);
    if (r == 0)
        return 0;               /* done before a crash: one transaction did it all */
    r = cat_store_child(d->cat, s->id, &child);
    if (r == -ENOENT)
        return 0;               /* the newest: nothing builds on it, no tombstone */
    if (r < 0)
        goto fail;
    struct deleting x = { .t = { .id = s->id, .volume_id = s->volume_id, .created_ns = s->created_ns,
                                 .size_bytes = s->size_bytes },
                          .child = child };
    if (!st) {
        /* --store-off: nothing recorded, nothing computed. */
        r = cat_tx(d->cat, deleting_tx, &x);
        if (r < 0)
            goto fail;
        return 0;
    }
    pthread_mutex_lock(&st->ext_lock);
    struct cat_range *v = NULL;
    size_t n = 0;
    struct range_list s_ext = {0};      /* S against its live parent */
    /* S's own extents (against the chain's previous member) and against its
     * live parent: the same unless a tombstone lies between. */
    r = cat_store_get_own_extents(d->cat, s->id, &v, &n);
    if (r == 0) {
        ranges_add(&x.s_own, v, n);
        free(v);
        v = NULL;
        if ((r = cat_store_get_extents(d->cat, s->id, &v, &n)) < 0)
            goto out;
        ranges_add(&s_ext, v, n);
        free(v);
        v = NULL;
    } else if (r == -ENOENT) {
        /* None yet: then nothing lies between S and its parent, which is
         * resident (the invariant). */
        if ((r = exact_now(d, s->volume_id, s->parent_id, s->id, s->size_bytes, &x.s_own)) < 0)
            goto out;
        list_add(&s_ext, &x.s_own);
    } else {
        goto out;
    }
    x.have_s_own = true;
    /* The child: its own extents stay (against S, or a tombstone between),
     * its extents become the union against S's live parent. */
    struct cat_store_info ci = {0};
    if ((r = cat_store_get(d->cat, child, &ci)) < 0)
        goto out;
    bool c_has = ci.has_extents, c_has_own = ci.has_own_extents;
    cat_store_info_clear(&ci);
    struct range_list c_vs_s = {0};     /* the child against S, its live parent */
    if (c_has) {
        if ((r = cat_store_get_extents(d->cat, child, &v, &n)) < 0)
            goto out;
        ranges_add(&c_vs_s, v, n);
        free(v);
        v = NULL;
    } else if ((r = exact_now(d, s->volume_id, s->id, child, s->size_bytes, &c_vs_s)) < 0) {
        range_list_free(&c_vs_s);
        goto out;
    }
    /* No own_extents: the chain's member before the child is S. */
    x.set_c_own = !c_has_own;
    if (x.set_c_own)
        list_add(&x.c_own, &c_vs_s);
    list_add(&x.c_ext, &s_ext);
    list_add(&x.c_ext, &c_vs_s);
    range_list_free(&c_vs_s);
    range_normalize(&x.s_own, UINT64_MAX);
    range_normalize(&x.c_own, UINT64_MAX);
    range_normalize(&x.c_ext, UINT64_MAX);
    r = cat_tx(d->cat, deleting_tx, &x);
out:
    pthread_mutex_unlock(&st->ext_lock);
    range_list_free(&s_ext);
    range_list_free(&x.s_own);
    range_list_free(&x.c_own);
    range_list_free(&x.c_ext);
    if (r < 0)
        goto fail;
    return 0;
fail:
    log_warn_errno(r, "store", "snapshot %s: cannot keep its place in the chain", s->id);
    return r;
}

void store_snapshot_deleted(struct amberd *d, const char *manifest)
{
    struct store_state *st = S(d);
    if (!st || !manifest || !st->serve_repo)
        return;
    pthread_mutex_lock(&st->serve_lock);
    int r = objstore_delete_manifest(st->serve_repo, manifest);
    pthread_mutex_unlock(&st->serve_lock);
    if (r < 0 && r != -ENOENT)
        log_warn_errno(r, "store", "cannot delete manifest %s from the local store", manifest);
    pthread_mutex_lock(&st->lock);
    st->deleted_manifests++;
    pthread_mutex_unlock(&st->lock);
    store_kick(d);
}
