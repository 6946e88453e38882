/* objstore.h: the object tier. A repository (format 2) of encrypted,
 * compressed, content-addressed pieces of exact changed extents, packed
 * into pack objects with encrypted indexes, and of manifests (one per
 * exported snapshot) whose map is a tree of content-addressed map nodes, in
 * a directory (file:///path) or an S3 bucket prefix
 * (s3://bucket/prefix?endpoint=URL&region=R&style=path|virtual).
 *
 * Every function returns 0 (or a count) on success and a negative errno on
 * failure; nothing here logs above debug. Output parameters (ret_*) are left
 * untouched on failure. Destructors accept NULL. A repository handle may be
 * used by one operation at a time; each operation runs its own threads.
 *
 * Error strings: functions taking `char **ret_err` may set it (on failure
 * only) to a malloc'd human sentence that the caller frees and logs. */
#ifndef AMBER_OBJSTORE_H
#define AMBER_OBJSTORE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct buf;

/* ---- Backends ---------------------------------------------------------- */

/* A stored object's metadata, as list and head report it. */
struct objstore_stat {
    uint64_t size;
    int64_t mtime;          /* seconds since the epoch (last write) */
};

struct objstore_backend;

/* The backend vtable. Keys are relative to the repository's root
 * ("config", "chunks/ab/abcd…"), made of [A-Za-z0-9._/-]. Every op must be
 * safe to call from several threads at once. */
struct objstore_backend_ops {
    const char *name;
    /* Read a whole object into `out` (appended). -ENOENT if absent;
     * objects larger than `max` bytes give -EFBIG. */
    int (*get)(struct objstore_backend *b, const char *key, size_t max, struct buf *out);
    /* Read bytes [off, off+len) of an object into `out` (appended): exactly
     * len bytes, or -EBADMSG if the object is shorter. -ENOENT if absent. */
    int (*get_range)(struct objstore_backend *b, const char *key, uint64_t off, size_t len,
                     struct buf *out);
    /* Write an object atomically: readers see the old object or the whole
     * new one, never a part, even after a crash. It may become durable
     * (survive a power loss) only at the next flush. */
    int (*put)(struct objstore_backend *b, const char *key, const void *data, size_t len);
    /* Like put, but -EEXIST if the key exists (best effort on S3: checked
     * with a HEAD first). */
    int (*put_if_absent)(struct objstore_backend *b, const char *key, const void *data, size_t len);
    /* Metadata of one object; -ENOENT if absent. `st` may be NULL. */
    int (*head)(struct objstore_backend *b, const char *key, struct objstore_stat *st);
    /* Remove an object; removing an absent one succeeds. */
    int (*del)(struct objstore_backend *b, const char *key);
    /* Call `cb` for every object whose key starts with `prefix`, in no
     * particular order. A non-zero return of cb stops and is returned. */
    int (*list)(struct objstore_backend *b, const char *prefix,
                int (*cb)(void *ud, const char *key, const struct objstore_stat *st), void *ud);
    /* Make every put and del done so far durable. NULL when puts are
     * durable on success (S3). */
    int (*flush)(struct objstore_backend *b);
    void (*free)(struct objstore_backend *b);
};

struct objstore_backend {
    const struct objstore_backend_ops *ops;
};

/* Open the backend a repository URL names. -EINVAL with *ret_err for a
 * malformed URL; the store itself is not contacted. */
int objstore_backend_open(const char *url, struct objstore_backend **ret, char **ret_err);
void objstore_backend_free(struct objstore_backend *b);

/* ---- Repository -------------------------------------------------------- */

#define OBJSTORE_FORMAT_VERSION 2
/* Exported ranges are handled in blocks of this size (the unit of `changed`). */
#define OBJSTORE_BLOCK 4096u
#define OBJSTORE_CHUNK_MIN (64u << 10)
#define OBJSTORE_CHUNK_MAX (16u << 20)
#define OBJSTORE_CHUNK_DEFAULT (1u << 20)
/* Manifest and chunk ids are 64 lowercase hex characters. */
#define OBJSTORE_ID_LEN 64

