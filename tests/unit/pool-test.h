/* pool-test.h: the pool's behaviour tests, shared by test-pool-btrfs.c and
 * test-pool-xfs.c (one backend each).
 *
 * The test makes its own image in a mktemp directory, loop-attaches and
 * mounts it through pool_image_setup, and an atexit handler removes
 * exactly that mount and those loop devices (by device path) and the
 * directory, also when a REQUIRE fails. Data goes through the volume's
 * loop device with O_DIRECT at known offsets; every diff is checked
 * against a byte comparison of the two images: any changed 4 KiB block
 * not reported is a failure (false negative), reported unchanged bytes
 * are printed (false positives). */
#ifndef AMBER_TEST_POOL_H
#define AMBER_TEST_POOL_H

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>

#include "amber/util.h"
#include "snapd/pool/loop.h"
#include "snapd/pool/pool.h"
#include "tests/unit/check.h"

#define MiB (1ULL << 20)
#define BLK 4096u
#define REQUIRE(cond) do { if (!(cond)) { \
    fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond); exit(1); } } while (0)
#define REQUIRE_OK(expr) do { int _r = (expr); if (_r < 0) { \
    fprintf(stderr, "%s:%d: %s = %s\n", __FILE__, __LINE__, #expr, errno_name(-_r)); exit(1); } } while (0)

static char t_dir[] = "/tmp/amber-pool-test-XXXXXX";
static struct pool_image *t_img;
static struct pool *t_pool;
static char *t_devs[16];   /* volume loop devices we attached */

static void t_forget_dev(const char *dev)
{
    for (size_t i = 0; i < ARRAY_SIZE(t_devs); i++)
        if (t_devs[i] && strcmp(t_devs[i], dev) == 0) {
            free(t_devs[i]);
            t_devs[i] = NULL;
        }
}

static void t_remember_dev(const char *dev)
{
    t_forget_dev(dev);
    for (size_t i = 0; i < ARRAY_SIZE(t_devs); i++)
        if (!t_devs[i]) {
            t_devs[i] = xstrdup(dev);
            return;
        }
}

static void t_cleanup(void)
{
    for (size_t i = 0; i < ARRAY_SIZE(t_devs); i++)
        if (t_devs[i]) {
            int r = loop_detach(t_devs[i]);
            if (r < 0 && r != -ENXIO)
                fprintf(stderr, "cleanup: detach %s: %s\n", t_devs[i], errno_name(-r));
        }
    pool_close(t_pool);
    t_pool = NULL;
    if (t_img) {
        const char *dev = pool_image_device(t_img);
        fprintf(stderr, "cleanup: unmount and detach %s\n", dev);
        int r = pool_image_teardown(t_img);
        if (r < 0)
            fprintf(stderr, "cleanup: teardown: %s\n", errno_name(-r));
        t_img = NULL;
    }
    _cleanup_free_ char *img = xasprintf("%s/pool.img", t_dir);
    _cleanup_free_ char *mnt = xasprintf("%s/mnt", t_dir);
    unlink(img);
    rmdir(mnt);
    rmdir(t_dir);
}

static void t_signal(int sig) { (void)sig; exit(1); }

static void t_setup(const char *fs, uint64_t size)
{
    if (geteuid() != 0)
        SKIP("needs root (loop devices, mount)");
    if (access("/dev/loop-control", F_OK) < 0)
        SKIP("no /dev/loop-control");
    _cleanup_free_ char *fss = NULL;
    if (read_file_all("/proc/filesystems", 1 << 16, &fss, NULL) < 0 || !strstr(fss, fs))
        SKIP("kernel without %s", fs);
    REQUIRE(mkdtemp(t_dir));
    atexit(t_cleanup);
    signal(SIGINT, t_signal);
    signal(SIGTERM, t_signal);
    _cleanup_free_ char *img = xasprintf("%s/pool.img", t_dir);
    _cleanup_free_ char *mnt = xasprintf("%s/mnt", t_dir);
    int r = pool_image_setup(img, size, mnt, fs, &t_img);
    if (r == -ENOENT)
        SKIP("mkfs.%s not found", fs);
    REQUIRE_OK(r);
    fprintf(stderr, "pool image %s on %s at %s\n", img, pool_image_device(t_img), mnt);
}

/* Deterministic non-zero content for (offset, round). */
static void t_fill(uint8_t *buf, size_t len, uint64_t off, uint32_t round)
{
    uint64_t x = (off + 1) * 0x9E3779B97F4A7C15ULL ^ ((uint64_t)round << 40);
    for (size_t i = 0; i < len; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(buf + i, &x, MIN((size_t)8, len - i));
    }
}

static void t_write(int fd, uint64_t off, size_t len, uint32_t round)
{
    void *buf;
    REQUIRE(posix_memalign(&buf, BLK, len) == 0);
    t_fill(buf, len, off, round);
    REQUIRE(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
    free(buf);
}

static uint64_t t_rand(uint64_t *s)
{
    *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17;
    return *s;
}

/* N random block-aligned writes of 4 KiB..256 KiB inside [0, limit). */
static void t_random_writes(int fd, int n, uint64_t limit, uint32_t round, uint64_t *seed)
{
    for (int i = 0; i < n; i++) {
        uint64_t len = (1 + t_rand(seed) % 64) * BLK;
        uint64_t off = (t_rand(seed) % ((limit - len) / BLK)) * BLK;
        t_write(fd, off, len, round);
    }
}

static int t_collect(uint64_t off, uint64_t len, void *ud)
{
    range_add(ud, off, len);
    return 0;
}

/* Read up to LEN bytes of FD at OFF, zeros past EOF. */
static void t_pread_z(int fd, uint8_t *buf, size_t len, uint64_t off)
{
    memset(buf, 0, len);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)(off + got));
        REQUIRE(n >= 0);
        if (n == 0)
            break;
        got += (size_t)n;
    }
}

