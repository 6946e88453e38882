/* rpc-testd: serves the runtime's test service (proto/rpctest.proto) on the
 * listeners given, for tests/e2e/test-rpc*.py and bench/rpc. Prints one
 * JSON line {"tcp_port":N,"tls_port":N} on stdout when ready; stops on
 * SIGTERM/SIGINT (graceful, GOAWAY) or when stdin closes with --stdin-exit. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "amber/log.h"
#include "amber/rpc.h"
#include "amber/util.h"
#include "rpctest.pb-c.h"

static struct rpc_server *srv;

/* Sleep calls by tag, for the cancellation tests. */
static pthread_mutex_t tags_lock = PTHREAD_MUTEX_INITIALIZER;
struct tag { struct tag *next; char *name; bool started, cancelled, finished; };
static struct tag *tags;
static unsigned barrier_in, barrier_gen;   /* Sleep calls waiting at the barrier */
static uint32_t max_seq_sent;

static struct tag *tag_get(const char *name)
{
    for (struct tag *t = tags; t; t = t->next)
        if (strcmp(t->name, name) == 0)
            return t;
    struct tag *t = xcalloc(1, sizeof *t);
    t->name = xstrdup(name);
    t->next = tags;
    tags = t;
    return t;
}

static int h_echo(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__EchoRequest *req = (const void *)m;
    if (req->status)
        return rpc_error(call, req->status, "%s", req->message);
    Amber__Test__V1__EchoReply rep = AMBER__TEST__V1__ECHO_REPLY__INIT;
    _cleanup_free_ uint8_t *buf = NULL;
    if (req->reply_size) {
        buf = xmalloc(req->reply_size);
        for (uint32_t i = 0; i < req->reply_size; i++)
            buf[i] = (uint8_t)(i * 7 + 3);
        rep.payload.data = buf;
        rep.payload.len = req->reply_size;
    } else {
        rep.payload = req->payload;
    }
    return rpc_call_send(call, &rep.base);
}

static void tag_mark(const char *name, int r, bool finished)
{
    if (!name || !*name)
        return;
    pthread_mutex_lock(&tags_lock);
    struct tag *t = tag_get(name);
    t->started = true;
    if (finished) {
        t->cancelled = r == -ECANCELED;
        t->finished = true;
    }
    pthread_mutex_unlock(&tags_lock);
}

/* Wait (cancellably, at most ms) until `n` callers are here at once: a
 * reusable barrier (each generation releases the callers that filled it). */
static int barrier_wait(struct rpc_call *call, uint32_t n, uint32_t ms, bool *reached)
{
    pthread_mutex_lock(&tags_lock);
    if (++barrier_in >= n) {
        barrier_in = 0;
        barrier_gen++;
        *reached = true;
        pthread_mutex_unlock(&tags_lock);
        return 0;
    }
    unsigned gen = barrier_gen;
    pthread_mutex_unlock(&tags_lock);
    int r = 0;
    for (uint32_t waited = 0;; waited += 5) {
        pthread_mutex_lock(&tags_lock);
        *reached = barrier_gen != gen;
        if (!*reached && (r < 0 || waited >= ms))
            barrier_in--;
        pthread_mutex_unlock(&tags_lock);
        if (*reached || r < 0 || waited >= ms)
            return *reached ? 0 : r;
        r = rpc_call_sleep(call, 5);
    }
}

static int h_sleep(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__SleepRequest *req = (const void *)m;
    tag_mark(req->tag, 0, false);
    bool reached = false;
    int r = req->barrier ? barrier_wait(call, req->barrier, req->ms, &reached) : rpc_call_sleep(call, req->ms);
    tag_mark(req->tag, r, true);
    Amber__Test__V1__SleepReply rep = AMBER__TEST__V1__SLEEP_REPLY__INIT;
    rep.cancelled = r == -ECANCELED;
    rep.barrier_reached = reached;
    if (r == -ECANCELED)
        return r;
    return rpc_call_send(call, &rep.base);
}

static int h_server_stream(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__StreamRequest *req = (const void *)m;
    _cleanup_free_ uint8_t *buf = xcalloc(1, req->size ? req->size : 1);
    tag_mark(req->tag, 0, false);
    for (uint32_t i = 0; i < req->count; i++) {
        Amber__Test__V1__StreamItem it = AMBER__TEST__V1__STREAM_ITEM__INIT;
        it.seq = i;
        it.payload.data = buf;
        it.payload.len = req->size;
        int r = rpc_call_send(call, &it.base);
        if (r < 0) {
            tag_mark(req->tag, r, true);
            return r;
        }
        __atomic_store_n(&max_seq_sent, i, __ATOMIC_RELAXED);
    }
    tag_mark(req->tag, 0, true);
    return 0;
}

