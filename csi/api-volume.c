/* api-volume.c: the inline ephemeral "API volume" (issue 10): a pod that
 * declares a CSI volume of this driver with volumeAttributes
 * amber.csi.dev/api: "true" gets, at its mount path, a unix socket served
 * by amberd and bound to the pod's namespace.
 *
 * kubelet passes the pod's namespace, name and uid in volume_context
 * (the CSIDriver has podInfoOnMount: true) and marks the volume
 * csi.storage.k8s.io/ephemeral: "true". Publish makes the target directory
 * and asks amberd (OpenScopedSocket) to listen at TARGET/api.sock; amberd
 * records it and re-opens it after a restart. Unpublish asks amberd to
 * close it (CloseScopedSocket); if amberd is down, the socket file is
 * removed here and amberd forgets the row at its next start (the target is
 * gone). Nothing is mounted: the directory itself is the volume. */
#include <string.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "csi/csi.h"

#define API_KEY "amber.csi.dev/api"
#define POD_NS_KEY "csi.storage.k8s.io/pod.namespace"
#define POD_NAME_KEY "csi.storage.k8s.io/pod.name"
#define POD_UID_KEY "csi.storage.k8s.io/pod.uid"
#define API_SOCKET "api.sock"

int csi_api_publish(struct rpc_call *c, const Csi__V1__NodePublishVolumeRequest *q)
{
    void *const *ctx = (void *const *)q->volume_context;
    size_t n = q->n_volume_context;
    const char *api = csi_map_get(ctx, n, API_KEY);
    if (!api || strcmp(api, "true") != 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "an inline ephemeral volume is the API volume "
                         "(volumeAttributes %s: \"true\") or a snapshot (amber.csi.dev/snapshot: "
                         "pvc/NAME@SNAPSHOT)", API_KEY);
    const char *ns = csi_map_get(ctx, n, POD_NS_KEY);
    if (!ns || !*ns)
        return csi_error(c, RPC_INVALID_ARGUMENT, "no %s in volume_context: the CSIDriver needs "
                         "podInfoOnMount: true", POD_NS_KEY);
    const char *pod = csi_map_get(ctx, n, POD_NAME_KEY), *uid = csi_map_get(ctx, n, POD_UID_KEY);
    int r = mkdir_p(q->target_path, 0755);
    if (r < 0 && r != -EEXIST)
        return csi_error(c, RPC_INTERNAL, "creating %s: %s", q->target_path, strerror(-r));
    Amber__V1__OpenScopedSocketRequest oq = AMBER__V1__OPEN_SCOPED_SOCKET_REQUEST__INIT;
    oq.target_path = q->target_path;
    oq.namespace_ = (char *)ns;
    oq.pod_name = (char *)(pod ? pod : "");
    oq.pod_uid = (char *)(uid ? uid : "");
    oq.volume_handle = q->volume_id;
    struct rpc_status st = {0};
    ProtobufCMessage *resp = NULL;
    int code = amberd_call(c, "OpenScopedSocket", &oq.base,
                           &amber__v1__open_scoped_socket_response__descriptor, 30000, &resp, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "opening the pod's API socket");
    protobuf_c_message_free_unpacked(resp, NULL);
    rpc_status_clear(&st);
    log_info("node", "API volume %s for pod %s/%s at %s", q->volume_id, ns, pod ? pod : "?",
             q->target_path);
    return 0;
}

int csi_api_unpublish(struct rpc_call *c, const char *target)
{
    _cleanup_free_ char *sock = xasprintf("%s/" API_SOCKET, target);
    struct stat sb;
    if (lstat(sock, &sb) < 0 || !S_ISSOCK(sb.st_mode))
        return 0;    /* not an API volume (or already closed) */
    Amber__V1__CloseScopedSocketRequest cq = AMBER__V1__CLOSE_SCOPED_SOCKET_REQUEST__INIT;
    cq.target_path = (char *)target;
    struct rpc_status st = {0};
    ProtobufCMessage *resp = NULL;
    int code = amberd_call(c, "CloseScopedSocket", &cq.base, &amber__v1__empty__descriptor, 30000,
                           &resp, &st);
    if (code == RPC_UNAVAILABLE) {
        /* amberd is down: it drops the row at start since the target is gone. */
        unlink(sock);
    } else if (code != RPC_OK) {
        return amberd_fail(c, code, &st, "closing the pod's API socket");
    } else {
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    rpc_status_clear(&st);
    return 0;
}
