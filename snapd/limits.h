/* limits.h: bounds on what one client can make amberd spend, set by amberd
 * options (LIMITS_USAGE lists them for --help). A request past a bound is
 * refused with RESOURCE_EXHAUSTED and changes nothing; a malformed one
 * (a label key too long) is INVALID_ARGUMENT. Bounds enforced elsewhere:
 * labels per snapshot, label key and value sizes and label filters
 * (catalog.h: CAT_LABELS_MAX, CAT_LABEL_KEY_MAX, CAT_LABEL_VALUE_MAX,
 * CAT_FILTER_LABELS_MAX), message size (--max-message), streams per
 * connection, connections and handler threads (rpc_server_config). */
#pragma once
#include <stdint.h>

struct amberd;
struct op_err;

struct amberd_limits {
    uint64_t snapshots_per_volume;    /* --max-snapshots-per-volume, 4096 */
    uint64_t volumes_per_namespace;   /* --max-volumes-per-namespace, 1024 */
    uint64_t pod_sockets;             /* --max-pod-sockets, 4096 */
    uint64_t calls;                   /* --max-calls: in flight, all sockets, 1024 */
    uint64_t pod_socket_conns;        /* --max-pod-socket-conns, 16 */
};
extern struct amberd_limits amberd_limits;

#define LIMITS_USAGE \
"Limits (past one: RESOURCE_EXHAUSTED, nothing changed):\n" \
"  --max-snapshots-per-volume N   snapshots one volume may have (default 4096)\n" \
"  --max-volumes-per-namespace N  volumes of one Kubernetes namespace\n" \
"                        (default 1024)\n" \
"  --max-pod-sockets N   namespace-scoped pod API sockets (default 4096)\n" \
"  --max-pod-socket-conns N  connections to one pod socket at once (default\n" \
"                        16; the calls of one more get RESOURCE_EXHAUSTED)\n" \
"  --max-calls N         calls queued or running at once, every socket\n" \
"                        (default 1024)\n" \
"  Fixed: 64 labels a snapshot, keys 1-128 bytes, values <= 1024 bytes, 16\n" \
"  label filters a list, 64 volumes a group snapshot, 100 streams a\n" \
"  connection (HTTP/2 SETTINGS), 256 connections, --max-message\n" \
"  Reserved (INVALID_ARGUMENT): label keys amber.csi.dev/... and amber.archive\n"

/* getopt_long entries (val LIMIT_OPT_BASE + i) and their parser: 0, or -1
 * after printing what is wrong. */
#define LIMIT_OPT_BASE 1000
#define LIMIT_OPTIONS \
    { "max-snapshots-per-volume", 1, NULL, LIMIT_OPT_BASE + 0 }, \
    { "max-volumes-per-namespace", 1, NULL, LIMIT_OPT_BASE + 1 }, \
    { "max-pod-sockets", 1, NULL, LIMIT_OPT_BASE + 2 }, \
    { "max-calls", 1, NULL, LIMIT_OPT_BASE + 3 }, \
    { "max-pod-socket-conns", 1, NULL, LIMIT_OPT_BASE + 4 }
int limits_option(int opt, const char *arg);

/* 0, or RESOURCE_EXHAUSTED in e when the volume has its most snapshots.
 * Call with the volume's operation lock held (busy_acquire), or two
 * creates can both count room for the last one. */
int limit_snapshots(struct amberd *d, const char *volume_id, const char *volume_name,
                    struct op_err *e);
/* 0, or RESOURCE_EXHAUSTED when the namespace has its most volumes (ns
 * NULL or empty: not a Kubernetes volume, no bound here). */
int limit_namespace_volumes(struct amberd *d, const char *ns, struct op_err *e);

/* Label keys amber itself writes and acts on: amber-csi's group snapshots
 * (amber.csi.dev/group, amber.csi.dev/group-name) and the cluster's
 * archives (amber.archive=NAME, set by ArchiveSnapshot). A user call that
 * sets or removes one is refused with INVALID_ARGUMENT, or a tenant could
 * make its snapshot a member of another group, or archive it around the
 * archive API. The prefix key starts with, or NULL when it is the user's. */
const char *label_reserved(const char *key);
