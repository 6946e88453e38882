/* cmd-cluster.c: amberctl cluster init-ca|issue|jobs|job|resolve, and the
 * cluster's additions to `volume show` (a volume still being copied from
 * another node shows its job) and `snapshot show|archive|archive-status`.
 * init-ca and issue run here, without a daemon (cluster-ca.c). */
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>

#include "amber.pb-c.h"
#include "cluster.pb-c.h"
#include "cli/cluster.h"
#include "cli/peer.h"
#include "snapd/cluster/cluster.h"

static const char cluster_help[] =
"Usage: amberctl cluster COMMAND ...\n"
"\n"
"  init-ca --out DIR [--cn NAME] [--days N]\n"
"                 make the cluster CA once: DIR/ca.crt and DIR/ca.key (0600),\n"
"                 for the Secret every node's amberd reads (deploy/overlays/cluster)\n"
"  issue NODE --ca DIR --out DIR [--days N]\n"
"                 a node certificate signed by the CA: DIR/NODE.crt, DIR/NODE.key\n"
"                 (amberd --tls-cert/--tls-key; or let amberd issue its own with\n"
"                 --cluster-ca-key)\n"
"  jobs           volumes being made here from another node's snapshot\n"
"  job VOLUME     one of them: state, bytes done, source, archive\n"
"  resolve NODE   a node's peer address, from the cluster registry\n"
"  forget SNAPSHOT_ID\n"
"                 remove a snapshot from every archive (what DeleteSnapshot does;\n"
"                 for a snapshot whose node is gone). Chunks another manifest\n"
"                 needs stay\n"
"  gc             remove the hidden replicas (c-<snapshot id>) no volume of this node\n"
"                 is a clone of any more, and our hidden snapshots of abandoned\n"
"                 copies (also done at start and after each copy job)\n";

struct copts {
    const char *out, *ca, *cn;
    uint64_t days;
    bool wait;
};

static int on_copt(int o, const char *arg, void *data)
{
    struct copts *x = data;
    switch (o) {
    case 'o': x->out = arg; return 0;
    case 'c': x->ca = arg; return 0;
    case 'n': x->cn = arg; return 0;
    case 'w': x->wait = true; return 0;
    case 'd':
        if (parse_u64(arg, &x->days) < 0 || x->days == 0 || x->days > 36500)
            return cli_usage("--days: 1 to 36500"), -1;
        return 0;
    }
    return -1;
}

static const struct option copts_spec[] = {
    { "out", required_argument, NULL, 'o' },
    { "ca", required_argument, NULL, 'c' },
    { "cn", required_argument, NULL, 'n' },
    { "days", required_argument, NULL, 'd' },
};

static int c_init_ca(struct cli *c, int argc, char **argv)
{
    struct copts x = { .cn = "amber-cluster-ca", .days = 3650 };
    int i = cli_getopt(c, argc, argv, copts_spec, ARRAY_SIZE(copts_spec), on_copt, &x, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc != i || !x.out)
        return cli_usage("cluster init-ca --out DIR [--cn NAME] [--days N]");
    if (mkdir_p(x.out, 0700) < 0)
        return cli_usage("--out: cannot make %s", x.out);
    _cleanup_free_ char *crt = xasprintf("%s/ca.crt", x.out), *key = xasprintf("%s/ca.key", x.out);
    int r = cluster_ca_make(crt, key, x.cn, (int)x.days);
    if (r == -EEXIST) {
        fprintf(stderr, "amberctl: %s or %s exists already: a cluster has one CA\n", crt, key);
        return 1;
    }
    if (r < 0) {
        fprintf(stderr, "amberctl: making the CA: %s\n", strerror(-r));
        return 1;
    }
    if (c->json) {
        printf("{\"cert\":\"%s\",\"key\":\"%s\"}\n", crt, key);
    } else {
        printf("cluster CA: %s (key %s)\n", crt, key);
        printf("kubectl -n amber-system create secret generic amber-cluster-ca \\\n"
               "    --from-file=ca.crt=%s --from-file=ca.key=%s\n", crt, key);
    }
    return 0;
}

