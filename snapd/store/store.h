/* store.h: the snapshot store: history off the live volume.
 *
 * What it owns: the pool's local object-store repository
 * (POOL/.amber/store, fs backend, its random passphrase in
 * POOL/.amber/store.key, 0600), the mover thread that copies each snapshot
 * into it (oldest first per volume, each an incremental export on its
 * parent's manifest) and then drops the btrfs subvolumes of snapshots that
 * are not among the K newest of their volume, the exact changed extents of
 * every stored snapshot (catalog table snapshot_store, catalog-store.c),
 * the bringing back of a dropped snapshot for a reader (hydration), and
 * the background defragmenter of live images. Design, numbers and the
 * invariants it keeps: snapd/store/README.md.
 *
 * What it may call: the pool (pool.h), the catalog (catalog.h), objstore.h,
 * and daemon.h's shared pieces (op errors, crash points). The operations in
 * ops-*.c, archive.c and sync/ call it; it never calls them.
 *
 * Threads: one mover thread; the serving calls (hydrate, diff, delete
 * hooks) run on the callers' threads and are safe beside it. */
#ifndef AMBER_SNAPD_STORE_H
#define AMBER_SNAPD_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "amber/objstore.h"
#include "snapd/daemon.h"

#define STORE_RELPATH ".amber/store"
#define STORE_KEY_RELPATH ".amber/store.key"
#define STORE_RESIDENT_DEFAULT 2u
/* Defragment a live image when it has more extents than this per GiB. */
#define STORE_DEFRAG_THRESHOLD_DEFAULT 4096u

struct store_opts {
    bool off;                   /* no mover (today's behaviour); stored snapshots still served */
    uint32_t resident;          /* K: snapshots per volume kept as subvolumes, >= 1 */
    bool defrag;                /* run the background defragmenter */
    uint64_t defrag_threshold;  /* extents per GiB that start it */
    bool defrag_sweep;          /* a full sweep of an image once its snapshots stop */
};

/* Open (first time: make) the local store, before recovery (which may
 * need it). With o->off the repository is only opened if it exists.
 * Returns 0 or -errno (logged). */
int store_start(struct amberd *d, const struct store_opts *o);
/* After recovery: reconcile residency with the pool, start the mover. */
int store_run(struct amberd *d);
/* The daemon is stopping: the mover stops at its next step and every
 * `store status --wait` returns, so the RPC server's handlers end. */
void store_interrupt(struct amberd *d);
/* Stop the mover (after the RPC server, before the catalog closes). */
void store_stop(struct amberd *d);
/* Wake the mover: a snapshot was made, something was freed or released. */
void store_kick(struct amberd *d);
/* The gate: a snapshot create brackets its pool snapshot (and the catalog
 * commits around it) with these. While one is open the mover's background
 * work (exports, subvolume drops, defragmenter steps, gc) pauses at its
 * next step boundary, so the snapshot's transaction commit carries none of
 * it. Nesting and concurrent creates are fine (a count). */
void store_create_begin(struct amberd *d);
void store_create_end(struct amberd *d);

/* At start, before store_start: finish a store intent left by a crash
 * (recover.c calls it for ops starting with "store_"); 0 or -errno. */
int store_recover_intent(struct amberd *d, const struct cat_intent *in);
/* At start: make the catalog's resident flags match the pool. */
void store_reconcile(struct amberd *d);

/* --- serving snapshots whatever their residency ------------------------- */

/* Make snapshot S resident (bring it back from the store if its subvolume
 * was dropped: objstore_restore into a new read-only subvolume) and pin it
 * so the mover leaves it until store_release. 0 or -errno with E set. */
int store_hydrate(struct amberd *d, const struct cat_snapshot *s, struct op_err *e);
/* Unpin (the mover may drop the subvolume again). */
void store_release(struct amberd *d, const char *snapshot_id);

/* The changed extents from snapshot FROM to snapshot TO (TO NULL: the live
 * volume VOL_ID), both of one volume: the recorded exact extents of every
 * stored snapshot after FROM up to TO, and the pool's diff from the newest
 * of them to TO for the resident tail. With FROM NULL: TO's allocated
 * extents. *ret_method: "store" when recorded extents were used, else the
 * pool's method. Returns 0, the callback's non-zero value, or -errno. */
