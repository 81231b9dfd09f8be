#!/usr/bin/env bash
# The long form of the fuzzing campaign: every cargo-fuzz target in fuzz/
# (libFuzzer, on the nightly toolchain) for SECONDS each, one after another:
#
#     scripts/fuzz.sh [SECONDS] [TARGET...]     # default: 300 s, every target
#
# Each target starts from its committed corpus, tests/fuzz_corpus/<target>/
# (read only: the seeds and every input that ever found a bug), and from a
# working corpus fuzz/corpus/<target>/ that grows across runs and is not
# committed. One libFuzzer process at a time (what -jobs=1 would run), with
# -timeout=10 (an input that takes longer is a hang), -rss_limit_mb=2048
# and -malloc_limit_mb=1024 (memory growth is a crash). A crash or hang
# leaves its input in fuzz/artifacts/<target>/; add it to the committed
# corpus once fixed, and the stable test `fuzz_corpus` replays it in CI.
#
# At the end it prints, per target: executions, executions per second,
# coverage (edges) and features, the working corpus's size, peak RSS and
# whether anything was found; it exits non-zero if any target crashed.
# Needs: rustup's nightly toolchain and `cargo install cargo-fuzz`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
seconds="${1:-300}"
case "$seconds" in
    '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac
shift || true
command -v cargo-fuzz >/dev/null || { echo "cargo-fuzz not found: cargo install cargo-fuzz" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
    targets=("$@")
    # Only the targets named: each is a link of the whole registry and agent.
    for target in "${targets[@]}"; do
        cargo +nightly fuzz build "$target"
    done
else
    mapfile -t targets < <(cargo +nightly fuzz list)
    cargo +nightly fuzz build
fi

logs="fuzz/logs"
mkdir -p "$logs"
report=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    log="$logs/$target.log"
    echo "==> $target for $seconds s (log: $log)"
    status=0
    cargo +nightly fuzz run "$target" "fuzz/corpus/$target" "tests/fuzz_corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" >"$log" 2>&1 || status=$?
    stat() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
    last="$(grep -E '^#[0-9]+' "$log" | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corpus="$(find "fuzz/corpus/$target" -type f | wc -l)"
    found="nothing"
    if [ "$status" -ne 0 ]; then
        found="$(grep -m1 -oE 'ERROR: libFuzzer: [a-z-]+|panicked at [^ ]+|ERROR: AddressSanitizer: [a-z-]+' "$log" || echo "exit $status")"
        failed=1
    fi
    report+=("$(printf '%-18s %12s %8s %6s %7s %7s %8s  %s' "$target" "$(stat number_of_executed_units)" \
        "$(stat average_exec_per_sec)" "${cov:-?}" "${ft:-?}" "$corpus" "$(stat peak_rss_mb)" "$found")")
done

printf '\n%-18s %12s %8s %6s %7s %7s %8s  %s\n' target executions "exec/s" cov features corpus "rss MB" found
printf '%s\n' "${report[@]}"
exit "$failed"