static int c_issue(struct cli *c, int argc, char **argv)
{
    struct copts x = { .days = 365 };
    int i = cli_getopt(c, argc, argv, copts_spec, ARRAY_SIZE(copts_spec), on_copt, &x, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1 || !x.out || !x.ca)
        return cli_usage("cluster issue NODE --ca DIR --out DIR [--days N]");
    const char *node = argv[i];
    if (name_validate(node) < 0)
        return cli_usage("cluster issue: \"%s\" is not a node name", node);
    if (mkdir_p(x.out, 0700) < 0)
        return cli_usage("--out: cannot make %s", x.out);
    _cleanup_free_ char *cacrt = xasprintf("%s/ca.crt", x.ca), *cakey = xasprintf("%s/ca.key", x.ca);
    _cleanup_free_ char *crt = xasprintf("%s/%s.crt", x.out, node);
    _cleanup_free_ char *key = xasprintf("%s/%s.key", x.out, node);
    _cleanup_free_ char *err = NULL;
    int r = cluster_ca_issue(cacrt, cakey, node, (int)x.days, crt, key, &err);
    if (r < 0) {
        fprintf(stderr, "amberctl: issuing %s: %s\n", node, err ? err : strerror(-r));
        return 1;
    }
    if (c->json)
        printf("{\"cert\":\"%s\",\"key\":\"%s\"}\n", crt, key);
    else
        printf("node certificate for %s: %s (key %s)\n", node, crt, key);
    return 0;
}

static void job_print(struct cli *c, const Amber__V1__ClusterJob *j, struct json *arr)
{
    if (c->json) {
        struct json one = {0};
        struct json *jj = arr ? arr : &one;
        json_obj_begin(jj, NULL);
        json_str(jj, "name", j->name);
        json_str(jj, "state", j->state);
        json_str(jj, "source_node", j->source_node);
        json_str(jj, "source_snapshot", j->source_snapshot);
        json_str(jj, "source_volume", j->source_volume);
        json_str(jj, "archive", j->archive);
        json_u64(jj, "bytes_done", j->bytes_done);
        json_u64(jj, "bytes_total", j->bytes_total);
        json_u64(jj, "bytes_resumed", j->bytes_resumed);
        json_u64(jj, "bytes_on_wire", j->bytes_on_wire);
        json_u64(jj, "snapshots_moved", j->snapshots_moved);
        json_u64(jj, "attempts", j->attempts);
        json_str(jj, "error", j->error);
        json_i64(jj, "started_ns", j->started_ns);
        json_i64(jj, "finished_ns", j->finished_ns);
        json_obj_end(jj);
        if (!arr)
            json_print(&one, stdout);
        return;
    }
    _cleanup_free_ char *done = fmt_size(j->bytes_done), *total = fmt_size(j->bytes_total);
    printf("volume:   %s (not ready: %s)\n", j->name, j->state);
    if (*j->source_volume)
        printf("source:   volume %s of node %s%s%s\n", j->source_volume, j->source_node,
               *j->source_snapshot ? ", through its hidden snapshot " : "", j->source_snapshot);
    else
        printf("source:   snapshot %s of node %s%s%s\n", j->source_snapshot, j->source_node,
               *j->archive ? ", from archive " : "", j->archive);
    if (j->bytes_total)
        printf("progress: %s of %s (%.0f%%)%s\n", done, total,
               100.0 * (double)j->bytes_done / (double)j->bytes_total,
               j->bytes_resumed ? ", resumed" : "");
    if (j->attempts > 1)
        printf("attempts: %u (resumed after amberd restarted)\n", j->attempts);
    if (*j->error)
        printf("error:    %s\n", j->error);
}

