/* repo.c: repository URLs, the config object, keys and locks.
 *
 * `config` is the one object stored in clear, because it must be read
 * before any key is known. It is a short text of "name value" lines, easy to
 * read by eye and to parse without a JSON library:
 *
 *   amber-repository
 *   format 2
 *   id 6f0c…                       (a random uuid)
 *   chunk_size 1048576
 *   kdf scrypt
 *   kdf_n 32768 / kdf_r 8 / kdf_p 1 (one line each)
 *   kdf_salt <32 random bytes, hex>
 *   created <ns since epoch>
 *   keys <hex: 12-byte nonce, AES-256-GCM(kek, data key || mac key), tag>
 *
 * kek = scrypt(passphrase, salt, N, r, p). The wrap's associated data is
 * every byte of the config before the "keys" line, so changing the chunk
 * size or the KDF parameters fails authentication like a wrong passphrase.
 * The format line is checked before anything else: a newer repository, or
 * one of format 1 (fixed 1 MiB chunks, whole-chunk map in the manifest; no
 * longer read), is refused with -EPROTONOSUPPORT and a message naming the
 * version before its passphrase is tried. KDF
 * parameters read from a config are bounded so a hostile config cannot make
 * us allocate gigabytes.
 *
 * scrypt costs ~100 ms and 32 MiB on purpose; a daemon opens the same
 * repository for every export and restore. So the derived kek is kept for
 * the process's lifetime in a small table (KEK_CACHE entries, least recently
 * used replaced) under a tag HMAC-SHA256(a random per-process key, salt ||
 * N || r || p || passphrase): nothing about the passphrase can be read from
 * the table without the process's memory, which holds the data keys of open
 * repositories anyway. Only a kek that unwrapped the keys is kept; the key
 * hierarchy and the config are unchanged. */
#include <limits.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/kdf.h>

#include "internal.h"

#define CONFIG_MAGIC "amber-repository\n"
#define CONFIG_MAX (64u << 10)
#define KDF_N 32768
#define KDF_R 8
#define KDF_P 1
#define SALT_BYTES 32
#define WRAP_BYTES (12 + 2 * KEY_BYTES + 16)
/* A lock older than this is a leftover of a dead process. Holders refresh
 * theirs every LOCK_REFRESH seconds. */
#define LOCK_STALE_S 1800
#define LOCK_REFRESH_S 300

static void set_err(char **ret_err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char **ret_err, const char *fmt, ...)
{
    if (!ret_err)
        return;
    va_list ap;
    va_start(ap, fmt);
    char *s;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    free(*ret_err);
    *ret_err = s;
}

int objstore_backend_open(const char *url, struct objstore_backend **ret, char **ret_err)
{
    if (!url) {
        set_err(ret_err, "no repository URL");
        return -EINVAL;
    }
    if (!strncmp(url, "file://", 7))
        return backend_fs_open(url + 7, ret, ret_err);
    if (!strncmp(url, "s3://", 5))
        return backend_s3_open(url + 5, ret, ret_err);
    set_err(ret_err, "repository URL \"%s\" must start with file:// or s3://", url);
    return -EINVAL;
}

void objstore_backend_free(struct objstore_backend *b)
{
    if (b)
        b->ops->free(b);
}

unsigned default_parallelism(unsigned want)
{
    if (want)
        return MIN(want, 256u);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    /* At least two: one thread computes while another waits on I/O. */
    return (unsigned)MAX(2, MIN(n, 64));
}

unsigned io_parallelism(unsigned want)
{
    if (want)
        return MIN(want, 256u);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    /* Twice the CPUs, at least four: small reads and writes wait on the
     * device more than they compute, and a waiting worker costs a buffer. */
    return (unsigned)MAX(4, MIN(2 * n, 64));
}

static void hex_encode(const uint8_t *p, size_t n, char *out)
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++)
        out[2 * i] = hx[p[i] >> 4], out[2 * i + 1] = hx[p[i] & 15];
    out[2 * n] = 0;
}

