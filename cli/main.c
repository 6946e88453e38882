/* main.c: amberctl, the operator's and pipeline step's command line: global
 * options, dispatch to command groups, the shared call helper. */
#include <getopt.h>
#include <stdarg.h>
#include <string.h>

#include "amber/log.h"
#include "amber.pb-c.h"
#include "cli/cli.h"
#include "cli/peer.h"
#include "cli/cluster.h"
#include "cli/pipeline.h"

static const char usage[] =
"Usage: amberctl [--socket PATH] [--json] [--timeout DURATION] COMMAND ...\n"
"\n"
"Talks to amberd, the Amber node daemon, over its unix socket.\n"
"\n"
"Commands:\n"
"  info                       the daemon, its pool and its identity\n"
"  volume create|list|show|resize|delete|attach|detach|revert|history ...\n"
"  volume publish VOL --to PEER|'*'   let a peer pull it (unpublish --from)\n"
"  peer add|list|remove ...   trusted peers (other clusters' amberds)\n"
"  sync pull PEER VOLUME | sync push VOL --to PEER   replicate snapshots\n"
"  subscribe PEER VOLUME [--every DUR] | subscription list|remove ...\n"
"  cluster init-ca|issue|jobs|job|resolve ...  (and snapshot archive SNAP --to A)\n"
"  snapshot create|list|show|delete|diff|mount|umount|k8s-manifest ...\n"
"  schedule set|list|remove|hold|release ...   the time machine\n"
"  run list|show ...          pipeline runs (snapshots labelled run=RUN)\n"
"  export SNAPSHOT --repo URL  incremental, encrypted export to a repository\n"
"  restore MANIFEST --repo URL --volume NEW\n"
"  repo init|list|show|verify|gc --repo URL   (runs here, without amberd)\n"
"\n"
"Options:\n"
"  --socket PATH     the daemon's socket (default $AMBER_SOCKET, else\n"
"                    " AMBER_DEFAULT_SOCKET ")\n"
"  --json            machine-readable JSON output (one object, or an array)\n"
"  --timeout DUR     give up after DUR (default 60s; e.g. 500ms, 2m)\n"
"  -h, --help        help; `amberctl COMMAND --help` for a command's\n"
"  --version         the version\n"
"\n"
"Sizes take K, M, G, T suffixes (powers of 1024). Volumes are named by name,\n"
"id or pvc/NAMESPACE/NAME; snapshots by id, name or VOLUME@NAME.\n"
"Errors go to stderr with the gRPC status name, and exit status 1.\n";

int cli_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("amberctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 2;
}

int cli_status_error(const struct rpc_status *st, int code)
{
    fprintf(stderr, "amberctl: %s: %s\n", rpc_code_name(code),
            st->message && *st->message ? st->message : "(no message)");
    return 1;
}

int cli_call(struct cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret)
{
    struct rpc_status st = {0};
    int code = rpc_client_call(c->client, method, req, desc, c->timeout_ms, ret, &st);
    if (code != RPC_OK) {
        cli_status_error(&st, code);
        rpc_status_clear(&st);
        return 1;
    }
    rpc_status_clear(&st);
    return 0;
}

int cli_getopt(struct cli *c, int argc, char **argv, const struct option *extra, size_t n_extra,
               int (*on_opt)(int opt, const char *arg, void *data), void *data, const char *help)
{
    struct option *opts = xcalloc(n_extra + 3, sizeof *opts);
    if (n_extra)
        memcpy(opts, extra, n_extra * sizeof *opts);
    opts[n_extra] = (struct option){ "json", no_argument, NULL, 'j' };
    opts[n_extra + 1] = (struct option){ "help", no_argument, NULL, 'h' };
    optind = 0;     /* 0, not 1: glibc re-initialises its permutation state */
    opterr = 0;
    int o, ret = -3;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'j') {
            c->json = true;
        } else if (o == 'h') {
            fputs(help, stdout);
            ret = -1;
            break;
        } else if (o == '?' || o == ':') {
            cli_usage("%s: unknown option or missing value: %s\n%s", argv[0],
                      argv[optind - 1], help);
            ret = -2;
            break;
        } else if (!on_opt || on_opt(o, optarg, data) < 0) {
            ret = -2;
            break;
        }
    }
    free(opts);
    return ret == -3 ? optind : ret;
}

int cli_dispatch(struct cli *c, const char *group, const struct cmd *cmds, size_t n,
                 int argc, char **argv, const char *help)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "--help") == 0) {
        fputs(help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < n; i++)
        if (strcmp(cmds[i].name, argv[1]) == 0)
            return cmds[i].fn(c, argc - 1, argv + 1);
    cli_usage("%s: unknown command \"%s\"", group, argv[1]);
    fputs(help, stderr);
    return 2;
}

static const char info_help[] =
"Usage: amberctl info [--json]\n"
"\n"
"Shows the daemon's version, node, pool (backend, size, free), counts of\n"
"volumes and snapshots, and its TLS identity for peers.\n";

