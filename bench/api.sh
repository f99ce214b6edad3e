#!/usr/bin/env bash
# REST API load benchmark: wrk on loopback against `meshlens serve` over the analyzer benchmark's store
# (10M Bookinfo request records), for the main read endpoints and POST /api/v1/query. Prints one markdown
# table (req/s, p50, p99, errors per endpoint) with /healthz, which touches no data, as the baseline.
# Not part of CI. See docs/benchmarks.md, section "API: bench/api.sh".
#
# Usage: bench/api.sh   (needs the store bench/analyzer.sh generates; run that once first)
#
# Environment (defaults in brackets):
#   MESHLENS_BENCH_ROWS [10000000]   which generated store to serve
#   MESHLENS_BENCH_DATA [~/.cache/meshlens-bench]
#   DURATION [10]   seconds per endpoint      CONNS [8]   wrk connections
#   SERVE_CPUS [0]  cores of `serve`          LOAD_CPU [1] core of wrk
#   WRK_TIMEOUT [30] seconds wrk waits for an answer
#   MESHLENS_BIN    use this binary instead of building it; CARGO_TARGET_DIR
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
command -v wrk >/dev/null || { echo "error: wrk is missing (apt-get install -y wrk)" >&2; exit 1; }
ROWS=${MESHLENS_BENCH_ROWS:-10000000}
DATA=${MESHLENS_BENCH_DATA:-$HOME/.cache/meshlens-bench}/analyzer-bookinfo-$ROWS
DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
SERVE_CPUS=${SERVE_CPUS:-0}
LOAD_CPU=${LOAD_CPU:-1}
# Longer than the server's own limits (the SQL timeout is 10 s), so that a slow answer is measured, and an
# overloaded server's 503 counted, instead of wrk giving up on the socket after its default 2 s.
WRK_TIMEOUT=${WRK_TIMEOUT:-30}
[[ -f $DATA/bench-data.json ]] || { echo "error: no generated store in $DATA; run bench/analyzer.sh first" >&2; exit 1; }
cd "$ROOT"
source "$ROOT/bench/lib.sh"
build_release

# The window reaches back past the first generated record (the data is from when it was generated).
first=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["first"])' "$DATA/bench-data.json")
hours=$(( ( $(date +%s) - $(date -d "$first" +%s) ) / 3600 + 2 ))
window="window=${hours}h"

work=$(mktemp -d)
serve_pid=
cleanup() { [[ -n $serve_pid ]] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT INT TERM

taskset -c "$SERVE_CPUS" "$MESHLENS_BIN" serve --data-dir "$DATA" \
    -f tests/fixtures/istio-samples/bookinfo/platform/kube/bookinfo.yaml \
    -f tests/fixtures/istio-samples/bookinfo/networking/bookinfo-gateway.yaml \
    -f tests/fixtures/istio-samples/bookinfo/networking/destination-rule-all-mtls.yaml \
    -f bench/analyzer/bookinfo-policies.yaml \
    --otlp-grpc-addr off --otlp-http-addr off --api-addr 127.0.0.1:0 \
    --insecure-no-auth --api-rate-limit 1000000 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 1 600); do
    grep -q '^meshlens listening' "$work/serve.log" && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 0.1
done
api=$(sed -n 's/^meshlens listening.* api=\([^ ]*\).*/\1/p' "$work/serve.log")
base="http://$api"

echo "meshlens API benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), meshlens $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- api store analyzer src || echo '+changes')"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1); load average before $(cut -d' ' -f1-3 /proc/loadavg)"
echo "data: $ROWS request records in $DATA; analysis window $window; serve on CPU $SERVE_CPUS, wrk -t1 -c$CONNS -d${DURATION}s --timeout ${WRK_TIMEOUT}s on CPU $LOAD_CPU"

# The first analysis request runs every analysis over the window; later ones share its result
# (docs/api.md, "Cached analyses"); a background run refreshes it while wrk runs, on the query threads.
cold=$( { /usr/bin/time -f '%e' curl -sf -o /dev/null "$base/api/v1/mtls/coverage?$window"; } 2>&1 )
echo "cold: the first /api/v1/mtls/coverage (every analysis over the window) took $cold s"

rows=()
# measure NAME URL [BODY]: one wrk run; appends a table row.
measure() {
    local name=$1 url=$2 body=${3:-} out
    if [[ -n $body ]]; then
        out=$(BODY=$body taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout "${WRK_TIMEOUT}s" --latency -s bench/api/post.lua "$url")
    else
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout "${WRK_TIMEOUT}s" --latency "$url")
    fi
    echo "$out" > "$work/$(echo "$name" | tr -c 'a-z0-9' _).txt"
    local rps p50 p99 errors
    rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Non-2xx/ {n += $NF} /Socket errors/ {gsub(",", ""); n += $4 + $6 + $8 + $10} END {print n + 0}' <<<"$out")
    rows+=("$name|$rps|$p50|$p99|$errors")
}

measure "GET /healthz (baseline)" "$base/healthz"
for endpoint in graph mtls/coverage routes resilience/gaps recommendations findings; do
    measure "GET /api/v1/$endpoint" "$base/api/v1/$endpoint?$window"
done
heavy="SELECT source_workload, destination_service, count(*) AS requests, approx_percentile_cont(duration_ms, 0.5) AS p50_ms, approx_percentile_cont(duration_ms, 0.99) AS p99_ms FROM requests GROUP BY 1, 2 ORDER BY requests DESC"
light="SELECT destination_service, count(*) AS requests FROM requests WHERE timestamp >= (SELECT max(timestamp) FROM requests) - INTERVAL '5 minutes' GROUP BY 1"
measure "POST /api/v1/query: edges + p50/p99 over all rows" "$base/api/v1/query" "{\"sql\": \"$heavy\"}"
measure "POST /api/v1/query: last 5 minutes per service" "$base/api/v1/query" "{\"sql\": \"$light\"}"

baseline=$(cut -d'|' -f2 <<<"${rows[0]}")
echo
echo "| endpoint | req/s | vs /healthz | p50 | p99 | errors |"
echo "|---|--:|--:|--:|--:|--:|"
for row in "${rows[@]}"; do
    IFS='|' read -r name rps p50 p99 errors <<<"$row"
    ratio=$(awk -v a="$rps" -v b="$baseline" 'BEGIN { printf "%.4fx", a / b }')
    echo "| $name | $rps | $ratio | $p50 | $p99 | $errors |"
done
# bench/run.sh's combined table: bench | measure | value | baseline | its value | ratio | target | verdict.
for row in "${rows[@]:1}"; do
    IFS='|' read -r name rps p50 p99 errors <<<"$row"
    ratio=$(awk -v a="$rps" -v b="$baseline" 'BEGIN { printf "%.4fx", a / b }')
    echo "summary: api | $name, req/s (p50 $p50, p99 $p99, $errors errors) | $rps | GET /healthz | $baseline | $ratio | - | -"
done
echo
echo "serve peak RSS: $(awk '/VmHWM/ {printf "%.0f MB", $2 / 1024}' /proc/$serve_pid/status)"
echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)"
