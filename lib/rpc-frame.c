/* rpc-frame.c: the gRPC wire format above HTTP/2: the 5-byte message prefix
 * (compressed flag + big-endian length), status codes, the grpc-timeout and
 * grpc-message header encodings. Pure functions and one incremental parser,
 * shared by server and client and fuzzed on their own. */
#include <ctype.h>
#include <errno.h>
#include <string.h>

#include "rpc-internal.h"

static const char *const code_names[] = {
    "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
    "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
};

const char *rpc_code_name(int code)
{
    if (code < 0 || (size_t)code >= ARRAY_SIZE(code_names))
        return "UNKNOWN";
    return code_names[code];
}

int rpc_code_from_errno(int negerrno)
{
    switch (-negerrno) {
    case 0: return RPC_OK;
    case ENOENT: case ENODEV: case ENXIO: return RPC_NOT_FOUND;
    case EEXIST: return RPC_ALREADY_EXISTS;
    case EINVAL: case ENAMETOOLONG: case EBADMSG: return RPC_INVALID_ARGUMENT;
    case ENOSPC: case EDQUOT: case ENOMEM: case EMFILE: case ENFILE: case EMSGSIZE: case E2BIG:
        return RPC_RESOURCE_EXHAUSTED;
    case EBUSY: case EAGAIN: case EDEADLK: return RPC_ABORTED;
    case EPERM: case EACCES: case EROFS: return RPC_PERMISSION_DENIED;
    case ERANGE: case EFBIG: case EOVERFLOW: return RPC_OUT_OF_RANGE;
    case ENOSYS: case EOPNOTSUPP: return RPC_UNIMPLEMENTED;
    case ETIMEDOUT: case ETIME: return RPC_DEADLINE_EXCEEDED;
    case ECANCELED: return RPC_CANCELLED;
    case ECONNREFUSED: case ECONNRESET: case EHOSTUNREACH: case ENETUNREACH: case EPIPE:
    case ENOTCONN:
        return RPC_UNAVAILABLE;
    case ENOTEMPTY: case ENOTDIR: case EISDIR: case ESTALE: case ENOTRECOVERABLE:
        return RPC_FAILED_PRECONDITION;
    case EKEYREJECTED: case ENOKEY: case EKEYEXPIRED: return RPC_UNAUTHENTICATED;
    case EUCLEAN: case EILSEQ: return RPC_DATA_LOSS;
    default: return RPC_INTERNAL;
    }
}

int rpc_errno_from_code(int code)
{
    switch (code) {
    case RPC_OK: return 0;
    case RPC_CANCELLED: return -ECANCELED;
    case RPC_INVALID_ARGUMENT: return -EINVAL;
    case RPC_DEADLINE_EXCEEDED: return -ETIMEDOUT;
    case RPC_NOT_FOUND: return -ENOENT;
    case RPC_ALREADY_EXISTS: return -EEXIST;
    case RPC_PERMISSION_DENIED: return -EACCES;
    case RPC_RESOURCE_EXHAUSTED: return -ENOSPC;
    case RPC_FAILED_PRECONDITION: return -ENOTRECOVERABLE;
    case RPC_ABORTED: return -EBUSY;
    case RPC_OUT_OF_RANGE: return -ERANGE;
    case RPC_UNIMPLEMENTED: return -EOPNOTSUPP;
    case RPC_UNAVAILABLE: return -ECONNREFUSED;
    case RPC_DATA_LOSS: return -EUCLEAN;
    case RPC_UNAUTHENTICATED: return -EKEYREJECTED;
    default: return -EREMOTEIO;
    }
}

void rpc_status_clear(struct rpc_status *st)
{
    if (!st)
        return;
    free(st->message);
    st->message = NULL;
    st->code = 0;
}

