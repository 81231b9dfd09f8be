#!/usr/bin/env bash
# The long form of the agent's crash-safety campaign
# (tests/tests/agent_crash_safety.rs runs 3 cycles in CI):
#
#     scripts/agent-crash.sh [CYCLES]    # default 25 cycles, 2 kills each
#
# Each cycle kills an agent with SIGKILL at a random moment of a download
# and again at a random moment of a feed to another agent, restarts it on
# the same cache directory, re-hashes every blob and piece its cache keeps,
# checks that stray files are gone, and pulls through it again (see the
# test's header).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
cycles="${1:-25}"
case "$cycles" in
    '' | *[!0-9]*) echo "usage: scripts/agent-crash.sh [CYCLES]" >&2; exit 2 ;;
esac
cargo build -p damselfly-registry -p damselfly-agent --bins
DAMSELFLY_AGENT_CRASH_CYCLES="$cycles" \
    cargo test -p damselfly-tests --test agent_crash_safety -- --nocapture --test-threads=1
