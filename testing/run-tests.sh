#!/usr/bin/env bash
# RustBalance's whole test suite, from a fresh Debian machine: installs what the tests need
# (Debian's `tor`, `faketime`), checks formatting and lints, builds, starts ONE private Tor network on
# 127.0.0.1 that every end-to-end test reuses, runs all tests, and stops the network.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# tor: the private test network. faketime: the clock-skew test runs one node with its wall
# clock 15 minutes ahead (libfaketime). systemd: systemd-analyze checks the unit offline.
# podman, runc: the container image is built and a node run from it (runc: crun fails on this
# sandbox's hybrid cgroups). iptables: the self-repair test cuts one node's Tor traffic (its
# cgroup's TCP) while its mesh (UDP) stays up.
if ! command -v tor >/dev/null || ! command -v tor-gencert >/dev/null \
  || [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ] \
  || ! command -v systemd-analyze >/dev/null || ! command -v podman >/dev/null \
  || ! command -v runc >/dev/null || ! command -v iptables >/dev/null; then
  echo "== installing Debian's tor, faketime, systemd (systemd-analyze), podman, runc and iptables"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq tor faketime systemd podman runc iptables >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo (Rust >= 1.92, with rustfmt and clippy) is required; install it with rustup" >&2
  exit 1
fi
tor --version | head -1

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== fuzz targets compile (cargo check; running them is manual: fuzz/README.md)"
cargo check --manifest-path fuzz/Cargo.toml --bins --locked
echo "== cargo build"
cargo build --workspace --lib --bins --tests --examples

echo "== systemd unit (testing/rustbalance.service)"
if command -v systemd-analyze >/dev/null; then
  unit_dir=$(mktemp -d)
  # verify checks that ExecStart exists: point it at the binary just built.
  sed "s#/usr/local/bin/rustbalance#$PWD/target/debug/rustbalance#g" testing/rustbalance.service \
    > "$unit_dir/rustbalance.service"
  systemd-analyze verify "$unit_dir/rustbalance.service"
  score_line=$(systemd-analyze security --offline=true "$unit_dir/rustbalance.service" | tail -n 1)
  echo "$score_line"
  score=$(echo "$score_line" | sed -n 's/.*: \([0-9.]*\) .*/\1/p')
  rm -rf "$unit_dir"
  # Debian's onionbalance.service scores 2.0; ours must stay below.
  awk -v s="$score" 'BEGIN { exit !(s != "" && s < 2.0) }' \
    || { echo "systemd exposure score '$score' is not below 2.0" >&2; exit 1; }
else
  echo "systemd-analyze missing after the install step" >&2
  exit 1
fi

echo "== static binary (testing/build-static.sh) and container image (testing/build-image.sh)"
testing/build-static.sh
static_bin=target/x86_64-unknown-linux-gnu/release/rustbalance
"$static_bin" --version
RB_STATIC_BIN="$static_bin" testing/build-image.sh localhost/rustbalance:test
export RB_CONTAINER_IMAGE=localhost/rustbalance:test

export RUSTBALANCE_TESTNET_DIR="$PWD/target/testnet"
# A network left behind by an interrupted run is stopped first (only its own PIDs).
target/debug/testnet stop >/dev/null 2>&1 || true
echo "== starting the private Tor network"
target/debug/testnet start
trap 'echo "== stopping the private Tor network"; target/debug/testnet stop' EXIT

echo "== cargo test"
cargo test --workspace "$@"
