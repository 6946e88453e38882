/* cluster.h: the cluster subsystem (snapd-internal): what a node's amberd
 * does as one of the nodes of a Kubernetes cluster.
 *
 * It owns:
 *  - the cluster identity: a node certificate signed by the cluster CA
 *    (cluster-ca.c; made at start from the CA in the Secret, or given); the
 *    rule that any peer the cluster CA signed is a member, trusted without
 *    a pin, is sync/'s (peer_opts.ca_members), turned on here;
 *  - the registry: where a node's peer port is, by node name (registry.c,
 *    a small vtable: a shared directory, an address template);
 *  - jobs: new local volumes from a snapshot another node holds, pulled with
 *    the sync engine or restored from an archive when that node is gone
 *    (jobs.c);
 *  - archives: snapshots kept in named object-store repositories, exported
 *    in the background, removed with the snapshot (archiver.c);
 *  - amber.v1.Cluster on the node socket (cluster-api.c);
 *  - another node's snapshots, their records and extents, through the peer
 *    connection (node-diff.c; amber.v1.ClusterPeer on the peer port).
 *
 * It may call: daemon.h (operations: vol_create, vol_resize, snap_find;
 * transfers: peer_pull, the sync engine's entry for other subsystems),
 * catalog.h, objstore.h (to find and forget archived manifests), and, for
 * exports and restores, the daemon's own Archive service over its node
 * socket, so the pool's layout (resident or stored snapshots) stays the
 * daemon's business.
 * It never reads or writes pool files itself. */
#ifndef AMBER_SNAPD_CLUSTER_H
#define AMBER_SNAPD_CLUSTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "amber/rpc.h"
#include "snapd/daemon.h"

/* The label that names a snapshot's archive (amber.archive=NAME). */
#define CLUSTER_ARCHIVE_LABEL "amber.archive"
/* Internal snapshots (the hidden snapshot of a volume another node clones):
 * amber.internal=WHY; never listed (api.c's ListSnapshots skips them). */
#define CLUSTER_INTERNAL_LABEL "amber.internal"

struct cluster_opts {
    const char *ca_cert;        /* --cluster-ca: the cluster CA's certificate */
    const char *ca_key;         /* --cluster-ca-key: sign our node certificate at start */
    const char *registry;       /* --cluster-registry: dir:PATH | template:PATTERN */
    const char *archives_file;  /* --archives-file: NAME URL PASSWORD_FILE [gc-grace=S] */
};

/* --- cluster-ca.c (also linked into amberctl) ---------------------------- */

/* Make a CA: a P-256 key (0600) and a self-signed CA certificate (CN=cn,
 * basicConstraints CA:TRUE) valid for `days`. Refuses to overwrite: -EEXIST. */
int cluster_ca_make(const char *cert_file, const char *key_file, const char *cn, int days);
/* Issue a node certificate CN=cn (and a DNS SAN cn) signed by the CA, with
 * a fresh key; the certificate file holds the leaf then the CA (a chain).
 * Overwrites. ret_err gets OpenSSL's reason (caller frees). */
int cluster_ca_issue(const char *ca_cert, const char *ca_key, const char *cn, int days,
                     const char *cert_file, const char *key_file, char **ret_err);
/* 1 if cert_file's leaf was signed by ca_cert and is valid now, 0 if not. */
int cluster_ca_signed(const char *ca_cert, const char *cert_file);
/* The same, and its CN is cn (if given) and it stays valid min_days more. */
int cluster_ca_cert_ok(const char *ca_cert, const char *cert_file, const char *cn, int min_days);

/* --- registry.c ------------------------------------------------------------ */

struct cluster_registry;
/* "dir:PATH": a directory every node can read and write (a file a node,
 * NAME holding HOST:PORT); "template:PATTERN": PATTERN with {node}
 * replaced (e.g. "{node}.amber-peers.amber-system.svc:7443"). */
int registry_open(const char *spec, struct cluster_registry **ret);
void registry_free(struct cluster_registry *r);
/* The peer address of node, -ENOENT if unknown. Caller frees. */
int registry_lookup(struct cluster_registry *r, const char *node, char **ret_addr);
/* Publish ours (no-op for templates). */
int registry_publish(struct cluster_registry *r, const char *node, const char *addr);
const char *registry_spec(const struct cluster_registry *r);

/* --- archives (archiver.c) ------------------------------------------------- */

