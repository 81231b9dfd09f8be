#!/usr/bin/env bash
# Damselfly vs CNCF Distribution, side by side, on this machine, in one run.
# Run with --help for details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [--only-distribution] [--no-build] [--help]
       $PROG --scaled [--s3-only | --replicas-only]

Builds damselfly-registry (cargo build --release -p damselfly-registry, in the
workspace root, shared target dir), starts it and CNCF Distribution
(docker-registry) on free loopback ports with fresh temp storage, waits for
both to answer GET /v2/, runs scripts/bench-registry.sh against each one after
the other (damselfly first, unless BENCH_DISTRIBUTION_FIRST=1) with the same
pre-generated random blobs, stops both, and prints a markdown table on stdout
(progress goes to stderr).

With --scaled, runs scripts/bench-scaled.sh instead: Damselfly and
Distribution on the same S3 bucket (SeaweedFS), blob GET proxied and
redirected, and manifest GET with 1, 2 and 3 replicas behind HAProxy.

Options:
  --scaled             the S3 and replica benchmark (scripts/bench-scaled.sh --help)
  --only-distribution  benchmark Distribution only; nothing is built
                       (same as BENCH_ONLY_DISTRIBUTION=1)
  --no-build           do not run cargo; use the existing binary
                       (same as BENCH_NO_BUILD=1)
  -h, --help           this help

Environment:
  DAMSELFLY_BIN        damselfly-registry binary to run; implies --no-build
                       [<cargo target dir>/release/damselfly-registry]
  DISTRIBUTION_BIN     Distribution binary [docker-registry from PATH]
  BENCH_TMPDIR         where the temp dir goes [\${TMPDIR:-/tmp}]; needs about
                       (2 registries + 1) x BENCH_PUSH_RUNS x BENCH_BLOB_MIB of
                       free space (2.3 GiB by default)
  BENCH_BUILD_TIMEOUT  seconds allowed for cargo build [1800]
  BENCH_START_TIMEOUT  seconds allowed for a registry to answer /v2/ [30]
  BENCH_RUN_TIMEOUT    seconds allowed for bench-registry.sh per registry [900]
  BENCH_DISTRIBUTION_FIRST  1 = benchmark Distribution before damselfly [0]
  BENCH_LOG_DIR        if set, the registries' logs, config and raw key=value
                       results are copied there on exit [unset]
  BENCH_AUTH_SCHEME    bearer: damselfly gets a token from its /auth/token,
                       as clients do, and sends it on every request;
                       basic: the admin's credentials on every request [bearer]
  BENCH_ROUNDS         alternating manifest GET rounds after the runs, 0 = none [6]
  BENCH_ROUND_SECONDS  seconds of wrk per registry and round [3]
  BENCH_BLOB_MIB, BENCH_PUSH_RUNS, BENCH_PULL_RUNS, BENCH_REPO,
  BENCH_WRK_THREADS, BENCH_WRK_CONNS, BENCH_WRK_SECONDS, BENCH_WRK_WARMUP,
  BENCH_CURL_TIMEOUT   passed to bench-registry.sh (see its --help)

Damselfly runs with token auth, the way registries are deployed, and
Distribution without any auth: damselfly's requests carry a bearer token
(an ES256 JWT) it must verify, Distribution's nothing.

Fairness settings: Distribution runs with 'log: level: warn' and
'accesslog: disabled: true' (no per-request log line) and the stock
'blobdescriptor: inmemory' cache; damselfly runs with its defaults (embedded
SQLite, successful reads logged at debug level, i.e. not at all by default).
Both run unpinned on all cores, and share them with curl/wrk.

After both runs, manifest GET is measured again in BENCH_ROUNDS short rounds
that alternate between the two registries (the order flipping each round), so
that both meet the same load on a shared machine; that row's ratio is of the
totals, and the per-round ratios are listed under the table.

Ratio column = damselfly / distribution (higher is better for req/s and
MiB/s, lower is better for latency and RSS).
Exit status: 0 if every benchmark ran and was valid, 1 otherwise.
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "[$PROG] $*" >&2; }
need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: apt-get install $2"; }

ONLY_DISTRIBUTION=${BENCH_ONLY_DISTRIBUTION:-0}
NO_BUILD=${BENCH_NO_BUILD:-0}
if [[ ${1:-} == --scaled ]]; then
  shift
  exec "$(dirname "${BASH_SOURCE[0]}")/bench-scaled.sh" "$@"
