/* main.c: amber-csi, the CSI plugin: options, the one unix socket that
 * serves Identity, Controller, Node, GroupController and SnapshotMetadata
 * together, and shutdown.
 *
 * The plugin holds no state worth keeping: it may be restarted at any time
 * (kubelet and the sidecars retry), and everything it needs to answer is
 * asked of amberd or read from the mount table. SIGTERM/SIGINT stop the
 * server with a grace period for calls in flight. */
#include <getopt.h>
#include <signal.h>
#include <string.h>

#include "amber/log.h"
#include "csi/csi.h"

static const char usage[] =
"Usage: amber-csi --endpoint unix:///PATH/csi.sock --node-id NODE --amberd PATH [OPTIONS]\n"
"\n"
"The Amber CSI plugin: serves the CSI Identity, Controller, Node, GroupController\n"
"and SnapshotMetadata services for this node's volumes and snapshots, which\n"
"amberd keeps.\n"
"\n"
"  --endpoint EP        the CSI socket: unix:///path/csi.sock (or a path)\n"
"  --node-id ID         this node's name (the topology segment\n"
"                       topology.<driver>/node=ID)\n"
"  --amberd PATH        amberd's node socket (unix:///path or a path)\n"
"  --driver-name NAME   the CSI driver name (default " CSI_DEFAULT_DRIVER ")\n"
"  --max-volumes N      volumes this node may publish (NodeGetInfo; default 0 =\n"
"                       no limit)\n"
"  --controller-expand  advertise the controller EXPAND_VOLUME capability (only\n"
"                       where csi-resizer reaches the node holding the volume,\n"
"                       e.g. one node; by default volumes grow in NodeExpandVolume)\n"
"  --node-handles       volume and snapshot ids name their node (NODE/UUID), so\n"
"                       any node can make a volume from another node's snapshot\n"
"  --create-wait-ms N   CreateVolume from another node's snapshot: wait up to N ms\n"
"                       for the copy before answering ABORTED (pending; default\n"
"                       10000)\n"
"  --log-level LEVEL    debug, info (default), warn, error\n"
"  --log-json           log JSON records instead of key=value\n"
"  -h, --help           this text\n"
"  --version            the version\n"
"\n"
"Limits (past one: RESOURCE_EXHAUSTED): requests of 4 MiB, 1024 calls queued\n"
"or running, 100 streams a connection, 256 connections; amberd's own bounds\n"
"(labels, snapshots per volume, volumes per namespace) apply to what it asks.\n"
"\n"
"Environment (tests only): AMBER_CSI_LOCK_DELAY_MS=N holds each operation's\n"
"lock until a second call on it was refused (at most N ms), to exercise\n"
"ABORTED for concurrent calls on one volume.\n";

static struct rpc_server *g_srv;

static void on_signal(int sig)
{
    if (g_srv)
        rpc_server_stop(g_srv, 10000);
}

