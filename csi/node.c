/* node.c: the CSI Node service: attach, format and mount on this node.
 *
 * Stage: amberd attaches the volume's image to a loop device (idempotent:
 * an attached volume keeps its device). A Mount volume is formatted on
 * first use (only when the device holds no signature at all) and mounted
 * at staging_target_path; a Block volume has nothing to mount. Publish
 * bind-mounts the staged filesystem on target_path (a directory we create),
 * or the loop device's node on target_path (a file we create), read-only
 * when asked. Unpublish and unstage undo that by path and are idempotent:
 * nothing mounted is success. Unstage then asks amberd to detach.
 *
 * No state is kept here: "is it staged?" is the mount table, "which
 * device?" is amberd's Volume.device. Mutating calls take the volume's
 * operation lock, so a concurrent second call on it gets ABORTED.
 *
 * Expansion (see controller.c): NodeExpandVolume first grows the volume in
 * amberd to capacity_range.required_bytes when it is smaller (amberd also
 * updates the attached loop device's capacity), then grows the filesystem
 * online (resize2fs on the device, xfs_growfs on the mount point). */
#include <fcntl.h>
#include <libgen.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>

#include "amber/log.h"
#include "csi/csi.h"

#define EPHEMERAL_KEY "csi.storage.k8s.io/ephemeral"

/* The volume by id, with NOT_FOUND/amberd errors recorded on the call. */
static int lookup(struct rpc_call *c, const char *id, Amber__V1__Volume **ret)
{
    struct rpc_status st = {0};
    int code = amberd_get_volume(c, id, ret, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_NOT_FOUND, "volume %s not found", id);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the volume");
    return 0;
}

/* Whether a mount is of the block device `dev`. */
static bool mount_is_of(const struct mnt_info *m, const char *dev)
{
    struct stat st;
    if (!dev || !*dev || stat(dev, &st) < 0 || !S_ISBLK(st.st_mode))
        return false;
    return major(st.st_rdev) == m->major && minor(st.st_rdev) == m->minor;
}

/* The filesystem a Mount request means: the capability's, else what the
 * volume was created for, else ext4. */
static const char *want_fs(const Csi__V1__VolumeCapability *cap, const Amber__V1__Volume *v)
{
    if (cap->mount && *cap->mount->fs_type)
        return cap->mount->fs_type;
    return *v->fs_type && csi_fs_supported(v->fs_type) ? v->fs_type : "ext4";
}

static int empty_reply(struct rpc_call *c, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage m;
    protobuf_c_message_init(d, &m);
    return rpc_call_send(c, &m);
}

/* --- stage / unstage --------------------------------------------------- */

static int stage_mount(struct rpc_call *c, const Csi__V1__NodeStageVolumeRequest *q,
                       const struct csi_cap *cap, const char *dev, const char *fs)
{
    const char *path = q->staging_target_path;
    struct mnt_info mi = {0};
    if (mnt_find(path, &mi) == 0) {
        bool same = mount_is_of(&mi, dev) && strcmp(mi.fstype, fs) == 0;
        _cleanup_free_ char *have = xasprintf("%s (%s)", mi.source, mi.fstype);
        mnt_info_clear(&mi);
        if (same)
            return 0;   /* already staged: the idempotent repeat */
        return csi_error(c, RPC_ALREADY_EXISTS, "%s already has %s mounted, not %s as %s",
                         path, have, dev, fs);
    }
    _cleanup_free_ char *have = NULL, *err = NULL;
    int r = fs_probe(dev, &have);
    if (r < 0)
        return csi_error(c, RPC_INTERNAL, "probing %s for a filesystem: %s", dev, strerror(-r));
    if (!*have) {
        log_info("node", "formatting volume %s (%s) as %s", q->volume_id, dev, fs);
        if ((r = fs_make(dev, fs, &err)) < 0)
            return csi_error(c, RPC_INTERNAL, "formatting %s: %s", dev, err);
    } else if (strcmp(have, fs) != 0) {
        return csi_error(c, RPC_FAILED_PRECONDITION, "volume %s holds %s, not %s: it will not be "
                         "reformatted", q->volume_id, have, fs);
    }
    Csi__V1__VolumeCapability__MountVolume *mv = q->volume_capability->mount;
    r = mnt_mount_fs(dev, path, fs, mv->mount_flags, mv->n_mount_flags, cap->read_only_mode, &err);
    if (r < 0)
        return csi_error(c, RPC_INTERNAL, "%s", err);
    log_info("node", "staged volume %s: %s (%s) on %s", q->volume_id, dev, fs, path);
    return 0;
}

