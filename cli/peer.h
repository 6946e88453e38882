/* peer.h: amberctl's peer and sync command groups (cmd-peer.c,
 * cmd-sync.c). `volume` goes through cmd_volume_peer, which takes
 * publish/unpublish and hands everything else to cmd_volume. */
#ifndef AMBER_CLI_PEER_H
#define AMBER_CLI_PEER_H

#include "cli/cli.h"

int cmd_peer(struct cli *c, int argc, char **argv);
int cmd_volume_peer(struct cli *c, int argc, char **argv);
int cmd_sync(struct cli *c, int argc, char **argv);
int cmd_subscribe(struct cli *c, int argc, char **argv);
int cmd_subscription(struct cli *c, int argc, char **argv);

#endif