struct cluster_archive {
    char *name, *url, *password;
    uint64_t gc_grace_s;
};

/* --- state ------------------------------------------------------------------- */

struct cluster_job;
struct cluster_state {
    char *ca_file;                      /* the cluster CA (also the peer --tls-ca) */
    char *cert_file, *key_file;         /* our node certificate, when we made it */
    struct cluster_registry *registry;
    struct cluster_archive *archives;
    size_t n_archives;

    pthread_mutex_t lock;               /* jobs and the archiver's queue */
    pthread_cond_t cond;                /* a job changed / the archiver has work */
    struct cluster_job *jobs;
    bool stopping;
    pthread_t archiver;
    bool archiver_running;
    unsigned archiver_kicks;
    uint64_t archived_total, archive_failures;
    uint64_t pulled_bytes, restored_bytes;  /* metrics */
};

/* --- cluster.c: start, stop, the catalog peers of cluster nodes ------------- */

/* Before peer_start: load the CA and archives, issue our node certificate
 * when the CA key is given, and point the peer options at the identity and
 * the CA. 0 also when cluster mode is off (no --cluster-ca). */
int cluster_start(struct amberd *d, const struct cluster_opts *o, struct peer_opts *po);
/* After peer_start: publish our peer address and start the archiver. */
int cluster_run(struct amberd *d);
void cluster_stop(struct amberd *d);

/* Make sure node is a catalog peer (no pin: trusted by the cluster CA) at
 * the registry's address. */
int cluster_peer_ensure(struct amberd *d, const char *node, struct op_err *e);

/* --- cluster-api.c: what the handlers of cluster.proto share ---------------- */

/* The error of an op as the call's status (e's code, else one from r; its
 * message, prefixed "what: " when what is given); clears e. */
int cluster_fail(struct rpc_call *c, struct op_err *e, int r, const char *what);
/* 0 when the peer is a member of this cluster (its name in *ret_name when
 * asked; caller frees), else PERMISSION_DENIED (logged). */
int cluster_need_member(struct rpc_call *c, char **ret_name);
/* A client to node's peer port (it borrows *tls; caller frees both). */
int cluster_node_client(struct rpc_call *c, const char *node, struct rpc_client **cl,
                        struct rpc_tls **tls);
/* Our catalog's snapshot id in *ret (caller frees), else NOT_FOUND or INTERNAL. */
int cluster_local_snapshot(struct rpc_call *c, const char *id, struct cat_snapshot **ret);

/* --- jobs.c -------------------------------------------------------------------- */

struct cluster_create_args {
    const char *name;
    uint64_t size;
    const char *source_node, *source_snapshot, *source_volume;
    const char *pvc_namespace, *pvc_name, *fs_type, *params;
    uint32_t wait_ms;
};
/* Start (or find) the job making volume `name`; wait up to wait_ms for it.
 * 0 with *ret when the volume is ready; -EINPROGRESS with e set
 * (ABORTED "operation pending: …") while it runs; another error when it
 * failed (the job is then forgotten, so the next call starts over). */
int cluster_create_volume(struct amberd *d, const struct cluster_create_args *a,
                          struct cat_volume **ret, struct op_err *e);
/* A snapshot of the job (a copy; caller frees with cluster_job_info_free). */
struct cluster_job_info {
    char *name, *state, *source_node, *source_snapshot, *archive, *error;
    char *source_volume;
    int error_code;
    uint64_t bytes_done, bytes_total, bytes_resumed, bytes_on_wire;
    uint64_t started_ns, finished_ns;
    uint32_t attempts, snapshots_moved;
};
void cluster_job_info_free(struct cluster_job_info *j);
int cluster_job_get(struct amberd *d, const char *name, struct cluster_job_info *ret);
/* All jobs; caller frees each and the array. */
int cluster_job_list(struct amberd *d, struct cluster_job_info **ret, size_t *n);
/* At start: the jobs a stop or a crash interrupted (their catalog rows)
 * run again, so the provisioner's retry finds them running. */
int cluster_jobs_resume(struct amberd *d);
/* At stop: wait for running jobs (they stop at their next step), free them. */
void cluster_jobs_free(struct amberd *d);

/* --- archiver.c ------------------------------------------------------------------ */

