/* cmd-run.c: pipeline runs and bringing a run's data back in Kubernetes.
 *
 * A run is the set of snapshots labelled run=RUN; by convention a step's
 * snapshots also carry step=STEP and pipeline=PIPELINE (any other labels
 * are kept and shown). `run list` groups every snapshot with a `run` label
 * (listing is paged through the whole catalog: runs are found client-side
 * so this works against any amberd, scoped sockets included); `run show`
 * lists one run with a label filter, served by the catalog's index.
 *
 * `snapshot k8s-manifest` prints a pre-provisioned VolumeSnapshotContent
 * whose snapshotHandle is the Amber snapshot id (the CSI plugin's
 * snapshot_id is amberd's id) and a VolumeSnapshot bound to it; a PVC whose
 * dataSource names the VolumeSnapshot gets that snapshot's exact bytes. */
#include <getopt.h>
#include <string.h>

#include "amber.pb-c.h"
#include "cli/cli.h"
#include "cli/pipeline.h"

static const char run_help[] =
"Usage: amberctl run COMMAND ...\n"
"\n"
"  list                   pipeline runs: snapshots labelled run=RUN, grouped,\n"
"                         with their pipeline, steps and time span\n"
"  show RUN               one run's snapshots, by step (labels step, pipeline)\n"
"\n"
"A pipeline step snapshots its volumes with labels pipeline=P run=R step=S\n"
"(amberctl snapshot create VOL... --label run=R ..., or the Python client).\n"
"Snapshots of runs are never pruned by schedules. All take --json.\n";

static const char manifest_help[] =
"Usage: amberctl snapshot k8s-manifest SNAP [--namespace NS] [--name NAME]\n"
"                                      [--driver DRIVER] [--class CLASS]\n"
"\n"
"Prints (YAML) a pre-provisioned VolumeSnapshotContent whose snapshotHandle\n"
"is SNAP's id, with deletionPolicy Retain, and a VolumeSnapshot NAME in NS\n"
"(default: the snapshot's name, namespace \"default\") bound to it. Apply\n"
"it with kubectl, then create a PVC with dataSource kind VolumeSnapshot.\n"
"DRIVER defaults to amber.csi.dev.\n";

/* Every snapshot matching the filter, through all pages. 0 or exit status 1. */
static int list_all(struct cli *c, Amber__V1__ListSnapshotsRequest *q,
                    Amber__V1__ListSnapshotsResponse ***ret, size_t *ret_n)
{
    Amber__V1__ListSnapshotsResponse **pages = NULL;
    size_t n = 0;
    char *token = NULL;
    for (;;) {
        q->starting_token = token ? token : (char *)"";
        Amber__V1__ListSnapshotsResponse *resp;
        if (cli_call(c, "/amber.v1.Amber/ListSnapshots", &q->base,
                     &amber__v1__list_snapshots_response__descriptor, (ProtobufCMessage **)&resp)) {
            free(token);
            for (size_t i = 0; i < n; i++)
                protobuf_c_message_free_unpacked(&pages[i]->base, NULL);
            free(pages);
            return 1;
        }
        pages = xrealloc(pages, (n + 1) * sizeof *pages);
        pages[n++] = resp;
        free(token);
        token = *resp->next_token ? xstrdup(resp->next_token) : NULL;
        if (!token)
            break;
    }
    *ret = pages;
    *ret_n = n;
    return 0;
}

static void free_pages(Amber__V1__ListSnapshotsResponse **p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&p[i]->base, NULL);
    free(p);
}

static const char *label(const Amber__V1__Snapshot *s, const char *key)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i]->key, key) == 0)
            return s->labels[i]->value;
    return NULL;
}

struct run {
    const char *name, *pipeline;
    size_t snapshots;
    char **steps;
    size_t n_steps;
    int64_t first, last;
};

