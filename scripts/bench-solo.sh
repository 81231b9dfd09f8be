#!/usr/bin/env bash
# One node alone through its agent, on loopback:
#
#     scripts/bench-solo.sh
#
# A registry and one agent on loopback (release builds). A random blob is
# pushed; then, each round with a fresh agent and an empty cache, curl GETs
# it straight from the registry, through the agent cold (every piece from
# the registry's seed), and through the agent again (from its cache). Prints
# each round's rates in MB/s, the medians, and the agent's rates against the
# registry's. Bounded: stops by itself.
#
# Settings (environment):
#   SOLO_BLOB_MIB   the blob's size in MiB (512)
#   SOLO_ROUNDS     rounds (5)
#   SOLO_TIMEOUT    seconds for the whole run (600)
#   TMPDIR          where the registry's data and the agent's cache go
#   SOLO_REGISTRY_BIN, SOLO_AGENT_BIN  other builds of the two programs to measure
#                   (default: this tree's release builds), for side-by-side runs
#
# The same in namespaces with links of a given speed, pulling an image with
# skopeo: SWARM_MBIT=1000 scripts/bench-swarm.sh 1.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
command -v curl >/dev/null || { echo "error: curl is needed: apt-get install curl" >&2; exit 1; }

echo "==> building release binaries and the agent tests"
cargo build --release --workspace --bins --quiet
export DAMSELFLY_REGISTRY_BIN="${SOLO_REGISTRY_BIN:-$repo_root/target/release/damselfly-registry}"
export DAMSELFLY_AGENT_BIN="${SOLO_AGENT_BIN:-$repo_root/target/release/damselfly-agent}"
echo "==> registry: $DAMSELFLY_REGISTRY_BIN, agent: $DAMSELFLY_AGENT_BIN"
cargo test -p damselfly-tests --test agent --no-run --quiet 2>/dev/null

echo "==> one agent alone on loopback ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
timeout --kill-after=10 "${SOLO_TIMEOUT:-600}" \
    cargo test -p damselfly-tests --test agent --quiet -- --ignored --exact bench_agent_alone --nocapture --test-threads 1
