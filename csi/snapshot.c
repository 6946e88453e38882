/* snapshot.c: the CSI Controller service's snapshot RPCs.
 *
 * A CSI snapshot is an amberd snapshot; snapshot_id is amberd's id. CSI
 * snapshot names are unique per driver while amberd's are unique per
 * volume, so CreateSnapshot first asks amberd for a snapshot of that name
 * anywhere in the pool: one of another volume makes the request
 * ALREADY_EXISTS; one of the same volume is the idempotent repeat (amberd
 * returns it when the labels match).
 *
 * VolumeSnapshotClass parameters:
 *   freeze: "true" | "false"    freeze the mounted filesystem around the
 *                               snapshot (application-consistent)
 *   label.amber.csi.dev/KEY: V  a provenance label KEY=V on the snapshot
 * and from csi-snapshotter --extra-create-metadata the VolumeSnapshot's
 * namespace and name, recorded with the snapshot. Other parameters are
 * ignored. */
#include <string.h>

#include "amber/log.h"
#include "csi/csi.h"

#define LABEL_PREFIX "label.amber.csi.dev/"
#define VS_NS_KEY "csi.storage.k8s.io/volumesnapshot/namespace"
#define VS_NAME_KEY "csi.storage.k8s.io/volumesnapshot/name"

struct csi_snap_out {
    Csi__V1__Snapshot m;
    Google__Protobuf__Timestamp ts;
    char sid[CSI_HANDLE_MAX], vid[CSI_HANDLE_MAX];
};

static void snapshot_out(struct csi *p, const Amber__V1__Snapshot *s, struct csi_snap_out *o)
{
    Csi__V1__Snapshot m = CSI__V1__SNAPSHOT__INIT;
    Google__Protobuf__Timestamp ts = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    o->ts = ts;
    o->ts.seconds = s->created_ns / 1000000000;
    o->ts.nanos = (int32_t)(s->created_ns % 1000000000);
    m.size_bytes = (int64_t)s->size_bytes;
    csi_handle_fmt(p, s->id, o->sid);
    csi_handle_fmt(p, s->volume_id, o->vid);
    m.snapshot_id = o->sid;
    m.source_volume_id = o->vid;
    m.creation_time = &o->ts;
    m.ready_to_use = strcmp(s->state, "ready") == 0;
    o->m = m;
}