static int h_stage(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__NodeStageVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!*q->staging_target_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "staging_target_path is required");
    struct csi_cap cap;
    _cleanup_free_ char *msg = NULL;
    const char *ctx_fs = csi_map_get((void *const *)q->volume_context, q->n_volume_context, "fsType");
    if (csi_cap_parse(q->volume_capability, ctx_fs, &cap, &msg) < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "%s", msg);

    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    if ((r = lookup(c, q->volume_id, &v)) < 0)
        return r;
    Amber__V1__AttachVolumeRequest aq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
    aq.volume = v->id;
    _cleanup_pb_ Amber__V1__AttachVolumeResponse *a = NULL;
    struct rpc_status st = {0};
    int code = amberd_call(c, "AttachVolume", &aq.base, &amber__v1__attach_volume_response__descriptor,
                           60000, (ProtobufCMessage **)&a, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "attaching the volume");
    if (!cap.block) {
        /* The capability's fs, else the context's, else the volume's. */
        const char *fs = *q->volume_capability->mount->fs_type || (ctx_fs && *ctx_fs)
                             ? cap.fs_type : want_fs(q->volume_capability, v);
        if ((r = stage_mount(c, q, &cap, a->device, fs)) < 0)
            return r;
    } else {
        log_info("node", "staged block volume %s: %s", q->volume_id, a->device);
    }
    return empty_reply(c, &csi__v1__node_stage_volume_response__descriptor);
}

static int h_unstage(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__NodeUnstageVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!*q->staging_target_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "staging_target_path is required");
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    /* A filesystem still published elsewhere would outlive the unmount
     * here and keep the loop device busy: refuse, the CO unpublishes first. */
    _cleanup_free_ char *lid = csi_local_id(p, q->volume_id);
    if (lid && uuid_is_valid(lid)) {
        _cleanup_pb_ Amber__V1__Volume *v = NULL;
        struct rpc_status st = {0};
        int code = amberd_get_volume(c, q->volume_id, &v, &st);
        rpc_status_clear(&st);
        if (code == RPC_OK && *v->device && mnt_device_in_use(v->device, q->staging_target_path))
            return csi_error(c, RPC_FAILED_PRECONDITION, "volume %s is still published (%s is "
                             "mounted elsewhere): unpublish it first", q->volume_id, v->device);
    }
    r = mnt_unmount_all(q->staging_target_path);
    if (r == -EBUSY)
        return csi_error(c, RPC_FAILED_PRECONDITION, "%s is busy: unpublish the volume first",
                         q->staging_target_path);
    if (r < 0)
        return csi_error(c, RPC_INTERNAL, "unmounting %s: %s", q->staging_target_path, strerror(-r));
    if (lid && uuid_is_valid(lid)) {
        Amber__V1__AttachVolumeRequest dq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
        dq.volume = lid;
        _cleanup_pb_ Amber__V1__Empty *e = NULL;
        struct rpc_status st = {0};
        int code = amberd_call(c, "DetachVolume", &dq.base, &amber__v1__empty__descriptor, 60000,
                               (ProtobufCMessage **)&e, &st);
        if (code == RPC_NOT_FOUND)
            rpc_status_clear(&st);
        else if (code != RPC_OK)
            return amberd_fail(c, code, &st, "detaching the volume");
    }
    log_info("node", "unstaged volume %s from %s", q->volume_id, q->staging_target_path);
    return empty_reply(c, &csi__v1__node_unstage_volume_response__descriptor);
}

