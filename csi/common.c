/* common.c: what the three CSI services share: the in-flight operation
 * locks (a second call on the same volume gets ABORTED instead of racing
 * the first), calls to amberd with the caller's deadline, the mapping of
 * CSI names to amberd names, volume capability checks and topology.
 *
 * The lock set is a short linked list under one mutex: a node runs tens of
 * operations at once, not thousands, and locks are never held across a
 * wait for another lock, so there is no ordering to get wrong. */
#include <stdarg.h>
#include <string.h>
#include <openssl/evp.h>

#include "amber/log.h"
#include "csi/csi.h"

/* --- deferred errors ---------------------------------------------------- */

static __thread struct { int code; char *msg; } pending;

int csi_error(struct rpc_call *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(pending.msg);
    if (vasprintf(&pending.msg, fmt, ap) < 0)
        pending.msg = NULL;
    va_end(ap);
    pending.code = code ? code : RPC_UNKNOWN;
    return rpc_errno_from_code(pending.code) ?: -EREMOTEIO;
}

int csi_dispatch(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct csi *p = CSI(c);
    const char *path = rpc_call_method(c);
    const struct rpc_method *h = NULL;
    for (size_t i = 0; i < p->n_handlers && !h; i++)
        if (strcmp(p->handlers[i].path, path) == 0)
            h = &p->handlers[i];
    if (!h)
        return rpc_error(c, RPC_UNIMPLEMENTED, "%s is not implemented", path);
    pending.code = 0;
    int r = h->handler(c, m);
    if (pending.code) {
        r = rpc_error(c, pending.code, "%s", pending.msg ? pending.msg : "");
        free(pending.msg);
        pending.msg = NULL;
        pending.code = 0;
    }
    return r;
}

/* --- operation locks ------------------------------------------------------ */

struct csi_op {
    struct csi_op *next;
    char *key;
    unsigned refused;           /* calls refused while this one held the key */
};

int csi_op_begin(struct csi *p, const char *key)
{
    pthread_mutex_lock(&p->ops_lock);
    for (struct csi_op *o = p->ops; o; o = o->next)
        if (strcmp(o->key, key) == 0) {
            o->refused++;
            pthread_mutex_unlock(&p->ops_lock);
            return -EBUSY;
        }
    struct csi_op *o = xcalloc(1, sizeof *o);
    o->key = xstrdup(key);
    o->next = p->ops;
    p->ops = o;
    pthread_mutex_unlock(&p->ops_lock);
    return 0;
}

void csi_op_end(struct csi *p, const char *key)
{
    if (!key)
        return;
    pthread_mutex_lock(&p->ops_lock);
    for (struct csi_op **pp = &p->ops; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->key, key) == 0) {
            struct csi_op *o = *pp;
            *pp = o->next;
            free(o->key);
            free(o);
            break;
        }
    pthread_mutex_unlock(&p->ops_lock);
}

int csi_op_lock(struct rpc_call *c, const char *fmt, const char *arg, char **ret_key)
{
    struct csi *p = CSI(c);
    _cleanup_free_ char *key = xasprintf(fmt, arg);
    if (csi_op_begin(p, key) < 0)
        return csi_error(c, RPC_ABORTED, "an operation on %s is already in progress", arg);
    /* Tests: hold the key until a second call on it was refused (at most
     * lock_delay_ms), so the race the test wants happens on any machine. */
    for (uint64_t waited = 0; p->lock_delay_ms && waited < p->lock_delay_ms; waited += 5) {
        pthread_mutex_lock(&p->ops_lock);
        unsigned refused = 0;
        for (struct csi_op *o = p->ops; o; o = o->next)
            if (strcmp(o->key, key) == 0)
                refused = o->refused;
        pthread_mutex_unlock(&p->ops_lock);
        if (refused || rpc_call_sleep(c, 5) < 0)
            break;
    }
    *ret_key = TAKE_PTR(key);
    return 0;
}

