/* store-serve.c: serving snapshots whatever their residency: bringing a
 * dropped snapshot back (hydration) and a reader for export and sync.
 *
 * Hydration restores the snapshot's manifest from the local store into a
 * new read-only subvolume at the snapshot's own place (pool_snap_build:
 * built under a dot-name, sealed read-only and renamed in at the end). The
 * new image starts as a writable snapshot of the volume's nearest resident
 * snapshot and only the union of the recorded extents between the two is
 * read from the store and rewritten (store-hydrate.c; without an exact
 * chain: a restore in resume mode), so the rest stays shared with that
 * snapshot (a brought-back snapshot costs its difference in space and
 * time, not its size). So every existing path (clone, revert, attach,
 * mount, export, sync) reads it as it reads a resident one. The copy stays pinned while its user needs
 * it; the mover drops it again afterwards (after a detach for an attached
 * one). A crash mid-way leaves a dot-name the pool removes at start, or a
 * whole subvolume that recovery adopts. Diffs and deletes: store-diff.c. */
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
    struct store_hydrate_stats hs = {0};
    if (r == 0) {
        r = store_hydrate_write(d, s, si.manifest, base, fd, &hs);
        uint64_t ts = now_mono_ns();
        if (r == 0 && fsync(fd) < 0)
            r = -errno;
        hs.sync_ns = now_mono_ns() - ts;
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
    st->hydrate_written += hs.bytes_written + hs.bytes_punched;
    if (strcmp(hs.method, "union") == 0)
        st->hydrate_union += hs.union_bytes;
    else
        st->hydrate_full++;
    pthread_mutex_unlock(&st->lock);
    log_info("store", "brought snapshot %s (%s) back from the store%s%s (%s): %llu bytes written, "
             "%llu punched, %llu read, union %llu, %llu chunks kept, in %.1f ms (threads: %.1f ms reading, "
             "%.1f ms writing; fsync %.1f ms)", s->name, s->id,
             base ? " on snapshot " : "", base ? base : "", hs.method,
             (unsigned long long)hs.bytes_written, (unsigned long long)hs.bytes_punched,
             (unsigned long long)hs.bytes_read, (unsigned long long)hs.union_bytes,
             (unsigned long long)hs.chunks_kept, (now_mono_ns() - t0) / 1e6, hs.read_ns / 1e6,
             hs.write_ns / 1e6, hs.sync_ns / 1e6);
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
