#!/usr/bin/env bash
# Installs a RustBalance node on a Debian/Ubuntu machine, as root.
#
#   deploy.sh --init --target T --endpoint IP:PORT [options]     # the first node: prints a join line
#   deploy.sh --join LINE-FILE --target T --endpoint IP:PORT [options]   # every other node
#   deploy.sh --uninstall [--purge] [options]
#
# Options:
#   --binary FILE         install this binary (default: target/release/rustbalance, built with
#                         cargo if missing; testing/build-static.sh makes a static one)
#   --listen IP:PORT      the mesh's UDP socket (default: 0.0.0.0 and the endpoint's port)
#   --status-listen ADDR  status endpoint (default 127.0.0.1:9191)
#   --arti-config FILE    an Arti configuration fragment (copied to /etc/rustbalance/arti.toml)
#   --no-systemd          no unit: start `rustbalance run` in the background (pid and log files
#                         in /var/lib/rustbalance) — for machines where systemd is not PID 1
#   --root DIR            install under DIR instead of / (tests; implies --no-systemd and no
#                         system user: the node runs as the invoking user)
#   --purge               with --uninstall: also remove the keys, state and the system user
#   --dry-run             print what would be done, change nothing
#
# What it does: installs the binary as /usr/local/bin/rustbalance, creates the `rustbalance`
# system user, /etc/rustbalance (0750) and /var/lib/rustbalance (0700), creates the node with
# `rustbalance init|join` in /var/lib/rustbalance/node (keys live with the state: a
# blinded-only node writes the keys a holder pushes), installs testing/rustbalance.service and
# starts it. Idempotent: a second run changes nothing and says so. Secrets never go into argv
# or logs: the join line is read from a file by `rustbalance join --line-file`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)

mode="" line_file="" target="" endpoint="" listen="" status_listen="127.0.0.1:9191"
arti="" binary="" root="" systemd=1 purge=0 dry=0
die() { echo "deploy.sh: $*" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case "$1" in
    --init) mode=init ;;
    --join) mode=join; line_file="${2:?--join needs a line file}"; shift ;;
    --uninstall) mode=uninstall ;;
    --target) target="${2:?}"; shift ;;
    --endpoint) endpoint="${2:?}"; shift ;;
    --listen) listen="${2:?}"; shift ;;
    --status-listen) status_listen="${2:?}"; shift ;;
    --arti-config) arti="${2:?}"; shift ;;
    --binary) binary="${2:?}"; shift ;;
    --root) root="${2:?}"; shift ;;
    --no-systemd) systemd=0 ;;
    --purge) purge=1 ;;
    --dry-run) dry=1 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
[ -n "$mode" ] || die "give --init, --join LINE-FILE or --uninstall (see --help)"
if [ -n "$root" ]; then
  mkdir -p "$root"
  root=$(cd "$root" && pwd)
  systemd=0
fi
if [ "$mode" != uninstall ]; then
  [ -n "$target" ] || die "--target is required"
  [ -n "$endpoint" ] || die "--endpoint IP:PORT is required (where the other nodes reach this one over UDP)"
fi
[ -z "$root" ] && [ "$(id -u)" != 0 ] && [ "$dry" = 0 ] && die "run as root (or --root DIR for a test install)"

bin_path="$root/usr/local/bin/rustbalance"
etc="$root/etc/rustbalance"
state="$root/var/lib/rustbalance"
node="$state/node"
config="$node/rustbalance.toml"
unit="$root/etc/systemd/system/rustbalance.service"
pidfile="$state/rustbalance.pid"
logfile="$state/rustbalance.log"
user=rustbalance
changed=0

