/* pool-freeze.c: application-consistent snapshots with FIFREEZE/FITHAW.
 *
 * The filesystem a pod mounted from a volume's loop device is frozen
 * (dirty data flushed, new writes blocked) around the snapshot. A frozen
 * filesystem blocks its pod, so thawing must happen whatever goes wrong:
 * a watchdog thread thaws at the deadline even if the snapshot hangs, and
 * the caller learns it with -ETIMEDOUT. If the daemon dies while frozen,
 * pool_thaw_device (called at start for attached devices) undoes it. */
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <time.h>

#include "amber/util.h"
#include "snapd/pool/loop.h"
#include "snapd/pool/pool.h"

struct watchdog {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct timespec deadline;
    int fd;
    bool done;      /* FN returned */
    bool thawed;    /* someone thawed */
    bool fired;     /* the watchdog did */
};

static void *watchdog_main(void *arg)
{
    struct watchdog *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->done) {
        if (pthread_cond_timedwait(&w->cond, &w->lock, &w->deadline) == ETIMEDOUT)
            break;
    }
    if (!w->done && !w->thawed) {
        (void)ioctl(w->fd, FITHAW, 0);
        w->thawed = w->fired = true;
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

static int open_mount_of(const char *dev)
{
    _cleanup_free_ char *mp = NULL;
    int r = dev_find_mountpoint(dev, &mp);
    if (r < 0)
        return r;
    int fd = open(mp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int pool_freeze_run(const char *dev, uint64_t timeout_ms, int (*fn)(void *), void *userdata)
{
    _cleanup_close_ int fd = open_mount_of(dev);
    if (fd < 0)
        return fd;
    struct watchdog w = { .fd = fd };
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&w.lock, NULL);
    pthread_cond_init(&w.cond, &ca);
    pthread_condattr_destroy(&ca);
    clock_gettime(CLOCK_MONOTONIC, &w.deadline);
    w.deadline.tv_sec += (time_t)(timeout_ms / 1000);
    w.deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (w.deadline.tv_nsec >= 1000000000L) {
        w.deadline.tv_sec++;
        w.deadline.tv_nsec -= 1000000000L;
    }

    int r;
    if (ioctl(fd, FIFREEZE, 0) < 0) {
        r = -errno; /* EBUSY: already frozen, by someone else */
        goto out;
    }
    pthread_t t;
    if ((r = -pthread_create(&t, NULL, watchdog_main, &w)) < 0) {
        (void)ioctl(fd, FITHAW, 0);
        goto out;
    }
    r = fn(userdata);
    pthread_mutex_lock(&w.lock);
    w.done = true;
    if (!w.thawed) {
        if (ioctl(fd, FITHAW, 0) < 0 && r >= 0)
            r = -errno;
        w.thawed = true;
    }
    pthread_cond_signal(&w.cond);
    pthread_mutex_unlock(&w.lock);
    pthread_join(t, NULL);
    if (w.fired)
        r = -ETIMEDOUT;
out:
    pthread_cond_destroy(&w.cond);
    pthread_mutex_destroy(&w.lock);
    return r;
}

int pool_thaw_device(const char *dev)
{
    _cleanup_close_ int fd = open_mount_of(dev);
    if (fd < 0)
        return fd;
    if (ioctl(fd, FITHAW, 0) < 0 && errno != EINVAL)
        return -errno;
    return 0;
}