int csi_create_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__CreateSnapshotRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->name)
        return csi_error(c, RPC_INVALID_ARGUMENT, "name is required");
    if (!*q->source_volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "source_volume_id is required");

    /* Parameters first: a bad one is INVALID_ARGUMENT before any work. */
    Amber__V1__CreateSnapshotRequest aq = AMBER__V1__CREATE_SNAPSHOT_REQUEST__INIT;
    const char *archive = NULL;
    size_t n_labels = 0;
    _cleanup_free_ Amber__V1__Label *labels =
        xcalloc(q->n_parameters ? q->n_parameters : 1, sizeof *labels);
    _cleanup_free_ Amber__V1__Label **plabels =
        xcalloc(q->n_parameters ? q->n_parameters : 1, sizeof *plabels);
    for (size_t i = 0; i < q->n_parameters; i++) {
        const char *k = q->parameters[i]->key, *v = q->parameters[i]->value;
        if (strcmp(k, "freeze") == 0) {
            if (strcmp(v, "true") == 0)
                aq.freeze = true;
            else if (strcmp(v, "false") != 0)
                return csi_error(c, RPC_INVALID_ARGUMENT, "parameter freeze: \"true\" or \"false\"");
        } else if (strcmp(k, "archive") == 0) {
            if (!*v)
                return csi_error(c, RPC_INVALID_ARGUMENT, "parameter archive: an archive name");
            archive = v;
        } else if (strncmp(k, LABEL_PREFIX, strlen(LABEL_PREFIX)) == 0) {
            Amber__V1__Label l = AMBER__V1__LABEL__INIT;
            l.key = (char *)k + strlen(LABEL_PREFIX);
            l.value = (char *)v;
            if (!*l.key)
                return csi_error(c, RPC_INVALID_ARGUMENT, "parameter %s: the label key is empty", k);
            labels[n_labels] = l;
            plabels[n_labels] = &labels[n_labels];
            n_labels++;
        }
    }
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "snap:%s", q->name, &held.key);
    if (r < 0)
        return r;
    _cleanup_free_ char *name = csi_map_name(q->name);
    struct rpc_status st = {0};

    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    int code = amberd_get_volume(c, q->source_volume_id, &v, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_NOT_FOUND, "source volume %s not found", q->source_volume_id);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the source volume");

    /* The name anywhere in the pool: another volume's snapshot, or several
     * (amberd: ambiguous), means the name is taken. */
    Amber__V1__SnapshotRef ref = AMBER__V1__SNAPSHOT_REF__INIT;
    ref.snapshot = name;
    _cleanup_pb_ Amber__V1__Snapshot *old = NULL;
    code = amberd_call(c, "GetSnapshot", &ref.base, &amber__v1__snapshot__descriptor, 30000,
                       (ProtobufCMessage **)&old, &st);
    if ((code == RPC_OK && strcmp(old->volume_id, v->id) != 0) || code == RPC_INVALID_ARGUMENT) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_ALREADY_EXISTS, "snapshot %s exists for another volume", q->name);
    }
    if (code != RPC_OK && code != RPC_NOT_FOUND)
        return amberd_fail(c, code, &st, "looking up the snapshot name");
    rpc_status_clear(&st);

    aq.volume = v->id;
    aq.name = name;
    aq.labels = plabels;
    aq.n_labels = n_labels;
    const char *ns = csi_map_get((void *const *)q->parameters, q->n_parameters, VS_NS_KEY);
    const char *vs = csi_map_get((void *const *)q->parameters, q->n_parameters, VS_NAME_KEY);
    aq.k8s_namespace = (char *)(ns ? ns : "");
    aq.k8s_name = (char *)(vs ? vs : "");
    _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
    code = amberd_call(c, "CreateSnapshot", &aq.base, &amber__v1__snapshot__descriptor, 120000,
                       (ProtobufCMessage **)&s, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "creating the snapshot");
    if (archive && (r = csi_archive_snapshot(c, s->id, archive)) < 0)
        return r;
    if (!old)
        log_info("controller", "created snapshot %s id=%s of volume %s%s", q->name, s->id, v->id,
                 aq.freeze ? " (frozen)" : "");
    struct csi_snap_out so;
    snapshot_out(CSI(c), s, &so);
    Csi__V1__CreateSnapshotResponse resp = CSI__V1__CREATE_SNAPSHOT_RESPONSE__INIT;
    resp.snapshot = &so.m;
    return rpc_call_send(c, &resp.base);
}

int csi_delete_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__DeleteSnapshotRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->snapshot_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "snapshot_id is required");
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "snapid:%s", q->snapshot_id, &held.key);
    if (r < 0)
        return r;
    Csi__V1__DeleteSnapshotResponse out = CSI__V1__DELETE_SNAPSHOT_RESPONSE__INIT;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
    int code = amberd_get_snapshot(c, q->snapshot_id, &s, &st);
    if (code == RPC_NOT_FOUND) {
        /* Not here (or held by a node that is gone): its archive copy. */
        rpc_status_clear(&st);
        _cleanup_free_ char *node = NULL, *id = NULL;
        if (csi_handle_split(q->snapshot_id, &node, &id) == 0 && uuid_is_valid(id) &&
            (r = csi_forget_snapshot(c, id)) < 0)
            return r;
        return rpc_call_send(c, &out.base);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the snapshot");
    if ((r = csi_forget_snapshot(c, s->id)) < 0)
        return r;
    Amber__V1__SnapshotRef ref = AMBER__V1__SNAPSHOT_REF__INIT;
    ref.snapshot = s->id;
    _cleanup_pb_ Amber__V1__Empty *e = NULL;
    code = amberd_call(c, "DeleteSnapshot", &ref.base, &amber__v1__empty__descriptor, 120000,
                       (ProtobufCMessage **)&e, &st);
    if (code == RPC_NOT_FOUND)
        rpc_status_clear(&st);
    else if (code != RPC_OK)
        return amberd_fail(c, code, &st, "deleting the snapshot");
    log_info("controller", "deleted snapshot %s id=%s", s->name, s->id);
    return rpc_call_send(c, &out.base);
}