struct objstore;

/* Create a repository (format 2) at `url` with a new random data key wrapped
 * by a key derived from `passphrase` (scrypt). chunk_size is the largest
 * piece an extent is cut into: 0 means the default; else a power of two in
 * [OBJSTORE_CHUNK_MIN, OBJSTORE_CHUNK_MAX]. -EEXIST if the URL already holds
 * a repository. */
int objstore_init(const char *url, const char *passphrase, uint32_t chunk_size, char **ret_err);

/* Open a repository. -EKEYREJECTED for a wrong passphrase, -EPROTONOSUPPORT
 * for another format (a newer one, or format 1, whose fixed-chunk
 * repositories this version refuses: the message names the version),
 * -ENOENT (or the backend's error) when there is no repository; *ret_err
 * says which. A handle may be shared by threads for objstore_read. */
int objstore_open(const char *url, const char *passphrase, struct objstore **ret, char **ret_err);
void objstore_close(struct objstore *repo);
/* objstore_open keeps each key it derived from a passphrase (scrypt) for the
 * process's lifetime, so that a daemon opening the same repository for every
 * operation pays for the derivation once. Clear forgets them all; runs
 * counts derivations done (tests). */
void objstore_key_cache_clear(void);
uint64_t objstore_kdf_runs(void);
uint32_t objstore_chunk_size(const struct objstore *repo);
/* The backend, for tools and tests (owned by the repository). */
struct objstore_backend *objstore_get_backend(struct objstore *repo);

/* ---- Export ------------------------------------------------------------ */

struct objstore_range {
    uint64_t offset, length;
};

struct objstore_progress {
    uint64_t bytes_total;       /* bytes this operation will read or write */
    uint64_t bytes_read;        /* export: read from the image; restore: written */
    uint64_t bytes_uploaded;    /* export: stored bytes sent; restore: fetched */
    uint64_t chunks_total;
    uint64_t chunks_uploaded;   /* restore: chunks fetched */
    uint64_t chunks_reused;     /* restore: chunks already in place (resume) */
    uint64_t chunks_zero;
};

/* Called from worker threads, one call at a time, at most ~10 times a
 * second (every chunk with progress_each_chunk, for tests and tools) and
 * once at the end. Must not call back into the repository. */
typedef void (*objstore_progress_fn)(void *ud, const struct objstore_progress *p);

struct objstore_label {
    const char *key, *value;
};

struct objstore_export_req {
    int fd;                         /* the snapshot image, read with pread */
    uint64_t size;                  /* the volume's size in bytes */
    /* Byte ranges to read (changed or allocated extents), any order,
     * overlapping allowed, inside [0, size). They are rounded out to
     * OBJSTORE_BLOCK and only those bytes are read: all-zero blocks become
     * holes, the rest pieces of at most the chunk size, cut at multiples of
     * it. Outside the ranges the parent's map holds. nranges 0 with a
     * parent: nothing changed. */
    const struct objstore_range *ranges;
    size_t nranges;
    /* Optional parent manifest id or unique prefix: bytes outside the
     * ranges come from its map; without it they are zero. */
    const char *parent;
    const char *snapshot_uuid;      /* source snapshot id (free text, required) */
    const char *volume_name;        /* may be NULL */
    const struct objstore_label *labels;
    size_t nlabels;
    uint64_t created_ns;            /* 0: now */
    unsigned parallelism;           /* 0: twice the number of CPUs (at least 4) */
    objstore_progress_fn progress;
    void *progress_ud;
    bool progress_each_chunk;
    const atomic_bool *cancel;      /* set to stop: -ECANCELED */
    /* Skip computing res->changed (which reads the block digests of the
     * parent's pieces under the ranges: cheap locally, a ranged GET per
     * parent piece on S3). */
    bool no_changed;
};