static bool t_covered(const struct range_list *l, size_t *i, uint64_t off, uint64_t len)
{
    while (*i < l->n && l->v[*i].off + l->v[*i].len <= off)
        (*i)++;
    return *i < l->n && l->v[*i].off <= off && l->v[*i].off + l->v[*i].len >= off + len;
}

/* Diff FROM..TO (TO NULL: live) and check it against the bytes. Returns
 * the number of changed bytes. */
static uint64_t t_check_diff(const char *vol, const char *from, const char *to, const char *what)
{
    struct range_list l = {0};
    struct pool_diff_stats st = {0};
    uint64_t t0 = now_mono_ns();
    REQUIRE_OK(pool_diff(t_pool, vol, from, to, t_collect, &l, &st));
    uint64_t dt = now_mono_ns() - t0;
    _cleanup_free_ char *pa = pool_disk_path(t_pool, vol, from);
    _cleanup_free_ char *pb = pool_disk_path(t_pool, vol, to);
    _cleanup_close_ int a = open(pa, O_RDONLY | O_CLOEXEC);
    _cleanup_close_ int b = open(pb, O_RDONLY | O_CLOEXEC);
    REQUIRE(a >= 0 && b >= 0);
    struct stat sa, sb;
    REQUIRE(fstat(a, &sa) == 0 && fstat(b, &sb) == 0);
    uint64_t size = (uint64_t)MAX(sa.st_size, sb.st_size);
    const size_t chunk = 4 * MiB;
    uint8_t *ba = xmalloc(chunk), *bb = xmalloc(chunk);
    uint64_t changed = 0, missed = 0, reported_changed = 0;
    size_t idx = 0;
    for (uint64_t off = 0; off < size; off += chunk) {
        size_t n = (size_t)MIN((uint64_t)chunk, size - off);
        t_pread_z(a, ba, n, off);
        t_pread_z(b, bb, n, off);
        for (size_t k = 0; k < n; k += BLK) {
            size_t bl = MIN((size_t)BLK, n - k);
            if (memcmp(ba + k, bb + k, bl) == 0)
                continue;
            changed += bl;
            if (t_covered(&l, &idx, off + k, bl)) {
                reported_changed += bl;
            } else {
                if (missed == 0)
                    fprintf(stderr, "  FALSE NEGATIVE at %llu\n", (unsigned long long)(off + k));
                missed += bl;
            }
        }
    }
    free(ba);
    free(bb);
    fprintf(stderr, "diff %-28s method=%-10s extents=%llu reported=%llu changed=%llu "
            "false_neg=%llu false_pos=%llu (%.1f%%) in %.2f ms\n",
            what, st.method, (unsigned long long)st.extents, (unsigned long long)st.bytes,
            (unsigned long long)changed, (unsigned long long)missed,
            (unsigned long long)(st.bytes - reported_changed),
            st.bytes ? 100.0 * (double)(st.bytes - reported_changed) / (double)st.bytes : 0.0,
            (double)dt / 1e6);
    CHECK_EQ(missed, 0);
    range_list_free(&l);
    return changed;
}

