#!/usr/bin/env bash
# make-certs.sh [NAMESPACE]: make a CA and a server certificate for the
# snapshot-metadata Service (amber-snapshot-metadata.NAMESPACE.svc), write
# tls.crt and tls.key here for the component's secretGenerator, and put the
# CA into snapshotmetadataservice.yaml's caCert (clients verify the sidecar
# with it). The CA key is thrown away. Needs openssl.
set -euo pipefail
cd "$(dirname "$0")"
ns=${1:-amber-system}
svc=amber-snapshot-metadata
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=amber-snapshot-metadata-ca" -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$svc.$ns.svc" \
    -keyout "$tmp/tls.key" -out "$tmp/tls.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:%s.%s,DNS:%s.%s.svc,DNS:%s.%s.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
    "$svc" "$svc" "$ns" "$svc" "$ns" "$svc" "$ns" >"$tmp/ext"
openssl x509 -req -in "$tmp/tls.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days 3650 -extfile "$tmp/ext" -out "$tmp/tls.crt" 2>/dev/null
cat "$tmp/tls.crt" >tls.crt
install -m 0600 "$tmp/tls.key" tls.key
ca=$(base64 -w0 <"$tmp/ca.crt")
sed -i "s|^  caCert: .*|  caCert: $ca|; s|^  address: .*|  address: $svc.$ns.svc:6443|" snapshotmetadataservice.yaml
echo "wrote tls.crt, tls.key and the caCert of snapshotmetadataservice.yaml for $svc.$ns.svc"
