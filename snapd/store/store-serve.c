/* store-serve.c: serving snapshots whatever their residency: bringing a
 * dropped snapshot back (hydration), exact diffs over the whole chain,
 * a reader for export and sync, and keeping the chain exact when a
 * snapshot in the middle is deleted.
 *
 * Hydration restores the snapshot's manifest from the local store into a
 * new read-only subvolume at the snapshot's own place (pool_snap_build:
 * built under a dot-name, sealed read-only and renamed in at the end). The
 * new image starts as a writable snapshot of the volume's nearest resident
 * snapshot and the restore runs in resume mode: every chunk already right
 * there is only read and checked, so only the chunks that differ are
 * written and the rest stays shared with that snapshot (a brought-back
 * snapshot costs its difference in space, not its size). So
 * every existing path (clone, revert, attach, mount, export, sync) reads it
 * as it reads a resident one. The copy stays pinned while its user needs
 * it; the mover drops it again afterwards (after a detach for an attached
 * one). A crash mid-way leaves a dot-name the pool removes at start, or a
 * whole subvolume that recovery adopts.
 *
 * A diff from A to B walks the chain A < S1 < ... < B: the recorded exact
 * extents of every snapshot that has them, then, from the first one that
 * has none, the pool's diff from its (resident) parent to B. */
#include <fcntl.h>
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store-internal.h"

int store_hydrate(struct amberd *d, const struct cat_snapshot *s, struct op_err *e)
{
    struct store_state *st = S(d);
    if (!st)
        return 0;
    store_pin(st, s->id);
    struct cat_store_info si = {0};
    int r = cat_store_get(d->cat, s->id, &si);
    if (r < 0) {
        store_unpin(st, s->id);
        return op_fail(e, r == -ENOENT ? RPC_NOT_FOUND : 0, r, "snapshot %s: %s", s->name,
                       r == -ENOENT ? "not found" : cat_errmsg(d->cat));
    }
    if (si.resident) {
        cat_store_info_clear(&si);
        return 0;
    }
    if (!si.manifest || !st->serve_repo) {
        cat_store_info_clear(&si);
        store_unpin(st, s->id);
        return op_fail(e, RPC_DATA_LOSS, -EIO, "snapshot %s is neither in the pool nor in the store",
                       s->name);
    }
    pthread_mutex_lock(&st->serve_lock);
    /* Another caller may have brought it back while we waited. */
    struct cat_store_info again = {0};
    if (cat_store_get(d->cat, s->id, &again) == 0 && again.resident) {
        pthread_mutex_unlock(&st->serve_lock);
        cat_store_info_clear(&again);
        cat_store_info_clear(&si);
        return 0;
    }
    cat_store_info_clear(&again);
    uint64_t t0 = now_mono_ns();
    int fd = -1;
    _cleanup_free_ char *base = NULL;
    if (cat_store_nearest_resident(d->cat, s->volume_id, s->created_ns, s->id, &base) == 0) {
        store_pin(st, base);
        r = pool_snap_build_from(d->pool, s->volume_id, s->id, base, s->size_bytes, &fd);
        if (r < 0 && r != -ENOSPC) {
            store_unpin(st, base);
            free(base);
            base = NULL;
        }
    }
    if (!base)
        r = pool_snap_build(d->pool, s->volume_id, s->id, s->size_bytes, &fd);
    struct objstore_restore_result res = {0};
    if (r == 0) {
        struct objstore_restore_req req = { .manifest = si.manifest, .fd = fd, .resume = base != NULL,
                                            .cancel = &st->cancel };
        r = objstore_restore(st->serve_repo, &req, &res);
        if (r == 0 && fsync(fd) < 0)
            r = -errno;
        close(fd);
        store_crashpoint("store-hydrate:restored");
        if (r == 0)
            r = pool_snap_build_commit(d->pool, s->volume_id, s->id);
        if (r < 0)
            pool_snap_build_abort(d->pool, s->volume_id, s->id);
    }
    if (base)
        store_unpin(st, base);
    if (r == 0) {
        store_crashpoint("store-hydrate:built");
        r = cat_store_set_resident(d->cat, s->id, true);
        if (r == -ENOENT)   /* deleted meanwhile: leave nothing behind */
            (void)pool_snap_delete(d->pool, s->volume_id, s->id);
    }
    pthread_mutex_unlock(&st->serve_lock);
    cat_store_info_clear(&si);
    if (r < 0) {
        store_unpin(st, s->id);
        if (r == -ENOSPC)
            return op_fail(e, RPC_RESOURCE_EXHAUSTED, r,
                           "snapshot %s: no room in the pool to bring it back from the store", s->name);
        return op_fail(e, 0, r, "snapshot %s: bringing it back from the store: %s", s->name,
                       strerror(-r));
    }
    pthread_mutex_lock(&st->lock);
    st->hydrated++;
    pthread_mutex_unlock(&st->lock);
    log_info("store", "brought snapshot %s (%s) back from the store%s%s: %llu bytes written, %llu "
             "chunks kept, in %.1f ms", s->name, s->id, base ? " on snapshot " : "", base ? base : "",
             (unsigned long long)res.bytes_written, (unsigned long long)res.chunks_skipped,
             (now_mono_ns() - t0) / 1e6);
    return 0;
}

