/* cmd-store.c: amberctl store status [--wait]: the snapshot store's
 * counters (snapshots resident as subvolumes, stored, waiting), and a way
 * to wait until its mover has done what it can (tests, scripts). */
#include <getopt.h>
#include <string.h>

#include "amber.pb-c.h"
#include "cli/cli.h"

static const char store_help[] =
"Usage: amberctl store status [--wait [--settle]] [--json]\n"
"\n"
"The pool's local snapshot store: how many snapshots are resident (btrfs\n"
"subvolumes), how many are stored, how many wait to be stored (and of them\n"
"how many wait for room), and what the mover did since the daemon started.\n"
"--wait first waits until the mover has nothing left it can do; --settle\n"
"also until the defragmenter is done (every volume whose snapshots stopped\n"
"swept once: the live images as fast as before).\n";

struct stopts {
    bool wait, settle;
};

static int on_opt(int o, const char *arg, void *data)
{
    struct stopts *s = data;
    if (o == 'w')
        s->wait = true;
    if (o == 's')
        s->wait = s->settle = true;
    return 0;
}

static int store_status_cmd(struct cli *c, int argc, char **argv)
{
    static const struct option extra[] = { { "wait", no_argument, NULL, 'w' },
                                            { "settle", no_argument, NULL, 's' } };
    struct stopts so = {0};
    int i = cli_getopt(c, argc, argv, extra, ARRAY_SIZE(extra), on_opt, &so, store_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (i < argc)
        return cli_usage("store status: unexpected argument \"%s\"", argv[i]);
    Amber__V1__StoreStatusRequest req = AMBER__V1__STORE_STATUS_REQUEST__INIT;
    req.wait = so.wait;
    req.settle = so.settle;
    req.timeout_ms = c->timeout_ms > 1000 ? c->timeout_ms - 1000 : c->timeout_ms;
    Amber__V1__StoreStatusResponse *r;
    if (cli_call(c, "/amber.v1.Amber/StoreStatus", &req.base,
                 &amber__v1__store_status_response__descriptor, (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_bool(&j, "enabled", r->enabled);
        json_u64(&j, "resident_keep", r->resident_keep);
        json_u64(&j, "resident", r->resident);
        json_u64(&j, "stored", r->stored);
        json_u64(&j, "backlog", r->backlog);
        json_u64(&j, "blocked", r->blocked);
        json_u64(&j, "moved", r->moved);
        json_u64(&j, "dropped", r->dropped);
        json_u64(&j, "hydrated", r->hydrated);
        json_u64(&j, "defrag_steps", r->defrag_steps);
        json_u64(&j, "defrag_bytes", r->defrag_bytes);
        json_bool(&j, "idle", r->idle);
        json_u64(&j, "gate_pauses", r->gate_pauses);
        json_u64(&j, "defrag_sweeps", r->defrag_sweeps);
        json_bool(&j, "settled", r->settled);
        json_u64(&j, "hydrate_bytes_written", r->hydrate_bytes_written);
        json_u64(&j, "hydrate_union_bytes", r->hydrate_union_bytes);
        json_u64(&j, "hydrate_full", r->hydrate_full);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        printf("mover:        %s (keeps the %u newest snapshots of a volume resident)\n",
               r->enabled ? (r->idle ? "idle" : "working") : "off", r->resident_keep);
        printf("resident:     %llu snapshots\n", (unsigned long long)r->resident);
        printf("stored:       %llu snapshots\n", (unsigned long long)r->stored);
        printf("to store:     %llu (%llu waiting for room)\n", (unsigned long long)r->backlog,
               (unsigned long long)r->blocked);
        printf("since start:  %llu moved, %llu dropped, %llu brought back, %llu defragment steps\n",
               (unsigned long long)r->moved, (unsigned long long)r->dropped,
               (unsigned long long)r->hydrated, (unsigned long long)r->defrag_steps);
        printf("              %llu full sweeps, %llu pauses for a snapshot create%s\n",
               (unsigned long long)r->defrag_sweeps, (unsigned long long)r->gate_pauses,
               r->settled ? " (settled)" : "");
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

int cmd_store(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "status", store_status_cmd, "the snapshot store's state" },
    };
    return cli_dispatch(c, "store", cmds, ARRAY_SIZE(cmds), argc, argv, store_help);
}
