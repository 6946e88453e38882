/* harness.h: what the handler-level fuzz targets (fuzz-api.c, fuzz-csi.c)
 * share: a real amberd, in process, on a throwaway loop-mounted btrfs pool
 * made once per fuzz process (AMBER_FUZZ_DIR, default /tmp/amber-fuzz-PID;
 * torn down at exit; tests/fuzz/run releases what a crashed run left), a
 * descriptor-driven generator of well-formed but hostile protobuf messages,
 * and a fingerprint of the daemon's state (catalog rows and pool
 * directories) to check that a refused request changed nothing.
 *
 * The generator reads the fuzz input as a stream of choices: for each field
 * of a message whether to set it, and to what: a known reference (a volume
 * or snapshot name or id of the baseline, "VOL@SNAP"), the empty string,
 * bytes of the input, a long run, a path, a label; integers at their edges;
 * repeated fields with counts up to past the daemon's bounds; nested
 * messages to depth 3. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "amber/rpc.h"
#include "amber/util.h"
#include "amber.pb-c.h"
#include "snapd/daemon.h"
#include "snapd/pipeline/pipeline.h"

/* --- the input as a stream of choices ------------------------------------ */

struct rd {
    const uint8_t *p;
    size_t n;
};

static uint8_t rd_u8(struct rd *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static uint64_t rd_u64(struct rd *r)
{
    static const uint64_t edge[] = { 0, 1, 4095, 4096, 4097, 1 << 20, 16 << 20, 1ull << 30, 1ull << 40,
                                     INT64_MAX, UINT64_MAX, UINT32_MAX, (uint64_t)INT64_MAX + 1, 511 };
    uint8_t k = rd_u8(r);
    if (k < 160)
        return edge[k % ARRAY_SIZE(edge)];
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | rd_u8(r);
    return v;
}

/* Allocations of one generated message, freed together. */
struct arena {
    void **v;
    size_t n, cap;
};

static void *arena_add(struct arena *a, void *p)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 64;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = p;
    return p;
}

static void arena_free(struct arena *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->v[i]);
    free(a->v);
    memset(a, 0, sizeof *a);
}

/* Known references: filled by the target from its baseline. */
static char *refs[32];
static size_t nrefs;

static void ref_add(const char *s)
{
    if (nrefs < ARRAY_SIZE(refs))
        refs[nrefs++] = xstrdup(s);
}

static char *gen_string(struct rd *r, struct arena *a)
{
    uint8_t k = rd_u8(r);
    switch (k % 10) {
    case 0: case 1: case 2:
        return arena_add(a, xstrdup(nrefs ? refs[rd_u8(r) % nrefs] : ""));
    case 3:
        return arena_add(a, xstrdup(""));
    case 4: {     /* bytes of the input, NUL-terminated (may be any bytes) */
        size_t want = rd_u8(r);     /* once: MIN evaluates its arguments twice */
        size_t len = MIN(want, r->n);
        char *s = arena_add(a, xmalloc(len + 1));
        memcpy(s, r->p, len);
        s[len] = 0;
        for (size_t i = 0; i < len; i++)
            if (!s[i])
                s[i] = 'x';
        r->p += len;
        r->n -= len;
        return s;
    }
    case 5: {     /* a long run */
        size_t len = (size_t)rd_u8(r) * 97 + 60;
        char *s = arena_add(a, xmalloc(len + 1));
        memset(s, 'a' + k % 26, len);
        s[len] = 0;
        return s;
    }
    case 6: {
        static const char *const odd[] = { "../../etc/passwd", "/", ".", "..", "-rf", "a/b", "a b",
                                           "x=y", "\xff\xfe", "pvc/team-a/p", "pvc/p", "v0@", "@s0",
                                           "00000000-0000-0000-0000-000000000000", "1s", "0s", "-1",
                                           "{\"snapshotEvery\":\"1s\"}", "{", "\"", "%s%n" };
        return arena_add(a, xstrdup(odd[rd_u8(r) % ARRAY_SIZE(odd)]));
    }
    case 7:       /* a reference with a suffix: a near miss */
        return arena_add(a, xasprintf("%s%c", nrefs ? refs[rd_u8(r) % nrefs] : "", 'a' + rd_u8(r) % 26));
    default:
        return arena_add(a, xasprintf("n%u", rd_u8(r) % 8));
    }
}

