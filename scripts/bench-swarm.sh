#!/usr/bin/env bash
# P2P swarm benchmark on a virtual network (needs root and iproute2):
#
#     scripts/bench-swarm.sh [N]        # N agents, default 8
#
# The registry and N agents each run in their own network namespace joined
# by a bridge, every node (the registry's too) limited to SWARM_MBIT Mbit/s
# up and down with tc. An image of SWARM_IMAGE_MIB MiB in SWARM_LAYERS layers
# is pushed; all N nodes pull every layer at the same moment through their
# agent (P2P), then the same N nodes pull it straight from the registry.
# Prints makespan, per-node completion p50/p95/max, the registry's blob
# egress against the image size, and the Kumar & Ross lower bound for P2P;
# then where this machine's CPU went in each phase (from /proc: the registry,
# the agents, the pulls' curl and SHA-256, everything else, softirq, idle),
# since on a small machine the CPU rather than the links can set the pace.
# The pulls hash with `openssl dgst -sha256`, which uses the CPU's SHA
# instructions as a runtime's hasher does (coreutils' sha256sum costs about
# five times the CPU: 3.0 against 0.65 s for 1 GiB here).
#
# Settings (environment):
#   SWARM_MBIT (50), SWARM_IMAGE_MIB (64), SWARM_LAYERS (4)
#   SWARM_PIECE_KIB   the registry's --piece-size for every blob (default: chosen per blob from its length)
#   SWARM_SEED_MBIT   the registry node's link instead of SWARM_MBIT
#   SWARM_UP_MBIT, SWARM_DOWN_MBIT   each agent's uplink and downlink instead of SWARM_MBIT.
#                     With every link the same, all three terms of the bound nearly tie
#                     (S/u_seed = S/d_min, and N·S/(u_seed+Σu_peers) just below), so every
#                     link must run nearly full all the time; a faster registry, or agents
#                     with more bandwidth than the registry, leave one term alone in front
#   SWARM_ZONES       2 splits the agents into two zones of N/2 (N even), each on its own bridge,
#                     joined by one link that everything between the zones crosses; the registry
#                     is in the first zone. Also prints the bytes that crossed that link (both ways,
#                     frames' headers included) for P2P and for the direct baseline, against the image.
#                     The bounds then include the image crossing it (once for P2P, N/2 times direct)
#   SWARM_ZONE_MBIT   that link's rate each way, shaped with tbf like the nodes' (twice SWARM_MBIT: at
#                     50 Mbit/s node links, 100 Mbit/s between two sites, a quarter of what a zone of
#                     8 nodes could move). The link adds no delay: netem, which would, is not in
#                     every kernel (this machine's has none); the simulator models the round trip
#   SWARM_DIRECT      0 skips the direct baseline, for quick P2P comparisons
#   SWARM_TIMEOUT     seconds for the whole run (900)
#   SWARM_REGISTRY_BIN, SWARM_AGENT_BIN  other builds of the two programs to measure
#                     (default: this tree's release builds), for side-by-side runs
#   SWARM_LOG_DIR     copy the registry's and agents' logs there
#   SWARM_AGENT_LOG   the agents' RUST_LOG; "info,damselfly_agent::piece=debug" logs every piece
#                     (scripts/swarm-timeline.py SWARM_LOG_DIR then shows where the time went)
#   DAMSELFLY_AGENT_* passed to every agent, e.g. DAMSELFLY_AGENT_UPLOAD_SLOTS=4
#   DAMSELFLY_P2P_STRIPES  passed to the registry: stripe trees per swarm (2); 0 leaves every
#                     agent to pull pieces from the parents it is given, for a comparison
#   SWARM_REGISTRY_LOG the registry's RUST_LOG ("info"); "info,damselfly_registry::p2p::scheduler=debug"
#                     logs every seed piece handed out and every join the seed turned away
#   SWARM_TBF_LATENCY_MS  queue of each tbf limit in ms (50). For the direct baseline the registry's
#                     uplink gets 500 ms: 64 flows through a short queue on its own interface
#                     make its kernel reset some of them (DIRECT_QUEUE_MS in tests/tests/swarm.rs)
#   TMPDIR            where the registry's data and the agents' caches go. Every node writes to
#                     this machine's one disk, and page-cache writeback about 30 s into a run can
#                     hold up all agents' cache writes at once for up to a second (swarm-timeline.py
#                     shows it); a directory on a tmpfs avoids that, e.g.
#                     mkdir -p /dev/shm/swarm && TMPDIR=/dev/shm/swarm scripts/bench-swarm.sh 16
#   SWARM_SYSCTL      one "key=value" set in every node's namespace, e.g. "net.ipv4.tcp_wmem=4096 16384 131072"
#   SWARM_TCP_CC      TCP congestion control of the nodes (cubic, the Linux default). A new
#                     namespace takes the host's, and some hosts run bbr: over these tbf
#                     queues bbr re-sent about a sixth of the seed's bytes. The host's
#                     setting is changed while the namespaces are made, and put back.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

