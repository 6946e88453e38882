/* snapshot-volume.c: the inline ephemeral "snapshot volume" (issue 19): a
 * pod that declares a CSI volume of this driver with volumeAttributes
 *   amber.csi.dev/snapshot: "pvc/data@NAME-OR-ID"       (one snapshot; also
 *       a snapshot id, or a name unique in the namespace), or
 *   amber.csi.dev/snapshot: "pvc/data"                  (its newest one)
 *   amber.csi.dev/before: "2024-05-01T12:00:00Z" | "24h" (optional: the
 *       newest created before that time, or that long before now)
 *   amber.csi.dev/labels: "schedule=1h,k=v"             (optional filter)
 * gets that snapshot's filesystem at its mount path, read-only: yesterday's
 * files inside the notebook, without restoring anything.
 *
 * The name is resolved in the pod's namespace only (kubelet passes it as
 * csi.storage.k8s.io/pod.namespace; the CSIDriver has podInfoOnMount):
 * amberd's ResolveSnapshot answers as that namespace's own socket would, so
 * another namespace's snapshot is NOT_FOUND. Then amberd attaches the
 * snapshot read-only (AttachVolume{volume, snapshot}, the call `amberctl
 * snapshot mount` makes; idempotent, and a second pod of the same snapshot
 * shares the device) and we mount its filesystem read-only WITHOUT replaying
 * its journal (a crash-consistent snapshot's log is dirty and the device is
 * read-only): ext4 `noload`, xfs `norecovery,nouuid` (nouuid: the live volume
 * and other snapshots carry the same uuid), always nodev,nosuid.
 *
 * What was done is recorded before it is done, in TARGET/.amber-snapshot
 * (volume and snapshot ids, device), a file the mount then covers: it
 * outlives amberd and amber-csi restarts, and goes away with the target.
 * Unpublish unmounts TARGET, reads the record under it, asks amberd to
 * detach the snapshot unless another mount still uses its device (another
 * pod of the same snapshot), and removes the record. It is idempotent; if
 * amberd is unavailable it fails (the record stays) and kubelet retries.
 * A retried publish with a record present reuses the recorded snapshot, so
 * "the newest before" means the same snapshot for the pod's lifetime. */
#include <string.h>
#include <sys/mount.h>
#include <time.h>

#include "amber/log.h"
#include "csi/csi.h"

#define SNAP_KEY "amber.csi.dev/snapshot"
#define BEFORE_KEY "amber.csi.dev/before"
#define LABELS_KEY "amber.csi.dev/labels"
#define POD_NS_KEY "csi.storage.k8s.io/pod.namespace"
#define RECORD ".amber-snapshot"

bool csi_snap_wanted(const Csi__V1__NodePublishVolumeRequest *q)
{
    return csi_map_get((void *const *)q->volume_context, q->n_volume_context, SNAP_KEY) != NULL;
}

/* --- the record ------------------------------------------------------------ */

struct record {
    char *volume, *snapshot, *device;
};

static void record_clear(struct record *r)
{
    free(r->volume);
    free(r->snapshot);
    free(r->device);
    *r = (struct record){0};
}

static char *record_path(const char *target)
{
    return xasprintf("%s/" RECORD, target);
}

static int record_write(const char *target, const struct record *r)
{
    _cleanup_free_ char *p = record_path(target);
    _cleanup_free_ char *text = xasprintf("volume=%s\nsnapshot=%s\ndevice=%s\n", r->volume,
                                          r->snapshot, r->device ? r->device : "");
    return write_file_atomic(p, text, strlen(text), 0600);
}

/* 0 with *ret, -ENOENT without a record, -EINVAL for a damaged one. */
static int record_read(const char *target, struct record *ret)
{
    _cleanup_free_ char *p = record_path(target);
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_file_all(p, 4096, &text, &len);
    if (r < 0)
        return r;
    struct record rec = {0};
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = 0;
        char **slot = strcmp(line, "volume") == 0 ? &rec.volume :
                      strcmp(line, "snapshot") == 0 ? &rec.snapshot :
                      strcmp(line, "device") == 0 ? &rec.device : NULL;
        if (slot) {
            free(*slot);
            *slot = xstrdup(eq + 1);
        }
    }
    if (!rec.volume || !rec.snapshot || !uuid_is_valid(rec.volume) || !uuid_is_valid(rec.snapshot)) {
        record_clear(&rec);
        return -EINVAL;
    }
    *ret = rec;
    return 0;
}

