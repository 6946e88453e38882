/* ops-volume.c: volume operations with intents (see daemon.h for the
 * protocol): create, delete, resize, attach, detach, revert. The shared
 * lookups, errors, crash points and per-volume locks are in ops.c. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/daemon.h"
#include "snapd/limits.h"
#include "snapd/store/store.h"

/* Largest volume we accept: 64 TiB (a loop device and a btrfs file take
 * more, but nothing sane asks for it on one node). */
#define VOL_MAX_SIZE (64ULL << 40)

/* Take the volume's operation lock and record an intent on it; on failure
 * neither is held. */
static int op_begin(struct amberd *d, const char *vol_id, const char *op, const char *what,
                    int64_t *ret_intent, struct op_err *e)
{
    int r = busy_acquire(d, vol_id, what, e);
    if (r < 0)
        return r;
    r = cat_intent_add(d->cat, op, vol_id, NULL, ret_intent);
    if (r < 0) {
        busy_release(d, vol_id);
        return op_fail(e, r == -EBUSY ? RPC_ABORTED : 0, r, "catalog: %s", cat_errmsg(d->cat));
    }
    return 0;
}

static int size_check(uint64_t size, uint64_t *ret, struct op_err *e)
{
    if (size == 0)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "the size must be greater than zero");
    if (size > VOL_MAX_SIZE)
        return op_fail(e, RPC_OUT_OF_RANGE, -ERANGE, "size %llu is over the limit of 64 TiB",
                       (unsigned long long)size);
    if (size % POOL_ALIGN)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL,
                       "size %llu is not a multiple of 4096 bytes (4 KiB)", (unsigned long long)size);
    *ret = size;
    return 0;
}

static int pool_err(struct op_err *e, int r, const char *what)
{
    if (r == -ENOSPC)
        return op_fail(e, RPC_RESOURCE_EXHAUSTED, r, "%s: the pool has no room", what);
    if (r == -EBUSY)
        return op_fail(e, RPC_FAILED_PRECONDITION, r, "%s: in use (attached or mounted)", what);
    return op_fail(e, 0, r, "%s: %s", what, strerror(-r));
}

