#!/usr/bin/env bash
# Benchmark ONE OCI registry (plain HTTP, no auth) through the OCI
# Distribution API.  Prints key=value lines on stdout (progress on stderr).
# Run with --help for details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG <base-url> [pid]
       $PROG --manifest-only <base-url>
       $PROG --prepare-blobs <dir>
       $PROG --help

Benchmarks one OCI registry at <base-url> (e.g. http://127.0.0.1:5000; plain
HTTP) and prints machine-readable key=value lines on stdout. Progress and
diagnostics go to stderr.

With BENCH_AUTH, it authenticates the way docker, podman and containerd do:
before each step it reads the Bearer challenge of GET /v2/, logs in at the
challenge's realm with those credentials (HTTP Basic) for the step's scope,
and sends the bearer token it gets on every request of the step. A registry
that does not challenge with Bearer gets the credentials as HTTP Basic on
every request instead; BENCH_AUTH_SCHEME=basic forces that.

Steps:
  1. push: ${BENCH_PUSH_RUNS:-3} distinct random blobs of ${BENCH_BLOB_MIB:-256} MiB, each monolithically
     (POST /v2/<repo>/blobs/uploads/ -> Location, PUT <Location>&digest=...),
     timed with curl (POST + PUT time); median MiB/s is reported.
     Then a small config blob and an OCI image manifest (config + the first
     big layer) tagged 'bench'.
  2. manifest GET by tag: checks one GET with curl (200, body == pushed
     manifest), then wrk (warm-up, then -t\$BENCH_WRK_THREADS -c\$BENCH_WRK_CONNS
     -d\${BENCH_WRK_SECONDS}s) with an Accept header for the OCI and Docker v2
     manifest types. Any non-2xx/3xx response makes the run invalid.
  3. blob GET of the first big blob: one verified download (sha256 must
     match the digest), then ${BENCH_PULL_RUNS:-5} timed downloads to /dev/null; median MiB/s.
  4. if [pid] is given: VmHWM (peak RSS) and VmRSS of that process, read at
     the end, in MiB, plus its total CPU time.

Exit status: 0 ok, 3 ran to the end but the result is invalid (see
'invalid=' line), 1 fatal error, 2 usage error.

--manifest-only <base-url>: only step 2's wrk run (no warm-up unless
  BENCH_WRK_WARMUP says so, no check of the body) against \$BENCH_REPO:bench,
  which an earlier full run pushed; used by bench.sh to measure both
  registries in alternating rounds.

--prepare-blobs <dir>: only generate the random blobs (blob-N + blob-N.sha256)
  in <dir> and exit; used by bench.sh so that blobs are generated once,
  outside any timing, and both registries get the same bytes.

Environment (defaults in brackets):
  BENCH_BLOB_DIR       directory with pre-generated blobs; generated there if
                       missing [a private temp dir, removed on exit]
  BENCH_BLOB_MIB       big blob size in MiB [256]
  BENCH_PUSH_RUNS      number of distinct big blobs pushed [3]
  BENCH_PULL_RUNS      number of timed blob downloads [5]
  BENCH_REPO           repository name [bench/app]
  BENCH_AUTH           user:password to log in with [unset: no auth]
  BENCH_AUTH_SCHEME    bearer (a token from the challenge's realm, as
                       clients do) or basic (the credentials on every
                       request) [bearer]
  BENCH_WRK_THREADS    wrk threads [2]
  BENCH_WRK_CONNS      wrk connections [32]
  BENCH_WRK_SECONDS    wrk measured duration in seconds [10]
  BENCH_WRK_WARMUP     wrk warm-up duration in seconds, 0 = none [2]
  BENCH_CURL_TIMEOUT   max seconds for one big-blob transfer [300]
  BENCH_STEPS          which of push, manifest, blob to run, comma-separated
                       [push,manifest,blob]; without push, the first blob is
                       pushed (untimed) if the registry lacks it
EOF
}

die() { echo "$PROG: error: $*" >&2; exit 1; }
log() { echo "[$PROG] $*" >&2; }
out() { echo "$1=$2"; }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found: apt-get install $2"
}

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }

BLOB_MIB=${BENCH_BLOB_MIB:-256}
PUSH_RUNS=${BENCH_PUSH_RUNS:-3}
PULL_RUNS=${BENCH_PULL_RUNS:-5}
REPO=${BENCH_REPO:-bench/app}
# Credentials, for a registry that requires a login: see use_credentials.
AUTH=()
WRK_AUTH=()
AUTH_SCHEME=${BENCH_AUTH_SCHEME:-bearer}
[[ $AUTH_SCHEME == bearer || $AUTH_SCHEME == basic ]] ||
  die "BENCH_AUTH_SCHEME must be bearer or basic (got '$AUTH_SCHEME')"
WRK_THREADS=${BENCH_WRK_THREADS:-2}
WRK_CONNS=${BENCH_WRK_CONNS:-32}
WRK_SECONDS=${BENCH_WRK_SECONDS:-10}
WRK_WARMUP=${BENCH_WRK_WARMUP:-2}
CURL_TIMEOUT=${BENCH_CURL_TIMEOUT:-300}
STEPS=${BENCH_STEPS:-push,manifest,blob}
has_step() { [[ ,$STEPS, == *,$1,* ]]; }
for v in BLOB_MIB PUSH_RUNS PULL_RUNS WRK_THREADS WRK_CONNS WRK_SECONDS WRK_WARMUP CURL_TIMEOUT; do
  is_uint "${!v}" || die "BENCH_$v must be a non-negative integer (got '${!v}')"
done
((BLOB_MIB > 0 && PUSH_RUNS > 0 && PULL_RUNS > 0 && WRK_SECONDS > 0)) ||
  die "BENCH_BLOB_MIB, BENCH_PUSH_RUNS, BENCH_PULL_RUNS and BENCH_WRK_SECONDS must be > 0"
BLOB_BYTES=$((BLOB_MIB * 1048576))

MEDIA_OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
MEDIA_DOCKER_MANIFEST=application/vnd.docker.distribution.manifest.v2+json
MEDIA_OCI_CONFIG=application/vnd.oci.image.config.v1+json
MEDIA_OCI_LAYER=application/vnd.oci.image.layer.v1.tar+gzip
ACCEPT_MANIFEST="$MEDIA_OCI_MANIFEST, $MEDIA_DOCKER_MANIFEST"

# ---------------------------------------------------------------- helpers

# median of the numbers given as arguments
median() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {
    if (NR == 0) exit 1
    if (NR % 2) printf "%.1f", a[(NR+1)/2]; else printf "%.1f", (a[NR/2]+a[NR/2+1])/2 }'
}

# mibs <bytes> <seconds>
mibs() { awk -v b="$1" -v t="$2" 'BEGIN { if (t <= 0) print "inf"; else printf "%.1f", b/1048576/t }'; }

join_by_comma() { local IFS=,; echo "$*"; }

# prepare_blobs <dir>: blob-1..blob-N of BLOB_BYTES random bytes + .sha256
prepare_blobs() {
  local dir=$1 i f
  mkdir -p "$dir"
  for ((i = 1; i <= PUSH_RUNS; i++)); do
    f=$dir/blob-$i
    if [[ -f $f && -s $f.sha256 && $(stat -c %s "$f") == "$BLOB_BYTES" ]]; then
      continue
    fi
    log "generating $f ($BLOB_MIB MiB of random data)"
    head -c "$BLOB_BYTES" /dev/urandom >"$f.tmp"
    sha256sum "$f.tmp" | awk '{print $1}' >"$f.sha256"
    mv "$f.tmp" "$f"
  done
}

# header <file> <name>: value of the last header <name> in a curl -D dump
header() {
  tr -d '\r' <"$1" | awk -v n="$(tr '[:upper:]' '[:lower:]' <<<"$2")" '
    { i = index($0, ":"); if (i == 0) next
      k = tolower(substr($0, 1, i-1)); v = substr($0, i+1); sub(/^[ \t]+/, "", v)
      if (k == n) last = v }
    END { print last }'
}