/* "unix:///a/b", "unix:/a/b", "unix:a/b" or "/a/b" → the path. */
static const char *endpoint_path(const char *ep)
{
    if (strncmp(ep, "unix://", 7) == 0)
        return ep + 7;
    if (strncmp(ep, "unix:", 5) == 0)
        return ep + 5;
    if (strstr(ep, "://"))
        return NULL;
    return ep;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *node_id = NULL, *amberd = NULL, *driver = CSI_DEFAULT_DRIVER;
    uint64_t max_volumes = 0;
    bool controller_expand = false;
    enum log_level lvl;
    enum { O_ENDPOINT = 256, O_NODE, O_AMBERD, O_DRIVER, O_MAXVOL, O_CEXP, O_LOGLVL, O_LOGJSON,
           O_VERSION, O_NODE_HANDLES, O_CREATE_WAIT };
    bool node_handles = false;
    uint64_t create_wait = 10000;
    static const struct option opts[] = {
        { "endpoint", required_argument, NULL, O_ENDPOINT },
        { "node-id", required_argument, NULL, O_NODE },
        { "amberd", required_argument, NULL, O_AMBERD },
        { "driver-name", required_argument, NULL, O_DRIVER },
        { "max-volumes", required_argument, NULL, O_MAXVOL },
        { "controller-expand", no_argument, NULL, O_CEXP },
        { "node-handles", no_argument, NULL, O_NODE_HANDLES },
        { "create-wait-ms", required_argument, NULL, O_CREATE_WAIT },
        { "log-level", required_argument, NULL, O_LOGLVL },
        { "log-json", no_argument, NULL, O_LOGJSON },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, O_VERSION },
        {}
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_ENDPOINT: endpoint = optarg; break;
        case O_NODE: node_id = optarg; break;
        case O_AMBERD: amberd = optarg; break;
        case O_DRIVER: driver = optarg; break;
        case O_MAXVOL:
            if (parse_u64(optarg, &max_volumes) < 0 || max_volumes > INT64_MAX) {
                fprintf(stderr, "amber-csi: --max-volumes: a number, not \"%s\"\n", optarg);
                return 2;
            }
            break;
        case O_CEXP: controller_expand = true; break;
        case O_NODE_HANDLES: node_handles = true; break;
        case O_CREATE_WAIT:
            if (parse_u64(optarg, &create_wait) < 0 || create_wait > 600000) {
                fprintf(stderr, "amber-csi: --create-wait-ms: 0 to 600000\n");
                return 2;
            }
            break;
        case O_LOGLVL:
            if (log_level_parse(optarg, &lvl) < 0) {
                fprintf(stderr, "amber-csi: --log-level: debug, info, warn or error\n");
                return 2;
            }
            log_set_level(lvl);
            break;
        case O_LOGJSON: log_set_json(true); break;
        case 'h': fputs(usage, stdout); return 0;
        case O_VERSION: printf("amber-csi %s\n", AMBER_VERSION); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "amber-csi: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return 2;
    }
    if (!endpoint || !node_id || !*node_id || !amberd) {
        fprintf(stderr, "amber-csi: --endpoint, --node-id and --amberd are required\n\n%s", usage);
        return 2;
    }
    const char *sock = endpoint_path(endpoint);
    if (!sock || !*sock) {
        fprintf(stderr, "amber-csi: --endpoint: a unix socket (unix:///path), not \"%s\"\n", endpoint);
        return 2;
    }
    /* The topology key carries the driver's name, and a segment value is a
     * Kubernetes label value (63 characters). */
    if (strlen(node_id) > 63 || strlen(driver) > 63 || name_validate(driver) < 0) {
        fprintf(stderr, "amber-csi: --node-id and --driver-name: at most 63 characters\n");
        return 2;
    }

    struct csi p = {
        .driver_name = driver, .node_id = node_id, .max_volumes = (int64_t)max_volumes,
        .controller_expand = controller_expand,
        .node_handles = node_handles, .create_wait_ms = (uint32_t)create_wait,
    };
    pthread_mutex_init(&p.ops_lock, NULL);
    p.topology_key = xasprintf("topology.%s/node", driver);
    const char *delay = getenv("AMBER_CSI_LOCK_DELAY_MS");
    if (delay && parse_u64(delay, &p.lock_delay_ms) < 0)
        p.lock_delay_ms = 0;

    int ret = 1, r;
    struct rpc_method *methods = NULL, *handlers = NULL;
    _cleanup_free_ char *dir = NULL;
    r = rpc_client_new(amberd, NULL, &p.amberd);
    if (r < 0) {
        log_error_errno(r, "csi", "bad amberd address %s", amberd);
        goto out;
    }
    /* Every service the socket serves, in one table. */
    const struct { const struct rpc_method *m; size_t n; } tables[] = {
        { csi_identity_methods, csi_identity_methods_n },
        { csi_controller_methods, csi_controller_methods_n },
        { csi_node_methods, csi_node_methods_n },
        { csi_snapshot_metadata_methods, csi_snapshot_metadata_methods_n },
        { csi_group_methods, csi_group_methods_n },
    };
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(tables); i++)
        n += tables[i].n;
    methods = xcalloc(n, sizeof *methods);
    for (size_t i = 0, k = 0; i < ARRAY_SIZE(tables); k += tables[i].n, i++)
        memcpy(methods + k, tables[i].m, tables[i].n * sizeof *methods);
    /* The server calls csi_dispatch, which runs the real handler and then
     * sends its error (see csi_error). */
    p.handlers = handlers = xcalloc(n, sizeof *handlers);
    memcpy(handlers, methods, n * sizeof *handlers);
    p.n_handlers = n;
    for (size_t i = 0; i < n; i++)
        methods[i].handler = csi_dispatch;

    /* Handlers block on amberd, mkfs and mount: allow plenty of workers. */
    struct rpc_server_config sc = { .max_workers = 64, .userdata = &p };
    r = rpc_server_new(&sc, &g_srv);
    if (r < 0) {
        log_error_errno(r, "rpc", "cannot create the server");
        goto out;
    }
    dir = xstrdup(sock);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        mkdir_p(dir, 0755);
    }
    struct rpc_listener_config lc = { .methods = methods, .n_methods = n, .mode = 0600 };
    r = rpc_server_listen_unix(g_srv, sock, &lc, NULL);
    if (r < 0) {
        log_error_errno(r, "rpc", "cannot listen on %s%s", sock,
                        r == -EADDRINUSE ? " (another plugin is serving it)" : "");
        goto out;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    log_info("csi", "amber-csi %s serving %s on %s for node %s, amberd at %s%s", AMBER_VERSION,
             driver, sock, node_id, amberd, controller_expand ? ", controller expansion" : "");
    r = rpc_server_run(g_srv);
    if (r < 0) {
        log_error_errno(r, "rpc", "server failed");
        goto out;
    }
    log_info("csi", "stopped");
    ret = 0;
out:
    rpc_server_free(g_srv);
    g_srv = NULL;
    rpc_client_free(p.amberd);
    free(methods);
    free(handlers);
    free(p.topology_key);
    return ret;
}
