/* sync-piece.c: the piece format of a transfer, shared by both engines
 * and the fuzzer. A piece is up to piece_size bytes of a snapshot's
 * stream: the segments (offset, length) of the volume it covers, their
 * bytes zstd-compressed, and a SHA-256 over the segment list and the raw
 * bytes; the running digest of a snapshot chains the piece hashes. Pure
 * code, no I/O: decoding checks everything a hostile sender could get
 * wrong before a byte is written. */
#include <string.h>
#include <openssl/evp.h>
#include <zstd.h>

#include "amber/util.h"
#include "snapd/sync/sync.h"

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void sync_piece_hash(const uint64_t *offs, const uint64_t *lens, size_t n, const uint8_t *raw,
                     size_t raw_len, uint8_t out[SYNC_DIGEST_LEN])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned len = SYNC_DIGEST_LEN;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    for (size_t i = 0; i < n; i++) {
        uint8_t h[16];
        le64(h, offs[i]);
        le64(h + 8, lens[i]);
        EVP_DigestUpdate(c, h, sizeof h);
    }
    EVP_DigestUpdate(c, raw, raw_len);
    EVP_DigestFinal_ex(c, out, &len);
    EVP_MD_CTX_free(c);
}

void sync_digest_step(uint8_t d[SYNC_DIGEST_LEN], const uint8_t piece[SYNC_DIGEST_LEN])
{
    uint8_t in[2 * SYNC_DIGEST_LEN];
    unsigned len = SYNC_DIGEST_LEN;
    memcpy(in, d, SYNC_DIGEST_LEN);
    memcpy(in + SYNC_DIGEST_LEN, piece, SYNC_DIGEST_LEN);
    EVP_Digest(in, sizeof in, d, &len, EVP_sha256(), NULL);
}

int sync_piece_decode(const Amber__Peer__V1__Data *m, uint32_t piece_size, uint64_t vol_size,
                      uint8_t *out, const char **why)
{
    if (m->raw_len == 0 || m->raw_len > piece_size)
        return *why = "piece length out of range", -EBADMSG;
    if (m->n_segments == 0 || m->n_segments > m->raw_len)
        return *why = "bad segment count", -EBADMSG;
    if (m->sha256.len != SYNC_DIGEST_LEN)
        return *why = "bad checksum length", -EBADMSG;
    uint64_t sum = 0;
    for (size_t i = 0; i < m->n_segments; i++) {
        const Amber__Peer__V1__Segment *s = m->segments[i];
        if (s->length == 0 || s->length > m->raw_len || s->offset > vol_size ||
            s->length > vol_size - s->offset)
            return *why = "segment outside the volume", -EBADMSG;
        sum += s->length;
        if (sum > m->raw_len)
            return *why = "segments longer than the piece", -EBADMSG;
    }
    if (sum != m->raw_len)
        return *why = "segments shorter than the piece", -EBADMSG;
    unsigned long long fcs = ZSTD_getFrameContentSize(m->zdata.data, m->zdata.len);
    if (fcs != m->raw_len)
        return *why = "bad zstd frame", -EBADMSG;
    size_t n = ZSTD_decompress(out, piece_size, m->zdata.data, m->zdata.len);
    if (ZSTD_isError(n) || n != m->raw_len)
        return *why = "bad zstd frame", -EBADMSG;
    uint64_t stack_o[32] = {0}, stack_l[32] = {0};
    uint64_t *o = stack_o, *l = stack_l;
    if (m->n_segments > 32) {
        o = xcalloc(m->n_segments, sizeof *o);
        l = xcalloc(m->n_segments, sizeof *l);
    }
    for (size_t i = 0; i < m->n_segments; i++) {
        o[i] = m->segments[i]->offset;
        l[i] = m->segments[i]->length;
    }
    uint8_t h[SYNC_DIGEST_LEN];
    sync_piece_hash(o, l, m->n_segments, out, n, h);
    if (o != stack_o) {
        free(o);
        free(l);
    }
    if (memcmp(h, m->sha256.data, SYNC_DIGEST_LEN) != 0)
        return *why = "piece checksum mismatch", -EILSEQ;
    return 0;
}