void csi_held_release(struct csi_held *h)
{
    if (h->key) {
        csi_op_end(h->p, h->key);
        free(h->key);
        h->key = NULL;
    }
}

/* --- amberd ------------------------------------------------------------- */

int amberd_call(struct rpc_call *c, const char *name, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, uint64_t timeout_ms,
                ProtobufCMessage **ret, struct rpc_status *st)
{
    uint64_t deadline = rpc_call_deadline(c);
    if (deadline) {
        uint64_t now = now_mono_ns();
        if (now >= deadline) {
            rpc_status_clear(st);
            st->code = RPC_DEADLINE_EXCEEDED;
            st->message = xstrdup("the caller's deadline passed");
            return RPC_DEADLINE_EXCEEDED;
        }
        uint64_t left = (deadline - now) / 1000000 + 1;
        if (left < timeout_ms)
            timeout_ms = left;
    }
    _cleanup_free_ char *path = xasprintf("/amber.v1.Amber/%s", name);
    return rpc_client_call(CSI(c)->amberd, path, req, desc, timeout_ms, ret, st);
}

int amberd_fail(struct rpc_call *c, int code, struct rpc_status *st, const char *what)
{
    const char *msg = st->message && *st->message ? st->message : rpc_code_name(code);
    int r;
    if (code == RPC_UNAVAILABLE)
        r = csi_error(c, code, "%s: amberd is not reachable: %s", what, msg);
    else
        r = csi_error(c, code, "%s: %s", what, msg);
    rpc_status_clear(st);
    return r;
}

int amberd_get_volume(struct rpc_call *c, const char *id, Amber__V1__Volume **ret,
                      struct rpc_status *st)
{
    /* Only amberd ids are CSI volume ids: amberd would also resolve names,
     * and a name must never stand in for an id. A handle of another node
     * is not here. */
    _cleanup_free_ char *lid = csi_local_id(CSI(c), id);
    if (!lid || !uuid_is_valid(lid))
        return RPC_NOT_FOUND;
    id = lid;
    Amber__V1__VolumeRef ref = AMBER__V1__VOLUME_REF__INIT;
    ref.volume = (char *)id;
    Amber__V1__Volume *v = NULL;
    int code = amberd_call(c, "GetVolume", &ref.base, &amber__v1__volume__descriptor, 30000,
                           (ProtobufCMessage **)&v, st);
    if (code != RPC_OK)
        return code;
    if (strcmp(v->id, id) != 0) {
        protobuf_c_message_free_unpacked(&v->base, NULL);
        return RPC_NOT_FOUND;
    }
    *ret = v;
    return RPC_OK;
}

int amberd_get_snapshot(struct rpc_call *c, const char *id, Amber__V1__Snapshot **ret,
                        struct rpc_status *st)
{
    /* As for volumes: a snapshot name never stands in for an id, and a
     * handle of another node is not here. */
    _cleanup_free_ char *lid = csi_local_id(CSI(c), id);
    if (!lid || !uuid_is_valid(lid))
        return RPC_NOT_FOUND;
    id = lid;
    Amber__V1__SnapshotRef ref = AMBER__V1__SNAPSHOT_REF__INIT;
    ref.snapshot = (char *)id;
    Amber__V1__Snapshot *s = NULL;
    int code = amberd_call(c, "GetSnapshot", &ref.base, &amber__v1__snapshot__descriptor, 30000,
                           (ProtobufCMessage **)&s, st);
    if (code != RPC_OK)
        return code;
    if (strcmp(s->id, id) != 0) {
        protobuf_c_message_free_unpacked(&s->base, NULL);
        return RPC_NOT_FOUND;
    }
    *ret = s;
    return RPC_OK;
}

/* --- names -------------------------------------------------------------- */

