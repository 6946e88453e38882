/* fuzz-csi: libFuzzer target over amber-csi's unary handlers (Identity,
 * Controller, Node, GroupController), through the real dispatch (its unix socket, HTTP/2,
 * gRPC, csi_dispatch) of amber-csi's code in this process, talking to a
 * real amberd, also in this process, on a throwaway loop-mounted btrfs
 * pool (harness.h).
 *
 * An input is up to 3 calls: a byte picks the method, the rest feeds the
 * message generator (hostile strings, sizes, ids, capabilities, secrets,
 * parameters, topology; the baseline volumes' and snapshots' ids). Every
 * *_path field is rewritten to a directory under the fuzz dir, so that
 * NodeStage/NodePublish really make filesystems and mount, but only there
 * (what they mounted is unmounted when the baseline is rebuilt). Findings
 * as in fuzz-api: crashes, sanitizer reports, leaks, file descriptors
 * growing, and a refused call that changed amberd's catalog or pool or the
 * mounts under the fuzz dir. */
#include "harness.h"
#include "csi/csi.h"
#include "csi.pb-c.h"

static struct csi fz_p;
static struct rpc_server *csi_srv;
static pthread_t csi_loop_thread;
static struct rpc_client *csi_cl;
static struct rpc_method *csi_methods;
static char *csi_dir;
static int base_fds;
static unsigned long long runs, refused, internal;

static void *csi_loop(void *arg)
{
    rpc_server_run(csi_srv);
    return NULL;
}

/* Mounts under the fuzz dir's csi/ (what Node calls made), deepest first. */
static size_t csi_mounts(char ***ret)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char **v = NULL;
    size_t n = 0;
    char line[4096];
    while (f && fgets(line, sizeof line, f)) {
        char mp[2048];
        if (sscanf(line, "%*s %*s %*s %*s %2047s", mp) == 1 && strncmp(mp, csi_dir, strlen(csi_dir)) == 0) {
            v = xrealloc(v, (n + 1) * sizeof *v);
            v[n++] = xstrdup(mp);
        }
    }
    if (f)
        fclose(f);
    if (n)
        qsort(v, n, sizeof *v, cmp_str);
    *ret = v;
    return n;
}

static void unmount_all(void)
{
    for (int pass = 0; pass < 4; pass++) {
        char **v;
        size_t n = csi_mounts(&v);
        for (size_t i = n; i-- > 0;) {
            if (umount2(v[i], 0) < 0)
                umount2(v[i], MNT_DETACH);
            free(v[i]);
        }
        free(v);
        if (!n)
            break;
    }
}

static char *fingerprint(void)
{
    struct buf b = {0};
    _cleanup_free_ char *fp = fz_fingerprint();
    buf_append(&b, fp, strlen(fp));
    char **v;
    size_t n = csi_mounts(&v);
    for (size_t i = 0; i < n; i++) {
        buf_append(&b, "mount ", 6);
        buf_append(&b, v[i], strlen(v[i]));
        buf_append(&b, "\n", 1);
        free(v[i]);
    }
    free(v);
    buf_append(&b, "", 1);
    return (char *)b.data;
}

static void csi_teardown(void)
{
    unmount_all();
    rpc_server_stop(csi_srv, 1000);
    pthread_join(csi_loop_thread, NULL);
    rpc_client_free(csi_cl);
    rpc_client_free(fz_p.amberd);
    free(fz_p.topology_key);
}

