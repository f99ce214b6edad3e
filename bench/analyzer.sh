#!/usr/bin/env bash
# Analyzer benchmark: `meshlens analyze` over 10M Bookinfo request records in a real store, end to end,
# against DuckDB running the same aggregations as SQL over the same Parquet files, interleaved in one run.
# Not part of CI. See docs/benchmarks.md, section "Analyzer: bench/analyzer.sh".
#
# Usage: bench/analyzer.sh
# Environment: MESHLENS_BENCH_ROWS (10000000), MESHLENS_BENCH_ROUNDS (5), MESHLENS_BENCH_DATA (directory
# caching the generated store, default ~/.cache/meshlens-bench; bench/api.sh serves the same store),
# CARGO_TARGET_DIR, MESHLENS_BIN (use this binary).
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
duckdb_python
build_release
run_driver analyze