/* --- attributes ---------------------------------------------------------------- */

/* "2024-05-01T12:00:00Z", with optional fraction and ±HH:MM offset, to
 * ns since the epoch; or an age ("24h", "90m", "7d"): now minus it. An age
 * reaching back to 1970 or beyond is 1 ns, before which there is nothing
 * (0 would mean no limit at all). */
static int parse_before(const char *s, int64_t *ret)
{
    uint64_t ms;
    if (parse_duration_ms(s, &ms) == 0) {
        uint64_t now = now_real_ns();
        *ret = ms < now / 1000000ULL ? (int64_t)(now - ms * 1000000ULL) : 1;
        return 0;
    }
    struct tm tm = {0};
    const char *p = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!p)
        return -EINVAL;
    int64_t frac = 0;
    if (*p == '.') {
        int digits = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, digits++)
            if (digits < 9)
                frac = frac * 10 + (*p - '0');
        if (digits == 0)
            return -EINVAL;
        for (; digits < 9; digits++)
            frac *= 10;
    }
    int64_t off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int hh, mm;
        if (sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2 || strlen(p) != 6)
            return -EINVAL;
        off = (hh * 3600 + mm * 60) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return -EINVAL;
    }
    if (*p)
        return -EINVAL;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ret = ((int64_t)t - off) * 1000000000LL + frac;
    return *ret > 0 ? 0 : -EINVAL;
}

/* "k=v,k2=v2" into labels (pointing into *buf, which the caller frees). */
static int parse_labels(const char *s, char **buf, Amber__V1__Label **ls, Amber__V1__Label ***pls,
                        size_t *n)
{
    *buf = xstrdup(s);
    size_t cap = 1;
    for (const char *x = s; *x; x++)
        cap += *x == ',';
    *ls = xcalloc(cap, sizeof **ls);
    *pls = xcalloc(cap, sizeof **pls);
    *n = 0;
    char *save = NULL;
    for (char *kv = strtok_r(*buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq || eq == kv)
            return -EINVAL;
        *eq = 0;
        Amber__V1__Label l = AMBER__V1__LABEL__INIT;
        l.key = kv;
        l.value = eq + 1;
        (*ls)[*n] = l;
        (*pls)[*n] = &(*ls)[*n];
        (*n)++;
    }
    return 0;
}

/* The snapshot the attributes name, resolved in namespace ns. */
static int resolve(struct rpc_call *c, void *const *ctx, size_t n, const char *ns,
                   Amber__V1__Snapshot **ret)
{
    const char *ref = csi_map_get(ctx, n, SNAP_KEY);
    const char *before = csi_map_get(ctx, n, BEFORE_KEY);
    const char *labels = csi_map_get(ctx, n, LABELS_KEY);
    if (!ref || !*ref)
        return csi_error(c, RPC_INVALID_ARGUMENT, "%s is empty: say pvc/NAME@SNAPSHOT or pvc/NAME",
                         SNAP_KEY);
    Amber__V1__ResolveSnapshotRequest rq = AMBER__V1__RESOLVE_SNAPSHOT_REQUEST__INIT;
    rq.namespace_ = (char *)ns;
    _cleanup_free_ char *lbuf = NULL;
    _cleanup_free_ Amber__V1__Label *ls = NULL;
    _cleanup_free_ Amber__V1__Label **pls = NULL;
    /* pvc/NAME alone is a volume (its newest snapshot); anything else
     * (VOL@SNAP, an id, a name unique in the namespace) one snapshot. */
    if (strncmp(ref, "pvc/", 4) != 0 || strchr(ref, '@')) {
        if ((before && *before) || (labels && *labels))
            return csi_error(c, RPC_INVALID_ARGUMENT, "%s names one snapshot (%s): %s and %s apply "
                             "to a volume (pvc/NAME)", SNAP_KEY, ref, BEFORE_KEY, LABELS_KEY);
        rq.snapshot = (char *)ref;
    } else {
        rq.volume = (char *)ref;
        if (before && *before && parse_before(before, &rq.before_ns) < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "%s: \"%s\" is neither an RFC 3339 time "
                             "(2024-05-01T12:00:00Z) nor an age (24h)", BEFORE_KEY, before);
        if (labels && *labels && parse_labels(labels, &lbuf, &ls, &pls, &rq.n_labels) < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "%s: \"%s\" is not k=v[,k=v...]", LABELS_KEY,
                             labels);
        rq.labels = pls;
    }
    struct rpc_status st = {0};
    int code = amberd_call(c, "ResolveSnapshot", &rq.base, &amber__v1__snapshot__descriptor, 30000,
                           (ProtobufCMessage **)ret, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "finding the snapshot");
    return 0;
}