/* Every string field whose name ends in "path" points under csi_dir. */
static void confine_paths(ProtobufCMessage *m, struct rd *r, struct arena *a)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        size_t len = strlen(f->name);
        if (f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED || len < 4 ||
            strcmp(f->name + len - 4, "path") != 0)
            continue;
        uint8_t k = rd_u8(r);
        char *p = arena_add(a, xasprintf("%s/t%u%s", csi_dir, k % 4, k & 4 ? "/sub" : ""));
        _cleanup_free_ char *parent = xasprintf("%s/t%u", csi_dir, k % 4);
        if (k & 4)
            mkdir_p(parent, 0750);
        *(char **)((char *)m + f->offset) = p;
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_start_amberd();
    csi_dir = xasprintf("%s/csi", fz_dir);
    mkdir_p(csi_dir, 0750);
    fz_p = (struct csi){ .driver_name = CSI_DEFAULT_DRIVER, .node_id = "fuzz-node", .max_volumes = 100 };
    pthread_mutex_init(&fz_p.ops_lock, NULL);
    fz_p.topology_key = xasprintf("topology.%s/node", CSI_DEFAULT_DRIVER);
    if (rpc_client_new(fz_sock, NULL, &fz_p.amberd) < 0)
        abort();
    size_t n = csi_identity_methods_n + csi_controller_methods_n + csi_node_methods_n + csi_group_methods_n;
    struct rpc_method *handlers = xcalloc(n, sizeof *handlers);
    memcpy(handlers, csi_identity_methods, csi_identity_methods_n * sizeof *handlers);
    memcpy(handlers + csi_identity_methods_n, csi_controller_methods, csi_controller_methods_n * sizeof *handlers);
    memcpy(handlers + csi_identity_methods_n + csi_controller_methods_n, csi_node_methods,
           csi_node_methods_n * sizeof *handlers);
    memcpy(handlers + csi_identity_methods_n + csi_controller_methods_n + csi_node_methods_n,
           csi_group_methods, csi_group_methods_n * sizeof *handlers);
    csi_methods = xcalloc(n, sizeof *csi_methods);
    memcpy(csi_methods, handlers, n * sizeof *csi_methods);
    for (size_t i = 0; i < n; i++)
        csi_methods[i].handler = csi_dispatch;
    fz_p.handlers = handlers;
    fz_p.n_handlers = n;
    struct rpc_server_config sc = { .max_workers = 16, .userdata = &fz_p };
    if (rpc_server_new(&sc, &csi_srv) < 0)
        abort();
    _cleanup_free_ char *sock = xasprintf("%s/csi.sock", fz_dir);
    struct rpc_listener_config lc = { .methods = csi_methods, .n_methods = n };
    if (rpc_server_listen_unix(csi_srv, sock, &lc, NULL) < 0 || rpc_client_new(sock, NULL, &csi_cl) < 0)
        abort();
    pthread_create(&csi_loop_thread, NULL, csi_loop, NULL);
    atexit(csi_teardown);   /* runs before the harness's amberd teardown */
    fz_before_wipe = unmount_all;
    fz_rebuild();
    free(fz_baseline);
    fz_baseline = fingerprint();
    base_fds = fz_count_fds();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct rd r = { data, size };
    size_t n = fz_p.n_handlers;
    runs++;
    for (int i = 0; i < 3 && r.n > 0; i++) {
        const struct rpc_method *m = &csi_methods[rd_u8(&r) % n];
        struct arena a = {0};
        ProtobufCMessage *req = gen_message(m->input, &r, &a, 0);
        confine_paths(req, &r, &a);
        char *before = fingerprint();
        struct rpc_status st = {0};
        ProtobufCMessage *resp = NULL;
        int code = rpc_client_call(csi_cl, m->path, req, m->output, 120000, &resp, &st);
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        arena_free(&a);
        if (code == RPC_INTERNAL || code == RPC_UNKNOWN)
            internal++;
        if (fz_rejected(code)) {
            refused++;
            char *after = fingerprint();
            if (strcmp(before, after) != 0) {
                fprintf(stderr, "fuzz-csi: %s refused (code %d: %s) but changed the state:\n--- before\n%s"
                        "--- after\n%s", m->path, code, st.message ? st.message : "", before, after);
                abort();
            }
            free(after);
        }
        rpc_status_clear(&st);
        free(before);
    }
    char *now = fingerprint();
    bool changed = strcmp(now, fz_baseline) != 0;
    free(now);
    if (changed || runs % 64 == 0) {
        fz_rebuild();
        free(fz_baseline);
        fz_baseline = fingerprint();
        int fds = fz_count_fds();
        if (fds > base_fds + 8) {
            fprintf(stderr, "fuzz-csi: %d file descriptors open at the baseline, %d at first\n", fds, base_fds);
            abort();
        }
    }
    if (runs % 1000 == 0)
        fprintf(stderr, "fuzz-csi: %llu inputs, %llu baseline rebuilds, %llu refused calls, %llu INTERNAL\n",
                runs, fz_wipes, refused, internal);
    return 0;
}
