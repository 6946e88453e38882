#!/usr/bin/env bash
# test-deploy: the Kubernetes manifests (deploy/, bench/k8s/) are valid
# and agree with each other, checked offline.
#  1. yamllint (.yamllint at the repository root) over deploy/ and bench/k8s/;
#  2. every directory with a kustomization.yaml renders (`kubectl kustomize`
#     or `kustomize build`); without either, python3-yaml parses every file
#     and checks that the resources a kustomization names exist;
#  3. every rendered document has apiVersion, kind and metadata.name;
#  4. in base and each overlay: the CSIDriver name equals the StorageClass
#     provisioner and the VolumeSnapshotClass driver; every container
#     argument naming the CSI socket names the same path, and that path is
#     where the socket-dir volume is mounted; node-driver-registrar's
#     --kubelet-registration-path is the socket inside the socket-dir hostPath;
#     amber-csi's --amberd is amberd's --socket; images are pinned (no
#     :latest); /var/lib/kubelet is mounted Bidirectional in amber-csi;
#     a SnapshotMetadataService's address is a rendered Service port that
#     reaches the sidecar and its caCert a PEM certificate; a
#     VolumeGroupSnapshotClass comes with a csi-snapshotter that is not
#     node-deployed and has the group snapshot feature gate.
# Exit 0 pass, 1 fail, 77 skip (no yamllint and no YAML parser at all).
set -u
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
fail=0
err() { echo "FAIL: $*"; fail=1; }

if ! "$PY" -c 'import yaml' 2>/dev/null; then
    echo "SKIP: python3-yaml is not installed"; exit 77
fi

# 1. yamllint
if command -v yamllint >/dev/null; then
    yamllint -c .yamllint -f parsable deploy bench/k8s || err "yamllint"
else
    echo "note: yamllint not installed, lint step skipped"
fi

# 2. render every kustomization
render=""
# kustomize v4+ is needed (labels:, patches:); Debian bookworm's
# kubernetes-client (1.20) embeds kustomize v2, so it is not used.
kmajor() { sed -n 's/.*[Kk]ustomize[^v]*v\([0-9]*\)\..*/\1/p' | head -n1; }
if command -v kubectl >/dev/null &&
   [ "$(kubectl version --client 2>/dev/null | kmajor)" -ge 4 ] 2>/dev/null; then
    render="kubectl kustomize"
elif command -v kustomize >/dev/null &&
   [ "$(kustomize version 2>/dev/null | sed 's/^/kustomize /' | kmajor)" -ge 4 ] 2>/dev/null; then
    render="kustomize build"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Components (kind: Component) render only inside an overlay that uses them
# (deploy/overlays/snapshot-metadata, deploy/overlays/group-snapshot).
dirs=$(find deploy bench/k8s -name kustomization.yaml -printf '%h\n' | sort |
       while read -r d; do grep -q '^kind: Component' "$d/kustomization.yaml" || echo "$d"; done)
[ -n "$dirs" ] || err "no kustomization found"
for d in $dirs; do
    out="$tmp/$(echo "$d" | tr / _).yaml"
    if [ -n "$render" ]; then
        if ! $render "$d" >"$out" 2>"$tmp/err"; then
            err "$render $d: $(tail -n 3 "$tmp/err")"
        fi
    else
        # No renderer: concatenate the resources the kustomization names.
        "$PY" - "$d" >"$out" <<'PYEOF' || err "resources of $d"
import os, sys, yaml
def collect(d, seen):
    k = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
    for r in k.get("resources", []) + k.get("components", []):
        p = os.path.normpath(os.path.join(d, r))
        if os.path.isdir(p):
            collect(p, seen)
        elif os.path.isfile(p):
            seen.append(open(p).read())
        else:
            sys.exit(f"{d}: resource {r} does not exist")
    for g in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        for f in g.get("files", []):
            f = f.split("=", 1)[-1]
            if not os.path.isfile(os.path.join(d, f)):
                sys.exit(f"{d}: generator file {f} does not exist")
    for p in k.get("patches", []):
        if "path" in p and not os.path.isfile(os.path.join(d, p["path"])):
            sys.exit(f"{d}: patch {p['path']} does not exist")
docs = []
collect(sys.argv[1], docs)
print("\n---\n".join(docs))
PYEOF
    fi