/* --- publish / unpublish ------------------------------------------------ */

static int make_target(const char *path, bool file)
{
    _cleanup_free_ char *copy = xstrdup(path);
    int r = mkdir_p(dirname(copy), 0750);
    if (r < 0 && r != -EEXIST)
        return r;
    if (!file) {
        r = mkdir_p(path, 0750);
        return r == -EEXIST ? 0 : r;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0640);
    if (fd < 0)
        return errno == EISDIR ? 0 : -errno;    /* a directory: bind over it */
    close(fd);
    return 0;
}

static int h_publish(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__NodePublishVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!*q->target_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "target_path is required");
    /* Inline ephemeral volumes are the pod's scoped API socket: nothing is
     * staged or mounted (api-volume.c). */
    const char *eph = csi_map_get((void *const *)q->volume_context, q->n_volume_context, EPHEMERAL_KEY);
    if (eph && strcmp(eph, "true") == 0) {
        /* snapshot-volume.c or api-volume.c */
        int er = csi_snap_wanted(q) ? csi_snap_publish(c, q) : csi_api_publish(c, q);
        return er < 0 ? er : empty_reply(c, &csi__v1__node_publish_volume_response__descriptor);
    }
    if (!*q->staging_target_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "staging_target_path is required (the volume "
                         "is staged first)");
    struct csi_cap cap;
    _cleanup_free_ char *msg = NULL;
    if (csi_cap_parse(q->volume_capability, NULL, &cap, &msg) < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "%s", msg);
    bool ro = q->readonly || cap.read_only_mode;

    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    if ((r = lookup(c, q->volume_id, &v)) < 0)
        return r;
    if (!*v->device)
        return csi_error(c, RPC_FAILED_PRECONDITION, "volume %s is not staged (not attached)",
                         q->volume_id);

    /* What must end up at the target: the device (block) or the staged
     * filesystem. */
    struct mnt_info staged = {0};
    if (!cap.block) {
        if (mnt_find(q->staging_target_path, &staged) < 0 || !mount_is_of(&staged, v->device)) {
            mnt_info_clear(&staged);
            return csi_error(c, RPC_FAILED_PRECONDITION, "volume %s is not staged at %s",
                             q->volume_id, q->staging_target_path);
        }
        mnt_info_clear(&staged);
    }
    struct mnt_info mi = {0};
    if (mnt_find(q->target_path, &mi) == 0) {
        bool same;
        if (cap.block) {
            struct stat a, b;
            same = stat(q->target_path, &a) == 0 && stat(v->device, &b) == 0 &&
                   S_ISBLK(a.st_mode) && a.st_rdev == b.st_rdev;
        } else {
            same = mount_is_of(&mi, v->device);
        }
        same = same && mi.read_only == ro;
        mnt_info_clear(&mi);
        if (same)
            return empty_reply(c, &csi__v1__node_publish_volume_response__descriptor);
        return csi_error(c, RPC_ALREADY_EXISTS, "%s is already a mount of another volume, type "
                         "or read-only setting", q->target_path);
    }
    if ((r = make_target(q->target_path, cap.block)) < 0)
        return csi_error(c, RPC_INTERNAL, "creating %s: %s", q->target_path, strerror(-r));
    r = mnt_bind(cap.block ? v->device : q->staging_target_path, q->target_path, ro);
    if (r < 0)
        return csi_error(c, RPC_INTERNAL, "bind mount on %s: %s", q->target_path, strerror(-r));
    log_info("node", "published volume %s at %s%s", q->volume_id, q->target_path, ro ? " (ro)" : "");
    return empty_reply(c, &csi__v1__node_publish_volume_response__descriptor);
}