struct objstore_export_result {
    char manifest[OBJSTORE_ID_LEN + 1];
    uint64_t bytes_read, bytes_uploaded;
    /* chunks_*: pieces. uploaded: new pieces stored; reused: pieces the
     * repository had (dedup); zero: all-zero blocks read (holes);
     * from_parent: map entries kept from the parent. */
    uint64_t chunks_uploaded, chunks_reused, chunks_zero, chunks_from_parent;
    uint64_t packs_uploaded, nodes_uploaded;
    double seconds;
    /* The sub-ranges of the request's ranges whose content differs from the
     * parent's map at the same offsets, at OBJSTORE_BLOCK granularity,
     * coalesced, ascending (without a parent: the non-zero blocks). NULL
     * with no_changed. Free with objstore_export_result_free. */
    struct objstore_range *changed;
    size_t nchanged;
    uint64_t bytes_changed;
};
void objstore_export_result_free(struct objstore_export_result *res);

/* Export a snapshot image. Uploads only pieces the repository lacks, in
 * packs (each pack's index right after it), then the map nodes, then the
 * manifest: an interrupted export leaves no manifest, and a rerun uploads
 * only pieces whose pack was not completely written. Runs concurrently with
 * gc (see objstore_gc). */
int objstore_export(struct objstore *repo, const struct objstore_export_req *req,
                    struct objstore_export_result *res);

/* Copy one snapshot (manifest, map nodes, pieces dst lacks) from src into
 * dst, re-encrypted for dst. If the manifest's parent chain is in dst
 * (a manifest of the same snapshot_uuid), only the map's difference to the
 * parent is read and the copy's parent is that manifest; otherwise the
 * missing ancestors are copied first, oldest first. Reads with ranged GETs,
 * uploads only what dst lacks; an interrupted copy resumes when run again.
 * progress/cancel as for export; res->manifest is dst's id of the copy. */
int objstore_copy(struct objstore *src, struct objstore *dst, const char *manifest,
                  objstore_progress_fn progress, void *progress_ud, const atomic_bool *cancel,
                  struct objstore_export_result *res);

/* Read bytes [off, off+len) of a snapshot (holes read as zero; past the
 * volume's end is -EINVAL) with ranged GETs of the packs. Thread-safe:
 * several threads may read from one handle; nodes and pieces are kept in a
 * small cache. */
int objstore_read(struct objstore *repo, const char *manifest, uint64_t off, void *buf, size_t len);

/* The allocated (non-zero) ranges of a snapshot, coalesced, ascending; *ret
 * is malloc'd (NULL when there are none). */
int objstore_extents(struct objstore *repo, const char *manifest, struct objstore_range **ret,
                     size_t *ret_n);

/* ---- Restore ----------------------------------------------------------- */

struct objstore_restore_req {
    const char *manifest;           /* id or unique prefix */
    int fd;                         /* target, opened O_RDWR, sized to the volume */
    /* Resume a restore that was interrupted: every piece already present
     * and correct in the target (read back, checked against the piece's
     * block digests) is not fetched again; holes holding data are punched. */
    bool resume;
    unsigned parallelism;           /* 0: twice the number of CPUs (at least 4) */
    objstore_progress_fn progress;
    void *progress_ud;
    bool progress_each_chunk;
    const atomic_bool *cancel;
};

struct objstore_restore_result {
    char manifest[OBJSTORE_ID_LEN + 1];
    uint64_t volume_size;
    uint64_t bytes_written, bytes_fetched;
    uint64_t chunks_fetched, chunks_skipped, chunks_zero;
    double seconds;
};

/* Write the manifest's exact bytes into fd with io_uring (pwrite if io_uring
 * is unavailable), one map leaf (4 MiB) per write batch, on every core.
 * Holes are left as holes. Every piece is authenticated and its id checked
 * before it is written: -EBADMSG on a corrupt piece, -ENOENT on a missing
 * one, -ENOSPC if the target fills. chunks_* count pieces. */
