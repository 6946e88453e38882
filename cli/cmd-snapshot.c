/* cmd-snapshot.c: amberctl snapshot create|list|show|delete|diff. */
#include <getopt.h>
#include <string.h>

#include "amber.pb-c.h"
#include "cli/cli.h"
#include "cli/pipeline.h"

static const char snapshot_help[] =
"Usage: amberctl snapshot COMMAND ...\n"
"\n"
"  create VOL [VOL...] [--name NAME] [--label K=V]... [--freeze]\n"
"                         a point-in-time snapshot (several volumes: at the\n"
"                         same instant); --freeze makes it application-\n"
"                         consistent by freezing the mounted filesystem\n"
"  list [--volume VOL] [--label K=V]... [--all]   --all: also internal snapshots\n"
"                         snapshots, filtered (labels: all must match)\n"
"  show SNAP              one snapshot\n"
"  delete SNAP            delete a snapshot\n"
"  diff FROM [TO]         the byte ranges that changed from snapshot FROM to\n"
"                         snapshot TO (default: the live volume)\n"
"  diff --volume VOL      the allocated ranges of a volume\n"
"  mount SNAP DIR         mount read-only to browse (no journal replay)\n"
"  umount DIR             unmount and detach\n"
"  k8s-manifest SNAP [--namespace NS] [--name NAME] [--driver D]\n"
"                         a VolumeSnapshotContent + VolumeSnapshot for it\n"
"\n"
"All take --json. SNAP is an id, a name, or VOLUME@NAME.\n";

void snapshot_json(struct json *j, const char *key, const Amber__V1__Snapshot *s)
{
    json_obj_begin(j, key);
    json_str(j, "id", s->id);
    json_str(j, "name", s->name);
    json_str(j, "volume", s->volume_name);
    json_str(j, "volume_id", s->volume_id);
    if (*s->parent_id)
        json_str(j, "parent", s->parent_id);
    else
        json_null(j, "parent");
    _cleanup_free_ char *t = fmt_time_ns(s->created_ns);
    json_str(j, "created", t);
    json_i64(j, "created_ns", s->created_ns);
    json_obj_begin(j, "labels");
    for (size_t i = 0; i < s->n_labels; i++)
        json_str(j, s->labels[i]->key, s->labels[i]->value);
    json_obj_end(j);
    json_u64(j, "size_bytes", s->size_bytes);
    json_str(j, "state", s->state);
    json_str(j, "origin", s->origin);
    json_bool(j, "stored", s->stored);
    json_bool(j, "resident", s->resident);
    if (*s->k8s_name) {
        json_str(j, "k8s_namespace", s->k8s_namespace);
        json_str(j, "k8s_name", s->k8s_name);
    }
    json_obj_end(j);
}

static char *labels_str(const Amber__V1__Snapshot *s)
{
    struct buf b = {0};
    buf_append(&b, "", 0);
    for (size_t i = 0; i < s->n_labels; i++)
        buf_printf(&b, "%s%s=%s", i ? "," : "", s->labels[i]->key, s->labels[i]->value);
    return (char *)b.data;
}

static void snapshot_print(struct cli *c, const Amber__V1__Snapshot *s)
{
    if (c->json) {
        struct json j = {0};
        snapshot_json(&j, NULL, s);
        json_print(&j, stdout);
        return;
    }
    _cleanup_free_ char *t = fmt_time_ns(s->created_ns), *l = labels_str(s), *sz = fmt_size(s->size_bytes);
    printf("id:       %s\n", s->id);
    printf("name:     %s\n", s->name);
    printf("volume:   %s (%s)\n", s->volume_name, s->volume_id);
    printf("parent:   %s\n", *s->parent_id ? s->parent_id : "-");
    printf("created:  %s\n", t);
    printf("size:     %s\n", sz);
    printf("labels:   %s\n", *l ? l : "-");
    printf("state:    %s\n", s->state);
    printf("stored:   %s%s\n", s->stored ? "yes" : "no", s->resident ? "" : " (served from the store)");
    if (*s->k8s_name)
        printf("k8s:      VolumeSnapshot %s/%s\n", s->k8s_namespace, s->k8s_name);
}

