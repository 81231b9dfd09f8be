#!/usr/bin/env bash
# Builds the agent as one static executable, for its container image:
#
#     scripts/build-static-agent.sh [--release]
#
# glibc linked in statically (crt-static), with DNS done by hickory-resolver
# inside the agent (the static-dns feature) rather than by glibc's NSS, which
# a static executable cannot load. It needs nothing beside it: not even a
# libc in the image. The result is copied to target/static/damselfly-agent;
# `target/static/damselfly-agent image push …` then packs exactly that file.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

profile=debug
args=()
if [ "${1:-}" = "--release" ]; then
    profile=release
    args+=(--release)
fi
host="$(rustc -vV | sed -n 's/^host: //p')"
case "$host" in
    *-linux-gnu) ;;
    *) echo "error: a static glibc build needs a *-linux-gnu host, not $host" >&2; exit 1 ;;
esac
# With --target, RUSTFLAGS reach only the agent and its dependencies, not the
# build scripts and proc-macros, which keep running on the host as usual.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build -p damselfly-agent --features static-dns --target "$host" "${args[@]}"
mkdir -p target/static
cp "target/$host/$profile/damselfly-agent" target/static/damselfly-agent
echo "static agent: target/static/damselfly-agent ($(du -h target/static/damselfly-agent | cut -f1))"
