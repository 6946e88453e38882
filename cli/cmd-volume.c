/* cmd-volume.c: amberctl volume create|list|show|resize|delete|attach|detach|revert. */
#include <getopt.h>
#include <string.h>

#include "amber.pb-c.h"
#include "cli/cli.h"
#include "cli/pipeline.h"

static const char volume_help[] =
"Usage: amberctl volume COMMAND ...\n"
"\n"
"  create NAME --size SIZE [--from SNAPSHOT | --from-volume VOL]\n"
"                         a new thin volume, or an instant clone\n"
"  list [--namespace NS] [--all]  all volumes (or those of a PVC namespace); --all: also\n"
"                         the cluster's hidden replicas c-<snapshot id>\n"
"  show VOL               one volume\n"
"  resize VOL --size SIZE grow a volume (online: the loop device follows)\n"
"  delete VOL             delete a detached volume (its snapshots stay)\n"
"  attach VOL [--snapshot SNAP]\n"
"                         attach to a loop device (a snapshot read-only)\n"
"  detach VOL [--snapshot SNAP]\n"
"  revert VOL --to SNAP   make a detached volume's content that of SNAP\n"
"  history VOL [--last N] its snapshots with the bytes changed between them\n"
"\n"
"All take --json. VOL is a name, an id or pvc/NAMESPACE/NAME.\n";

void volume_json(struct json *j, const char *key, const Amber__V1__Volume *v)
{
    json_obj_begin(j, key);
    json_str(j, "id", v->id);
    json_str(j, "name", v->name);
    json_u64(j, "size_bytes", v->size_bytes);
    json_u64(j, "allocated_bytes", v->allocated_bytes);
    if (*v->device)
        json_str(j, "device", v->device);
    else
        json_null(j, "device");
    json_str(j, "state", v->state);
    _cleanup_free_ char *t = fmt_time_ns(v->created_ns);
    json_str(j, "created", t);
    json_u64(j, "snapshots", v->snapshots);
    json_str(j, "source_snapshot", v->source_snapshot);
    json_str(j, "pvc_namespace", v->pvc_namespace);
    json_str(j, "pvc_name", v->pvc_name);
    json_str(j, "fs_type", v->fs_type);
    json_str(j, "replica_of", v->replica_of);
    json_str(j, "source_volume", v->source_volume);
    json_str(j, "source_node", v->source_node);
    json_obj_end(j);
}

static void volume_print(struct cli *c, const Amber__V1__Volume *v)
{
    if (c->json) {
        struct json j = {0};
        volume_json(&j, NULL, v);
        json_print(&j, stdout);
        return;
    }
    _cleanup_free_ char *sz = fmt_size(v->size_bytes), *al = fmt_size(v->allocated_bytes),
                        *t = fmt_time_ns(v->created_ns);
    printf("id:         %s\n", v->id);
    printf("name:       %s\n", v->name);
    printf("size:       %s (%llu bytes)\n", sz, (unsigned long long)v->size_bytes);
    printf("allocated:  %s\n", al);
    printf("state:      %s\n", v->state);
    printf("created:    %s\n", t);
    printf("snapshots:  %u\n", v->snapshots);
    if (*v->device)
        printf("device:     %s\n", v->device);
    if (*v->source_snapshot)
        printf("cloned from: %s\n", v->source_snapshot);
    if (*v->pvc_name)
        printf("pvc:        %s/%s\n", v->pvc_namespace, v->pvc_name);
    if (*v->replica_of)
        printf("replica of: %s\n", v->replica_of);
}

struct vopts {
    const char *size, *from, *from_volume, *snapshot, *to, *ns;
    bool all;
};

static int on_vopt(int o, const char *arg, void *data)
{
    struct vopts *v = data;
    switch (o) {
    case 's': v->size = arg; break;
    case 'f': v->from = arg; break;
    case 'F': v->from_volume = arg; break;
    case 'S': v->snapshot = arg; break;
    case 't': v->to = arg; break;
    case 'n': v->ns = arg; break;
    case 'a': v->all = true; break;
    default: return -1;
    }
    return 0;
}

static const struct option vol_opts[] = {
    { "size", required_argument, NULL, 's' },
    { "from", required_argument, NULL, 'f' },
    { "from-volume", required_argument, NULL, 'F' },
    { "snapshot", required_argument, NULL, 'S' },
    { "to", required_argument, NULL, 't' },
    { "namespace", required_argument, NULL, 'n' },
    { "all", no_argument, NULL, 'a' },
};