struct sopts {
    const char *name, *volume;
    char **labels;
    size_t n_labels;
    bool freeze;
    bool all;
};

static int on_sopt(int o, const char *arg, void *data)
{
    struct sopts *s = data;
    switch (o) {
    case 'n': s->name = arg; break;
    case 'v': s->volume = arg; break;
    case 'f': s->freeze = true; break;
    case 'a': s->all = true; break;
    case 'l':
        if (!strchr(arg, '=') || arg[0] == '=') {
            cli_usage("--label: K=V expected, not \"%s\"", arg);
            return -1;
        }
        s->labels = xrealloc(s->labels, (s->n_labels + 1) * sizeof *s->labels);
        s->labels[s->n_labels++] = (char *)arg;
        break;
    default: return -1;
    }
    return 0;
}

static const struct option snap_opts[] = {
    { "name", required_argument, NULL, 'n' },
    { "volume", required_argument, NULL, 'v' },
    { "label", required_argument, NULL, 'l' },
    { "freeze", no_argument, NULL, 'f' },
    { "all", no_argument, NULL, 'a' },
};

/* Labels K=V into messages; the strings are split in place. */
static Amber__V1__Label **make_labels(struct sopts *s, Amber__V1__Label **store)
{
    *store = xcalloc(s->n_labels ? s->n_labels : 1, sizeof **store);
    Amber__V1__Label **pp = xcalloc(s->n_labels ? s->n_labels : 1, sizeof *pp);
    for (size_t i = 0; i < s->n_labels; i++) {
        Amber__V1__Label l = AMBER__V1__LABEL__INIT;
        char *eq = strchr(s->labels[i], '=');
        *eq = 0;
        l.key = s->labels[i];
        l.value = eq + 1;
        (*store)[i] = l;
        pp[i] = &(*store)[i];
    }
    return pp;
}

