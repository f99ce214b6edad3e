# Sourced by the bench/ scripts. One release build of the `meshlens` binary and of every benchmark driver,
# with one feature set (the whole workspace's, benches included), so that no script rebuilds what another
# built: a `cargo bench -p CRATE` would unify features differently and rebuild DataFusion for 20 minutes.
# CARGO_TARGET_DIR defaults to ~/.cache/meshlens-target-release; MESHLENS_BIN=/path/to/meshlens skips the
# binary's build (the drivers are still built).

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/meshlens-target-release}

# build_release: builds the binary and the drivers once per invocation of bench/run.sh (or of one script)
# and exports MESHLENS_BIN.
build_release() {
    if [[ -z ${MESHLENS_BENCH_BUILT:-} ]]; then
        echo "building: cargo build --release --workspace --bins --benches" >&2
        (cd "$BENCH_ROOT" && cargo build --release --workspace --bins --benches) >&2
        export MESHLENS_BENCH_BUILT=1
    fi
    export MESHLENS_BIN=${MESHLENS_BIN:-$CARGO_TARGET_DIR/release/meshlens}
    [[ -x $MESHLENS_BIN ]] || { echo "error: no meshlens binary at $MESHLENS_BIN" >&2; exit 1; }
}

# run_driver NAME: runs the benchmark driver `benches/NAME` of whichever crate has it.
run_driver() {
    (cd "$BENCH_ROOT" && cargo bench --workspace --bench "$1")
}

# duckdb_python: a virtualenv with DuckDB (the baseline of the store and analyzer benchmarks); exports
# MESHLENS_BENCH_PYTHON.
duckdb_python() {
    local venv=/tmp/meshlens-bench-venv
    if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
        python3 -m venv "$venv" >&2
        "$venv/bin/pip" install -q duckdb >&2
    fi
    export MESHLENS_BENCH_PYTHON=$venv/bin/python
}

# free_port VAR: a TCP port in 20000-29999 (below Linux's ephemeral range) with no socket on it, not handed
# out before by this script.
BENCH_PORTS_GIVEN=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 10000))
        [[ $BENCH_PORTS_GIVEN == *" $p "* ]] && continue
        if [[ -z $(ss -Htan "( sport = :$p )") ]]; then
            BENCH_PORTS_GIVEN+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}
