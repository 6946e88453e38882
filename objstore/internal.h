/* internal.h: what the objstore files share and nobody else sees, in one
 * section per file. */
#ifndef AMBER_OBJSTORE_INTERNAL_H
#define AMBER_OBJSTORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "amber/objstore.h"
#include "amber/util.h"

#define ID_BYTES 32
#define KEY_BYTES 32

/* A manifest holds a map root, not a map: it stays small. */
#define MANIFEST_MAX_STORED (1u << 20)
/* Block digests: 16 bytes of SHA-256 of each OBJSTORE_BLOCK of a piece. */
#define DIGEST_BYTES 16
/* Map geometry: a leaf node maps LEAF_SPAN bytes, an inner node FANOUT
 * children. */
#define LEAF_SPAN (4u << 20)
#define FANOUT 256u
/* Packs are uploaded once they hold this many stored bytes. */
#define PACK_TARGET (8u << 20)

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

enum sealed_type { SEALED_CHUNK = 1, SEALED_MANIFEST = 2, SEALED_NODE = 3, SEALED_INDEX = 4,
                   SEALED_DIGEST = 5 };

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
/* Like sealed_unpack, into a caller's buffer of exactly `plen` bytes (the
 * plaintext must have that length). */
int sealed_unpack_into(const struct repo_keys *k, enum sealed_type type, const uint8_t id[ID_BYTES],
                       const void *stored, size_t len, void *dst, size_t plen);
/* Block digests of data (ceil(len / OBJSTORE_BLOCK) × DIGEST_BYTES). */
void block_digests(const void *data, size_t len, uint8_t *out);
/* A piece's id: HMAC-SHA256(mac, "amber-piece" || u64 len || digests), so a
 * piece is hashed once (its block digests) and its id still keyed. */
void piece_id(const struct repo_keys *k, const uint8_t *digests, uint64_t len, uint8_t out[ID_BYTES]);
/* A map node's or index's id: HMAC over a domain and the plaintext. */
void node_id(const struct repo_keys *k, const void *plain, size_t len, uint8_t out[ID_BYTES]);
void index_object_id(const struct repo_keys *k, const void *plain, size_t len, uint8_t out[ID_BYTES]);
/* AMBER_CRASH_AT=name:N: SIGKILL at the Nth call with this name (tests:
 * objstore-pack after a pack and its index are stored, objstore-export-
 * manifest before the manifest, objstore-restore-write after a write of
 * restored data completed). */
void os_crashpoint(const char *name);

/* ---- repo.c ----------------------------------------------------------- */
struct blob_loc {
    uint8_t pack[ID_BYTES];
    uint64_t off;               /* of the digest part (pieces) or the blob */
    uint32_t dlen;              /* stored digest part (pieces), else 0 */
    uint32_t slen;              /* stored data part */
    uint32_t plen;              /* plaintext length */
    uint8_t type;               /* enum blob_type */
};
enum blob_type { BLOB_PIECE = 1, BLOB_NODE = 2 };

struct index_slot {
    uint8_t id[ID_BYTES];
    struct blob_loc loc;
    uint8_t src[ID_BYTES];      /* the index object that listed it */
    bool used;
};

struct cache_ent;

struct objstore {
    struct objstore_backend *be;
    struct repo_keys keys;
    uint32_t chunk_size;
    char repo_id[37];
    /* pack.c: the index of every blob, loaded on first need, refreshed. */
    pthread_mutex_t ilock;
    struct index_slot *islots;
    size_t icap, in;
    uint8_t (*iloaded)[ID_BYTES];   /* index objects loaded */
    size_t niloaded, ciloaded;
    bool iready;
    /* pack.c: decoded nodes, piece plaintexts, digests (small LRU). */
    pthread_mutex_t clock;
    struct cache_ent **cache;       /* CACHE_BUCKETS chains */
    size_t ncache;
    uint64_t cache_bytes, cache_tick;
    /* read.c: manifests objstore_read was asked for (under clock). */
    struct mcache {
        char key[OBJSTORE_ID_LEN + 1];
        uint8_t root[ID_BYTES];
        unsigned level;
        uint64_t size;
    } mc[8];
    unsigned mcn;
};
unsigned default_parallelism(unsigned want);
/* For export and restore, whose workers wait on I/O as much as they compute. */
unsigned io_parallelism(unsigned want);
/* Repository locks (locks/<kind>-<uuid>): take ours, then fail with -EBUSY
 * if a fresh lock of `conflict` kind exists. */
