/* fuzz-peer: libFuzzer target over the receiving side's handling of the
 * sender's messages (snapd/sync/sync-piece.c: sync_piece_decode, the part that
 * reads what a peer sends before anything touches the disk).
 * The first byte picks the mode:
 *   even: the rest is a SendMsg as it comes off the wire: unpacked, and a
 *         Data piece checked and decoded (segments against the volume
 *         size, the zstd frame, the checksum) into a piece buffer;
 *   odd:  the rest is raw data: it is cut into segments, hashed and
 *         compressed as the sender does, and must decode to the same
 *         bytes (a zstd and hash round trip); a changed byte of the frame
 *         must never yield other bytes, a moved segment must fail.
 * Any crash, leak, sanitizer report or round-trip mismatch is a finding. */
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "amber/util.h"
#include "snapd/sync/peer.h"

#define PIECE (256u << 10)

static uint8_t out[PIECE];

static void wire(const uint8_t *p, size_t n)
{
    Amber__Peer__V1__SendMsg *m = amber__peer__v1__send_msg__unpack(NULL, n, p);
    if (!m)
        return;
    if (m->m_case == AMBER__PEER__V1__SEND_MSG__M_DATA) {
        const char *why = NULL;
        uint64_t vol = n > 8 ? ((uint64_t)p[0] << 20) | ((uint64_t)p[1] << 12) : 1u << 20;
        (void)sync_piece_decode(m->data, PIECE, vol, out, &why);
    }
    protobuf_c_message_free_unpacked(&m->base, NULL);
}

static void round_trip(const uint8_t *p, size_t n)
{
    if (n < 2)
        return;
    size_t raw_len = MIN(n - 1, (size_t)PIECE);
    const uint8_t *raw = p + 1;
    /* Segments: lengths taken from the data itself. */
    uint64_t offs[64], lens[64];
    size_t nseg = 0, left = raw_len;
    uint64_t off = 0;
    while (left > 0 && nseg < 64) {
        size_t len = nseg == 63 ? left : MIN(left, (size_t)(raw[nseg % raw_len] + 1) * 97);
        offs[nseg] = off;
        lens[nseg] = len;
        off += len + 4096;
        left -= len;
        nseg++;
    }
    uint8_t h[SYNC_DIGEST_LEN];
    sync_piece_hash(offs, lens, nseg, raw, raw_len, h);
    size_t zcap = ZSTD_compressBound(raw_len);
    uint8_t *z = malloc(zcap);
    size_t zn = ZSTD_compress(z, zcap, raw, raw_len, 1);
    if (ZSTD_isError(zn))
        abort();
    Amber__Peer__V1__Segment seg[64], *pseg[64];
    for (size_t i = 0; i < nseg; i++) {
        Amber__Peer__V1__Segment s = AMBER__PEER__V1__SEGMENT__INIT;
        s.offset = offs[i];
        s.length = lens[i];
        seg[i] = s;
        pseg[i] = &seg[i];
    }
    Amber__Peer__V1__Data d = AMBER__PEER__V1__DATA__INIT;
    d.segments = pseg;
    d.n_segments = nseg;
    d.raw_len = (uint32_t)raw_len;
    d.zdata = (ProtobufCBinaryData){ zn, z };
    d.sha256 = (ProtobufCBinaryData){ SYNC_DIGEST_LEN, h };
    const char *why = NULL;
    /* Pack and unpack, as the wire would. */
    size_t plen = protobuf_c_message_get_packed_size(&d.base);
    uint8_t *pk = malloc(plen);
    protobuf_c_message_pack(&d.base, pk);
    Amber__Peer__V1__Data *u = amber__peer__v1__data__unpack(NULL, plen, pk);
    if (!u || sync_piece_decode(u, PIECE, off + 1, out, &why) != 0 || memcmp(out, raw, raw_len))
        abort();
    /* A flipped byte of the frame is caught, or harmless (a bit zstd does
     * not use): never a piece accepted with other bytes. A moved segment
     * is always caught (the checksum covers where bytes go). */
    u->zdata.data[p[0] % u->zdata.len] ^= 0x5a;
    if (sync_piece_decode(u, PIECE, off + 1, out, &why) == 0 && memcmp(out, raw, raw_len))
        abort();
    u->zdata.data[p[0] % u->zdata.len] ^= 0x5a;
    u->segments[0]->offset += 4096;
    if (sync_piece_decode(u, PIECE, off + 1 + 4096, out, &why) == 0)
        abort();
    amber__peer__v1__data__free_unpacked(u, NULL);
    free(pk);
    free(z);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1)
        round_trip(data + 1, size - 1);
    else
        wire(data + 1, size - 1);
    return 0;
}