fi
while (($#)); do
  case $1 in
    --only-distribution) ONLY_DISTRIBUTION=1 ;;
    --no-build) NO_BUILD=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "$PROG: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ -n ${DAMSELFLY_BIN:-} ]] && NO_BUILD=1

BUILD_TIMEOUT=${BENCH_BUILD_TIMEOUT:-1800}
START_TIMEOUT=${BENCH_START_TIMEOUT:-30}
RUN_TIMEOUT=${BENCH_RUN_TIMEOUT:-900}

need curl curl
need wrk wrk
need timeout coreutils
need sha256sum coreutils
need awk gawk
DISTRIBUTION_BIN=${DISTRIBUTION_BIN:-$(command -v docker-registry || true)}
[[ -n $DISTRIBUTION_BIN && -x $DISTRIBUTION_BIN ]] ||
  die "docker-registry (CNCF Distribution) not found: apt-get install docker-registry (or set DISTRIBUTION_BIN)"

# ------------------------------------------------------------ temp dir, cleanup

TMP=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/damselfly-bench.XXXXXX")
PIDS=()
stop_pid() { # stop_pid <pid>: TERM, wait up to 10 s, then KILL
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid did not stop on SIGTERM within 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}
# Long-running children (cargo, bench-registry.sh) run under timeout(1) in the
# background and are waited for, so that a signal to this script is handled at
# once; timeout(1) passes SIGTERM on to its whole process group.
CHILD=
run_child() { # run_child <command...>: run in the background, wait, return its status
  "$@" &
  CHILD=$!
  local rc=0
  wait "$CHILD" || rc=$?
  CHILD=
  return "$rc"
}
# shellcheck disable=SC2317 # invoked through the EXIT trap
cleanup() {
  local pid
  if [[ -n $CHILD ]]; then stop_pid "$CHILD"; fi
  for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
  if [[ -n ${BENCH_LOG_DIR:-} ]]; then
    if mkdir -p "$BENCH_LOG_DIR"; then
      cp "$TMP"/*.log "$TMP"/*.result "$TMP"/*.yml "$BENCH_LOG_DIR"/ 2>/dev/null || true
    fi
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------ build

DAMSELFLY_PROFILE=-
if ((!ONLY_DISTRIBUTION)); then
  if [[ -z ${DAMSELFLY_BIN:-} ]]; then
    need cargo "Rust (https://rustup.rs)"
    TARGET_DIR=${CARGO_TARGET_DIR:-}
    if [[ -z $TARGET_DIR ]]; then
      TARGET_DIR=$(cd "$ROOT" && cargo metadata --no-deps --format-version 1 2>/dev/null |
        sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
      [[ -n $TARGET_DIR ]] || TARGET_DIR=$ROOT/target
    fi
    DAMSELFLY_BIN=$TARGET_DIR/release/damselfly-registry
  fi
  if ((!NO_BUILD)); then
    log "building: cargo build --release -p damselfly-registry (in $ROOT)"
    cd "$ROOT"
    run_child timeout "$BUILD_TIMEOUT" cargo build --release -p damselfly-registry ||
      die "cargo build --release -p damselfly-registry failed (or took more than ${BUILD_TIMEOUT}s)"
  fi
  [[ -x $DAMSELFLY_BIN ]] ||
    die "damselfly binary not found at $DAMSELFLY_BIN (build it, set DAMSELFLY_BIN, or use --only-distribution)"
  case $DAMSELFLY_BIN in
    */release/*) DAMSELFLY_PROFILE=release ;;
    */debug/*)
      DAMSELFLY_PROFILE=debug
      log "WARNING: $DAMSELFLY_BIN is a DEBUG build: its numbers are meaningless for comparison"
      ;;
    *) DAMSELFLY_PROFILE=unknown ;;
  esac
fi

# ------------------------------------------------------------ helpers

free_port() {
  local p
  for p in $(shuf -i 20000-45000 -n 100); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  die "could not find a free loopback port"
}

# wait_ready <name> <pid> <url> <logfile>
wait_ready() {
  local name=$1 pid=$2 url=$3 logf=$4 code deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      local rc=0
      wait "$pid" 2>/dev/null || rc=$?
      echo "---- last lines of $name log ($logf):" >&2
      tail -n 30 "$logf" >&2 || true
      echo "---- end of log" >&2
      die "$name (pid $pid) exited with status $rc before answering $url/v2/"
    fi
    code=$(curl -s --max-time 2 -o /dev/null -w '%{http_code}' "$url/v2/" || true)
    # 401 is a registry that is up and asks for a login (the token challenge).
    if [[ $code == 200 || $code == 401 ]]; then
      log "$name is up at $url (pid $pid)"
      return 0
    fi
    sleep 0.2
  done
  echo "---- last lines of $name log ($logf):" >&2
  tail -n 30 "$logf" >&2 || true
  die "$name did not answer GET $url/v2/ with 200 or 401 within ${START_TIMEOUT}s (last status: ${code:-none})"
}

# ------------------------------------------------------------ machine check

load=$(awk '{print $1}' /proc/loadavg)
log "machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), load average $load"
if awk -v l="$load" 'BEGIN { exit !(l > 0.5) }'; then
  log "WARNING: 1-minute load average is $load: the machine is (or just was) busy, numbers may be noisy"
fi

# ------------------------------------------------------------ blobs (outside any timing)

export BENCH_BLOB_DIR=$TMP/blobs
"$SCRIPT_DIR/bench-registry.sh" --prepare-blobs "$BENCH_BLOB_DIR"

# ------------------------------------------------------------ start registries

NAMES=()
declare -A URL PID LOGF

# Damselfly requires a login; the benchmark logs in as the admin at its token
# endpoint, as clients do, and sends the bearer token on every request
# (bench-registry.sh, BENCH_AUTH_SCHEME). Distribution runs without auth.
BENCH_ADMIN_PASSWORD=bench-admin-password
if ((!ONLY_DISTRIBUTION)); then
  port=$(free_port)
  mkdir -p "$TMP/damselfly-data"
  LOGF[damselfly]=$TMP/damselfly.log
  log "starting $DAMSELFLY_BIN on 127.0.0.1:$port"
  DAMSELFLY_LISTEN=127.0.0.1:$port DAMSELFLY_DATA_DIR=$TMP/damselfly-data \
    DAMSELFLY_ADMIN_PASSWORD=$BENCH_ADMIN_PASSWORD "$DAMSELFLY_BIN" >"${LOGF[damselfly]}" 2>&1 &
  PID[damselfly]=$!
  PIDS+=("${PID[damselfly]}")
  URL[damselfly]=http://127.0.0.1:$port
  NAMES+=(damselfly)
fi

port=$(free_port)
mkdir -p "$TMP/distribution-data"
cat >"$TMP/distribution.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $TMP/distribution-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: damselfly-bench-not-a-secret
EOF
LOGF[distribution]=$TMP/distribution.log
log "starting $DISTRIBUTION_BIN on 127.0.0.1:$port"
"$DISTRIBUTION_BIN" serve "$TMP/distribution.yml" >"${LOGF[distribution]}" 2>&1 &
PID[distribution]=$!
PIDS+=("${PID[distribution]}")
URL[distribution]=http://127.0.0.1:$port
NAMES+=(distribution)

for n in "${NAMES[@]}"; do wait_ready "$n" "${PID[$n]}" "${URL[$n]}" "${LOGF[$n]}"; done
if [[ ${BENCH_DISTRIBUTION_FIRST:-0} == 1 && ${#NAMES[@]} == 2 ]]; then
  NAMES=(distribution damselfly)
fi

# ------------------------------------------------------------ run

declare -A STATUS
for n in "${NAMES[@]}"; do
  log "==== benchmarking $n at ${URL[$n]}"
  rc=0
  auth=""
  [[ $n == damselfly ]] && auth="admin:$BENCH_ADMIN_PASSWORD"
  export BENCH_AUTH=$auth
  run_child timeout --kill-after=10 "$RUN_TIMEOUT" "$SCRIPT_DIR/bench-registry.sh" "${URL[$n]}" "${PID[$n]}" \
    >"$TMP/$n.result" || rc=$?
  case $rc in
    0) STATUS[$n]=ok ;;
    3) STATUS[$n]=invalid; log "$n: run INVALID: $(awk -F= '$1=="invalid"{print $2}' "$TMP/$n.result")" ;;
    124 | 137) STATUS[$n]=failed; log "$n: bench-registry.sh timed out after ${RUN_TIMEOUT}s" ;;
    *) STATUS[$n]=failed; log "$n: bench-registry.sh failed (exit $rc)" ;;
  esac
  if ! kill -0 "${PID[$n]}" 2>/dev/null; then
    STATUS[$n]=failed
    log "$n (pid ${PID[$n]}) is no longer running; last lines of its log:"
    tail -n 30 "${LOGF[$n]}" >&2 || true
  fi
done

# ------------------------------------------------------------ alternating rounds

# The runs above measure one registry after the other, and on a shared
# machine the load moves between them. Manifest GET is measured again in short
# rounds that alternate between the two (the order flipping every round), so
# both meet the same load; the ratio of their totals is the one to quote.
ROUNDS=${BENCH_ROUNDS:-6}
ROUND_SECONDS=${BENCH_ROUND_SECONDS:-3}
declare -A ROUND_REQ ROUND_SEC ROUND_RPS
ROUND_RATIOS=()
ROUNDS_OK=0
if ((ROUNDS > 0)) && [[ ${STATUS[damselfly]:-} == ok && ${STATUS[distribution]:-} == ok ]]; then
  ROUNDS_OK=1
  for n in damselfly distribution; do ROUND_REQ[$n]=0; ROUND_SEC[$n]=0; done
  for ((r = 1; r <= ROUNDS; r++)); do
    order=(damselfly distribution)
    ((r % 2 == 0)) && order=(distribution damselfly)
    for n in "${order[@]}"; do
      auth=""
      [[ $n == damselfly ]] && auth="admin:$BENCH_ADMIN_PASSWORD"
      rc=0
      BENCH_AUTH=$auth BENCH_WRK_SECONDS=$ROUND_SECONDS BENCH_WRK_WARMUP=0 \
        run_child timeout --kill-after=10 $((ROUND_SECONDS + 60)) "$SCRIPT_DIR/bench-registry.sh" --manifest-only \
        "${URL[$n]}" >"$TMP/$n.round$r" || rc=$?
      if ((rc != 0)); then
        log "round $r: $n failed (exit $rc): $(cat "$TMP/$n.round$r")"
        ROUNDS_OK=0
        continue
      fi
      req=$(awk -F= '$1 == "manifest_requests" { print $2 }' "$TMP/$n.round$r")
      sec=$(awk -F= '$1 == "manifest_duration_s" { print $2 }' "$TMP/$n.round$r")
      ROUND_REQ[$n]=$((ROUND_REQ[$n] + req))
      ROUND_SEC[$n]=$(awk -v a="${ROUND_SEC[$n]}" -v b="$sec" 'BEGIN { printf "%.3f", a + b }')
      ROUND_RPS[$n,$r]=$(awk -v q="$req" -v t="$sec" 'BEGIN { printf "%.0f", q / t }')
    done
    if [[ -n ${ROUND_RPS[damselfly,$r]:-} && -n ${ROUND_RPS[distribution,$r]:-} ]]; then
      ROUND_RATIOS+=("$(awk -v a="${ROUND_RPS[damselfly,$r]}" -v b="${ROUND_RPS[distribution,$r]}" 'BEGIN { printf "%.2f", a / b }')")
      log "round $r: damselfly ${ROUND_RPS[damselfly,$r]} req/s, distribution ${ROUND_RPS[distribution,$r]} req/s"
    fi
  done
fi

# Registry logs at warn+ level should be (nearly) empty; show what they said.
for n in "${NAMES[@]}"; do
  lines=$(wc -l <"${LOGF[$n]}")
  if ((lines > 0)); then
    log "$n wrote $lines log lines; the first 5:"
    head -n 5 "${LOGF[$n]}" | sed 's/\x1b\[[0-9;]*m//g' | cut -c1-300 >&2
  fi
done

load_end=$(awk '{print $1, $2, $3}' /proc/loadavg)
for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
PIDS=()

# ------------------------------------------------------------ report

get() { # get <name> <key>
  [[ -f $TMP/$1.result ]] || return 0
  awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print v }' "$TMP/$1.result"
}
cell() { # cell <name> <key>: value, or a marker when missing
  local v
  if [[ ${STATUS[$1]:-skipped} == skipped ]]; then echo "—"; return; fi
  v=$(get "$1" "$2")
  if [[ -z $v ]]; then
    echo "FAILED"
  elif [[ ${STATUS[$1]} == invalid && $2 == manifest_* ]]; then
    echo "INVALID ($v)"
  else
    echo "$v"
  fi
}
ratio() { # ratio <key>
  local a b
  a=$(get damselfly "$1")
  b=$(get distribution "$1")
  [[ ${STATUS[damselfly]:-} == ok && ${STATUS[distribution]:-} == ok ]] || { echo ""; return; }
  [[ -n $a && -n $b ]] || { echo ""; return; }
  awk -v a="$a" -v b="$b" 'BEGIN { if (b + 0 == 0) print ""; else printf "%.2f×", a / b }'
}

MIB=${BENCH_BLOB_MIB:-256}
CONNS=${BENCH_WRK_CONNS:-32}
row() { # row <label> <key>
  printf '| %s | %s | %s | %s |\n' "$1" "$(cell damselfly "$2")" "$(cell distribution "$2")" "$(ratio "$2")"
}

dist_version=$("$DISTRIBUTION_BIN" --version 2>/dev/null | head -n 1 | sed 's/^[^ ]* //' || true)
echo
echo "| metric | damselfly | distribution | ratio |"
echo "| --- | ---: | ---: | ---: |"
row "manifest GET by tag, req/s @$CONNS conns" manifest_rps
if ((ROUNDS_OK)); then
  rps_d=$(awk -v q="${ROUND_REQ[damselfly]}" -v t="${ROUND_SEC[damselfly]}" 'BEGIN { printf "%.2f", q / t }')
  rps_b=$(awk -v q="${ROUND_REQ[distribution]}" -v t="${ROUND_SEC[distribution]}" 'BEGIN { printf "%.2f", q / t }')
  printf '| manifest GET by tag, req/s @%s conns, %s alternating rounds of %s s | %s | %s | %s |\n' "$CONNS" "$ROUNDS" \
    "$ROUND_SECONDS" "$rps_d" "$rps_b" "$(awk -v a="$rps_d" -v b="$rps_b" 'BEGIN { printf "%.2f×", a / b }')"
fi
row "manifest GET by tag, p99 latency ms @$CONNS conns" manifest_lat_p99_ms
row "blob GET $MIB MiB, MiB/s (median of ${BENCH_PULL_RUNS:-5})" blob_get_mibs_median
row "monolithic push $MIB MiB, MiB/s (median of ${BENCH_PUSH_RUNS:-3})" push_mibs_median
row "peak RSS (VmHWM), MiB" peak_rss_mib
echo
echo "ratio = damselfly / distribution. Machine: $(nproc) cores, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), load average before the run $load, after it (1, 5, 15 min) $load_end."
if ((!ONLY_DISTRIBUTION)); then
  echo "damselfly: $DAMSELFLY_BIN ($DAMSELFLY_PROFILE build), embedded SQLite, default logging${RUST_LOG:+, RUST_LOG=$RUST_LOG}; requests authenticated with $(get damselfly auth) credentials (a bearer token from /auth/token, as clients send, or Basic)."
  echo "distribution: no auth."
fi
echo "distribution: $DISTRIBUTION_BIN (${dist_version:-version unknown}), filesystem storage, log level warn, access log disabled, blobdescriptor cache inmemory."
echo "wrk -t${BENCH_WRK_THREADS:-2} -c$CONNS -d${BENCH_WRK_SECONDS:-10}s after a ${BENCH_WRK_WARMUP:-2}s warm-up; the same random blobs were pushed to both registries; registries were benchmarked one after the other (${NAMES[*]})."
if ((ROUNDS_OK)); then
  echo "Alternating rounds, damselfly/distribution per round: ${ROUND_RATIOS[*]/%/×} (median $(printf '%s\n' "${ROUND_RATIOS[@]}" | sort -g | awk '{a[NR]=$1} END { if (NR % 2) print a[(NR+1)/2]; else printf "%.2f", (a[NR/2]+a[NR/2+1])/2 }')×)."
fi
echo
echo "Raw runs:"
for n in "${NAMES[@]}"; do
  echo "- $n (${STATUS[$n]}): push MiB/s [$(get "$n" push_runs_mibs)], blob GET MiB/s [$(get "$n" blob_get_runs_mibs)]," \
    "manifest GET $(get "$n" manifest_requests) requests, non-2xx $(get "$n" manifest_err_status)," \
    "socket errors connect/read/write/timeout $(get "$n" manifest_err_connect)/$(get "$n" manifest_err_read)/$(get "$n" manifest_err_write)/$(get "$n" manifest_err_timeout)," \
    "p50 $(get "$n" manifest_lat_p50_ms) ms, end RSS $(get "$n" end_rss_mib) MiB, server CPU $(get "$n" server_cpu_s) s"
done

for n in "${NAMES[@]}"; do
  [[ ${STATUS[$n]} == ok ]] || exit 1
done
exit 0