int repo_lock(struct objstore *r, const char *kind, const char *conflict, char **ret_key);
/* Every fresh lock of `kind`: its start time (ns, from the lock's body). */
int repo_locks_started(struct objstore *r, const char *kind, uint64_t **ret, size_t *ret_n);
int repo_lock_refresh(struct objstore *r, const char *key);
void repo_unlock(struct objstore *r, const char *key);
/* How often a lock holder rewrites its lock. */
uint64_t repo_lock_refresh_ns(void);

/* ---- pack.c: blobs in packs, the index, caches ------------------------ */
struct index_obj;
struct index_pack;
char *pack_key(const uint8_t id[ID_BYTES]);
/* Load index objects not loaded yet (all on first call). With purge, if an
 * index object loaded before is gone (gc rewrote it), start over, so that
 * nothing gc trashed stays in memory. */
int index_refresh(struct objstore *r, bool purge);
/* 0 and *ret, or -ENOENT (after one refresh). */
int index_lookup(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *ret);
/* Is the index object that listed `id` in `live` (sorted ids)? */
bool index_entry_live(struct objstore *r, const uint8_t id[ID_BYTES], uint8_t (*live)[ID_BYTES], size_t n);
/* The ids of the index objects now in the repository, sorted. */
int index_list(struct objstore *r, uint8_t (**ret)[ID_BYTES], size_t *ret_n);
/* Index entries that gc moved to the trash (trash/<pack>), listed again. */
int trash_reindex(struct objstore *r, uint8_t (*ids)[ID_BYTES], size_t n, size_t *ret_found);
int id_cmp(const void *a, const void *b);
int index_has(struct objstore *r, const uint8_t id[ID_BYTES]);
/* Like index_lookup, without refreshing when absent. */
int index_peek(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *ret);
int trash_load(struct objstore *r, const uint8_t pack[ID_BYTES], struct index_obj *ret);
int trash_store(struct objstore *r, const struct index_pack *ip);
void index_free(struct objstore *r);

/* An index object's plaintext:
 *   "AMBX" u32 version(1) u32 npacks, npacks × (32-byte pack id, u32 n,
 *   n × (32-byte id, u8 type, u64 off, u32 dlen, u32 slen, u32 plen)) */
struct index_pack {
    uint8_t pack[ID_BYTES];
    size_t n;
    uint8_t (*ids)[ID_BYTES];
    struct blob_loc *locs;
};
struct index_obj {
    size_t npacks;
    struct index_pack *packs;
};
int index_encode(const struct index_obj *x, struct buf *out);
int index_decode(const void *p, size_t len, struct index_obj *ret);
void index_obj_free(struct index_obj *x);
/* Seal and store an index object (index/<id>); returns its id. */
int index_store(struct objstore *r, const struct index_obj *x, uint8_t ret_id[ID_BYTES]);
int index_load_obj(struct objstore *r, const uint8_t id[ID_BYTES], struct index_obj *ret);

/* A pack being filled by one thread. */
struct pack_stats {
    atomic_uint_fast64_t packs, bytes, blobs;
    /* With `collect`: every pack's index, to be rewritten as one at the end
     * (pack_stats_consolidate). */
    bool collect;
    pthread_mutex_t lock;
    struct index_obj *all;
    uint8_t (*index_ids)[ID_BYTES];
    size_t nindex;
};
/* Replace the per-pack indexes collected in s by one index (fewer objects
 * for every later reader to fetch); then free what was collected. */
int pack_stats_consolidate(struct objstore *r, struct pack_stats *s);
void pack_stats_free(struct pack_stats *s);
struct pack_writer {
    struct buf data;
    uint8_t (*ids)[ID_BYTES];
    struct blob_loc *locs;
    size_t n, cap;
    struct pack_stats *stats;
};
/* Seal a blob into w (a piece with its digests, or a node: digests NULL);
 * uploads the pack when it reached PACK_TARGET. */
int pack_add(struct objstore *r, struct pack_writer *w, enum blob_type t, const uint8_t id[ID_BYTES],
             const void *plain, size_t len, const uint8_t *digests, size_t dlen);
/* Append already sealed parts (repack). */
int pack_add_sealed(struct objstore *r, struct pack_writer *w, const uint8_t id[ID_BYTES],
                    const struct blob_loc *loc, const void *stored, size_t len);
/* Upload the pack (if not empty), then its index; then index_add. */
int pack_flush(struct objstore *r, struct pack_writer *w);
void pack_writer_free(struct pack_writer *w);

