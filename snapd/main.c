/* main.c: amberd, the per-node snapshot daemon: options, start-up (pool,
 * catalog, recovery, listeners), the captive mode, and shutdown. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "amber/log.h"
#include "amber/rpc.h"
#include "amber/util.h"
#include "snapd/daemon.h"
#include "snapd/limits.h"
#include "snapd/pipeline/pipeline.h"
#include "snapd/cluster/cluster.h"
#include "snapd/store/store.h"

#define DEFAULT_SOCKET "/run/amber/amberd.sock"

static const char usage[] =
"Usage: amberd --pool DIR [OPTIONS]\n"
"\n"
"The Amber node daemon: owns a storage pool of volumes with thin\n"
"point-in-time snapshots, and serves its gRPC API on a unix socket.\n"
"It is in the control path only: volumes keep working if it stops.\n"
"\n"
"Pool:\n"
"  --pool DIR            the pool: a directory on a mounted btrfs (default\n"
"                        backend) or XFS-with-reflink filesystem\n"
"  --pool-image FILE     the embedded default: keep the pool in FILE, a sparse\n"
"                        image made and formatted on first use, loop-attached\n"
"                        and mounted at DIR; unmounted and detached at exit\n"
"  --pool-size SIZE      size of a new --pool-image (default 20G; K/M/G/T)\n"
"  --pool-fs FS          filesystem of a new --pool-image: btrfs (default) or xfs\n"
"  --backend NAME        btrfs or xfs (default: what the filesystem is).\n"
"                        XFS snapshots are reflink copies that block the\n"
"                        volume's writers while they run (about 22 us an extent)\n"
"  --xfs-max-extents N   XFS: refuse to snapshot an image with more extents\n"
"                        than N (default 65536, about 1.5 s of writer stall)\n"
"  --reserve SIZE        free space kept back in the pool (default: 2%%, >= 64M)\n"
"\n"
"Snapshot store (history off the live volume; see snapd/store/README.md):\n"
"  --resident-snapshots K\n"
"                        keep the K newest snapshots of each volume as\n"
"                        subvolumes (default 2, at least 1); older ones live\n"
"                        in the pool's local store (POOL/.amber/store) and\n"
"                        are brought back when read\n"
"  --store-off           move no snapshot (every snapshot stays a subvolume)\n"
"  --no-defrag           do not defragment live images in the background\n"
"  --defrag-threshold N  defragment a live image above N extents per GiB\n"
"                        (default 4096)\n"
"  --defrag-sweep        also rewrite a volume's whole image once its snapshots\n"
"                        stop (off by default: the rewrite makes the pool's\n"
"                        generation diff of the next snapshot report the swept\n"
"                        ranges, so a peer sync or export re-sends them)\n"
"\n"
"API:\n"
"  --socket PATH         the node API socket (default " DEFAULT_SOCKET ")\n"
"  --socket-mode MODE    its file mode, octal (default 0600)\n"
"  --node-id ID          this node's name (default: the hostname);\n"
"                        --node-name is the same\n"
"  --metrics-listen HOST:PORT\n"
"                        serve Prometheus metrics at http://HOST:PORT/metrics\n"
"  --max-message SIZE    largest gRPC message accepted (default 4M)\n"
"\n"
"Peers (sync between clusters over mutual TLS 1.3):\n"
"  --peer-listen H:P     serve peers on HOST:PORT (port 0: any free port)\n"
"  --tls-cert FILE       the node's certificate (default: made at first start\n"
"  --tls-key FILE        in POOL/.amber/identity/, self-signed)\n"
"  --tls-ca FILE         also trust peers whose certificates this CA signed\n"
"  --peers-file FILE     peers to trust, a line each: NAME ADDRESS FINGERPRINT\n"
"                        [allow-push]\n"
"  --peer-keepalive MS   a peer connection silent for MS ms is pinged (HTTP/2\n"
"                        PING) and dropped if still silent MS ms later: a\n"
"                        transfer with a stopped or cut-off peer fails\n"
"                        UNAVAILABLE and resumes later (default 20000; 0: never)\n"
"\n"
"Cluster (nodes of one Kubernetes cluster, trusted by a cluster CA):\n"
"  --cluster-ca FILE     the cluster CA certificate: any peer it signed is a\n"
"                        cluster member (no pin); turns cluster mode on\n"
"  --cluster-ca-key FILE issue this node's certificate (CN = --node-id) from\n"
"                        the CA at start (else --tls-cert/--tls-key it signed)\n"
"  --cluster-registry SPEC  where nodes' peer ports are: template:PATTERN\n"
"                        ({node} replaced, e.g. template:{node}:7443) or\n"
"                        dir:PATH (a shared directory, a file a node)\n"
"  --archives-file FILE  archive repositories, a line each: NAME URL\n"
"                        PASSWORD_FILE [gc-grace=SECONDS]\n"
"\n"
"Running:\n"
"  --run CMD             captive mode: start, run CMD (with sh -c, AMBER_SOCKET\n"
"                        set), stop when it ends and exit with its status\n"
"  --exit-with-parent    stop when the parent process dies\n"
"  --log-level LEVEL     debug, info (default), warn, error\n"
"  --log-json            log JSON records instead of key=value\n"
"  -h, --help            this text\n"
"  --version             the version\n"
"\n"
LIMITS_USAGE
"\n"
"Environment: AMBER_CRASH_AT=POINT kills the daemon at a named step (tests);\n"
"POINT:N at the Nth step of a counted one (export-chunk, restore-chunk);\n"
"AMBER_FAULT_AT=export-read:N fails the Nth and later image reads with EIO.\n";

static struct rpc_server *g_srv;
static pid_t g_child;
static int g_child_status = -1;

static void on_signal(int sig)
{
    if (g_srv)
        rpc_server_stop(g_srv, 10000);
}

static void *child_waiter(void *arg)
{
    int st;
    while (waitpid(g_child, &st, 0) < 0 && errno == EINTR)
        ;
    g_child_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    rpc_server_stop(g_srv, 10000);
    return NULL;
}

static int start_child(const char *cmd, const char *sock)
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        setenv("AMBER_SOCKET", sock, 1);
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    g_child = pid;
    pthread_t t;
    pthread_create(&t, NULL, child_waiter, NULL);
    pthread_detach(t);
    return 0;
}

int main(int argc, char **argv)
{
    const char *pool_dir = NULL, *image = NULL, *fs = "btrfs", *backend = NULL, *run = NULL;
    const char *socket_path = getenv("AMBER_SOCKET") ? getenv("AMBER_SOCKET") : DEFAULT_SOCKET;
    const char *node_id = NULL, *metrics_listen = NULL;
    uint64_t pool_size = 20ULL << 30, max_message = 4u << 20, xfs_max = 0, reserve = 0, v;
    unsigned long socket_mode = 0600;
    bool exit_with_parent = false;
    enum log_level lvl;
    enum { O_POOL = 256, O_IMAGE, O_SIZE, O_FS, O_BACKEND, O_XFSMAX, O_RESERVE, O_SOCKET, O_MODE,
           O_NODE, O_MAXMSG, O_RUN, O_EWP, O_LOGLVL, O_LOGJSON, O_VERSION,
           O_PEER_LISTEN, O_TLS_CERT, O_TLS_KEY, O_TLS_CA, O_PEERS_FILE, O_METRICS,
           O_CLUSTER_CA, O_CLUSTER_CA_KEY, O_CLUSTER_REGISTRY, O_ARCHIVES_FILE,
           O_RESIDENT, O_STORE_OFF, O_NO_DEFRAG, O_DEFRAG_THRESHOLD, O_DEFRAG_SWEEP,
           O_PEER_KEEPALIVE };
    struct store_opts store_opts = { .resident = STORE_RESIDENT_DEFAULT, .defrag = true };
    struct peer_opts peer_opts = { .keepalive_ms = PEER_KEEPALIVE_DEFAULT };
    struct cluster_opts cluster_opts = {0};
    static const struct option opts[] = {
        { "pool", required_argument, NULL, O_POOL },
        { "pool-image", required_argument, NULL, O_IMAGE },
        { "pool-size", required_argument, NULL, O_SIZE },
        { "pool-fs", required_argument, NULL, O_FS },
        { "backend", required_argument, NULL, O_BACKEND },
        { "xfs-max-extents", required_argument, NULL, O_XFSMAX },
        { "reserve", required_argument, NULL, O_RESERVE },
        { "socket", required_argument, NULL, O_SOCKET },
        { "socket-mode", required_argument, NULL, O_MODE },
        { "node-id", required_argument, NULL, O_NODE },
        { "node-name", required_argument, NULL, O_NODE },
        { "metrics-listen", required_argument, NULL, O_METRICS },
        { "max-message", required_argument, NULL, O_MAXMSG },
        { "run", required_argument, NULL, O_RUN },
        { "exit-with-parent", no_argument, NULL, O_EWP },
        { "log-level", required_argument, NULL, O_LOGLVL },
        { "log-json", no_argument, NULL, O_LOGJSON },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, O_VERSION },
        { "peer-listen", required_argument, NULL, O_PEER_LISTEN },
        { "tls-cert", required_argument, NULL, O_TLS_CERT },
        { "tls-key", required_argument, NULL, O_TLS_KEY },
        { "tls-ca", required_argument, NULL, O_TLS_CA },
        { "peers-file", required_argument, NULL, O_PEERS_FILE },
        LIMIT_OPTIONS,
        { "cluster-ca", required_argument, NULL, O_CLUSTER_CA },
        { "cluster-ca-key", required_argument, NULL, O_CLUSTER_CA_KEY },
        { "cluster-registry", required_argument, NULL, O_CLUSTER_REGISTRY },
        { "archives-file", required_argument, NULL, O_ARCHIVES_FILE },
        { "resident-snapshots", required_argument, NULL, O_RESIDENT },
        { "store-off", no_argument, NULL, O_STORE_OFF },
        { "no-defrag", no_argument, NULL, O_NO_DEFRAG },
        { "defrag-sweep", no_argument, NULL, O_DEFRAG_SWEEP },
        { "defrag-threshold", required_argument, NULL, O_DEFRAG_THRESHOLD },
        { "peer-keepalive", required_argument, NULL, O_PEER_KEEPALIVE },
        {}
    };
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_POOL: pool_dir = optarg; break;
        case O_PEER_LISTEN: peer_opts.listen = optarg; break;
        case O_TLS_CERT: peer_opts.tls_cert = optarg; break;
        case O_TLS_KEY: peer_opts.tls_key = optarg; break;
        case O_TLS_CA: peer_opts.tls_ca = optarg; break;
        case O_PEERS_FILE: peer_opts.peers_file = optarg; break;
        case O_CLUSTER_CA: cluster_opts.ca_cert = optarg; break;
        case O_CLUSTER_CA_KEY: cluster_opts.ca_key = optarg; break;
        case O_CLUSTER_REGISTRY: cluster_opts.registry = optarg; break;
        case O_ARCHIVES_FILE: cluster_opts.archives_file = optarg; break;
        case O_METRICS: metrics_listen = optarg; break;
        case O_RESIDENT:
            /* K = 0 is refused: the newest snapshot is the base of the next
             * exact diff, of a replica's next transfer and of a revert. */
            if (parse_u64(optarg, &v) < 0 || v == 0 || v > UINT32_MAX) {
                fprintf(stderr, "amberd: --resident-snapshots: a number of at least 1\n");
                return 2;
            }
            store_opts.resident = (uint32_t)v;
            break;
        case O_STORE_OFF: store_opts.off = true; break;
        case O_NO_DEFRAG: store_opts.defrag = false; break;
        case O_DEFRAG_SWEEP: store_opts.defrag_sweep = true; break;
        case O_DEFRAG_THRESHOLD:
            if (parse_u64(optarg, &store_opts.defrag_threshold) < 0 || store_opts.defrag_threshold == 0) {
                fprintf(stderr, "amberd: --defrag-threshold: a positive number of extents per GiB\n");
                return 2;
            }
            break;
        case O_PEER_KEEPALIVE:
            if (parse_u64(optarg, &v) < 0 || v > 3600000) {
                fprintf(stderr, "amberd: --peer-keepalive: milliseconds, 0 to 3600000\n");
                return 2;
            }
            peer_opts.keepalive_ms = (uint32_t)v;
            break;
        case O_IMAGE: image = optarg; break;
        case O_SIZE:
            if (parse_size(optarg, &pool_size) < 0 || pool_size < (256u << 20)) {
                fprintf(stderr, "amberd: --pool-size: need a size of at least 256M, got \"%s\"\n", optarg);
                return 2;
            }
            break;
        case O_FS:
            if (strcmp(optarg, "btrfs") != 0 && strcmp(optarg, "xfs") != 0) {
                fprintf(stderr, "amberd: --pool-fs: btrfs or xfs, not \"%s\"\n", optarg);
                return 2;
            }
            fs = optarg;
            break;
        case O_BACKEND: backend = optarg; break;
        case O_XFSMAX:
            if (parse_u64(optarg, &xfs_max) < 0 || xfs_max == 0) {
                fprintf(stderr, "amberd: --xfs-max-extents: a positive number\n");
                return 2;
            }
            break;
        case O_RESERVE:
            if (parse_size(optarg, &reserve) < 0) {
                fprintf(stderr, "amberd: --reserve: not a size: \"%s\"\n", optarg);
                return 2;
            }
            break;
        case O_SOCKET: socket_path = optarg; break;
        case O_MODE: {
            char *end;
            socket_mode = strtoul(optarg, &end, 8);
            if (*end || socket_mode > 0777) {
                fprintf(stderr, "amberd: --socket-mode: an octal mode such as 0660\n");
                return 2;
            }
            break;
        }
        case O_NODE: node_id = optarg; break;
        case O_MAXMSG:
            if (parse_size(optarg, &max_message) < 0 || max_message < 4096 || max_message > (1u << 30)) {
                fprintf(stderr, "amberd: --max-message: a size between 4K and 1G\n");
                return 2;
            }
            break;
        case O_RUN: run = optarg; break;
        case O_EWP: exit_with_parent = true; break;
        case O_LOGLVL:
            if (log_level_parse(optarg, &lvl) < 0) {
                fprintf(stderr, "amberd: --log-level: debug, info, warn or error\n");
                return 2;
            }
            log_set_level(lvl);
            break;
        case O_LOGJSON: log_set_json(true); break;
        case 'h': fputs(usage, stdout); return 0;
        case O_VERSION: printf("amberd %s\n", AMBER_VERSION); return 0;
        default:
            if (o >= LIMIT_OPT_BASE) {
                if (limits_option(o, optarg) < 0)
                    return 2;
                break;
            }
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "amberd: unexpected argument \"%s\"\n%s", argv[optind], usage);
        return 2;
    }
    if (!pool_dir) {
        fprintf(stderr, "amberd: --pool DIR is required\n\n%s", usage);
        return 2;
    }
    (void)v;
    if (exit_with_parent)
        prctl(PR_SET_PDEATHSIG, SIGTERM);

    struct amberd d = { .pool_dir = xstrdup(pool_dir), .socket_path = xstrdup(socket_path) };
    pthread_mutex_init(&d.busy_lock, NULL);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    d.node_id = xstrdup(node_id ? node_id : host);
    int r, ret = 1;
    _cleanup_free_ char *catpath = NULL, *sockdir = NULL;
    _cleanup_free_ struct rpc_method *node_methods = NULL;
    size_t n_node_methods = 0;

    if (image) {
        r = pool_image_setup(image, pool_size, pool_dir, fs, &d.image);
        if (r < 0) {
            log_error_errno(r, "pool", "cannot set up the pool image %s at %s", image, pool_dir);
            goto out;
        }
        log_info("pool", "pool image %s on %s mounted at %s", image,
                 pool_image_device(d.image), pool_dir);
    }
    struct pool_open_opts po = { .backend = backend, .reserve_bytes = reserve, .max_extents = xfs_max };
    r = pool_open(pool_dir, &po, &d.pool);
    if (r == -EBUSY) {
        log_error_errno(r, "pool", "pool %s is in use by another amberd", pool_dir);
        goto out;
    }
    if (r < 0) {
        log_error_errno(r, "pool", "cannot open the pool at %s", pool_dir);
        goto out;
    }
    if (strcmp(pool_backend_name(d.pool), "xfs") == 0)
        log_warn("pool", "XFS backend: each snapshot is a reflink copy that blocks the volume's "
                 "writers while it runs (about 22 us an extent; guard at --xfs-max-extents)");
    catpath = xasprintf("%s/%s", pool_dir, CAT_POOL_RELPATH);
    r = cat_open(catpath, &d.cat);
    if (r < 0) {
        log_error_errno(r, "catalog", "cannot open %s: %s", catpath,
                        r == -EPROTO ? "written by a newer amberd" : "");
        goto out;
    }
    ballast_ensure(&d);
    if (strcmp(pool_backend_name(d.pool), "btrfs") != 0)
        store_opts.defrag = false;
    if ((r = store_start(&d, &store_opts)) < 0)
        goto out;
    r = daemon_recover(&d);
    if (r < 0)
        log_warn("recover", "some interrupted operations could not be recovered; see above");
    if ((r = store_run(&d)) < 0)
        goto out;

    struct rpc_server_config sc = { .max_message = max_message, .max_calls = (uint32_t)amberd_limits.calls,
                                    .userdata = &d };
    r = rpc_server_new(&sc, &d.srv);
    if (r < 0) {
        log_error_errno(r, "rpc", "cannot create the server");
        goto out;
    }
    g_srv = d.srv;
    sockdir = xstrdup(socket_path);
    char *slash = strrchr(sockdir, '/');
    if (slash && slash != sockdir) {
        *slash = 0;
        mkdir_p(sockdir, 0755);
    }
    node_methods = api_node_all_methods(&n_node_methods);
    struct rpc_listener_config lc = {
        .methods = node_methods, .n_methods = n_node_methods, .mode = (mode_t)socket_mode,
    };
    r = rpc_server_listen_unix(d.srv, socket_path, &lc, NULL);
    if (r < 0) {
        log_error_errno(r, "rpc", "cannot listen on %s%s", socket_path,
                        r == -EADDRINUSE ? " (another amberd is serving it)" : "");
        goto out;
    }
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    log_info("amberd", "serving pool %s (%s) on %s, version %s", pool_dir,
             pool_backend_name(d.pool), socket_path, AMBER_VERSION);
    if ((r = cluster_start(&d, &cluster_opts, &peer_opts)) < 0)
        goto out;
    if ((r = peer_start(&d, &peer_opts)) < 0)
        goto out;
    if ((r = cluster_run(&d)) < 0)
        goto out;
    if (run && (r = start_child(run, socket_path)) < 0) {
        log_error_errno(r, "amberd", "cannot run %s", run);
        goto out;
    }
    if ((r = sched_start(&d)) < 0)
        log_error_errno(r, "schedule", "cannot start the scheduler");
    if (metrics_listen && (r = metrics_start(&d, metrics_listen)) < 0) {
        log_error_errno(r, "metrics", "cannot listen on %s", metrics_listen);
        goto out;
    }
    if ((r = scoped_start(&d)) < 0)
        log_error_errno(r, "scoped", "cannot restore the pods' API sockets");
    rpc_server_run(d.srv);
    log_info("amberd", "stopping");
    store_interrupt(&d);
    sched_stop(&d);
    ret = 0;
    if (run) {
        if (g_child_status < 0 && g_child > 0) {
            kill(g_child, SIGTERM);
            for (int i = 0; i < 100 && g_child_status < 0; i++)
                usleep(50000);
        }
        ret = g_child_status < 0 ? 1 : g_child_status;
    }
out:
    rpc_server_free(d.srv);
    scoped_stop(&d);
    metrics_stop();
    cluster_stop(&d);
    peer_stop(&d);
    store_stop(&d);
    cat_close(d.cat);
    pool_close(d.pool);
    if (d.image) {
        r = pool_image_teardown(d.image);
        if (r < 0) {
            log_error_errno(r, "pool", "could not unmount/detach the pool image (volumes still attached?)");
            if (ret == 0)
                ret = 1;
        }
    }
    free(d.pool_dir);
    free(d.socket_path);
    free(d.node_id);
    return ret;
}
