/* catalog.h: amberd's durable memory, an sqlite3 database in the pool
 * (POOL/.amber/catalog.db).
 *
 * What lives here: volumes, snapshots and their labels, the intent journal
 * that makes multi-step operations crash-safe, peers, publications,
 * subscriptions and sync progress, snapshot schedules, exports, and the
 * per-pod API sockets to restore after a restart. No pool I/O and no RPC:
 * the daemon owns policy, this module owns rows.
 *
 * Conventions:
 * - Every function that can fail returns 0 (or a count) on success and a
 *   negative errno on failure: -ENOENT not found, -EEXIST a duplicate name
 *   or id, -EBUSY the database is locked by another process (busy timeout
 *   exceeded) or, for intents, another intent holds the target, -EINVAL bad
 *   argument (checked before SQL), -ERANGE a size or time over INT64_MAX,
 *   -ENOTUNIQ a short name that matches several objects, -EPROTO a catalog
 *   written by a newer amberd (or not an Amber catalog), -ENOSPC disk full,
 *   -EIO any other sqlite error. cat_errmsg() then says why, in words.
 * - Output parameters (ret_*) are written only on success; the caller owns
 *   what they receive and frees it with the matching _free (all accept NULL).
 * - Ids are lowercase uuids (uuid_new()); the caller chooses them, because
 *   the pool needs the id (vols/<id>) before the row is committed and a
 *   replicated snapshot keeps its sender's id.
 * - Times are nanoseconds since the epoch (now_real_ns()); a created_ns of 0
 *   on insert means "now".
 *
 * Threads: one connection guarded by one recursive mutex. Every call takes
 * the mutex for its duration; cat_begin() takes it until the matching
 * cat_commit()/cat_rollback(), so a transaction is isolated from every other
 * thread (they wait) and calls made inside it by the same thread compose
 * (nested cat_begin() is a SAVEPOINT). Keep transactions short: never hold
 * one across pool I/O; write the intent and the `creating` row in one
 * transaction, do the disk work outside, finish in a second transaction. */
#ifndef AMBER_SNAPD_CATALOG_H
#define AMBER_SNAPD_CATALOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct catalog;

/* The schema version this build writes; older catalogs are migrated at open,
 * newer ones are refused with -EPROTO. */
#define CAT_SCHEMA_VERSION 3
/* Where the daemon keeps the catalog, relative to the pool's root. */
#define CAT_POOL_RELPATH ".amber/catalog.db"

/* Limits on what a client can make us store. */
#define CAT_LABEL_KEY_MAX    128   /* bytes, 1..128 */
#define CAT_LABEL_VALUE_MAX  1024  /* bytes, 0..1024 */
#define CAT_LABELS_MAX       64    /* labels on one snapshot */
#define CAT_FILTER_LABELS_MAX 16   /* k=v terms in one list filter */
#define CAT_LIST_LIMIT_MAX   100000

/* For _cleanup_(): cat_volume_freep etc. free *p (the _list_free functions
 * take a pointer already and serve as cleanups as they are). */
#define CAT_DEFINE_FREEP(type)                                          \
    struct cat_##type;                                                  \
    void cat_##type##_free(struct cat_##type *p);                       \
    static inline void cat_##type##_freep(struct cat_##type **p)        \
    {                                                                   \
        cat_##type##_free(*p);                                          \
    }
/* cat_volume_freep and cat_snapshot_freep are defined in daemon.h for now
 * (written there first); they belong here. */
CAT_DEFINE_FREEP(intent)
CAT_DEFINE_FREEP(schedule)
CAT_DEFINE_FREEP(export)
CAT_DEFINE_FREEP(pod_socket)
CAT_DEFINE_FREEP(peer)
CAT_DEFINE_FREEP(subscription)
CAT_DEFINE_FREEP(sync_progress)

/* ---- open, close, errors, transactions ---------------------------------- */

