/* cmd-sync.c: amberctl sync pull|push, subscribe, subscription list|remove.
 * A transfer streams SyncProgress from amberd: drawn as a bar when stdout
 * is a terminal, and ended by one summary (a JSON object with --json). */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "amber.pb-c.h"
#include "sync.pb-c.h"
#include "cli/peer.h"

static const char sync_help[] =
"Usage: amberctl sync COMMAND ...\n"
"\n"
"  pull PEER VOLUME [--as NAME] [--snapshot SNAP]\n"
"                 bring the local replica of PEER's VOLUME up to its newest\n"
"                 snapshot (or SNAP), sending only what changed\n"
"  push VOL --to PEER [--as NAME] [--snapshot SNAP]\n"
"                 the same, from here to PEER (it must allow pushes from us)\n"
"\n"
"An interrupted transfer resumes where it stopped when run again.\n"
"--json prints one object: volume, snapshots_sent|snapshots_received,\n"
"bytes_changed, bytes_on_wire, resumed_bytes, seconds.\n";

struct sync_opts {
    const char *as, *snapshot, *to;
};

static int sync_opt(int o, const char *arg, void *data)
{
    struct sync_opts *s = data;
    switch (o) {
    case 'a': s->as = arg; return 0;
    case 's': s->snapshot = arg; return 0;
    case 't': s->to = arg; return 0;
    }
    return -1;
}

static void bar(const Amber__V1__SyncProgress *p)
{
    double frac = p->stream_total ? (double)p->stream_done / (double)p->stream_total : 1.0;
    int w = 30, n = (int)(frac * w);
    char b[64];
    for (int i = 0; i < w; i++)
        b[i] = i < n ? '#' : '.';
    b[w] = 0;
    _cleanup_free_ char *done = fmt_size(p->stream_done), *tot = fmt_size(p->stream_total),
                        *wire = fmt_size(p->bytes_on_wire);
    fprintf(stdout, "\r[%s] %u/%u %-24.24s %s/%s wire %s %5.1fs ", b, p->index, p->count,
            p->snapshot, done, tot, wire, p->seconds);
    fflush(stdout);
}

static int run_transfer(struct cli *c, const char *method, const ProtobufCMessage *req, bool push)
{
    struct rpc_stream *s = NULL;
    struct rpc_status st = {0};
    bool tty = !c->json && isatty(STDOUT_FILENO);
    int code = rpc_stream_open(c->client, method, 0, &s, &st);
    if (code != RPC_OK) {
        cli_status_error(&st, code);
        rpc_status_clear(&st);
        return 1;
    }
    Amber__V1__SyncProgress *last = NULL;
    int r = rpc_stream_send(s, req);
    if (r == 0)
        r = rpc_stream_close_send(s);
    while (r >= 0) {
        Amber__V1__SyncProgress *p = NULL;
        r = rpc_stream_recv(s, &amber__v1__sync_progress__descriptor, (ProtobufCMessage **)&p);
        if (r <= 0)
            break;
        if (tty && !p->done)
            bar(p);
        if (last)
            protobuf_c_message_free_unpacked(&last->base, NULL);
        last = p;
    }
    if (tty)
        fputc('\n', stdout);
    code = rpc_stream_finish(s, &st);
    if (code != RPC_OK || !last || !last->done) {
        if (code == RPC_OK)
            code = RPC_INTERNAL;
        cli_status_error(&st, code);
        rpc_status_clear(&st);
        if (last)
            protobuf_c_message_free_unpacked(&last->base, NULL);
        return 1;
    }
    rpc_status_clear(&st);
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_str(&j, "volume", last->volume);
        json_str(&j, "volume_id", last->volume_id);
        json_u64(&j, push ? "snapshots_sent" : "snapshots_received",
                 push ? last->snapshots_sent : last->snapshots_received);
        json_u64(&j, "bytes_changed", last->bytes_changed);
        json_u64(&j, "bytes_on_wire", last->bytes_on_wire);
        json_u64(&j, "resumed_bytes", last->resumed_bytes);
        struct buf b = {0};
        buf_printf(&b, "%.3f", last->seconds);
        json_obj_end(&j);
        /* seconds as a number: the writer has no double, splice it in. */
        j.b.len--;          /* drop the closing brace */
        buf_printf(&j.b, ", \"seconds\": %s}", (char *)b.data);
        buf_free(&b);
        json_print(&j, stdout);
    } else {
        _cleanup_free_ char *ch = fmt_size(last->bytes_changed), *w = fmt_size(last->bytes_on_wire);
        printf("%s %u snapshot(s) of %s: %s changed, %s on the wire, %.2fs\n",
               push ? "sent" : "received", push ? last->snapshots_sent : last->snapshots_received,
               last->volume, ch, w, last->seconds);
    }
    protobuf_c_message_free_unpacked(&last->base, NULL);
    return 0;
}

