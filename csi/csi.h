/* csi.h: amber-csi's private interfaces, one section a file.
 *
 * amber-csi is stateless: every durable fact (volumes, snapshots, sizes,
 * sources, PVC metadata, the filesystem a volume was created for) lives in
 * amberd's catalog, and the kernel's mount table is the truth about what is
 * staged and published. A CSI volume_id is amberd's volume id (a UUID), a
 * snapshot_id is amberd's snapshot id. The plugin holds in memory only the
 * set of operations in flight, so that a second concurrent call on the same
 * volume (or name) is refused with ABORTED, as the spec asks.
 *
 * Handlers run on the rpc runtime's worker threads and may block (amberd
 * calls, mkfs, mount). Secrets in requests are never read or logged. */
#ifndef AMBER_CSI_H
#define AMBER_CSI_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include "amber/rpc.h"
#include "amber/util.h"
#include "amber.pb-c.h"
#include "cluster.pb-c.h"
#include "csi.pb-c.h"

#define CSI_DEFAULT_DRIVER "amber.csi.dev"
/* Volumes come in 4 KiB units (the loop device's block size). */
#define CSI_ALIGN 4096ULL
/* Size of a volume when the request gives no capacity_range. */
#define CSI_DEFAULT_SIZE (1ULL << 30)
/* mkfs.xfs refuses filesystems smaller than this (xfsprogs >= 5.19). */
#define CSI_XFS_MIN_SIZE (300ULL << 20)

struct csi {
    const char *driver_name;
    const char *node_id;
    char *topology_key;         /* "topology.<driver>/node" */
    int64_t max_volumes;        /* NodeGetInfo; 0 = no limit */
    bool controller_expand;     /* advertise controller EXPAND_VOLUME */
    bool node_handles;          /* ids are "NODE/UUID" (cluster.c) */
    uint32_t create_wait_ms;    /* CreateVolume from another node: wait this long */
    struct rpc_client *amberd;
    uint64_t lock_delay_ms;     /* tests: hold every operation lock this long */

    pthread_mutex_t ops_lock;   /* guards ops */
    struct csi_op *ops;         /* keys of operations in flight */

    const struct rpc_method *handlers;  /* the real handlers, by path */
    size_t n_handlers;
};

static inline struct csi *CSI(struct rpc_call *c) { return rpc_call_server_data(c); }

/* Free a decoded protobuf message held in a cleanup variable. */
static inline void pb_freep(void *p)
{
    ProtobufCMessage **m = p;
    if (*m)
        protobuf_c_message_free_unpacked(*m, NULL);
}
#define _cleanup_pb_ _cleanup_(pb_freep)

/* --- common.c ----------------------------------------------------------- */

/* Errors are reported with csi_error, not rpc_error: the runtime sends an
 * rpc_error status at once, and a client could then retry before the
 * handler's cleanups released its operation lock (and see a spurious
 * ABORTED). csi_error keeps the status in thread-local storage, and
 * csi_dispatch, which the server calls for every method, sends it once the
 * real handler has returned and its cleanups have run. Same contract as
 * rpc_error: returns a negative value for the handler to return. */
