#!/usr/bin/env bash
# Measures the private network's time-to-usable and memory over N fresh starts (default 5):
# prints each run and min / median / max. A figure-printing benchmark, not a test: it asserts
# nothing about timings. Uses its own directory and ports (25000+), so it can run beside a
# network started by the test command.
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${1:-5}
cargo build -q -p rustbalance-testnet
bin=target/debug/testnet
dir=target/bench-testnet
trap '$bin --dir $dir stop >/dev/null 2>&1 || true' EXIT
times=(); rss=()
for i in $(seq 1 "$runs"); do
  out=$($bin --dir "$dir" start --base-port 25000 | tee "target/bench-testnet-run$i.log")
  line=$(grep '^usable after' <<<"$out")
  echo "run $i: $line"
  times+=("$(sed -E 's/^usable after ([0-9.]+) s.*/\1/' <<<"$line")")
  rss+=("$(sed -E 's/.*total RSS ([0-9.]+) MiB.*/\1/' <<<"$line")")
  $bin --dir "$dir" stop >/dev/null
done
summary() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "min %s  median %s  max %s", a[1], a[int((NR+1)/2)], a[NR]}'; }
echo "time to usable over $runs starts (s): $(summary "${times[@]}")"
echo "total RSS at usable (MiB):            $(summary "${rss[@]}")"
echo "conditions: $(nproc) cores, $(tor --version | head -1), 3 authorities + 5 relays + client + onion service"
