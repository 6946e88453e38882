/* cluster.h: amberctl's cluster command group (cmd-cluster.c). `volume`
 * goes through cmd_volume_cluster (show: a volume still being copied shows
 * its job), then cmd_volume_peer; `snapshot` through cmd_snapshot_cluster
 * (archive, archive-status, and an archive line in show). */
#ifndef AMBER_CLI_CLUSTER_H
#define AMBER_CLI_CLUSTER_H

#include "cli/cli.h"

int cmd_cluster(struct cli *c, int argc, char **argv);
int cmd_volume_cluster(struct cli *c, int argc, char **argv);
int cmd_snapshot_cluster(struct cli *c, int argc, char **argv);

#endif