static int hex_decode(const char *s, uint8_t *out, size_t n)
{
    if (strlen(s) != 2 * n)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdef", s[2 * i]) ||
            !strchr("0123456789abcdef", s[2 * i + 1]))
            return -EINVAL;
        out[i] = (uint8_t)v;
    }
    return 0;
}

static atomic_uint_fast64_t kdf_runs;

static int derive_kek(const char *pass, const uint8_t *salt, uint64_t n, uint64_t r, uint64_t p,
                      uint8_t kek[KEY_BYTES])
{
    uint64_t mem = 128 * r * n + 128 * r * p + (1u << 20);
    atomic_fetch_add(&kdf_runs, 1);
    if (EVP_PBE_scrypt(pass, strlen(pass), salt, SALT_BYTES, n, r, p, mem, kek, KEY_BYTES) != 1)
        return -ENOMEM;
    return 0;
}

uint64_t objstore_kdf_runs(void)
{
    return atomic_load(&kdf_runs);
}

#define KEK_CACHE 8
static struct kek_ent {
    uint8_t tag[ID_BYTES];
    uint8_t kek[KEY_BYTES];
    uint64_t used;              /* 0: empty */
} kek_cache[KEK_CACHE];
static uint8_t kek_secret[KEY_BYTES];
static uint64_t kek_tick;
static bool kek_have_secret;
static pthread_mutex_t kek_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t kek_once = PTHREAD_ONCE_INIT;

static void kek_secret_init(void)
{
    kek_have_secret = random_bytes(kek_secret, sizeof kek_secret) == 0;
}

/* The cache tag of (passphrase, salt, parameters); false without a secret. */
static bool kek_tag(const char *pass, const uint8_t *salt, uint64_t n, uint64_t r, uint64_t p,
                    uint8_t tag[ID_BYTES])
{
    pthread_once(&kek_once, kek_secret_init);
    if (!kek_have_secret)
        return false;
    struct repo_keys k = {};
    memcpy(k.mac, kek_secret, KEY_BYTES);
    size_t plen = strlen(pass);
    _cleanup_free_ uint8_t *msg = xmalloc(SALT_BYTES + 24 + plen);
    memcpy(msg, salt, SALT_BYTES);
    uint64_t params[3] = { n, r, p };
    memcpy(msg + SALT_BYTES, params, sizeof params);
    memcpy(msg + SALT_BYTES + 24, pass, plen);
    static const char dom[] = "amber-kek-cache";
    id_hmac(&k, dom, sizeof dom, msg, SALT_BYTES + 24 + plen, tag);
    OPENSSL_cleanse(msg, SALT_BYTES + 24 + plen);
    OPENSSL_cleanse(&k, sizeof k);
    return true;
}

static bool kek_lookup(const uint8_t tag[ID_BYTES], uint8_t kek[KEY_BYTES])
{
    bool hit = false;
    pthread_mutex_lock(&kek_lock);
    for (size_t i = 0; i < KEK_CACHE && !hit; i++)
        if (kek_cache[i].used && !memcmp(kek_cache[i].tag, tag, ID_BYTES)) {
            memcpy(kek, kek_cache[i].kek, KEY_BYTES);
            kek_cache[i].used = ++kek_tick;
            hit = true;
        }
    pthread_mutex_unlock(&kek_lock);
    return hit;
}

static void kek_remember(const uint8_t tag[ID_BYTES], const uint8_t kek[KEY_BYTES])
{
    pthread_mutex_lock(&kek_lock);
    size_t v = 0;
    for (size_t i = 0; i < KEK_CACHE; i++) {
        if (kek_cache[i].used && !memcmp(kek_cache[i].tag, tag, ID_BYTES)) {
            v = i;
            break;
        }
        if (kek_cache[i].used < kek_cache[v].used)
            v = i;
    }
    memcpy(kek_cache[v].tag, tag, ID_BYTES);
    memcpy(kek_cache[v].kek, kek, KEY_BYTES);
    kek_cache[v].used = ++kek_tick;
    pthread_mutex_unlock(&kek_lock);
}

