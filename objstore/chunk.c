/* chunk.c: ids, compression and encryption of stored objects.
 *
 * Every blob (piece, block digests of a piece, map node), pack index and
 * manifest is stored "sealed":
 *
 *   offset size
 *   0      4    magic "AMBO"
 *   4      1    object format version (1)
 *   5      1    type (1 piece, 2 manifest, 3 node, 4 index, 5 digests)
 *   6      1    compression (0 none, 1 zstd)
 *   7      1    reserved, 0
 *   8      4    plaintext length, little endian
 *   12     12   random GCM nonce (fresh for every object written)
 *   24     n    AES-256-GCM ciphertext of the (compressed) plaintext
 *   24+n   16   GCM tag
 *
 * The associated data is the 24-byte header followed by the object's
 * 32-byte id, so a header cannot be altered and an object cannot be moved to
 * another id's name without failing authentication. A piece's id is
 * HMAC-SHA256(mac key, "amber-piece" || length || block digests), where the
 * block digests are 16 bytes of SHA-256 of each 4 KiB block: the data is
 * hashed once, the digests double as the unit of change detection, equal
 * data dedups, and ids say nothing about the data to whoever holds the
 * store (the digests themselves are stored sealed). zstd is skipped when it does not
 * shrink the data (random or already compressed blocks), which saves its
 * decompression on restore; for pieces of 128 KiB and more two small
 * samples decide that, which saves the compression too. zstd level 1: on
 * text it is ~1.5x faster than level 3 for ~12 % more bytes, and compression
 * is most of an export's CPU (readers do not care about the level). OpenSSL, zstd and libc errors become negative
 * errno here. */
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <zstd.h>

#include "amber/crashpoint.h"
#include "internal.h"

#define SEAL_MAGIC "AMBO"
#define SEAL_VERSION 1
#define SEAL_HDR 24
#define TAG_BYTES 16
#define ZSTD_LEVEL 1

enum { COMP_NONE = 0, COMP_ZSTD = 1 };

static pthread_key_t cctx_key, dctx_key;
static pthread_once_t ctx_once = PTHREAD_ONCE_INIT;

static void cctx_free(void *p) { ZSTD_freeCCtx(p); }
static void dctx_free(void *p) { ZSTD_freeDCtx(p); }
static void ctx_keys_init(void)
{
    pthread_key_create(&cctx_key, cctx_free);
    pthread_key_create(&dctx_key, dctx_free);
}

/* One zstd context a thread, freed when the thread exits. */
static ZSTD_CCtx *thread_cctx(void)
{
    pthread_once(&ctx_once, ctx_keys_init);
    ZSTD_CCtx *c = pthread_getspecific(cctx_key);
    if (!c) {
        c = ZSTD_createCCtx();
        if (c)
            pthread_setspecific(cctx_key, c);
    }
    return c;
}

static ZSTD_DCtx *thread_dctx(void)
{
    pthread_once(&ctx_once, ctx_keys_init);
    ZSTD_DCtx *d = pthread_getspecific(dctx_key);
    if (!d) {
        d = ZSTD_createDCtx();
        if (d)
            pthread_setspecific(dctx_key, d);
    }
    return d;
}

int random_bytes(void *p, size_t n)
{
    return RAND_bytes(p, (int)n) == 1 ? 0 : -EIO;
}

void id_hmac(const struct repo_keys *k, const void *domain, size_t dlen,
             const void *data, size_t len, uint8_t out[ID_BYTES])
{
    /* HMAC(key, domain || data); chunks use an empty domain so that a chunk
     * id is exactly HMAC-SHA256(key, plaintext). */
    unsigned olen = ID_BYTES;
    if (dlen == 0) {
        HMAC(EVP_sha256(), k->mac, KEY_BYTES, data, len, out, &olen);
        return;
    }
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    size_t outl = ID_BYTES;
    if (!ctx || !EVP_MAC_init(ctx, k->mac, KEY_BYTES, params) ||
        !EVP_MAC_update(ctx, domain, dlen) || !EVP_MAC_update(ctx, data, len) ||
        !EVP_MAC_final(ctx, out, &outl, ID_BYTES))
        memset(out, 0, ID_BYTES);   /* cannot happen with a working libcrypto */
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
}

void id_to_hex(const uint8_t id[ID_BYTES], char out[OBJSTORE_ID_LEN + 1])
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < ID_BYTES; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[OBJSTORE_ID_LEN] = 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