static bool same_str(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

int vol_create(struct amberd *d, const struct vol_create_args *a, struct cat_volume **ret,
               struct op_err *e)
{
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *src = NULL;
    _cleanup_(cat_volume_freep) struct cat_volume *srcvol = NULL, *old = NULL;
    int r;

    if (!a->name || name_validate(a->name) < 0)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL,
                       "invalid volume name \"%s\": 1-63 characters of A-Z a-z 0-9 . _ -, "
                       "not starting with . or -", a->name ? a->name : "");
    if (a->source_snapshot && *a->source_snapshot) {
        r = snap_find(d, a->source_snapshot, &src, e);
        if (r < 0)
            return r;
    } else if (a->source_volume && *a->source_volume) {
        r = vol_find(d, a->source_volume, &srcvol, e);
        if (r < 0)
            return r;
    }
    uint64_t size = a->size;
    if (size == 0 && (src || srcvol))
        size = src ? src->size_bytes : srcvol->size_bytes;
    r = size_check(size, &size, e);
    if (r < 0)
        return r;
    uint64_t src_size = src ? src->size_bytes : srcvol ? srcvol->size_bytes : 0;
    if (size < src_size)
        return op_fail(e, RPC_OUT_OF_RANGE, -ERANGE,
                       "size %llu is smaller than the source's %llu bytes",
                       (unsigned long long)size, (unsigned long long)src_size);

    /* Idempotency: the same request again returns the same volume. */
    r = cat_volume_find(d->cat, a->name, &old);
    if (r == 0) {
        if (old->state != CAT_VOL_READY)
            return op_fail(e, RPC_ABORTED, -EBUSY, "volume %s is being %s", a->name,
                           cat_vol_state_to_string(old->state));
        if (old->size_bytes != size ||
            !same_str(old->source_snapshot_id, src ? src->id : NULL) ||
            !same_str(old->source_volume_id, srcvol ? srcvol->id : NULL))
            return op_fail(e, RPC_ALREADY_EXISTS, -EEXIST,
                           "volume %s exists with a different size or source", a->name);
        *ret = TAKE_PTR(old);
        return 0;
    }
    if (r != -ENOENT)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));

    if ((r = limit_namespace_volumes(d, a->pvc_namespace, e)) < 0)
        return r;
    char id[37];
    uuid_new(id);
    struct cat_volume v = {
        .id = id, .name = (char *)a->name, .size_bytes = size, .fs_type = (char *)a->fs_type,
        .state = CAT_VOL_CREATING,
        .source_snapshot_id = src ? src->id : NULL,
        .source_volume_id = srcvol ? srcvol->id : NULL,
        .pvc_namespace = (char *)a->pvc_namespace, .pvc_name = (char *)a->pvc_name,
        .params = (char *)a->params,
    };
    r = busy_acquire(d, id, "create", e);
    if (r < 0)
        return r;
    int64_t intent;
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_volume_add(d->cat, &v);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_VOLUME_CREATE, id, NULL, &intent);
        r = cat_end(d->cat, r);
    }
    if (r == -EEXIST) {
        busy_release(d, id);
        return op_fail(e, RPC_ABORTED, -EBUSY, "volume %s is being created by another call", a->name);
    }
    if (r < 0) {
        busy_release(d, id);
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    }
    crashpoint("volume-create:intent");

    /* A volume clone goes through a hidden snapshot of the source, made
     * and dropped here: the pool clones only snapshots. */
    char tmpsnap[37] = "";
    if (src) {
        /* A snapshot moved off the pool is brought back first. */
        r = store_hydrate(d, src, e);
        if (r == 0) {
            r = pool_vol_clone(d->pool, src->volume_id, src->id, id);
            store_release(d, src->id);
        }
    } else if (srcvol) {
        uuid_new(tmpsnap);
        r = pool_snap_create(d->pool, srcvol->id, tmpsnap, NULL);
        if (r == 0) {
            r = pool_vol_clone(d->pool, srcvol->id, tmpsnap, id);
            pool_snap_delete(d->pool, srcvol->id, tmpsnap);
        }
    } else {
        r = pool_vol_create(d->pool, id, size);
    }
    if (r == 0 && (src || srcvol) && size > src_size)
        r = pool_vol_resize(d->pool, id, size);
    crashpoint("volume-create:pool");
    if (r < 0) {
        int r2 = r;
        pool_err(e, r, a->name);
        if (src || srcvol)
            pool_vol_delete(d->pool, id);
        cat_begin(d->cat);
        cat_volume_delete(d->cat, id);
        cat_intent_delete(d->cat, intent);
        cat_commit(d->cat);
        busy_release(d, id);
        return r2;
    }
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_volume_set_state(d->cat, id, CAT_VOL_READY);
        if (r == 0)
            r = cat_intent_delete(d->cat, intent);
        r = cat_end(d->cat, r);
    }
    busy_release(d, id);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    crashpoint("volume-create:done");
    log_info("volume", "created volume %s id=%s size=%llu%s%s", a->name, id,
             (unsigned long long)size, src ? " from snapshot " : "", src ? src->id : "");
    return vol_find(d, id, ret, e);
}