static int send_list(struct rpc_call *c, Amber__V1__Snapshot **snaps, size_t n, const char *next)
{
    struct csi_snap_out *so = xcalloc(n ? n : 1, sizeof *so);
    Csi__V1__ListSnapshotsResponse__Entry *en = xcalloc(n ? n : 1, sizeof *en);
    Csi__V1__ListSnapshotsResponse__Entry **pen = xcalloc(n ? n : 1, sizeof *pen);
    for (size_t i = 0; i < n; i++) {
        snapshot_out(CSI(c), snaps[i], &so[i]);
        Csi__V1__ListSnapshotsResponse__Entry e = CSI__V1__LIST_SNAPSHOTS_RESPONSE__ENTRY__INIT;
        en[i] = e;
        en[i].snapshot = &so[i].m;
        pen[i] = &en[i];
    }
    Csi__V1__ListSnapshotsResponse r = CSI__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
    r.entries = pen;
    r.n_entries = n;
    r.next_token = (char *)(next ? next : "");
    int ret = rpc_call_send(c, &r.base);
    free(pen);
    free(en);
    free(so);
    return ret;
}

int csi_list_snapshots(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__ListSnapshotsRequest *q = (const void *)m;
    if (q->max_entries < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "max_entries must not be negative");
    struct rpc_status st = {0};
    if (*q->snapshot_id) {
        /* One snapshot, or none: never an error for an unknown id. */
        _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
        int code = amberd_get_snapshot(c, q->snapshot_id, &s, &st);
        if (code == RPC_NOT_FOUND) {
            rpc_status_clear(&st);
            return send_list(c, NULL, 0, NULL);
        }
        if (code != RPC_OK)
            return amberd_fail(c, code, &st, "looking up the snapshot");
        _cleanup_free_ char *sv = *q->source_volume_id ? csi_local_id(CSI(c), q->source_volume_id)
                                                       : NULL;
        if (*q->source_volume_id && (!sv || strcmp(sv, s->volume_id) != 0))
            return send_list(c, NULL, 0, NULL);
        return send_list(c, &s, 1, NULL);
    }
    _cleanup_free_ char *src = *q->source_volume_id ? csi_local_id(CSI(c), q->source_volume_id)
                                                    : xstrdup("");
    if (*q->source_volume_id && (!src || !uuid_is_valid(src)))
        return send_list(c, NULL, 0, NULL);
    Amber__V1__ListSnapshotsRequest aq = AMBER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    aq.volume = src;
    aq.starting_token = q->starting_token;
    aq.max_entries = (uint32_t)q->max_entries;
    _cleanup_pb_ Amber__V1__ListSnapshotsResponse *l = NULL;
    int code = amberd_call(c, "ListSnapshots", &aq.base, &amber__v1__list_snapshots_response__descriptor,
                           60000, (ProtobufCMessage **)&l, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return send_list(c, NULL, 0, NULL);
    }
    if (code == RPC_ABORTED || code == RPC_INVALID_ARGUMENT) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_ABORTED, "invalid starting_token \"%s\"", q->starting_token);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "listing snapshots");
    return send_list(c, l->snapshots, l->n_snapshots, l->next_token);
}

int csi_get_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__GetSnapshotRequest *q = (const void *)m;
    if (!*q->snapshot_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "snapshot_id is required");
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
    int code = amberd_get_snapshot(c, q->snapshot_id, &s, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_NOT_FOUND, "snapshot %s not found", q->snapshot_id);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the snapshot");
    struct csi_snap_out so;
    snapshot_out(CSI(c), s, &so);
    Csi__V1__GetSnapshotResponse r = CSI__V1__GET_SNAPSHOT_RESPONSE__INIT;
    r.snapshot = &so.m;
    return rpc_call_send(c, &r.base);
}
