#!/usr/bin/python3
"""taskreport.py SAMPLES.json [T0 T1]: from tasksampler.py's samples (optionally only epoch seconds
T0..T1), where the snapshot ioctl (a thread in btrfs_ioctl_snap_create*) waited, and what every other
busy thread of amberd was doing in the kernel in the same samples (the activity concurrent with the
snapshot: the mover's export reads, subvolume drops, defrag steps, fsyncs)."""
import collections, json, sys

s = json.load(open(sys.argv[1]))
if len(sys.argv) > 3:
    t0, t1 = float(sys.argv[2]), float(sys.argv[3])
    s = [x for x in s if t0 <= x[0] <= t1]
SKIP = ("schedule", "__schedule", "io_schedule", "schedule_timeout", "wait_", "__wait", "prepare_to_wait",
        "finish_wait", "bit_wait", "out_of_line_wait_on_bit", "__cond_resched", "preempt_schedule",
        "rwsem_down", "down_", "mutex_lock", "__mutex_lock")


def activity(fr):
    """A coarse name for what a stack is doing: the btrfs entry point under the syscall."""
    for key, name in (("btrfs_ioctl_snap_create", "snapshot-create"), ("btrfs_ioctl_snap_destroy", "subvol-drop"),
                      ("btrfs_ioctl_defrag", "defrag"), ("btrfs_defrag_file", "defrag"),
                      ("btrfs_sync_file", "fsync"), ("btrfs_sync_fs", "syncfs"), ("sync_filesystem", "syncfs"),
                      ("btrfs_ioctl_tree_search", "tree-search"), ("btrfs_fiemap", "fiemap"),
                      ("btrfs_file_read_iter", "read"), ("filemap_read", "read"), ("btrfs_do_write_iter", "write"),
                      ("btrfs_file_write_iter", "write"), ("do_renameat", "rename"), ("do_unlinkat", "unlink"),
                      ("do_sys_openat", "open"), ("btrfs_ioctl_get_subvol_info", "subvol-info"),
                      ("vfs_fstatat", "stat"), ("btrfs_ioctl", "other-ioctl")):
        if any(f.startswith(key) for f in fr):
            return name
    return fr[-1] if fr else "?"


def leaf(fr):
    f = [x for x in fr if not x.startswith(SKIP)]
    return " < ".join(f[:3])


snap = [x for x in s if any(activity(fr) == "snapshot-create" for _, _, fr in x[1])]
print("%d samples, %d with a snapshot ioctl running" % (len(s), len(snap)))
leaves, others, pair = collections.Counter(), collections.Counter(), collections.Counter()
for t, row in snap:
    seen = set()
    for tid, comm, fr in row:
        a = activity(fr)
        if a == "snapshot-create":
            leaves[leaf(fr)] += 1
        else:
            seen.add("%s:%s" % (comm, a))
    for k in seen:
        others[k] += 1
    pair["alone" if not seen else "with " + "+".join(sorted(seen))] += 1
n = max(len(snap), 1)
print("\nwhere the snapshot ioctl was (leaf-most non-wait frames):")
for k, c in leaves.most_common(12):
    print("%5.1f%%  %s" % (100.0 * c / n, k))
print("\nother amberd threads busy in the kernel during those samples:")
for k, c in others.most_common(12):
    print("%5.1f%%  %s" % (100.0 * c / n, k))
print("\ncombinations:")
for k, c in pair.most_common(8):
    print("%5.1f%%  %s" % (100.0 * c / n, k))
allact = collections.Counter()
for t, row in s:
    for tid, comm, fr in row:
        allact["%s:%s" % (comm, activity(fr))] += 1
print("\nall samples, busy thread activity (samples):")
for k, c in allact.most_common(12):
    print("%6d  %s" % (c, k))
