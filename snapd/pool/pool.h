/* pool.h: the pool, Amber's storage mechanism (snapd-internal).
 *
 * A pool is a directory on a mounted filesystem. Its layout:
 *   DIR/.amber/pool.json   backend and format version (written once)
 *   DIR/.amber/lock        flock'd by the one process serving the pool
 *   DIR/.amber/catalog.db  the catalog (catalog.c, not this module)
 *   DIR/vols/<vol>/disk    a volume: a subvolume (btrfs) or directory (xfs)
 *                          holding one sparse image file
 *   DIR/snaps/<vol>/<snap>/disk   a snapshot: a read-only subvolume snapshot
 *                          (btrfs) or a directory with a reflinked copy (xfs)
 * Names starting with '.' inside vols/ and snaps/<vol>/ are work in
 * progress (".new-X", ".del-X") and are finished or removed by pool_open,
 * so every step on disk is either done or absent after a crash.
 *
 * This module knows nothing of the catalog, gRPC or names given by users:
 * <vol> and <snap> are ids that pass name_validate() (the catalog uses
 * uuids). It never logs above debug; every call that can fail returns a
 * negative errno. The pool is not thread-safe: the daemon serialises calls
 * that touch the same volume (btrfs itself serialises what must be).
 *
 * The second half of this header is the backend interface, for
 * pool-btrfs.c and pool-xfs.c only. */
#ifndef AMBER_SNAPD_POOL_H
#define AMBER_SNAPD_POOL_H

#include <stdbool.h>
#include <stdint.h>

#define POOL_FORMAT_VERSION 1
/* Volume sizes are multiples of this (the loop devices' block size). */
#define POOL_ALIGN 4096u

struct pool;
struct pool_image;

struct pool_open_opts {
    /* "btrfs", "xfs" or NULL. A new pool takes it (NULL: btrfs if the
     * filesystem is btrfs, else xfs if it is xfs with reflink); an existing
     * pool must match what it recorded (-EMEDIUMTYPE otherwise). */
    const char *backend;
    /* Free space the pool keeps back: volume creation and growth are
     * refused with -ENOSPC once free space is below it. 0: the default,
     * max(64 MiB, 2 % of the filesystem). */
    uint64_t reserve_bytes;
    /* XFS only: refuse a snapshot (-E2BIG) of an image with more extents
     * than this, since a reflink blocks the volume's writers for its whole
     * duration (~22 µs an extent). 0: the default, 65536 (~1.5 s). */
    uint64_t max_extents;
};

/* --- the embedded default: a pool on a file-backed image ---------------- */

/* Make IMAGE (first time: a sparse file of SIZE bytes formatted with FS,
 * "btrfs" or "xfs"; mkfs runs on a temporary name that is renamed into
 * place, so an existing IMAGE is always formatted), attach it to a loop
 * device and mount it at MOUNTPOINT (created if missing). A loop device
 * already backed by IMAGE, and a mount of that device at MOUNTPOINT, left
 * by an earlier run, are adopted. SIZE is ignored for an existing image.
 * *ret owns what was attached and mounted. Returns 0 or -errno; on
 * failure nothing it made is left attached or mounted. */
int pool_image_setup(const char *image, uint64_t size, const char *mountpoint,
                     const char *fs, struct pool_image **ret);
/* The loop device (e.g. "/dev/loop3") and mount point of IMG. */
const char *pool_image_device(const struct pool_image *img);
const char *pool_image_mountpoint(const struct pool_image *img);
/* Unmount and detach exactly the device and mount IMG holds (by device
 * path), then free IMG. Accepts NULL. Returns 0 or the first -errno (the
 * rest is still attempted; IMG is freed either way). */
int pool_image_teardown(struct pool_image *img);

/* --- the pool ------------------------------------------------------------ */

/* Open (or initialise) the pool at DIR, a directory on a mounted btrfs or
 * XFS filesystem. Creates DIR/.amber, records the backend on first use,
 * takes the pool's lock, and finishes or removes work left half done by a
 * crash. Returns 0 with *ret, -EBUSY when another process (or another
 * pool_open in this one) holds the pool, -EMEDIUMTYPE on a backend or
 * filesystem mismatch, -EPROTONOSUPPORT for a newer format, -EOPNOTSUPP
 * for XFS without reflink, or -errno. OPTS may be NULL. */
int pool_open(const char *dir, const struct pool_open_opts *opts, struct pool **ret);
/* Release the lock and free P. Accepts NULL. */
void pool_close(struct pool *p);

const char *pool_dir(const struct pool *p);
const char *pool_backend_name(const struct pool *p);

