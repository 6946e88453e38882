/* clone.c: a new volume on this node from a volume another node holds.
 *
 * A volume's newest state cannot be pulled as it changes, so the holder
 * takes a hidden, internal snapshot of it (amber.v1.ClusterPeer/PrepareClone
 * on the peer port), which the asking node pulls like any other snapshot
 * (jobs.c: only the delta when it holds an earlier snapshot of the chain),
 * clones, and then releases (ReleaseClone: the holder deletes it).
 *
 * The hidden snapshot:
 *  - is found by its label amber.clone-for=NODE/KEY (the asking node, and
 *    KEY the new volume's name there), so a retried or resumed job (after
 *    a kill of either side) finds the same snapshot and the sync engine
 *    resumes its transfer; it is named "clone-" + 24 hex digits of
 *    sha256(NODE "/" KEY) + "-" + its creation time (ns, hex), so one made
 *    again after an abandoned one was swept has another name (the asking
 *    node's replica may hold the old one);
 *  - carries the labels amber.internal=clone (ListSnapshots of amberd, so
 *    of amber-csi and amberctl, skips it; the label travels with the
 *    snapshot, so the asking node's replica of it is hidden too),
 *    amber.clone-for=NODE/KEY and amber.clone-expires=UNIX_SECONDS;
 *  - goes when the asking node releases it (the copy is done), when its
 *    volume is deleted, or when it expires: an abandoned copy (the
 *    provisioner gave up, the asking node is gone) is collected by the
 *    holder's sweep (cluster_clone_sweep: at start, at each
 *    PrepareClone/ReleaseClone and with the archiver's rounds). Each
 *    PrepareClone moves the expiry on by the TTL (AMBER_CLUSTER_CLONE_TTL_S,
 *    default 6 h), so a copy that is still being retried keeps it. */
#include <inttypes.h>
#include <openssl/evp.h>
#include <string.h>
#include <time.h>

#include "amber/log.h"
#include "amber/util.h"
#include "cluster.pb-c.h"
#include "snapd/cluster/cluster.h"

#define LABEL_FOR "amber.clone-for"
#define LABEL_EXPIRES "amber.clone-expires"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

static uint64_t ttl_s(void)
{
    const char *s = getenv("AMBER_CLUSTER_CLONE_TTL_S");
    char *end = NULL;
    unsigned long long v = s && *s ? strtoull(s, &end, 10) : 0;
    return s && *s && end && !*end ? v : 6 * 3600;
}

static void clone_name(const char *node, const char *key, uint64_t t, char out[64])
{
    _cleanup_free_ char *in = xasprintf("%s/%s", node, key);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned n = 0;
    if (!EVP_Digest(in, strlen(in), md, &n, EVP_sha256(), NULL))
        abort();
    int k = snprintf(out, 64, "clone-");
    for (unsigned i = 0; i < 12; i++)
        k += snprintf(out + k, 64 - (size_t)k, "%02x", md[i]);
    snprintf(out + k, 64 - (size_t)k, "-%" PRIx64, t);
}

static const char *label_of(const struct cat_snapshot *s, const char *key)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].key, key) == 0)
            return s->labels[i].value;
    return NULL;
}

bool cluster_snapshot_hidden(const struct cat_snapshot *s)
{
    return label_of(s, CLUSTER_INTERNAL_LABEL) != NULL;
}

/* The (newest ready) hidden snapshot of volume vol_id for (node, key), or
 * -ENOENT. */
static int clone_find(struct amberd *d, const char *vol_id, const char *node, const char *key,
                      struct cat_snapshot **ret)
{
    _cleanup_free_ char *forv = xasprintf("%s/%s", node, key);
    struct cat_label l = { .key = (char *)LABEL_FOR, .value = forv };
    struct cat_snapshot_filter f = { .volume_id = vol_id, .labels = &l, .n_labels = 1,
                                     .states = 1u << CAT_SNAP_READY };
    struct cat_snapshot_list sl = {0};
    int r = cat_snapshot_list(d->cat, &f, NULL, &sl);
    if (r < 0)
        return r;
    r = -ENOENT;
    if (sl.n > 0) {
        *ret = xcalloc(1, sizeof **ret);
        **ret = sl.items[sl.n - 1];
        sl.items[sl.n - 1] = (struct cat_snapshot){0};
        r = 0;
    }
    cat_snapshot_list_free(&sl);
    return r;
}

