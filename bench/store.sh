#!/usr/bin/env bash
# Store benchmark: durable ingest (WAL + Parquet flush + catalog) of 5M request records vs writing the same
# Arrow batches straight to Parquet, and the group-by-edge p50/p99 query through the store vs DuckDB over
# the same files. Not part of CI. See docs/benchmarks.md, section "Store: bench/store.sh".
#
# Usage: bench/store.sh   (MESHLENS_BENCH_ROWS=N to change the 5 000 000 rows; CARGO_TARGET_DIR)
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
duckdb_python
build_release
run_driver store
