/* test-pool-xfs.c: the pool on an XFS (reflink) image: the same scenario
 * as btrfs (mapping diffs), plus the extent-count guard. See pool-test.h. */
#include "tests/unit/pool-test.h"

/* A snapshot of an image with more extents than the guard is refused. */
static void t_extent_guard(void)
{
    _cleanup_free_ char *mnt = xasprintf("%s/mnt", t_dir);
    pool_close(t_pool);
    t_pool = NULL;
    struct pool_open_opts opts = { .max_extents = 8 };
    REQUIRE_OK(pool_open(mnt, &opts, &t_pool));
    REQUIRE_OK(pool_vol_create(t_pool, "frag", 64 * MiB));
    _cleanup_free_ char *dev = NULL;
    int fd = t_attach_open("frag", NULL, &dev);
    for (uint64_t off = 0; off < 32 * MiB; off += 2 * MiB)
        t_write(fd, off, BLK, 1); /* 16 separate extents */
    REQUIRE(fsync(fd) == 0);
    CHECK_EQ(pool_snap_create(t_pool, "frag", "s", NULL), -E2BIG);
    char **list = NULL;
    REQUIRE_OK(pool_list(t_pool, "frag", &list));
    CHECK_EQ(t_count(list), 0);
    pool_strv_free(list);
    close(fd);
    t_detach("frag", NULL, dev);
    REQUIRE_OK(pool_vol_delete(t_pool, "frag"));
}

int main(void)
{
    t_setup("xfs", 1024 * MiB);
    t_scenario("xfs", 1000);
    t_extent_guard();
    return CHECK_DONE();
}