static void set_expiry(struct amberd *d, struct cat_snapshot *s, uint64_t expires)
{
    char v[32];
    snprintf(v, sizeof v, "%" PRIu64, expires);
    struct cat_label *l = xcalloc(s->n_labels + 1, sizeof *l);
    size_t n = 0;
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].key, LABEL_EXPIRES) != 0)
            l[n++] = s->labels[i];
    l[n++] = (struct cat_label){ .key = (char *)LABEL_EXPIRES, .value = v };
    if (cat_snapshot_set_labels(d->cat, s->id, l, n) < 0)
        log_warn("cluster", "snapshot %s: cannot move its expiry on: %s", s->id, cat_errmsg(d->cat));
    free(l);
}

int cluster_clone_sweep(struct amberd *d)
{
    struct cat_snapshot_filter f = { .label_key = LABEL_FOR };
    struct cat_snapshot_list sl = {0};
    int r = cat_snapshot_list(d->cat, &f, NULL, &sl);
    if (r < 0)
        return r;
    uint64_t now = (uint64_t)time(NULL);
    unsigned n = 0;
    for (size_t i = 0; i < sl.n; i++) {
        struct cat_snapshot *s = &sl.items[i];
        const char *exp = label_of(s, LABEL_EXPIRES);
        struct cat_volume *v = NULL;
        bool gone = cat_volume_get(d->cat, s->volume_id, &v) < 0;
        cat_volume_free(v);
        /* Only our own hidden snapshots: a replica's (origin is a peer) is
         * the asking side's, collected with the replica. */
        if (s->origin && strcmp(s->origin, "local") != 0)
            continue;
        if (!gone && (!exp || strtoull(exp, NULL, 10) > now))
            continue;
        struct op_err e = {0};
        if (snap_delete(d, s->id, &e) == 0) {
            log_info("cluster", "removed hidden snapshot %s of %s (%s): %s", s->id, label_of(s, LABEL_FOR),
                     s->name, gone ? "its volume is gone" : "expired, the copy was abandoned");
            n++;
        } else {
            log_warn("cluster", "cannot remove hidden snapshot %s: %s", s->id, e.msg ? e.msg : "");
        }
        op_err_clear(&e);
    }
    cat_snapshot_list_free(&sl);
    return (int)n;
}

/* --- the holder: what the asking node calls on the peer port ------------------- */

/* A member's request (its name in *ret_node) with a volume id and a key. */
static int check_req(struct rpc_call *c, const Amber__V1__ClusterCloneRequest *q, char **ret_node)
{
    int r = cluster_need_member(c, ret_node);
    if (r < 0)
        return r;
    if (!uuid_is_valid(q->volume))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a volume id, not \"%s\"", q->volume);
    if (name_validate(q->key) < 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "key: a volume name");
    return 0;
}

int cluster_h_peer_prepare_clone(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterCloneRequest *q = (const void *)m;
    struct amberd *d = D(c);
    _cleanup_free_ char *node = NULL;
    int r;
    if ((r = check_req(c, q, &node)) < 0)
        return r;
    cluster_clone_sweep(d);
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    if (cat_volume_get(d->cat, q->volume, &v) < 0 || v->state != CAT_VOL_READY)
        return rpc_error(c, RPC_NOT_FOUND, "volume %s not found on node %s", q->volume, d->node_id);
    if (v->replica_peer)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "volume %s is a replica of %s: clone its origin",
                         v->name, v->replica_peer);
    uint64_t expires = (uint64_t)time(NULL) + ttl_s();
    struct cat_snapshot *s = NULL;
    if (clone_find(d, v->id, node, q->key, &s) == 0) {
        set_expiry(d, s, expires);
        log_info("cluster", "node %s resumes its copy of volume %s through hidden snapshot %s",
                 node, v->name, s->id);
    } else {
        cat_snapshot_free(s);
        s = NULL;
        char name[64], exp[32];
        clone_name(node, q->key, now_real_ns(), name);
        snprintf(exp, sizeof exp, "%" PRIu64, expires);
        _cleanup_free_ char *forv = xasprintf("%s/%s", node, q->key);
        struct cat_label labels[] = {
            { .key = (char *)CLUSTER_INTERNAL_LABEL, .value = (char *)"clone" },
            { .key = (char *)LABEL_EXPIRES, .value = exp },
            { .key = (char *)LABEL_FOR, .value = forv },
        };
        struct snap_create_args a = { .volume = v->id, .name = name, .labels = labels,
                                      .n_labels = ARRAY_SIZE(labels) };
        struct op_err e = {0};
        if ((r = snap_create_many(d, &a, 1, &s, &e)) < 0) {
            _cleanup_free_ char *what = xasprintf("hidden snapshot of %s", v->name);
            return cluster_fail(c, &e, r, what);
        }
        log_info("cluster", "hidden snapshot %s of volume %s for node %s (volume %s)", s->id, v->name,
                 node, q->key);
    }
    crashpoint("cluster-clone:prepared");
    r = api_send_snapshot(c, s);
    cat_snapshot_free(s);
    return r;
}