static void kek_forget(const uint8_t tag[ID_BYTES])
{
    pthread_mutex_lock(&kek_lock);
    for (size_t i = 0; i < KEK_CACHE; i++)
        if (kek_cache[i].used && !memcmp(kek_cache[i].tag, tag, ID_BYTES))
            OPENSSL_cleanse(&kek_cache[i], sizeof kek_cache[i]);
    pthread_mutex_unlock(&kek_lock);
}

void objstore_key_cache_clear(void)
{
    pthread_mutex_lock(&kek_lock);
    OPENSSL_cleanse(kek_cache, sizeof kek_cache);
    pthread_mutex_unlock(&kek_lock);
}

int objstore_init(const char *url, const char *passphrase, uint32_t chunk_size, char **ret_err)
{
    if (!passphrase || !*passphrase) {
        set_err(ret_err, "an empty passphrase is not allowed");
        return -EINVAL;
    }
    if (chunk_size == 0)
        chunk_size = OBJSTORE_CHUNK_DEFAULT;
    if (chunk_size < OBJSTORE_CHUNK_MIN || chunk_size > OBJSTORE_CHUNK_MAX ||
        (chunk_size & (chunk_size - 1))) {
        set_err(ret_err, "chunk size %u must be a power of two between 64 KiB and 16 MiB", chunk_size);
        return -EINVAL;
    }
    struct objstore_backend *be = NULL;
    int r = objstore_backend_open(url, &be, ret_err);
    if (r < 0)
        return r;

    uint8_t salt[SALT_BYTES], keys[2 * KEY_BYTES], kek[KEY_BYTES], nonce[12];
    uint8_t wrapped[2 * KEY_BYTES + 16];
    char salt_hex[2 * SALT_BYTES + 1], wrap_hex[2 * WRAP_BYTES + 1], id[37];
    struct buf cfg = {};
    if ((r = random_bytes(salt, sizeof salt)) < 0 || (r = random_bytes(keys, sizeof keys)) < 0 ||
        (r = random_bytes(nonce, sizeof nonce)) < 0)
        goto out;
    if ((r = derive_kek(passphrase, salt, KDF_N, KDF_R, KDF_P, kek)) < 0) {
        set_err(ret_err, "key derivation failed");
        goto out;
    }
    uuid_new(id);
    hex_encode(salt, sizeof salt, salt_hex);
    buf_printf(&cfg, CONFIG_MAGIC "format %d\nid %s\nchunk_size %u\nkdf scrypt\nkdf_n %u\n"
               "kdf_r %u\nkdf_p %u\nkdf_salt %s\ncreated %llu\n",
               OBJSTORE_FORMAT_VERSION, id, chunk_size, KDF_N, KDF_R, KDF_P, salt_hex,
               (unsigned long long)now_real_ns());
    if ((r = aead_seal(kek, nonce, cfg.data, cfg.len, keys, sizeof keys, wrapped)) < 0)
        goto out;
    uint8_t blob[WRAP_BYTES];
    memcpy(blob, nonce, 12);
    memcpy(blob + 12, wrapped, sizeof wrapped);
    hex_encode(blob, sizeof blob, wrap_hex);
    buf_printf(&cfg, "keys %s\n", wrap_hex);

    r = be->ops->put_if_absent(be, "config", cfg.data, cfg.len);
    if (r == 0)
        r = backend_flush(be);
    if (r == -EEXIST)
        set_err(ret_err, "%s already holds a repository", url);
    else if (r < 0)
        set_err(ret_err, "cannot write %s/config: %s", url, strerror(-r));
out:
    OPENSSL_cleanse(keys, sizeof keys);
    OPENSSL_cleanse(kek, sizeof kek);
    buf_free(&cfg);
    objstore_backend_free(be);
    return r;
}

