#!/usr/bin/env bash
# The long form of the load campaign (tests/tests/load.rs runs a short form
# in CI). Run with --help for details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [--backend sqlite|postgres|both] [--pullers N] [--pulls-per-client N]
             [--pushers N] [--images N] [--layers N] [--layer-kib N] [--no-build] [--help]

Builds the release damselfly-registry and damselfly-load (cargo build --release),
then, for each metadata backend, starts the registry on a free loopback port
with fresh temp storage (and, for PostgreSQL, a database of its own, dropped
at the end) and runs damselfly-load against it:

  1. seeds IMAGES images (a config and LAYERS layers of LAYER_KIB KiB each)
     in the namespace 'load';
  2. pull: PULLERS clients start at once; each pings /v2/, reads the Bearer
     challenge, and pulls PULLS_PER_CLIENT images, each with a token for the
     repository's pull scope from the token endpoint (Basic credentials, as
     docker and containerd do), the manifest by tag, then config and layers,
     every body checked against its digest;
  3. push: PUSHERS clients start at once and push one distinct image each
     (token, then per blob HEAD, POST and PUT ?digest=, then the manifest),
     and read the tag back.

Every client has its own connections. Loops are bounded by their counts,
each request by a 120 s timeout, each backend's run by LOAD_TIMEOUT; the
script stops the registry and removes everything it made.

Prints, per backend, a markdown table: per phase the clients, requests,
errors, seconds, req/s, MiB/s, p50/p99/max latency, and the registry's peak
open file descriptors (sampled from /proc/<pid>/fd every 20 ms) and peak RSS
(VmHWM); then one row per kind of request. Exit status 1 if any request
failed (the target is 0 errors), 2 on a usage or setup error.

Options (defaults in brackets):
  --backend B          sqlite, postgres or both [both]
  --pullers N          clients pulling at once [1000]
  --pulls-per-client N images each puller pulls [5]
  --pushers N          clients pushing at once [200]
  --images N           images seeded for the pullers [20]
  --layers N           layers per image [2]
  --layer-kib N        KiB per layer [256]
  --no-build           use the binaries already in target/release
  -h, --help           this help

Environment:
  DAMSELFLY_TEST_POSTGRES_URL  PostgreSQL server for --backend postgres/both,
                       e.g. postgres://postgres@127.0.0.1:5432/postgres; the
                       script creates and drops its own database there
  LOAD_TMPDIR          where the temp dir goes [\${TMPDIR:-/tmp}]
  LOAD_TIMEOUT         seconds allowed per backend's run [900]
  LOAD_NOFILE          the open-file limit set for the registry and the
                       clients (ulimit -n) [65536]
  CARGO_TARGET_DIR     as for cargo [<repo>/target]
  DAMSELFLY_BIN        damselfly-registry binary to run; with DAMSELFLY_LOAD_BIN
                       (the damselfly-load binary) implies --no-build
                       [<cargo target dir>/release/...]
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 2; }
log() { echo "[$PROG] $*" >&2; }

backend=both pullers=1000 pulls=5 pushers=200 images=20 layers=2 layer_kib=256 build=1
while (($#)); do
  case $1 in
    --backend) backend=${2:?}; shift ;;
    --pullers) pullers=${2:?}; shift ;;
    --pulls-per-client) pulls=${2:?}; shift ;;
    --pushers) pushers=${2:?}; shift ;;
    --images) images=${2:?}; shift ;;
    --layers) layers=${2:?}; shift ;;
    --layer-kib) layer_kib=${2:?}; shift ;;
    --no-build) build=0 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$PROG: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for n in "$pullers" "$pulls" "$pushers" "$images" "$layers" "$layer_kib"; do
  [[ $n =~ ^[0-9]+$ ]] || die "'$n' is not a count"
done
case $backend in
  sqlite) backends=(sqlite) ;;
  postgres) backends=(postgres) ;;
  both) backends=(sqlite postgres) ;;
  *) die "--backend takes sqlite, postgres or both, not '$backend'" ;;
esac
if [[ " ${backends[*]} " == *" postgres "* ]]; then
  [[ -n ${DAMSELFLY_TEST_POSTGRES_URL:-} ]] ||
    die "DAMSELFLY_TEST_POSTGRES_URL is not set: point it at a PostgreSQL server the script may create a database on, or use --backend sqlite"
  command -v psql >/dev/null || die "psql not found: apt-get install postgresql-client"