/* --- attach, mount, and their undoing ------------------------------------------- */

/* Detach the recorded snapshot unless its device is still mounted elsewhere. */
static int detach(struct rpc_call *c, const struct record *rec)
{
    if (rec->device && *rec->device && mnt_device_in_use(rec->device, NULL)) {
        log_info("node", "snapshot %s stays attached: %s is mounted elsewhere", rec->snapshot,
                 rec->device);
        return 0;
    }
    Amber__V1__AttachVolumeRequest dq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
    dq.volume = rec->volume;
    dq.snapshot = rec->snapshot;
    _cleanup_pb_ Amber__V1__Empty *e = NULL;
    struct rpc_status st = {0};
    int code = amberd_call(c, "DetachVolume", &dq.base, &amber__v1__empty__descriptor, 60000,
                           (ProtobufCMessage **)&e, &st);
    if (code == RPC_NOT_FOUND || code == RPC_FAILED_PRECONDITION) {
        /* Gone (nothing to detach), or mounted by another pod meanwhile. */
        rpc_status_clear(&st);
        return 0;
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "detaching the snapshot");
    return 0;
}

static int mount_snapshot(struct rpc_call *c, const char *dev, const char *target, const char *sid)
{
    _cleanup_free_ char *fs = NULL;
    int r = fs_probe(dev, &fs);
    if (r < 0)
        return csi_error(c, RPC_INTERNAL, "probing %s for a filesystem: %s", dev, strerror(-r));
    const char *opts;
    if (strcmp(fs, "ext4") == 0 || strcmp(fs, "ext3") == 0 || strcmp(fs, "ext2") == 0)
        opts = "noload";
    else if (strcmp(fs, "xfs") == 0)
        opts = "norecovery,nouuid";
    else
        return csi_error(c, RPC_FAILED_PRECONDITION, "snapshot %s holds %s, not an ext4 or xfs "
                         "filesystem (a block volume's snapshot?)", sid, *fs ? fs : "no filesystem");
    if (mount(dev, target, fs, MS_RDONLY | MS_NODEV | MS_NOSUID, opts) < 0)
        return csi_error(c, RPC_INTERNAL, "mount %s (%s, ro,%s) on %s: %s", dev, fs, opts, target,
                         strerror(errno));
    log_info("node", "snapshot volume: %s (%s of snapshot %s) mounted read-only on %s", dev, fs,
             sid, target);
    return 0;
}