static int h_unpublish(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__NodeUnpublishVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!*q->target_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "target_path is required");
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    if ((r = csi_api_unpublish(c, q->target_path)) < 0)    /* api-volume.c */
        return r;
    if ((r = csi_snap_unpublish(c, q->target_path)) < 0)   /* snapshot-volume.c */
        return r;
    r = mnt_unmount_all(q->target_path);
    if (r < 0)
        return csi_error(c, r == -EBUSY ? RPC_FAILED_PRECONDITION : RPC_INTERNAL,
                         "unmounting %s: %s", q->target_path, strerror(-r));
    /* The target is ours to remove (the spec: the SP deletes what it made). */
    if (rmdir(q->target_path) < 0 && errno != ENOENT) {
        if (errno != ENOTDIR || (unlink(q->target_path) < 0 && errno != ENOENT))
            return csi_error(c, RPC_INTERNAL, "removing %s: %s", q->target_path, strerror(errno));
    }
    log_info("node", "unpublished volume %s from %s", q->volume_id, q->target_path);
    return empty_reply(c, &csi__v1__node_unpublish_volume_response__descriptor);
}

/* --- stats ------------------------------------------------------------------ */

static int h_stats(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__NodeGetVolumeStatsRequest *q = (const void *)m;
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!*q->volume_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_path is required");
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    int r = lookup(c, q->volume_id, &v);
    if (r < 0)
        return r;
    struct stat st;
    if (stat(q->volume_path, &st) < 0)
        return csi_error(c, errno == ENOENT ? RPC_NOT_FOUND : RPC_INTERNAL, "%s: %s",
                         q->volume_path, strerror(errno));

    Csi__V1__VolumeUsage u[2] = { CSI__V1__VOLUME_USAGE__INIT, CSI__V1__VOLUME_USAGE__INIT };
    Csi__V1__VolumeUsage *pu[2] = { &u[0], &u[1] };
    Csi__V1__VolumeCondition cond = CSI__V1__VOLUME_CONDITION__INIT;
    Csi__V1__NodeGetVolumeStatsResponse resp = CSI__V1__NODE_GET_VOLUME_STATS_RESPONSE__INIT;
    resp.usage = pu;
    resp.volume_condition = &cond;
    _cleanup_free_ char *cmsg = NULL;

    if (S_ISBLK(st.st_mode)) {
        struct stat d;
        if (!*v->device || stat(v->device, &d) < 0 || d.st_rdev != st.st_rdev)
            return csi_error(c, RPC_NOT_FOUND, "volume %s is not at %s", q->volume_id, q->volume_path);
        uint64_t size = 0;
        if ((r = blockdev_size(q->volume_path, &size)) < 0)
            return csi_error(c, RPC_INTERNAL, "size of %s: %s", q->volume_path, strerror(-r));
        u[0].unit = CSI__V1__VOLUME_USAGE__UNIT__BYTES;
        u[0].total = (int64_t)size;
        resp.n_usage = 1;
        cond.message = "attached";
        return rpc_call_send(c, &resp.base);
    }
    struct mnt_info mi = {0};
    if (mnt_find(q->volume_path, &mi) < 0) {
        /* The path is there but the volume is not mounted on it. */
        cond.abnormal = true;
        cond.message = cmsg = xasprintf("%s is not mounted%s", q->volume_path,
                                        *v->device ? "" : " and the volume is not attached");
        return rpc_call_send(c, &resp.base);
    }
    bool ours = mount_is_of(&mi, v->device);
    mnt_info_clear(&mi);
    if (!ours)
        return csi_error(c, RPC_NOT_FOUND, "volume %s is not mounted at %s", q->volume_id,
                         q->volume_path);
    struct statvfs sv;
    if (statvfs(q->volume_path, &sv) < 0)
        return csi_error(c, RPC_INTERNAL, "statvfs %s: %s", q->volume_path, strerror(errno));
    uint64_t bs = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
    u[0].unit = CSI__V1__VOLUME_USAGE__UNIT__BYTES;
    u[0].total = (int64_t)(sv.f_blocks * bs);
    u[0].available = (int64_t)(sv.f_bavail * bs);
    u[0].used = (int64_t)((sv.f_blocks - sv.f_bfree) * bs);
    u[1].unit = CSI__V1__VOLUME_USAGE__UNIT__INODES;
    u[1].total = (int64_t)sv.f_files;
    u[1].available = (int64_t)sv.f_ffree;
    u[1].used = (int64_t)(sv.f_files - sv.f_ffree);
    resp.n_usage = 2;
    cond.message = (sv.f_flag & ST_RDONLY) ? "mounted read-only" : "mounted";
    return rpc_call_send(c, &resp.base);
}