/* Parse the "name value" lines; returns the value of `name` or NULL. */
static const char *cfg_get(char *const *lines, size_t n, const char *name)
{
    size_t l = strlen(name);
    for (size_t i = 0; i < n; i++)
        if (!strncmp(lines[i], name, l) && lines[i][l] == ' ')
            return lines[i] + l + 1;
    return NULL;
}

static int cfg_u64(char *const *lines, size_t n, const char *name, uint64_t lo, uint64_t hi,
                   uint64_t *ret)
{
    const char *v = cfg_get(lines, n, name);
    uint64_t x;
    if (!v || parse_u64(v, &x) < 0 || x < lo || x > hi)
        return -EBADMSG;
    *ret = x;
    return 0;
}

int objstore_open(const char *url, const char *passphrase, struct objstore **ret, char **ret_err)
{
    struct objstore_backend *be = NULL;
    int r = objstore_backend_open(url, &be, ret_err);
    if (r < 0)
        return r;
    struct buf cfg = {};
    char *lines[32];
    size_t nl = 0;
    uint8_t kek[KEY_BYTES], keys[2 * KEY_BYTES], blob[WRAP_BYTES];
    struct objstore *repo = NULL;
    uint8_t *aad = NULL;

    r = be->ops->get(be, "config", CONFIG_MAX, &cfg);
    if (r == -ENOENT) {
        set_err(ret_err, "%s is not a repository (no config object)", url);
        goto out;
    }
    if (r == -ENXIO) {
        set_err(ret_err, "%s: the bucket does not exist", url);
        goto out;
    }
    if (r == -EACCES) {
        set_err(ret_err, "%s: access denied (check the credentials and the region)", url);
        goto out;
    }
    if (r < 0) {
        set_err(ret_err, "cannot read %s/config: %s", url, strerror(-r));
        goto out;
    }
    buf_append(&cfg, "", 1);
    cfg.len--;
    if (cfg.len < strlen(CONFIG_MAGIC) || memcmp(cfg.data, CONFIG_MAGIC, strlen(CONFIG_MAGIC)) ||
        memchr(cfg.data, 0, cfg.len)) {
        set_err(ret_err, "%s/config is not an Amber repository config", url);
        r = -EBADMSG;
        goto out;
    }
    const char *keys_line = strstr((char *)cfg.data, "\nkeys ");
    size_t aad_len = keys_line ? (size_t)(keys_line + 1 - (char *)cfg.data) : 0;
    /* The lines are split in place below: keep the signed bytes intact. */
    aad = xmalloc(aad_len + 1);
    memcpy(aad, cfg.data, aad_len);
    for (char *save = NULL, *l = strtok_r((char *)cfg.data, "\n", &save); l && nl < ARRAY_SIZE(lines);
         l = strtok_r(NULL, "\n", &save))
        lines[nl++] = l;

    uint64_t fmt, cs, n, rr, p;
    if (cfg_u64(lines, nl, "format", 1, UINT32_MAX, &fmt) < 0) {
        set_err(ret_err, "%s/config has no valid format line", url);
        r = -EBADMSG;
        goto out;
    }
    if (fmt < OBJSTORE_FORMAT_VERSION) {
        set_err(ret_err, "repository format %llu is no longer supported (this Amber reads format %d): "
                "restore its snapshots with an older Amber and export them to a new repository",
                (unsigned long long)fmt, OBJSTORE_FORMAT_VERSION);
        r = -EPROTONOSUPPORT;
        goto out;
    }
    if (fmt > OBJSTORE_FORMAT_VERSION) {
        set_err(ret_err, "repository format %llu is newer than this Amber supports (%d): upgrade Amber",
                (unsigned long long)fmt, OBJSTORE_FORMAT_VERSION);
        r = -EPROTONOSUPPORT;
        goto out;
    }
    const char *kdf = cfg_get(lines, nl, "kdf"), *salt_hex = cfg_get(lines, nl, "kdf_salt");
    const char *wrap_hex = cfg_get(lines, nl, "keys"), *id = cfg_get(lines, nl, "id");
    uint8_t salt[SALT_BYTES];
    if (!aad_len || !kdf || strcmp(kdf, "scrypt") || !salt_hex || !wrap_hex || !id ||
        !uuid_is_valid(id) ||
        cfg_u64(lines, nl, "chunk_size", OBJSTORE_CHUNK_MIN, OBJSTORE_CHUNK_MAX, &cs) < 0 ||
        (cs & (cs - 1)) ||
        cfg_u64(lines, nl, "kdf_n", 1024, 1u << 22, &n) < 0 || (n & (n - 1)) ||
        cfg_u64(lines, nl, "kdf_r", 1, 32, &rr) < 0 || cfg_u64(lines, nl, "kdf_p", 1, 16, &p) < 0 ||
        128 * rr * n > (1ull << 30) ||
        hex_decode(salt_hex, salt, sizeof salt) < 0 || hex_decode(wrap_hex, blob, sizeof blob) < 0) {
        set_err(ret_err, "%s/config is malformed", url);
        r = -EBADMSG;
        goto out;
    }
    if (!passphrase || !*passphrase) {
        set_err(ret_err, "no passphrase given");
        r = -EKEYREJECTED;
        goto out;
    }
    uint8_t tag[ID_BYTES];
    bool tagged = kek_tag(passphrase, salt, n, rr, p, tag), cached = tagged && kek_lookup(tag, kek);
    if (!cached && (r = derive_kek(passphrase, salt, n, rr, p, kek)) < 0) {
        set_err(ret_err, "key derivation failed");
        goto out;
    }
    r = aead_open(kek, blob, aad, aad_len, blob + 12, WRAP_BYTES - 12, keys);
    if (tagged && r == 0 && !cached)
        kek_remember(tag, kek);
    else if (cached && r < 0)
        kek_forget(tag);
    if (r == -EBADMSG) {
        set_err(ret_err, "wrong passphrase (or a damaged repository config)");
        r = -EKEYREJECTED;
        goto out;
    }
    if (r < 0)
        goto out;
    repo = xcalloc(1, sizeof *repo);
    pthread_mutex_init(&repo->ilock, NULL);
    pthread_mutex_init(&repo->clock, NULL);
    repo->be = TAKE_PTR(be);
    memcpy(repo->keys.data, keys, KEY_BYTES);
    memcpy(repo->keys.mac, keys + KEY_BYTES, KEY_BYTES);
    repo->chunk_size = (uint32_t)cs;
    snprintf(repo->repo_id, sizeof repo->repo_id, "%s", id);
    *ret = TAKE_PTR(repo);
    r = 0;
out:
    OPENSSL_cleanse(kek, sizeof kek);
    OPENSSL_cleanse(keys, sizeof keys);
    free(aad);
    buf_free(&cfg);
    objstore_backend_free(be);
    return r;
}

