/* cluster-api.c: amber.v1.Cluster on the node socket (proto/cluster.proto),
 * and the cluster's Prometheus metrics. Decode, call jobs.c / archiver.c,
 * encode. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "cluster.pb-c.h"
#include "snapd/cluster/cluster.h"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }
static char *nz(const char *s) { return (char *)(s ? s : ""); }

int cluster_fail(struct rpc_call *c, struct op_err *e, int r, const char *what)
{
    int code = e->code ? e->code : rpc_code_from_errno(r);
    const char *msg = e->msg ? e->msg : strerror(-r);
    int ret = what ? rpc_error(c, code, "%s: %s", what, msg) : rpc_error(c, code, "%s", msg);
    op_err_clear(e);
    return ret;
}

int cluster_need_member(struct rpc_call *c, char **ret_name)
{
    _cleanup_free_ char *name = NULL;
    if (peer_ca_member(D(c), rpc_call_peer(c), &name) != 1) {
        log_warn("cluster", "a peer that is not a cluster member asked for %s", rpc_call_method(c));
        return rpc_error(c, RPC_PERMISSION_DENIED, "only members of this cluster may ask this");
    }
    log_debug("cluster", "node %s asks %s", name, rpc_call_method(c));
    if (ret_name)
        *ret_name = TAKE_PTR(name);
    return 0;
}

int cluster_node_client(struct rpc_call *c, const char *node, struct rpc_client **cl,
                        struct rpc_tls **tls)
{
    struct amberd *d = D(c);
    struct op_err e = {0};
    int r;
    if (name_validate(node) < 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "not a node name: \"%s\"", node);
    if ((r = cluster_peer_ensure(d, node, &e)) < 0)
        return cluster_fail(c, &e, r, NULL);
    _cleanup_(cat_peer_freep) struct cat_peer *p = NULL;
    if ((r = cat_peer_get(d->cat, node, &p)) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    if ((r = peer_client(d, p, cl, tls, &e)) < 0)
        return cluster_fail(c, &e, r, NULL);
    return 0;
}

int cluster_local_snapshot(struct rpc_call *c, const char *id, struct cat_snapshot **ret)
{
    int r = cat_snapshot_get(D(c)->cat, id, ret);
    if (r == -ENOENT)
        return rpc_error(c, RPC_NOT_FOUND, "snapshot %s not found on node %s", id, D(c)->node_id);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(D(c)->cat));
    return 0;
}

static int need_cluster(struct rpc_call *c)
{
    if (!D(c)->cluster)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "this node is not in cluster mode (--cluster-ca)");
    return 0;
}

static int h_create_from(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterCreateVolumeRequest *q = (const void *)m;
    int r;
    if ((r = need_cluster(c)) < 0)
        return r;
    struct cluster_create_args a = {
        .name = q->name, .size = q->size_bytes, .source_node = q->source_node,
        .source_snapshot = q->source_snapshot, .source_volume = q->source_volume,
        .pvc_namespace = q->pvc_namespace, .pvc_name = q->pvc_name, .fs_type = q->fs_type,
        .params = q->params, .wait_ms = q->wait_ms,
    };
    /* Never wait past the caller's deadline (less a margin for the answer). */
    uint64_t dl = rpc_call_deadline(c);
    if (dl) {
        uint64_t now = now_mono_ns();
        uint64_t left_ms = dl > now ? (dl - now) / 1000000 : 0;
        left_ms = left_ms > 4000 ? left_ms - 2000 : left_ms / 2;
        if (a.wait_ms > left_ms)
            a.wait_ms = (uint32_t)left_ms;
    }
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    r = cluster_create_volume(D(c), &a, &v, &e);
    if (r < 0)
        return cluster_fail(c, &e, r, NULL);
    return api_send_volume(c, v);
}

