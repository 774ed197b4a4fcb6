#!/usr/bin/env bash
# Builds `rustbalance` as ONE static executable: glibc linked statically (`crt-static` on the
# gnu target, the only one installed), Arti on rustls and bundled SQLite, so nothing needs a
# system library at run time. Release profile from Cargo.toml (thin LTO, stripped).
#
#   testing/build-static.sh            # prints the binary's path, size and `ldd`'s verdict
#
# The binary: target/x86_64-unknown-linux-gnu/release/rustbalance. Fails if `ldd` finds it
# dynamic. Name resolution: a static glibc binary has no NSS, so give `target.address` and
# endpoints as IP addresses (or `.onion`), not host names that need /etc/nsswitch.conf.
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
# --target keeps RUSTFLAGS off build scripts and proc macros (they must stay dynamic).
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$target" --bin rustbalance
bin="target/$target/release/rustbalance"
verdict=$(ldd "$bin" 2>&1 || true)
case "$verdict" in
  *"not a dynamic executable"*|*"statically linked"*) ;;
  *) echo "build-static.sh: $bin is dynamic: $verdict" >&2; exit 1 ;;
esac
echo "static binary: $bin"
echo "size: $(stat -c %s "$bin") bytes"
echo "ldd: $verdict"
