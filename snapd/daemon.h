/* daemon.h: amberd's shared state and the operations its APIs call.
 *
 * The daemon is in the control path only: it owns the pool (pool.h), the
 * catalog (catalog.h) and the gRPC listeners (rpc.h), and turns requests
 * into crash-safe multi-step operations:
 *   1. one catalog transaction records the object in a transitional state
 *      (`creating`, `deleting`) together with an intent naming the op;
 *   2. the pool does the disk work;
 *   3. a second transaction makes the object final and drops the intent.
 * At start, recover.c walks the intents left by a crash and rolls each
 * back (creations were never acknowledged) or forward (deletions were
 * asked for), so a kill -9 at any point loses nothing acknowledged and
 * leaves no orphan.
 *
 * Operations on one volume are serialised: a second concurrent operation
 * gets -EBUSY (gRPC ABORTED, as CSI asks), never a wait behind mkfs. */
#ifndef AMBER_SNAPD_DAEMON_H
#define AMBER_SNAPD_DAEMON_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "amber/rpc.h"
#include "snapd/catalog/catalog.h"
#include "snapd/pool/pool.h"

static inline void cat_volume_freep(struct cat_volume **v) { cat_volume_free(*v); }
static inline void cat_snapshot_freep(struct cat_snapshot **s) { cat_snapshot_free(*s); }

struct amberd {
    struct pool *pool;
    struct pool_image *image;     /* the embedded default, or NULL */
    struct catalog *cat;
    struct rpc_server *srv;
    char *pool_dir;
    char *socket_path;
    char *node_id;
    char *fingerprint;            /* the node's TLS identity, if any */
    char *peer_address;
    pthread_mutex_t busy_lock;
    struct busy *busy;            /* volume ids with an operation in flight */
    /* Subsystems own their state behind these (NULL when not started). */
    struct peer_state *peer;      /* peer.c: identity, peer listener, sync */
    struct sched_state *sched;    /* schedule.c: the time machine */
    struct scoped_state *scoped;  /* scoped.c: per-pod API sockets */
    struct cluster_state *cluster; /* cluster/: cluster mode (NULL when off) */
    struct store_state *store;    /* store/: the snapshot store and its mover */
};

/* --- ops.c: shared by the operations and the API layers ---------------- */

/* An operation's error for the API layer: a gRPC code (0: map the errno)
 * and a message for the user. */
