#!/usr/bin/env bash
# Garbage collection over 100,000 blobs, 10,000 manifests and 1,000
# repositories: Damselfly's online run beside CNCF Distribution's offline
# `docker-registry garbage-collect` over the same images, in the same run.
#
# Two rows: Damselfly on SQLite with files, and on PostgreSQL with S3
# (SeaweedFS); Distribution on its filesystem store in both. The images are
# seeded straight into each registry's storage (tests/tests/bench_gc.rs says
# how); each collector must then delete exactly the 10,000 blobs nothing
# references. Printed per row: each collector's wall time and peak memory
# (Damselfly's registry process idle and after its run; Distribution's whole
# process), and the time ratio Damselfly / Distribution. The suite runs the
# same comparison at a hundredth of the size (`cargo test --test bench_gc`).
#
# Run it alone on the machine if you can: the load average is printed before
# and after, and other work skews both sides.
#
#   DAMSELFLY_TEST_POSTGRES_URL   a PostgreSQL server the harness may create
#                                 databases on (scripts/test.sh starts one)
#   DAMSELFLY_GC_BENCH_SCALE=10   a tenth of every count, for a quick try
#   DAMSELFLY_GC_BENCH_ROWS=fs    only the SQLite and files row (s3: only the
#                                 PostgreSQL and S3 row; default both)
#   DAMSELFLY_GC_DELETE_BATCH, DAMSELFLY_GC_DELETE_CONCURRENCY
#                                 the registry's settings, when set
#   DAMSELFLY_REGISTRY_BIN        a registry binary to run instead of building
#                                 target/release/damselfly-registry
#
# About 2 GB of temporary space: the blobs are 1 KiB, but each sits in a
# directory of its own in Distribution's layout.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;; esac
: "${DAMSELFLY_TEST_POSTGRES_URL:?set DAMSELFLY_TEST_POSTGRES_URL to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/postgres}"
export DAMSELFLY_TEST_POSTGRES_URL
[ -x "${DAMSELFLY_WEED_BIN:-target/pyenv/bin/weed}" ] || command -v weed >/dev/null || {
    echo "bench-gc: SeaweedFS (weed) is missing; scripts/test.sh installs it into target/pyenv" >&2
    exit 1
}
if ! command -v docker-registry >/dev/null || ! [ -x /usr/bin/time ]; then
    echo "bench-gc: needs docker-registry (CNCF Distribution) and /usr/bin/time: apt-get install docker-registry time" >&2
    exit 1
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) ($(nproc) cores)"
if [ -z "${DAMSELFLY_REGISTRY_BIN:-}" ]; then
    cargo build --release -p damselfly-registry --bin damselfly-registry
    export DAMSELFLY_REGISTRY_BIN="$PWD/target/release/damselfly-registry"
fi
cargo build -q -p damselfly-tests --test bench_gc
echo "| backend | data | Damselfly online GC | Distribution offline GC | time ratio |"
echo "|---|---|---|---|---|"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
case "${DAMSELFLY_GC_BENCH_ROWS:-both}" in
    fs) rows=(gc_over_100k_blobs_on_sqlite_and_the_filesystem --exact) ;;
    s3) rows=(gc_over_100k_blobs_on_postgres_and_s3 --exact) ;;
    both) rows=() ;;
    *) echo "bench-gc: DAMSELFLY_GC_BENCH_ROWS is fs, s3 or both" >&2; exit 1 ;;
esac
cargo test -q -p damselfly-tests --test bench_gc -- --ignored --nocapture --test-threads=1 "${rows[@]}" >"$log" 2>&1 || status=$?
# A row may follow the dots `cargo test -q` prints for passed tests.
sed -n 's/^\.*\(|.*|\)$/\1/p' "$log"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$status" -ne 0 ]; then
    echo "bench-gc: the benchmark failed:" >&2
    grep -E -A12 'panicked|^error' "$log" >&2 || tail -40 "$log" >&2
    exit "$status"
fi