/* --- expand ----------------------------------------------------------------- */

static int h_expand(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__NodeExpandVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!*q->volume_path)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_path is required");
    bool block = false;
    if (q->volume_capability) {
        struct csi_cap cap;
        _cleanup_free_ char *msg = NULL;
        if (csi_cap_parse(q->volume_capability, NULL, &cap, &msg) < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "%s", msg);
        block = cap.block;
    }
    uint64_t want = 0, limit = 0;
    if (q->capacity_range) {
        if (q->capacity_range->required_bytes < 0 || q->capacity_range->limit_bytes < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "capacity_range: negative bytes");
        want = (uint64_t)q->capacity_range->required_bytes;
        limit = (uint64_t)q->capacity_range->limit_bytes;
        if (!want)
            want = limit;
        want = (want + CSI_ALIGN - 1) / CSI_ALIGN * CSI_ALIGN;
        if (limit && want > limit)
            return csi_error(c, RPC_OUT_OF_RANGE, "%llu bytes in 4 KiB units is over the limit",
                             (unsigned long long)want);
    }
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    if ((r = lookup(c, q->volume_id, &v)) < 0)
        return r;
    struct stat st;
    if (stat(q->volume_path, &st) < 0)
        return csi_error(c, errno == ENOENT ? RPC_NOT_FOUND : RPC_INTERNAL, "%s: %s",
                         q->volume_path, strerror(errno));
    if (S_ISBLK(st.st_mode))
        block = true;
    if (!*v->device)
        return csi_error(c, RPC_FAILED_PRECONDITION, "volume %s is not staged (not attached)",
                         q->volume_id);
    if (want > v->size_bytes) {
        /* The node-local expansion path: grow the volume itself. */
        Amber__V1__ResizeVolumeRequest rq = AMBER__V1__RESIZE_VOLUME_REQUEST__INIT;
        rq.volume = v->id;
        rq.size_bytes = want;
        _cleanup_pb_ Amber__V1__Volume *nv = NULL;
        struct rpc_status rs = {0};
        int code = amberd_call(c, "ResizeVolume", &rq.base, &amber__v1__volume__descriptor, 120000,
                               (ProtobufCMessage **)&nv, &rs);
        if (code != RPC_OK)
            return amberd_fail(c, code, &rs, "growing the volume");
        log_info("node", "grew volume %s to %llu bytes", v->id, (unsigned long long)nv->size_bytes);
    }
    uint64_t devsize = 0;
    if ((r = blockdev_size(v->device, &devsize)) < 0)
        return csi_error(c, RPC_INTERNAL, "size of %s: %s", v->device, strerror(-r));
    if (!block) {
        struct mnt_info mi = {0};
        const char *mnt = q->volume_path;
        if (mnt_find(mnt, &mi) < 0 && *q->staging_target_path) {
            mnt = q->staging_target_path;
            if (mnt_find(mnt, &mi) < 0)
                mnt = NULL;
        }
        if (!mnt || !mount_is_of(&mi, v->device)) {
            mnt_info_clear(&mi);
            return csi_error(c, RPC_FAILED_PRECONDITION, "volume %s is not mounted at %s",
                             q->volume_id, q->volume_path);
        }
        _cleanup_free_ char *fstype = xstrdup(mi.fstype), *err = NULL;
        mnt_info_clear(&mi);
        if ((r = fs_grow(v->device, mnt, fstype, &err)) < 0)
            return csi_error(c, RPC_INTERNAL, "growing the filesystem of %s: %s", q->volume_id, err);
        log_info("node", "grew the %s filesystem of volume %s to %llu bytes", fstype, v->id,
                 (unsigned long long)devsize);
    }
    Csi__V1__NodeExpandVolumeResponse out = CSI__V1__NODE_EXPAND_VOLUME_RESPONSE__INIT;
    out.capacity_bytes = (int64_t)devsize;
    return rpc_call_send(c, &out.base);
}