static ProtobufCMessage *gen_message(const ProtobufCMessageDescriptor *d, struct rd *r, struct arena *a,
                                     int depth);

static void gen_value(const ProtobufCFieldDescriptor *f, void *at, struct rd *r, struct arena *a, int depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL: *(protobuf_c_boolean *)at = rd_u8(r) & 1; break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        uint8_t k = rd_u8(r);
        *(int *)at = k < 200 && e->n_values ? e->values[k % e->n_values].value : (int)(int8_t)k;
        break;
    }
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)at = (uint32_t)rd_u64(r);
        break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)at = rd_u64(r);
        break;
    case PROTOBUF_C_TYPE_FLOAT: *(float *)at = (float)(int8_t)rd_u8(r); break;
    case PROTOBUF_C_TYPE_DOUBLE: *(double *)at = (double)(int8_t)rd_u8(r); break;
    case PROTOBUF_C_TYPE_STRING: *(char **)at = gen_string(r, a); break;
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = at;
        size_t want = rd_u8(r);
        b->len = MIN(want, r->n);
        b->data = arena_add(a, xmalloc(b->len + 1));
        memcpy(b->data, r->p, b->len);
        r->p += b->len;
        r->n -= b->len;
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)at = gen_message(f->descriptor, r, a, depth + 1);
        break;
    }
}

static size_t field_size(const ProtobufCFieldDescriptor *f)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_BOOL: return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM: case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32: case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return 4;
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE: return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES: return sizeof(ProtobufCBinaryData);
    default: return 8;
    }
}

static ProtobufCMessage *gen_message(const ProtobufCMessageDescriptor *d, struct rd *r, struct arena *a,
                                     int depth)
{
    ProtobufCMessage *m = arena_add(a, xcalloc(1, d->sizeof_message));
    d->message_init(m);
    if (depth > 3)
        return m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        uint8_t k = rd_u8(r);
        if (k % 4 == 0)
            continue;                               /* left at its default */
        char *base = (char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            uint8_t c = rd_u8(r);
            size_t n = c < 200 ? c % 4 : (size_t)(c - 200) + 10;    /* up to 65 */
            if (f->type == PROTOBUF_C_TYPE_MESSAGE && depth >= 2)
                n = MIN(n, (size_t)2);
            size_t sz = field_size(f);
            char *v = arena_add(a, xcalloc(n ? n : 1, sz));
            for (size_t j = 0; j < n; j++)
                gen_value(f, v + j * sz, r, a, depth);
            *(size_t *)(base + f->quantifier_offset) = n;
            *(void **)(base + f->offset) = v;
            continue;
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *which = (uint32_t *)(base + f->quantifier_offset);
            if (*which && k % 3)
                continue;                           /* one member of a oneof */
            *which = f->id;
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset) {
            *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
        }
        gen_value(f, base + f->offset, r, a, depth);
    }
    return m;
}

/* --- a real amberd on a throwaway pool ----------------------------------- */

static struct amberd fz_d;
static char *fz_dir, *fz_sock;
static struct rpc_method *fz_methods;
static size_t fz_n_methods;
static struct rpc_client *fz_cl;
static pthread_t fz_loop_thread;

static void *fz_loop(void *arg)
{
    rpc_server_run(fz_d.srv);
    return NULL;
}

static void fz_teardown(void)
{
    if (!fz_d.srv)
        return;
    rpc_server_stop(fz_d.srv, 1000);
    pthread_join(fz_loop_thread, NULL);     /* the loop and its calls are done */
    rpc_client_free(fz_cl);
    peer_stop(&fz_d);
    /* Every volume and snapshot device the inputs attached (snapshots of
     * deleted volumes too), then the pool. */
    struct cat_snapshot_list sl = {0};
    if (cat_snapshot_list(fz_d.cat, NULL, NULL, &sl) == 0)
        for (size_t j = 0; j < sl.n; j++)
            pool_detach(fz_d.pool, sl.items[j].volume_id, sl.items[j].id);
    cat_snapshot_list_free(&sl);
    struct cat_volume_list l = {0};
    if (cat_volume_list(fz_d.cat, NULL, NULL, &l) == 0)
        for (size_t i = 0; i < l.n; i++)
            pool_detach(fz_d.pool, l.items[i].id, NULL);
    cat_volume_list_free(&l);
    cat_close(fz_d.cat);
    pool_close(fz_d.pool);
    pool_image_teardown(fz_d.image);
    _cleanup_free_ char *cmd = xasprintf("rm -rf --one-file-system '%s'", fz_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "fuzz: could not remove %s\n", fz_dir);
    fz_d.srv = NULL;
}