static void job_pb(const struct cluster_job_info *j, Amber__V1__ClusterJob *o)
{
    Amber__V1__ClusterJob m = AMBER__V1__CLUSTER_JOB__INIT;
    m.name = j->name;
    m.state = j->state;
    m.source_node = j->source_node;
    m.source_snapshot = j->source_snapshot;
    m.source_volume = j->source_volume;
    m.archive = j->archive;
    m.bytes_done = j->bytes_done;
    m.bytes_total = j->bytes_total;
    m.bytes_resumed = j->bytes_resumed;
    m.bytes_on_wire = j->bytes_on_wire;
    m.error = j->error;
    m.error_code = j->error_code;
    m.started_ns = (int64_t)j->started_ns;
    m.finished_ns = (int64_t)j->finished_ns;
    m.attempts = j->attempts;
    m.snapshots_moved = j->snapshots_moved;
    *o = m;
}

static int h_get_job(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterJobRef *q = (const void *)m;
    struct cluster_job_info j = {0};
    if (cluster_job_get(D(c), q->name, &j) < 0)
        return rpc_error(c, RPC_NOT_FOUND, "no cluster job makes volume %s", q->name);
    Amber__V1__ClusterJob o;
    job_pb(&j, &o);
    int r = rpc_call_send(c, &o.base);
    cluster_job_info_free(&j);
    return r;
}

static int h_list_jobs(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct cluster_job_info *v = NULL;
    size_t n = 0;
    cluster_job_list(D(c), &v, &n);
    Amber__V1__ClusterJob *o = xcalloc(n ? n : 1, sizeof *o);
    Amber__V1__ClusterJob **po = xcalloc(n ? n : 1, sizeof *po);
    for (size_t i = 0; i < n; i++) {
        job_pb(&v[i], &o[i]);
        po[i] = &o[i];
    }
    Amber__V1__ListClusterJobsResponse resp = AMBER__V1__LIST_CLUSTER_JOBS_RESPONSE__INIT;
    resp.jobs = po;
    resp.n_jobs = n;
    int r = rpc_call_send(c, &resp.base);
    for (size_t i = 0; i < n; i++)
        cluster_job_info_free(&v[i]);
    free(v);
    free(o);
    free(po);
    return r;
}

/* The archive status of snapshot s. */
static int send_status(struct rpc_call *c, const struct cat_snapshot *s)
{
    struct amberd *d = D(c);
    const char *name = NULL;
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].key, CLUSTER_ARCHIVE_LABEL) == 0)
            name = s->labels[i].value;
    Amber__V1__SnapshotArchiveStatus o = AMBER__V1__SNAPSHOT_ARCHIVE_STATUS__INIT;
    o.snapshot_id = s->id;
    o.archive = nz(name);
    o.state = "";
    struct cat_export *x = NULL;
    const struct cluster_archive *a = cluster_archive_get(d, name);
    if (a) {
        o.repo = a->url;
        o.state = "pending";
        if (cat_export_find(d->cat, s->id, a->url, &x) == 0) {
            o.state = (char *)cat_export_state_to_string(x->state);
            o.manifest = nz(x->manifest_id);
        }
    } else if (name) {
        o.state = "unknown-archive";
    }
    int r = rpc_call_send(c, &o.base);
    cat_export_free(x);
    return r;
}