const struct cluster_archive *cluster_archive_get(struct amberd *d, const char *name);
int cluster_archives_load(struct cluster_state *cs, const char *path);
void cluster_archives_free(struct cluster_state *cs);
int archiver_start(struct amberd *d);
void archiver_stop(struct amberd *d);
void archiver_kick(struct amberd *d);
/* The archive holding snapshot id's manifest: 0 with *ret_archive (borrowed)
 * and ret_manifest, -ENOENT when none of ours does. */
int archive_locate(struct amberd *d, const char *snap_id, const struct cluster_archive **ret_archive,
                   char ret_manifest[65]);
/* Delete the manifests of snap_id from every archive, then gc each touched
 * repository (only chunks no remaining manifest references go). */
int archive_forget(struct amberd *d, const char *snap_id, unsigned *ret_manifests,
                   uint64_t *ret_chunks, struct op_err *e);
/* Run a streaming Archive call (Export/Restore) on our own node socket;
 * each progress message goes to cb. Returns the gRPC code, e set. */
struct archive_progress_view {
    uint64_t bytes_total, bytes_read, bytes_uploaded;
    bool done;
    const char *manifest;
};
typedef void (*archive_progress_cb)(const struct archive_progress_view *p, void *ud);
int archive_self_call(struct amberd *d, const char *method, const ProtobufCMessage *req,
                      archive_progress_cb cb, void *ud, char **ret_manifest, struct op_err *e);

/* --- node-diff.c: another node's snapshots, for SnapshotMetadata ------------------ */

/* amber.v1.ClusterPeer, on the peer port (cluster members only). */
extern const struct rpc_method cluster_peer_methods[];
extern const size_t cluster_peer_methods_n;
/* amber.v1.Cluster/GetNodeSnapshot and NodeDiff (in cluster_api_methods). */
int cluster_h_get_node_snapshot(struct rpc_call *c, const ProtobufCMessage *m);
int cluster_h_node_diff(struct rpc_call *c, const ProtobufCMessage *m);

/* --- node-group.c: another node's group snapshots, for GroupController ------------ */

/* amber.v1.ClusterPeer/ListSnapshots, CreateSnapshots, DeleteSnapshot (in
 * cluster_peer_methods) and amber.v1.Cluster/NodeListSnapshots,
 * NodeCreateSnapshots, NodeDeleteSnapshot (a table of api.c's). */
int cluster_h_peer_list_snapshots(struct rpc_call *c, const ProtobufCMessage *m);
int cluster_h_peer_create_snapshots(struct rpc_call *c, const ProtobufCMessage *m);
int cluster_h_peer_delete_snapshot(struct rpc_call *c, const ProtobufCMessage *m);
extern const struct rpc_method cluster_group_api_methods[];
extern const size_t cluster_group_api_methods_n;

/* --- clone.c: a volume content source another node holds ------------------------ */

/* Whether s is internal (labelled amber.internal): not listed. */
bool cluster_snapshot_hidden(const struct cat_snapshot *s);
/* The asking node: have `node` take (or find) the hidden snapshot of its
 * volume `volume` for our new volume `key`; its id in *ret_snap_id. */
int cluster_clone_prepare(struct amberd *d, const char *node, const char *volume, const char *key,
                          char **ret_snap_id, struct op_err *e);
/* The copy is done: the holder removes the hidden snapshot. */
int cluster_clone_release(struct amberd *d, const char *node, const char *volume, const char *key,
                          struct op_err *e);
/* The holder: remove hidden snapshots whose volume is gone or whose copy was
 * abandoned (expired). The number removed, or a negative errno. */
int cluster_clone_sweep(struct amberd *d);
/* amber.v1.ClusterPeer/PrepareClone and ReleaseClone (cluster_peer_methods). */
int cluster_h_peer_prepare_clone(struct rpc_call *c, const ProtobufCMessage *m);
int cluster_h_peer_release_clone(struct rpc_call *c, const ProtobufCMessage *m);

/* --- replicas.c: the hidden replicas c-<snapshot id> ---------------------------------- */

/* Whether v is one of the cluster's hidden replicas (not listed). */
bool cluster_volume_hidden(const struct cat_volume *v);
/* Delete the hidden replicas nothing needs any more (the rule is in
 * replicas.c and the README). The number deleted, or a negative errno. */
int cluster_replicas_collect(struct amberd *d, const char *except_job);

/* --- cluster-api.c --------------------------------------------------------------- */

extern const struct rpc_method cluster_api_methods[];
extern const size_t cluster_api_methods_n;
/* Prometheus lines for metrics.c. */
void cluster_metrics(struct amberd *d, struct buf *b);

#endif