static bool t_files_equal(const char *pa, const char *pb)
{
    _cleanup_close_ int a = open(pa, O_RDONLY | O_CLOEXEC);
    _cleanup_close_ int b = open(pb, O_RDONLY | O_CLOEXEC);
    REQUIRE(a >= 0 && b >= 0);
    struct stat sa, sb;
    REQUIRE(fstat(a, &sa) == 0 && fstat(b, &sb) == 0);
    if (sa.st_size != sb.st_size)
        return false;
    const size_t chunk = 4 * MiB;
    _cleanup_free_ uint8_t *ba = xmalloc(chunk);
    _cleanup_free_ uint8_t *bb = xmalloc(chunk);
    for (uint64_t off = 0; off < (uint64_t)sa.st_size; off += chunk) {
        size_t n = (size_t)MIN((uint64_t)chunk, (uint64_t)sa.st_size - off);
        t_pread_z(a, ba, n, off);
        t_pread_z(b, bb, n, off);
        if (memcmp(ba, bb, n) != 0)
            return false;
    }
    return true;
}

static size_t t_count(char **v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* Entries of DIR other than . and .. (to see leftovers, dot-names too). */
static size_t t_dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    size_t n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

static int t_attach_open(const char *vol, const char *snap, char **ret_dev)
{
    REQUIRE_OK(pool_attach(t_pool, vol, snap, ret_dev));
    t_remember_dev(*ret_dev);
    int fd = open(*ret_dev, (snap ? O_RDONLY : O_RDWR) | O_DIRECT | O_CLOEXEC);
    REQUIRE(fd >= 0);
    return fd;
}

static void t_detach(const char *vol, const char *snap, const char *dev)
{
    REQUIRE_OK(pool_detach(t_pool, vol, snap));
    t_forget_dev(dev);
}

static int t_noop_fn(void *ud) { (void)ud; return 7; }

/* Writes a file on the frozen filesystem: blocks until it is thawed, so it
 * returns only after the watchdog fired (no race with a sleep). */
static int t_write_frozen_fn(void *ud)
{
    int fd = open(ud, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int r = write(fd, "x", 1) == 1 ? 0 : -errno;
    close(fd);
    unlink(ud);
    return r;
}

/* The scenario every backend must pass. NSNAPS: how many snapshots of one
 * volume to make and delete. */
static void t_scenario(const char *fs, unsigned nsnaps)
{
    const uint64_t vsize = 256 * MiB;
    _cleanup_free_ char *mnt = xasprintf("%s/mnt", t_dir);
    struct pool_open_opts opts = { .backend = fs };
    REQUIRE_OK(pool_open(mnt, &opts, &t_pool));
    CHECK_STR(pool_backend_name(t_pool), fs);

    /* A second opener is refused while the first holds the pool. */
    struct pool *p2 = NULL;
    CHECK_EQ(pool_open(mnt, NULL, &p2), -EBUSY);
    pool_close(p2);
    _cleanup_free_ char *meta = xasprintf("%s/.amber/pool.json", mnt);
    _cleanup_free_ char *json = NULL;
    REQUIRE_OK(read_file_all(meta, 4096, &json, NULL));
    CHECK(strstr(json, fs) != NULL);

    /* Bad input and a pool without room: an error and nothing left. */
    _cleanup_free_ char *vols = xasprintf("%s/vols", mnt);
    CHECK_EQ(pool_vol_create(t_pool, "huge", 100ULL << 30), -ENOSPC);
    CHECK_EQ(pool_vol_create(t_pool, "odd", 4096 * 3 + 1), -EINVAL);
    CHECK_EQ(pool_vol_create(t_pool, "zero", 0), -EINVAL);
    CHECK_EQ(pool_vol_create(t_pool, "../x", MiB), -EINVAL);
    CHECK_EQ(pool_vol_create(t_pool, "a/b", MiB), -EINVAL);
    CHECK_EQ(t_dir_entries(vols), 0);

    REQUIRE_OK(pool_vol_create(t_pool, "v1", vsize));
    CHECK_EQ(pool_vol_create(t_pool, "v1", vsize), -EEXIST);
    char **list = NULL;
    REQUIRE_OK(pool_list(t_pool, NULL, &list));
    CHECK_EQ(t_count(list), 1);
    CHECK_STR(list[0], "v1");
    pool_strv_free(list);
    _cleanup_free_ char *disk = pool_disk_path(t_pool, "v1", NULL);
    if (strcmp(fs, "btrfs") == 0) {
        _cleanup_close_ int fd = open(disk, O_RDONLY | O_CLOEXEC);
        unsigned int flags = 0;
        REQUIRE(fd >= 0 && ioctl(fd, FS_IOC_GETFLAGS, &flags) == 0);
        CHECK(flags & FS_NOCOW_FL);
    }

    /* Attach is idempotent and finds the device again (as after a restart). */
    _cleanup_free_ char *dev = NULL, *dev2 = NULL;
    _cleanup_close_ int fd = t_attach_open("v1", NULL, &dev);
    REQUIRE_OK(pool_attach(t_pool, "v1", NULL, &dev2));
    CHECK_STR(dev2, dev);
    struct pool_file_info fi = {0};
    REQUIRE_OK(pool_stat(t_pool, "v1", NULL, &fi));
    CHECK_STR(fi.device, dev);
    CHECK_EQ(fi.size, vsize);
    free(fi.device);
    /* The pool's own device is mounted: detach refuses. */
    CHECK_EQ(loop_detach(pool_image_device(t_img)), -EBUSY);

    uint64_t seed = 0x1234567;
    t_write(fd, 0, MiB, 1);
    t_random_writes(fd, 200, vsize, 1, &seed);
    REQUIRE(fsync(fd) == 0);
    uint64_t g1 = 0, g2 = 0, g3 = 0;
    REQUIRE_OK(pool_snap_create(t_pool, "v1", "s1", &g1));
    CHECK_EQ(pool_snap_create(t_pool, "v1", "s1", NULL), -EEXIST);
    CHECK_EQ(pool_snap_create(t_pool, "nope", "s1", NULL), -ENOENT);
    fprintf(stderr, "snapshot s1 generation %llu\n", (unsigned long long)g1);

    /* Changes: rewrites, new blocks, a discard (punched hole) of data,
     * zeroes written over data, one block rewritten with its same bytes. */
    t_random_writes(fd, 100, vsize, 2, &seed);
    uint64_t range[2] = { 64 * MiB, 2 * MiB };
    t_write(fd, range[0], (size_t)range[1], 1);  /* make sure there is data */
    REQUIRE(fsync(fd) == 0);
    REQUIRE_OK(pool_snap_create(t_pool, "v1", "s1b", NULL));
    CHECK_EQ(ioctl(fd, BLKDISCARD, range), 0);
    uint64_t zr[2] = { 8 * MiB, 256 * 1024 };
    t_write(fd, zr[0], (size_t)zr[1], 1);
    REQUIRE(fsync(fd) == 0);
    REQUIRE_OK(pool_snap_create(t_pool, "v1", "s1c", NULL));
    CHECK_EQ(ioctl(fd, BLKZEROOUT, zr), 0);
    t_write(fd, 0, BLK, 1); /* same bytes as before s1 */
    REQUIRE(fsync(fd) == 0);

    t_check_diff("v1", "s1", NULL, "s1..live");
    t_check_diff("v1", "s1b", NULL, "s1b..live (discard)");
    t_check_diff("v1", "s1c", NULL, "s1c..live (zeroout)");
    REQUIRE_OK(pool_snap_create(t_pool, "v1", "s2", &g2));
    CHECK(g2 > g1 || strcmp(fs, "btrfs") != 0);
    t_check_diff("v1", "s1", "s2", "s1..s2");
    t_check_diff("v1", "s2", "s1", "s2..s1 (reversed)");
    uint64_t same = t_check_diff("v1", "s2", NULL, "s2..live (no writes)");
    CHECK_EQ(same, 0);

    /* Grow while attached; the device learns the size; write past the old end. */
    REQUIRE_OK(pool_vol_resize(t_pool, "v1", vsize + 128 * MiB));
    CHECK_EQ(pool_vol_resize(t_pool, "v1", vsize), -EINVAL);
    uint64_t devsize = 0;
    REQUIRE(ioctl(fd, BLKGETSIZE64, &devsize) == 0);
    CHECK_EQ(devsize, vsize + 128 * MiB);
    t_write(fd, vsize + 32 * MiB, 64 * 1024, 3);
    t_random_writes(fd, 20, vsize, 3, &seed);
    REQUIRE(fsync(fd) == 0);
    REQUIRE_OK(pool_snap_create(t_pool, "v1", "s3", &g3));
    t_check_diff("v1", "s2", "s3", "s2..s3 (grown)");
    t_check_diff("v1", "s1", "s3", "s1..s3");

    /* Allocated extents cover every non-zero block of s1. */
    {
        struct range_list al = {0};
        REQUIRE_OK(pool_allocated(t_pool, "v1", "s1", t_collect, &al));
        _cleanup_free_ char *p1 = pool_disk_path(t_pool, "v1", "s1");
        _cleanup_close_ int f1 = open(p1, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *b = xmalloc(BLK);
        static const uint8_t zero[BLK];
        uint64_t nz = 0, outside = 0, alloc = 0;
        size_t idx = 0;
        for (size_t i = 0; i < al.n; i++)
            alloc += al.v[i].len;
        for (uint64_t off = 0; off < vsize; off += BLK) {
            t_pread_z(f1, b, BLK, off);
            if (memcmp(b, zero, BLK) == 0)
                continue;
            nz += BLK;
            if (!t_covered(&al, &idx, off, BLK))
                outside += BLK;
        }
        fprintf(stderr, "allocated s1: %zu extents, %llu bytes, non-zero %llu, outside %llu\n",
                al.n, (unsigned long long)alloc, (unsigned long long)nz, (unsigned long long)outside);
        CHECK_EQ(outside, 0);
        range_list_free(&al);
    }

    /* Clone reads back the snapshot; writes to it touch neither side. */
    REQUIRE_OK(pool_vol_clone(t_pool, "v1", "s1", "c1"));
    CHECK_EQ(pool_vol_clone(t_pool, "v1", "s1", "c1"), -EEXIST);
    _cleanup_free_ char *ps1 = pool_disk_path(t_pool, "v1", "s1");
    _cleanup_free_ char *pc1 = pool_disk_path(t_pool, "c1", NULL);
    CHECK(t_files_equal(ps1, pc1));
    _cleanup_free_ uint8_t *s1head = xmalloc(MiB);
    {
        _cleanup_close_ int f1 = open(ps1, O_RDONLY | O_CLOEXEC);
        t_pread_z(f1, s1head, MiB, 0);
    }
    {
        _cleanup_free_ char *cdev = NULL;
        _cleanup_close_ int cfd = t_attach_open("c1", NULL, &cdev);
        t_write(cfd, 0, MiB, 9);
        REQUIRE(fsync(cfd) == 0);
        close(TAKE_FD(cfd));
        t_detach("c1", NULL, cdev);
    }
    CHECK(!t_files_equal(ps1, pc1));
    {
        _cleanup_close_ int f1 = open(ps1, O_RDONLY | O_CLOEXEC);
        _cleanup_free_ uint8_t *got = xmalloc(MiB);
        t_pread_z(f1, got, MiB, 0);
        CHECK(memcmp(s1head, got, MiB) == 0); /* the clone's write left s1 alone */
    }

    /* A snapshot attaches read-only. */
    {
        _cleanup_free_ char *sdev = NULL;
        _cleanup_close_ int sfd = t_attach_open("v1", "s1", &sdev);
        void *got;
        REQUIRE(posix_memalign(&got, BLK, BLK) == 0);
        CHECK(pread(sfd, got, BLK, 0) == BLK && memcmp(got, s1head, BLK) == 0);
        CHECK(pwrite(sfd, got, BLK, 0) < 0);
        free(got);
        CHECK_EQ(pool_snap_delete(t_pool, "v1", "s1"), -EBUSY);
        close(TAKE_FD(sfd));
        t_detach("v1", "s1", sdev);
    }

    /* Revert: refused while attached, then the volume reads as s1. */
    CHECK_EQ(pool_vol_revert(t_pool, "v1", "s1"), -EBUSY);
    CHECK_EQ(pool_vol_delete(t_pool, "v1"), -EBUSY);
    close(TAKE_FD(fd));
    t_detach("v1", NULL, dev);
    REQUIRE_OK(pool_vol_revert(t_pool, "v1", "s1"));
    CHECK(t_files_equal(ps1, disk));
    CHECK_EQ(t_dir_entries(vols), 2); /* v1 c1: no leftover */
    t_check_diff("v1", "s2", NULL, "s2..live (after revert)");
    t_check_diff("v1", "s1", NULL, "s1..live (after revert)");

    /* Many snapshots of one volume. */
    {
        free(TAKE_PTR(dev));
        fd = t_attach_open("v1", NULL, &dev);
        uint64_t worst = 0, total = 0, t0;
        char name[32];
        for (unsigned i = 0; i < nsnaps; i++) {
            if (i % 100 == 0) { /* a little change now and then */
                t_write(fd, (uint64_t)i * MiB / 10 * BLK % vsize / BLK * BLK, BLK, 100 + i);
                REQUIRE(fsync(fd) == 0);
            }
            snprintf(name, sizeof name, "b%04u", i);
            t0 = now_mono_ns();
            REQUIRE_OK(pool_snap_create(t_pool, "v1", name, NULL));
            uint64_t dt = now_mono_ns() - t0;
            total += dt;
            worst = MAX(worst, dt);
        }
        fprintf(stderr, "%u snapshots: avg %.2f ms, max %.2f ms\n", nsnaps,
                (double)total / nsnaps / 1e6, (double)worst / 1e6);
        REQUIRE_OK(pool_list(t_pool, "v1", &list));
        CHECK_EQ(t_count(list), nsnaps + 5);
        pool_strv_free(list);
        t0 = now_mono_ns();
        for (unsigned i = 0; i < nsnaps; i++) {
            snprintf(name, sizeof name, "b%04u", i);
            REQUIRE_OK(pool_snap_delete(t_pool, "v1", name));
        }
        fprintf(stderr, "%u snapshot deletions: %.2f s\n", nsnaps,
                (double)(now_mono_ns() - t0) / 1e9);
        REQUIRE_OK(pool_list(t_pool, "v1", &list));
        CHECK_EQ(t_count(list), 5);
        pool_strv_free(list);
        close(TAKE_FD(fd));
        t_detach("v1", NULL, dev);
    }

    /* Freeze always thaws: on return, and at the deadline. The pool's own
     * filesystem stands in for a pod's. */
    CHECK_EQ(pool_freeze_run(pool_image_device(t_img), 5000, t_noop_fn, NULL), 7);
    /* The work waits for the thaw (a write to the frozen filesystem), so
     * the deadline wins on any machine. */
    _cleanup_free_ char *frozen_file = xasprintf("%s/frozen-write", mnt);
    CHECK_EQ(pool_freeze_run(pool_image_device(t_img), 100, t_write_frozen_fn, frozen_file),
             -ETIMEDOUT);
    REQUIRE_OK(pool_snap_create(t_pool, "v1", "after-freeze", NULL)); /* not frozen */
    CHECK_EQ(pool_thaw_device(pool_image_device(t_img)), 0);

    /* Work a crash left half done is swept at open; the lock is released. */
    pool_close(t_pool);
    t_pool = NULL;
    _cleanup_free_ char *junk = xasprintf("%s/.new-zz", vols);
    REQUIRE(mkdir(junk, 0700) == 0);
    REQUIRE_OK(pool_open(mnt, NULL, &t_pool));
    CHECK(access(junk, F_OK) < 0);

    REQUIRE_OK(pool_vol_delete(t_pool, "c1"));
    CHECK_EQ(pool_vol_delete(t_pool, "c1"), -ENOENT);
    REQUIRE_OK(pool_list(t_pool, NULL, &list));
    CHECK_EQ(t_count(list), 1);
    pool_strv_free(list);
    REQUIRE_OK(pool_list_snap_owners(t_pool, &list));
    CHECK_EQ(t_count(list), 1);
    pool_strv_free(list);
}

#endif