struct pool_space {
    uint64_t total;     /* filesystem size */
    uint64_t free;      /* available to new data */
    uint64_t reserve;   /* kept back (see pool_open_opts) */
};
int pool_get_space(struct pool *p, struct pool_space *ret);

/* --- volumes ------------------------------------------------------------- */

/* Create volume VOL of SIZE bytes (> 0, a multiple of POOL_ALIGN): an
 * empty sparse image, No_COW on btrfs. Thin: SIZE may exceed the free
 * space, but -ENOSPC when SIZE exceeds the filesystem's size less the
 * reserve, or free space is already below the reserve. -EEXIST when VOL
 * exists, -EINVAL on a bad id or size. On failure nothing is left. */
int pool_vol_create(struct pool *p, const char *vol, uint64_t size);
/* Delete VOL. -EBUSY while a loop device is attached to it; -ENOENT.
 * Its snapshots are not touched (they are independent). */
int pool_vol_delete(struct pool *p, const char *vol);
/* Grow VOL to NEW_SIZE (same rules as create; -EINVAL when smaller;
 * equal is a no-op). An attached loop device learns the new size. */
int pool_vol_resize(struct pool *p, const char *vol, uint64_t new_size);
/* New volume NEW_VOL from snapshot SNAP of volume VOL: a writable
 * snapshot (btrfs, O(1)) or a reflinked copy (xfs). Same failure rules as
 * create (-EEXIST, -ENOENT, nothing left behind). */
int pool_vol_clone(struct pool *p, const char *vol, const char *snap, const char *new_vol);
/* Replace VOL's content with snapshot SNAP's (of the same volume). The
 * switch is one atomic rename (RENAME_EXCHANGE): a crash leaves the old or
 * the new, never neither. -EBUSY while VOL is attached. After a revert,
 * older snapshots of VOL diff against it by comparing mappings (slower),
 * see pool_diff. */
int pool_vol_revert(struct pool *p, const char *vol, const char *snap);

struct pool_file_info {
    uint64_t size;       /* the image's size in bytes */
    uint64_t allocated;  /* bytes allocated to it (st_blocks; shared extents count fully) */
    uint64_t generation; /* snapshots: the diff token (btrfs transid; 0 on xfs) */
    char *device;        /* the attached loop device, or NULL; caller frees */
};
/* Facts on VOL (SNAP NULL) or on its snapshot SNAP. -ENOENT. */
int pool_stat(struct pool *p, const char *vol, const char *snap, struct pool_file_info *ret);
/* The path of VOL's (or snapshot SNAP's) image, malloc'd; no check. */
char *pool_disk_path(struct pool *p, const char *vol, const char *snap);

/* --- snapshots ----------------------------------------------------------- */

/* Snapshot VOL as SNAP: read-only and O(1) on btrfs; a reflinked copy on
 * xfs (-E2BIG over the extent guard). *ret_generation (may be NULL) gets
 * the token identifying the snapshot's point in the filesystem's history
 * (btrfs: the transaction it was made in; xfs: 0). -EEXIST, -ENOENT.
 * On failure nothing is left. */
int pool_snap_create(struct pool *p, const char *vol, const char *snap, uint64_t *ret_generation);
/* Delete snapshot SNAP of VOL. -EBUSY while attached; -ENOENT. */
int pool_snap_delete(struct pool *p, const char *vol, const char *snap);

/* Build snapshot SNAP of VOL from bytes written by the caller (the snapshot
 * store brings back a snapshot whose subvolume was dropped): make a new
 * container snaps/VOL/.new-SNAP with an empty sparse image of SIZE bytes
 * (No_COW on btrfs) and return it opened O_RDWR in *ret_fd (the caller
 * closes it). pool_snap_build_commit then syncs it, makes it read-only and
 * renames it into place (RENAME_NOREPLACE, -EEXIST if SNAP exists);
 * pool_snap_build_abort removes it. A crash in between leaves a dot-name
 * that pool_open removes. VOL need not exist any more. -ENOSPC as create. */
int pool_snap_build(struct pool *p, const char *vol, const char *snap, uint64_t size, int *ret_fd);
/* The same, but the new image starts as a writable snapshot of snapshot
 * BASE of VOL (btrfs: O(1), sharing every extent; xfs: a reflinked copy),
 * sized to SIZE: the caller then rewrites only what differs. */
int pool_snap_build_from(struct pool *p, const char *vol, const char *snap, const char *base,
                         uint64_t size, int *ret_fd);