/* Open (creating if missing, mode 0600, parent directory 0700) the catalog
 * at `path`, switch it to WAL with synchronous=FULL, foreign keys on, a 5 s
 * busy timeout, and migrate it to CAT_SCHEMA_VERSION. -EPROTO if the file
 * holds a newer schema or another application's database. */
int cat_open(const char *path, struct catalog **ret);
/* Finalize statements and close; NULL is fine. Must not be called with a
 * transaction open or from two threads. */
void cat_close(struct catalog *cat);
/* The message of the calling thread's last failed cat_* call (thread-local,
 * valid until that thread's next failing call). Never NULL. */
const char *cat_errmsg(const struct catalog *cat);
/* The schema version stored in the file (for `amberctl info`). */
int cat_schema_version(struct catalog *cat);

/* Begin a write transaction (BEGIN IMMEDIATE; nested: a SAVEPOINT). The
 * calling thread holds the catalog until the matching commit or rollback. */
int cat_begin(struct catalog *cat);
/* Commit the innermost transaction. On failure the transaction is rolled
 * back and released anyway: the caller must not call cat_rollback(). */
int cat_commit(struct catalog *cat);
/* Roll back the innermost transaction and release it. Always releases. */
int cat_rollback(struct catalog *cat);
/* End the innermost transaction by the outcome of its work: commit if r >= 0
 * (returning r, or the commit's error), roll back otherwise (returning r,
 * with cat_errmsg still describing the failure, not the rollback). */
int cat_end(struct catalog *cat, int r);
/* Run fn inside a transaction: commit if it returns >= 0, roll back
 * otherwise. Returns fn's result, or the commit's error. */
int cat_tx(struct catalog *cat, int (*fn)(struct catalog *cat, void *data), void *data);

/* meta: small key/value facts (pool backend, pool format, node identity).
 * Keys starting with "schema" are reserved. */
int cat_meta_get(struct catalog *cat, const char *key, char **ret);
int cat_meta_set(struct catalog *cat, const char *key, const char *value);

/* Paging for list calls: rows come ordered by (created_ns, id); `after` is
 * the `next` token of the previous page (NULL: from the start); `limit` 0
 * means no limit. A malformed token gives -EINVAL (CSI: ABORTED). A token
 * whose row was deleted meanwhile still works. */
struct cat_page {
    const char *after;
    uint32_t limit;
};

/* ---- volumes ------------------------------------------------------------- */

enum cat_vol_state {
    CAT_VOL_CREATING,
    CAT_VOL_READY,
    CAT_VOL_DELETING,
    CAT_VOL_REVERTING,
    CAT_VOL_RESIZING,
    CAT_VOL_RECEIVING,      /* a replica's first transfer */
    _CAT_VOL_STATE_MAX,
    _CAT_VOL_STATE_INVALID = -1,
};
const char *cat_vol_state_to_string(enum cat_vol_state s);
enum cat_vol_state cat_vol_state_from_string(const char *s);

struct cat_volume {
    char *id;
    char *name;                 /* unique in the pool, name_validate() */
    uint64_t size_bytes;
    char *fs_type;              /* hint ("ext4", "xfs") or NULL */
    enum cat_vol_state state;
    uint64_t created_ns;
    char *source_snapshot_id;   /* clone/restore origin or NULL */
    char *source_volume_id;     /* volume-to-volume clone origin or NULL */
    char *pvc_namespace;        /* from --extra-create-metadata, or NULL */
    char *pvc_name;
    char *replica_peer;         /* non-NULL: a replica following this peer; read-only to local writers */
    char *replica_source_id;    /* the source volume's id on replica_peer */
    char *params;               /* JSON object text (StorageClass parameters) or NULL */
};
void cat_volume_free(struct cat_volume *v);

/* Insert. v->id must be a uuid, v->name valid. -EEXIST on a duplicate id or
 * name. */
int cat_volume_add(struct catalog *cat, const struct cat_volume *v);
/* Overwrite every column but id and created_ns of the row v->id (rename
 * included: -EEXIST if the new name is taken). -ENOENT if absent. */