int cmd_info(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, info_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (i < argc)
        return cli_usage("info: unexpected argument \"%s\"", argv[i]);
    Amber__V1__GetInfoRequest req = AMBER__V1__GET_INFO_REQUEST__INIT;
    Amber__V1__GetInfoResponse *r;
    if (cli_call(c, "/amber.v1.Amber/GetInfo", &req.base, &amber__v1__get_info_response__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_str(&j, "version", r->version);
        json_str(&j, "node_id", r->node_id);
        json_str(&j, "pool_path", r->pool_path);
        json_str(&j, "backend", r->backend);
        json_u64(&j, "pool_total_bytes", r->pool_total_bytes);
        json_u64(&j, "pool_free_bytes", r->pool_free_bytes);
        json_u64(&j, "pool_used_bytes", r->pool_used_bytes);
        json_u64(&j, "volumes", r->volumes);
        json_u64(&j, "snapshots", r->snapshots);
        json_str(&j, "fingerprint", r->fingerprint);
        json_str(&j, "peer_address", r->peer_address);
        json_u64(&j, "format_version", r->format_version);
        json_str(&j, "scope", r->scope);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        _cleanup_free_ char *tot = fmt_size(r->pool_total_bytes), *fr = fmt_size(r->pool_free_bytes);
        printf("version:      %s\n", r->version);
        printf("node:         %s\n", r->node_id);
        printf("pool:         %s (%s, format %u)\n", r->pool_path, r->backend, r->format_version);
        printf("pool size:    %s, %s free\n", tot, fr);
        printf("volumes:      %u\n", r->volumes);
        printf("snapshots:    %u\n", r->snapshots);
        printf("scope:        %s\n", r->scope);
        if (*r->fingerprint)
            printf("fingerprint:  %s\n", r->fingerprint);
        if (*r->peer_address)
            printf("peer address: %s\n", r->peer_address);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static const struct cmd commands[] = {
    { "info", cmd_info, "the daemon and its pool" },
    { "check", cmd_check, "the daemon's self-check: catalog vs pool" },
    { "volume", cmd_volume_cluster, "volumes (publish/unpublish: cmd-peer.c)" },
    { "snapshot", cmd_snapshot_cluster, "snapshots (archive: cmd-cluster.c)" },
    { "schedule", cmd_schedule, "snapshot schedules and retention" },
    { "run", cmd_run, "pipeline runs" },
    { "export", cmd_export, "export a snapshot to a repository" },
    { "restore", cmd_restore, "restore a manifest onto a new volume" },
    { "repo", cmd_repo, "object-store repositories" },
    { "peer", cmd_peer, "trusted peers (other clusters' amberds)" },
    { "sync", cmd_sync, "pull or push a volume's snapshots" },
    { "subscribe", cmd_subscribe, "follow a peer's volume" },
    { "subscription", cmd_subscription, "subscriptions" },
    { "cluster", cmd_cluster, "the cluster: CA, node certificates, copy jobs" },
    { "store", cmd_store, "the pool's local snapshot store" },
};

int main(int argc, char **argv)
{
    struct cli c = { .socket = getenv("AMBER_SOCKET"), .timeout_ms = 60000 };
    if (!c.socket || !*c.socket)
        c.socket = AMBER_DEFAULT_SOCKET;
    static const struct option opts[] = {
        { "socket", required_argument, NULL, 's' },
        { "json", no_argument, NULL, 'j' },
        { "timeout", required_argument, NULL, 't' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        {}
    };
    int o;
    while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (o) {
        case 's': c.socket = optarg; break;
        case 'j': c.json = true; break;
        case 't':
            if (parse_duration_ms(optarg, &c.timeout_ms) < 0 || c.timeout_ms == 0)
                return cli_usage("--timeout: a duration such as 30s or 500ms, not \"%s\"", optarg);
            break;
        case 'h': fputs(usage, stdout); return 0;
        case 'V': printf("amberctl %s\n", AMBER_VERSION); return 0;
        default: fputs(usage, stderr); return 2;
        }
    }
    if (optind >= argc) {
        fputs(usage, stderr);
        return 2;
    }
    if (rpc_client_new(c.socket, NULL, &c.client) < 0)
        return cli_usage("--socket: cannot use \"%s\"", c.socket);
    int argc2 = argc - optind;
    char **argv2 = argv + optind;
    int ret = -1;
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (strcmp(commands[i].name, argv2[0]) == 0)
            ret = commands[i].fn(&c, argc2, argv2);
    if (ret == -1) {
        if (strcmp(argv2[0], "help") == 0) {
            fputs(usage, stdout);
            ret = 0;
        } else {
            cli_usage("unknown command \"%s\"", argv2[0]);
            fputs(usage, stderr);
            ret = 2;
        }
    }
    rpc_client_free(c.client);
    return ret;
}