static int sync_pull(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, NULL, 'a' },
        { "snapshot", required_argument, NULL, 's' },
    };
    struct sync_opts o = {0};
    int i = cli_getopt(c, argc, argv, opts, ARRAY_SIZE(opts), sync_opt, &o, sync_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 2)
        return cli_usage("sync pull PEER VOLUME [--as NAME] [--snapshot SNAP]");
    Amber__V1__SyncPullRequest q = AMBER__V1__SYNC_PULL_REQUEST__INIT;
    q.peer = argv[i];
    q.volume = argv[i + 1];
    q.as_name = (char *)(o.as ? o.as : "");
    q.snapshot = (char *)(o.snapshot ? o.snapshot : "");
    return run_transfer(c, "/amber.v1.Sync/Pull", &q.base, false);
}

static int sync_push(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, NULL, 'a' },
        { "snapshot", required_argument, NULL, 's' },
        { "to", required_argument, NULL, 't' },
    };
    struct sync_opts o = {0};
    int i = cli_getopt(c, argc, argv, opts, ARRAY_SIZE(opts), sync_opt, &o, sync_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1 || !o.to)
        return cli_usage("sync push VOL --to PEER [--as NAME] [--snapshot SNAP]");
    Amber__V1__SyncPushRequest q = AMBER__V1__SYNC_PUSH_REQUEST__INIT;
    q.volume = argv[i];
    q.peer = (char *)o.to;
    q.as_name = (char *)(o.as ? o.as : "");
    q.snapshot = (char *)(o.snapshot ? o.snapshot : "");
    return run_transfer(c, "/amber.v1.Sync/Push", &q.base, true);
}

int cmd_sync(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "pull", sync_pull, "receive a volume's snapshots from a peer" },
        { "push", sync_push, "send a volume's snapshots to a peer" },
    };
    return cli_dispatch(c, "sync", cmds, ARRAY_SIZE(cmds), argc, argv, sync_help);
}

/* --- subscriptions ----------------------------------------------------------- */

static const char subscribe_help[] =
"Usage: amberctl subscribe PEER VOLUME [--as NAME] [--every DURATION]\n"
"       amberctl subscription list [--json]\n"
"       amberctl subscription remove PEER VOLUME\n"
"\n"
"A subscription keeps a local replica following PEER's VOLUME: pulled\n"
"every DURATION (default 1m), across restarts. `list` shows the lag: the\n"
"newest snapshot of the source not yet here. Removing it keeps the replica.\n";

struct sub_opts {
    const char *as;
    uint64_t every_ms;
};

static int sub_opt(int o, const char *arg, void *data)
{
    struct sub_opts *s = data;
    if (o == 'a') {
        s->as = arg;
        return 0;
    }
    if (o == 'e') {
        if (parse_duration_ms(arg, &s->every_ms) < 0 || s->every_ms < 1000)
            return cli_usage("--every: a duration of at least 1s, such as 30s or 5m"), -1;
        return 0;
    }
    return -1;
}

