/* replicas.c: the hidden replicas "c-<snapshot id>" a node keeps of the
 * snapshots it pulled from other nodes (jobs.c), which its new volumes are
 * clones of: not listed (ListVolumes skips them unless asked for all), and
 * collected when nothing needs them. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/cluster/cluster.h"

bool cluster_volume_hidden(const struct cat_volume *v)
{
    return v->replica_peer && strncmp(v->name, "c-", 2) == 0 && uuid_is_valid(v->name + 2);
}
