/* test-rpc-frame: the gRPC message framing parser, timeouts, grpc-message
 * encoding and status mapping. */
#include <string.h>

#include "check.h"
#include "lib/rpc-internal.h"
#include "rpctest.pb-c.h"

static void framing_any_split(void)
{
    /* Three messages packed, then fed in every split position. */
    struct buf wire = {0};
    Amber__Test__V1__EchoRequest m = AMBER__TEST__V1__ECHO_REQUEST__INIT;
    uint8_t payload[300];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)i;
    for (int k = 0; k < 3; k++) {
        m.payload.data = payload;
        m.payload.len = 100u * (size_t)k;   /* 0, 100, 200 bytes */
        CHECK_EQ(grpc_frame_pack(&wire, &m.base, 1 << 20), 0);
    }
    for (size_t split = 0; split <= wire.len; split++) {
        struct grpc_reader r = { .max = 1 << 20 };
        CHECK_EQ(grpc_reader_feed(&r, wire.data, split), 0);
        CHECK_EQ(grpc_reader_feed(&r, wire.data + split, wire.len - split), 0);
        CHECK_EQ(r.nqueued, 3);
        CHECK(!grpc_reader_partial(&r));
        for (int k = 0; k < 3; k++) {
            struct msg *g = grpc_reader_pop(&r);
            CHECK(g != NULL);
            if (!g)
                break;
            Amber__Test__V1__EchoRequest *d = amber__test__v1__echo_request__unpack(NULL, g->len, g->data);
            CHECK(d != NULL);
            if (d) {
                CHECK_EQ(d->payload.len, 100u * (size_t)k);
                CHECK(d->payload.len == 0 || memcmp(d->payload.data, payload, d->payload.len) == 0);
                amber__test__v1__echo_request__free_unpacked(d, NULL);
            }
            free(g);
        }
        CHECK(grpc_reader_pop(&r) == NULL);
        CHECK_EQ(r.queued_bytes, 0);
        grpc_reader_clear(&r);
    }
    buf_free(&wire);
}

static void framing_limits(void)
{
    struct grpc_reader r = { .max = 1000 };
    uint8_t huge[5] = { 0, 0xff, 0xff, 0xff, 0xff };
    CHECK_EQ(grpc_reader_feed(&r, huge, 5), -EMSGSIZE);
    grpc_reader_clear(&r);
    struct grpc_reader r2 = { .max = 1000 };
    uint8_t compressed[6] = { 1, 0, 0, 0, 1, 'x' };
    CHECK_EQ(grpc_reader_feed(&r2, compressed, 6), -EPROTONOSUPPORT);
    grpc_reader_clear(&r2);
    struct grpc_reader r3 = { .max = 1000 };
    uint8_t partial[4] = { 0, 0, 0, 10 };
    CHECK_EQ(grpc_reader_feed(&r3, partial, 4), 0);
    CHECK(grpc_reader_partial(&r3));
    CHECK(grpc_reader_pop(&r3) == NULL);
    grpc_reader_clear(&r3);
    struct buf b = {0};
    Amber__Test__V1__EchoRequest m = AMBER__TEST__V1__ECHO_REQUEST__INIT;
    uint8_t p[2000] = {0};
    m.payload.data = p;
    m.payload.len = sizeof p;
    CHECK_EQ(grpc_frame_pack(&b, &m.base, 1000), -EMSGSIZE);
    CHECK_EQ(b.len, 0);
    buf_free(&b);
}

static void timeouts(void)
{
    uint64_t ns;
    CHECK_EQ(grpc_timeout_parse("100m", 4, &ns), 0);
    CHECK_EQ(ns, 100000000ULL);
    CHECK_EQ(grpc_timeout_parse("5S", 2, &ns), 0);
    CHECK_EQ(ns, 5000000000ULL);
    CHECK_EQ(grpc_timeout_parse("99999999H", 9, &ns), 0);
    CHECK_EQ(grpc_timeout_parse("123456789S", 10, &ns), -EINVAL);
    CHECK_EQ(grpc_timeout_parse("10x", 3, &ns), -EINVAL);
    CHECK_EQ(grpc_timeout_parse("m", 1, &ns), -EINVAL);
    CHECK_EQ(grpc_timeout_parse("1-m", 3, &ns), -EINVAL);
    char b[32];
    grpc_timeout_format(1500000000ULL, b, sizeof b);
    CHECK_STR(b, "1500m");
}

static void messages(void)
{
    const char *s = "naïve 100% sure\n";
    char *e = grpc_message_encode(s);
    CHECK(strchr(e, ' ') != NULL);
    CHECK(strstr(e, "%25") != NULL);
    CHECK(strstr(e, "%0A") != NULL);
    char *d = grpc_message_decode(e, strlen(e));
    CHECK_STR(d, s);
    free(e);
    free(d);
    char *t = grpc_message_decode("bad %Z and %4", 13);
    CHECK_STR(t, "bad %Z and %4");
    free(t);
}

static void codes(void)
{
    CHECK_EQ(rpc_code_from_errno(-ENOENT), RPC_NOT_FOUND);
    CHECK_EQ(rpc_code_from_errno(-EEXIST), RPC_ALREADY_EXISTS);
    CHECK_EQ(rpc_code_from_errno(-ENOSPC), RPC_RESOURCE_EXHAUSTED);
    CHECK_EQ(rpc_code_from_errno(-EBUSY), RPC_ABORTED);
    for (int c = 1; c <= 16; c++) {
        if (c == RPC_UNKNOWN || c == RPC_INTERNAL)
            continue;
        CHECK_EQ(rpc_code_from_errno(rpc_errno_from_code(c)), c);
    }
    CHECK_STR(rpc_code_name(5), "NOT_FOUND");
    CHECK_STR(rpc_code_name(99), "UNKNOWN");
}

static void targets(void)
{
    char *u, *h, *p;
    CHECK_EQ(rpc_target_parse("unix:///run/a.sock", &u, &h, &p), 0);
    CHECK_STR(u, "/run/a.sock");
    free(u);
    CHECK_EQ(rpc_target_parse("127.0.0.1:7443", &u, &h, &p), 0);
    CHECK_STR(h, "127.0.0.1");
    CHECK_STR(p, "7443");
    free(h);
    free(p);
    CHECK_EQ(rpc_target_parse("[::1]:80", &u, &h, &p), 0);
    CHECK_STR(h, "::1");
    free(h);
    free(p);
    CHECK_EQ(rpc_target_parse("host:99999", &u, &h, &p), -EINVAL);
    CHECK_EQ(rpc_target_parse("", &u, &h, &p), -EINVAL);
}

int main(void)
{
    framing_any_split();
    framing_limits();
    timeouts();
    messages();
    codes();
    targets();
    return CHECK_DONE();
}
