/* fuzz-api: libFuzzer target over amberd's node-socket handlers, through
 * the real dispatch (a unix socket, HTTP/2, gRPC framing, protobuf, the
 * method table amberd serves) of a real amberd in this process on a
 * throwaway loop-mounted btrfs pool (harness.h), made once per process.
 *
 * An input is up to 4 calls: a byte picks the method, the rest feeds the
 * message generator (harness.h: well-formed messages with hostile strings,
 * sizes, ids, counts and nesting; valid and invalid references to the
 * baseline's volumes and snapshots). Findings: a crash or sanitizer report,
 * a leak (LeakSanitizer at exit), file descriptors growing, and a refused
 * call (INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
 * RESOURCE_EXHAUSTED, FAILED_PRECONDITION, ABORTED, OUT_OF_RANGE) that
 * changed the catalog or the pool. After an input that changed state the
 * baseline is rebuilt.
 *
 * Left out because they reach outside the throwaway pool: Export, Restore
 * (repositories at any URL), Pull, Push, Subscribe (the network), the
 * scoped-socket calls (sockets at any path; fuzz-csi covers the pod side
 * through amber-csi's handlers), and the streaming Diff. */
#include "harness.h"

static const char *const left_out[] = {
    "/amber.v1.Archive/", "/amber.v1.Sync/Pull", "/amber.v1.Sync/Push", "/amber.v1.Sync/Subscribe",
    "ScopedSocket", "/amber.v1.Amber/Diff",
};

static const struct rpc_method *targets[128];
static size_t ntargets;
static int base_fds;
static unsigned long long runs, refused, internal;

static void report(void)
{
    fprintf(stderr, "fuzz-api: %llu inputs, %llu baseline rebuilds, %llu refused calls, %llu INTERNAL\n",
            runs, fz_wipes, refused, internal);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_start_amberd();
    for (size_t i = 0; i < fz_n_methods && ntargets < ARRAY_SIZE(targets); i++) {
        const struct rpc_method *m = &fz_methods[i];
        bool out = m->kind != RPC_UNARY;
        for (size_t k = 0; k < ARRAY_SIZE(left_out) && !out; k++)
            out = strstr(m->path, left_out[k]) != NULL;
        if (!out)
            targets[ntargets++] = m;
    }
    fz_rebuild();
    base_fds = fz_count_fds();
    atexit(report);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = { data, size };
    runs++;
    for (int i = 0; i < 4 && r.n > 0; i++) {
        const struct rpc_method *m = targets[rd_u8(&r) % ntargets];
        struct arena a = {0};
        ProtobufCMessage *req = gen_message(m->input, &r, &a, 0);
        char *before = fz_fingerprint();
        char *msg = NULL;
        int code = fz_call_path(m->path, req, m->output, NULL, &msg);
        arena_free(&a);
        if (code == RPC_INTERNAL || code == RPC_UNKNOWN)
            internal++;
        if (fz_rejected(code)) {
            refused++;
            char *after = fz_fingerprint();
            if (strcmp(before, after) != 0) {
                fprintf(stderr, "fuzz-api: %s refused (code %d: %s) but changed the state:\n--- before\n%s"
                        "--- after\n%s", m->path, code, msg ? msg : "", before, after);
                abort();
            }
            free(after);
        }
        free(before);
        free(msg);
    }
    char *now = fz_fingerprint();
    bool changed = strcmp(now, fz_baseline) != 0;
    free(now);
    if (changed || runs % 64 == 0) {
        fz_rebuild();
        int fds = fz_count_fds();
        if (fds > base_fds + 8) {
            fprintf(stderr, "fuzz-api: %d file descriptors open at the baseline, %d at first\n", fds, base_fds);
            abort();
        }
    }
    return 0;
}
