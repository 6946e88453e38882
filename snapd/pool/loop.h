/* loop.h: loop devices for the pool (snapd-internal).
 *
 * A volume's image file reaches its pod through a loop device. These
 * helpers attach a file (LOOP_CTL_GET_FREE + LOOP_CONFIGURE, direct I/O,
 * no autoclear), find the device already backing a file (so attach is
 * idempotent and survives a daemon restart), detach by device path, tell a
 * device its file grew, and find where a device is mounted. Devices are
 * named by path ("/dev/loop3"); callers own the returned strings. */
#ifndef AMBER_SNAPD_LOOP_H
#define AMBER_SNAPD_LOOP_H

#include <stdbool.h>
#include <stdint.h>

enum {
    LOOP_ATTACH_READ_ONLY = 1 << 0,
    LOOP_ATTACH_DIRECT_IO = 1 << 1,
};

/* Attach BACKING (a regular file) to a free loop device, or return the
 * device that already backs it. FLAGS: LOOP_ATTACH_*. With DIRECT_IO the
 * device uses 4096-byte logical blocks, so O_DIRECT works end to end.
 * LABEL (may be NULL) is stored as the device's lo_file_name, a hint for
 * humans (losetup -l). *ret_dev gets a malloc'd device path.
 * *ret_dio (may be NULL) tells whether the kernel really uses direct I/O
 * (it silently falls back to buffered I/O when alignment forbids it).
 * Returns 0, or -EROFS when the existing device's read-only state
 * differs from FLAGS, or another negative errno. */
int loop_attach(const char *backing, unsigned flags, const char *label,
                char **ret_dev, bool *ret_dio);

/* The loop device backing the file at PATH, matched by device and inode
 * number (not by name, so bind mounts and renames do not fool it).
 * Returns 0 with *ret_dev malloc'd, -ENOENT when none, or -errno. */
int loop_find(const char *path, char **ret_dev);

/* Detach DEV. Returns 0; -EBUSY when it is mounted or otherwise claimed
 * exclusively (nothing changes); -ENXIO when not attached. If a process
 * still holds it open, the kernel defers the detach to the last close
 * (autoclear) and this returns -EINPROGRESS. */
int loop_detach(const char *dev);

/* Re-read the backing file's size (after it grew). 0 or -errno. */
int loop_set_capacity(const char *dev);

/* The backing file of DEV as the kernel shows it, malloc'd. 0 or -errno
 * (-ENXIO when DEV is not attached). */
int loop_backing_file(const char *dev, char **ret);

/* 1 when block device DEV is mounted at PATH (compared after realpath), 0
 * when not, or -errno. */
int dev_mounted_at(const char *dev, const char *path);

/* The first mount point of block device DEV in this mount namespace
 * (/proc/self/mountinfo), malloc'd. 0, -ENOENT when not mounted, -errno. */
int dev_find_mountpoint(const char *dev, char **ret);

#endif