int store_diff(struct amberd *d, const struct cat_snapshot *from, const struct cat_snapshot *to,
               const char *vol_id, pool_extent_cb cb, void *userdata, const char **ret_method);

/* Bytes changed from PREV (the snapshot before S in its volume's chain;
 * NULL: S is the first, count what it holds) to S, for the history view:
 * the recorded exact extents when S has them (*ret_method "store"), else
 * the pool's diff or allocation. */
int store_changed_bytes(struct amberd *d, const struct cat_snapshot *prev,
                        const struct cat_snapshot *s, uint64_t *ret_bytes, const char **ret_method);

/* A snapshot's bytes for a reader (export, peer sync): its resident image,
 * or (repository format 2) objstore_read from the store, or (format 1)
 * the snapshot brought back. */
struct store_reader;
int store_reader_open(struct amberd *d, const struct cat_snapshot *s, struct store_reader **ret,
                      struct op_err *e);
/* Read LEN bytes at OFF (past the image's end: zeros). 0 or -errno. */
int store_reader_pread(struct store_reader *r, void *buf, size_t len, uint64_t off);
/* The image's fd for readers that need one (objstore_export), or -1 when
 * the bytes come from the store (open the reader with store_reader_open_fd
 * to always get an image). */
int store_reader_fd(const struct store_reader *r);
int store_reader_open_fd(struct amberd *d, const struct cat_snapshot *s, struct store_reader **ret,
                         struct op_err *e);
void store_reader_close(struct store_reader *r);

/* Export snapshot S to repository DST by copying it from the local store
 * (objstore_copy: the manifest, map nodes and pieces DST lacks, no volume
 * read) when its subvolume was dropped and the repository format has it
 * (2); -EOPNOTSUPP otherwise (export it from its image). */
int store_copy_to(struct amberd *d, const struct cat_snapshot *s, struct objstore *dst,
                  objstore_progress_fn progress, void *progress_ud, const atomic_bool *cancel,
                  struct objstore_export_result *res);

/* snap_delete calls this after its intent and before the pool delete: it
 * leaves a tombstone of S with S's own exact extents, keeps the child's own
 * extents against S and makes its extents the union with S's (computing
 * what is missing while S is resident), so the chain stays exact without S
 * and a diff from S stays exact (store-diff.c). Idempotent (recovery may
 * run it again). */
int store_snapshot_deleting(struct amberd *d, const struct cat_snapshot *s);
/* A deleted snapshot's tombstone as a snapshot record (state deleting, no
 * parent) that store_diff takes as the base of a diff; -ENOENT if none. */
int store_tombstone_find(struct amberd *d, const char *id, struct cat_snapshot **ret);
/* After the row is gone: forget S's manifest in the local store. */
void store_snapshot_deleted(struct amberd *d, const char *manifest);

struct store_status {
    bool enabled;               /* the mover runs */
    uint32_t resident_keep;     /* K */
    uint64_t resident, stored, backlog;
    uint64_t moved, dropped, hydrated, defrag_steps, defrag_bytes;
    uint64_t blocked;           /* snapshots waiting for room in the pool */
    bool idle;                  /* the last pass found nothing it could do */
    uint64_t gate_pauses;       /* the mover paused for a snapshot create */
    uint64_t defrag_sweeps;     /* full defragmenter sweeps of a volume's image */
    bool settled;               /* idle, and no defragmenter step, sweep or paced drop left */
    /* Hydration: bytes written (and punched) into brought-back images; the
     * summed union sizes of those that rewrote only their union; how many
     * restored the whole image instead. */
    uint64_t hydrate_written, hydrate_union, hydrate_full;
};
/* The store's counters; with WAIT, first wait (up to TIMEOUT_MS) until a
 * full pass of the mover started after this call found nothing to do
 * (with SETTLE also nothing for the defragmenter: no sweep due or running,
 * no drop waiting for the cleaner): -ETIMEDOUT otherwise. */
int store_status_settle(struct amberd *d, bool wait, bool settle, uint64_t timeout_ms,
                        struct store_status *ret);
static inline int store_status(struct amberd *d, bool wait, uint64_t timeout_ms, struct store_status *ret)
{
    return store_status_settle(d, wait, false, timeout_ms, ret);
}

/* api-store.c: amber.v1.Amber/StoreStatus on the node socket. */
extern const struct rpc_method store_api_methods[];
extern const size_t store_api_methods_n;

#endif
