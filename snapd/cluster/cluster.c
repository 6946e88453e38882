/* cluster.c: cluster mode's start and stop, and the catalog peers it makes.
 *
 * Cluster mode is on when amberd gets --cluster-ca. The CA certificate
 * becomes the peer port's trust anchor (--tls-ca); with --cluster-ca-key
 * too, amberd issues its own node certificate (CN = --node-id) into
 * POOL/.amber/cluster/ and keeps it while it stays valid for 30 more days,
 * names this node and chains to the CA (its key is what peers of other
 * clusters pin; a rotated CA or a renamed node gets a new one at start);
 * without it, --tls-cert/--tls-key must be a certificate the
 * CA signed (e.g. from cert-manager), which is checked here.
 *
 * Trust (implemented in sync/, peer_opts.ca_members): the TLS handshake
 * accepts a certificate that is pinned to a catalog peer, or that the
 * cluster CA signed. A caller whose fingerprint is not pinned got in by the
 * CA, so it is a cluster member named by its CN; members read any volume of
 * this node (the cluster is one trust domain, as a Kubernetes cluster is),
 * while peers of other clusters keep their pins and publications. */
#include <string.h>
#include <unistd.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/cluster/cluster.h"

int cluster_start(struct amberd *d, const struct cluster_opts *o, struct peer_opts *po)
{
    if (!o->ca_cert) {
        if (o->ca_key || o->registry || o->archives_file)
            return log_error_errno(-EINVAL, "cluster", "--cluster-ca-key, --cluster-registry and "
                                   "--archives-file need --cluster-ca");
        return 0;
    }
    if (po->tls_ca && strcmp(po->tls_ca, o->ca_cert) != 0)
        return log_error_errno(-EINVAL, "cluster", "--tls-ca and --cluster-ca differ: in cluster "
                               "mode the cluster CA is the peer trust anchor");
    struct cluster_state *cs = xcalloc(1, sizeof *cs);
    pthread_mutex_init(&cs->lock, NULL);
    pthread_cond_init(&cs->cond, NULL);
    d->cluster = cs;
    cs->ca_file = xstrdup(o->ca_cert);
    int r;
    if (o->ca_key) {
        if (po->tls_cert || po->tls_key)
            return log_error_errno(-EINVAL, "cluster", "--cluster-ca-key issues the node "
                                   "certificate: do not also give --tls-cert/--tls-key");
        _cleanup_free_ char *dir = xasprintf("%s/.amber/cluster", d->pool_dir);
        if ((r = mkdir_p(dir, 0700)) < 0)
            return log_error_errno(r, "cluster", "cannot make %s", dir);
        cs->cert_file = xasprintf("%s/node.crt", dir);
        cs->key_file = xasprintf("%s/node.key", dir);
        /* Kept while the CA, the name and 30 more days of validity hold:
         * peers of other clusters pin its key. */
        if (access(cs->key_file, F_OK) == 0 &&
            cluster_ca_cert_ok(o->ca_cert, cs->cert_file, d->node_id, 30) == 1) {
            log_info("cluster", "node certificate CN=%s (signed by %s) is still good", d->node_id,
                     o->ca_cert);
        } else {
            _cleanup_free_ char *err = NULL;
            r = cluster_ca_issue(o->ca_cert, o->ca_key, d->node_id, 365, cs->cert_file, cs->key_file,
                                 &err);
            if (r < 0)
                return log_error_errno(r, "cluster", "cannot issue the node certificate of %s: %s",
                                       d->node_id, err ? err : "");
            log_info("cluster", "issued node certificate CN=%s signed by %s", d->node_id, o->ca_cert);
        }
        po->tls_cert = cs->cert_file;
        po->tls_key = cs->key_file;
    } else if (!po->tls_cert || cluster_ca_signed(o->ca_cert, po->tls_cert) != 1) {
        return log_error_errno(-EKEYREJECTED, "cluster", "cluster mode needs a node certificate "
                               "signed by the cluster CA: --cluster-ca-key, or --tls-cert/--tls-key "
                               "issued by it (cert-manager)");
    }
    po->tls_ca = cs->ca_file;
    po->ca_members = true;
    po->extra_methods = cluster_peer_methods;
    po->n_extra_methods = cluster_peer_methods_n;
    if (o->registry && (r = registry_open(o->registry, &cs->registry)) < 0)
        return log_error_errno(r, "cluster", "--cluster-registry: dir:PATH or template:PATTERN "
                               "with {node} and a port, not \"%s\"", o->registry);
    if (o->archives_file && (r = cluster_archives_load(cs, o->archives_file)) < 0)
        return r;
    if ((r = cat_cluster_jobs_open(d->cat)) < 0)
        return log_error_errno(r, "cluster", "catalog: %s", cat_errmsg(d->cat));
    return 0;
}

int cluster_run(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return 0;
    if (!d->peer_address)
        log_warn("cluster", "no --peer-listen: other nodes cannot pull from this one");
    int r = registry_publish(cs->registry, d->node_id, d->peer_address);
    if (r < 0)
        log_warn_errno(r, "cluster", "cannot publish our address in %s", registry_spec(cs->registry));
    /* Interrupted copy jobs first (a replica they pull into is then not
     * collected); then what a crash or a restart left: hidden snapshots of
     * abandoned copies, replicas nothing needs (clone.c, replicas.c). */
    if ((r = cluster_jobs_resume(d)) < 0)
        return r;
    cluster_clone_sweep(d);
    cluster_replicas_collect(d, NULL);
    log_info("cluster", "node %s in cluster mode: registry %s, %zu archive(s)", d->node_id,
             cs->registry ? registry_spec(cs->registry) : "(none)", cs->n_archives);
    return archiver_start(d);
}

void cluster_stop(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return;
    pthread_mutex_lock(&cs->lock);
    cs->stopping = true;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);
    archiver_stop(d);
    cluster_jobs_free(d);
    registry_free(cs->registry);
    cluster_archives_free(cs);
    free(cs->ca_file);
    free(cs->cert_file);
    free(cs->key_file);
    free(cs);
    d->cluster = NULL;
}

int cluster_peer_ensure(struct amberd *d, const char *node, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return op_fail(e, RPC_FAILED_PRECONDITION, -ENOTCONN, "this node is not in cluster mode");
    _cleanup_free_ char *addr = NULL;
    int r = registry_lookup(cs->registry, node, &addr);
    if (r < 0)
        return op_fail(e, RPC_UNAVAILABLE, -EHOSTUNREACH, "node %s is not in the registry %s", node,
                       registry_spec(cs->registry));
    struct cat_peer *old = NULL;
    struct cat_peer p = { .name = (char *)node, .address = addr };
    if (cat_peer_get(d->cat, node, &old) == 0) {
        bool same = old->address && strcmp(old->address, addr) == 0 &&
                    (!old->fingerprint || !*old->fingerprint);
        if (old->fingerprint && *old->fingerprint) {
            cat_peer_free(old);
            return op_fail(e, RPC_FAILED_PRECONDITION, -EEXIST, "peer %s is pinned (another "
                           "cluster's node?): a cluster node of that name cannot be reached", node);
        }
        cat_peer_free(old);
        r = same ? 0 : cat_peer_update(d->cat, &p);
    } else {
        r = cat_peer_add(d->cat, &p);
    }
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    return 0;
}
