/* internal.h: what the objstore files share and nobody else sees, in one
 * section per file. */
#ifndef AMBER_OBJSTORE_INTERNAL_H
#define AMBER_OBJSTORE_INTERNAL_H

#include <pthread.h>

#include "amber/objstore.h"
#include "amber/util.h"

#define ID_BYTES 32
#define KEY_BYTES 32

/* Largest object we ever read: a manifest of a 64 TiB volume at 64 KiB
 * chunks is ~1 G entries; cap manifests at 512 MiB stored. */
#define MANIFEST_MAX_STORED (512u << 20)

/* ---- backend-fs.c / backend-s3.c -------------------------------------- */
int backend_fs_open(const char *path, struct objstore_backend **ret, char **ret_err);
/* `rest` is the URL after "s3://". */
int backend_s3_open(const char *rest, struct objstore_backend **ret, char **ret_err);

/* Call the backend's flush, if it has one. */
static inline int backend_flush(struct objstore_backend *b)
{
    return b->ops->flush ? b->ops->flush(b) : 0;
}

/* ---- s3-config.c: the s3:// URL and the credentials ------------------ */
struct s3_config {
    char *bucket, *prefix;          /* prefix "" or "a/b/" */
    char *scheme, *hostport, *region;
    bool path_style;
    unsigned retries;
    uint64_t timeout_s, multipart_threshold, part_size;
    char *access_key, *secret_key, *session_token;
};
/* `rest` is the URL after "s3://". -EINVAL (bad URL) or -ENOKEY (no
 * credentials) with a message that never holds a secret. */
int s3_config_parse(const char *rest, struct s3_config *ret, char **ret_err);
void s3_config_free(struct s3_config *c);

/* ---- s3-xml.c: the few S3 XML replies we read ------------------------- */
struct s3_list_entry {
    char *key;
    uint64_t size;
    int64_t mtime;
};
struct s3_list_page {
    struct s3_list_entry *entries;
    size_t n;
    bool truncated;
    char *next_token;
};
/* Parse a ListObjectsV2 reply. -EBADMSG on anything malformed. */
int s3_xml_parse_list(const char *xml, size_t len, struct s3_list_page *ret);
void s3_list_page_free(struct s3_list_page *p);
/* The text of the first <tag>…</tag> element, entity-decoded, or NULL. */
char *s3_xml_find(const char *xml, size_t len, const char *tag);
/* "2024-05-01T10:00:00.000Z" → seconds; -EINVAL. */
int s3_parse_iso8601(const char *s, int64_t *ret);

/* ---- chunk.c: keys, ids, sealed objects ------------------------------- */
struct repo_keys {
    uint8_t data[KEY_BYTES];    /* AES-256-GCM for chunks and manifests */
    uint8_t mac[KEY_BYTES];     /* HMAC-SHA256 for chunk and manifest ids */
};

enum sealed_type { SEALED_CHUNK = 1, SEALED_MANIFEST = 2 };

void id_hmac(const struct repo_keys *k, const void *domain, size_t dlen,
             const void *data, size_t len, uint8_t out[ID_BYTES]);
void id_to_hex(const uint8_t id[ID_BYTES], char out[OBJSTORE_ID_LEN + 1]);
int id_from_hex(const char *hex, uint8_t out[ID_BYTES]);
bool id_is_zero(const uint8_t id[ID_BYTES]);
bool mem_is_zero(const void *p, size_t n);
/* "chunks/ab/abcd…" */
char *chunk_key(const uint8_t id[ID_BYTES]);

/* Seal plaintext into a stored object: header, then AES-256-GCM of
 * (zstd(plaintext) or plaintext when zstd does not shrink it), with the
 * header and the object's id as associated data. Appends to out. */
int sealed_pack(const struct repo_keys *k, enum sealed_type type, const uint8_t id[ID_BYTES],
                const void *plain, size_t len, struct buf *out);
/* Authenticate and open a stored object into out (cleared first). Plain
 * text longer than `max` is refused. -EBADMSG on any tampering or damage,
 * -EPROTONOSUPPORT for an unknown object version. */
int sealed_unpack(const struct repo_keys *k, enum sealed_type type, const uint8_t id[ID_BYTES],
                  const void *stored, size_t len, size_t max, struct buf *out);
/* AES-256-GCM with a 12-byte nonce, tag after the ciphertext. */
int aead_seal(const uint8_t key[KEY_BYTES], const uint8_t nonce[12], const void *aad, size_t alen,
              const void *plain, size_t len, uint8_t *out /* len + 16 */);
int aead_open(const uint8_t key[KEY_BYTES], const uint8_t nonce[12], const void *aad, size_t alen,
              const void *ct, size_t len /* with tag */, uint8_t *out /* len - 16 */);
int random_bytes(void *p, size_t n);

/* ---- repo.c ----------------------------------------------------------- */
struct objstore {
    struct objstore_backend *be;
    struct repo_keys keys;
    uint32_t chunk_size;
    char repo_id[37];
};
unsigned default_parallelism(unsigned want);
/* Repository locks (locks/<kind>-<uuid>): take ours, then fail with -EBUSY
 * if a fresh lock of `conflict` kind exists. */
int repo_lock(struct objstore *r, const char *kind, const char *conflict, char **ret_key);
int repo_lock_refresh(struct objstore *r, const char *key);
void repo_unlock(struct objstore *r, const char *key);
/* How often a lock holder rewrites its lock. */
uint64_t repo_lock_refresh_ns(void);

/* ---- manifest.c ------------------------------------------------------- */
struct manifest {
    uint64_t volume_size, created_ns;
    uint32_t chunk_size;
    uint64_t nchunks;
    uint8_t (*ids)[ID_BYTES];   /* all-zero id: an all-zero chunk */
    bool has_parent;
    uint8_t parent[ID_BYTES];
    char *snapshot_uuid, *volume_name;
    char **label_keys, **label_values;
    size_t nlabels;
};
void manifest_free(struct manifest *m);
int manifest_encode(const struct manifest *m, struct buf *out);
int manifest_decode(const void *p, size_t len, struct manifest *ret);
/* Seal and store; the id is the HMAC of the encoding. */
int manifest_store(struct objstore *r, const struct manifest *m, uint8_t ret_id[ID_BYTES]);
int manifest_load(struct objstore *r, const uint8_t id[ID_BYTES], struct manifest *ret,
                  uint64_t *ret_stored);
int manifest_load_prefix(struct objstore *r, const char *prefix, struct manifest *ret,
                         uint8_t ret_id[ID_BYTES]);

/* ---- progress (export.c) --------------------------------------------- */
struct progress {
    pthread_mutex_t lock;
    struct objstore_progress p;
    objstore_progress_fn fn;
    void *ud;
    uint64_t last_ns, interval_ns;
};
void progress_init(struct progress *pr, objstore_progress_fn fn, void *ud, bool each);
/* Add deltas (any field) and call the callback if due or `force`. */
void progress_add(struct progress *pr, const struct objstore_progress *d, bool force);

#endif