static int h_archive_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ArchiveSnapshotRequest *q = (const void *)m;
    struct amberd *d = D(c);
    int r;
    if ((r = need_cluster(c)) < 0)
        return r;
    if (!cluster_archive_get(d, q->archive))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "no archive named \"%s\" (--archives-file)", q->archive);
    struct op_err e = {0};
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    if ((r = snap_find(d, q->snapshot, &s, &e)) < 0)
        return cluster_fail(c, &e, r, NULL);
    const char *cur = NULL;
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].key, CLUSTER_ARCHIVE_LABEL) == 0)
            cur = s->labels[i].value;
    if (!cur || strcmp(cur, q->archive) != 0) {
        struct cat_label *l = xcalloc(s->n_labels + 1, sizeof *l);
        size_t n = 0;
        for (size_t i = 0; i < s->n_labels; i++)
            if (strcmp(s->labels[i].key, CLUSTER_ARCHIVE_LABEL) != 0)
                l[n++] = s->labels[i];
        l[n++] = (struct cat_label){ (char *)CLUSTER_ARCHIVE_LABEL, q->archive };
        r = cat_snapshot_set_labels(d->cat, s->id, l, n);
        free(l);
        if (r < 0)
            return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
        cat_snapshot_free(s);
        s = NULL;
        if ((r = cat_snapshot_get(d->cat, q->snapshot, &s)) < 0 &&
            (r = snap_find(d, q->snapshot, &s, &e)) < 0)
            return cluster_fail(c, &e, r, NULL);
        log_info("cluster", "snapshot %s (%s) is kept in archive %s", s->id, s->name, q->archive);
    }
    archiver_kick(d);
    const struct cluster_archive *a = cluster_archive_get(d, q->archive);
    struct cluster_state *cs = d->cluster;
    while (q->wait) {
        struct cat_export *x = NULL;
        bool done = cat_export_find(d->cat, s->id, a->url, &x) == 0 && x->state == CAT_EXPORT_DONE;
        cat_export_free(x);
        if (done)
            break;
        /* Wait for the archiver's next export (it broadcasts after each). */
        pthread_mutex_lock(&cs->lock);
        uint64_t seen = cs->archived_total + cs->archive_failures, fails = cs->archive_failures;
        while (!cs->stopping && cs->archived_total + cs->archive_failures == seen)
            pthread_cond_wait(&cs->cond, &cs->lock);
        bool failed = cs->archive_failures != fails, stop = cs->stopping;
        pthread_mutex_unlock(&cs->lock);
        if (stop)
            return rpc_error(c, RPC_UNAVAILABLE, "amberd is stopping");
        if (failed && rpc_call_cancelled(c))
            return rpc_error(c, RPC_CANCELLED, "cancelled");
        if (failed) {
            struct cat_export *y = NULL;
            bool bad = cat_export_find(d->cat, s->id, a->url, &y) == 0 && y->state == CAT_EXPORT_FAILED;
            cat_export_free(y);
            if (bad)
                return rpc_error(c, RPC_UNAVAILABLE, "archiving snapshot %s to %s failed (retried "
                                 "in the background; see amberd's log)", s->id, q->archive);
        }
    }
    return send_status(c, s);
}

static int h_get_snapshot_archive(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SnapshotRef *q = (const void *)m;
    struct op_err e = {0};
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = snap_find(D(c), q->snapshot, &s, &e);
    if (r < 0)
        return cluster_fail(c, &e, r, NULL);
    return send_status(c, s);
}

static int h_forget_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ForgetSnapshotRequest *q = (const void *)m;
    int r;
    if ((r = need_cluster(c)) < 0)
        return r;
    if (!uuid_is_valid(q->snapshot))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a snapshot id");
    struct op_err e = {0};
    unsigned nm = 0;
    uint64_t nc = 0;
    /* A snapshot here that no archive keeps: nothing to search for. */
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    bool labelled = false;
    if (cat_snapshot_get(D(c)->cat, q->snapshot, &s) == 0) {
        for (size_t i = 0; i < s->n_labels; i++)
            labelled |= strcmp(s->labels[i].key, CLUSTER_ARCHIVE_LABEL) == 0;
    }
    if (!s || labelled)
        r = archive_forget(D(c), q->snapshot, &nm, &nc, &e);
    if (r < 0)
        return cluster_fail(c, &e, r, NULL);
    Amber__V1__ForgetSnapshotResponse o = AMBER__V1__FORGET_SNAPSHOT_RESPONSE__INIT;
    o.manifests_deleted = nm;
    o.chunks_deleted = nc;
    return rpc_call_send(c, &o.base);
}

static int h_resolve(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ResolveNodeRequest *q = (const void *)m;
    struct amberd *d = D(c);
    int r;
    if ((r = need_cluster(c)) < 0)
        return r;
    _cleanup_free_ char *addr = NULL;
    if (strcmp(q->node, d->node_id) == 0 && d->peer_address)
        addr = xstrdup(d->peer_address);
    else if ((r = registry_lookup(d->cluster->registry, q->node, &addr)) < 0)
        return rpc_error(c, RPC_NOT_FOUND, "node %s is not in the registry %s", q->node,
                         registry_spec(d->cluster->registry));
    Amber__V1__ResolveNodeResponse o = AMBER__V1__RESOLVE_NODE_RESPONSE__INIT;
    o.node = q->node;
    o.address = addr;
    o.registry = (char *)registry_spec(d->cluster->registry);
    return rpc_call_send(c, &o.base);
}