int cluster_h_peer_release_clone(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterCloneRequest *q = (const void *)m;
    struct amberd *d = D(c);
    _cleanup_free_ char *node = NULL;
    int r;
    if ((r = check_req(c, q, &node)) < 0)
        return r;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    if (clone_find(d, q->volume, node, q->key, &s) == 0) {
        struct op_err e = {0};
        if ((r = snap_delete(d, s->id, &e)) < 0) {
            _cleanup_free_ char *what = xasprintf("hidden snapshot %s", s->id);
            return cluster_fail(c, &e, r, what);
        }
        log_info("cluster", "node %s copied volume %s: hidden snapshot %s removed", node, q->volume,
                 s->id);
    }
    cluster_clone_sweep(d);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

/* --- the asking node ------------------------------------------------------------ */

static int holder_call(struct amberd *d, const char *node, const char *method, const char *volume,
                       const char *key, const ProtobufCMessageDescriptor *out, ProtobufCMessage **ret,
                       struct op_err *e)
{
    int r;
    if ((r = cluster_peer_ensure(d, node, e)) < 0)
        return r;
    _cleanup_(cat_peer_freep) struct cat_peer *p = NULL;
    if ((r = cat_peer_get(d->cat, node, &p)) < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    if ((r = peer_client(d, p, &cl, &tls, e)) < 0)
        return r;
    Amber__V1__ClusterCloneRequest q = AMBER__V1__CLUSTER_CLONE_REQUEST__INIT;
    q.volume = (char *)volume;
    q.key = (char *)key;
    struct rpc_status st = {0};
    int code = rpc_client_call(cl, method, &q.base, out, 120000, ret, &st);
    rpc_client_free(cl);
    rpc_tls_free(tls);
    r = 0;
    if (code != RPC_OK)
        r = op_fail(e, code, rpc_errno_from_code(code) ?: -EIO, "node %s: %s", node,
                    st.message ? st.message : rpc_code_name(code));
    rpc_status_clear(&st);
    return r;
}

int cluster_clone_prepare(struct amberd *d, const char *node, const char *volume, const char *key,
                          char **ret_snap_id, struct op_err *e)
{
    Amber__V1__Snapshot *s = NULL;
    int r = holder_call(d, node, "/amber.v1.ClusterPeer/PrepareClone", volume, key,
                        &amber__v1__snapshot__descriptor, (ProtobufCMessage **)&s, e);
    if (r < 0)
        return r;
    if (!uuid_is_valid(s->id))
        r = op_fail(e, RPC_INTERNAL, -EPROTO, "node %s answered a snapshot without an id", node);
    else
        *ret_snap_id = xstrdup(s->id);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return r;
}

int cluster_clone_release(struct amberd *d, const char *node, const char *volume, const char *key,
                          struct op_err *e)
{
    Amber__V1__Empty *o = NULL;
    int r = holder_call(d, node, "/amber.v1.ClusterPeer/ReleaseClone", volume, key,
                        &amber__v1__empty__descriptor, (ProtobufCMessage **)&o, e);
    if (o)
        protobuf_c_message_free_unpacked(&o->base, NULL);
    return r;
}