/* Fetch a blob's plaintext and check it (GCM; with `check`, also the id
 * recomputed from the plaintext). -ENOENT if not in the index or gone. */
int blob_fetch(struct objstore *r, const uint8_t id[ID_BYTES], enum blob_type t, bool check,
               struct buf *plain, uint64_t *ret_fetched);
/* A piece's plaintext straight into dst (plen bytes). */
int piece_fetch_into(struct objstore *r, const uint8_t id[ID_BYTES], void *dst, size_t plen,
                     uint64_t *ret_fetched);
/* A piece's block digests, cached. *ret points into a cache entry that the
 * caller releases with cache_put. */
int digests_get(struct objstore *r, const uint8_t id[ID_BYTES], const uint8_t **ret, size_t *ret_len,
                struct cache_ent **ret_ent);
/* A piece's plaintext or a node's, cached. */
int cached_blob(struct objstore *r, const uint8_t id[ID_BYTES], enum blob_type t,
                const uint8_t **ret, size_t *ret_len, struct cache_ent **ret_ent);
void cache_put(struct objstore *r, struct cache_ent *e);
void cache_free(struct objstore *r);

/* ---- map.c: the map tree ---------------------------------------------- */
struct map_entry {
    uint64_t off;               /* absolute volume offset */
    uint32_t len, poff;         /* bytes, offset in the piece */
    uint8_t id[ID_BYTES];       /* piece */
};
struct leaf {
    uint64_t start;
    size_t n;
    struct map_entry *e;        /* ascending, not overlapping */
};
void leaf_free(struct leaf *l);
/* Leaf: "AML" u8 1, u32 n, n × (u32 rel off, u32 len, u32 poff, 32-byte id)
 * Inner: "AMI" u8 1, u8 level, u32 n, n × (u16 slot, 32-byte child id) */
int leaf_encode(const struct leaf *l, struct buf *out);
int leaf_decode(const void *p, size_t len, uint64_t start, struct leaf *ret);
int inner_encode(unsigned level, uint8_t (*children)[ID_BYTES], struct buf *out);
int inner_decode(const void *p, size_t len, unsigned level, uint8_t (*children)[ID_BYTES]);
unsigned map_level_for(uint64_t size);
uint64_t map_span(unsigned level);
int map_load_leaf(struct objstore *r, const uint8_t id[ID_BYTES], uint64_t start, struct leaf *ret);
/* Call cb for every non-empty leaf of the tree, ascending. */
int map_walk(struct objstore *r, const uint8_t root[ID_BYTES], unsigned level,
             int (*cb)(void *ud, const uint8_t id[ID_BYTES], uint64_t start), void *ud);
/* The leaf covering `off` (zero id: a hole). */
int map_leaf_at(struct objstore *r, const uint8_t root[ID_BYTES], unsigned level, uint64_t off,
                uint8_t ret[ID_BYTES]);
/* Build the map of a new snapshot: the parent's map, with the `read`
 * ranges (sorted, disjoint) replaced by `pieces` (sorted) and holes
 * elsewhere in them. Nodes go through w; `reused` hears of every node the
 * index already had (dedup). */
int map_build(struct objstore *r, struct pack_writer *w, const uint8_t proot[ID_BYTES], unsigned plevel,
              uint64_t psize, uint64_t size, const struct objstore_range *read, size_t nread,
              const struct map_entry *pieces, size_t npieces, uint8_t ret_root[ID_BYTES],
              unsigned *ret_level, uint64_t *ret_nodes, int64_t *ret_dbytes, int64_t *ret_dentries,
              void (*reused)(void *ud, const uint8_t id[ID_BYTES]), void *reused_ud);

/* ---- manifest.c ------------------------------------------------------- */
struct manifest {
    uint64_t volume_size, created_ns;
    uint32_t chunk_size;
    uint8_t root[ID_BYTES];     /* all zero: an empty map */
    unsigned root_level;
    uint64_t data_bytes, nentries;
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

/* ---- export.c --------------------------------------------------------- */
/* Where an export reads the image: a file (objstore_export) or another
 * repository's snapshot (objstore_copy). Called from several threads. */
struct export_src {
    int (*read)(void *ud, void *buf, size_t len, uint64_t off);
    void *ud;
};
int export_run(struct objstore *repo, const struct objstore_export_req *req, const struct export_src *src,
               struct objstore_export_result *res);

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