static void sub_json(struct json *j, const Amber__V1__Subscription *s)
{
    json_obj_begin(j, NULL);
    json_str(j, "peer", s->peer);
    json_str(j, "volume", s->volume);
    json_str(j, "local_name", s->local_name);
    json_str(j, "local_volume_id", s->local_volume_id);
    json_u64(j, "every_ms", s->every_ms);
    _cleanup_free_ char *t = fmt_time_ns(s->last_sync_ns);
    json_str(j, "last_sync", t);
    json_str(j, "last_error", s->last_error);
    json_str(j, "lag", s->lag);
    json_u64(j, "lag_snapshots", s->lag_snapshots);
    json_obj_end(j);
}

int cmd_subscribe(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "as", required_argument, NULL, 'a' },
        { "every", required_argument, NULL, 'e' },
    };
    struct sub_opts o = {0};
    int i = cli_getopt(c, argc, argv, opts, ARRAY_SIZE(opts), sub_opt, &o, subscribe_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 2)
        return cli_usage("subscribe PEER VOLUME [--as NAME] [--every DURATION]");
    Amber__V1__SubscribeRequest q = AMBER__V1__SUBSCRIBE_REQUEST__INIT;
    Amber__V1__Subscription *r;
    q.peer = argv[i];
    q.volume = argv[i + 1];
    q.as_name = (char *)(o.as ? o.as : "");
    q.every_ms = o.every_ms;
    if (cli_call(c, "/amber.v1.Sync/Subscribe", &q.base, &amber__v1__subscription__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        sub_json(&j, r);
        json_print(&j, stdout);
    } else {
        printf("subscribed: %s follows %s/%s every %llus\n", r->local_name, r->peer, r->volume,
               (unsigned long long)(r->every_ms / 1000));
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int sub_list(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, subscribe_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    Amber__V1__ListSubscriptionsRequest q = AMBER__V1__LIST_SUBSCRIPTIONS_REQUEST__INIT;
    Amber__V1__ListSubscriptionsResponse *r;
    q.lag = true;
    if (cli_call(c, "/amber.v1.Sync/ListSubscriptions", &q.base,
                 &amber__v1__list_subscriptions_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_arr_begin(&j, NULL);
        for (size_t k = 0; k < r->n_subscriptions; k++)
            sub_json(&j, r->subscriptions[k]);
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        struct table *t = table_new(6, "PEER", "VOLUME", "LOCAL", "EVERY", "LAST SYNC", "LAG");
        for (size_t k = 0; k < r->n_subscriptions; k++) {
            const Amber__V1__Subscription *s = r->subscriptions[k];
            _cleanup_free_ char *every = xasprintf("%llus", (unsigned long long)(s->every_ms / 1000));
            _cleanup_free_ char *last = fmt_time_ns(s->last_sync_ns);
            _cleanup_free_ char *lag = *s->lag ? xasprintf("%u (%s)", s->lag_snapshots, s->lag)
                                               : xstrdup(*s->last_error ? s->last_error : "-");
            table_row(t, s->peer, s->volume, s->local_name, every, *last ? last : "never", lag);
        }
        table_print(t, stdout);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int sub_remove(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, subscribe_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 2)
        return cli_usage("subscription remove PEER VOLUME");
    Amber__V1__SubscriptionRef q = AMBER__V1__SUBSCRIPTION_REF__INIT;
    Amber__V1__Empty *r;
    q.peer = argv[i];
    q.volume = argv[i + 1];
    if (cli_call(c, "/amber.v1.Sync/Unsubscribe", &q.base, &amber__v1__empty__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (c->json)
        printf("{}\n");
    return 0;
}

int cmd_subscription(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "list", sub_list, "subscriptions and their lag" },
        { "remove", sub_remove, "stop following (the replica stays)" },
    };
    return cli_dispatch(c, "subscription", cmds, ARRAY_SIZE(cmds), argc, argv, subscribe_help);
}