static int r_list(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, run_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (i < argc)
        return cli_usage("run list: unexpected argument \"%s\"", argv[i]);
    Amber__V1__ListSnapshotsRequest q = AMBER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    Amber__V1__ListSnapshotsResponse **pages;
    size_t np;
    if (list_all(c, &q, &pages, &np))
        return 1;
    struct run *runs = NULL;
    size_t nr = 0;
    for (size_t p = 0; p < np; p++)
        for (size_t k = 0; k < pages[p]->n_snapshots; k++) {
            const Amber__V1__Snapshot *s = pages[p]->snapshots[k];
            const char *rn = label(s, "run");
            if (!rn)
                continue;
            struct run *r = NULL;
            for (size_t j = 0; j < nr && !r; j++)
                if (strcmp(runs[j].name, rn) == 0)
                    r = &runs[j];
            if (!r) {
                runs = xrealloc(runs, (nr + 1) * sizeof *runs);
                r = &runs[nr++];
                *r = (struct run){ .name = rn, .first = s->created_ns };
            }
            r->snapshots++;
            if (!r->pipeline)
                r->pipeline = label(s, "pipeline");
            r->first = MIN(r->first, s->created_ns);
            r->last = MAX(r->last, s->created_ns);
            const char *st = label(s, "step");
            bool seen = !st;
            for (size_t j = 0; j < r->n_steps && !seen; j++)
                seen = strcmp(r->steps[j], st) == 0;
            if (!seen) {
                r->steps = xrealloc(r->steps, (r->n_steps + 1) * sizeof *r->steps);
                r->steps[r->n_steps++] = (char *)st;
            }
        }
    if (c->json) {
        struct json j = {0};
        json_arr_begin(&j, NULL);
        for (size_t k = 0; k < nr; k++) {
            json_obj_begin(&j, NULL);
            json_str(&j, "run", runs[k].name);
            if (runs[k].pipeline)
                json_str(&j, "pipeline", runs[k].pipeline);
            else
                json_null(&j, "pipeline");
            json_arr_begin(&j, "steps");
            for (size_t s = 0; s < runs[k].n_steps; s++)
                json_str(&j, NULL, runs[k].steps[s]);
            json_arr_end(&j);
            json_u64(&j, "snapshots", runs[k].snapshots);
            _cleanup_free_ char *a = fmt_time_ns(runs[k].first), *b = fmt_time_ns(runs[k].last);
            json_str(&j, "first", a);
            json_str(&j, "last", b);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        struct table *t = table_new(6, "RUN", "PIPELINE", "STEPS", "SNAPSHOTS", "FIRST", "LAST");
        for (size_t k = 0; k < nr; k++) {
            char ns[16], nsn[16];
            snprintf(ns, sizeof ns, "%zu", runs[k].n_steps);
            snprintf(nsn, sizeof nsn, "%zu", runs[k].snapshots);
            _cleanup_free_ char *a = fmt_time_ns(runs[k].first), *b = fmt_time_ns(runs[k].last);
            table_row(t, runs[k].name, runs[k].pipeline ? runs[k].pipeline : "-", ns, nsn, a, b);
        }
        table_print(t, stdout);
        table_free(t);
    }
    for (size_t k = 0; k < nr; k++)
        free(runs[k].steps);
    free(runs);
    free_pages(pages, np);
    return 0;
}

static int r_show(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, run_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("run show: expected RUN");
    const char *run = argv[i];
    Amber__V1__ListSnapshotsRequest q = AMBER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    Amber__V1__Label l = AMBER__V1__LABEL__INIT, *pl = &l;
    l.key = "run";
    l.value = (char *)run;
    q.labels = &pl;
    q.n_labels = 1;
    Amber__V1__ListSnapshotsResponse **pages;
    size_t np;
    if (list_all(c, &q, &pages, &np))
        return 1;
    size_t total = 0;
    const char *pipeline = NULL;
    for (size_t p = 0; p < np; p++) {
        total += pages[p]->n_snapshots;
        for (size_t k = 0; k < pages[p]->n_snapshots && !pipeline; k++)
            pipeline = label(pages[p]->snapshots[k], "pipeline");
    }
    if (total == 0) {
        free_pages(pages, np);
        fprintf(stderr, "amberctl: NOT_FOUND: no snapshots labelled run=%s\n", run);
        return 1;
    }
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_str(&j, "run", run);
        if (pipeline)
            json_str(&j, "pipeline", pipeline);
        else
            json_null(&j, "pipeline");
        json_arr_begin(&j, "snapshots");
        for (size_t p = 0; p < np; p++)
            for (size_t k = 0; k < pages[p]->n_snapshots; k++) {
                const Amber__V1__Snapshot *s = pages[p]->snapshots[k];
                json_obj_begin(&j, NULL);
                const char *st = label(s, "step");
                if (st)
                    json_str(&j, "step", st);
                else
                    json_null(&j, "step");
                snapshot_json(&j, "snapshot", s);
                json_obj_end(&j);
            }
        json_arr_end(&j);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        printf("run %s%s%s\n", run, pipeline ? " of pipeline " : "", pipeline ? pipeline : "");
        struct table *t = table_new(5, "STEP", "VOLUME", "SNAPSHOT", "CREATED", "LABELS");
        for (size_t p = 0; p < np; p++)
            for (size_t k = 0; k < pages[p]->n_snapshots; k++) {
                const Amber__V1__Snapshot *s = pages[p]->snapshots[k];
                const char *st = label(s, "step");
                _cleanup_free_ char *tm = fmt_time_ns(s->created_ns), *ls = labels_joined(s);
                table_row(t, st ? st : "-", *s->volume_name ? s->volume_name : s->volume_id,
                          s->id, tm, ls);
            }
        table_print(t, stdout);
        table_free(t);
    }
    free_pages(pages, np);
    return 0;
}

