/* cmd-schedule.c: amberctl schedule set|list|remove|hold|release, and
 * `amberctl volume history` (the time machine's timeline). */
#include <getopt.h>
#include <string.h>

#include "amber.pb-c.h"
#include "cli/cli.h"
#include "cli/pipeline.h"

static const char schedule_help[] =
"Usage: amberctl schedule COMMAND ...\n"
"\n"
"  set VOL --every DURATION [--keep N] [--keep-hourly H] [--keep-daily D]\n"
"      [--keep-weekly W]   snapshot VOL every DURATION (at least 1s; e.g. 10m)\n"
"                         labelled schedule=DURATION, and prune them: keep\n"
"                         the N newest, and the newest of each of the last\n"
"                         H hours, D days, W weeks (UTC). No --keep*: keep all\n"
"  list                   every schedule, with its next and last run\n"
"  remove VOL             stop snapshotting VOL (its snapshots stay)\n"
"  hold SNAP              label SNAP hold=true: retention never deletes it\n"
"  release SNAP           remove the hold label\n"
"\n"
"Retention never deletes snapshots that are held, carry a `run` label, or\n"
"are the newest base of an export chain or of a peer's sync.\n"
"All take --json.\n";

static const char history_help[] =
"Usage: amberctl volume history VOL [--last N] [--json]\n"
"\n"
"The volume's snapshots, oldest first: time, name, labels, and the bytes\n"
"changed since the previous snapshot (exact, from the pool's diffs; for the\n"
"first one, the bytes it holds).\n";

void schedule_json(struct json *j, const Amber__V1__Schedule *s)
{
    char ev[32];
    json_obj_begin(j, NULL);
    json_str(j, "volume", s->volume_name);
    json_str(j, "volume_id", s->volume_id);
    fmt_every(s->every_ms, ev, sizeof ev);
    json_str(j, "every", ev);
    json_u64(j, "every_ms", s->every_ms);
    json_u64(j, "keep", s->keep);
    json_u64(j, "keep_hourly", s->keep_hourly);
    json_u64(j, "keep_daily", s->keep_daily);
    json_u64(j, "keep_weekly", s->keep_weekly);
    json_i64(j, "next_due_ns", s->next_due_ns);
    json_i64(j, "last_run_ns", s->last_run_ns);
    json_obj_end(j);
}

void fmt_every(uint64_t ms, char *buf, size_t len)
{
    static const struct { uint64_t ms; const char *u; } units[] = {
        { 7ULL * 86400000, "w" }, { 86400000, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].u);
            return;
        }
    snprintf(buf, len, "%llums", (unsigned long long)ms);
}

struct set_opts {
    uint64_t every_ms;
    uint32_t keep[4];
    uint64_t last;
};

static int on_set_opt(int o, const char *arg, void *data)
{
    struct set_opts *s = data;
    uint64_t v;
    if (o == 'e') {
        if (parse_duration_ms(arg, &s->every_ms) < 0 || s->every_ms < 1000) {
            cli_usage("--every: a duration of at least 1s, such as 10m, not \"%s\"", arg);
            return -1;
        }
        return 0;
    }
    if (o == 'n') {
        if (parse_u64(arg, &s->last) < 0 || s->last > UINT32_MAX) {
            cli_usage("--last: a count, not \"%s\"", arg);
            return -1;
        }
        return 0;
    }
    if (o < '0' || o > '3')
        return -1;
    if (parse_u64(arg, &v) < 0 || v > 1000000) {
        cli_usage("--keep*: a count between 0 and 1000000, not \"%s\"", arg);
        return -1;
    }
    s->keep[o - '0'] = (uint32_t)v;
    return 0;
}

static const struct option set_optv[] = {
    { "every", required_argument, NULL, 'e' },
    { "keep", required_argument, NULL, '0' },
    { "keep-hourly", required_argument, NULL, '1' },
    { "keep-daily", required_argument, NULL, '2' },
    { "keep-weekly", required_argument, NULL, '3' },
    { "last", required_argument, NULL, 'n' },
};

static void schedule_print(struct cli *c, const Amber__V1__Schedule *s)
{
    if (c->json) {
        struct json j = {0};
        schedule_json(&j, s);
        json_print(&j, stdout);
        return;
    }
    char ev[32];
    fmt_every(s->every_ms, ev, sizeof ev);
    _cleanup_free_ char *nx = fmt_time_ns(s->next_due_ns);
    printf("volume %s: every %s, keep %u, hourly %u, daily %u, weekly %u; next %s\n",
           s->volume_name, ev, s->keep, s->keep_hourly, s->keep_daily, s->keep_weekly, nx);
}