# absolute <location>: make a Location header value absolute
absolute() {
  case $1 in
    http://* | https://*) echo "$1" ;;
    /*) echo "$ORIGIN$1" ;;
    *) die "unsupported relative Location header: '$1'" ;;
  esac
}

# bearer_token <scope>: a token for <scope> from the realm the registry's
# Bearer challenge names, logging in there with BENCH_AUTH; fails if the
# registry does not challenge with Bearer or refuses the login.
bearer_token() {
  local challenge realm service body token
  curl -sS --max-time 10 -o /dev/null -D "$WORK/challenge.hdr" "$BASE/v2/" || return 1
  challenge=$(header "$WORK/challenge.hdr" WWW-Authenticate)
  [[ $challenge == [Bb]earer\ * ]] || return 1
  realm=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$challenge")
  service=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$challenge")
  [[ -n $realm ]] || return 1
  body=$(curl -sS --fail --max-time 10 -u "$BENCH_AUTH" -G "$realm" \
    --data-urlencode "service=$service" --data-urlencode "scope=$1") || return 1
  token=$(sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p' <<<"$body")
  [[ -n $token ]] || return 1
  echo "$token"
}

# use_credentials <scope>: sets AUTH (curl) and WRK_AUTH (wrk) for the next
# step: a fresh bearer token for <scope> (tokens are short-lived), or the
# credentials as HTTP Basic.
use_credentials() {
  [[ -n ${BENCH_AUTH:-} ]] || return 0
  local token
  if [[ $AUTH_SCHEME == bearer ]] && token=$(bearer_token "$1"); then
    AUTH=(-H "Authorization: Bearer $token")
    WRK_AUTH=(-H "Authorization: Bearer $token")
    AUTH_USED=bearer
  else
    [[ $AUTH_SCHEME == basic ]] || log "WARNING: no bearer token for $1 (no Bearer challenge, or the login was refused); sending Basic credentials"
    AUTH=(-u "$BENCH_AUTH")
    WRK_AUTH=(-H "Authorization: Basic $(printf %s "$BENCH_AUTH" | base64 -w0)")
    AUTH_USED=basic
  fi
}

# push_blob <file> <digest> <size> -> prints the seconds taken (POST + PUT)
push_blob() {
  local file=$1 digest=$2 size=$3 res code t_post t_put loc sep
  res=$(curl "${AUTH[@]}" -sS --max-time 30 -X POST -H 'Content-Length: 0' \
    -D "$WORK/post.hdr" -o "$WORK/post.body" -w '%{http_code} %{time_total}' \
    "$BASE/v2/$REPO/blobs/uploads/") || die "POST $BASE/v2/$REPO/blobs/uploads/ failed (curl)"
  read -r code t_post <<<"$res"
  [[ $code == 202 ]] || die "POST $BASE/v2/$REPO/blobs/uploads/ returned $code (want 202): $(head -c 500 "$WORK/post.body")"
  loc=$(header "$WORK/post.hdr" Location)
  [[ -n $loc ]] || die "POST $BASE/v2/$REPO/blobs/uploads/ returned no Location header"
  loc=$(absolute "$loc")
  sep='?'
  [[ $loc == *\?* ]] && sep='&'
  # -T streams the file; 'Expect:' disables curl's 100-continue handshake so
  # both registries see the same plain request.
  res=$(curl "${AUTH[@]}" -sS --max-time "$CURL_TIMEOUT" -X PUT -T "$file" \
    -H 'Content-Type: application/octet-stream' -H 'Expect:' \
    -D "$WORK/put.hdr" -o "$WORK/put.body" -w '%{http_code} %{time_total}' \
    "$loc${sep}digest=$digest") || die "PUT $loc${sep}digest=$digest failed (curl)"
  read -r code t_put <<<"$res"
  [[ $code == 201 ]] || die "PUT $loc${sep}digest=$digest ($size bytes) returned $code (want 201): $(head -c 500 "$WORK/put.body")"
  # the blob must now exist with the right size
  res=$(curl "${AUTH[@]}" -sS --max-time 30 -I -o /dev/null -D "$WORK/head.hdr" -w '%{http_code}' \
    "$BASE/v2/$REPO/blobs/$digest") || die "HEAD $BASE/v2/$REPO/blobs/$digest failed (curl)"
  [[ $res == 200 ]] || die "HEAD $BASE/v2/$REPO/blobs/$digest after push returned $res (want 200)"
  local len
  len=$(header "$WORK/head.hdr" Content-Length)
  [[ $len == "$size" ]] || die "HEAD $BASE/v2/$REPO/blobs/$digest: Content-Length '$len', want $size"
  awk -v a="$t_post" -v b="$t_put" 'BEGIN { printf "%.6f", a + b }'
}

cpu_seconds() { # utime+stime of a pid, in seconds
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat"
}

# ---------------------------------------------------------------- arguments

case ${1:-} in
  -h | --help) usage; exit 0 ;;
  --prepare-blobs)
    [[ $# -eq 2 ]] || { usage >&2; exit 2; }
    need head coreutils; need sha256sum coreutils
    prepare_blobs "$2"
    exit 0
    ;;
  --manifest-only)
    MANIFEST_ONLY=1
    shift
    [[ $# -eq 1 ]] || { usage >&2; exit 2; }
    ;;
  "" | -*) usage >&2; exit 2 ;;
esac
MANIFEST_ONLY=${MANIFEST_ONLY:-0}
[[ $# -le 2 ]] || { usage >&2; exit 2; }
BASE=${1%/}
PID=${2:-}
[[ $BASE =~ ^https?://[^/]+$ ]] || die "base URL must look like http://host:port (got '$1')"
ORIGIN=$BASE
if [[ -n $PID ]]; then
  is_uint "$PID" || die "pid must be a number (got '$PID')"
  [[ -r /proc/$PID/status ]] || die "no process with pid $PID"
fi

need curl curl
need wrk wrk
need sha256sum coreutils
need timeout coreutils
need awk gawk
[[ -r $SCRIPT_DIR/bench-wrk.lua ]] || die "missing $SCRIPT_DIR/bench-wrk.lua"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-registry.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure_manifest: wrk against $MANIFEST_URL with the credentials in force
# (warm-up, then the measured run); prints the manifest_* keys.
measure_manifest() {
  run_wrk() { # run_wrk <seconds> <outfile>
    # --foreground keeps wrk in our process group, so a signal sent to the
    # group (Ctrl-C, or bench.sh stopping us) reaches it.
    timeout --foreground --kill-after=5 $(($1 + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"$1"s --timeout 5s \
      -s "$SCRIPT_DIR/bench-wrk.lua" -H "Accept: $ACCEPT_MANIFEST" "${WRK_AUTH[@]}" "$MANIFEST_URL" >"$2" 2>&1 ||
      die "wrk failed: $(cat "$2")"
  }
  if ((WRK_WARMUP > 0)); then
    log "wrk warm-up ${WRK_WARMUP}s"
    run_wrk "$WRK_WARMUP" "$WORK/wrk-warmup.out"
  fi
  log "wrk -t$WRK_THREADS -c$WRK_CONNS -d${WRK_SECONDS}s GET $MANIFEST_URL"
  run_wrk "$WRK_SECONDS" "$WORK/wrk.out"
  sed 's/^/  | /' "$WORK/wrk.out" >&2
  wrk_val() { awk -F= -v k="$1" '$1 == k { v = $2 } END { print v }' "$WORK/wrk.out"; }
  local k v non2xx sockerr
  for k in rps requests duration_s err_status err_connect err_read err_write err_timeout lat_p50_ms lat_p99_ms lat_max_ms; do
    v=$(wrk_val "wrk_$k")
    [[ -n $v ]] || die "could not parse wrk_$k from wrk output: $(cat "$WORK/wrk.out")"
    out "manifest_$k" "$v"
  done
  out manifest_conns "$WRK_CONNS"
  non2xx=$(wrk_val wrk_err_status)
  sockerr=$(($(wrk_val wrk_err_connect) + $(wrk_val wrk_err_read) + $(wrk_val wrk_err_write) + $(wrk_val wrk_err_timeout)))
  ((non2xx == 0)) || INVALID+=("manifest-GET:${non2xx}-non-2xx")
  ((sockerr == 0)) || log "WARNING: wrk reported $sockerr socket errors (connect/read/write/timeout)"
  (($(wrk_val wrk_requests) > 0)) || INVALID+=("manifest-GET:no-requests")
}

# ---------------------------------------------------------------- sanity

AUTH_USED=none
use_credentials "repository:$REPO:pull"
code=$(curl "${AUTH[@]}" -sS --max-time 10 -o /dev/null -w '%{http_code}' "$BASE/v2/") ||
  die "GET $BASE/v2/ failed: is the registry running?"
[[ $code == 200 ]] || die "GET $BASE/v2/ returned $code (want 200; set BENCH_AUTH=user:password for a registry that needs a login)"

if ((MANIFEST_ONLY)); then
  INVALID=()
  MANIFEST_URL=$BASE/v2/$REPO/manifests/bench
  out auth "$AUTH_USED"
  measure_manifest
  if ((${#INVALID[@]})); then
    out invalid "$(join_by_comma "${INVALID[@]}")"
    exit 3
  fi
  exit 0
fi

BLOB_DIR=${BENCH_BLOB_DIR:-$WORK/blobs}
prepare_blobs "$BLOB_DIR"

INVALID=()

out registry_url "$BASE"
out auth "$AUTH_USED"
out repo "$REPO"
out blob_bytes "$BLOB_BYTES"

# ---------------------------------------------------------------- 1. push

if has_step push; then
  push_mibs=()
  for ((i = 1; i <= PUSH_RUNS; i++)); do
    f=$BLOB_DIR/blob-$i
    d=sha256:$(cat "$f.sha256")
    log "push $i/$PUSH_RUNS: $BLOB_MIB MiB blob $d"
    use_credentials "repository:$REPO:pull,push"
    t=$(push_blob "$f" "$d" "$BLOB_BYTES")
    m=$(mibs "$BLOB_BYTES" "$t")
    log "  ${t}s = $m MiB/s"
    push_mibs+=("$m")
  done
  out push_runs_mibs "$(join_by_comma "${push_mibs[@]}")"
  out push_mibs_median "$(median "${push_mibs[@]}")"
fi

LAYER_FILE=$BLOB_DIR/blob-1
LAYER_DIGEST=sha256:$(cat "$LAYER_FILE.sha256")
if ! has_step push; then
  use_credentials "repository:$REPO:pull,push"
  code=$(curl "${AUTH[@]}" -sS --max-time 30 -I -o /dev/null -w '%{http_code}' "$BASE/v2/$REPO/blobs/$LAYER_DIGEST") ||
    die "HEAD $BASE/v2/$REPO/blobs/$LAYER_DIGEST failed (curl)"
  # 307: a registry that redirects reads to its object store has it.
  if [[ $code != 200 && $code != 307 ]]; then
    log "pushing $LAYER_DIGEST first (untimed)"
    push_blob "$LAYER_FILE" "$LAYER_DIGEST" "$BLOB_BYTES" >/dev/null
  fi
fi

if has_step manifest; then
  # small config blob (its diff_id is not real: registries do not check it)
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["%s"]},"config":{"Labels":{"bench":"%s"}}}' \
    "$LAYER_DIGEST" "$(date +%s%N)" >"$WORK/config.json"
  CONFIG_DIGEST=sha256:$(sha256sum "$WORK/config.json" | awk '{print $1}')
  CONFIG_SIZE=$(stat -c %s "$WORK/config.json")
  use_credentials "repository:$REPO:pull,push"
  push_blob "$WORK/config.json" "$CONFIG_DIGEST" "$CONFIG_SIZE" >/dev/null
  log "pushed config blob $CONFIG_DIGEST"

  printf '{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%d},"layers":[{"mediaType":"%s","digest":"%s","size":%d}]}' \
    "$MEDIA_OCI_MANIFEST" "$MEDIA_OCI_CONFIG" "$CONFIG_DIGEST" "$CONFIG_SIZE" \
    "$MEDIA_OCI_LAYER" "$LAYER_DIGEST" "$BLOB_BYTES" >"$WORK/manifest.json"
  MANIFEST_DIGEST=sha256:$(sha256sum "$WORK/manifest.json" | awk '{print $1}')
  MANIFEST_URL=$BASE/v2/$REPO/manifests/bench
  code=$(curl "${AUTH[@]}" -sS --max-time 30 -X PUT -H "Content-Type: $MEDIA_OCI_MANIFEST" \
    --data-binary @"$WORK/manifest.json" -D "$WORK/mput.hdr" -o "$WORK/mput.body" \
    -w '%{http_code}' "$MANIFEST_URL") || die "PUT $MANIFEST_URL failed (curl)"
  [[ $code == 201 ]] || die "PUT $MANIFEST_URL returned $code (want 201): $(head -c 500 "$WORK/mput.body")"
  got=$(header "$WORK/mput.hdr" Docker-Content-Digest)
  if [[ -n $got && $got != "$MANIFEST_DIGEST" ]]; then
    log "WARNING: PUT $MANIFEST_URL: Docker-Content-Digest '$got', want $MANIFEST_DIGEST"
  fi
  log "pushed manifest $MANIFEST_DIGEST as $REPO:bench"
  out manifest_digest "$MANIFEST_DIGEST"

  # ---------------------------------------------------------------- 2. manifest GET

  use_credentials "repository:$REPO:pull"

  code=$(curl "${AUTH[@]}" -sS --max-time 10 -H "Accept: $ACCEPT_MANIFEST" -D "$WORK/mget.hdr" \
    -o "$WORK/mget.body" -w '%{http_code}' "$MANIFEST_URL") || die "GET $MANIFEST_URL failed (curl)"
  [[ $code == 200 ]] || die "GET $MANIFEST_URL (Accept: $ACCEPT_MANIFEST) returned $code (want 200): $(head -c 500 "$WORK/mget.body")"
  cmp -s "$WORK/mget.body" "$WORK/manifest.json" ||
    die "GET $MANIFEST_URL returned a body that differs from the pushed manifest"
  ctype=$(header "$WORK/mget.hdr" Content-Type)
  [[ $ctype == "$MEDIA_OCI_MANIFEST"* ]] ||
    log "WARNING: GET $MANIFEST_URL: Content-Type '$ctype', want $MEDIA_OCI_MANIFEST"
  got=$(header "$WORK/mget.hdr" Docker-Content-Digest)
  [[ -z $got || $got == "$MANIFEST_DIGEST" ]] ||
    log "WARNING: GET $MANIFEST_URL: Docker-Content-Digest '$got', want $MANIFEST_DIGEST"
  out manifest_bytes "$(stat -c %s "$WORK/manifest.json")"

  measure_manifest
fi

# ---------------------------------------------------------------- 3. blob GET

if has_step blob; then
  BLOB_URL=$BASE/v2/$REPO/blobs/$LAYER_DIGEST
  use_credentials "repository:$REPO:pull"
  log "verifying GET $BLOB_URL"
  got=$(curl "${AUTH[@]}" -sS -L --max-time "$CURL_TIMEOUT" --fail "$BLOB_URL" | sha256sum | awk '{print "sha256:" $1}') ||
    die "GET $BLOB_URL failed"
  [[ $got == "$LAYER_DIGEST" ]] || die "GET $BLOB_URL: downloaded bytes hash to $got, want $LAYER_DIGEST"
  out blob_get_verified 1

  pull_mibs=()
  for ((i = 1; i <= PULL_RUNS; i++)); do
    res=$(curl "${AUTH[@]}" -sS -L --max-time "$CURL_TIMEOUT" -o /dev/null -w '%{http_code} %{size_download} %{time_total}' \
      "$BLOB_URL") || die "GET $BLOB_URL failed (curl)"
    read -r code size t <<<"$res"
    [[ $code == 200 ]] || die "GET $BLOB_URL returned $code (want 200)"
    [[ $size == "$BLOB_BYTES" ]] || die "GET $BLOB_URL returned $size bytes, want $BLOB_BYTES"
    m=$(mibs "$BLOB_BYTES" "$t")
    log "blob GET $i/$PULL_RUNS: ${t}s = $m MiB/s"
    pull_mibs+=("$m")
  done
  out blob_get_runs_mibs "$(join_by_comma "${pull_mibs[@]}")"
  out blob_get_mibs_median "$(median "${pull_mibs[@]}")"
fi

# ---------------------------------------------------------------- 4. memory

if [[ -n $PID ]]; then
  [[ -r /proc/$PID/status ]] || die "process $PID exited during the benchmark"
  hwm=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$PID/status")
  rss=$(awk '$1 == "VmRSS:" { print $2 }' "/proc/$PID/status")
  [[ -n $hwm ]] || die "no VmHWM in /proc/$PID/status"
  out peak_rss_mib "$(awk -v k="$hwm" 'BEGIN { printf "%.1f", k/1024 }')"
  out end_rss_mib "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k/1024 }')"
  out server_cpu_s "$(cpu_seconds "$PID")"
fi

if ((${#INVALID[@]})); then
  out invalid "$(join_by_comma "${INVALID[@]}")"
  out result invalid
  exit 3
fi
out result ok
