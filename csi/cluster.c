/* cluster.c: handles that name the node holding the object, and the
 * Controller's calls into amberd's cluster service.
 *
 * With --node-handles, CSI volume ids and snapshot ids are "NODE/UUID":
 * NODE is the node whose amberd holds the object (node names are DNS
 * subdomains, never containing '/'), so any node's plugin can tell from
 * the handle alone where to pull a snapshot from, without a central
 * database. A handle without '/' is one made before this scheme (or
 * without --node-handles): it means "on this node", as it always did. A
 * handle naming another node is NOT_FOUND for every call that needs the
 * object here (Node*, Delete, Expand, …); CreateVolume with a snapshot
 * source on another node copies it (controller.c: create_remote). */
#include <string.h>

#include "amber/log.h"
#include "csi/csi.h"

int csi_handle_split(const char *handle, char **ret_node, char **ret_id)
{
    const char *slash = strchr(handle, '/');
    *ret_node = NULL;
    if (!slash) {
        *ret_id = xstrdup(handle);
        return 0;
    }
    if (slash == handle || strchr(slash + 1, '/'))
        return -EINVAL;
    *ret_node = strndup(handle, (size_t)(slash - handle));
    if (!*ret_node)
        abort();
    *ret_id = xstrdup(slash + 1);
    return 0;
}

char *csi_local_id(struct csi *p, const char *handle)
{
    char *node = NULL, *id = NULL;
    if (csi_handle_split(handle, &node, &id) < 0)
        return NULL;
    if (node && strcmp(node, p->node_id) != 0) {
        free(node);
        free(id);
        return NULL;
    }
    free(node);
    return id;
}

void csi_handle_fmt(struct csi *p, const char *id, char out[CSI_HANDLE_MAX])
{
    if (p->node_handles && id && *id)
        snprintf(out, CSI_HANDLE_MAX, "%s/%s", p->node_id, id);
    else
        snprintf(out, CSI_HANDLE_MAX, "%s", id ? id : "");
}

/* After CreateSnapshot: keep it in the class's archive. */
int csi_archive_snapshot(struct rpc_call *c, const char *snap_id, const char *archive)
{
    Amber__V1__ArchiveSnapshotRequest q = AMBER__V1__ARCHIVE_SNAPSHOT_REQUEST__INIT;
    q.snapshot = (char *)snap_id;
    q.archive = (char *)archive;
    struct rpc_status st = {0};
    _cleanup_free_ char *path = xstrdup("/amber.v1.Cluster/ArchiveSnapshot");
    _cleanup_pb_ Amber__V1__SnapshotArchiveStatus *s = NULL;
    int code = rpc_client_call(CSI(c)->amberd, path, &q.base,
                               &amber__v1__snapshot_archive_status__descriptor, 30000,
                               (ProtobufCMessage **)&s, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "keeping the snapshot in its archive");
    return 0;
}

/* Before DeleteSnapshot: remove it from every archive (FAILED_PRECONDITION:
 * this amberd is not in cluster mode, nothing to do). */
int csi_forget_snapshot(struct rpc_call *c, const char *snap_id)
{
    Amber__V1__ForgetSnapshotRequest q = AMBER__V1__FORGET_SNAPSHOT_REQUEST__INIT;
    q.snapshot = (char *)snap_id;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__ForgetSnapshotResponse *r = NULL;
    int code = rpc_client_call(CSI(c)->amberd, "/amber.v1.Cluster/ForgetSnapshot", &q.base,
                               &amber__v1__forget_snapshot_response__descriptor, 120000,
                               (ProtobufCMessage **)&r, &st);
    if (code == RPC_FAILED_PRECONDITION) {
        rpc_status_clear(&st);
        return 0;
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "removing the snapshot from its archive");
    if (r->manifests_deleted)
        log_info("controller", "removed snapshot %s from the archive: %u manifest(s), %llu chunk(s)",
                 snap_id, r->manifests_deleted, (unsigned long long)r->chunks_deleted);
    return 0;
}