void objstore_close(struct objstore *repo)
{
    if (!repo)
        return;
    objstore_backend_free(repo->be);
    index_free(repo);
    cache_free(repo);
    pthread_mutex_destroy(&repo->ilock);
    pthread_mutex_destroy(&repo->clock);
    OPENSSL_cleanse(&repo->keys, sizeof repo->keys);
    free(repo);
}

uint32_t objstore_chunk_size(const struct objstore *repo)
{
    return repo->chunk_size;
}

struct objstore_backend *objstore_get_backend(struct objstore *repo)
{
    return repo->be;
}

struct lock_scan {
    const char *conflict;
    const char *own;
    int64_t now;
    bool found;
    char *stale[16];        /* leftovers of dead holders, removed after */
    size_t nstale;
};

static int lock_scan_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct lock_scan *s = ud;
    const char *name = key + strlen("locks/");
    if (!strcmp(key, s->own))
        return 0;
    if (st->mtime <= s->now - LOCK_STALE_S) {
        if (s->nstale < ARRAY_SIZE(s->stale))
            s->stale[s->nstale++] = xstrdup(key);
        return 0;
    }
    if (s->conflict && !strncmp(name, s->conflict, strlen(s->conflict)) &&
        name[strlen(s->conflict)] == '-')
        s->found = true;
    return 0;
}