/* --- capabilities and info ------------------------------------------------ */

static int h_capabilities(struct rpc_call *c, const ProtobufCMessage *m)
{
    static const Csi__V1__NodeServiceCapability__RPC__Type types[] = {
        CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__STAGE_UNSTAGE_VOLUME,
        CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME_STATS,
        CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__EXPAND_VOLUME,
        CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
        CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__SINGLE_NODE_MULTI_WRITER,
    };
    Csi__V1__NodeServiceCapability__RPC rpcs[ARRAY_SIZE(types)];
    Csi__V1__NodeServiceCapability caps[ARRAY_SIZE(types)];
    Csi__V1__NodeServiceCapability *pcaps[ARRAY_SIZE(types)];
    for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
        Csi__V1__NodeServiceCapability__RPC rp = CSI__V1__NODE_SERVICE_CAPABILITY__RPC__INIT;
        Csi__V1__NodeServiceCapability cp = CSI__V1__NODE_SERVICE_CAPABILITY__INIT;
        rpcs[i] = rp;
        rpcs[i].type = types[i];
        caps[i] = cp;
        caps[i].type_case = CSI__V1__NODE_SERVICE_CAPABILITY__TYPE_RPC;
        caps[i].rpc = &rpcs[i];
        pcaps[i] = &caps[i];
    }
    Csi__V1__NodeGetCapabilitiesResponse r = CSI__V1__NODE_GET_CAPABILITIES_RESPONSE__INIT;
    r.capabilities = pcaps;
    r.n_capabilities = ARRAY_SIZE(types);
    return rpc_call_send(c, &r.base);
}

static int h_info(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct csi *p = CSI(c);
    struct csi_topology topo;
    csi_topology_init(p, &topo);
    Csi__V1__NodeGetInfoResponse r = CSI__V1__NODE_GET_INFO_RESPONSE__INIT;
    r.node_id = (char *)p->node_id;
    r.max_volumes_per_node = p->max_volumes;
    r.accessible_topology = &topo.t;
    return rpc_call_send(c, &r.base);
}

#define M(name, in, out, fn) \
    { "/csi.v1.Node/" name, &csi__v1__##in##__descriptor, &csi__v1__##out##__descriptor, \
      RPC_UNARY, fn }

const struct rpc_method csi_node_methods[] = {
    M("NodeStageVolume", node_stage_volume_request, node_stage_volume_response, h_stage),
    M("NodeUnstageVolume", node_unstage_volume_request, node_unstage_volume_response, h_unstage),
    M("NodePublishVolume", node_publish_volume_request, node_publish_volume_response, h_publish),
    M("NodeUnpublishVolume", node_unpublish_volume_request, node_unpublish_volume_response,
      h_unpublish),
    M("NodeGetVolumeStats", node_get_volume_stats_request, node_get_volume_stats_response, h_stats),
    M("NodeExpandVolume", node_expand_volume_request, node_expand_volume_response, h_expand),
    M("NodeGetCapabilities", node_get_capabilities_request, node_get_capabilities_response,
      h_capabilities),
    M("NodeGetInfo", node_get_info_request, node_get_info_response, h_info),
};
const size_t csi_node_methods_n = ARRAY_SIZE(csi_node_methods);