int vol_delete(struct amberd *d, const char *ref, struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(d, ref, &v, e);
    if (r < 0)
        return r;
    r = busy_acquire(d, v->id, "delete", e);
    if (r < 0)
        return r;
    ballast_make_room(d);
    struct pool_file_info fi = {0};
    if (pool_stat(d->pool, v->id, NULL, &fi) == 0 && fi.device) {
        op_fail(e, RPC_FAILED_PRECONDITION, -EBUSY,
                "volume %s is attached to %s: detach (unstage) it first", v->name, fi.device);
        free(fi.device);
        busy_release(d, v->id);
        return -EBUSY;
    }
    /* Nor with a snapshot attached: once the volume is gone the snapshot
     * could be neither detached nor deleted (its loop device would leak). */
    char **snaps = NULL;
    if (pool_list(d->pool, v->id, &snaps) == 0)
        for (char **sp = snaps; *sp; sp++) {
            struct pool_file_info sfi = {0};
            if (pool_stat(d->pool, v->id, *sp, &sfi) == 0 && sfi.device) {
                op_fail(e, RPC_FAILED_PRECONDITION, -EBUSY,
                        "volume %s: its snapshot %s is attached to %s: detach it first", v->name, *sp,
                        sfi.device);
                free(sfi.device);
                pool_strv_free(snaps);
                busy_release(d, v->id);
                return -EBUSY;
            }
        }
    pool_strv_free(snaps);
    int64_t intent;
    r = cat_begin(d->cat);
    if (r == 0 && v->state == CAT_VOL_RECEIVING) {
        /* Deleting a half-restored volume abandons its restore. */
        struct cat_intent *in = NULL;
        if (cat_intent_find_target(d->cat, v->id, &in) == 0 && strcmp(in->op, CAT_OP_RESTORE) == 0)
            r = cat_intent_delete(d->cat, in->id);
        cat_intent_free(in);
    }
    if (r == 0) {
        r = cat_volume_set_state(d->cat, v->id, CAT_VOL_DELETING);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_VOLUME_DELETE, v->id, NULL, &intent);
        r = cat_end(d->cat, r);
    }
    if (r < 0) {
        busy_release(d, v->id);
        return op_fail(e, r == -EBUSY ? RPC_ABORTED : 0, r, "catalog: %s", cat_errmsg(d->cat));
    }
    crashpoint("volume-delete:intent");
    r = pool_vol_delete(d->pool, v->id);
    if (r == -ENOENT)
        r = 0;
    crashpoint("volume-delete:pool");
    if (r < 0) {
        pool_err(e, r, v->name);
        cat_begin(d->cat);
        cat_volume_set_state(d->cat, v->id, CAT_VOL_READY);
        cat_intent_delete(d->cat, intent);
        cat_commit(d->cat);
        busy_release(d, v->id);
        return r;
    }
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_volume_delete(d->cat, v->id);
        if (r == 0)
            r = cat_intent_delete(d->cat, intent);
        r = cat_end(d->cat, r);
    }
    busy_release(d, v->id);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    log_info("volume", "deleted volume %s id=%s", v->name, v->id);
    ballast_ensure(d);
    store_kick(d);      /* a snapshot waiting for room may fit now */
    return 0;
}

int vol_resize(struct amberd *d, const char *ref, uint64_t size, struct cat_volume **ret,
               struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(d, ref, &v, e);
    if (r < 0)
        return r;
    r = size_check(size, &size, e);
    if (r < 0)
        return r;
    if (size < v->size_bytes)
        return op_fail(e, RPC_OUT_OF_RANGE, -ERANGE,
                       "volume %s is %llu bytes: volumes only grow", v->name,
                       (unsigned long long)v->size_bytes);
    if (size == v->size_bytes) {
        *ret = TAKE_PTR(v);
        return 0;
    }
    int64_t intent;
    r = op_begin(d, v->id, CAT_OP_RESIZE, "resize", &intent, e);
    if (r < 0)
        return r;
    crashpoint("volume-resize:intent");
    r = pool_vol_resize(d->pool, v->id, size);
    crashpoint("volume-resize:pool");
    if (r < 0) {
        pool_err(e, r, v->name);
        cat_intent_delete(d->cat, intent);
        busy_release(d, v->id);
        return r;
    }
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_volume_set_size(d->cat, v->id, size);
        if (r == 0)
            r = cat_intent_delete(d->cat, intent);
        r = cat_end(d->cat, r);
    }
    busy_release(d, v->id);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    log_info("volume", "resized volume %s to %llu bytes", v->name, (unsigned long long)size);
    return vol_find(d, v->id, ret, e);
}

static int resolve_snap_of(struct amberd *d, const struct cat_volume *v, const char *snap_ref,
                           struct cat_snapshot **ret, struct op_err *e)
{
    int r = cat_snapshot_find(d->cat, v->id, snap_ref, ret);
    if (r == -ENOENT || r == -EINVAL)
        return op_fail(e, RPC_NOT_FOUND, -ENOENT, "snapshot %s of volume %s not found",
                       snap_ref, v->name);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    if (strcmp((*ret)->volume_id, v->id) != 0) {
        cat_snapshot_free(TAKE_PTR(*ret));
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "snapshot %s is not of volume %s",
                       snap_ref, v->name);
    }
    return 0;
}