done
[ -z "$render" ] && echo "note: no kubectl/kustomize; checked kustomizations with python3-yaml (patches not applied)"

# 3 and 4: structure and cross-references of the rendered output
RAW=$([ -z "$render" ] && echo 1) "$PY" - "$tmp" <<'PYEOF' || fail=1
import glob, os, re, sys, yaml
bad = []
def check(name, docs):
    for i, d in enumerate(docs):
        if not isinstance(d, dict):
            bad.append(f"{name}: document {i} is not a mapping"); continue
        md = d.get("metadata") or {}
        if not d.get("apiVersion") or not d.get("kind") or not md.get("name"):
            bad.append(f"{name}: document {i} lacks apiVersion/kind/metadata.name")
    by = {}
    for d in docs:
        if isinstance(d, dict):
            by.setdefault(d.get("kind"), []).append(d)
    drivers = [d["metadata"]["name"] for d in by.get("CSIDriver", [])]
    if not by.get("DaemonSet"):
        return  # examples, bench: structure only
    if len(drivers) != 1:
        bad.append(f"{name}: want exactly one CSIDriver, found {drivers}"); return
    drv = drivers[0]
    for sc in by.get("StorageClass", []):
        if sc.get("provisioner") != drv:
            bad.append(f"{name}: StorageClass {sc['metadata']['name']} provisioner {sc.get('provisioner')} != CSIDriver {drv}")
    for vsc in by.get("VolumeSnapshotClass", []):
        if vsc.get("driver") != drv:
            bad.append(f"{name}: VolumeSnapshotClass {vsc['metadata']['name']} driver {vsc.get('driver')} != CSIDriver {drv}")
    if not by.get("StorageClass") or not by.get("VolumeSnapshotClass"):
        bad.append(f"{name}: StorageClass or VolumeSnapshotClass missing")
    for ds in by["DaemonSet"]:
        spec = ds["spec"]["template"]["spec"]
        vols = {v["name"]: v for v in spec.get("volumes", [])}
        ctrs = {c["name"]: c for c in spec.get("containers", [])}
        def args(c):
            a = list(c.get("command", [])[1:]) + list(c.get("args", []))
            out = {}
            i = 0
            while i < len(a):
                s = str(a[i])
                if s.startswith("--") and "=" in s:
                    k, v = s.split("=", 1); out[k] = v
                elif s.startswith("--") and i + 1 < len(a) and not str(a[i + 1]).startswith("--"):
                    out[s] = str(a[i + 1]); i += 1
                elif s.startswith("--"):
                    out[s] = ""
                i += 1
            return out
        # The CSI socket as each container sees it.
        socks = {}
        for cn, c in ctrs.items():
            a = args(c)
            for k in ("--csi-address", "--endpoint"):
                if k in a:
                    socks[cn] = re.sub(r"^unix://", "", a[k])
        if "amber-csi" not in socks:
            bad.append(f"{name}: amber-csi has no --endpoint"); continue
        if len(set(socks.values())) != 1:
            bad.append(f"{name}: CSI socket paths disagree: {socks}")
        sock = socks["amber-csi"]
        sockdir = os.path.dirname(sock)
        hostdirs = set()
        for cn in socks:
            m = [vm for vm in ctrs[cn].get("volumeMounts", []) if vm["mountPath"].rstrip("/") == sockdir]
            if not m:
                bad.append(f"{name}: container {cn} does not mount {sockdir} (its CSI socket dir)"); continue
            v = vols.get(m[0]["name"], {})
            hostdirs.add((v.get("hostPath") or {}).get("path"))
        if len(hostdirs) != 1 or None in hostdirs:
            bad.append(f"{name}: CSI socket dir is not one hostPath: {hostdirs}")
        reg = ctrs.get("node-driver-registrar")
        if not reg:
            bad.append(f"{name}: no node-driver-registrar")
        else:
            krp = args(reg).get("--kubelet-registration-path")
            want = os.path.join(next(iter(hostdirs)) or "?", os.path.basename(sock))
            if krp != want:
                bad.append(f"{name}: --kubelet-registration-path {krp} != {want} (hostPath of the socket dir)")
            if not any(vm["mountPath"] == "/registration" and
                       (vols.get(vm["name"], {}).get("hostPath") or {}).get("path") == "/var/lib/kubelet/plugins_registry"
                       for vm in reg.get("volumeMounts", [])):
                bad.append(f"{name}: registrar lacks /registration from /var/lib/kubelet/plugins_registry")
            if drv not in (krp or ""):
                bad.append(f"{name}: registration path {krp} does not name the driver {drv}")
        csi, amberd = ctrs.get("amber-csi"), ctrs.get("amberd")
        if amberd and args(csi).get("--amberd") != args(amberd).get("--socket"):
            bad.append(f"{name}: amber-csi --amberd {args(csi).get('--amberd')} != amberd --socket {args(amberd).get('--socket')}")
        dn = args(csi).get("--driver-name")
        if dn and dn != drv:
            bad.append(f"{name}: amber-csi --driver-name {dn} != CSIDriver {drv}")
        if not any(vm["mountPath"] == "/var/lib/kubelet" and vm.get("mountPropagation") == "Bidirectional"
                   for vm in csi.get("volumeMounts", [])):
            bad.append(f"{name}: amber-csi lacks /var/lib/kubelet with Bidirectional propagation")
        # components/snapshot-metadata: the advertised address is a Service
        # of this render whose port leads to the sidecar, caCert is a PEM CA.
        for sms in by.get("SnapshotMetadataService", []):
            if sms["metadata"]["name"] != drv:
                bad.append(f"{name}: SnapshotMetadataService {sms['metadata']['name']} != CSIDriver {drv}")
            host, _, port = sms["spec"].get("address", "").rpartition(":")
            svc = [x for x in by.get("Service", []) if host.split(".")[0] == x["metadata"]["name"]]
            ports = [p for x in svc for p in x["spec"]["ports"] if str(p["port"]) == port]
            cports = {p.get("name") for c in ctrs.values() for p in c.get("ports", [])}
            if not ports or ports[0].get("targetPort") not in cports:
                bad.append(f"{name}: SnapshotMetadataService address {host}:{port} reaches no container port")
            import base64
            try:
                pem = base64.b64decode(sms["spec"].get("caCert", ""), validate=True)
            except Exception:
                pem = b""
            if b"BEGIN CERTIFICATE" not in pem:
                bad.append(f"{name}: SnapshotMetadataService caCert is not a base64 PEM certificate")
            if "csi-snapshot-metadata" not in ctrs:
                bad.append(f"{name}: SnapshotMetadataService without the csi-snapshot-metadata sidecar")
        # components/group-snapshot: a node-deployed csi-snapshotter never
        # sees VolumeGroupSnapshotContents (components/group-snapshot/README.md).
        for vgsc in by.get("VolumeGroupSnapshotClass", []):
            if vgsc.get("driver") != drv:
                bad.append(f"{name}: VolumeGroupSnapshotClass driver {vgsc.get('driver')} != CSIDriver {drv}")
            sa = args(ctrs.get("csi-snapshotter", {}))
            if "--node-deployment" in sa or sa.get("--feature-gates", "").find("CSIVolumeGroupSnapshot=true") < 0:
                bad.append(f"{name}: group snapshots need csi-snapshotter without --node-deployment and with "
                           f"--feature-gates=CSIVolumeGroupSnapshot=true: {sa}")
        for cn, c in ctrs.items():
            img = c.get("image", "")
            if os.environ.get("RAW") and "/" not in img and ":" not in img:
                continue  # set by the kustomization's images:, not applied here
            if img.endswith(":latest") or (":" not in img.split("/")[-1] and "@" not in img):
                bad.append(f"{name}: container {cn} image {img!r} is not pinned")
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.yaml"))):
    name = os.path.basename(f)[:-5].replace("_", "/")
    try:
        docs = [d for d in yaml.safe_load_all(open(f)) if d is not None]
    except yaml.YAMLError as e:
        bad.append(f"{name}: {e}"); continue
    if not docs:
        bad.append(f"{name}: renders nothing")
    check(name, docs)
for b in bad:
    print("FAIL:", b)
sys.exit(1 if bad else 0)
PYEOF

[ $fail -eq 0 ] && echo "PASS: manifests lint, render and agree ($(echo $dirs | wc -w) kustomizations)"
exit $fail