int pool_snap_build_commit(struct pool *p, const char *vol, const char *snap);
void pool_snap_build_abort(struct pool *p, const char *vol, const char *snap);

/* --- listing (for reconciliation with the catalog) ----------------------- */

/* Ids present on disk, as a NULL-terminated malloc'd array of malloc'd
 * strings, sorted: volumes (VOL NULL) or the snapshots of VOL (an empty
 * list when it has none). Work-in-progress names are never listed. */
int pool_list(struct pool *p, const char *vol, char ***ret);
/* Volumes that have a snapshot directory (possibly of deleted volumes). */
int pool_list_snap_owners(struct pool *p, char ***ret);
void pool_strv_free(char **v);

/* --- extents ------------------------------------------------------------- */

/* Called once per range, in increasing order, ranges never adjacent or
 * overlapping. A non-zero return stops the walk and is returned. */
typedef int (*pool_extent_cb)(uint64_t offset, uint64_t length, void *userdata);

struct pool_diff_stats {
    const char *method;  /* "generation" or "mapping" */
    uint64_t extents;    /* ranges reported */
    uint64_t bytes;      /* bytes reported */
};

/* The byte ranges of VOL's image that may differ between snapshot FROM
 * and snapshot TO (TO NULL: the live volume). Never misses a changed byte
 * (a missed change would corrupt incremental backups); may report
 * unchanged bytes (false positives: blocks rewritten with the same data,
 * preallocation). Bytes past an image's end count as zeros: after a
 * resize, the grown part is reported only where written.
 * btrfs: extent items newer than the older snapshot's generation
 * (tree search, O(changed)) plus ranges that became holes (discard),
 * when FROM and TO descend from the same live subvolume; otherwise (after
 * a revert) it compares the two files' physical mappings (FIEMAP, O(all
 * extents)), as xfs always does. With TO NULL, in-flight writes may or
 * may not be seen: diff two snapshots for a stable answer.
 * STATS may be NULL. Returns 0, the callback's non-zero value, or -errno. */
int pool_diff(struct pool *p, const char *vol, const char *from, const char *to,
              pool_extent_cb cb, void *userdata, struct pool_diff_stats *stats);

/* The allocated (data) ranges of VOL's image (SNAP NULL) or of its
 * snapshot SNAP, for a first full export: everything else reads zeros. */
int pool_allocated(struct pool *p, const char *vol, const char *snap,
                   pool_extent_cb cb, void *userdata);

/* --- defragmenting the live image ------------------------------------------ */

/* Extents of VOL's live image within [OFF, OFF+LEN) (FIEMAP, no flush):
 * *ret_n, and how many of them a snapshot shares (*ret_shared). */
int pool_vol_extents(struct pool *p, const char *vol, uint64_t off, uint64_t len,
                     uint64_t *ret_n, uint64_t *ret_shared);
/* Rewrite [OFF, OFF+LEN) of VOL's live image into few extents (btrfs:
 * BTRFS_IOC_DEFRAG_RANGE, flushed). Extents a snapshot shares are copied,
 * so this costs their size in free space until the snapshot goes; the
 * rewritten extents are newer than every snapshot, so No_COW writes land
 * in place again. -EOPNOTSUPP on xfs. */
int pool_vol_defrag(struct pool *p, const char *vol, uint64_t off, uint64_t len);

/* --- attach ---------------------------------------------------------------- */

/* Attach VOL's image (SNAP NULL, read-write) or snapshot SNAP's (read-only)
 * to a loop device with direct I/O. Idempotent: returns the device already
 * attached, also after a daemon restart. *ret_dev malloc'd. */
int pool_attach(struct pool *p, const char *vol, const char *snap, char **ret_dev);
/* Detach it. 0 also when it was not attached; -EBUSY when mounted;
 * -EINPROGRESS when a process still holds it open (detached at its last
 * close). */
int pool_detach(struct pool *p, const char *vol, const char *snap);

/* --- application-consistent snapshots --------------------------------------- */

/* Freeze the filesystem mounted from block device DEV (FIFREEZE), call
 * FN(USERDATA), thaw (FITHAW). A watchdog thaws after TIMEOUT_MS even if
 * FN has not returned; then this returns -ETIMEDOUT once FN returns (its
 * result cannot be trusted as consistent). -ENOENT when DEV is not
 * mounted. Otherwise returns FN's result. */
int pool_freeze_run(const char *dev, uint64_t timeout_ms, int (*fn)(void *), void *userdata);
/* Thaw whatever is mounted from DEV; for a daemon restarting after a crash
 * during a freeze. 0 also when it was not frozen. */