/* Start amberd on DIR/pool (a 1G btrfs image) serving the node socket. */
static void fz_start_amberd(void)
{
    log_set_level(getenv("AMBER_FUZZ_LOG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR);
    const char *dir = getenv("AMBER_FUZZ_DIR");
    fz_dir = dir ? xstrdup(dir) : xasprintf("/tmp/amber-fuzz-%d", (int)getpid());
    mkdir_p(fz_dir, 0700);
    _cleanup_free_ char *img = xasprintf("%s/pool.img", fz_dir);
    _cleanup_free_ char *mnt = xasprintf("%s/pool", fz_dir);
    fz_sock = xasprintf("%s/amberd.sock", fz_dir);
    if (pool_image_setup(img, 1ull << 30, mnt, "btrfs", &fz_d.image) < 0 ||
        pool_open(mnt, NULL, &fz_d.pool) < 0) {
        fprintf(stderr, "fuzz: cannot set up a pool at %s (needs root and loop devices)\n", mnt);
        abort();
    }
    fz_d.pool_dir = xstrdup(mnt);
    fz_d.socket_path = xstrdup(fz_sock);
    fz_d.node_id = xstrdup("fuzz-node");
    pthread_mutex_init(&fz_d.busy_lock, NULL);
    _cleanup_free_ char *catpath = xasprintf("%s/%s", mnt, CAT_POOL_RELPATH);
    if (cat_open(catpath, &fz_d.cat) < 0)
        abort();
    daemon_recover(&fz_d);
    struct rpc_server_config sc = { .max_message = 4u << 20, .userdata = &fz_d };
    if (rpc_server_new(&sc, &fz_d.srv) < 0)
        abort();
    fz_methods = api_node_all_methods(&fz_n_methods);
    struct rpc_listener_config lc = { .methods = fz_methods, .n_methods = fz_n_methods };
    if (rpc_server_listen_unix(fz_d.srv, fz_sock, &lc, NULL) < 0)
        abort();
    struct peer_opts po = {0};
    if (peer_start(&fz_d, &po) < 0)
        abort();
    if (rpc_client_new(fz_sock, NULL, &fz_cl) < 0)
        abort();
    pthread_create(&fz_loop_thread, NULL, fz_loop, NULL);
    atexit(fz_teardown);
}

/* A unary call on the node socket; the status code. */
static int fz_call(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *out,
                   ProtobufCMessage **ret)
{
    _cleanup_free_ char *path = xasprintf("/amber.v1.Amber/%s", method);
    struct rpc_status st = {0};
    ProtobufCMessage *resp = NULL;
    int code = rpc_client_call(fz_cl, path, req, out, 60000, &resp, &st);
    rpc_status_clear(&st);
    if (ret)
        *ret = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* --- state: what a refused request must not change ------------------------ */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void fp_dir(struct buf *b, const char *path, int depth)
{
    DIR *dd = opendir(path);
    if (!dd)
        return;
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        names = xrealloc(names, (n + 1) * sizeof *names);
        names[n++] = xstrdup(e->d_name);
    }
    closedir(dd);
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        _cleanup_free_ char *p = xasprintf("%s/%s", path, names[i]);
        struct stat st;
        if (lstat(p, &st) == 0) {
            _cleanup_free_ char *line = xasprintf("%s %o %lld\n", p, st.st_mode,
                                                  S_ISREG(st.st_mode) ? (long long)st.st_size : 0LL);
            buf_append(b, line, strlen(line));
            if (S_ISDIR(st.st_mode) && depth > 0)
                fp_dir(b, p, depth - 1);
        }
        free(names[i]);
    }
    free(names);
}

/* Catalog rows (volumes, snapshots with labels) and the pool's vols/ and
 * snaps/ trees, as text. */
static char *fz_fingerprint(void)
{
    struct buf b = {0};
    struct cat_volume_list l = {0};
    if (cat_volume_list(fz_d.cat, NULL, NULL, &l) == 0)
        for (size_t i = 0; i < l.n; i++) {
            struct cat_volume *v = &l.items[i];
            _cleanup_free_ char *line = xasprintf("vol %s %s %llu %d %s\n", v->id, v->name,
                                                  (unsigned long long)v->size_bytes, (int)v->state,
                                                  v->pvc_namespace ? v->pvc_namespace : "-");
            buf_append(&b, line, strlen(line));
            struct cat_snapshot_filter sf = { .volume_id = v->id };
            struct cat_snapshot_list sl = {0};
            if (cat_snapshot_list(fz_d.cat, &sf, NULL, &sl) == 0)
                for (size_t j = 0; j < sl.n; j++) {
                    struct cat_snapshot *s = &sl.items[j];
                    _cleanup_free_ char *sline = xasprintf(" snap %s %s %d %zu\n", s->id, s->name,
                                                           (int)s->state, s->n_labels);
                    buf_append(&b, sline, strlen(sline));
                    for (size_t k = 0; k < s->n_labels; k++) {
                        _cleanup_free_ char *ll = xasprintf("  %s=%s\n", s->labels[k].key, s->labels[k].value);
                        buf_append(&b, ll, strlen(ll));
                    }
                }
            cat_snapshot_list_free(&sl);
        }
    cat_volume_list_free(&l);
    _cleanup_free_ char *vols = xasprintf("%s/vols", fz_d.pool_dir);
    _cleanup_free_ char *snaps = xasprintf("%s/snaps", fz_d.pool_dir);
    fp_dir(&b, vols, 1);
    fp_dir(&b, snaps, 1);
    buf_append(&b, "", 1);
    return (char *)b.data;
}

/* Loop devices whose backing file is in the pool (volume and snapshot
 * images; the pool's own image lies beside it). */
static int fz_count_loops(void)
{
    _cleanup_free_ char *prefix = xasprintf("%s/", fz_d.pool_dir);
    int n = 0;
    DIR *dd = opendir("/sys/block");
    struct dirent *e;
    while (dd && (e = readdir(dd))) {
        if (strncmp(e->d_name, "loop", 4) != 0)
            continue;
        _cleanup_free_ char *p = xasprintf("/sys/block/%s/loop/backing_file", e->d_name);
        _cleanup_free_ char *back = NULL;
        if (read_file_all(p, 4096, &back, NULL) == 0 && strncmp(back, prefix, strlen(prefix)) == 0)
            n++;
    }
    if (dd)
        closedir(dd);
    return n;
}

static int fz_count_fds(void)
{
    int n = 0;
    DIR *dd = opendir("/proc/self/fd");
    if (!dd)
        return -1;
    while (readdir(dd))
        n++;
    closedir(dd);
    return n;
}

/* --- the baseline ------------------------------------------------------- */

static char *fz_baseline;
static unsigned long long fz_wipes;
static void (*fz_before_wipe)(void);   /* a target's own cleanup first */

static bool fz_rejected(int code)
{
    switch (code) {
    case RPC_INVALID_ARGUMENT: case RPC_NOT_FOUND: case RPC_ALREADY_EXISTS: case RPC_PERMISSION_DENIED:
    case RPC_RESOURCE_EXHAUSTED: case RPC_FAILED_PRECONDITION: case RPC_ABORTED: case RPC_OUT_OF_RANGE:
        return true;
    default:
        return false;
    }
}

static int fz_call_path(const char *path, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *out,
                     ProtobufCMessage **ret, char **msg)
{
    struct rpc_status st = {0};
    ProtobufCMessage *resp = NULL;
    int code = rpc_client_call(fz_cl, path, req, out, 60000, &resp, &st);
    if (msg)
        *msg = st.message ? xstrdup(st.message) : NULL;
    rpc_status_clear(&st);
    if (ret)
        *ret = resp;
    else if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    return code;
}

/* Delete every volume (detaching what is attached), then make the
 * baseline: v0 (two snapshots, one labelled), v1 (a clone of v0@s0), and
 * team (a volume of namespace team-a). */
static void fz_rebuild(void)
{
    if (fz_before_wipe)
        fz_before_wipe();
    for (int pass = 0; pass < 4; pass++) {
        struct cat_volume_list l = {0};
        if (cat_volume_list(fz_d.cat, NULL, NULL, &l) < 0 || l.n == 0) {
            cat_volume_list_free(&l);
            break;
        }
        for (size_t i = l.n; i-- > 0;) {
            struct cat_snapshot_filter sf = { .volume_id = l.items[i].id };
            struct cat_snapshot_list sl = {0};
            if (cat_snapshot_list(fz_d.cat, &sf, NULL, &sl) == 0)
                for (size_t j = 0; j < sl.n; j++) {
                    Amber__V1__AttachVolumeRequest dq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
                    dq.volume = l.items[i].id;
                    dq.snapshot = sl.items[j].id;
                    fz_call("DetachVolume", &dq.base, &amber__v1__empty__descriptor, NULL);
                    Amber__V1__SnapshotRef sr = AMBER__V1__SNAPSHOT_REF__INIT;
                    sr.snapshot = sl.items[j].id;
                    fz_call("DeleteSnapshot", &sr.base, &amber__v1__empty__descriptor, NULL);
                }
            cat_snapshot_list_free(&sl);
            Amber__V1__AttachVolumeRequest dq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
            dq.volume = l.items[i].id;
            fz_call("DetachVolume", &dq.base, &amber__v1__empty__descriptor, NULL);
            Amber__V1__VolumeRef vr = AMBER__V1__VOLUME_REF__INIT;
            vr.volume = l.items[i].id;
            fz_call("DeleteVolume", &vr.base, &amber__v1__empty__descriptor, NULL);
        }
        cat_volume_list_free(&l);
    }
    /* Snapshots that outlived their volume (a volume's snapshots stay). */
    struct cat_snapshot_list ol = {0};
    if (cat_snapshot_list(fz_d.cat, NULL, NULL, &ol) == 0)
        for (size_t j = 0; j < ol.n; j++) {
            Amber__V1__SnapshotRef sr = AMBER__V1__SNAPSHOT_REF__INIT;
            sr.snapshot = ol.items[j].id;
            fz_call("DeleteSnapshot", &sr.base, &amber__v1__empty__descriptor, NULL);
        }
    cat_snapshot_list_free(&ol);
    /* Nothing may stay attached once everything is deleted. */
    int loops = fz_count_loops();
    if (loops > 0) {
        fprintf(stderr, "fuzz: %d loop devices over the pool's images after deleting everything\n", loops);
        abort();
    }
    for (size_t i = 0; i < nrefs; i++)
        free(refs[i]);
    nrefs = 0;

    static const struct { const char *name, *src, *ns; } vols[] = {
        { "v0", NULL, NULL }, { "v1", "v0@s0", NULL }, { "team", NULL, "team-a" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(vols); i++) {
        Amber__V1__CreateVolumeRequest q = AMBER__V1__CREATE_VOLUME_REQUEST__INIT;
        q.name = (char *)vols[i].name;
        q.size_bytes = vols[i].src ? 0 : 8 << 20;
        q.source_snapshot = (char *)(vols[i].src ? vols[i].src : "");
        q.pvc_namespace = (char *)(vols[i].ns ? vols[i].ns : "");
        q.pvc_name = (char *)(vols[i].ns ? "p" : "");
        ProtobufCMessage *resp = NULL;
        if (fz_call_path("/amber.v1.Amber/CreateVolume", &q.base, &amber__v1__volume__descriptor, &resp, NULL)) {
            fprintf(stderr, "fuzz: cannot make the baseline volume %s\n", vols[i].name);
            abort();
        }
        ref_add(vols[i].name);
        ref_add(((Amber__V1__Volume *)resp)->id);
        protobuf_c_message_free_unpacked(resp, NULL);
        if (i == 0)
            for (int s = 0; s < 2; s++) {
                Amber__V1__CreateSnapshotRequest sq = AMBER__V1__CREATE_SNAPSHOT_REQUEST__INIT;
                Amber__V1__Label lab = AMBER__V1__LABEL__INIT, *labs[] = { &lab };
                lab.key = "run";
                lab.value = "r1";
                sq.volume = "v0";
                sq.name = s ? "s1" : "s0";
                sq.labels = labs;
                sq.n_labels = s ? 0 : 1;
                if (fz_call_path("/amber.v1.Amber/CreateSnapshot", &sq.base, &amber__v1__snapshot__descriptor,
                              &resp, NULL)) {
                    fprintf(stderr, "fuzz: cannot make the baseline snapshot\n");
                    abort();
                }
                ref_add(s ? "v0@s1" : "v0@s0");
                ref_add(((Amber__V1__Snapshot *)resp)->id);
                protobuf_c_message_free_unpacked(resp, NULL);
            }
    }
    ref_add("pvc/team-a/p");
    ref_add("team-a");
    ref_add("r1");
    ref_add("run");
    free(fz_baseline);
    fz_baseline = fz_fingerprint();
    fz_wipes++;
}

