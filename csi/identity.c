/* identity.c: the CSI Identity service: who we are, what we can do, and
 * whether we are ready. Ready means amberd answers Health with ok: without
 * it no volume operation can succeed, so the sidecars should wait (and the
 * livenessprobe should see it), but a plugin restart would not help, so
 * an unreachable amberd is "not ready", never an error. */
#include <string.h>

#include "amber/log.h"
#include "csi/csi.h"

static int h_get_plugin_info(struct rpc_call *c, const ProtobufCMessage *m)
{
    Csi__V1__GetPluginInfoResponse r = CSI__V1__GET_PLUGIN_INFO_RESPONSE__INIT;
    r.name = (char *)CSI(c)->driver_name;
    r.vendor_version = AMBER_VERSION;
    return rpc_call_send(c, &r.base);
}

static int h_get_plugin_capabilities(struct rpc_call *c, const ProtobufCMessage *m)
{
    /* GROUP_CONTROLLER_SERVICE: group.c; SNAPSHOT_METADATA_SERVICE:
     * snapshot-metadata.c (the external-snapshot-metadata sidecar waits
     * for it before it serves). */
    static const int types[] = {
        CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__CONTROLLER_SERVICE,
        CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__VOLUME_ACCESSIBILITY_CONSTRAINTS,
        CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__GROUP_CONTROLLER_SERVICE,
        CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__SNAPSHOT_METADATA_SERVICE,
    };
    enum { NSVC = ARRAY_SIZE(types), NCAP = NSVC + 1 };
    Csi__V1__PluginCapability__Service svc[NSVC];
    /* ONLINE: a published volume grows (NodeExpandVolume; see controller.c
     * for why the controller capability is optional). */
    Csi__V1__PluginCapability__VolumeExpansion exp = CSI__V1__PLUGIN_CAPABILITY__VOLUME_EXPANSION__INIT;
    exp.type = CSI__V1__PLUGIN_CAPABILITY__VOLUME_EXPANSION__TYPE__ONLINE;

    Csi__V1__PluginCapability caps[NCAP];
    Csi__V1__PluginCapability *pcaps[NCAP];
    for (int i = 0; i < NCAP; i++) {
        Csi__V1__PluginCapability init = CSI__V1__PLUGIN_CAPABILITY__INIT;
        caps[i] = init;
        pcaps[i] = &caps[i];
    }
    for (int i = 0; i < NSVC; i++) {
        Csi__V1__PluginCapability__Service init = CSI__V1__PLUGIN_CAPABILITY__SERVICE__INIT;
        svc[i] = init;
        svc[i].type = types[i];
        caps[i].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_SERVICE;
        caps[i].service = &svc[i];
    }
    caps[NSVC].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_VOLUME_EXPANSION;
    caps[NSVC].volume_expansion = &exp;
    Csi__V1__GetPluginCapabilitiesResponse r = CSI__V1__GET_PLUGIN_CAPABILITIES_RESPONSE__INIT;
    r.capabilities = pcaps;
    r.n_capabilities = NCAP;
    return rpc_call_send(c, &r.base);
}

static int h_probe(struct rpc_call *c, const ProtobufCMessage *m)
{
    Amber__V1__HealthRequest q = AMBER__V1__HEALTH_REQUEST__INIT;
    _cleanup_pb_ Amber__V1__HealthResponse *h = NULL;
    struct rpc_status st = {0};
    int code = amberd_call(c, "Health", &q.base, &amber__v1__health_response__descriptor, 5000,
                           (ProtobufCMessage **)&h, &st);
    bool ready = code == RPC_OK && h->ok;
    if (!ready)
        log_warn("identity", "not ready: amberd %s: %s",
                 code == RPC_OK ? "unhealthy" : rpc_code_name(code),
                 code == RPC_OK ? h->message : (st.message ? st.message : ""));
    rpc_status_clear(&st);
    Google__Protobuf__BoolValue b = GOOGLE__PROTOBUF__BOOL_VALUE__INIT;
    b.value = ready;
    Csi__V1__ProbeResponse r = CSI__V1__PROBE_RESPONSE__INIT;
    r.ready = &b;
    return rpc_call_send(c, &r.base);
}

#define M(name, in, out, fn) \
    { "/csi.v1.Identity/" name, &csi__v1__##in##__descriptor, &csi__v1__##out##__descriptor, \
      RPC_UNARY, fn }

const struct rpc_method csi_identity_methods[] = {
    M("GetPluginInfo", get_plugin_info_request, get_plugin_info_response, h_get_plugin_info),
    M("GetPluginCapabilities", get_plugin_capabilities_request, get_plugin_capabilities_response,
      h_get_plugin_capabilities),
    M("Probe", probe_request, probe_response, h_probe),
};
const size_t csi_identity_methods_n = ARRAY_SIZE(csi_identity_methods);
