#!/usr/bin/env bash
# Every benchmark behind one entry point: builds once (bench/lib.sh), runs bench/store.sh,
# bench/collector.sh, bench/analyzer.sh, bench/api.sh and bench/proxy.sh in that order (api serves the
# store analyzer generates), keeps each one's whole output, and prints one table of the headline numbers
# with their ratios to the baselines (raw Parquet and DuckDB, the store's own append rate, /healthz,
# nginx) and the targets. Takes about an hour on 2 cores; needs two quiet cores to mean anything.
# Not part of CI. See docs/benchmarks.md.
#
# Usage: bench/run.sh [store] [collector] [analyzer] [api] [proxy]     (default: all, in that order)
# Environment: RESULTS [/tmp/meshlens-bench-results/<UTC time>] where the outputs go; and whatever the
# single scripts take (their --help), e.g. MESHLENS_BENCH_ROWS, DURATION, ROUNDS.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
benches=("$@")
((${#benches[@]})) || benches=(store collector analyzer api proxy)
for b in "${benches[@]}"; do
    [[ -x $BENCH_ROOT/bench/$b.sh ]] || { echo "error: no benchmark $b (bench/$b.sh)" >&2; exit 2; }
done
RESULTS=${RESULTS:-/tmp/meshlens-bench-results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$RESULTS"
build_release

failed=()
for b in "${benches[@]}"; do
    echo "== $b: bench/$b.sh (output in $RESULTS/$b.txt)" >&2
    if ! "$BENCH_ROOT/bench/$b.sh" 2>&1 | tee "$RESULTS/$b.txt" >&2; then
        failed+=("$b")
    fi
done

{
    echo "meshlens benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), meshlens $(git -C "$BENCH_ROOT" rev-parse --short HEAD)$(git -C "$BENCH_ROOT" diff --quiet HEAD || echo '+changes')"
    echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/^MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo); load average now $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "full outputs: $RESULTS"
    echo
    echo "| bench | measure | value | baseline | baseline value | ratio | target | verdict |"
    echo "|---|---|--:|---|--:|--:|---|---|"
    for b in "${benches[@]}"; do
        sed -n 's/^summary: \(.*\)$/| \1 |/p' "$RESULTS/$b.txt"
    done
    if ((${#failed[@]})); then
        echo
        echo "benchmarks that failed (see their output): ${failed[*]}"
    fi
} | tee "$RESULTS/summary.md"