int repo_lock(struct objstore *r, const char *kind, const char *conflict, char **ret_key)
{
    char u[37], host[256] = "";
    uuid_new(u);
    gethostname(host, sizeof host - 1);
    _cleanup_free_ char *key = xasprintf("locks/%s-%s", kind, u);
    _cleanup_free_ char *body = xasprintf("host %s\npid %d\nstart %llu\n", host, (int)getpid(),
                                          (unsigned long long)now_real_ns());
    int rc = r->be->ops->put(r->be, key, body, strlen(body));
    if (rc < 0)
        return rc;
    /* Ours is visible before we look, so of two racing holders at least
     * one sees the other: both may back off, never both proceed. */
    struct lock_scan s = { .conflict = conflict, .own = key, .now = (int64_t)(now_real_ns() / 1000000000) };
    rc = r->be->ops->list(r->be, "locks/", lock_scan_cb, &s);
    for (size_t i = 0; i < s.nstale; i++) {
        r->be->ops->del(r->be, s.stale[i]);
        free(s.stale[i]);
    }
    if (rc == 0 && s.found)
        rc = -EBUSY;
    if (rc < 0) {
        r->be->ops->del(r->be, key);
        return rc;
    }
    *ret_key = TAKE_PTR(key);
    return 0;
}

int repo_lock_refresh(struct objstore *r, const char *key)
{
    /* Keep the body (its start time); rewrite it to bump the mtime. */
    struct buf b = {};
    int rc = r->be->ops->get(r->be, key, 4096, &b);
    if (rc == 0)
        rc = r->be->ops->put(r->be, key, b.data, b.len);
    buf_free(&b);
    return rc;
}

struct started_scan {
    struct objstore *r;
    const char *kind;
    int64_t now;
    uint64_t *v;
    size_t n;
};

static int started_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct started_scan *s = ud;
    const char *name = key + strlen("locks/");
    size_t kl = strlen(s->kind);
    if (strncmp(name, s->kind, kl) || name[kl] != '-' || st->mtime <= s->now - LOCK_STALE_S)
        return 0;
    struct buf b = {};
    uint64_t start = 0;     /* unreadable or old-style: as old as can be */
    if (s->r->be->ops->get(s->r->be, key, 4096, &b) == 0) {
        buf_append(&b, "", 1);
        const char *p = strstr((char *)b.data, "\nstart ");
        if (p)
            start = strtoull(p + 7, NULL, 10);
    } else {
        buf_free(&b);
        return 0;           /* gone meanwhile */
    }
    buf_free(&b);
    s->v = xrealloc(s->v, (s->n + 1) * sizeof *s->v);
    s->v[s->n++] = start;
    return 0;
}

int repo_locks_started(struct objstore *r, const char *kind, uint64_t **ret, size_t *ret_n)
{
    struct started_scan s = { .r = r, .kind = kind, .now = (int64_t)(now_real_ns() / 1000000000) };
    int rc = r->be->ops->list(r->be, "locks/", started_cb, &s);
    if (rc < 0) {
        free(s.v);
        return rc;
    }
    *ret = s.v;
    *ret_n = s.n;
    return 0;
}

void repo_unlock(struct objstore *r, const char *key)
{
    if (key)
        r->be->ops->del(r->be, key);
}

uint64_t repo_lock_refresh_ns(void)
{
    return (uint64_t)LOCK_REFRESH_S * 1000000000ull;
}