struct op_err {
    int code;
    char *msg;
};
/* Record an error and return r (a negative errno). */
int op_fail(struct op_err *e, int code, int r, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void op_err_clear(struct op_err *e);

/* Kill the daemon with SIGKILL when AMBER_CRASH_AT names this point: the
 * crash-injection tests stop it at every step of every operation. */
void crashpoint(const char *name);

/* Per-volume operation locks. 0, or -EBUSY when one is in flight. */
int busy_acquire(struct amberd *d, const char *vol_id, const char *what, struct op_err *e);
void busy_release(struct amberd *d, const char *vol_id);
/* Whether an operation is in flight on the volume (a look, no lock taken:
 * background work that should give way, like the defragmenter). */
bool busy_check(struct amberd *d, const char *vol_id);

/* Look a volume (name or id) or a snapshot (name, VOLUME@name or id) up;
 * -ENOENT (NOT_FOUND) or -EINVAL (ambiguous) with the error set. */
int vol_find(struct amberd *d, const char *ref, struct cat_volume **ret, struct op_err *e);
int snap_find(struct amberd *d, const char *ref, struct cat_snapshot **ret, struct op_err *e);

/* --- metrics.c: Prometheus metrics over HTTP ---------------------------- */
int metrics_start(struct amberd *d, const char *hostport);
void metrics_stop(void);

/* --- ballast.c: room to delete in a full pool ------------------------- */

/* Make the ballast file if it is missing and the pool has room. */
void ballast_ensure(struct amberd *d);
/* Before a delete: if the pool is (nearly) full, release the ballast. */
void ballast_make_room(struct amberd *d);

/* --- ops-volume.c ------------------------------------------------------- */

struct vol_create_args {
    const char *name;
    uint64_t size;                /* 0 with a source: the source's size */
    const char *source_snapshot;  /* ref */
    const char *source_volume;    /* ref */
    const char *pvc_namespace, *pvc_name;
    const char *fs_type;
    const char *params;
};
/* Create (or, when the same request was already done, return) a volume.
 * -EEXIST: the name is taken by a different volume. */
int vol_create(struct amberd *d, const struct vol_create_args *a, struct cat_volume **ret,
               struct op_err *e);
/* Delete; -ENOENT if absent (the API decides whether that is fine). */
int vol_delete(struct amberd *d, const char *ref, struct op_err *e);
int vol_resize(struct amberd *d, const char *ref, uint64_t size, struct cat_volume **ret,
               struct op_err *e);
/* Attach the volume (or one of its snapshots, read-only) to a loop device. */
int vol_attach(struct amberd *d, const char *ref, const char *snap_ref, char **ret_dev,
               struct op_err *e);
int vol_detach(struct amberd *d, const char *ref, const char *snap_ref, struct op_err *e);
int vol_revert(struct amberd *d, const char *ref, const char *snap_ref, struct op_err *e);

/* --- ops-snapshot.c ----------------------------------------------------- */

struct snap_create_args {
    const char *volume;           /* ref */
    const char *name;             /* NULL: generated */
    const struct cat_label *labels;
    size_t n_labels;
    bool freeze;
    uint64_t freeze_timeout_ms;
    const char *k8s_namespace, *k8s_name;
};
/* Snapshot several volumes at the same instant (n = 1 for one). On
 * failure none is left. ret[i] are the new snapshots. */
int snap_create_many(struct amberd *d, const struct snap_create_args *a, size_t n,
                     struct cat_snapshot **ret, struct op_err *e);
int snap_delete(struct amberd *d, const char *ref, struct op_err *e);

/* Changed extents between two snapshots of a volume (to NULL: the live
 * volume), or, with from NULL, the allocated extents of volume `vol`. */
int snap_diff(struct amberd *d, const char *from, const char *to, const char *vol,
              pool_extent_cb cb, void *userdata, const char **ret_method, struct op_err *e);

/* --- recover.c ----------------------------------------------------------- */

/* Finish or roll back what a crash left; reconcile catalog and disk. */
int daemon_recover(struct amberd *d);

/* --- api.c ---------------------------------------------------------------- */

extern const struct rpc_method api_node_methods[];
extern const size_t api_node_methods_n;

/* The node socket serves every API table listed in api.c's node_tables[]
 * (volumes and snapshots here; peers, sync, schedules … from their own
 * files). Returns a malloc'd concatenation; the caller frees it. */
struct rpc_method *api_node_all_methods(size_t *ret_n);
/* Stream the changed extents from..to (or a volume's allocated extents) to
 * the caller in batches, as amber.v1.Amber/Diff answers; refs already
 * resolved and authorised by the caller's scope. */
int api_diff_stream(struct rpc_call *c, const char *from, const char *to, const char *vol);

/* peer.c: the node's TLS identity, the peer port, sync and subscriptions.
 * peer_start makes or loads the identity (sets d->fingerprint), loads
 * --peers-file, listens on `listen` (if set; sets d->peer_address) and
 * starts the subscription follower; call it once the server exists.
 * peer_stop goes after rpc_server_free and before cat_close. */
struct peer_opts {
    const char *listen, *tls_cert, *tls_key, *tls_ca, *peers_file;
    /* Cluster mode: a peer the CA (tls_ca) signed whose key is not pinned
     * to a catalog peer is a cluster member named by its CN; members read
     * every volume, also named by one of its snapshots' ids. */
    bool ca_members;
    /* More methods on the peer port (cluster/: amber.v1.ClusterPeer); their
     * handlers check who calls (peer_ca_member). */
    const struct rpc_method *extra_methods;
    size_t n_extra_methods;
    /* --peer-keepalive: peer connections (ours and the peer port's) silent
     * this long are pinged, and dropped when silent as long again (0: never). */
    uint32_t keepalive_ms;
};
#define PEER_KEEPALIVE_DEFAULT 20000
int peer_start(struct amberd *d, const struct peer_opts *o);
void peer_stop(struct amberd *d);
/* sync-client.c: pull peer's `volume` (an id or name; from a cluster
 * member's side also one of its snapshots' ids) up to `snapshot` into its
 * replica here, made as `as_name` the first time (the cluster's copy jobs,
 * cluster/jobs.c). Resumes an interrupted transfer; moves only what the
 * replica lacks. Progress as in amberctl sync pull. */
struct peer_pull_stats {
    uint32_t snapshots;
    uint64_t bytes_changed, resumed_bytes, bytes_on_wire;
    uint64_t stream_done, stream_total;     /* of the snapshot in flight */
};
typedef int (*peer_pull_progress_fn)(const struct peer_pull_stats *st, void *userdata);
int peer_pull(struct amberd *d, const char *peer, const char *volume, const char *as_name,
              const char *snapshot, peer_pull_progress_fn progress, void *userdata,
              struct peer_pull_stats *ret, struct op_err *e);
/* sync-session.c, also for cluster/: whether a peer-port caller is a
 * cluster member (1 with *ret_name, caller frees; else 0), and a client to
 * catalog peer p with our identity (the client borrows *ret_tls: free the
 * client first, then the tls). */
int peer_ca_member(struct amberd *d, const struct rpc_peer *rp, char **ret_name);
int peer_client(struct amberd *d, const struct cat_peer *p, struct rpc_client **ret,
                struct rpc_tls **ret_tls, struct op_err *e);
/* sync-api.c: amber.v1.Sync on the node socket. */
extern const struct rpc_method peer_admin_methods[];
extern const size_t peer_admin_methods_n;

/* archive.c: export to and restore from object-store repositories. */
extern const struct rpc_method api_archive_methods[];
extern const size_t api_archive_methods_n;
/* selfcheck.c: amber.v1.Check (catalog vs pool, for amberctl check). */
extern const struct rpc_method api_check_methods[];
extern const size_t api_check_methods_n;

/* api.c: answer a call with a volume (as GetVolume does). */
int api_send_volume(struct rpc_call *c, const struct cat_volume *v);
/* api.c: answer a call with a snapshot (as GetSnapshot does). */
int api_send_snapshot(struct rpc_call *c, const struct cat_snapshot *s);

#endif
