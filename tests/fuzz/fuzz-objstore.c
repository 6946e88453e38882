/* fuzz-objstore.c: the objstore's parsers on hostile input: S3
 * ListObjectsV2 replies and element lookup (what a server or proxy sends),
 * manifest, pack index and map node (leaf, inner) decoding and
 * sealed-object opening (what a store holds). The first input byte picks
 * the parser; every decoder that accepts an input must encode it back to
 * the same bytes. None may crash, leak or read out of
 * bounds; each must return a clean error or a well-formed result. */
#include <string.h>

#include "objstore/internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 7) {
    case 0: {
        struct s3_list_page pg = {};
        if (s3_xml_parse_list((const char *)p, n, &pg) == 0)
            for (size_t i = 0; i < pg.n; i++)
                if (!pg.entries[i].key)
                    __builtin_trap();
        s3_list_page_free(&pg);
        break;
    }
    case 1: {
        free(s3_xml_find((const char *)p, n, "UploadId"));
        free(s3_xml_find((const char *)p, n, "Code"));
        break;
    }
    case 2: {
        struct manifest m = {};
        if (manifest_decode(p, n, &m) == 0) {
            struct buf b = {};
            if (manifest_encode(&m, &b) < 0 || b.len != n || memcmp(b.data, p, n))
                __builtin_trap();   /* decode then encode is the identity */
            buf_free(&b);
        }
        manifest_free(&m);
        break;
    }
    case 3: {
        static const struct repo_keys k = { .data = { 1 }, .mac = { 2 } };
        uint8_t id[ID_BYTES] = { 3 };
        struct buf out = {};
        sealed_unpack(&k, SEALED_CHUNK, id, p, n, 1 << 20, &out);
        buf_free(&out);
        uint8_t *dst = malloc(4096);
        if (dst)
            sealed_unpack_into(&k, SEALED_CHUNK, id, p, n, dst, 4096);
        free(dst);
        break;
    }
    case 4: {
        struct index_obj x = {};
        if (index_decode(p, n, &x) == 0) {
            struct buf b = {};
            if (index_encode(&x, &b) < 0 || b.len != n || memcmp(b.data, p, n))
                __builtin_trap();
            buf_free(&b);
        }
        index_obj_free(&x);
        break;
    }
    case 5: {
        struct leaf l = {};
        if (leaf_decode(p, n, (uint64_t)LEAF_SPAN * 3, &l) == 0) {
            struct buf b = {};
            for (size_t i = 0; i < l.n; i++)
                if (l.e[i].off < l.start || l.e[i].off + l.e[i].len > l.start + LEAF_SPAN ||
                    (i && l.e[i].off < l.e[i - 1].off + l.e[i - 1].len))
                    __builtin_trap();
            if (leaf_encode(&l, &b) < 0 || b.len != n || memcmp(b.data, p, n))
                __builtin_trap();
            buf_free(&b);
        }
        leaf_free(&l);
        break;
    }
    case 6: {
        uint8_t (*ch)[ID_BYTES] = malloc((size_t)FANOUT * ID_BYTES);
        unsigned level = n ? p[0] % 5 : 1;
        if (ch && n && inner_decode(p + 1, n - 1, level, ch) == 0) {
            struct buf b = {};
            if (inner_encode(level, ch, &b) < 0 || b.len != n - 1 || memcmp(b.data, p + 1, n - 1))
                __builtin_trap();
            buf_free(&b);
        }
        free(ch);
        break;
    }
    }
    return 0;
}