int csi_error(struct rpc_call *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int csi_dispatch(struct rpc_call *c, const ProtobufCMessage *m);

/* Operation locks. csi_op_begin takes `key` ("vol:<id>", "name:<name>", …)
 * or fails with -EBUSY when a call holding it is in flight; the caller then
 * answers ABORTED. csi_op_end releases it (NULL or a key not held: no-op). */
int csi_op_begin(struct csi *p, const char *key);
void csi_op_end(struct csi *p, const char *key);
/* Take the lock or record ABORTED on the call; returns 0 or the handler's
 * error value. On success *ret_key owns the key for csi_op_end. */
int csi_op_lock(struct rpc_call *c, const char *fmt, const char *arg, char **ret_key);
/* For _cleanup_: releases the key (a struct csi_held) at scope end. */
struct csi_held { struct csi *p; char *key; };
void csi_held_release(struct csi_held *h);
#define _cleanup_held_ _cleanup_(csi_held_release)

/* Call amberd's method `name` ("GetVolume") with the call's deadline (or
 * `timeout_ms`, whichever is sooner). Returns the gRPC code; on RPC_OK
 * *ret is the decoded reply (free with protobuf_c_message_free_unpacked);
 * otherwise `st` has the code and amberd's message. */
int amberd_call(struct rpc_call *c, const char *name, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, uint64_t timeout_ms,
                ProtobufCMessage **ret, struct rpc_status *st);
/* Pass an amberd failure on to the CSI caller, prefixed with `what`
 * (UNAVAILABLE and DEADLINE_EXCEEDED keep their codes). Clears st. */
int amberd_fail(struct rpc_call *c, int code, struct rpc_status *st, const char *what);

/* Look a volume up by CSI volume id. Returns RPC_OK with *ret, RPC_NOT_FOUND
 * (also for ids that are not amberd ids), or another code with st set. */
int amberd_get_volume(struct rpc_call *c, const char *id, Amber__V1__Volume **ret,
                      struct rpc_status *st);

/* The same for a snapshot by CSI snapshot id. */
int amberd_get_snapshot(struct rpc_call *c, const char *id, Amber__V1__Snapshot **ret,
                        struct rpc_status *st);

/* The amberd name for a CSI name: the name itself when it is a valid
 * amberd name (1-63 of [A-Za-z0-9._-], not starting with . or -) and not a
 * UUID (which amberd would read as an id); otherwise a deterministic
 * "<sanitised prefix>-<32 hex of SHA-256(name)>". Caller frees. */
char *csi_map_name(const char *csi_name);

/* A volume capability we can serve: Mount (ext4/xfs, default `def_fs`) or
 * Block, with a SINGLE_NODE_* access mode. */
struct csi_cap {
    bool block;
    const char *fs_type;        /* mount: "ext4" | "xfs"; block: "" */
    int mode;                   /* Csi__V1__VolumeCapability__AccessMode__Mode */
    bool read_only_mode;        /* SINGLE_NODE_READER_ONLY */
};
/* 0 with *ret filled, or -EINVAL with a message in *ret_msg (caller frees)
 * saying what is missing or unsupported. */
int csi_cap_parse(const Csi__V1__VolumeCapability *cap, const char *def_fs, struct csi_cap *ret,
                  char **ret_msg);
bool csi_fs_supported(const char *fs);

/* Whether a Topology names this node (every segment must be ours). */
bool csi_topology_is_ours(struct csi *p, const Csi__V1__Topology *t);
/* This node's topology: one segment {topology_key: node_id}. The message
 * points into `seg` and `p`; nothing to free. */
struct csi_topology {
    Csi__V1__Topology t;
    Csi__V1__Topology__SegmentsEntry seg;
    Csi__V1__Topology__SegmentsEntry *pseg[1];
};
void csi_topology_init(struct csi *p, struct csi_topology *out);

/* A map<string,string> lookup in a repeated key/value entry list (all map
 * entries generated by protobuf-c share the layout {base, key, value}). */
struct csi_kv { ProtobufCMessage base; char *key; char *value; };
const char *csi_map_get(void *const *entries, size_t n, const char *key);

/* --- cluster.c: handles naming their node -------------------------------- */

/* A node name (<= 63) + '/' + a UUID, and room to spare. */
#define CSI_HANDLE_MAX 128
/* "NODE/ID" into *ret_node and *ret_id, or a plain "ID" (*ret_node NULL: an
 * old handle, meaning this node). -EINVAL on an empty node or a second '/'.
 * Caller frees both. */
int csi_handle_split(const char *handle, char **ret_node, char **ret_id);
/* The amberd id of a handle naming this node (or none); NULL when it names
 * another node or is malformed. Caller frees. */
char *csi_local_id(struct csi *p, const char *handle);
/* The handle of a local amberd id ("NODE/ID" with --node-handles). */
void csi_handle_fmt(struct csi *p, const char *id, char out[CSI_HANDLE_MAX]);
/* amberd's cluster service: keep a snapshot in an archive; remove it from
 * every archive. 0 or the recorded error. */
int csi_archive_snapshot(struct rpc_call *c, const char *snap_id, const char *archive);
int csi_forget_snapshot(struct rpc_call *c, const char *snap_id);

/* --- identity.c --------------------------------------------------------- */
extern const struct rpc_method csi_identity_methods[];
extern const size_t csi_identity_methods_n;

/* --- controller.c / snapshot.c ----------------------------------------- */
extern const struct rpc_method csi_controller_methods[];
extern const size_t csi_controller_methods_n;
/* snapshot.c: the snapshot RPCs of the Controller service. */
int csi_create_snapshot(struct rpc_call *c, const ProtobufCMessage *m);
int csi_delete_snapshot(struct rpc_call *c, const ProtobufCMessage *m);
int csi_list_snapshots(struct rpc_call *c, const ProtobufCMessage *m);
int csi_get_snapshot(struct rpc_call *c, const ProtobufCMessage *m);

/* --- snapshot-metadata.c: the SnapshotMetadata service (changed blocks) --- */
extern const struct rpc_method csi_snapshot_metadata_methods[];
extern const size_t csi_snapshot_metadata_methods_n;

/* --- group.c: the GroupController service (VolumeGroupSnapshots) -------- */
extern const struct rpc_method csi_group_methods[];
extern const size_t csi_group_methods_n;

/* --- node.c ------------------------------------------------------------- */
extern const struct rpc_method csi_node_methods[];
extern const size_t csi_node_methods_n;

/* --- mount.c: the mount table, mounting, and the tools we run ----------- */

/* One line of /proc/self/mountinfo. */
struct mnt_info {
    unsigned major, minor;      /* st_dev of the mounted filesystem */
    char *root;                 /* the mounted subtree ("/" or "/loop3") */
    char *target;
    char *fstype;
    char *source;
    bool read_only;             /* the mount's own "ro" */
};
void mnt_info_clear(struct mnt_info *m);
/* The topmost mount at `path` (compared after resolving symlinks of the
 * existing path): 0 with *ret, -ENOENT when nothing is mounted there. */
int mnt_find(const char *path, struct mnt_info *ret);
/* Whether the block device `dev` is mounted anywhere but at `except`: a
 * filesystem on it, or its device node bind-mounted (a Block publish). */
bool mnt_device_in_use(const char *dev, const char *except);
/* Unmount everything stacked at `path` (0 also when nothing was). */
int mnt_unmount_all(const char *path);
/* Mount `dev` of type `fstype` at `target` with CSI mount_flags (strings
 * such as "noatime", "ro", "discard"; unknown ones go to the fs as data). */
int mnt_mount_fs(const char *dev, const char *target, const char *fstype, char *const *flags,
                 size_t n_flags, bool read_only, char **ret_err);
/* Bind `source` on `target`, read-only when asked (bind, then remount). */
int mnt_bind(const char *source, const char *target, bool read_only);

/* Run argv (execvp, no shell); returns its exit status (>= 0), or a
 * negative errno when it could not run. *ret_out gets stdout, *ret_err the
 * last bytes of stderr (both optional, caller frees). */
int run_cmd(const char *const *argv, char **ret_out, char **ret_err);
/* The filesystem type on `dev` ("ext4", "xfs", …), "" when the device holds
 * no signature at all (blkid -p), or a negative errno. Caller frees. */
int fs_probe(const char *dev, char **ret_type);
/* mkfs.ext4 / mkfs.xfs on `dev`. */
int fs_make(const char *dev, const char *fstype, char **ret_err);
/* Grow the mounted filesystem on `dev` mounted at `mnt` to its device. */
int fs_grow(const char *dev, const char *mnt, const char *fstype, char **ret_err);
/* Size of a block device, in bytes. */
int blockdev_size(const char *dev, uint64_t *ret);

/* --- api-volume.c: the inline API volume (a pod's scoped amberd socket) --- */

/* NodePublishVolume of an inline ephemeral volume: 0, or the recorded error. */
int csi_api_publish(struct rpc_call *c, const Csi__V1__NodePublishVolumeRequest *q);
/* Before unmounting target: close its API socket if it has one. 0 or error. */
int csi_api_unpublish(struct rpc_call *c, const char *target);

/* --- snapshot-volume.c: the inline snapshot volume (a snapshot, read-only) --- */

/* Whether an inline ephemeral volume names a snapshot (amber.csi.dev/snapshot). */
bool csi_snap_wanted(const Csi__V1__NodePublishVolumeRequest *q);
/* NodePublishVolume of one: 0, or the recorded error. */
int csi_snap_publish(struct rpc_call *c, const Csi__V1__NodePublishVolumeRequest *q);
/* Before the generic unpublish: unmount target and, if it was a snapshot
 * volume (its record), release the snapshot. 0 or the recorded error. */
int csi_snap_unpublish(struct rpc_call *c, const char *target);

#endif
