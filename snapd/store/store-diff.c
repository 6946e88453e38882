/* store-diff.c: exact diffs over a volume's whole snapshot chain, and
 * keeping the chain exact when a snapshot in the middle is deleted.
 *
 * A diff from A to B walks the chain A < S1 < ... < B: the recorded exact
 * extents of every snapshot that has them, then, from the first one that
 * has none, the pool's diff from its (resident) parent to B. */
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

/* One attempt: -ENOENT when a base went away under us (try again). */
static int diff_once(struct amberd *d, const struct cat_snapshot *from, const struct cat_snapshot *to,
                     const char *vol_id, struct range_list *out, const char **ret_method, uint64_t *limit)
{
    struct cat_snapshot_list chain = {0};
    /* A snapshot being deleted stays in the chain until its row goes: its
     * extents are merged into its child's only during the delete. */
    struct cat_snapshot_filter f = { .volume_id = from->volume_id,
                                     .states = (1u << CAT_SNAP_READY) | (1u << CAT_SNAP_DELETING) };
    int r = cat_snapshot_list(d->cat, &f, NULL, &chain);
    if (r < 0)
        return r;
    size_t a = chain_index(&chain, from->id), b = to ? chain_index(&chain, to->id) : chain.n;
    if (a == SIZE_MAX || b == SIZE_MAX) {
        /* Not in the ready chain (being made or deleted): the pool alone. */
        struct pool_diff_stats ps = {0};
        r = pool_diff(d->pool, from->volume_id, from->id, to ? to->id : NULL, collect, out, &ps);
        *ret_method = ps.method ? ps.method : "generation";
        goto out;
    }
    if (a > b) {            /* symmetric */
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
        r = cat_store_get_extents(d->cat, chain.items[i].id, &v, &n);
        if (r == -ENOENT)
            break;
        if (r < 0)
            goto out;
        for (size_t k = 0; k < n; k++)
            range_add(out, v[k].off, v[k].len);
        free(v);
        *limit = MAX(*limit, chain.items[i].size_bytes);
        base = i;
        used = true;
    }
    r = 0;
    const char *base_id = chain.items[base].id;
    bool done = b < chain.n && base == b;
    *ret_method = used ? "store" : NULL;
    if (!done) {
        const char *end_id = b < chain.n ? chain.items[b].id : NULL;
        struct pool_diff_stats ps = {0};
        r = pool_diff(d->pool, from->volume_id, base_id, end_id, collect, out, &ps);
        if (!used)
            *ret_method = ps.method ? ps.method : "generation";
    }
    *limit = MAX(*limit, MAX(chain.items[a].size_bytes, b < chain.n ? chain.items[b].size_bytes : 0));
    if (!to && vol_id) {
        struct pool_file_info fi = {0};
        if (pool_stat(d->pool, vol_id, NULL, &fi) == 0) {
            *limit = MAX(*limit, fi.size);
            free(fi.device);
        }
    }
out:
    cat_snapshot_list_free(&chain);
    return r;
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

int store_snapshot_deleting(struct amberd *d, const struct cat_snapshot *s)
{
    struct store_state *st = S(d);
    if (!st)
        return 0;
    pthread_mutex_lock(&st->ext_lock);
    _cleanup_free_ char *child = NULL;
    struct cat_range *sv = NULL, *cv = NULL;
    size_t sn = 0, cn = 0;
    struct range_list u = {0};
    int r = cat_store_child(d->cat, s->id, &child);
    if (r == -ENOENT) {
        r = 0;                  /* the newest: nothing builds on it */
        goto out;
    }
    if (r < 0)
        goto out;
    r = cat_store_get_extents(d->cat, s->id, &sv, &sn);
    if (r == -ENOENT) {
        /* S has none, so neither has its child (they are recorded oldest
         * first): the child will be diffed against S's parent, which is
         * resident because S has no extents. */
        r = 0;
        goto out;
    }
    if (r < 0)
        goto out;
    ranges_add(&u, sv, sn);
    r = cat_store_get_extents(d->cat, child, &cv, &cn);
    if (r == 0) {
        ranges_add(&u, cv, cn);
    } else if (r == -ENOENT) {
        /* The child has none yet: S's extents plus S..child now, while S
         * is still here (it is: its child has no extents). */
        struct cat_store_info si = {0};
        r = cat_store_get(d->cat, s->id, &si);
        bool resident = r == 0 && si.resident;
        cat_store_info_clear(&si);
        if (r < 0)
            goto out;
        if (!resident) {
            log_warn("store", "snapshot %s: deleting it with its subvolume gone and its child %s "
                     "not yet diffed; the child counts every block as changed", s->id, child);
            range_add(&u, 0, s->size_bytes);
        } else {
            store_pin(st, s->id);
            store_pin(st, child);
            r = store_exact_diff(d, s->volume_id, s->id, child, &u);
            store_unpin(st, child);
            store_unpin(st, s->id);
            if (r < 0)
                goto out;
        }
    } else {
        goto out;
    }
    range_normalize(&u, UINT64_MAX);
    struct cat_range *v = xcalloc(u.n ? u.n : 1, sizeof *v);
    for (size_t i = 0; i < u.n; i++)
        v[i] = (struct cat_range){ u.v[i].off, u.v[i].len };
    r = cat_store_set_extents(d->cat, child, v, u.n);
    free(v);
out:
    pthread_mutex_unlock(&st->ext_lock);
    free(sv);
    free(cv);
    range_list_free(&u);
    if (r < 0)
        log_warn_errno(r, "store", "snapshot %s: cannot carry its changed extents to its child",
                       s->id);
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