int csi_snap_publish(struct rpc_call *c, const Csi__V1__NodePublishVolumeRequest *q)
{
    void *const *ctx = (void *const *)q->volume_context;
    size_t n = q->n_volume_context;
    struct csi *p = CSI(c);
    const char *ns = csi_map_get(ctx, n, POD_NS_KEY);
    if (!ns || !*ns)
        return csi_error(c, RPC_INVALID_ARGUMENT, "no %s in volume_context: the CSIDriver needs "
                         "podInfoOnMount: true", POD_NS_KEY);
    if (q->volume_capability &&
        q->volume_capability->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK)
        return csi_error(c, RPC_INVALID_ARGUMENT, "a snapshot volume is a filesystem, not a block "
                         "device");
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    /* The target is this pod's volume alone: a read-only mount there is
     * ours, from an earlier call (its record lies under it). */
    struct mnt_info mi = {0};
    if (mnt_find(q->target_path, &mi) == 0) {
        bool ours = mi.read_only;
        mnt_info_clear(&mi);
        if (ours)
            return 0;
        return csi_error(c, RPC_ALREADY_EXISTS, "%s already has a writable mount", q->target_path);
    }
    r = mkdir_p(q->target_path, 0750);
    if (r < 0 && r != -EEXIST)
        return csi_error(c, RPC_INTERNAL, "creating %s: %s", q->target_path, strerror(-r));

    /* A retry after a failure: the recorded snapshot, not a new answer. */
    struct record rec = {0};
    bool recorded = record_read(q->target_path, &rec) == 0;
    if (!recorded) {
        _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
        if ((r = resolve(c, ctx, n, ns, &s)) < 0)
            return r;
        rec.volume = xstrdup(s->volume_id);
        rec.snapshot = xstrdup(s->id);
    }
    _cleanup_free_ char *rp = record_path(q->target_path);
    _cleanup_pb_ Amber__V1__AttachVolumeResponse *a = NULL;
    _cleanup_held_ struct csi_held snap_held = { .p = p };
    if ((r = csi_op_lock(c, "snap:%s", rec.snapshot, &snap_held.key)) < 0)
        goto out;
    /* Record first: an attach we crash after is still undone by unpublish. */
    if (!recorded && (r = record_write(q->target_path, &rec)) < 0) {
        r = csi_error(c, RPC_INTERNAL, "recording in %s: %s", q->target_path, strerror(-r));
        goto out;
    }
    Amber__V1__AttachVolumeRequest aq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
    aq.volume = rec.volume;
    aq.snapshot = rec.snapshot;
    struct rpc_status st = {0};
    int code = amberd_call(c, "AttachVolume", &aq.base, &amber__v1__attach_volume_response__descriptor,
                           60000, (ProtobufCMessage **)&a, &st);
    if (code != RPC_OK) {
        /* Nothing attached (or amberd is down and kubelet retries). */
        if (code != RPC_UNAVAILABLE && code != RPC_DEADLINE_EXCEEDED)
            unlink(rp);
        r = amberd_fail(c, code, &st, "attaching the snapshot read-only");
        goto out;
    }
    if (!rec.device || strcmp(rec.device, a->device) != 0) {
        free(rec.device);
        rec.device = xstrdup(a->device);
        if ((r = record_write(q->target_path, &rec)) < 0) {
            r = csi_error(c, RPC_INTERNAL, "recording in %s: %s", q->target_path, strerror(-r));
            if (detach(c, &rec) == 0)
                unlink(rp);
            goto out;
        }
    }
    r = mount_snapshot(c, a->device, q->target_path, rec.snapshot);
    if (r < 0) {
        if (detach(c, &rec) == 0)
            unlink(rp);
        goto out;
    }
    log_info("node", "snapshot volume %s (pod namespace %s): snapshot %s at %s", q->volume_id, ns,
             rec.snapshot, q->target_path);
out:
    record_clear(&rec);
    return r;
}

int csi_snap_unpublish(struct rpc_call *c, const char *target)
{
    struct csi *p = CSI(c);
    /* Unmount first: the record lies under the mount. Only a read-only
     * mount of a snapshot volume hides a record, so this is a no-op for
     * other volumes (their unpublish unmounts them next anyway). */
    int r = mnt_unmount_all(target);
    if (r < 0)
        return csi_error(c, r == -EBUSY ? RPC_FAILED_PRECONDITION : RPC_INTERNAL,
                         "unmounting %s: %s", target, strerror(-r));
    struct record rec = {0};
    r = record_read(target, &rec);
    if (r == -ENOENT || r == -ENOTDIR)
        return 0;       /* not a snapshot volume, or already undone */
    _cleanup_free_ char *rp = record_path(target);
    if (r < 0) {
        log_warn("node", "%s is damaged: removed, nothing detached", rp);
        unlink(rp);
        return 0;
    }
    _cleanup_held_ struct csi_held snap_held = { .p = p };
    if ((r = csi_op_lock(c, "snap:%s", rec.snapshot, &snap_held.key)) < 0) {
        record_clear(&rec);
        return r;
    }
    r = detach(c, &rec);
    if (r == 0) {
        unlink(rp);
        log_info("node", "snapshot volume: snapshot %s unmounted from %s and released", rec.snapshot,
                 target);
    }
    record_clear(&rec);
    return r;
}