int cat_volume_update(struct catalog *cat, const struct cat_volume *v);
int cat_volume_set_state(struct catalog *cat, const char *id, enum cat_vol_state state);
int cat_volume_set_size(struct catalog *cat, const char *id, uint64_t size_bytes);
/* Delete the row; its publications and schedule go with it. Its snapshots
 * stay (a VolumeSnapshot outlives its PVC): the daemon decides whether to
 * delete them. -ENOENT if absent. */
int cat_volume_delete(struct catalog *cat, const char *id);
int cat_volume_get(struct catalog *cat, const char *id, struct cat_volume **ret);
/* Resolve what a user typed: an id, a name, or "pvc/NAMESPACE/NAME". */
int cat_volume_find(struct catalog *cat, const char *ref, struct cat_volume **ret);
/* The volume made for a PVC. Several rows can carry one PVC (a claim deleted
 * and recreated under a Retain policy): the newest one not `deleting` wins. */
int cat_volume_find_pvc(struct catalog *cat, const char *ns, const char *name,
                        struct cat_volume **ret);

struct cat_volume_filter {
    const char *pvc_namespace;  /* NULL: any */
    const char *replica_peer;   /* NULL: any */
    unsigned states;            /* bit mask of 1u << CAT_VOL_*; 0: any */
};
struct cat_volume_list {
    struct cat_volume *items;
    size_t n;
    char *next;                 /* token for the next page, NULL at the end */
};
void cat_volume_list_free(struct cat_volume_list *l);  /* frees contents, zeroes *l */
int cat_volume_list(struct catalog *cat, const struct cat_volume_filter *f,
                    const struct cat_page *page, struct cat_volume_list *ret);

/* ---- snapshots and labels ------------------------------------------------ */

enum cat_snap_state {
    CAT_SNAP_CREATING,
    CAT_SNAP_READY,
    CAT_SNAP_DELETING,
    _CAT_SNAP_STATE_MAX,
    _CAT_SNAP_STATE_INVALID = -1,
};
const char *cat_snap_state_to_string(enum cat_snap_state s);
enum cat_snap_state cat_snap_state_from_string(const char *s);

struct cat_label {
    char *key;
    char *value;
};
/* 0 or -EINVAL: key 1..CAT_LABEL_KEY_MAX bytes without '=' or control
 * characters, value 0..CAT_LABEL_VALUE_MAX bytes without control characters. */
int cat_label_validate(const char *key, const char *value);
/* Split "k=v" into a validated label (owned by the caller, cat_label_clear). */
int cat_label_parse(const char *kv, struct cat_label *ret);
void cat_label_clear(struct cat_label *l);

struct cat_snapshot {
    char *id;
    char *volume_id;            /* the source volume; it may no longer exist */
    char *volume_name;          /* read only: joined at read, NULL if the volume is gone */
    char *name;                 /* unique per volume */
    char *parent_id;            /* the volume's previous snapshot, or NULL */
    uint64_t created_ns;
    uint64_t size_bytes;
    uint64_t generation;        /* the backend's token (btrfs generation) */
    enum cat_snap_state state;
    char *origin;               /* "local" or the peer it came from; NULL on insert = "local" */
    char *k8s_namespace;        /* VolumeSnapshot namespace/name, or NULL */
    char *k8s_name;
    struct cat_label *labels;   /* sorted by key */
    size_t n_labels;
};
void cat_snapshot_free(struct cat_snapshot *s);

/* Insert the row and its labels. -EEXIST on a duplicate id or (volume,
 * name); -EINVAL on a bad label. The volume need not exist any more (a
 * replica's snapshot keeps its ids), but it normally does. When a snapshot
 * is deleted, its children's parent_id becomes its own parent_id. */
int cat_snapshot_add(struct catalog *cat, const struct cat_snapshot *s);
/* Overwrite name, parent_id, size_bytes, generation, state, origin and k8s
 * fields of row s->id (labels untouched). */
