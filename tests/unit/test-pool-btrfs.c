/* test-pool-btrfs.c: the pool on a btrfs image: volumes, snapshots,
 * generation diffs checked byte by byte, clone, revert, 1000 snapshots,
 * ENOSPC, the lock, freeze. See pool-test.h. */
#include "tests/unit/pool-test.h"

int main(void)
{
    t_setup("btrfs", 1024 * MiB);
    t_scenario("btrfs", 1000);
    return CHECK_DONE();
}