static int sc_set(struct cli *c, int argc, char **argv)
{
    struct set_opts so = {0};
    int i = cli_getopt(c, argc, argv, set_optv, 5, on_set_opt, &so, schedule_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("schedule set: expected VOL");
    if (!so.every_ms)
        return cli_usage("schedule set: --every DURATION is required");
    Amber__V1__SetScheduleRequest q = AMBER__V1__SET_SCHEDULE_REQUEST__INIT;
    q.volume = argv[i];
    q.every_ms = so.every_ms;
    q.keep = so.keep[0];
    q.keep_hourly = so.keep[1];
    q.keep_daily = so.keep[2];
    q.keep_weekly = so.keep[3];
    Amber__V1__Schedule *r;
    if (cli_call(c, "/amber.v1.Amber/SetSchedule", &q.base, &amber__v1__schedule__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    schedule_print(c, r);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int sc_list(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, schedule_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (i < argc)
        return cli_usage("schedule list: unexpected argument \"%s\"", argv[i]);
    Amber__V1__ListSchedulesRequest q = AMBER__V1__LIST_SCHEDULES_REQUEST__INIT;
    Amber__V1__ListSchedulesResponse *r;
    if (cli_call(c, "/amber.v1.Amber/ListSchedules", &q.base,
                 &amber__v1__list_schedules_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_arr_begin(&j, NULL);
        for (size_t k = 0; k < r->n_schedules; k++)
            schedule_json(&j, r->schedules[k]);
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        struct table *t = table_new(8, "VOLUME", "EVERY", "KEEP", "HOURLY", "DAILY", "WEEKLY",
                                    "LAST", "NEXT");
        for (size_t k = 0; k < r->n_schedules; k++) {
            Amber__V1__Schedule *s = r->schedules[k];
            char ev[32], a[16], b[16], cc[16], d[16];
            fmt_every(s->every_ms, ev, sizeof ev);
            snprintf(a, sizeof a, "%u", s->keep);
            snprintf(b, sizeof b, "%u", s->keep_hourly);
            snprintf(cc, sizeof cc, "%u", s->keep_daily);
            snprintf(d, sizeof d, "%u", s->keep_weekly);
            _cleanup_free_ char *last = fmt_time_ns(s->last_run_ns), *nx = fmt_time_ns(s->next_due_ns);
            table_row(t, *s->volume_name ? s->volume_name : s->volume_id, ev, a, b, cc, d,
                      *last ? last : "-", nx);
        }
        table_print(t, stdout);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int sc_remove(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, schedule_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("schedule remove: expected VOL");
    Amber__V1__VolumeRef q = AMBER__V1__VOLUME_REF__INIT;
    q.volume = argv[i];
    ProtobufCMessage *r;
    if (cli_call(c, "/amber.v1.Amber/RemoveSchedule", &q.base, &amber__v1__empty__descriptor, &r))
        return 1;
    protobuf_c_message_free_unpacked(r, NULL);
    if (c->json)
        printf("{\"removed\":true}\n");
    else
        printf("schedule of %s removed\n", argv[i]);
    return 0;
}

static int sc_hold(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, schedule_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("schedule %s: expected SNAP", argv[0]);
    bool hold = strcmp(argv[0], "hold") == 0;
    Amber__V1__LabelSnapshotRequest q = AMBER__V1__LABEL_SNAPSHOT_REQUEST__INIT;
    Amber__V1__Label l = AMBER__V1__LABEL__INIT, *pl = &l;
    char *rm = "hold";
    q.snapshot = argv[i];
    l.key = "hold";
    l.value = "true";
    if (hold) {
        q.set = &pl;
        q.n_set = 1;
    } else {
        q.remove = &rm;
        q.n_remove = 1;
    }
    Amber__V1__Snapshot *r;
    if (cli_call(c, "/amber.v1.Amber/LabelSnapshot", &q.base, &amber__v1__snapshot__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        snapshot_json(&j, NULL, r);
        json_print(&j, stdout);
    } else {
        printf("%s %s@%s\n", hold ? "held" : "released", r->volume_name, r->name);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

int cmd_schedule(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "set", sc_set, NULL }, { "list", sc_list, NULL }, { "remove", sc_remove, NULL },
        { "hold", sc_hold, NULL }, { "release", sc_hold, NULL },
    };
    return cli_dispatch(c, "schedule", cmds, ARRAY_SIZE(cmds), argc, argv, schedule_help);
}

char *labels_joined(const Amber__V1__Snapshot *s)
{
    struct buf b = {0};
    buf_append(&b, "", 0);
    for (size_t i = 0; i < s->n_labels; i++)
        buf_printf(&b, "%s%s=%s", i ? "," : "", s->labels[i]->key, s->labels[i]->value);
    buf_append(&b, "", 1);
    return (char *)b.data;
}

int cmd_volume_history(struct cli *c, int argc, char **argv)
{
    struct set_opts so = {0};
    int i = cli_getopt(c, argc, argv, set_optv + 5, 1, on_set_opt, &so, history_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("volume history: expected VOL");
    Amber__V1__VolumeHistoryRequest q = AMBER__V1__VOLUME_HISTORY_REQUEST__INIT;
    q.volume = argv[i];
    q.max_entries = (uint32_t)so.last;
    Amber__V1__VolumeHistoryResponse *r;
    if (cli_call(c, "/amber.v1.Amber/VolumeHistory", &q.base,
                 &amber__v1__volume_history_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_arr_begin(&j, NULL);
        for (size_t k = 0; k < r->n_entries; k++) {
            const Amber__V1__HistoryEntry *e = r->entries[k];
            json_obj_begin(&j, NULL);
            _cleanup_free_ char *t = fmt_time_ns(e->snapshot->created_ns);
            json_str(&j, "time", t);
            json_str(&j, "name", e->snapshot->name);
            json_str(&j, "id", e->snapshot->id);
            json_obj_begin(&j, "labels");
            for (size_t l = 0; l < e->snapshot->n_labels; l++)
                json_str(&j, e->snapshot->labels[l]->key, e->snapshot->labels[l]->value);
            json_obj_end(&j);
            json_u64(&j, "changed_bytes", e->changed_bytes);
            json_str(&j, "method", e->method);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        struct table *t = table_new(4, "TIME", "NAME", "CHANGED", "LABELS");
        for (size_t k = 0; k < r->n_entries; k++) {
            const Amber__V1__HistoryEntry *e = r->entries[k];
            _cleanup_free_ char *tm = fmt_time_ns(e->snapshot->created_ns), *sz = fmt_size(e->changed_bytes),
                                *l = labels_joined(e->snapshot);
            table_row(t, tm, e->snapshot->name, *e->method ? sz : "?", l);
        }
        table_print(t, stdout);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}