int cat_snapshot_update(struct catalog *cat, const struct cat_snapshot *s);
int cat_snapshot_set_state(struct catalog *cat, const char *id, enum cat_snap_state state);
/* Replace the labels of a snapshot with these (n may be 0). */
int cat_snapshot_set_labels(struct catalog *cat, const char *id,
                            const struct cat_label *labels, size_t n);
int cat_snapshot_delete(struct catalog *cat, const char *id);
int cat_snapshot_get(struct catalog *cat, const char *id, struct cat_snapshot **ret);
/* Resolve a user's reference: an id; "VOLREF@NAME" (VOLREF as in
 * cat_volume_find); or a bare NAME, within volume_id if given, else across
 * the pool (-ENOTUNIQ if several volumes have a snapshot of that name). */
int cat_snapshot_find(struct catalog *cat, const char *volume_id, const char *ref,
                      struct cat_snapshot **ret);
/* The volume's newest snapshot in state `ready` (the next one's parent). */
int cat_snapshot_latest(struct catalog *cat, const char *volume_id, struct cat_snapshot **ret);
/* Count the snapshots of a volume, or of the whole pool with volume_id
 * NULL (any state). */
int cat_snapshot_count(struct catalog *cat, const char *volume_id, uint64_t *ret);

struct cat_snapshot_filter {
    const char *volume_id;            /* NULL: any */
    const struct cat_label *labels;   /* all must match (AND) */
    size_t n_labels;                  /* <= CAT_FILTER_LABELS_MAX */
    const char *label_key;            /* NULL, or: has this key, any value */
    unsigned states;                  /* bit mask of 1u << CAT_SNAP_*; 0: any */
    const char *pvc_namespace;        /* NULL, or only snapshots of this
                                       * namespace's volumes or VolumeSnapshots */
};
struct cat_snapshot_list {
    struct cat_snapshot *items;
    size_t n;
    char *next;
};
void cat_snapshot_list_free(struct cat_snapshot_list *l);
int cat_snapshot_list(struct catalog *cat, const struct cat_snapshot_filter *f,
                      const struct cat_page *page, struct cat_snapshot_list *ret);
/* The newest snapshot (by created_ns, then id) of f->volume_id that f's
 * states and labels match and that was created before before_ns (0: any
 * time), in *ret (catalog-newest.c): one indexed query, whose cost does
 * not grow with the volume's snapshots. -ENOENT when none matches;
 * -EINVAL without a volume, or with label_key or pvc_namespace set. */
int cat_snapshot_newest(struct catalog *cat, const struct cat_snapshot_filter *f, uint64_t before_ns,
                        struct cat_snapshot **ret);

/* Why retention must keep a snapshot: returns 1 and sets *ret_reason (a
 * static string: "hold", "run", "export-base", "sync-base") if it is
 * labelled hold=true, carries a `run` label, is the newest finished export
 * of its volume to some repository, or is the newest snapshot a peer has
 * completely received; 0 if it may be pruned; negative errno on error. */
int cat_snapshot_protected(struct catalog *cat, const char *id, const char **ret_reason);

/* ---- intents: the crash-safety journal ----------------------------------- */

/* Well-known ops; the daemon may record others. */
#define CAT_OP_VOLUME_CREATE   "volume_create"
#define CAT_OP_VOLUME_DELETE   "volume_delete"
#define CAT_OP_SNAPSHOT_CREATE "snapshot_create"
#define CAT_OP_SNAPSHOT_DELETE "snapshot_delete"
#define CAT_OP_CLONE           "clone"
#define CAT_OP_REVERT          "revert"
#define CAT_OP_RESIZE          "resize"
#define CAT_OP_SYNC_RECEIVE    "sync_receive"
#define CAT_OP_EXPORT          "export"
#define CAT_OP_RESTORE         "restore"
#define CAT_OP_STORE_MOVE      "store_move"   /* target "store:<snapshot id>" */
#define CAT_OP_STORE_DROP      "store_drop"

