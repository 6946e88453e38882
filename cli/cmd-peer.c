/* cmd-peer.c: amberctl peer add|list|remove, volume publish|unpublish. */
#include <getopt.h>
#include <string.h>

#include "amber.pb-c.h"
#include "sync.pb-c.h"
#include "cli/peer.h"

static const char peer_help[] =
"Usage: amberctl peer COMMAND ...\n"
"\n"
"  add NAME --address HOST:PORT --fingerprint sha256:HEX [--allow-push]\n"
"                 trust another amberd (its `amberctl info` fingerprint);\n"
"                 --allow-push lets it push replicas here\n"
"  list           peers, their pins and what is published to them\n"
"  remove NAME    forget a peer (its publications and subscriptions go too)\n";

struct add_opts {
    const char *address, *fingerprint;
    bool allow_push;
};

static int add_opt(int o, const char *arg, void *data)
{
    struct add_opts *a = data;
    switch (o) {
    case 'a': a->address = arg; return 0;
    case 'f': a->fingerprint = arg; return 0;
    case 'p': a->allow_push = true; return 0;
    }
    return -1;
}

static int peer_add(struct cli *c, int argc, char **argv)
{
    static const struct option opts[] = {
        { "address", required_argument, NULL, 'a' },
        { "fingerprint", required_argument, NULL, 'f' },
        { "allow-push", no_argument, NULL, 'p' },
    };
    struct add_opts a = {0};
    int i = cli_getopt(c, argc, argv, opts, ARRAY_SIZE(opts), add_opt, &a, peer_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1 || !a.address)
        return cli_usage("peer add NAME --address HOST:PORT --fingerprint FP [--allow-push]");
    Amber__V1__Peer q = AMBER__V1__PEER__INIT, *r;
    q.name = argv[i];
    q.address = (char *)a.address;
    q.fingerprint = (char *)(a.fingerprint ? a.fingerprint : "");
    q.allow_push = a.allow_push;
    if (cli_call(c, "/amber.v1.Sync/AddPeer", &q.base, &amber__v1__peer__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_str(&j, "name", r->name);
        json_str(&j, "address", r->address);
        json_str(&j, "fingerprint", r->fingerprint);
        json_bool(&j, "allow_push", r->allow_push);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else {
        printf("peer %s added\n", r->name);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int peer_list(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, peer_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    Amber__V1__ListPeersRequest q = AMBER__V1__LIST_PEERS_REQUEST__INIT;
    Amber__V1__ListPeersResponse *r;
    if (cli_call(c, "/amber.v1.Sync/ListPeers", &q.base, &amber__v1__list_peers_response__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    if (c->json) {
        struct json j = {0};
        json_arr_begin(&j, NULL);
        for (size_t k = 0; k < r->n_peers; k++) {
            const Amber__V1__Peer *p = r->peers[k];
            json_obj_begin(&j, NULL);
            json_str(&j, "name", p->name);
            json_str(&j, "address", p->address);
            json_str(&j, "fingerprint", p->fingerprint);
            json_bool(&j, "allow_push", p->allow_push);
            json_arr_begin(&j, "published");
            for (size_t n = 0; n < p->n_published; n++)
                json_str(&j, NULL, p->published[n]);
            json_arr_end(&j);
            json_obj_end(&j);
        }
        json_arr_end(&j);
        json_print(&j, stdout);
    } else {
        struct table *t = table_new(5, "NAME", "ADDRESS", "FINGERPRINT", "PUSH", "PUBLISHED");
        for (size_t k = 0; k < r->n_peers; k++) {
            const Amber__V1__Peer *p = r->peers[k];
            struct buf b = {0};
            for (size_t n = 0; n < p->n_published; n++)
                buf_printf(&b, "%s%s", n ? "," : "", p->published[n]);
            buf_append(&b, "", 1);
            table_row(t, p->name, p->address, *p->fingerprint ? p->fingerprint : "(CA)",
                      p->allow_push ? "yes" : "no", (char *)b.data);
            buf_free(&b);
        }
        table_print(t, stdout);
        table_free(t);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return 0;
}

static int peer_remove(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, peer_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("peer remove NAME");
    Amber__V1__PeerRef q = AMBER__V1__PEER_REF__INIT;
    Amber__V1__Empty *r;
    q.name = argv[i];
    if (cli_call(c, "/amber.v1.Sync/RemovePeer", &q.base, &amber__v1__empty__descriptor,
                 (ProtobufCMessage **)&r))
        return 1;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (c->json)
        printf("{}\n");
    return 0;
}

int cmd_peer(struct cli *c, int argc, char **argv)
{
    static const struct cmd cmds[] = {
        { "add", peer_add, "trust a peer" },
        { "list", peer_list, "list peers" },
        { "remove", peer_remove, "forget a peer" },
    };
    return cli_dispatch(c, "peer", cmds, ARRAY_SIZE(cmds), argc, argv, peer_help);
}

/* --- volume publish / unpublish -------------------------------------------- */

static const char publish_help[] =
"Usage: amberctl volume publish VOL --to PEER|'*'\n"
"       amberctl volume unpublish VOL --from PEER|'*'\n"
"\n"
"Let a peer (or every peer) pull VOL's snapshots, or stop it.\n";

static int peer_opt(int o, const char *arg, void *data)
{
    *(const char **)data = arg;
    return 0;
}

static int volume_publish(struct cli *c, int argc, char **argv, bool on)
{
    static const struct option to[] = { { "to", required_argument, NULL, 't' } };
    static const struct option from[] = { { "from", required_argument, NULL, 't' } };
    const char *peer = NULL;
    int i = cli_getopt(c, argc, argv, on ? to : from, 1, peer_opt, &peer, publish_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1 || !peer)
        return cli_usage(on ? "volume publish VOL --to PEER|'*'" : "volume unpublish VOL --from PEER|'*'");
    Amber__V1__PublishRequest q = AMBER__V1__PUBLISH_REQUEST__INIT;
    Amber__V1__Empty *r;
    q.volume = argv[i];
    q.peer = (char *)peer;
    if (cli_call(c, on ? "/amber.v1.Sync/Publish" : "/amber.v1.Sync/Unpublish", &q.base,
                 &amber__v1__empty__descriptor, (ProtobufCMessage **)&r))
        return 1;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (c->json)
        printf("{\"volume\": \"%s\", \"peer\": \"%s\", \"published\": %s}\n", argv[i], peer,
               on ? "true" : "false");
    else
        printf("volume %s %s %s\n", argv[i], on ? "published to" : "unpublished from", peer);
    return 0;
}

int cmd_volume_peer(struct cli *c, int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "publish") == 0)
        return volume_publish(c, argc - 1, argv + 1, true);
    if (argc >= 2 && strcmp(argv[1], "unpublish") == 0)
        return volume_publish(c, argc - 1, argv + 1, false);
    return cmd_volume(c, argc, argv);
}