char *csi_map_name(const char *csi_name)
{
    if (name_validate(csi_name) == 0 && !uuid_is_valid(csi_name))
        return xstrdup(csi_name);
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(csi_name, strlen(csi_name), md, &mdlen, EVP_sha256(), NULL);
    char prefix[25];
    size_t n = 0;
    for (const char *s = csi_name; *s && n < sizeof prefix - 1; s++) {
        char ch = *s;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                  ch == '.' || ch == '_' || ch == '-';
        prefix[n++] = ok ? ch : '_';
    }
    prefix[n] = 0;
    if (n > 0 && (prefix[0] == '.' || prefix[0] == '-'))
        prefix[0] = 'x';
    struct buf b = {0};
    buf_printf(&b, "%s-", n ? prefix : "x");
    for (unsigned i = 0; i < 16; i++)
        buf_printf(&b, "%02x", md[i]);
    buf_append(&b, "", 1);
    return (char *)b.data;
}

/* --- capabilities --------------------------------------------------------- */

bool csi_fs_supported(const char *fs)
{
    return strcmp(fs, "ext4") == 0 || strcmp(fs, "xfs") == 0;
}

int csi_cap_parse(const Csi__V1__VolumeCapability *cap, const char *def_fs, struct csi_cap *ret,
                  char **ret_msg)
{
    *ret = (struct csi_cap){0};
    if (!cap) {
        *ret_msg = xstrdup("a volume capability is required");
        return -EINVAL;
    }
    if (!cap->access_mode) {
        *ret_msg = xstrdup("volume capability: access_mode is required");
        return -EINVAL;
    }
    switch (cap->access_mode->mode) {
    case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_WRITER:
    case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_SINGLE_WRITER:
    case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_MULTI_WRITER:
        break;
    case CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_READER_ONLY:
        ret->read_only_mode = true;
        break;
    default:
        *ret_msg = xasprintf("access mode %d is not supported: Amber volumes are local to one "
                             "node (SINGLE_NODE_* modes only)", (int)cap->access_mode->mode);
        return -EINVAL;
    }
    ret->mode = cap->access_mode->mode;
    switch (cap->access_type_case) {
    case CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK:
        ret->block = true;
        ret->fs_type = "";
        break;
    case CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_MOUNT: {
        const char *fs = cap->mount->fs_type;
        if (!fs || !*fs)
            fs = def_fs && *def_fs ? def_fs : "ext4";
        if (!csi_fs_supported(fs)) {
            *ret_msg = xasprintf("filesystem \"%s\" is not supported (ext4 or xfs)", fs);
            return -EINVAL;
        }
        if (cap->mount->volume_mount_group && *cap->mount->volume_mount_group) {
            *ret_msg = xstrdup("volume_mount_group is not supported");
            return -EINVAL;
        }
        ret->fs_type = fs;
        break;
    }
    default:
        *ret_msg = xstrdup("volume capability: an access type (mount or block) is required");
        return -EINVAL;
    }
    return 0;
}

/* --- topology and maps ---------------------------------------------------- */

bool csi_topology_is_ours(struct csi *p, const Csi__V1__Topology *t)
{
    if (!t || t->n_segments == 0)
        return false;
    for (size_t i = 0; i < t->n_segments; i++) {
        const Csi__V1__Topology__SegmentsEntry *s = t->segments[i];
        if (strcmp(s->key, p->topology_key) != 0 || strcmp(s->value, p->node_id) != 0)
            return false;
    }
    return true;
}

void csi_topology_init(struct csi *p, struct csi_topology *out)
{
    Csi__V1__Topology t = CSI__V1__TOPOLOGY__INIT;
    Csi__V1__Topology__SegmentsEntry s = CSI__V1__TOPOLOGY__SEGMENTS_ENTRY__INIT;
    out->seg = s;
    out->seg.key = p->topology_key;
    out->seg.value = (char *)p->node_id;
    out->pseg[0] = &out->seg;
    out->t = t;
    out->t.n_segments = 1;
    out->t.segments = out->pseg;
}

const char *csi_map_get(void *const *entries, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        const struct csi_kv *kv = entries[i];
        if (kv->key && strcmp(kv->key, key) == 0)
            return kv->value;
    }
    return NULL;
}