struct cat_intent {
    int64_t id;                 /* increasing: replay in id order */
    char *op;
    char *target_id;            /* the object being changed; one intent per target */
    char *args;                 /* JSON text or NULL */
    char *step;                 /* the last point reached ("start" at first) */
    uint64_t created_ns;
    uint64_t updated_ns;
};
void cat_intent_free(struct cat_intent *i);
/* Record an intent (step "start"). -EBUSY if target_id already has one: an
 * operation on that object is in flight or awaits recovery. */
int cat_intent_add(struct catalog *cat, const char *op, const char *target_id,
                   const char *args_json, int64_t *ret_id);
/* Advance: set step and, if args_json is non-NULL, replace args. */
int cat_intent_update(struct catalog *cat, int64_t id, const char *step, const char *args_json);
int cat_intent_delete(struct catalog *cat, int64_t id);
int cat_intent_get(struct catalog *cat, int64_t id, struct cat_intent **ret);
int cat_intent_find_target(struct catalog *cat, const char *target_id, struct cat_intent **ret);
struct cat_intent_list {
    struct cat_intent *items;
    size_t n;
};
void cat_intent_list_free(struct cat_intent_list *l);
/* Every pending intent, oldest first (what recovery walks at start). */
int cat_intent_list(struct catalog *cat, struct cat_intent_list *ret);

/* ---- schedules ----------------------------------------------------------- */

struct cat_schedule {
    char *volume_id;            /* one schedule per volume; deleted with it */
    uint64_t every_ms;          /* > 0 */
    uint32_t keep, keep_hourly, keep_daily, keep_weekly;   /* 0: rule unused */
    uint64_t next_due_ns;
    uint64_t last_run_ns;       /* 0: never */
    uint64_t created_ns;
};
void cat_schedule_free(struct cat_schedule *s);
/* Insert or replace the volume's schedule. -ENOENT if the volume is absent. */
int cat_schedule_put(struct catalog *cat, const struct cat_schedule *s);
int cat_schedule_get(struct catalog *cat, const char *volume_id, struct cat_schedule **ret);
int cat_schedule_delete(struct catalog *cat, const char *volume_id);
/* Record a run: last_run_ns and the next due time. */
int cat_schedule_set_run(struct catalog *cat, const char *volume_id,
                         uint64_t last_run_ns, uint64_t next_due_ns);
struct cat_schedule_list {
    struct cat_schedule *items;
    size_t n;
};
void cat_schedule_list_free(struct cat_schedule_list *l);
/* Schedules ordered by next_due_ns; with due_before_ns > 0, only those due
 * at or before it. */
int cat_schedule_list(struct catalog *cat, uint64_t due_before_ns, struct cat_schedule_list *ret);

/* ---- exports ------------------------------------------------------------- */

enum cat_export_state {
    CAT_EXPORT_RUNNING,
    CAT_EXPORT_DONE,
    CAT_EXPORT_FAILED,
    _CAT_EXPORT_STATE_MAX,
    _CAT_EXPORT_STATE_INVALID = -1,
};
const char *cat_export_state_to_string(enum cat_export_state s);

struct cat_export {
    int64_t id;
    char *snapshot_id;          /* deleted with the snapshot */
    char *volume_id;            /* read only: the snapshot's volume */
    char *repo;                 /* repository URL, credentials stripped */
    char *manifest_id;          /* NULL until known */
    enum cat_export_state state;
    uint64_t created_ns;
    uint64_t finished_ns;       /* 0 while running */
};
void cat_export_free(struct cat_export *e);
/* One row per (snapshot, repo): -EEXIST if there is one (update it). */
int cat_export_add(struct catalog *cat, const char *snapshot_id, const char *repo, int64_t *ret_id);
/* Set state and (if non-NULL) the manifest id; DONE/FAILED stamp finished_ns. */
int cat_export_update(struct catalog *cat, int64_t id, enum cat_export_state state,
                      const char *manifest_id);
int cat_export_delete(struct catalog *cat, int64_t id);
int cat_export_find(struct catalog *cat, const char *snapshot_id, const char *repo,
                    struct cat_export **ret);
/* The newest DONE export of the volume to repo: the base of the next
 * incremental export. */
