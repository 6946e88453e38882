/* ballast.c: space kept in reserve so a full pool can still be emptied.
 *
 * Volumes are thin: their writers can fill the pool's filesystem to the
 * last block, and then even deleting needs a few blocks (a catalog
 * transaction, btrfs metadata). The daemon keeps a 64 MiB ballast file,
 * POOL/.amber/ballast, allocated with fallocate; a delete that finds the
 * pool (nearly) full truncates it first, so the delete can proceed, and
 * the ballast is made again once there is room. */
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/daemon.h"

#define BALLAST_BYTES (64ULL << 20)

static char *ballast_path(struct amberd *d)
{
    return xasprintf("%s/.amber/ballast", pool_dir(d->pool));
}

void ballast_ensure(struct amberd *d)
{
    _cleanup_free_ char *p = ballast_path(d);
    struct stat st;
    if (stat(p, &st) == 0 && (uint64_t)st.st_blocks * 512 >= BALLAST_BYTES)
        return;
    struct pool_space sp;
    if (pool_get_space(d->pool, &sp) < 0 || sp.free < 4 * BALLAST_BYTES)
        return;    /* not now: it would eat the room a user needs */
    _cleanup_close_ int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || fallocate(fd, 0, 0, (off_t)BALLAST_BYTES) < 0 || fsync(fd) < 0) {
        log_warn_errno(-errno, "pool", "cannot allocate the ballast %s", p);
        return;
    }
    log_debug("pool", "ballast of %llu bytes at %s", (unsigned long long)BALLAST_BYTES, p);
}

void ballast_make_room(struct amberd *d)
{
    struct pool_space sp;
    if (pool_get_space(d->pool, &sp) == 0 && sp.free >= 2 * BALLAST_BYTES)
        return;
    _cleanup_free_ char *p = ballast_path(d);
    struct stat st;
    if (stat(p, &st) < 0 || st.st_blocks == 0)
        return;
    if (truncate(p, 0) == 0)
        log_warn("pool", "the pool is full: released the %llu-byte ballast so deletes can proceed",
                 (unsigned long long)BALLAST_BYTES);
}
