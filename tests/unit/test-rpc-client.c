/* test-rpc-client: the C client against an in-process server over a unix
 * socket: unary, server/client/bidi streams, status codes, deadlines, and a
 * server that ends a bidi stream with an error while the client's side is
 * still open (the client must see that status, not wait forever), and the
 * keepalive: a call without a deadline to a server that never answers (a
 * socket nobody accepts on) fails UNAVAILABLE, while a slow call to a live
 * server (its loop answers the PINGs) does not. */
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "check.h"
#include "amber/log.h"
#include "amber/rpc.h"
#include "amber/util.h"
#include "rpctest.pb-c.h"

static int h_echo(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__EchoRequest *req = (const void *)m;
    if (req->status)
        return rpc_error(call, req->status, "%s", req->message);
    Amber__Test__V1__EchoReply rep = AMBER__TEST__V1__ECHO_REPLY__INIT;
    rep.payload = req->payload;
    return rpc_call_send(call, &rep.base);
}

static int h_sleep(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__SleepRequest *req = (const void *)m;
    int r = rpc_call_sleep(call, req->ms);
    if (r < 0)
        return r;
    Amber__Test__V1__SleepReply rep = AMBER__TEST__V1__SLEEP_REPLY__INIT;
    return rpc_call_send(call, &rep.base);
}

static int h_stream(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__StreamRequest *req = (const void *)m;
    for (uint32_t i = 0; i < req->count; i++) {
        Amber__Test__V1__StreamItem it = AMBER__TEST__V1__STREAM_ITEM__INIT;
        it.seq = i;
        int r = rpc_call_send(call, &it.base);
        if (r < 0)
            return r;
    }
    return 0;
}

static int h_sum(struct rpc_call *call, const ProtobufCMessage *m)
{
    Amber__Test__V1__Sum sum = AMBER__TEST__V1__SUM__INIT;
    ProtobufCMessage *in;
    int r;
    while ((r = rpc_call_recv(call, &in)) > 0) {
        sum.messages++;
        protobuf_c_message_free_unpacked(in, NULL);
    }
    if (r < 0)
        return r;
    return rpc_call_send(call, &sum.base);
}

/* Echoes until seq 3 arrives, then fails with ABORTED mid-stream. */
static int h_bidi(struct rpc_call *call, const ProtobufCMessage *m)
{
    ProtobufCMessage *in;
    int r;
    while ((r = rpc_call_recv(call, &in)) > 0) {
        uint32_t seq = ((Amber__Test__V1__StreamItem *)in)->seq;
        r = seq == 3 ? rpc_error(call, RPC_ABORTED, "no seq 3 here") : rpc_call_send(call, in);
        protobuf_c_message_free_unpacked(in, NULL);
        if (r < 0)
            return r;
    }
    return r;
}

#define M(n, k, i, o, f) { "/amber.test.v1.Test/" n, &amber__test__v1__##i##__descriptor, \
                           &amber__test__v1__##o##__descriptor, k, f }
static const struct rpc_method methods[] = {
    M("Echo", RPC_UNARY, echo_request, echo_reply, h_echo),
    M("Sleep", RPC_UNARY, sleep_request, sleep_reply, h_sleep),
    M("ServerStream", RPC_SERVER_STREAM, stream_request, stream_item, h_stream),
    M("ClientStream", RPC_CLIENT_STREAM, stream_item, sum, h_sum),
    M("Bidi", RPC_BIDI_STREAM, stream_item, stream_item, h_bidi),
};

static void *loop(void *srv)
{
    rpc_server_run(srv);
    return NULL;
}