int vol_attach(struct amberd *d, const char *ref, const char *snap_ref, char **ret_dev,
               struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = vol_find(d, ref, &v, e);
    if (r < 0)
        return r;
    if (v->state != CAT_VOL_READY)
        return op_fail(e, RPC_ABORTED, -EBUSY, "volume %s is %s", v->name,
                       cat_vol_state_to_string(v->state));
    if (snap_ref && *snap_ref && (r = resolve_snap_of(d, v, snap_ref, &s, e)) < 0)
        return r;
    if (!s && v->replica_peer)
        return op_fail(e, RPC_FAILED_PRECONDITION, -EROFS,
                       "volume %s is a replica of %s: it follows its source and is read-only; "
                       "attach one of its snapshots, or clone one", v->name, v->replica_peer);
    r = busy_acquire(d, v->id, "attach", e);
    if (r < 0)
        return r;
    /* A snapshot moved off the pool is brought back while attached: the
     * store drops its subvolume again after the detach. */
    if (s && (r = store_hydrate(d, s, e)) < 0) {
        busy_release(d, v->id);
        return r;
    }
    r = pool_attach(d->pool, v->id, s ? s->id : NULL, ret_dev);
    if (s)
        store_release(d, s->id);
    busy_release(d, v->id);
    if (r < 0)
        return pool_err(e, r, v->name);
    log_info("volume", "attached %s%s%s to %s", v->name, s ? "@" : "", s ? s->name : "", *ret_dev);
    return 0;
}

int vol_detach(struct amberd *d, const char *ref, const char *snap_ref, struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = vol_find(d, ref, &v, e);
    if (r < 0)
        return r;
    if (snap_ref && *snap_ref && (r = resolve_snap_of(d, v, snap_ref, &s, e)) < 0)
        return r;
    r = busy_acquire(d, v->id, "detach", e);
    if (r < 0)
        return r;
    r = pool_detach(d->pool, v->id, s ? s->id : NULL);
    busy_release(d, v->id);
    if (s)
        store_kick(d);  /* a brought-back snapshot may go again */
    if (r == -EINPROGRESS)
        r = 0;    /* detached at the holder's last close */
    if (r == -EBUSY)
        return op_fail(e, RPC_FAILED_PRECONDITION, r, "volume %s is mounted: unmount it first",
                       v->name);
    if (r < 0)
        return pool_err(e, r, v->name);
    return 0;
}

int vol_revert(struct amberd *d, const char *ref, const char *snap_ref, struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = vol_find(d, ref, &v, e);
    if (r < 0)
        return r;
    if (!snap_ref || !*snap_ref)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "a snapshot to revert to is required");
    if ((r = resolve_snap_of(d, v, snap_ref, &s, e)) < 0)
        return r;
    if (s->size_bytes > v->size_bytes)
        return op_fail(e, RPC_FAILED_PRECONDITION, -EINVAL, "snapshot is larger than the volume");
    int64_t intent;
    r = op_begin(d, v->id, CAT_OP_REVERT, "revert", &intent, e);
    if (r < 0)
        return r;
    crashpoint("volume-revert:intent");
    r = store_hydrate(d, s, e);
    if (r == 0) {
        r = pool_vol_revert(d->pool, v->id, s->id);
        store_release(d, s->id);
    }
    crashpoint("volume-revert:pool");
    if (r == 0 && s->size_bytes < v->size_bytes)
        r = pool_vol_resize(d->pool, v->id, v->size_bytes);
    cat_intent_delete(d->cat, intent);
    busy_release(d, v->id);
    if (r == -EBUSY)
        return op_fail(e, RPC_FAILED_PRECONDITION, r,
                       "volume %s is attached: detach it before reverting", v->name);
    if (r < 0)
        return pool_err(e, r, v->name);
    log_info("volume", "reverted volume %s to snapshot %s", v->name, s->id);
    return 0;
}
