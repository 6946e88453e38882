/* rpc-bench: a client loop of unary calls against build/tests/rpc-testd's
 * /amber.test.v1.Test/Echo, to measure what one unary call costs the gRPC
 * runtime (lib/rpc-*.c). bench/run builds it into build/bench/ and reads
 * the server's CPU time from /proc while this runs; this program reports
 * its own side.
 *
 *   rpc-bench --target unix:PATH [--seconds S] [--threads N] [--payload BYTES]
 *
 * Each thread makes calls back to back for S seconds with rpc_client_call
 * (which, like amberctl, opens a connection per call). Prints one JSON
 * object: calls, errors, seconds, calls_per_s, client_cpu_us_per_call.
 * Exit status 1 if any call failed. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "amber/log.h"
#include "amber/rpc.h"
#include "rpctest.pb-c.h"

static struct rpc_client *cl;
static double seconds = 3.0;
static size_t payload_len = 16;

struct worker {
    pthread_t thread;
    uint64_t calls, errors;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    uint8_t *buf = calloc(1, payload_len ? payload_len : 1);
    Amber__Test__V1__EchoRequest req = AMBER__TEST__V1__ECHO_REQUEST__INIT;
    req.payload.data = buf;
    req.payload.len = payload_len;
    double end = now_s() + seconds;
    while (now_s() < end) {
        ProtobufCMessage *resp = NULL;
        int code = rpc_client_call(cl, "/amber.test.v1.Test/Echo", &req.base,
                                   &amber__test__v1__echo_reply__descriptor, 5000, &resp, NULL);
        if (code == RPC_OK && ((Amber__Test__V1__EchoReply *)resp)->payload.len == payload_len)
            w->calls++;
        else
            w->errors++;
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *target = NULL;
    long threads = 1;
    static const struct option opts[] = {
        { "target", required_argument, NULL, 't' },
        { "seconds", required_argument, NULL, 's' },
        { "threads", required_argument, NULL, 'n' },
        { "payload", required_argument, NULL, 'p' },
        {}
    };
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 't': target = optarg; break;
        case 's': seconds = strtod(optarg, NULL); break;
        case 'n': threads = strtol(optarg, NULL, 10); break;
        case 'p': payload_len = strtoul(optarg, NULL, 10); break;
        default: return 2;
        }
    }
    if (!target || seconds <= 0 || threads < 1 || threads > 256) {
        fprintf(stderr, "usage: rpc-bench --target unix:PATH [--seconds S] [--threads N] [--payload BYTES]\n");
        return 2;
    }
    log_set_level(LOG_LVL_ERROR);
    if (rpc_client_new(target, NULL, &cl) < 0) {
        fprintf(stderr, "rpc-bench: bad target %s\n", target);
        return 2;
    }
    struct worker *ws = calloc(threads, sizeof *ws);
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    double t0 = now_s();
    for (long i = 0; i < threads; i++)
        pthread_create(&ws[i].thread, NULL, work, &ws[i]);
    uint64_t calls = 0, errors = 0;
    for (long i = 0; i < threads; i++) {
        pthread_join(ws[i].thread, NULL);
        calls += ws[i].calls;
        errors += ws[i].errors;
    }
    double wall = now_s() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    double cpu = (ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) + (ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec)
               + ((ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) + (ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec)) / 1e6;
    printf("{\"calls\":%llu,\"errors\":%llu,\"threads\":%ld,\"payload\":%zu,\"seconds\":%.3f,"
           "\"calls_per_s\":%.1f,\"client_cpu_us_per_call\":%.2f}\n",
           (unsigned long long)calls, (unsigned long long)errors, threads, payload_len, wall,
           calls / wall, calls ? cpu * 1e6 / calls : 0.0);
    rpc_client_free(cl);
    free(ws);
    return errors ? 1 : 0;
}
