"""amber.k8s_group: VolumeGroupSnapshots through Kubernetes objects, for
pipeline steps that would rather go through the API server than the pod's
Amber socket (where Client.snapshot([...]) does the same in one call).

    from amber import k8s_group
    print(k8s_group.manifest("train-step-1", "ml", {"snapshot-group": "train"}))

or from a shell, piped to kubectl:

    python3 -m amber.k8s_group train-step-1 --namespace ml \\
        --selector snapshot-group=train | kubectl apply -f -

The claims the selector matches are snapshotted at one instant (their
filesystems frozen around it; deploy/components/group-snapshot). The
snapshot-controller then makes one VolumeSnapshot per claim, listed in the
group's status.pvcVolumeSnapshotRefList; restore_manifest() prints a PVC
made from one of them. Output is YAML that uses JSON quoting for every
string (valid YAML, no PyYAML needed).
"""
import argparse
import json
import sys

GROUP_API = "groupsnapshot.storage.k8s.io/v1"
DEFAULT_CLASS = "amber-group"


def volume_group_snapshot(name, namespace, selector, class_name=DEFAULT_CLASS):
    """The VolumeGroupSnapshot object (a dict) snapshotting the claims of
    `namespace` whose labels match every key=value of `selector`."""
    if not name or not namespace:
        raise ValueError("a name and a namespace are required")
    if not selector:
        raise ValueError("a selector (labels of the claims) is required")
    return {
        "apiVersion": GROUP_API,
        "kind": "VolumeGroupSnapshot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "volumeGroupSnapshotClassName": class_name,
            "source": {"selector": {"matchLabels": dict(selector)}},
        },
    }


def restore_claim(name, namespace, volume_snapshot, size, storage_class="amber"):
    """A PersistentVolumeClaim (a dict) made from one member VolumeSnapshot
    of a group (an instant clone on the node that holds it)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "storageClassName": storage_class,
            "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                           "name": volume_snapshot},
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": size}},
        },
    }


def to_yaml(obj, indent=0):
    """Block-style YAML of dicts, lists and scalars (strings JSON-quoted)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:" % (pad, json.dumps(k) if not k.replace("-", "").isalnum() else k))
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append("%s%s: %s" % (pad, json.dumps(k) if not k.replace("-", "").isalnum() else k,
                                          json.dumps(v)))
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, (dict, list)) and v:
                inner = to_yaml(v, indent + 1).lstrip()
                lines.append("%s- %s" % (pad, inner))
            else:
                lines.append("%s- %s" % (pad, json.dumps(v)))
    else:
        lines.append(pad + json.dumps(obj))
    return "\n".join(lines)


def manifest(name, namespace, selector, class_name=DEFAULT_CLASS):
    """The VolumeGroupSnapshot as a YAML document (a string)."""
    return to_yaml(volume_group_snapshot(name, namespace, selector, class_name)) + "\n"


def restore_manifest(name, namespace, volume_snapshot, size, storage_class="amber"):
    return to_yaml(restore_claim(name, namespace, volume_snapshot, size, storage_class)) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m amber.k8s_group",
                                 description="Print a VolumeGroupSnapshot of the claims a selector matches.")
    ap.add_argument("name")
    ap.add_argument("--namespace", "-n", required=True)
    ap.add_argument("--selector", "-l", action="append", required=True, metavar="KEY=VALUE",
                    help="a label the claims carry (repeatable; all must match)")
    ap.add_argument("--class", dest="class_name", default=DEFAULT_CLASS,
                    help="the VolumeGroupSnapshotClass (default %s)" % DEFAULT_CLASS)
    a = ap.parse_args(argv)
    sel = {}
    for kv in a.selector:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            ap.error("--selector: KEY=VALUE, not %r" % kv)
        sel[k] = v
    sys.stdout.write(manifest(a.name, a.namespace, sel, a.class_name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