static int h_collect(struct rpc_call *c, const ProtobufCMessage *m)
{
    int r;
    if ((r = need_cluster(c)) < 0)
        return r;
    Amber__V1__ClusterCollectResponse o = AMBER__V1__CLUSTER_COLLECT_RESPONSE__INIT;
    int a = cluster_replicas_collect(D(c), NULL), b = cluster_clone_sweep(D(c));
    if (a < 0 || b < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(D(c)->cat));
    o.replicas_deleted = (uint32_t)a;
    o.clone_snapshots_deleted = (uint32_t)b;
    return rpc_call_send(c, &o.base);
}

#define M(name, in, out, fn) \
    { "/amber.v1.Cluster/" name, &amber__v1__##in##__descriptor, &amber__v1__##out##__descriptor, \
      RPC_UNARY, fn }

const struct rpc_method cluster_api_methods[] = {
    M("CreateVolumeFrom", cluster_create_volume_request, volume, h_create_from),
    M("GetJob", cluster_job_ref, cluster_job, h_get_job),
    M("ListJobs", empty, list_cluster_jobs_response, h_list_jobs),
    M("ArchiveSnapshot", archive_snapshot_request, snapshot_archive_status, h_archive_snapshot),
    M("GetSnapshotArchive", snapshot_ref, snapshot_archive_status, h_get_snapshot_archive),
    M("ForgetSnapshot", forget_snapshot_request, forget_snapshot_response, h_forget_snapshot),
    M("ResolveNode", resolve_node_request, resolve_node_response, h_resolve),
    M("GetNodeSnapshot", cluster_snapshot_ref, snapshot, cluster_h_get_node_snapshot),
    M("Collect", empty, cluster_collect_response, h_collect),
    { "/amber.v1.Cluster/NodeDiff", &amber__v1__cluster_diff_request__descriptor,
      &amber__v1__diff_response__descriptor, RPC_SERVER_STREAM, cluster_h_node_diff },
};
const size_t cluster_api_methods_n = ARRAY_SIZE(cluster_api_methods);

void cluster_metrics(struct amberd *d, struct buf *b)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return;
    unsigned running = 0;
    uint64_t inflight_done = 0, inflight_total = 0;
    struct cluster_job_info *v = NULL;
    size_t n = 0;
    cluster_job_list(d, &v, &n);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(v[i].state, "done") != 0 && strcmp(v[i].state, "failed") != 0) {
            running++;
            inflight_done += v[i].bytes_done;
            inflight_total += v[i].bytes_total;
        }
        cluster_job_info_free(&v[i]);
    }
    free(v);
    pthread_mutex_lock(&cs->lock);
    buf_printf(b, "# HELP amber_cluster_jobs_running Volumes being copied from another node or an archive.\n"
               "# TYPE amber_cluster_jobs_running gauge\namber_cluster_jobs_running %u\n", running);
    buf_printf(b, "# HELP amber_cluster_job_bytes_done Bytes of the running copies done so far.\n"
               "# TYPE amber_cluster_job_bytes_done gauge\namber_cluster_job_bytes_done %llu\n"
               "# TYPE amber_cluster_job_bytes_total gauge\namber_cluster_job_bytes_total %llu\n",
               (unsigned long long)inflight_done, (unsigned long long)inflight_total);
    buf_printf(b, "# TYPE amber_cluster_pulled_bytes_total counter\namber_cluster_pulled_bytes_total %llu\n"
               "# TYPE amber_cluster_restored_bytes_total counter\namber_cluster_restored_bytes_total %llu\n"
               "# TYPE amber_cluster_archived_snapshots_total counter\n"
               "amber_cluster_archived_snapshots_total %llu\n"
               "# TYPE amber_cluster_archive_failures_total counter\namber_cluster_archive_failures_total %llu\n",
               (unsigned long long)cs->pulled_bytes, (unsigned long long)cs->restored_bytes,
               (unsigned long long)cs->archived_total, (unsigned long long)cs->archive_failures);
    pthread_mutex_unlock(&cs->lock);
}
