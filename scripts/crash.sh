#!/usr/bin/env bash
# The long form of the crash-safety campaign (tests/tests/crash_safety.rs
# runs 5 kills per backend in CI):
#
#     scripts/crash.sh [CYCLES] [SEED]    # kills per backend; default 50
#
# On each backend (SQLite with the filesystem, PostgreSQL with S3 in
# SeaweedFS) 16 clients push, mount, delete and pull in a loop while the
# registry is killed with SIGKILL at a random moment, CYCLES times; after
# each restart a checker holds the registry to everything it acknowledged
# (see the test's header). A failure names the seed, which replays the
# clients' choices (not the kill's timing): pass it back as SEED.
# Needs: DAMSELFLY_TEST_POSTGRES_URL, and SeaweedFS in target/pyenv
# (scripts/test.sh installs it).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
cycles="${1:-50}"
case "$cycles" in
    '' | *[!0-9]*) echo "usage: scripts/crash.sh [CYCLES] [SEED]" >&2; exit 2 ;;
esac
[ -n "${DAMSELFLY_TEST_POSTGRES_URL:-}" ] || {
    echo "DAMSELFLY_TEST_POSTGRES_URL is not set: point it at a PostgreSQL server the tests may create databases on" >&2
    exit 2
}
if [ -n "${2:-}" ]; then
    export DAMSELFLY_CRASH_SEED="$2"
fi
cargo build -p damselfly-registry
DAMSELFLY_CRASH_CYCLES="$cycles" \
    cargo test -p damselfly-tests --test crash_safety -- --nocapture --test-threads=1 kills_during