static int s_create(struct cli *c, int argc, char **argv)
{
    struct sopts so = {0};
    int i = cli_getopt(c, argc, argv, snap_opts, ARRAY_SIZE(snap_opts), on_sopt, &so, snapshot_help);
    if (i < 0) {
        free(so.labels);
        return i == -1 ? 0 : 2;
    }
    int n = argc - i;
    if (n < 1) {
        free(so.labels);
        return cli_usage("snapshot create: expected VOL [VOL...]");
    }
    Amber__V1__Label *store;
    Amber__V1__Label **pl = make_labels(&so, &store);
    Amber__V1__CreateSnapshotRequest *qs = xcalloc((size_t)n, sizeof *qs);
    Amber__V1__CreateSnapshotRequest **pq = xcalloc((size_t)n, sizeof *pq);
    for (int k = 0; k < n; k++) {
        Amber__V1__CreateSnapshotRequest q = AMBER__V1__CREATE_SNAPSHOT_REQUEST__INIT;
        q.volume = argv[i + k];
        q.name = (char *)(so.name ? so.name : "");
        q.labels = pl;
        q.n_labels = so.n_labels;
        q.freeze = so.freeze;
        qs[k] = q;
        pq[k] = &qs[k];
    }
    Amber__V1__CreateSnapshotsRequest q = AMBER__V1__CREATE_SNAPSHOTS_REQUEST__INIT;
    q.snapshots = pq;
    q.n_snapshots = (size_t)n;
    Amber__V1__CreateSnapshotsResponse *resp = NULL;
    int ret = cli_call(c, "/amber.v1.Amber/CreateSnapshots", &q.base,
                       &amber__v1__create_snapshots_response__descriptor, (ProtobufCMessage **)&resp);
    if (ret == 0) {
        if (c->json && resp->n_snapshots > 1) {
            struct json j = {0};
            json_arr_begin(&j, NULL);
            for (size_t k = 0; k < resp->n_snapshots; k++)
                snapshot_json(&j, NULL, resp->snapshots[k]);
            json_arr_end(&j);
            json_print(&j, stdout);
        } else if (c->json) {
            snapshot_print(c, resp->snapshots[0]);
        } else {
            for (size_t k = 0; k < resp->n_snapshots; k++)
                printf("%s  %s@%s\n", resp->snapshots[k]->id, resp->snapshots[k]->volume_name,
                       resp->snapshots[k]->name);
        }
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    free(qs);
    free(pq);
    free(pl);
    free(store);
    free(so.labels);
    return ret;
}

static int s_list(struct cli *c, int argc, char **argv)
{
    struct sopts so = {0};
    int i = cli_getopt(c, argc, argv, snap_opts, ARRAY_SIZE(snap_opts), on_sopt, &so, snapshot_help);
    if (i < 0) {
        free(so.labels);
        return i == -1 ? 0 : 2;
    }
    if (i < argc) {
        free(so.labels);
        return cli_usage("snapshot list: unexpected argument \"%s\" (use --volume)", argv[i]);
    }
    Amber__V1__Label *store;
    Amber__V1__Label **pl = make_labels(&so, &store);
    Amber__V1__ListSnapshotsRequest q = AMBER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    q.volume = (char *)(so.volume ? so.volume : "");
    q.labels = pl;
    q.n_labels = so.n_labels;
    q.all = so.all;
    struct json j = {0};
    struct table *t = NULL;
    int ret = 0;
    if (c->json)
        json_arr_begin(&j, NULL);
    else
        t = table_new(5, "VOLUME", "NAME", "ID", "CREATED", "LABELS");
    char *token = NULL;
    for (;;) {
        q.starting_token = token ? token : (char *)"";
        Amber__V1__ListSnapshotsResponse *resp;
        if (cli_call(c, "/amber.v1.Amber/ListSnapshots", &q.base,
                     &amber__v1__list_snapshots_response__descriptor, (ProtobufCMessage **)&resp)) {
            ret = 1;
            break;
        }
        for (size_t k = 0; k < resp->n_snapshots; k++) {
            Amber__V1__Snapshot *s = resp->snapshots[k];
            if (c->json) {
                snapshot_json(&j, NULL, s);
                continue;
            }
            _cleanup_free_ char *tm = fmt_time_ns(s->created_ns), *l = labels_str(s);
            table_row(t, *s->volume_name ? s->volume_name : s->volume_id, s->name, s->id, tm, l);
        }
        free(token);
        token = *resp->next_token ? xstrdup(resp->next_token) : NULL;
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (!token)
            break;
    }
    free(token);
    if (ret == 0) {
        if (c->json) {
            json_arr_end(&j);
            json_print(&j, stdout);
        } else {
            table_print(t, stdout);
        }
    } else {
        buf_free(&j.b);
    }
    table_free(t);
    free(pl);
    free(store);
    free(so.labels);
    return ret;
}

static int one_snap(struct cli *c, int argc, char **argv, const char **ret)
{
    struct sopts so = {0};
    int i = cli_getopt(c, argc, argv, snap_opts, ARRAY_SIZE(snap_opts), on_sopt, &so, snapshot_help);
    free(so.labels);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("snapshot %s: expected SNAP", argv[0]);
    *ret = argv[i];
    return -1;
}

static int s_show(struct cli *c, int argc, char **argv)
{
    const char *ref;
    int r = one_snap(c, argc, argv, &ref);
    if (r >= 0)
        return r;
    Amber__V1__SnapshotRef q = AMBER__V1__SNAPSHOT_REF__INIT;
    q.snapshot = (char *)ref;
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/GetSnapshot", &q.base, &amber__v1__snapshot__descriptor, &resp))
        return 1;
    snapshot_print(c, (Amber__V1__Snapshot *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int s_delete(struct cli *c, int argc, char **argv)
{
    const char *ref;
    int r = one_snap(c, argc, argv, &ref);
    if (r >= 0)
        return r;
    Amber__V1__SnapshotRef q = AMBER__V1__SNAPSHOT_REF__INIT;
    q.snapshot = (char *)ref;
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/DeleteSnapshot", &q.base, &amber__v1__empty__descriptor, &resp))
        return 1;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (c->json)
        printf("{\"deleted\":\"%s\"}\n", ref);
    else
        printf("deleted snapshot %s\n", ref);
    return 0;
}

static int s_diff(struct cli *c, int argc, char **argv)
{
    struct sopts so = {0};
    int i = cli_getopt(c, argc, argv, snap_opts, ARRAY_SIZE(snap_opts), on_sopt, &so, snapshot_help);
    free(so.labels);
    if (i < 0)
        return i == -1 ? 0 : 2;
    int n = argc - i;
    if ((n < 1 && !so.volume) || n > 2)
        return cli_usage("snapshot diff: expected FROM [TO], or --volume VOL");
    Amber__V1__DiffRequest q = AMBER__V1__DIFF_REQUEST__INIT;
    q.from = n >= 1 ? argv[i] : (char *)"";
    q.to = n == 2 ? argv[i + 1] : (char *)"";
    q.volume = (char *)(so.volume ? so.volume : "");
    struct rpc_stream *st;
    struct rpc_status status = {0};
    int code = rpc_stream_open(c->client, "/amber.v1.Amber/Diff", c->timeout_ms, &st, &status);
    if (code != RPC_OK) {
        cli_status_error(&status, code);
        rpc_status_clear(&status);
        return 1;
    }
    int r = rpc_stream_send(st, &q.base);
    if (r == 0)
        r = rpc_stream_close_send(st);
    struct json j = {0};
    uint64_t total = 0, count = 0;
    char method[32] = "";
    if (c->json) {
        json_obj_begin(&j, NULL);
        json_arr_begin(&j, "extents");
    }
    for (;;) {
        Amber__V1__DiffResponse *resp;
        r = rpc_stream_recv(st, &amber__v1__diff_response__descriptor, (ProtobufCMessage **)&resp);
        if (r <= 0)
            break;
        for (size_t k = 0; k < resp->n_extents; k++) {
            Amber__V1__Extent *e = resp->extents[k];
            if (c->json) {
                json_obj_begin(&j, NULL);
                json_u64(&j, "offset", e->offset);
                json_u64(&j, "length", e->length);
                json_obj_end(&j);
            } else {
                printf("%llu\t%llu\n", (unsigned long long)e->offset, (unsigned long long)e->length);
            }
            total += e->length;
            count++;
        }
        snprintf(method, sizeof method, "%s", resp->method);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    code = rpc_stream_finish(st, &status);
    if (code != RPC_OK) {
        buf_free(&j.b);
        cli_status_error(&status, code);
        rpc_status_clear(&status);
        return 1;
    }
    rpc_status_clear(&status);
    if (c->json) {
        json_arr_end(&j);
        json_u64(&j, "changed_bytes", total);
        json_u64(&j, "extent_count", count);
        json_str(&j, "method", method);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        _cleanup_free_ char *sz = fmt_size(total);
        fprintf(stderr, "%llu extents, %s changed (%s)\n", (unsigned long long)count, sz, method);
    }
    return 0;
}

int cmd_snapshot(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "create", s_create, NULL }, { "list", s_list, NULL }, { "show", s_show, NULL },
        { "delete", s_delete, NULL }, { "diff", s_diff, NULL },
        { "mount", cmd_snapshot_mount, NULL }, { "umount", cmd_snapshot_umount, NULL },
        { "k8s-manifest", cmd_snapshot_k8s_manifest, NULL },
    };
    return cli_dispatch(c, "snapshot", cmds, ARRAY_SIZE(cmds), argc, argv, snapshot_help);
}