/* Parse options and exactly `want` operands into ops[]. */
static int parse(struct cli *c, int argc, char **argv, struct vopts *v, int want, char **ops,
                 const char *what)
{
    int i = cli_getopt(c, argc, argv, vol_opts, ARRAY_SIZE(vol_opts), on_vopt, v, volume_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != want)
        return cli_usage("volume %s: expected %s", argv[0], what);
    for (int k = 0; k < want; k++)
        ops[k] = argv[i + k];
    return -1;
}

static int get_size(const char *s, uint64_t *ret)
{
    int r = parse_size(s, ret);
    if (r < 0 || *ret == 0)
        return cli_usage("--size: a positive size such as 10G or 512M, not \"%s\"", s);
    return 0;
}

static int print_volume_reply(struct cli *c, ProtobufCMessage *m)
{
    volume_print(c, (Amber__V1__Volume *)m);
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static int v_create(struct cli *c, int argc, char **argv)
{
    struct vopts v = {0};
    char *ops[1] = { NULL };
    int r = parse(c, argc, argv, &v, 1, ops, "NAME");
    if (r >= 0)
        return r;
    Amber__V1__CreateVolumeRequest q = AMBER__V1__CREATE_VOLUME_REQUEST__INIT;
    q.name = ops[0];
    if (!v.size && !v.from && !v.from_volume)
        return cli_usage("volume create: --size SIZE is required");
    if (v.size && get_size(v.size, &q.size_bytes))
        return 2;
    if (v.from && v.from_volume)
        return cli_usage("volume create: --from and --from-volume exclude each other");
    q.source_snapshot = (char *)(v.from ? v.from : "");
    q.source_volume = (char *)(v.from_volume ? v.from_volume : "");
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/CreateVolume", &q.base, &amber__v1__volume__descriptor, &resp))
        return 1;
    return print_volume_reply(c, resp);
}

static int v_list(struct cli *c, int argc, char **argv)
{
    struct vopts v = {0};
    int r = parse(c, argc, argv, &v, 0, NULL, "no operands");
    if (r >= 0)
        return r;
    Amber__V1__ListVolumesRequest q = AMBER__V1__LIST_VOLUMES_REQUEST__INIT;
    q.pvc_namespace = (char *)(v.ns ? v.ns : "");
    q.all = v.all;
    struct json j = {0};
    struct table *t = NULL;
    if (c->json)
        json_arr_begin(&j, NULL);
    else
        t = table_new(7, "NAME", "ID", "SIZE", "ALLOCATED", "SNAPSHOTS", "DEVICE", "PVC");
    for (;;) {
        Amber__V1__ListVolumesResponse *resp;
        if (cli_call(c, "/amber.v1.Amber/ListVolumes", &q.base,
                     &amber__v1__list_volumes_response__descriptor, (ProtobufCMessage **)&resp)) {
            table_free(t);
            buf_free(&j.b);
            return 1;
        }
        for (size_t i = 0; i < resp->n_volumes; i++) {
            Amber__V1__Volume *vo = resp->volumes[i];
            if (c->json) {
                volume_json(&j, NULL, vo);
                continue;
            }
            _cleanup_free_ char *sz = fmt_size(vo->size_bytes), *al = fmt_size(vo->allocated_bytes),
                                *pvc = *vo->pvc_name ? xasprintf("%s/%s", vo->pvc_namespace, vo->pvc_name) : xstrdup("-"),
                                *ns = xasprintf("%u", vo->snapshots);
            table_row(t, vo->name, vo->id, sz, al, ns, *vo->device ? vo->device : "-", pvc);
        }
        _cleanup_free_ char *next = xstrdup(resp->next_token);
        protobuf_c_message_free_unpacked(&resp->base, NULL);
        if (!*next)
            break;
        free(q.starting_token == protobuf_c_empty_string ? NULL : q.starting_token);
        q.starting_token = TAKE_PTR(next);
    }
    if (q.starting_token != protobuf_c_empty_string)
        free(q.starting_token);
    if (c->json) {
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        table_print(t, stdout);
        table_free(t);
    }
    return 0;
}

static int v_show(struct cli *c, int argc, char **argv)
{
    struct vopts v = {0};
    char *ops[1] = { NULL };
    int r = parse(c, argc, argv, &v, 1, ops, "VOL");
    if (r >= 0)
        return r;
    Amber__V1__VolumeRef q = AMBER__V1__VOLUME_REF__INIT;
    q.volume = ops[0];
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/GetVolume", &q.base, &amber__v1__volume__descriptor, &resp))
        return 1;
    return print_volume_reply(c, resp);
}

static int v_resize(struct cli *c, int argc, char **argv)
{
    struct vopts v = {0};
    char *ops[1] = { NULL };
    int r = parse(c, argc, argv, &v, 1, ops, "VOL --size SIZE");
    if (r >= 0)
        return r;
    Amber__V1__ResizeVolumeRequest q = AMBER__V1__RESIZE_VOLUME_REQUEST__INIT;
    q.volume = ops[0];
    if (!v.size)
        return cli_usage("volume resize: --size SIZE is required");
    if (get_size(v.size, &q.size_bytes))
        return 2;
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/ResizeVolume", &q.base, &amber__v1__volume__descriptor, &resp))
        return 1;
    return print_volume_reply(c, resp);
}

static int v_delete(struct cli *c, int argc, char **argv)
{
    struct vopts v = {0};
    char *ops[1] = { NULL };
    int r = parse(c, argc, argv, &v, 1, ops, "VOL");
    if (r >= 0)
        return r;
    Amber__V1__VolumeRef q = AMBER__V1__VOLUME_REF__INIT;
    q.volume = ops[0];
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/DeleteVolume", &q.base, &amber__v1__empty__descriptor, &resp))
        return 1;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (c->json)
        printf("{\"deleted\":\"%s\"}\n", ops[0]);
    else
        printf("deleted volume %s\n", ops[0]);
    return 0;
}

static int v_attach_detach(struct cli *c, int argc, char **argv, bool attach)
{
    struct vopts v = {0};
    char *ops[1] = { NULL };
    int r = parse(c, argc, argv, &v, 1, ops, "VOL");
    if (r >= 0)
        return r;
    Amber__V1__AttachVolumeRequest q = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
    q.volume = ops[0];
    q.snapshot = (char *)(v.snapshot ? v.snapshot : "");
    ProtobufCMessage *resp;
    if (!attach) {
        if (cli_call(c, "/amber.v1.Amber/DetachVolume", &q.base, &amber__v1__empty__descriptor, &resp))
            return 1;
        protobuf_c_message_free_unpacked(resp, NULL);
        if (c->json)
            printf("{\"detached\":\"%s\"}\n", ops[0]);
        else
            printf("detached %s\n", ops[0]);
        return 0;
    }
    if (cli_call(c, "/amber.v1.Amber/AttachVolume", &q.base,
                 &amber__v1__attach_volume_response__descriptor, &resp))
        return 1;
    Amber__V1__AttachVolumeResponse *a = (void *)resp;
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_str(&j, "device", a->device);
        if (a->volume)
            volume_json(&j, "volume", a->volume);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        printf("%s\n", a->device);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static int v_attach(struct cli *c, int argc, char **argv) { return v_attach_detach(c, argc, argv, true); }
static int v_detach(struct cli *c, int argc, char **argv) { return v_attach_detach(c, argc, argv, false); }

static int v_revert(struct cli *c, int argc, char **argv)
{
    struct vopts v = {0};
    char *ops[1] = { NULL };
    int r = parse(c, argc, argv, &v, 1, ops, "VOL --to SNAPSHOT");
    if (r >= 0)
        return r;
    if (!v.to)
        return cli_usage("volume revert: --to SNAPSHOT is required");
    Amber__V1__RevertVolumeRequest q = AMBER__V1__REVERT_VOLUME_REQUEST__INIT;
    q.volume = ops[0];
    q.snapshot = (char *)v.to;
    ProtobufCMessage *resp;
    if (cli_call(c, "/amber.v1.Amber/RevertVolume", &q.base, &amber__v1__volume__descriptor, &resp))
        return 1;
    return print_volume_reply(c, resp);
}

int cmd_volume(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "create", v_create, NULL }, { "list", v_list, NULL }, { "show", v_show, NULL },
        { "resize", v_resize, NULL }, { "delete", v_delete, NULL }, { "attach", v_attach, NULL },
        { "detach", v_detach, NULL }, { "revert", v_revert, NULL },
        { "history", cmd_volume_history, NULL },
    };
    return cli_dispatch(c, "volume", cmds, ARRAY_SIZE(cmds), argc, argv, volume_help);
}