int pool_thaw_device(const char *dev);

/* ========================================================================= *
 * Backend interface: pool.c does the layout, locking, naming and checks;
 * a backend does what differs per filesystem. Paths are relative to the
 * pool's directory fd, names are single components.
 * ========================================================================= */

struct range_list;

struct pool_backend_ops {
    const char *name;
    /* statfs f_type this backend serves. */
    long fs_magic;
    /* Whether image files get No_COW (and it is verified). */
    bool nocow;
    /* Check the filesystem can serve (e.g. xfs reflink). */
    int (*check)(struct pool *p);
    /* Make an empty volume container NAME in directory DIRFD. */
    int (*container_create)(struct pool *p, int dirfd, const char *name);
    /* Remove container NAME (a volume or snapshot with its image) from
     * DIRFD, whatever its state; -ENOENT when absent. */
    int (*container_remove)(struct pool *p, int dirfd, const char *name);
    /* Snapshot container SRC (a volume or a snapshot) as NAME in DSTDIRFD,
     * read-only or writable. *ret_gen: see pool_snap_create. */
    int (*snapshot)(struct pool *p, int srcfd, int dstdirfd, const char *name,
                    bool readonly, uint64_t *ret_gen);
    /* The generation token of a snapshot container (0 if none). */
    int (*generation)(struct pool *p, int containerfd, uint64_t *ret);
    /* Add to OUT the ranges that may differ between the images in the
     * containers FROMFD (a snapshot) and TOFD (a snapshot or the live
     * volume, TO_LIVE); STATS->method is set. */
    int (*diff)(struct pool *p, int fromfd, int tofd, bool to_live,
                struct range_list *out, struct pool_diff_stats *stats);
    /* Make container NAME in DIRFD read-only (a built snapshot); NULL: no-op. */
    int (*seal)(struct pool *p, int dirfd, const char *name);
    /* Rewrite [off, off+len) of the image FD contiguously (defragment),
     * flushing; NULL: -EOPNOTSUPP. */
    int (*defrag)(struct pool *p, int fd, uint64_t off, uint64_t len);
};

extern const struct pool_backend_ops pool_backend_btrfs;
extern const struct pool_backend_ops pool_backend_xfs;

struct pool {
    char *dir;
    int dirfd;
    int lockfd;
    const struct pool_backend_ops *ops;
    uint64_t reserve_bytes;
    uint64_t max_extents;
    bool no_holes;  /* btrfs NO_HOLES feature: holes leave no item */
};

/* The image's file name inside a container. */
#define POOL_DISK "disk"

/* --- pool-extents.c: range lists and extent maps ---------------------------- */

struct range { uint64_t off, len; };
struct range_list { struct range *v; size_t n, cap; };

void range_add(struct range_list *l, uint64_t off, uint64_t len);
/* Sort, merge overlapping and adjacent ranges, clip to [0, limit). */
void range_normalize(struct range_list *l, uint64_t limit);
void range_list_free(struct range_list *l);
/* Emit L's ranges to CB; fill stats->extents/bytes if STATS. */
int range_emit(const struct range_list *l, pool_extent_cb cb, void *userdata,
               struct pool_diff_stats *stats);

/* Data ranges of FD (SEEK_DATA/SEEK_HOLE; preallocated space counts as
 * hole where the filesystem says so: it reads zeros) within [0, size). */
int extents_data(int fd, uint64_t size, struct range_list *out);
/* Ranges where FROMFD has data and TOFD has a hole (reads zeros). */
int extents_became_holes(int fromfd, uint64_t from_size, int tofd, uint64_t to_size,
                         struct range_list *out);
/* Ranges whose physical mapping differs between two files on the same
 * filesystem (FIEMAP, synced first): a range is unchanged only where both
 * map it to the same physical bytes, or both read zeros (hole/unwritten). */
int extents_mapping_diff(int fromfd, uint64_t from_size, int tofd, uint64_t to_size,
                         struct range_list *out);
/* Number of extents of FD (FIEMAP, synced first, nothing copied). */
int extents_count(int fd, uint64_t *ret);
/* Extents of FD within [off, off+len) (FIEMAP, not synced): *ret_n, and in
 * *ret_shared how many are shared with another file (a snapshot). */
int extents_count_range(int fd, uint64_t off, uint64_t len, uint64_t *ret_n, uint64_t *ret_shared);

/* --- pool.c helpers for backends ------------------------------------------- */

/* Remove NAME in DIRFD when it is a plain directory: its files, then it. */
int pool_rm_dir(int dirfd, const char *name);

#endif
