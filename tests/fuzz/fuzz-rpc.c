/* fuzz-rpc: libFuzzer target over the server's whole input path.
 * The first byte picks the mode:
 *   even: the bytes go over a real unix-socket connection to a real
 *         rpc_server (HTTP/2 frames → nghttp2 → gRPC framing → protobuf
 *         decoding → a handler), started once per process;
 *   odd:  the bytes go straight to the gRPC message parser and protobuf
 *         decoding of amberd's request messages (fast, deep).
 * Any crash, leak or sanitizer report is a finding. */
#include <pthread.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "amber/log.h"
#include "amber/rpc.h"
#include "lib/rpc-internal.h"
#include "amber.pb-c.h"
#include "rpctest.pb-c.h"

static struct rpc_server *srv;
static char sock_path[108];

static int h_echo(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__EchoRequest *req = (const void *)m;
    if (req->status)
        return rpc_error(call, req->status % 17, "%s", req->message);
    Amber__Test__V1__EchoReply rep = AMBER__TEST__V1__ECHO_REPLY__INIT;
    rep.payload = req->payload;
    return rpc_call_send(call, &rep.base);
}

static int h_bidi(struct rpc_call *call, const ProtobufCMessage *m)
{
    for (;;) {
        ProtobufCMessage *in;
        int r = rpc_call_recv(call, &in);
        if (r <= 0)
            return r;
        r = rpc_call_send(call, in);
        protobuf_c_message_free_unpacked(in, NULL);
        if (r < 0)
            return r;
    }
}

static const struct rpc_method methods[] = {
    { "/amber.test.v1.Test/Echo", &amber__test__v1__echo_request__descriptor,
      &amber__test__v1__echo_reply__descriptor, RPC_UNARY, h_echo },
    { "/amber.test.v1.Test/Bidi", &amber__test__v1__stream_item__descriptor,
      &amber__test__v1__stream_item__descriptor, RPC_BIDI_STREAM, h_bidi },
};

static void *loop(void *arg)
{
    rpc_server_run(srv);
    return NULL;
}

static void start_server(void)
{
    log_set_level(LOG_LVL_ERROR);
    snprintf(sock_path, sizeof sock_path, "/tmp/amber-fuzz-%d.sock", (int)getpid());
    struct rpc_server_config cfg = { .max_message = 1 << 16, .handshake_ms = 2000 };
    if (rpc_server_new(&cfg, &srv) < 0)
        abort();
    struct rpc_listener_config lc = { .methods = methods, .n_methods = 2 };
    if (rpc_server_listen_unix(srv, sock_path, &lc, NULL) < 0)
        abort();
    pthread_t t;
    pthread_create(&t, NULL, loop, NULL);
    pthread_detach(t);
}

static void over_socket(const uint8_t *data, size_t size)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    strcpy(sa.sun_path, sock_path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        abort();
    /* A valid preface first, so the fuzzer spends its bytes on frames. */
    static const char preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (write(fd, preface, sizeof preface - 1) < 0) {
    }
    size_t off = 0;
    while (off < size) {
        ssize_t w = send(fd, data + off, size - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    char buf[65536];
    for (;;) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 3000) <= 0)
            break;
        if (read(fd, buf, sizeof buf) <= 0)
            break;
    }
    close(fd);
}

static const ProtobufCMessageDescriptor *const descs[] = {
    &amber__v1__create_volume_request__descriptor,
    &amber__v1__create_snapshots_request__descriptor,
    &amber__v1__list_snapshots_request__descriptor,
    &amber__v1__diff_request__descriptor,
    &amber__v1__volume__descriptor,
    &amber__v1__snapshot__descriptor,
};

static void parse_only(const uint8_t *data, size_t size)
{
    struct grpc_reader r = { .max = 1 << 16 };
    if (grpc_reader_feed(&r, data, size) == 0) {
        struct msg *m;
        size_t i = 0;
        while ((m = grpc_reader_pop(&r))) {
            const ProtobufCMessageDescriptor *d = descs[i++ % (sizeof descs / sizeof descs[0])];
            ProtobufCMessage *pm = protobuf_c_message_unpack(d, NULL, m->len, m->data);
            if (pm) {
                /* Round trip what decoded. */
                size_t n = protobuf_c_message_get_packed_size(pm);
                uint8_t *b = malloc(n ? n : 1);
                protobuf_c_message_pack(pm, b);
                free(b);
                protobuf_c_message_free_unpacked(pm, NULL);
            }
            free(m);
        }
    }
    grpc_reader_clear(&r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    if (data[0] & 1) {
        parse_only(data + 1, size - 1);
        return 0;
    }
    if (!srv)
        start_server();
    over_socket(data + 1, size - 1);
    return 0;
}
