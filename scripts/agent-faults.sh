#!/usr/bin/env bash
# The long forms of the agent's fault campaigns; CI runs the short ones.
#
#     scripts/agent-faults.sh crash [CYCLES]    # default 25 cycles, 2 SIGKILLs each
#     scripts/agent-faults.sh outage [SECONDS]  # default 60 s
#
# crash (tests/tests/agent_crash_safety.rs, 3 cycles in CI): each cycle
# kills an agent at a random moment of a download and again of a feed to
# another agent, restarts it on the same cache directory, re-hashes every
# blob and piece its cache keeps, checks that stray files are gone, and
# pulls through it again.
#
# outage (tests/tests/agent_registry_outage.rs, 10 s and 15 s in CI): the
# registry behind a running agent is killed, and in a second test frozen
# (SIGSTOP), for SECONDS; cached pulls through the agent keep working,
# uncached ones are refused with 502 within the stated bound, and the agent
# serves a new pull by itself once the registry is back.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
usage() { echo "usage: scripts/agent-faults.sh crash [CYCLES] | outage [SECONDS]" >&2; exit 2; }
campaign="${1:-}"
case "$campaign" in
    crash) n="${2:-25}"; test=agent_crash_safety; var=DAMSELFLY_AGENT_CRASH_CYCLES ;;
    outage) n="${2:-60}"; test=agent_registry_outage; var=DAMSELFLY_OUTAGE_SECS ;;
    *) usage ;;
esac
case "$n" in '' | *[!0-9]*) usage ;; esac
cargo build -p damselfly-registry -p damselfly-agent --bins
env "$var=$n" cargo test -p damselfly-tests --test "$test" -- --nocapture --test-threads=1