int objstore_restore(struct objstore *repo, const struct objstore_restore_req *req,
                     struct objstore_restore_result *res);

/* ---- Manifests, verify, gc -------------------------------------------- */

struct objstore_manifest_info {
    char id[OBJSTORE_ID_LEN + 1];
    char parent[OBJSTORE_ID_LEN + 1];   /* "" if none */
    char *snapshot_uuid;
    char *volume_name;                  /* "" if none */
    char **label_keys, **label_values;
    size_t nlabels;
    uint64_t volume_size, created_ns;
    uint32_t chunk_size;
    uint64_t chunks, data_chunks;       /* chunk-size slots, and map entries */
    uint64_t stored_size;               /* size of the manifest object */
    uint64_t data_bytes;                /* allocated (non-hole) bytes */
};

void objstore_manifest_info_free(struct objstore_manifest_info *m);
void objstore_manifest_infos_free(struct objstore_manifest_info *m, size_t n);

/* Every manifest, decrypted, sorted by creation time. *ret is an array the
 * caller frees with objstore_manifest_infos_free. A manifest that fails to
 * decrypt makes the whole call fail (-EBADMSG). */
int objstore_list_manifests(struct objstore *repo, struct objstore_manifest_info **ret, size_t *ret_n);
/* One manifest by id or unique prefix (-ENOENT, -ENOTUNIQ). */
int objstore_show_manifest(struct objstore *repo, const char *id_or_prefix,
                           struct objstore_manifest_info *ret);
/* Resolve an id prefix (at least 4 characters) to a full id. */
int objstore_resolve_manifest(struct objstore *repo, const char *id_or_prefix,
                              char ret[OBJSTORE_ID_LEN + 1]);
/* Delete a manifest (its chunks go at the next gc). */
int objstore_delete_manifest(struct objstore *repo, const char *id_or_prefix);

struct objstore_verify_result {
    /* chunks_checked: pieces and map nodes checked */
    uint64_t chunks_checked, missing, corrupt;
    /* ids of missing and corrupt chunks (malloc'd arrays of malloc'd
     * strings, at most 1000 each); free with objstore_verify_result_free. */
    char **missing_ids, **corrupt_ids;
    size_t nmissing_ids, ncorrupt_ids;
};
void objstore_verify_result_free(struct objstore_verify_result *v);

/* Fetch, authenticate, decompress and hash-check every map node and every
 * distinct piece (and its block digests) the manifest references; with a
 * NULL id_or_prefix, also every pack and pack index of the repository.
 * Returns 0 if all are good, -EBADMSG if any is missing or corrupt (details
 * in *res), or the error that stopped it. */
int objstore_verify(struct objstore *repo, const char *id_or_prefix, unsigned parallelism,
                    struct objstore_verify_result *res);

struct objstore_gc_result {
    /* chunks_*: pieces and nodes (blobs) */
    uint64_t chunks_total, chunks_referenced, chunks_deleted, bytes_deleted;
    uint64_t chunks_young;      /* unreferenced but inside the grace period */
    uint64_t packs_total, packs_deleted, packs_repacked, packs_trashed, packs_restored;
};

/* Garbage collection in two phases, safe against concurrent exports and
 * readers. Phase 1: packs older than grace_seconds (and older than every
 * running export) holding no referenced blob are dropped from the index and
 * moved to the trash; packs mostly unreferenced are repacked (their live
 * blobs copied into new packs with new indexes, the old pack trashed).
 * Phase 2 (of a later gc): a trashed pack is deleted once no export that
 * was running when it was trashed still runs; a trashed blob that a
 * manifest references by then (an export reused it) is indexed again.
 * Takes the gc lock (-EBUSY while another gc runs). If any manifest cannot
 * be read, nothing is changed. */
int objstore_gc(struct objstore *repo, uint64_t grace_seconds, struct objstore_gc_result *res);

#endif
