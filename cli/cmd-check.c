/* cmd-check.c: `amberctl check`: the daemon's self-check (catalog vs pool,
 * intents left, its memory and file descriptors). Exits 1 if it found a
 * problem, so scripts and the soak can use it as an assertion. */
#include <string.h>

#include "check.pb-c.h"
#include "cli/cli.h"

static const char check_help[] =
"Usage: amberctl check [--json]\n"
"\n"
"Asks amberd to compare its catalog with its pool: a row without its pool\n"
"object or the reverse, a row left in a transitional state with no intent\n"
"to finish it, work in progress left in the pool. Lists the intents still\n"
"recorded and the daemon's resident memory and open file descriptors.\n"
"Changes nothing. Exits 1 when it found a problem. Run it while no\n"
"operation is in flight for an exact answer.\n";

int cmd_check(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, check_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (i < argc)
        return cli_usage("check: unexpected argument \"%s\"", argv[i]);
    Amber__V1__SelfCheckRequest req = AMBER__V1__SELF_CHECK_REQUEST__INIT;
    Amber__V1__SelfCheckResponse *r;
    if (cli_call(c, "/amber.v1.Check/SelfCheck", &req.base, &amber__v1__self_check_response__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_arr_begin(&j, "problems");
        for (size_t k = 0; k < r->n_problems; k++)
            json_str(&j, NULL, r->problems[k]);
        json_arr_end(&j);
        json_arr_begin(&j, "intents");
        for (size_t k = 0; k < r->n_intents; k++)
            json_str(&j, NULL, r->intents[k]);
        json_arr_end(&j);
        json_u64(&j, "volumes", r->volumes);
        json_u64(&j, "snapshots", r->snapshots);
        json_u64(&j, "rss_bytes", r->rss_bytes);
        json_u64(&j, "open_fds", r->open_fds);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        printf("volumes %u, snapshots %u; amberd: %llu MiB resident, %u open files\n", r->volumes,
               r->snapshots, (unsigned long long)(r->rss_bytes >> 20), r->open_fds);
        for (size_t k = 0; k < r->n_intents; k++)
            printf("intent: %s\n", r->intents[k]);
        for (size_t k = 0; k < r->n_problems; k++)
            printf("PROBLEM: %s\n", r->problems[k]);
        if (!r->n_problems)
            printf("ok: the catalog and the pool agree\n");
    }
    int ret = r->n_problems ? 1 : 0;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return ret;
}