n="${1:-8}"
[ "$(id -u)" = 0 ] || { echo "error: bench-swarm builds network namespaces and needs root" >&2; exit 1; }
if ! command -v ip >/dev/null || ! ip netns list >/dev/null; then echo "error: 'ip netns' unavailable: apt-get install iproute2" >&2; exit 1; fi
command -v tc >/dev/null || { echo "error: 'tc' unavailable: apt-get install iproute2" >&2; exit 1; }

# Namespaces are named dfsw-<pid>-<k> / dfn-<pid>-<k>-<i> after the test
# process; the test deletes them on drop, but not if it is killed (timeout).
# Remove those whose process is gone, and whatever still runs inside them.
cleanup_orphans() {
    local ns pid p
    for ns in $(ip netns list | awk '{print $1}' | grep -E '^df(sw|n)-[0-9]+-' || true); do
        pid="$(echo "$ns" | sed -E 's/^df(sw|n)-([0-9]+)-.*/\2/')"
        if ! kill -0 "$pid" 2>/dev/null; then
            for p in $(ip netns pids "$ns" 2>/dev/null || true); do kill -9 "$p" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}
host_cc="$(sysctl -n net.ipv4.tcp_congestion_control)"
restore() {
    sysctl -qw net.ipv4.tcp_congestion_control="$host_cc" || true
    cleanup_orphans
}
trap restore EXIT

echo "==> building release binaries and the swarm test"
# The registry and agents run as release builds, as in production: 17
# processes on a small machine would otherwise measure the debug build's CPU.
cargo build --release --workspace --bins --quiet
# SWARM_REGISTRY_BIN / SWARM_AGENT_BIN run other builds (say, the previous
# commit's) through the same harness, for side-by-side comparisons.
export DAMSELFLY_REGISTRY_BIN="${SWARM_REGISTRY_BIN:-$repo_root/target/release/damselfly-registry}"
export DAMSELFLY_AGENT_BIN="${SWARM_AGENT_BIN:-$repo_root/target/release/damselfly-agent}"
echo "==> registry: $DAMSELFLY_REGISTRY_BIN, agent: $DAMSELFLY_AGENT_BIN"
cargo build --workspace --bins --quiet
cargo test -p damselfly-tests --test swarm --no-run --quiet 2>/dev/null

bench="${BENCH_TEST:-bench_swarm}"
cc="${SWARM_TCP_CC:-cubic}"
sysctl -qw net.ipv4.tcp_congestion_control="$cc" || { echo "error: cannot use TCP congestion control '$cc': see net.ipv4.tcp_available_congestion_control" >&2; exit 1; }
echo "==> TCP congestion control in the namespaces: $cc (the host's own, $host_cc, is put back at the end)"
echo "==> ${BENCH_LABEL:-swarm benchmark}, N=$n"
SWARM_NODES="$n" timeout --kill-after=10 "${SWARM_TIMEOUT:-900}" \
    cargo test -p damselfly-tests --test swarm --quiet -- --ignored --exact "$bench" --nocapture --test-threads 1