int cat_export_latest(struct catalog *cat, const char *volume_id, const char *repo,
                      struct cat_export **ret);
struct cat_export_list {
    struct cat_export *items;
    size_t n;
};
void cat_export_list_free(struct cat_export_list *l);
/* Exports of one snapshot, or of every snapshot if snapshot_id is NULL. */
int cat_export_list(struct catalog *cat, const char *snapshot_id, struct cat_export_list *ret);

/* ---- per-pod API sockets ------------------------------------------------- */

struct cat_pod_socket {
    char *target_path;          /* NodePublishVolume target: the key */
    char *volume_handle;        /* the ephemeral volume's id from kubelet */
    char *socket_path;
    char *pod_namespace;
    char *pod_name;
    char *pod_uid;
    uint64_t created_ns;
};
void cat_pod_socket_free(struct cat_pod_socket *p);
/* -EEXIST if target_path is recorded (compare it for idempotency). */
int cat_pod_socket_add(struct catalog *cat, const struct cat_pod_socket *p);
int cat_pod_socket_get(struct catalog *cat, const char *target_path, struct cat_pod_socket **ret);
int cat_pod_socket_delete(struct catalog *cat, const char *target_path);
struct cat_pod_socket_list {
    struct cat_pod_socket *items;
    size_t n;
};
void cat_pod_socket_list_free(struct cat_pod_socket_list *l);
int cat_pod_socket_list(struct catalog *cat, struct cat_pod_socket_list *ret);

/* ---- peers, publications, subscriptions, sync progress (catalog-peer.c) -- */

struct cat_peer {
    char *name;                 /* name_validate() */
    char *address;              /* HOST:PORT */
    char *fingerprint;          /* "sha256:<hex>" or NULL when trusted by CA */
    bool allow_push;
    uint64_t created_ns;
};
void cat_peer_free(struct cat_peer *p);
int cat_peer_add(struct catalog *cat, const struct cat_peer *p);
/* Overwrite address, fingerprint and allow_push of p->name. */
int cat_peer_update(struct catalog *cat, const struct cat_peer *p);
/* Delete a peer and, with it, its publications, subscriptions and sync
 * progress. */
int cat_peer_delete(struct catalog *cat, const char *name);
int cat_peer_get(struct catalog *cat, const char *name, struct cat_peer **ret);
/* The peer pinned to this fingerprint (TLS verification callback). */
int cat_peer_find_fingerprint(struct catalog *cat, const char *fingerprint, struct cat_peer **ret);
struct cat_peer_list {
    struct cat_peer *items;
    size_t n;
};
void cat_peer_list_free(struct cat_peer_list *l);
int cat_peer_list(struct catalog *cat, struct cat_peer_list *ret);

/* Publish a volume to a peer or to "*" (every peer). Idempotent: publishing
 * twice is 0. -ENOENT if the volume or the (non-"*") peer is absent. */
int cat_publish(struct catalog *cat, const char *volume_id, const char *peer);
/* -ENOENT if it was not published to exactly that peer (or "*"). */
int cat_unpublish(struct catalog *cat, const char *volume_id, const char *peer);
/* 1 if the volume is published to peer or to "*", 0 if not. */
int cat_is_published(struct catalog *cat, const char *volume_id, const char *peer);
struct cat_publication {
    char *volume_id;
    char *peer;                 /* a peer name or "*" */
    uint64_t created_ns;
};
struct cat_publication_list {
    struct cat_publication *items;
    size_t n;
};
void cat_publication_list_free(struct cat_publication_list *l);
/* Publications of one volume, or all if volume_id is NULL. */
int cat_publication_list(struct catalog *cat, const char *volume_id, struct cat_publication_list *ret);

struct cat_subscription {
    char *peer;
    char *remote_volume;        /* name or id on the peer */
    char *local_name;           /* the replica's name here (unique) */
    char *local_volume_id;      /* NULL until the replica exists */
    uint64_t every_ms;          /* 0: only on notification */
    uint64_t last_sync_ns;      /* 0: never */
    char *last_error;           /* NULL after a success */
    uint64_t created_ns;
};
void cat_subscription_free(struct cat_subscription *s);
/* -EEXIST for a second subscription to (peer, remote_volume) or a taken
 * local_name; -ENOENT if the peer is absent. */
