#!/usr/bin/env bash
# Store benchmark: durable ingest vs raw Parquet, and the edge-latency query vs DuckDB on the same files.
# Not part of CI. Usage: store/benches/store.sh   (MESHLENS_BENCH_ROWS=N to change the 5 000 000 rows)
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=/tmp/meshlens-bench-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb
fi
export MESHLENS_BENCH_PYTHON="$venv/bin/python"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/meshlens-target-store}"
cargo bench -p meshlens-store --bench store
