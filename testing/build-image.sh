#!/usr/bin/env bash
# Builds the container image `localhost/rustbalance:latest` (or $1) from the static binary:
# testing/build-static.sh first (unless RB_STATIC_BIN names a binary), then `podman build` of
# testing/container/Containerfile in a context holding only the binary. Prints the image size.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-localhost/rustbalance:latest}
bin=${RB_STATIC_BIN:-target/x86_64-unknown-linux-gnu/release/rustbalance}
[ -n "${RB_STATIC_BIN:-}" ] || testing/build-static.sh
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$bin" "$ctx/rustbalance"
cp testing/container/Containerfile "$ctx/Containerfile"
printf 'root:x:0:0:root:/root:/sbin/nologin\nrustbalance:x:10001:10001:RustBalance:/var/lib/rustbalance:/sbin/nologin\n' > "$ctx/passwd"
printf 'root:x:0:\nrustbalance:x:10001:\n' > "$ctx/group"
podman build --format docker -t "$image" -f "$ctx/Containerfile" "$ctx"
echo "image: $image, $(podman image inspect "$image" --format '{{.Size}}') bytes"
