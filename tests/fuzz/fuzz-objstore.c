/* fuzz-objstore.c: the objstore's parsers on hostile input: S3
 * ListObjectsV2 replies and element lookup (what a server or proxy sends),
 * manifest decoding and sealed-object opening (what a store holds). The
 * first input byte picks the parser. None may crash, leak or read out of
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
    switch (data[0] % 4) {
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
        break;
    }
    }
    return 0;
}
