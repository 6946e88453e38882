/* cmd-mount.c: amberctl snapshot mount|umount: browse a snapshot's files
 * without restoring it.
 *
 * mount: amberd attaches the snapshot read-only to a loop device
 * (AttachVolume{volume, snapshot}); we read the filesystem's superblock
 * magic (ext4: 0xEF53 at byte 1080; xfs: "XFSB" at 0) and mount it
 * read-only WITHOUT replaying its journal, since a crash-consistent
 * snapshot's log is dirty and replay would need to write: ext4 `noload`,
 * xfs `norecovery,nouuid` (nouuid: the live volume with the same uuid may
 * be mounted). So the view is the snapshot as it was on disk, minus what
 * sat only in the journal; take the snapshot with --freeze for a clean one.
 * umount: unmount DIR, then ask amberd to detach, naming the snapshot by
 * the loop device's backing file (POOL/snaps/VOL/SNAP/disk.img): no state
 * file to lose. Runs on the node, as root, against the node socket. */
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "amber.pb-c.h"
#include "cli/cli.h"
#include "cli/pipeline.h"

static const char mount_help[] =
"Usage: amberctl snapshot mount SNAP DIR\n"
"       amberctl snapshot umount DIR\n"
"\n"
"mount attaches snapshot SNAP read-only and mounts its filesystem (ext4 or\n"
"xfs) read-only at DIR without replaying its journal (ext4 noload, xfs\n"
"norecovery): browse yesterday's files while the volume keeps running.\n"
"umount unmounts DIR and detaches the snapshot. Run on the node as root.\n";

/* "ext4", "xfs", or NULL. */
static const char *detect_fs(const char *dev)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    unsigned char b[1084];
    if (pread(fd, b, sizeof b, 0) != (ssize_t)sizeof b)
        return NULL;
    if (memcmp(b, "XFSB", 4) == 0)
        return "xfs";
    if (b[1080] == 0x53 && b[1081] == 0xEF)
        return "ext4";
    return NULL;
}

static int detach(struct cli *c, const char *vol, const char *snap)
{
    Amber__V1__AttachVolumeRequest q = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
    q.volume = (char *)vol;
    q.snapshot = (char *)snap;
    ProtobufCMessage *r;
    if (cli_call(c, "/amber.v1.Amber/DetachVolume", &q.base, &amber__v1__empty__descriptor, &r))
        return 1;
    protobuf_c_message_free_unpacked(r, NULL);
    return 0;
}

int cmd_snapshot_mount(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, mount_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 2)
        return cli_usage("snapshot mount: expected SNAP DIR");
    const char *dir = argv[i + 1];
    struct stat st;
    if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode))
        return cli_usage("snapshot mount: %s is not a directory", dir);
    Amber__V1__SnapshotRef q = AMBER__V1__SNAPSHOT_REF__INIT;
    q.snapshot = argv[i];
    Amber__V1__Snapshot *s;
    if (cli_call(c, "/amber.v1.Amber/GetSnapshot", &q.base, &amber__v1__snapshot__descriptor,
                 (ProtobufCMessage **)&s))
        return 1;
    Amber__V1__AttachVolumeRequest aq = AMBER__V1__ATTACH_VOLUME_REQUEST__INIT;
    aq.volume = s->volume_id;
    aq.snapshot = s->id;
    Amber__V1__AttachVolumeResponse *ar;
    if (cli_call(c, "/amber.v1.Amber/AttachVolume", &aq.base,
                 &amber__v1__attach_volume_response__descriptor, (ProtobufCMessage **)&ar)) {
        protobuf_c_message_free_unpacked(&s->base, NULL);
        return 1;
    }
    int ret = 0;
    const char *fs = detect_fs(ar->device);
    if (!fs) {
        fprintf(stderr, "amberctl: snapshot %s: no ext4 or xfs filesystem on it (a block volume?)\n",
                s->name);
        ret = 1;
    } else {
        const char *opts = strcmp(fs, "xfs") == 0 ? "norecovery,nouuid" : "noload";
        if (mount(ar->device, dir, fs, MS_RDONLY | MS_NODEV | MS_NOSUID, opts) < 0) {
            fprintf(stderr, "amberctl: mount %s (%s) on %s: %s\n", ar->device, fs, dir, strerror(errno));
            ret = 1;
        }
    }
    if (ret) {
        detach(c, s->volume_id, s->id);
    } else if (c->json) {
        printf("{\"snapshot\":\"%s\",\"device\":\"%s\",\"fs_type\":\"%s\",\"dir\":", s->id, ar->device, fs);
        struct buf b = {0};
        buf_json_str(&b, dir);
        printf("%.*s}\n", (int)b.len, (char *)b.data);
        buf_free(&b);
    } else {
        printf("mounted %s@%s (%s, read-only) on %s\n", s->volume_name, s->name, fs, dir);
    }
    protobuf_c_message_free_unpacked(&ar->base, NULL);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return ret;
}

/* The device mounted at dir (the last mount there), malloc'd, or NULL. */
static char *mounted_device(const char *dir)
{
    _cleanup_free_ char *real = realpath(dir, NULL);
    if (!real)
        return NULL;
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mounts", "re");
    if (!f)
        return NULL;
    char *line = NULL, *dev = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        char src[4096], mp[4096];
        if (sscanf(line, "%4095s %4095s", src, mp) != 2)
            continue;
        if (strcmp(mp, real) == 0) {
            free(dev);
            dev = xstrdup(src);
        }
    }
    free(line);
    return dev;
}

int cmd_snapshot_umount(struct cli *c, int argc, char **argv)
{
    int i = cli_getopt(c, argc, argv, NULL, 0, NULL, NULL, mount_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("snapshot umount: expected DIR");
    const char *dir = argv[i];
    _cleanup_free_ char *dev = mounted_device(dir);
    if (!dev || strncmp(dev, "/dev/loop", 9) != 0) {
        fprintf(stderr, "amberctl: %s: no snapshot is mounted there\n", dir);
        return 1;
    }
    _cleanup_free_ char *sys = xasprintf("/sys/block/%s/loop/backing_file", dev + 5);
    _cleanup_free_ char *back = NULL;
    size_t len;
    if (read_file_all(sys, 8192, &back, &len) < 0) {
        fprintf(stderr, "amberctl: %s: cannot read its backing file\n", dev);
        return 1;
    }
    back[strcspn(back, "\n")] = 0;
    /* .../snaps/VOL/SNAP/disk.img */
    char *p = strstr(back, "/snaps/");
    char vol[37] = "", snap[37] = "";
    if (p && strlen(p) > 7 + 36 + 1 + 36) {
        memcpy(vol, p + 7, 36);
        memcpy(snap, p + 7 + 37, 36);
    }
    if (!uuid_is_valid(vol) || !uuid_is_valid(snap)) {
        fprintf(stderr, "amberctl: %s on %s is not an Amber snapshot (%s)\n", dev, dir, back);
        return 1;
    }
    if (umount2(dir, 0) < 0) {
        fprintf(stderr, "amberctl: umount %s: %s\n", dir, strerror(errno));
        return 1;
    }
    if (detach(c, vol, snap))
        return 1;
    if (c->json)
        printf("{\"unmounted\":true,\"snapshot\":\"%s\"}\n", snap);
    else
        printf("unmounted %s and detached snapshot %s\n", dir, snap);
    return 0;
}