fi
command -v curl >/dev/null || die "curl not found: apt-get install curl"

# A thousand clients hold a thousand sockets, and the registry as many again.
nofile=${LOAD_NOFILE:-65536}
ulimit -n "$nofile" 2>/dev/null || ulimit -n "$(ulimit -Hn)" ||
  die "could not raise the open-file limit to $nofile (ulimit -n); run as root or lower LOAD_NOFILE"
log "open-file limit: $(ulimit -n)"

cd "$ROOT"
target_dir=${CARGO_TARGET_DIR:-$ROOT/target}
[[ -n ${DAMSELFLY_BIN:-} && -n ${DAMSELFLY_LOAD_BIN:-} ]] && build=0
if ((build)); then
  log "building release binaries"
  cargo build --release -p damselfly-registry -p damselfly-tests --bin damselfly-registry --bin damselfly-load >&2
fi
registry_bin=${DAMSELFLY_BIN:-$target_dir/release/damselfly-registry}
load_bin=${DAMSELFLY_LOAD_BIN:-$target_dir/release/damselfly-load}
[[ -x $registry_bin && -x $load_bin ]] || die "$registry_bin or $load_bin is missing: run without --no-build"

password="load-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
tmp=$(mktemp -d "${LOAD_TMPDIR:-${TMPDIR:-/tmp}}/damselfly-load.XXXXXX")
registry_pid='' database=''
cleanup() {
  if [[ -n $registry_pid ]] && kill -0 "$registry_pid" 2>/dev/null; then
    kill -TERM "$registry_pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$registry_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  registry_pid=''
  if [[ -n $database ]]; then
    psql "$DAMSELFLY_TEST_POSTGRES_URL" -q -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
    database=''
  fi
}
trap 'cleanup; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

status=0
for b in "${backends[@]}"; do
  data=$tmp/$b
  mkdir -p "$data"
  if [[ $b == postgres ]]; then
    database="damselfly_load_$$"
    psql "$DAMSELFLY_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -q -c "CREATE DATABASE $database" ||
      die "could not create database $database on $DAMSELFLY_TEST_POSTGRES_URL"
    database_url="${DAMSELFLY_TEST_POSTGRES_URL%/*}/$database"
  else
    database_url="sqlite://$data/metadata.db"
  fi
  port=$(free_port)
  url="http://127.0.0.1:$port"
  DAMSELFLY_LISTEN="127.0.0.1:$port" DAMSELFLY_DATA_DIR="$data" DAMSELFLY_DATABASE_URL="$database_url" \
    DAMSELFLY_ADMIN_PASSWORD="$password" DAMSELFLY_LOG_FORMAT=json RUST_LOG=warn \
    "$registry_bin" >"$tmp/registry-$b.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 300); do
    curl -fsS "$url/readyz" >/dev/null 2>&1 && break
    kill -0 "$registry_pid" 2>/dev/null || { cat "$tmp/registry-$b.log" >&2; die "the registry exited during start"; }
    sleep 0.1
  done
  curl -fsS "$url/readyz" >/dev/null || die "the registry did not become ready in 30 s"
  log "$b: registry pid $registry_pid at $url; $pullers pullers x $pulls pulls of $images images, $pushers pushers"
  echo "## $b: $pullers pullers x $pulls pulls of $images images ($layers x $layer_kib KiB layers), $pushers pushers"
  echo
  run_status=0
  timeout "${LOAD_TIMEOUT:-900}" "$load_bin" --url "$url" --user admin --password "$password" \
    --images "$images" --layers "$layers" --layer-kib "$layer_kib" --pullers "$pullers" \
    --pulls-per-client "$pulls" --pushers "$pushers" --registry-pid "$registry_pid" || run_status=$?
  echo
  if ((run_status != 0)); then
    status=1
    log "$b: damselfly-load exited with $run_status; the registry's warnings and errors:"
    grep -E '"level":"(WARN|ERROR)"' "$tmp/registry-$b.log" | tail -n 20 >&2 || true
  fi
  cleanup
done
exit "$status"