int id_from_hex(const char *hex, uint8_t out[ID_BYTES])
{
    if (!hex || strlen(hex) != OBJSTORE_ID_LEN)
        return -EINVAL;
    for (size_t i = 0; i < ID_BYTES; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -EINVAL;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

bool mem_is_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    /* Word at a time after a byte check of the head. */
    while (n && ((uintptr_t)b & 7)) {
        if (*b)
            return false;
        b++, n--;
    }
    const uint64_t *w = (const uint64_t *)(const void *)b;
    for (; n >= 8; n -= 8, w++)
        if (*w)
            return false;
    b = (const uint8_t *)w;
    while (n--)
        if (*b++)
            return false;
    return true;
}

bool id_is_zero(const uint8_t id[ID_BYTES])
{
    return mem_is_zero(id, ID_BYTES);
}

char *chunk_key(const uint8_t id[ID_BYTES])
{
    char hex[OBJSTORE_ID_LEN + 1];
    id_to_hex(id, hex);
    return xasprintf("chunks/%.2s/%s", hex, hex);
}

int aead_seal(const uint8_t key[KEY_BYTES], const uint8_t nonce[12], const void *aad, size_t alen,
              const void *plain, size_t len, uint8_t *out)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l, ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) &&
                EVP_EncryptUpdate(c, NULL, &l, aad, (int)alen) &&
                EVP_EncryptUpdate(c, out, &l, plain, (int)len) &&
                EVP_EncryptFinal_ex(c, out + l, &l) &&
                EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_BYTES, out + len);
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -EIO;
}

int aead_open(const uint8_t key[KEY_BYTES], const uint8_t nonce[12], const void *aad, size_t alen,
              const void *ct, size_t len, uint8_t *out)
{
    if (len < TAG_BYTES)
        return -EBADMSG;
    size_t n = len - TAG_BYTES;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c)
        return -ENOMEM;
    int l, r = -EIO;
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) &&
        EVP_DecryptUpdate(c, NULL, &l, aad, (int)alen) &&
        EVP_DecryptUpdate(c, out, &l, ct, (int)n) &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_BYTES, (uint8_t *)ct + n))
        r = EVP_DecryptFinal_ex(c, out + l, &l) > 0 ? 0 : -EBADMSG;
    EVP_CIPHER_CTX_free(c);
    return r;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = v & 0xff, p[1] = (v >> 8) & 0xff, p[2] = (v >> 16) & 0xff, p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Is a large plaintext not worth compressing? Two 16 KiB samples (its
 * start and its middle) that zstd's fastest level cannot shrink by 3 % say
 * so: random or already compressed data, half of a typical volume, then
 * costs a few percent of a full compression. */
#define SAMPLE (16u << 10)
static bool incompressible(ZSTD_CCtx *cctx, uint8_t *z, size_t bound, const uint8_t *p, size_t len)
{
    if (len < 8 * SAMPLE)
        return false;
    const uint8_t *at[2] = { p, p + len / 2 };
    for (int i = 0; i < 2; i++) {
        size_t n = ZSTD_compressCCtx(cctx, z, bound, at[i], SAMPLE, 1);
        if (ZSTD_isError(n) || n < SAMPLE - SAMPLE / 32)
            return false;
    }
    return true;
}

int sealed_pack(const struct repo_keys *k, enum sealed_type type, const uint8_t id[ID_BYTES],
                const void *plain, size_t len, struct buf *out)
{
    if (len > UINT32_MAX)
        return -EFBIG;
    /* Compress into a scratch buffer; keep it only if it is smaller. */
    size_t bound = ZSTD_compressBound(len);
    _cleanup_free_ uint8_t *z = xmalloc(bound);
    ZSTD_CCtx *cctx = thread_cctx();
    if (!cctx)
        return -ENOMEM;
    size_t zl = len;
    if (!incompressible(cctx, z, bound, plain, len)) {
        zl = ZSTD_compressCCtx(cctx, z, bound, plain, len, ZSTD_LEVEL);
        if (ZSTD_isError(zl))
            return -EIO;
    }
    bool comp = zl < len;
    const void *body = comp ? z : plain;
    size_t blen = comp ? zl : len;

    uint8_t aad[SEAL_HDR + ID_BYTES];
    memcpy(aad, SEAL_MAGIC, 4);
    aad[4] = SEAL_VERSION;
    aad[5] = (uint8_t)type;
    aad[6] = comp ? COMP_ZSTD : COMP_NONE;
    aad[7] = 0;
    put_le32(aad + 8, (uint32_t)len);
    int r = random_bytes(aad + 12, 12);
    if (r < 0)
        return r;
    memcpy(aad + SEAL_HDR, id, ID_BYTES);

    buf_reserve(out, SEAL_HDR + blen + TAG_BYTES);
    memcpy(out->data + out->len, aad, SEAL_HDR);
    r = aead_seal(k->data, aad + 12, aad, sizeof aad, body, blen, out->data + out->len + SEAL_HDR);
    if (r < 0)
        return r;
    out->len += SEAL_HDR + blen + TAG_BYTES;
    return 0;
}