int grpc_reader_feed(struct grpc_reader *r, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (!r->cur) {
            size_t take = MIN(n, 5 - r->hdr_have);
            memcpy(r->hdr + r->hdr_have, p, take);
            r->hdr_have += take;
            p += take;
            n -= take;
            if (r->hdr_have < 5)
                return 0;
            if (r->hdr[0] != 0)
                return -EPROTONOSUPPORT;
            uint32_t len = (uint32_t)r->hdr[1] << 24 | (uint32_t)r->hdr[2] << 16 |
                           (uint32_t)r->hdr[3] << 8 | r->hdr[4];
            if (len > r->max)
                return -EMSGSIZE;
            r->cur = xmalloc(sizeof(struct msg) + len);
            r->cur->next = NULL;
            r->cur->len = len;
            r->cur_have = 0;
            r->hdr_have = 0;
        }
        size_t take = MIN(n, r->cur->len - r->cur_have);
        memcpy(r->cur->data + r->cur_have, p, take);
        r->cur_have += take;
        p += take;
        n -= take;
        if (r->cur_have == r->cur->len) {
            if (r->tail)
                r->tail->next = r->cur;
            else
                r->head = r->cur;
            r->tail = r->cur;
            r->queued_bytes += r->cur->len;
            r->nqueued++;
            r->cur = NULL;
        }
    }
    return 0;
}

struct msg *grpc_reader_pop(struct grpc_reader *r)
{
    struct msg *m = r->head;
    if (!m)
        return NULL;
    r->head = m->next;
    if (!r->head)
        r->tail = NULL;
    r->queued_bytes -= m->len;
    r->nqueued--;
    m->next = NULL;
    return m;
}

bool grpc_reader_partial(const struct grpc_reader *r)
{
    return r->cur != NULL || r->hdr_have > 0;
}

void grpc_reader_clear(struct grpc_reader *r)
{
    struct msg *m;
    while ((m = grpc_reader_pop(r)))
        free(m);
    free(r->cur);
    r->cur = NULL;
    r->hdr_have = 0;
}

int grpc_frame_pack(struct buf *out, const ProtobufCMessage *m, size_t max)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    if (len > max || len > UINT32_MAX)
        return -EMSGSIZE;
    buf_reserve(out, 5 + len + 1);
    uint8_t *p = out->data + out->len;
    p[0] = 0;
    p[1] = (uint8_t)(len >> 24);
    p[2] = (uint8_t)(len >> 16);
    p[3] = (uint8_t)(len >> 8);
    p[4] = (uint8_t)len;
    protobuf_c_message_pack(m, p + 5);
    out->len += 5 + len;
    return 0;
}

int grpc_timeout_parse(const char *v, size_t len, uint64_t *ret_ns)
{
    /* TimeoutValue is at most 8 ASCII digits, then one unit. */
    if (len < 2 || len > 9)
        return -EINVAL;
    uint64_t n = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (!isdigit((unsigned char)v[i]))
            return -EINVAL;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    uint64_t mult;
    switch (v[len - 1]) {
    case 'H': mult = 3600ULL * 1000000000ULL; break;
    case 'M': mult = 60ULL * 1000000000ULL; break;
    case 'S': mult = 1000000000ULL; break;
    case 'm': mult = 1000000ULL; break;
    case 'u': mult = 1000ULL; break;
    case 'n': mult = 1; break;
    default: return -EINVAL;
    }
    *ret_ns = n * mult;   /* 99999999 H fits in 64 bits */
    return 0;
}

void grpc_timeout_format(uint64_t ns, char *buf, size_t len)
{
    uint64_t ms = (ns + 999999) / 1000000;
    if (ms < 100000000)
        snprintf(buf, len, "%llum", (unsigned long long)ms);
    else
        snprintf(buf, len, "%lluS", (unsigned long long)MIN(ms / 1000, 99999999ULL));
}

char *grpc_message_encode(const char *s)
{
    struct buf b = {0};
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%')
            buf_append(&b, p, 1);
        else
            buf_printf(&b, "%%%02X", *p);
    }
    buf_append(&b, "", 0);
    return (char *)b.data;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *grpc_message_decode(const char *s, size_t len)
{
    char *out = xmalloc(len + 1);
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < len + 0 + 1 && i + 2 <= len - 1 &&
            (h = hexval(s[i + 1])) >= 0 && (l = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(h << 4 | l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = 0;
    return out;
}
