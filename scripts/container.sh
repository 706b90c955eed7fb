#!/usr/bin/env bash
# Builds the container image postern:<version> FROM scratch with podman: the dist binary, the
# shared libraries `ldd` lists, the CA certificates, /etc/passwd and /etc/group with the
# postern user (uid 10001), an empty /tmp and /var/lib/postern. Nothing is pulled.
# Run it:  podman run -d -p 2525:2525 -p 8025:8025 -v postern-data:/var/lib/postern postern:<version>
#          podman exec -it <container> postern connection add …
set -euo pipefail
cd "$(dirname "$0")/.."

command -v podman >/dev/null || { echo "podman is missing (apt-get install podman)" >&2; exit 1; }
cargo build --profile dist --bin postern
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

ctx=target/container
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" "$ctx/state"
chmod 1777 "$ctx/rootfs/tmp"
cp target/dist/postern "$ctx/rootfs/usr/bin/postern"
strip "$ctx/rootfs/usr/bin/postern"
# Every library the dynamic loader will look for, at the path it will look at (the loader
# itself included); a library missing here would stop the binary before main.
for lib in $(ldd target/dist/postern | grep -o '/[^ ]*'); do
    mkdir -p "$ctx/rootfs$(dirname "$lib")"
    cp -L "$lib" "$ctx/rootfs$lib"
done
# Provider TLS is verified against the system's roots (rustls-native-certs reads this file).
cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
echo "postern:x:10001:10001:Postern:/var/lib/postern:/nonexistent" >"$ctx/rootfs/etc/passwd"
echo "postern:x:10001:" >"$ctx/rootfs/etc/group"

podman build --quiet -f packaging/Containerfile -t "postern:$version" "$ctx" >/dev/null
echo "postern:$version"
