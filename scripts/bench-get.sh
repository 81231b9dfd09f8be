#!/usr/bin/env bash
# `damselfly-agent get` benchmark on a virtual network (needs root and iproute2):
#
#     scripts/bench-get.sh [N]        # N nodes, default 8
#
# The registry and N agents each run in their own network namespace joined
# by a bridge, every node (the registry's too) limited to SWARM_MBIT Mbit/s
# up and down with tc. One file of GET_FILE_MIB MiB is pushed as an artifact;
# all N nodes `get` it at the same moment through their agent (P2P), then the
# same N nodes `get` it straight from the registry. Prints makespan, p50/p95,
# the registry's egress against the file size, and the lower bounds.
#
# Settings (environment):
#   SWARM_MBIT (200), GET_FILE_MIB (1024), SWARM_PIECE_KIB (default: chosen per blob)
#   SWARM_SEED_MBIT, SWARM_UP_MBIT, SWARM_DOWN_MBIT   as in scripts/bench-swarm.sh
#   SWARM_DIRECT      0 skips the direct baseline, for quick P2P comparisons
#   SWARM_TIMEOUT     seconds for the whole run (3600)
#   SWARM_LOG_DIR     copy the registry's and agents' logs there
#   DAMSELFLY_AGENT_* passed to every agent
set -euo pipefail
# The namespaces, tc limits and release builds are bench-swarm.sh's; only the test differs.
export BENCH_TEST=bench_get BENCH_LABEL="get benchmark" SWARM_TIMEOUT="${SWARM_TIMEOUT:-3600}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/bench-swarm.sh" "$@"