int cmd_run(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = { { "list", r_list, NULL }, { "show", r_show, NULL } };
    return cli_dispatch(c, "run", cmds, ARRAY_SIZE(cmds), argc, argv, run_help);
}

/* --- k8s-manifest --------------------------------------------------------- */

struct mopts {
    const char *ns, *name, *driver, *klass;
};

static int on_mopt(int o, const char *arg, void *data)
{
    struct mopts *m = data;
    switch (o) {
    case 'N': m->ns = arg; break;
    case 'n': m->name = arg; break;
    case 'd': m->driver = arg; break;
    case 'c': m->klass = arg; break;
    default: return -1;
    }
    return 0;
}

/* A Kubernetes object name (DNS-1123 subdomain) from free text: lowercase,
 * [a-z0-9.-], starting and ending alphanumeric, at most 253. */
static char *k8s_name(const char *s)
{
    size_t n = strlen(s);
    char *o = xcalloc(n + 8, 1);
    size_t k = 0;
    for (size_t i = 0; i < n && k < 200; i++) {
        char ch = s[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-'))
            ch = '-';
        if (k == 0 && (ch == '.' || ch == '-'))
            continue;
        o[k++] = ch;
    }
    while (k > 0 && (o[k - 1] == '-' || o[k - 1] == '.'))
        o[--k] = 0;
    if (k == 0)
        strcpy(o, "snapshot");
    return o;
}

/* A double-quoted YAML scalar. */
static void yq(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\x%02x", (unsigned char)*s);
        else
            putchar(*s);
    }
    putchar('"');
}

int cmd_snapshot_k8s_manifest(struct cli *c, int argc, char **argv)
{
    static const struct option o[] = {
        { "namespace", required_argument, NULL, 'N' }, { "name", required_argument, NULL, 'n' },
        { "driver", required_argument, NULL, 'd' }, { "class", required_argument, NULL, 'c' },
    };
    struct mopts m = { .ns = "default", .driver = "amber.csi.dev" };
    int i = cli_getopt(c, argc, argv, o, ARRAY_SIZE(o), on_mopt, &m, manifest_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("snapshot k8s-manifest: expected SNAP");
    Amber__V1__SnapshotRef q = AMBER__V1__SNAPSHOT_REF__INIT;
    q.snapshot = argv[i];
    Amber__V1__Snapshot *s;
    if (cli_call(c, "/amber.v1.Amber/GetSnapshot", &q.base, &amber__v1__snapshot__descriptor,
                 (ProtobufCMessage **)&s))
        return 1;
    _cleanup_free_ char *name = k8s_name(m.name ? m.name : s->name);
    _cleanup_free_ char *content = xasprintf("amber-%s", s->id);
    printf("apiVersion: snapshot.storage.k8s.io/v1\n"
           "kind: VolumeSnapshotContent\n"
           "metadata:\n"
           "  name: %s\n", content);
    printf("  annotations:\n    amber.csi.dev/snapshot-name: ");
    yq(s->name);
    printf("\n    amber.csi.dev/volume: ");
    yq(s->volume_name);
    for (size_t k = 0; k < s->n_labels; k++) {
        const char *key = s->labels[k]->key;
        if (strcmp(key, "pipeline") && strcmp(key, "run") && strcmp(key, "step"))
            continue;
        printf("\n    amber.csi.dev/%s: ", key);
        yq(s->labels[k]->value);
    }
    printf("\nspec:\n"
           "  deletionPolicy: Retain\n"
           "  driver: ");
    yq(m.driver);
    printf("\n  source:\n    snapshotHandle: ");
    yq(s->id);
    printf("\n  volumeSnapshotRef:\n    name: %s\n    namespace: ", name);
    yq(m.ns);
    if (m.klass) {
        printf("\n  volumeSnapshotClassName: ");
        yq(m.klass);
    }
    printf("\n---\n"
           "apiVersion: snapshot.storage.k8s.io/v1\n"
           "kind: VolumeSnapshot\n"
           "metadata:\n"
           "  name: %s\n"
           "  namespace: ", name);
    yq(m.ns);
    printf("\nspec:\n");
    if (m.klass) {
        printf("  volumeSnapshotClassName: ");
        yq(m.klass);
        printf("\n");
    }
    printf("  source:\n    volumeSnapshotContentName: %s\n", content);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return 0;
}
