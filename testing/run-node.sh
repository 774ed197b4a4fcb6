#!/usr/bin/env bash
# Runs one RustBalance node (the README's main command).
#
#   testing/run-node.sh --target HOST:PORT [--dir DIR]     # public Tor network
#   testing/run-node.sh --testnet [--target HOST:PORT]      # private Tor network on 127.0.0.1
#
# The first run creates the node (`rustbalance init`: a new master identity, 0600 key, config)
# in DIR (default ./rustbalance, or target/node-testnet with --testnet); later runs reuse it.
# With --testnet the private network is started if it is not running (Debian's tor is
# installed if missing) and the target defaults to its sample HTTP server. RB_PROFILE=debug
# builds faster than the default release build.
set -euo pipefail
cd "$(dirname "$0")/.."

testnet=0 target="" dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --testnet) testnet=1 ;;
    --target) target="$2"; shift ;;
    --dir) dir="$2"; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "run-node.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

profile=${RB_PROFILE:-release}
flag=$([ "$profile" = release ] && echo --release || true)
bin=target/$profile

init_args=()
if [ "$testnet" = 1 ]; then
  if ! command -v tor >/dev/null || ! command -v tor-gencert >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tor >/dev/null
    else sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive sudo apt-get install -y -qq tor >/dev/null; fi
  fi
  cargo build $flag --bin rustbalance && cargo build $flag -p rustbalance-testnet --bin testnet
  export RUSTBALANCE_TESTNET_DIR="$PWD/target/testnet"
  if ! "$bin/testnet" status --json 2>/dev/null | grep -q '"state": "ready"'; then
    "$bin/testnet" start
  fi
  json="$RUSTBALANCE_TESTNET_DIR/testnet.json"
  field() { sed -n "s/.*\"$1\": \"\([^\"]*\)\".*/\1/p" "$json" | head -1; }
  [ -n "$target" ] || target=$(field http)
  [ -n "$dir" ] || dir=target/node-testnet
  init_args+=(--arti-config "$RUSTBALANCE_TESTNET_DIR/arti.toml")
  socks=$(field socks)
else
  cargo build $flag --bin rustbalance
  [ -n "$dir" ] || dir=rustbalance
fi

if [ ! -f "$dir/rustbalance.toml" ]; then
  if [ -z "$target" ]; then echo "run-node.sh: --target HOST:PORT is needed to create a node" >&2; exit 2; fi
  "$bin/rustbalance" init --target "$target" --dir "$dir" "${init_args[@]}"
fi
master=$(sed -n 's/^onion_address = "\(.*\)"/\1/p' "$dir/rustbalance.toml")
echo "master address: $master"
[ "$testnet" = 1 ] && echo "try: curl --socks5-hostname $socks http://$master/"
echo "status: $bin/rustbalance status -c $dir/rustbalance.toml"
exec "$bin/rustbalance" run -c "$dir/rustbalance.toml"