int sealed_unpack(const struct repo_keys *k, enum sealed_type type, const uint8_t id[ID_BYTES],
                  const void *stored, size_t len, size_t max, struct buf *out)
{
    const uint8_t *s = stored;
    out->len = 0;
    if (len < SEAL_HDR + TAG_BYTES || memcmp(s, SEAL_MAGIC, 4) != 0)
        return -EBADMSG;
    if (s[4] != SEAL_VERSION)
        return -EPROTONOSUPPORT;
    if (s[5] != type || s[6] > COMP_ZSTD || s[7] != 0)
        return -EBADMSG;
    uint32_t plen = get_le32(s + 8);
    if (plen > max)
        return -EBADMSG;
    size_t clen = len - SEAL_HDR - TAG_BYTES;
    /* Stored data is compressed or not: it can never exceed the bound. */
    if (clen > ZSTD_compressBound(plen))
        return -EBADMSG;

    uint8_t aad[SEAL_HDR + ID_BYTES];
    memcpy(aad, s, SEAL_HDR);
    memcpy(aad + SEAL_HDR, id, ID_BYTES);
    _cleanup_free_ uint8_t *dec = xmalloc(clen ? clen : 1);
    int r = aead_open(k->data, s + 12, aad, sizeof aad, s + SEAL_HDR, len - SEAL_HDR, dec);
    if (r < 0)
        return r;

    buf_reserve(out, plen ? plen : 1);
    if (s[6] == COMP_NONE) {
        if (clen != plen)
            return -EBADMSG;
        memcpy(out->data, dec, plen);
    } else {
        ZSTD_DCtx *d = thread_dctx();
        if (!d)
            return -ENOMEM;
        size_t n = ZSTD_decompressDCtx(d, out->data, plen, dec, clen);
        if (ZSTD_isError(n) || n != plen)
            return -EBADMSG;
    }
    out->len = plen;
    return 0;
}

int sealed_unpack_into(const struct repo_keys *k, enum sealed_type type, const uint8_t id[ID_BYTES],
                       const void *stored, size_t len, void *dst, size_t plen)
{
    const uint8_t *s = stored;
    if (len < SEAL_HDR + TAG_BYTES || memcmp(s, SEAL_MAGIC, 4) != 0)
        return -EBADMSG;
    if (s[4] != SEAL_VERSION)
        return -EPROTONOSUPPORT;
    if (s[5] != type || s[6] > COMP_ZSTD || s[7] != 0 || get_le32(s + 8) != plen)
        return -EBADMSG;
    size_t clen = len - SEAL_HDR - TAG_BYTES;
    if (clen > ZSTD_compressBound(plen))
        return -EBADMSG;
    uint8_t aad[SEAL_HDR + ID_BYTES];
    memcpy(aad, s, SEAL_HDR);
    memcpy(aad + SEAL_HDR, id, ID_BYTES);
    if (s[6] == COMP_NONE) {
        /* Decrypt in place into the destination: no copy. */
        if (clen != plen)
            return -EBADMSG;
        return aead_open(k->data, s + 12, aad, sizeof aad, s + SEAL_HDR, len - SEAL_HDR, dst);
    }
    _cleanup_free_ uint8_t *dec = xmalloc(clen ? clen : 1);
    int r = aead_open(k->data, s + 12, aad, sizeof aad, s + SEAL_HDR, len - SEAL_HDR, dec);
    if (r < 0)
        return r;
    ZSTD_DCtx *d = thread_dctx();
    if (!d)
        return -ENOMEM;
    size_t n = ZSTD_decompressDCtx(d, dst, plen, dec, clen);
    if (ZSTD_isError(n) || n != plen)
        return -EBADMSG;
    return 0;
}

void block_digests(const void *data, size_t len, uint8_t *out)
{
    const uint8_t *p = data;
    uint8_t h[SHA256_DIGEST_LENGTH];
    for (size_t off = 0; off < len; off += OBJSTORE_BLOCK) {
        SHA256(p + off, MIN((size_t)OBJSTORE_BLOCK, len - off), h);
        memcpy(out, h, DIGEST_BYTES);
        out += DIGEST_BYTES;
    }
}

void piece_id(const struct repo_keys *k, const uint8_t *digests, uint64_t len, uint8_t out[ID_BYTES])
{
    size_t nd = (size_t)((len + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK) * DIGEST_BYTES;
    uint8_t hdr[20] = "amber-piece\0";
    for (int i = 0; i < 8; i++)
        hdr[12 + i] = (uint8_t)(len >> (8 * i));
    id_hmac(k, hdr, sizeof hdr, digests, nd, out);
}

void node_id(const struct repo_keys *k, const void *plain, size_t len, uint8_t out[ID_BYTES])
{
    static const char dom[] = "amber-node";
    id_hmac(k, dom, sizeof dom, plain, len, out);
}

void index_object_id(const struct repo_keys *k, const void *plain, size_t len, uint8_t out[ID_BYTES])
{
    static const char dom[] = "amber-index";
    id_hmac(k, dom, sizeof dom, plain, len, out);
}

void os_crashpoint(const char *name)
{
    /* Counted here (one armed point a process): AMBER_CRASH_AT=NAME:N kills
     * at the Nth pass. */
    static atomic_ullong hits;
    if (crashpoint_armed(name))
        crashpoint_n(name, atomic_fetch_add(&hits, 1) + 1);
}
