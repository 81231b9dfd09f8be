#!/usr/bin/env bash
# Damselfly on S3 (SeaweedFS) against CNCF Distribution on the same bucket,
# and Damselfly's manifest GET throughput with 1, 2 and 3 replicas behind
# HAProxy; one run, on this machine. Run with --help for details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [--s3-only | --replicas-only] [--help]

Starts a private PostgreSQL server and SeaweedFS's S3 gateway with one bucket
(scripts/lib/scaled.sh, as scripts/run-scaled.sh does), then:

S3 rows. Damselfly (PostgreSQL metadata, blobs under the bucket's damselfly/
prefix) and Distribution (docker-registry, its s3 driver with regionendpoint
set to the same gateway, rootdirectory /distribution, inmemory blob
descriptor cache, log level warn, no access log) are benchmarked one after
the other with scripts/bench-registry.sh: 256 MiB pushes, manifest GET by tag
under wrk, blob GET proxied through the registry (Damselfly's default,
Distribution's redirect disabled). Then a second process of each on the same
data with redirects on (Damselfly --s3-redirect, Distribution's default)
runs the blob GET only: the client follows a 307 to a presigned URL.

Replica rows. Three replicas on the same database and bucket; HAProxy in
front of 1, 2 and 3 of them; manifest GET by tag under wrk through each, and
straight to one replica without HAProxy. For each run the CPU time of the
replicas, HAProxy and PostgreSQL, and the machine's busy share, say what
limits the figure.

Progress goes to stderr; markdown tables to stdout.

Environment: DAMSELFLY_REGISTRY_BIN (a release build is made if unset),
DISTRIBUTION_BIN [docker-registry], DAMSELFLY_WEED_BIN, and the BENCH_*
settings of scripts/bench-registry.sh (BENCH_BLOB_MIB, BENCH_PUSH_RUNS,
BENCH_PULL_RUNS, BENCH_WRK_CONNS, BENCH_WRK_SECONDS, …).
EOF
}

MODE=all
while (($#)); do
  case $1 in
    --s3-only) MODE=s3 ;;
    --replicas-only) MODE=replicas ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$PROG: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=scripts/lib/scaled.sh
. "$SCRIPT_DIR/lib/scaled.sh"
log() { echo "[$PROG] $*" >&2; }
scaled_need wrk "apt-get install wrk"
scaled_need haproxy "apt-get install haproxy"
DISTRIBUTION_BIN=${DISTRIBUTION_BIN:-$(command -v docker-registry || true)}
[[ -n $DISTRIBUTION_BIN ]] || scaled_fail "docker-registry (CNCF Distribution) not found: apt-get install docker-registry"

registry_binary "$ROOT"
case $bin in */debug/*) log "WARNING: $bin is a DEBUG build: its numbers are meaningless for comparison" ;; esac
scaled_init
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  trap '' INT TERM
  scaled_stop
}
trap cleanup EXIT
trap 'exit 130' INT TERM

load=$(awk '{print $1, $2, $3}' /proc/loadavg)
log "machine: $(nproc) cores, load average $load"

export BENCH_BLOB_DIR=$work/blobs
"$SCRIPT_DIR/bench-registry.sh" --prepare-blobs "$BENCH_BLOB_DIR"
start_postgres
start_seaweedfs "$ROOT" bench
password=bench-admin-password
log "PostgreSQL at $database_url, SeaweedFS S3 at $s3_endpoint"

# run_bench NAME URL PID STEPS AUTH: bench-registry.sh's key=value lines into $work/NAME.result
run_bench() {
  local name=$1 url=$2 pid=$3 steps=$4 auth=$5
  log "==== $name at $url ($steps)"
  BENCH_STEPS=$steps BENCH_AUTH=$auth timeout --kill-after=10 900 "$SCRIPT_DIR/bench-registry.sh" "$url" "$pid" \
    >"$work/$name.result" || log "$name: bench-registry.sh failed (exit $?)"
}
get() { awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print v }' "$work/$1.result" 2>/dev/null; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print ""; else printf "%.2f×", a / b }'; }
stop() { # stop PID
  kill "$1" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$1" 2>/dev/null || true
}

# start_distribution NAME REDIRECT(true|false): Distribution on the bucket; sets dist_url, dist_pid.
start_distribution() {
  local name=$1 redirect=$2 port
  port=$(free_port)
  cat >"$work/$name.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  s3:
    accesskey: $access_key
    secretkey: $secret_key
    region: us-east-1
    regionendpoint: $s3_endpoint
    bucket: bench
    rootdirectory: /distribution
    secure: false
    v4auth: true
  redirect:
    disable: $([[ $redirect == true ]] && echo false || echo true)
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: damselfly-bench-not-a-secret
EOF
  # Its AWS SDK fails to start on a custom CA bundle (AWS_CA_BUNDLE), which a plain-HTTP endpoint does not need.
  env -u AWS_CA_BUNDLE "$DISTRIBUTION_BIN" serve "$work/$name.yml" >"$work/$name.log" 2>&1 &
  dist_pid=$!
  pids+=("$dist_pid")
  dist_url=http://127.0.0.1:$port
  for _ in $(seq 1 150); do
    curl -fsS -o /dev/null "$dist_url/v2/" 2>/dev/null && return 0
    sleep 0.2
  done
  tail -n 20 "$work/$name.log" >&2
  scaled_fail "$name did not answer $dist_url/v2/"
}

MIB=${BENCH_BLOB_MIB:-256}
CONNS=${BENCH_WRK_CONNS:-32}
if [[ $MODE != replicas ]]; then
  port=$(free_port)
  start_replica d-proxied "127.0.0.1:$port" "http://127.0.0.1:$port" bench DAMSELFLY_S3_PREFIX=damselfly/
  d_pid=$last_pid
  run_bench damselfly "http://127.0.0.1:$port" "$d_pid" push,manifest,blob "admin:$password"
  stop "$d_pid"
  start_distribution distribution false
  run_bench distribution "$dist_url" "$dist_pid" push,manifest,blob ""
  stop "$dist_pid"
  # The same data, read through a 307 to a presigned URL.
  port=$(free_port)
  start_replica d-redirect "127.0.0.1:$port" "http://127.0.0.1:$port" bench DAMSELFLY_S3_PREFIX=damselfly/ \
    DAMSELFLY_S3_REDIRECT=true
  d_pid=$last_pid
  run_bench damselfly-redirect "http://127.0.0.1:$port" "$d_pid" blob "admin:$password"
  stop "$d_pid"
  start_distribution distribution-redirect true
  run_bench distribution-redirect "$dist_url" "$dist_pid" blob ""
  stop "$dist_pid"

  row() { # row LABEL KEY [damselfly-name distribution-name]
    local a b
    a=$(get "${3:-damselfly}" "$2")
    b=$(get "${4:-distribution}" "$2")
    printf '| %s | %s | %s | %s |\n' "$1" "${a:-FAILED}" "${b:-FAILED}" "$(ratio "$a" "$b")"
  }
  echo
  echo "| S3 (SeaweedFS), one process each | damselfly | distribution | ratio |"
  echo "| --- | ---: | ---: | ---: |"
  row "manifest GET by tag, req/s @$CONNS conns" manifest_rps
  row "manifest GET by tag, p99 latency ms @$CONNS conns" manifest_lat_p99_ms
  row "blob GET $MIB MiB proxied, MiB/s (median of ${BENCH_PULL_RUNS:-5})" blob_get_mibs_median
  row "blob GET $MIB MiB redirected (307), MiB/s (median of ${BENCH_PULL_RUNS:-5})" blob_get_mibs_median \
    damselfly-redirect distribution-redirect
  row "monolithic push $MIB MiB, MiB/s (median of ${BENCH_PUSH_RUNS:-3})" push_mibs_median
  row "peak RSS (VmHWM), MiB" peak_rss_mib
  echo
  echo "ratio = damselfly / distribution. damselfly: $bin, PostgreSQL metadata, blobs in bucket bench under damselfly/."
  echo "distribution: $DISTRIBUTION_BIN ($("$DISTRIBUTION_BIN" --version 2>/dev/null | awk '{print $3}')), s3 driver (regionendpoint $s3_endpoint), rootdirectory /distribution, inmemory blob descriptor cache."
  for n in damselfly distribution damselfly-redirect distribution-redirect; do
    echo "- $n: push MiB/s [$(get $n push_runs_mibs)], blob GET MiB/s [$(get $n blob_get_runs_mibs)], manifest non-2xx $(get $n manifest_err_status), server CPU $(get $n server_cpu_s) s"
  done
fi

if [[ $MODE != s3 ]]; then
  cpu_of() { # CPU seconds (user+system) of the pids given
    local hz total=0 pid t
    hz=$(getconf CLK_TCK)
    for pid in "$@"; do
      t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
      total=$((total + t))
    done
    awk -v t="$total" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz }'
  }
  pg_cpu() { # the PostgreSQL server's processes: the postmaster and its children
    local master children
    master=$(head -n 1 "$work/postgres/data/postmaster.pid")
    read -ra children <<<"$(pgrep -P "$master" | tr '\n' ' ')"
    cpu_of "$master" "${children[@]}"
  }
  busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

  base=$(free_port)
  replica_pids=()
  backends=()
  for i in 1 2 3; do
    port=$(free_port)
    start_replica "replica-$i" "127.0.0.1:$port" "http://127.0.0.1:$base" bench DAMSELFLY_S3_PREFIX=damselfly/
    replica_pids+=("$last_pid")
    backends+=("127.0.0.1:$port")
  done
  declare -A front front_pid
  for n in 1 2 3; do
    p=$(free_port)
    start_haproxy "haproxy-$n" "127.0.0.1:$p" "${backends[@]:0:n}"
    front[$n]=http://127.0.0.1:$p
    front_pid[$n]=$last_pid
  done
  echo
  echo "| manifest GET by tag @$CONNS conns | req/s | p99 ms | replicas CPU | HAProxy CPU | PostgreSQL CPU | machine busy |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  for run in direct 1 2 3; do
    if [[ $run == direct ]]; then
      url=http://${backends[0]}; label="1 replica, no HAProxy"; hp=()
    else
      url=${front[$run]}; label="$run replica(s) behind HAProxy"; hp=("${front_pid[$run]}")
    fi
    r0=$(cpu_of "${replica_pids[@]}"); h0=$(cpu_of "${hp[@]}"); p0=$(pg_cpu); read -r b0 t0 <<<"$(busy_jiffies)"
    start=$(date +%s.%N)
    run_bench "replicas-$run" "$url" "" manifest "admin:$password"
    end=$(date +%s.%N)
    r1=$(cpu_of "${replica_pids[@]}"); h1=$(cpu_of "${hp[@]}"); p1=$(pg_cpu); read -r b1 t1 <<<"$(busy_jiffies)"
    share() { awk -v a="$1" -v b="$2" -v s="$start" -v e="$end" 'BEGIN { printf "%.0f %%", (b - a) * 100 / (e - s) }'; }
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "$(get "replicas-$run" manifest_rps)" \
      "$(get "replicas-$run" manifest_lat_p99_ms)" "$(share "$r0" "$r1")" "$(share "$h0" "$h1")" "$(share "$p0" "$p1")" \
      "$(awk -v b0="$b0" -v b1="$b1" -v t0="$t0" -v t1="$t1" 'BEGIN { printf "%.0f %% of %d cores", (b1 - b0) * 100 / (t1 - t0), '"$(nproc)"' }')"
  done
  echo
  echo "CPU columns: CPU time over the run's wall time (100 % = one core), warm-up, manifest push and measured run together;"
  echo "what the replicas, HAProxy and PostgreSQL do not use of the machine's busy share is wrk's (and other processes')."
fi
echo
echo "Load average before the run: $load."
