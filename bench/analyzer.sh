#!/usr/bin/env bash
# Analyzer benchmark: `meshlens analyze` over 10M Bookinfo request records in a real store, end to end,
# against DuckDB running the same aggregations as SQL over the same Parquet files, interleaved in one run.
# Not part of CI. See docs/benchmarks.md, section "Analyzer: bench/analyzer.sh".
#
# Usage: bench/analyzer.sh
# Environment: MESHLENS_BENCH_ROWS (10000000), MESHLENS_BENCH_ROUNDS (5), MESHLENS_BENCH_DATA (directory
# caching the generated store, default ~/.cache/meshlens-bench), CARGO_TARGET_DIR, MESHLENS_BIN (skip the
# build and use this binary).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
  exit 0
fi

venv=/tmp/meshlens-bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb
fi
export MESHLENS_BENCH_PYTHON="$venv/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshlens-target-release}"
if [ -z "${MESHLENS_BIN:-}" ]; then
  cargo build --release --bin meshlens
  export MESHLENS_BIN="$CARGO_TARGET_DIR/release/meshlens"
fi
cargo bench -p meshlens-analyzer --bench analyze