void store_release(struct amberd *d, const char *snapshot_id)
{
    struct store_state *st = S(d);
    if (!st)
        return;
    store_unpin(st, snapshot_id);
    store_kick(d);
}

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

/* --- a reader ------------------------------------------------------------------ */

struct store_reader {
    struct amberd *d;
    char *snapshot_id;
    int fd;                 /* the resident image, or -1 */
    char *manifest;         /* else: read from the store */
    uint64_t size;
    bool pinned;
};

static int reader_open(struct amberd *d, const struct cat_snapshot *s, bool need_fd,
                       struct store_reader **ret, struct op_err *e)
{
    struct store_state *st = S(d);
    struct store_reader *x = xcalloc(1, sizeof *x);
    x->d = d;
    x->snapshot_id = xstrdup(s->id);
    x->fd = -1;
    x->size = s->size_bytes;
    int r;
#if OBJSTORE_FORMAT_VERSION >= 2
    /* Not resident: read the store directly, nothing brought back. */
    struct cat_store_info si = {0};
    if (!need_fd && st && st->read_repo && cat_store_get(d->cat, s->id, &si) == 0 && !si.resident &&
        si.manifest) {
        x->manifest = TAKE_PTR(si.manifest);
        cat_store_info_clear(&si);
        *ret = x;
        return 0;
    }
    cat_store_info_clear(&si);
#else
    (void)need_fd;
    (void)st;
#endif
    if ((r = store_hydrate(d, s, e)) < 0) {
        free(x->snapshot_id);
        free(x);
        return r;
    }
    x->pinned = true;
    _cleanup_free_ char *path = pool_disk_path(d->pool, s->volume_id, s->id);
    x->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (x->fd < 0) {
        r = -errno;
        store_reader_close(x);
        return op_fail(e, r == -ENOENT ? RPC_NOT_FOUND : 0, r, "snapshot %s: %s", s->name,
                       strerror(-r));
    }
    *ret = x;
    return 0;
}

int store_reader_open(struct amberd *d, const struct cat_snapshot *s, struct store_reader **ret,
                      struct op_err *e)
{
    return reader_open(d, s, false, ret, e);
}

int store_reader_open_fd(struct amberd *d, const struct cat_snapshot *s, struct store_reader **ret,
                         struct op_err *e)
{
    return reader_open(d, s, true, ret, e);
}

int store_reader_fd(const struct store_reader *r)
{
    return r->fd;
}

int store_reader_pread(struct store_reader *r, void *buf, size_t len, uint64_t off)
{
    uint8_t *p = buf;
    if (r->fd < 0) {
#if OBJSTORE_FORMAT_VERSION >= 2
        struct store_state *st = S(r->d);
        size_t in = off >= r->size ? 0 : (size_t)MIN((uint64_t)len, r->size - off);
        memset(p + in, 0, len - in);
        return in ? objstore_read(st->read_repo, r->manifest, off, p, in) : 0;
#else
        return -EBADF;
#endif
    }
    while (len > 0) {
        ssize_t n = pread(r->fd, p, len, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0) {           /* past the end reads as zeros */
            memset(p, 0, len);
            return 0;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

void store_reader_close(struct store_reader *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    if (r->pinned)
        store_release(r->d, r->snapshot_id);
    free(r->manifest);
    free(r->snapshot_id);
    free(r);
}

int store_copy_to(struct amberd *d, const struct cat_snapshot *s, struct objstore *dst,
                  objstore_progress_fn progress, void *progress_ud, const atomic_bool *cancel,
                  struct objstore_export_result *res)
{
#if OBJSTORE_FORMAT_VERSION >= 2
    struct store_state *st = S(d);
    struct cat_store_info si = {0};
    if (!st || !st->serve_repo || cat_store_get(d->cat, s->id, &si) < 0 || si.resident || !si.manifest) {
        cat_store_info_clear(&si);
        return -EOPNOTSUPP;
    }
    pthread_mutex_lock(&st->serve_lock);
    int r = objstore_copy(st->serve_repo, dst, si.manifest, progress, progress_ud, cancel, res);
    pthread_mutex_unlock(&st->serve_lock);
    cat_store_info_clear(&si);
    return r;
#else
    (void)d; (void)s; (void)dst; (void)progress; (void)progress_ud; (void)cancel; (void)res;
    return -EOPNOTSUPP;
#endif
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
