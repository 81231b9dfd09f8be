#!/usr/bin/env bash
# The timing rows of the tenant security matrix: does a refusal take longer
# for an existing target than for an absent one? Run with --help for details.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
PROG=$(basename "$0")

usage() {
  cat <<EOF
Usage: $PROG [sqlite|postgres|both] [--help]

Builds the workspace's debug binaries and tests/tests/security_tenants.rs,
starts a real damselfly-registry per backend with tenant alpha's things and
another tenant's credentials, and times every refusal of that other tenant
for an existing target and for absent ones, in 31 back-to-back pairs per
route. It prints each route's median answer times and the median of the
pairs' ratios (existing over absent), and fails if a route's ratio is past
x1.5 either way three measurements in a row, on the same side.

This measures time, so it is a campaign rather than part of the suite: on a
machine busy with other work, run it when it is quiet (load average well
below the number of cores), and read a failure by rerunning it. It takes
about 3 minutes per backend on 2 cores.

Arguments:
  sqlite | postgres | both   which metadata backend (default: both)

Environment:
  DAMSELFLY_TEST_POSTGRES_URL  a PostgreSQL server the test may create
                               databases on (needed for postgres)
EOF
}

backend=both
case "${1:-}" in
  -h|--help) usage; exit 0 ;;
  sqlite|postgres|both) backend=$1 ;;
  "") ;;
  *) echo "$PROG: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac

if [[ $backend != sqlite && -z ${DAMSELFLY_TEST_POSTGRES_URL:-} ]]; then
  echo "$PROG: DAMSELFLY_TEST_POSTGRES_URL is not set: point it at a PostgreSQL server, or run '$PROG sqlite'" >&2
  exit 2
fi

cd "$ROOT"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
cargo build --workspace --bins >&2
filter=refusals_take_as_long_whether_the_target_exists_or_not::
[[ $backend != both ]] && filter+=$backend
cargo test -p damselfly-tests --test security_tenants -- --ignored --exact --nocapture --test-threads 1 \
  $( [[ $backend == both ]] && echo "${filter}sqlite ${filter}postgres" || echo "$filter" )
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