int cat_subscription_add(struct catalog *cat, const struct cat_subscription *s);
/* Overwrite local_volume_id, every_ms, last_sync_ns, last_error. */
int cat_subscription_update(struct catalog *cat, const struct cat_subscription *s);
int cat_subscription_delete(struct catalog *cat, const char *peer, const char *remote_volume);
int cat_subscription_get(struct catalog *cat, const char *peer, const char *remote_volume,
                         struct cat_subscription **ret);
struct cat_subscription_list {
    struct cat_subscription *items;
    size_t n;
};
void cat_subscription_list_free(struct cat_subscription_list *l);
/* Subscriptions to one peer, or all if peer is NULL. */
int cat_subscription_list(struct catalog *cat, const char *peer, struct cat_subscription_list *ret);

enum cat_sync_dir { CAT_SYNC_SEND, CAT_SYNC_RECEIVE };
/* Resume state of one snapshot's transfer with one peer. */
struct cat_sync_progress {
    char *peer;
    enum cat_sync_dir dir;
    char *snapshot_id;
    char *volume_id;            /* the local volume (source or replica) */
    uint64_t acked_offset;      /* bytes of the changed-extent stream acknowledged */
    void *digest_state;         /* opaque running digest, or NULL */
    size_t digest_len;          /* <= 4096 */
    bool complete;              /* the peer holds the whole snapshot */
    uint64_t updated_ns;
};
void cat_sync_progress_free(struct cat_sync_progress *p);
/* Insert or replace (peer, dir, snapshot_id). -ENOENT if the peer is absent. */
int cat_sync_progress_put(struct catalog *cat, const struct cat_sync_progress *p);
int cat_sync_progress_get(struct catalog *cat, const char *peer, enum cat_sync_dir dir,
                          const char *snapshot_id, struct cat_sync_progress **ret);
int cat_sync_progress_delete(struct catalog *cat, const char *peer, enum cat_sync_dir dir,
                             const char *snapshot_id);
/* The newest complete snapshot of volume_id exchanged with peer in dir (by
 * the snapshot's created_ns): the base of the next incremental transfer. */
int cat_sync_progress_latest(struct catalog *cat, const char *peer, enum cat_sync_dir dir,
                             const char *volume_id, struct cat_sync_progress **ret);

/* ---- the snapshot store's facts (catalog-store.c) -------------------------
 * Per snapshot: the manifest of its copy in the pool's local object store
 * (snapd/store/), whether its subvolume is resident, and its exact changed
 * extents against its parent (the blocks whose content differs; without a
 * parent: its non-zero blocks). A snapshot without a row is resident, not
 * stored, and has no exact extents yet. Deleting the snapshot deletes it. */

struct cat_range {
    uint64_t off, len;
};

struct cat_store_info {
    char *snapshot_id;
    char *volume_id;
    char *manifest;             /* NULL: not in the local store */
    bool resident;
    bool has_extents;
    bool has_own_extents;       /* against a tombstone (catalog-store.c) */
};
void cat_store_info_clear(struct cat_store_info *i);
/* The row of one snapshot (defaults when it has none). -ENOENT if the
 * snapshot does not exist. */
int cat_store_get(struct catalog *cat, const char *snapshot_id, struct cat_store_info *ret);
int cat_store_set_manifest(struct catalog *cat, const char *snapshot_id, const char *manifest);
int cat_store_set_resident(struct catalog *cat, const char *snapshot_id, bool resident);
/* Replace the exact extents (ascending, not overlapping; n may be 0). */
int cat_store_set_extents(struct catalog *cat, const char *snapshot_id,
                          const struct cat_range *v, size_t n);
/* -ENOENT when none are recorded. *ret malloc'd (NULL when n is 0). */
int cat_store_get_extents(struct catalog *cat, const char *snapshot_id,
                          struct cat_range **ret, size_t *ret_n);