say() { echo "deploy.sh: $*"; }
# Runs a command, or prints it with --dry-run.
act() {
  changed=1
  if [ "$dry" = 1 ]; then echo "would run: $*"; else "$@"; fi
}
as_user() {
  if [ -z "$root" ] && [ "$(id -u)" = 0 ]; then runuser -u "$user" -- "$@"; else "$@"; fi
}
running() { [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }

if [ "$mode" = uninstall ]; then
  if [ "$systemd" = 1 ] && [ -f "$unit" ]; then
    act systemctl disable --now rustbalance.service
    act rm -f "$unit"
    act systemctl daemon-reload
  fi
  if running; then
    act kill "$(cat "$pidfile")"
    [ "$dry" = 1 ] || for _ in $(seq 50); do running || break; sleep 0.2; done
    act rm -f "$pidfile"
  fi
  [ -e "$bin_path" ] && act rm -f "$bin_path"
  if [ "$purge" = 1 ]; then
    [ -e "$state" ] && act rm -rf "$state"
    [ -e "$etc" ] && act rm -rf "$etc"
    if [ -z "$root" ] && getent passwd "$user" >/dev/null; then act userdel "$user"; fi
  elif [ -e "$node" ]; then
    say "kept the node's keys and state in $state (--purge removes them)"
  fi
  [ "$changed" = 1 ] && say "uninstalled" || say "nothing to uninstall"
  exit 0
fi

# 1. The binary.
if [ -z "$binary" ]; then
  binary="$repo/target/release/rustbalance"
  if [ ! -x "$binary" ]; then
    act cargo build --release --manifest-path "$repo/Cargo.toml" --bin rustbalance
  fi
fi
[ -x "$binary" ] || [ "$dry" = 1 ] || die "$binary is not an executable"
if ! cmp -s "$binary" "$bin_path" 2>/dev/null; then
  act install -D -m 0755 "$binary" "$bin_path"
fi
rb="$bin_path"
[ "$dry" = 1 ] && [ ! -x "$rb" ] && rb="$binary"

# 2. The user and directories.
if [ -z "$root" ] && ! getent passwd "$user" >/dev/null; then
  act useradd --system --home-dir /var/lib/rustbalance --shell /usr/sbin/nologin "$user"
fi
[ -d "$etc" ] || act install -d -m 0750 "$etc"
[ -d "$state" ] || act install -d -m 0700 "$state"
if [ -z "$root" ]; then
  [ "$(stat -c %U "$state" 2>/dev/null)" = "$user" ] || act chown "$user:$user" "$state"
  [ "$(stat -c %G "$etc" 2>/dev/null)" = "$user" ] || act chown "root:$user" "$etc"
fi
arti_args=()
if [ -n "$arti" ]; then
  if ! cmp -s "$arti" "$etc/arti.toml" 2>/dev/null; then
    act install -m 0640 "$arti" "$etc/arti.toml"
    [ -z "$root" ] && act chown "root:$user" "$etc/arti.toml"
  fi
  arti_args=(--arti-config "$etc/arti.toml")
fi

# 3. The node (once).
listen_args=()
[ -n "$listen" ] && listen_args=(--listen "$listen")
if [ -f "$config" ]; then
  say "node already set up in $node: not re-created"
else
  if [ "$mode" = init ]; then
    if [ "$dry" = 1 ]; then
      echo "would run: $rb init --target <target> --endpoint $endpoint --dir $node ..."
    else
      out=$(as_user "$rb" init --target "$target" --endpoint "$endpoint" "${listen_args[@]}" \
        --dir "$node" --status-listen "$status_listen" "${arti_args[@]}")
      echo "$out" | grep -v '^rbjoin1:' | grep -v '^join line' || true
      changed=1
      line=$(echo "$out" | grep '^rbjoin1:' || true)
      if [ -n "$line" ]; then
        echo "join line (secret; valid 1 h, one node) — on the next machine, save it to a file and run"
        echo "  testing/deploy.sh --join FILE --target ... --endpoint IP:PORT"
        echo "$line"
      fi
    fi
  else
    [ -r "$line_file" ] || die "cannot read the join line file $line_file"
    if [ "$dry" = 1 ]; then
      echo "would run: $rb join --line-file $line_file --target <target> --endpoint $endpoint --dir $node ..."
    else
      tmp_line="$state/.join-line"
      install -m 0600 "$line_file" "$tmp_line"
      [ -z "$root" ] && chown "$user:$user" "$tmp_line"
      if ! as_user "$rb" join --line-file "$tmp_line" --target "$target" --endpoint "$endpoint" \
        "${listen_args[@]}" --dir "$node" --status-listen "$status_listen" "${arti_args[@]}"; then
        rm -f "$tmp_line"
        die "join failed (see above); nothing was installed for the node"
      fi
      rm -f "$tmp_line"
      changed=1
    fi
  fi
fi

# 4. Start it: a systemd unit, or a background process.
if [ "$systemd" = 1 ]; then
  unit_text=$(cat "$here/rustbalance.service")
  if [ "$(cat "$unit" 2>/dev/null)" != "$unit_text" ]; then
    if [ "$dry" = 1 ]; then echo "would write $unit"; changed=1; else
      mkdir -p "$(dirname "$unit")"; printf '%s\n' "$unit_text" > "$unit"; changed=1
      systemctl daemon-reload
    fi
  fi
  if ! systemctl is-active --quiet rustbalance.service 2>/dev/null; then
    act systemctl enable --now rustbalance.service
  fi
else
  if running; then
    say "rustbalance already running (pid $(cat "$pidfile"))"
  elif [ "$dry" = 1 ]; then
    echo "would start: $rb run -c $config (log $logfile)"; changed=1
  else
    "$rb" check-config -c "$config" >/dev/null
    nohup "$rb" run -c "$config" >>"$logfile" 2>&1 </dev/null &
    echo $! > "$pidfile"
    say "started rustbalance (pid $!, log $logfile)"
    changed=1
  fi
fi
if [ "$changed" = 0 ]; then say "nothing to do: already installed and running"; fi
