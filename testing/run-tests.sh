#!/usr/bin/env bash
# RustBalance's whole test suite, from a fresh Debian machine: installs what the tests need
# (Debian's `tor`, `faketime`), checks formatting and lints, builds, starts ONE private Tor network on
# 127.0.0.1 that every end-to-end test reuses, runs all tests, and stops the network.
# Extra arguments go to `cargo test` (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# tor: the private test network. faketime: the clock-skew test runs one node with its wall
# clock 15 minutes ahead (libfaketime).
if ! command -v tor >/dev/null || ! command -v tor-gencert >/dev/null \
  || [ ! -e /usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1 ]; then
  echo "== installing Debian's tor and faketime"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq tor faketime >/dev/null
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
echo "== cargo build"
cargo build --workspace --lib --bins --tests

export RUSTBALANCE_TESTNET_DIR="$PWD/target/testnet"
# A network left behind by an interrupted run is stopped first (only its own PIDs).
target/debug/testnet stop >/dev/null 2>&1 || true
echo "== starting the private Tor network"
target/debug/testnet start
trap 'echo "== stopping the private Tor network"; target/debug/testnet stop' EXIT

echo "== cargo test"
cargo test --workspace "$@"