/* Snapshots in state ready not yet stored, oldest first (at most limit). */
int cat_store_backlog(struct catalog *cat, size_t limit, char ***ret_ids);
/* Stored, resident, ready snapshots that are not among the `keep` newest
 * ready snapshots of their volume and whose child has exact extents: the
 * subvolumes the store may drop. */
int cat_store_droppable(struct catalog *cat, uint32_t keep, char ***ret_ids);
/* Every row (recovery compares them with the pool). */
int cat_store_list(struct catalog *cat, struct cat_store_info **ret, size_t *ret_n);
/* Counts: resident snapshots, stored ones, and ready ones not yet stored. */
int cat_store_counts(struct catalog *cat, uint64_t *ret_resident, uint64_t *ret_stored,
                     uint64_t *ret_backlog);
/* The resident ready snapshot of a volume nearest in time to created_ns,
 * other than except_id; -ENOENT if none. */
int cat_store_nearest_resident(struct catalog *cat, const char *volume_id, uint64_t created_ns,
                               const char *except_id, char **ret_id);
/* The child of a snapshot (the one whose parent it is), -ENOENT if none. */
int cat_store_child(struct catalog *cat, const char *snapshot_id, char **ret_id);
/* A snapshot's exact extents against the chain's previous member (a
 * tombstone or its parent): own_extents, else extents; -ENOENT if none. */
int cat_store_get_own_extents(struct catalog *cat, const char *snapshot_id,
                              struct cat_range **ret, size_t *ret_n);
int cat_store_set_own_extents(struct catalog *cat, const char *snapshot_id,
                              const struct cat_range *v, size_t n);

/* Tombstones: a deleted snapshot's place in its volume's chain (never
 * listed, never cloned or restored; collected when no later snapshot of
 * the volume remains), with its exact extents against the chain's previous
 * member (has_extents false: none were recorded, --store-off). */
struct cat_tombstone {
    char *id;
    char *volume_id;
    uint64_t created_ns;
    uint64_t size_bytes;
    bool has_extents;
};
void cat_tombstone_clear(struct cat_tombstone *t);
void cat_tombstone_list_free(struct cat_tombstone *v, size_t n);
/* Insert or replace; v NULL: no extents recorded. */
int cat_tombstone_put(struct catalog *cat, const struct cat_tombstone *t,
                      const struct cat_range *v, size_t n);
int cat_tombstone_get(struct catalog *cat, const char *id, struct cat_tombstone *ret);
/* -ENOENT when it has none (or does not exist). */
int cat_tombstone_get_extents(struct catalog *cat, const char *id, struct cat_range **ret,
                              size_t *ret_n);
int cat_tombstone_delete(struct catalog *cat, const char *id);
/* A volume's tombstones, oldest first. */
int cat_tombstone_list(struct catalog *cat, const char *volume_id, struct cat_tombstone **ret,
                       size_t *ret_n);

/* ---- cluster copy jobs (catalog-cluster.c) -------------------------------- */

/* A copy job of snapd/cluster/jobs.c that has not finished (the row goes
 * when it does): started again at the next start. */
struct cat_cluster_job {
    char *name;                 /* the volume being made (the key) */
    char *source_node, *source_snapshot, *source_volume;
    char *pvc_namespace, *pvc_name, *fs_type, *params;
    uint64_t size_bytes, started_ns;
    uint32_t attempts;
};
void cat_cluster_job_clear(struct cat_cluster_job *j);
/* Make the table if it is missing (cluster mode's start). */
int cat_cluster_jobs_open(struct catalog *cat);
/* Insert or overwrite the row of j->name. */
int cat_cluster_job_put(struct catalog *cat, const struct cat_cluster_job *j);
/* Delete it (0 also when absent). */
int cat_cluster_job_delete(struct catalog *cat, const char *name);
/* Every row, oldest first; caller clears each and frees the array. */
int cat_cluster_job_list(struct catalog *cat, struct cat_cluster_job **ret, size_t *n);

#endif