static int c_jobs(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    Amber__V1__Empty q = AMBER__V1__EMPTY__INIT;
    Amber__V1__ListClusterJobsResponse *r;
    if (cli_call(c, "/amber.v1.Cluster/ListJobs", &q.base,
                 &amber__v1__list_cluster_jobs_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_arr_begin(&j, NULL);
        for (size_t k = 0; k < r->n_jobs; k++)
            job_print(c, r->jobs[k], &j);
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        struct table *t = table_new(5, "VOLUME", "STATE", "SOURCE", "DONE", "TOTAL");
        for (size_t k = 0; k < r->n_jobs; k++) {
            const Amber__V1__ClusterJob *x = r->jobs[k];
            _cleanup_free_ char *src = xasprintf("%s/%s", x->source_node, x->source_snapshot);
            _cleanup_free_ char *d = fmt_size(x->bytes_done), *tt = fmt_size(x->bytes_total);
            table_row(t, x->name, x->state, src, d, tt);
        }
        table_print(t, stdout);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int c_job(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("cluster job VOLUME");
    Amber__V1__ClusterJobRef q = AMBER__V1__CLUSTER_JOB_REF__INIT;
    q.name = argv[i];
    Amber__V1__ClusterJob *r;
    if (cli_call(c, "/amber.v1.Cluster/GetJob", &q.base, &amber__v1__cluster_job__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    job_print(c, r, NULL);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int c_resolve(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("cluster resolve NODE");
    Amber__V1__ResolveNodeRequest q = AMBER__V1__RESOLVE_NODE_REQUEST__INIT;
    q.node = argv[i];
    Amber__V1__ResolveNodeResponse *r;
    if (cli_call(c, "/amber.v1.Cluster/ResolveNode", &q.base, &amber__v1__resolve_node_response__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json)
        printf("{\"node\":\"%s\",\"address\":\"%s\"}\n", r->node, r->address);
    else
        printf("%s %s\n", r->node, r->address);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int c_forget(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("cluster forget SNAPSHOT_ID");
    Amber__V1__ForgetSnapshotRequest q = AMBER__V1__FORGET_SNAPSHOT_REQUEST__INIT;
    q.snapshot = argv[i];
    Amber__V1__ForgetSnapshotResponse *r;
    if (cli_call(c, "/amber.v1.Cluster/ForgetSnapshot", &q.base,
                 &amber__v1__forget_snapshot_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json)
        printf("{\"manifests_deleted\":%u,\"chunks_deleted\":%llu}\n", r->manifests_deleted,
               (unsigned long long)r->chunks_deleted);
    else
        printf("removed %u manifest(s), %llu chunk(s) no other manifest needed\n", r->manifests_deleted,
               (unsigned long long)r->chunks_deleted);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int c_gc(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, cluster_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 0)
        return cli_usage("cluster gc: no operands");
    Amber__V1__Empty q = AMBER__V1__EMPTY__INIT;
    Amber__V1__ClusterCollectResponse *r;
    if (cli_call(c, "/amber.v1.Cluster/Collect", &q.base,
                 &amber__v1__cluster_collect_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json)
        printf("{\"replicas_deleted\":%u,\"clone_snapshots_deleted\":%u}\n", r->replicas_deleted,
               r->clone_snapshots_deleted);
    else
        printf("removed %u hidden replica(s), %u abandoned hidden snapshot(s)\n", r->replicas_deleted,
               r->clone_snapshots_deleted);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

int cmd_cluster(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "init-ca", c_init_ca, NULL }, { "issue", c_issue, NULL }, { "jobs", c_jobs, NULL },
        { "job", c_job, NULL }, { "resolve", c_resolve, NULL }, { "forget", c_forget, NULL },
        { "gc", c_gc, NULL },
    };
    return cli_dispatch(c, "cluster", cmds, ARRAY_SIZE(cmds), argc, argv, cluster_help);
}

/* --- volume show: a volume still being copied shows its job ----------------- */

int cmd_volume_cluster(struct cli *c, int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "show") == 0 && argv[2][0] != '-') {
        Amber__V1__VolumeRef q = AMBER__V1__VOLUME_REF__INIT;
        q.volume = argv[2];
        ProtobufCMessage *v = NULL;
        struct rpc_status st = {0};
        int code = rpc_client_call(c->client, "/amber.v1.Amber/GetVolume", &q.base,
                                   &amber__v1__volume__descriptor, c->timeout_ms, &v, &st);
        if (v)
            protobuf_c_message_free_unpacked(v, NULL);
        rpc_status_clear(&st);
        if (code == RPC_NOT_FOUND) {
            Amber__V1__ClusterJobRef jq = AMBER__V1__CLUSTER_JOB_REF__INIT;
            jq.name = argv[2];
            Amber__V1__ClusterJob *j = NULL;
            code = rpc_client_call(c->client, "/amber.v1.Cluster/GetJob", &jq.base,
                                   &amber__v1__cluster_job__descriptor, c->timeout_ms,
                                   (ProtobufCMessage **)&j, &st);
            rpc_status_clear(&st);
            if (code == RPC_OK) {
                job_print(c, j, NULL);
                protobuf_c_message_free_unpacked(&j->base, NULL);
                return 0;
            }
        }
    }
    return cmd_volume_peer(c, argc, argv);
}

/* --- snapshot archive | archive-status, and show's archive line ---------------- */

static void status_print(struct cli *c, const Amber__V1__SnapshotArchiveStatus *s, bool line)
{
    if (c->json && !line) {
        printf("{\"snapshot_id\":\"%s\",\"archive\":\"%s\",\"state\":\"%s\",\"manifest\":\"%s\"}\n",
               s->snapshot_id, s->archive, s->state, s->manifest);
        return;
    }
    if (!*s->archive)
        printf("archive:  -\n");
    else
        printf("archive:  %s: %s%s%s\n", s->archive, s->state, *s->manifest ? ", manifest " : "",
               s->manifest);
}

static int s_archive(struct cli *c, int argc, char **argv, bool set)
{
    static const struct option o[] = { { "to", required_argument, NULL, 'o' },
                                       { "wait", no_argument, NULL, 'w' } };
    struct copts x = {0};
    int i = cli_getopt(c, argc, argv, o, 2, on_copt, &x,
                       "Usage: amberctl snapshot archive SNAP --to ARCHIVE [--wait]\n"
                       "       amberctl snapshot archive-status SNAP\n");
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1 || (set && !x.out))
        return cli_usage(set ? "snapshot archive SNAP --to ARCHIVE" : "snapshot archive-status SNAP");
    Amber__V1__SnapshotArchiveStatus *r;
    int ret;
    if (set) {
        Amber__V1__ArchiveSnapshotRequest q = AMBER__V1__ARCHIVE_SNAPSHOT_REQUEST__INIT;
        q.snapshot = argv[i];
        q.archive = (char *)x.out;
        q.wait = x.wait;
        ret = cli_call(c, "/amber.v1.Cluster/ArchiveSnapshot", &q.base,
                       &amber__v1__snapshot_archive_status__descriptor, (ProtobufCMessage **)&r);
    } else {
        Amber__V1__SnapshotRef q = AMBER__V1__SNAPSHOT_REF__INIT;
        q.snapshot = argv[i];
        ret = cli_call(c, "/amber.v1.Cluster/GetSnapshotArchive", &q.base,
                       &amber__v1__snapshot_archive_status__descriptor, (ProtobufCMessage **)&r);
    }
    if (ret)
        return ret;
    status_print(c, r, false);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

int cmd_snapshot_cluster(struct cli *c, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "archive") == 0)
        return s_archive(c, argc - 1, argv + 1, true);
    if (argc >= 2 && strcmp(argv[1], "archive-status") == 0)
        return s_archive(c, argc - 1, argv + 1, false);
    int ret = cmd_snapshot(c, argc, argv);
    if (ret == 0 && !c->json && argc == 3 && strcmp(argv[1], "show") == 0) {
        Amber__V1__SnapshotRef q = AMBER__V1__SNAPSHOT_REF__INIT;
        q.snapshot = argv[2];
        Amber__V1__SnapshotArchiveStatus *r = NULL;
        struct rpc_status st = {0};
        if (rpc_client_call(c->client, "/amber.v1.Cluster/GetSnapshotArchive", &q.base,
                            &amber__v1__snapshot_archive_status__descriptor, c->timeout_ms,
                            (ProtobufCMessage **)&r, &st) == RPC_OK) {
            status_print(c, r, true);
            protobuf_c_message_free_unpacked(&r->base, NULL);
        }
        rpc_status_clear(&st);
    }
    return ret;
}
