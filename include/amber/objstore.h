/* objstore.h: the object tier. A repository of encrypted, compressed,
 * deduplicated fixed-size chunks and of manifests (one per exported snapshot)
 * in a directory (file:///path) or an S3 bucket prefix
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

#define OBJSTORE_FORMAT_VERSION 1
#define OBJSTORE_CHUNK_MIN (64u << 10)
#define OBJSTORE_CHUNK_MAX (16u << 20)
#define OBJSTORE_CHUNK_DEFAULT (1u << 20)
/* Manifest and chunk ids are 64 lowercase hex characters. */
#define OBJSTORE_ID_LEN 64

struct objstore;

/* Create a repository at `url` with a new random data key wrapped by a key
 * derived from `passphrase` (scrypt). chunk_size 0 means the default; else a
 * power of two in [OBJSTORE_CHUNK_MIN, OBJSTORE_CHUNK_MAX]. -EEXIST if the
 * URL already holds a repository. */
int objstore_init(const char *url, const char *passphrase, uint32_t chunk_size, char **ret_err);

/* Open a repository. -EKEYREJECTED for a wrong passphrase, -EPROTONOSUPPORT
 * for a newer format, -ENOENT (or the backend's error) when there is no
 * repository; *ret_err says which. */
int objstore_open(const char *url, const char *passphrase, struct objstore **ret, char **ret_err);
void objstore_close(struct objstore *repo);
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
     * overlapping allowed, inside [0, size). Every chunk a range touches is
     * read whole. nranges 0 with a parent: nothing changed. */
    const struct objstore_range *ranges;
    size_t nranges;
    /* Optional parent manifest id or unique prefix: chunks outside the
     * ranges come from its map; without it they are zero. */
    const char *parent;
    const char *snapshot_uuid;      /* source snapshot id (free text, required) */
    const char *volume_name;        /* may be NULL */
    const struct objstore_label *labels;
    size_t nlabels;
    uint64_t created_ns;            /* 0: now */
    unsigned parallelism;           /* 0: number of CPUs (at least 2) */
    objstore_progress_fn progress;
    void *progress_ud;
    bool progress_each_chunk;
    const atomic_bool *cancel;      /* set to stop: -ECANCELED */
};

struct objstore_export_result {
    char manifest[OBJSTORE_ID_LEN + 1];
    uint64_t bytes_read, bytes_uploaded;
    uint64_t chunks_uploaded, chunks_reused, chunks_zero, chunks_from_parent;
    double seconds;
};

/* Export a snapshot image. Uploads only chunks the repository lacks and
 * writes the manifest last: an interrupted export leaves no manifest, and a
 * rerun uploads only the chunks that were not complete. -EBUSY if a gc is
 * running. */
int objstore_export(struct objstore *repo, const struct objstore_export_req *req,
                    struct objstore_export_result *res);

/* ---- Restore ----------------------------------------------------------- */

struct objstore_restore_req {
    const char *manifest;           /* id or unique prefix */
    int fd;                         /* target, opened O_RDWR, sized to the volume */
    /* Resume a restore that was interrupted: every data chunk already
     * present and correct in the target (read back and HMAC-checked) is not
     * fetched again; zero chunks holding data are punched. */
    bool resume;
    unsigned parallelism;           /* 0: number of CPUs (at least 2) */
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
 * is unavailable). Zero chunks are left as holes. Every chunk is
 * authenticated and its HMAC checked before it is written: -EBADMSG on a
 * corrupt chunk, -ENOENT on a missing one, -ENOSPC if the target fills. */
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
    uint64_t chunks, data_chunks;       /* all, and not all-zero */
    uint64_t stored_size;               /* size of the manifest object */
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
    uint64_t chunks_checked, missing, corrupt;
    /* ids of missing and corrupt chunks (malloc'd arrays of malloc'd
     * strings, at most 1000 each); free with objstore_verify_result_free. */
    char **missing_ids, **corrupt_ids;
    size_t nmissing_ids, ncorrupt_ids;
};
void objstore_verify_result_free(struct objstore_verify_result *v);

/* Fetch, authenticate, decompress and hash-check every distinct chunk the
 * manifest references. Returns 0 if all are good, -EBADMSG if any is
 * missing or corrupt (details in *res), or the error that stopped it. */
int objstore_verify(struct objstore *repo, const char *id_or_prefix, unsigned parallelism,
                    struct objstore_verify_result *res);

struct objstore_gc_result {
    uint64_t chunks_total, chunks_referenced, chunks_deleted, bytes_deleted;
    uint64_t chunks_young;      /* unreferenced but inside the grace period */
};

/* Delete chunks that no manifest references and whose last write is older
 * than grace_seconds. Takes the repository's gc lock: -EBUSY while an
 * export holds an export lock (and exports refuse to start during a gc). If
 * any manifest cannot be read, nothing is deleted. */
int objstore_gc(struct objstore *repo, uint64_t grace_seconds, struct objstore_gc_result *res);

#endif