static int h_client_stream(struct rpc_call *call, const ProtobufCMessage *m)
{
    Amber__Test__V1__Sum sum = AMBER__TEST__V1__SUM__INIT;
    for (;;) {
        ProtobufCMessage *in;
        int r = rpc_call_recv(call, &in);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        sum.messages++;
        sum.bytes += ((Amber__Test__V1__StreamItem *)in)->payload.len;
        protobuf_c_message_free_unpacked(in, NULL);
    }
    return rpc_call_send(call, &sum.base);
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

static uint64_t rss_bytes(void)
{
    _cleanup_free_ char *s = NULL;
    if (read_file_all("/proc/self/statm", 4096, &s, NULL) < 0)
        return 0;
    unsigned long size, res;
    if (sscanf(s, "%lu %lu", &size, &res) != 2)
        return 0;
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static int h_stats(struct rpc_call *call, const ProtobufCMessage *m)
{
    const Amber__Test__V1__StatsRequest *req = (const void *)m;
    Amber__Test__V1__StatsReply rep = AMBER__TEST__V1__STATS_REPLY__INIT;
    pthread_mutex_lock(&tags_lock);
    if (req->tag && *req->tag) {
        struct tag *t = tag_get(req->tag);
        rep.tag_cancelled = t->cancelled;
        rep.tag_finished = t->finished;
        rep.tag_started = t->started;
    }
    pthread_mutex_unlock(&tags_lock);
    rep.rss_bytes = rss_bytes();
    rep.peer_fingerprint = (char *)rpc_call_peer(call)->fingerprint;
    rep.peer_uid = rpc_call_peer(call)->uid;
    rep.max_seq_sent = __atomic_load_n(&max_seq_sent, __ATOMIC_RELAXED);
    return rpc_call_send(call, &rep.base);
}

#define M(name, kind, in, out, fn) \
    { "/amber.test.v1.Test/" name, &amber__test__v1__##in##__descriptor, \
      &amber__test__v1__##out##__descriptor, kind, fn }
static const struct rpc_method methods[] = {
    M("Echo", RPC_UNARY, echo_request, echo_reply, h_echo),
    M("Sleep", RPC_UNARY, sleep_request, sleep_reply, h_sleep),
    M("ServerStream", RPC_SERVER_STREAM, stream_request, stream_item, h_server_stream),
    M("ClientStream", RPC_CLIENT_STREAM, stream_item, sum, h_client_stream),
    M("Bidi", RPC_BIDI_STREAM, stream_item, stream_item, h_bidi),
    M("Stats", RPC_UNARY, stats_request, stats_reply, h_stats),
};

static char **pins;
static size_t npins;
static bool pin_ok(const char *fp, void *data)
{
    for (size_t i = 0; i < npins; i++)
        if (strcmp(pins[i], fp) == 0)
            return true;
    return false;
}

static void on_signal(int sig) { rpc_server_stop(srv, 5000); }

int main(int argc, char **argv)
{
    const char *unix_path = NULL, *tcp = NULL, *tls_addr = NULL;
    struct rpc_tls_config tc = { .verify_pin = pin_ok };
    struct rpc_server_config cfg = {0};
    uint32_t max_conns = 0;   /* of the unix listener */
    static const struct option opts[] = {
        { "unix", required_argument, NULL, 'u' },
        { "tcp", required_argument, NULL, 't' },
        { "tls", required_argument, NULL, 's' },
        { "cert", required_argument, NULL, 'c' },
        { "key", required_argument, NULL, 'k' },
        { "ca", required_argument, NULL, 'a' },
        { "pin", required_argument, NULL, 'p' },
        { "max-message", required_argument, NULL, 'm' },
        { "max-streams", required_argument, NULL, 'S' },
        { "max-calls", required_argument, NULL, 'C' },
        { "max-conns", required_argument, NULL, 'N' },
        { "debug", no_argument, NULL, 'd' },
        {}
    };
    int o;
    uint64_t v;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'u': unix_path = optarg; break;
        case 't': tcp = optarg; break;
        case 's': tls_addr = optarg; break;
        case 'c': tc.cert_file = optarg; break;
        case 'k': tc.key_file = optarg; break;
        case 'a': tc.ca_file = optarg; break;
        case 'p': pins = xrealloc(pins, (npins + 1) * sizeof *pins); pins[npins++] = optarg; break;
        case 'm': if (parse_size(optarg, &v) < 0) return 2; cfg.max_message = v; break;
        case 'S': if (parse_u64(optarg, &v) < 0) return 2; cfg.max_streams = (uint32_t)v; break;
        case 'C': if (parse_u64(optarg, &v) < 0) return 2; cfg.max_calls = (uint32_t)v; break;
        case 'N': if (parse_u64(optarg, &v) < 0) return 2; max_conns = (uint32_t)v; break;
        case 'd': log_set_level(LOG_LVL_DEBUG); break;
        default: return 2;
        }
    }
    if (rpc_server_new(&cfg, &srv) < 0)
        return 1;
    struct rpc_listener_config lc = { .methods = methods, .n_methods = ARRAY_SIZE(methods) };
    int r;
    int tcp_port = 0, tls_port = 0;
    struct rpc_listener_config ulc = lc;
    ulc.max_conns = max_conns;
    if (unix_path && (r = rpc_server_listen_unix(srv, unix_path, &ulc, NULL)) < 0)
        return log_error_errno(r, "testd", "listen %s", unix_path), 1;
    struct rpc_listener *l;
    if (tcp) {
        if ((r = rpc_server_listen_tcp(srv, tcp, &lc, &l)) < 0)
            return log_error_errno(r, "testd", "listen %s", tcp), 1;
        tcp_port = rpc_listener_port(l);
    }
    if (tls_addr) {
        char *err = NULL;
        struct rpc_listener_config tlc = lc;
        if ((r = rpc_tls_new(&tc, true, &tlc.tls, &err)) < 0)
            return log_error_errno(r, "testd", "tls: %s", err ? err : "?"), 1;
        if ((r = rpc_server_listen_tcp(srv, tls_addr, &tlc, &l)) < 0)
            return log_error_errno(r, "testd", "listen %s", tls_addr), 1;
        tls_port = rpc_listener_port(l);
    }
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    printf("{\"tcp_port\":%d,\"tls_port\":%d,\"pid\":%d}\n", tcp_port, tls_port, (int)getpid());
    fflush(stdout);
    rpc_server_run(srv);
    rpc_server_free(srv);
    log_info("testd", "stopped");
    return 0;
}
