#!/usr/bin/env bash
# The long form of the schemathesis campaign against the management API
# (tests/tests/schemathesis.rs runs it with 10 examples per operation in CI):
#
#     scripts/schemathesis.sh [EXAMPLES]    # examples per operation; default 500
#
# It starts a registry on SQLite, runs every phase and every check of
# schemathesis as the system administrator (EXAMPLES per operation) and as a
# tenant's viewer (half as many), then checks that every error status the
# OpenAPI document lists was answered at least once. The campaign's figures
# are printed at the end (generated cases, time, statuses seen by source).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
examples="${1:-500}"
case "$examples" in
    '' | *[!0-9]*) echo "usage: scripts/schemathesis.sh [EXAMPLES]" >&2; exit 2 ;;
esac

pyenv="$repo_root/target/pyenv"
if [ ! -x "$pyenv/bin/st" ]; then
    [ -x "$pyenv/bin/pip" ] || python3 -m venv "$pyenv"
    "$pyenv/bin/pip" install --quiet "schemathesis==4.32.5"
fi
cargo build -p damselfly-registry
DAMSELFLY_SCHEMATHESIS_EXAMPLES="$examples" \
    cargo test -p damselfly-tests --test schemathesis -- --nocapture