int main(void)
{
    log_set_level(LOG_LVL_ERROR);
    char path[] = "/tmp/amber-rpc-client-XXXXXX";
    if (!mkdtemp(path))
        SKIP("mkdtemp");
    char sock[128];
    snprintf(sock, sizeof sock, "%s/s", path);
    struct rpc_server *srv;
    CHECK_EQ(rpc_server_new(NULL, &srv), 0);
    struct rpc_listener_config lc = { .methods = methods, .n_methods = ARRAY_SIZE(methods) };
    CHECK_EQ(rpc_server_listen_unix(srv, sock, &lc, NULL), 0);
    pthread_t t;
    pthread_create(&t, NULL, loop, srv);
    struct rpc_client *cl;
    CHECK_EQ(rpc_client_new(sock, NULL, &cl), 0);
    struct rpc_status st = {0};

    /* Unary, and a status with its message. */
    Amber__Test__V1__EchoRequest e = AMBER__TEST__V1__ECHO_REQUEST__INIT;
    uint8_t data[100000];
    memset(data, 7, sizeof data);
    e.payload.data = data;
    e.payload.len = sizeof data;
    ProtobufCMessage *resp = NULL;
    CHECK_EQ(rpc_client_call(cl, "/amber.test.v1.Test/Echo", &e.base,
                             &amber__test__v1__echo_reply__descriptor, 5000, &resp, &st), RPC_OK);
    if (resp) {
        CHECK_EQ(((Amber__Test__V1__EchoReply *)resp)->payload.len, sizeof data);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    e.status = RPC_NOT_FOUND;
    e.message = "gone 100% ünïcode";
    CHECK_EQ(rpc_client_call(cl, "/amber.test.v1.Test/Echo", &e.base,
                             &amber__test__v1__echo_reply__descriptor, 5000, &resp, &st), RPC_NOT_FOUND);
    CHECK_STR(st.message, "gone 100% ünïcode");
    /* Unknown method, deadline. */
    CHECK_EQ(rpc_client_call(cl, "/amber.test.v1.Test/Nope", &e.base,
                             &amber__test__v1__echo_reply__descriptor, 5000, &resp, &st), RPC_UNIMPLEMENTED);
    Amber__Test__V1__SleepRequest sl = AMBER__TEST__V1__SLEEP_REQUEST__INIT;
    sl.ms = 10000;
    CHECK_EQ(rpc_client_call(cl, "/amber.test.v1.Test/Sleep", &sl.base,
                             &amber__test__v1__sleep_reply__descriptor, 200, &resp, &st),
             RPC_DEADLINE_EXCEEDED);

    /* Server stream of 5000 messages. */
    struct rpc_stream *s;
    Amber__Test__V1__StreamRequest sr = AMBER__TEST__V1__STREAM_REQUEST__INIT;
    sr.count = 5000;
    CHECK_EQ(rpc_stream_open(cl, "/amber.test.v1.Test/ServerStream", 10000, &s, &st), RPC_OK);
    CHECK_EQ(rpc_stream_send(s, &sr.base), 0);
    CHECK_EQ(rpc_stream_close_send(s), 0);
    uint32_t n = 0;
    ProtobufCMessage *m;
    while (rpc_stream_recv(s, &amber__test__v1__stream_item__descriptor, &m) == 1) {
        CHECK_EQ(((Amber__Test__V1__StreamItem *)m)->seq, n);
        n++;
        protobuf_c_message_free_unpacked(m, NULL);
    }
    CHECK_EQ(n, 5000);
    CHECK_EQ(rpc_stream_finish(s, &st), RPC_OK);

    /* Client stream. */
    CHECK_EQ(rpc_stream_open(cl, "/amber.test.v1.Test/ClientStream", 10000, &s, &st), RPC_OK);
    Amber__Test__V1__StreamItem it = AMBER__TEST__V1__STREAM_ITEM__INIT;
    for (int i = 0; i < 300; i++)
        CHECK_EQ(rpc_stream_send(s, &it.base), 0);
    CHECK_EQ(rpc_stream_close_send(s), 0);
    CHECK_EQ(rpc_stream_recv(s, &amber__test__v1__sum__descriptor, &m), 1);
    if (m) {
        CHECK_EQ(((Amber__Test__V1__Sum *)m)->messages, 300);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    CHECK_EQ(rpc_stream_finish(s, &st), RPC_OK);

    /* Bidi: the server fails at seq 3 while our side is open. */
    CHECK_EQ(rpc_stream_open(cl, "/amber.test.v1.Test/Bidi", 5000, &s, &st), RPC_OK);
    int got = 0, r = 0;
    for (uint32_t i = 0; i < 4; i++) {
        it.seq = i;
        if (rpc_stream_send(s, &it.base) < 0)
            break;
        if (i < 3) {
            r = rpc_stream_recv(s, &amber__test__v1__stream_item__descriptor, &m);
            if (r == 1) {
                got++;
                protobuf_c_message_free_unpacked(m, NULL);
            }
        }
    }
    CHECK_EQ(got, 3);
    r = rpc_stream_recv(s, &amber__test__v1__stream_item__descriptor, &m);
    CHECK_EQ(r, 0);      /* the end of the server's side, not a timeout */
    CHECK_EQ(rpc_stream_finish(s, &st), RPC_ABORTED);
    CHECK_STR(st.message, "no seq 3 here");

    /* Keepalive: a live server's handler may take longer than the
     * interval (the loop answers the PINGs) ... */
    rpc_client_set_keepalive(cl, 1000);
    sl.ms = 3000;
    CHECK_EQ(rpc_client_call(cl, "/amber.test.v1.Test/Sleep", &sl.base,
                             &amber__test__v1__sleep_reply__descriptor, 0, &resp, &st), RPC_OK);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    /* ... and a server that never answers (connected, never accepted: no
     * FIN, no RST) fails the call without a deadline, naming why. */
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    CHECK(strlen(path) + sizeof "/silent" <= sizeof sa.sun_path);
    memcpy(sa.sun_path, path, strlen(path));
    strcat(sa.sun_path, "/silent");
    const char *silent = sa.sun_path;
    int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK_EQ(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    CHECK_EQ(listen(lfd, 4), 0);
    struct rpc_client *quiet;
    CHECK_EQ(rpc_client_new(silent, NULL, &quiet), 0);
    rpc_client_set_keepalive(quiet, 200);
    CHECK_EQ(rpc_client_call(quiet, "/amber.test.v1.Test/Echo", &e.base,
                             &amber__test__v1__echo_reply__descriptor, 0, &resp, &st), RPC_UNAVAILABLE);
    CHECK(st.message && strstr(st.message, "keepalive"));
    rpc_client_free(quiet);
    close(lfd);
    unlink(silent);

    rpc_status_clear(&st);
    rpc_client_free(cl);
    rpc_server_stop(srv, 1000);
    pthread_join(t, NULL);
    rpc_server_free(srv);
    rmdir(path);
    return CHECK_DONE();
}
