#!/usr/bin/env bash
# Instructions per request of the meshlens ingress, counted by callgrind: a measure of the proxy's request
# path that, unlike wall-clock throughput, repeats on a noisy shared machine. Compares binaries side by side.
# Not part of CI. See docs/benchmarks.md, "Proxy: bench/proxy.sh" and the session 6 runs.
#
# Usage: bench/proxy-instructions.sh BINARY [BINARY...]   (e.g. the release binary of two commits; `nginx`
# in place of a binary counts bench/proxy.sh's nginx reverse proxy, the baseline)
# Each binary serves the bench's ingress config (bench/proxy/ingress.yaml) in front of an nginx backend
# under valgrind; instrumentation is switched on for DURATION seconds of `wrk -c8` after a warm-up, and
# the instructions counted are divided by the requests wrk completed (access logs off, as in proxy.sh).
# The proxy is pinned to one core, as in proxy.sh, so it runs the runtime it runs there (current-thread).
# Environment: DURATION (10), CONNS (8), PROXY_CPU (0).
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help || $# -eq 0 ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
for tool in valgrind callgrind_control callgrind_annotate wrk nginx curl taskset; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install valgrind wrk nginx curl)" >&2; exit 1; }
done
DURATION=${DURATION:-10}
CONNS=${CONNS:-8}
PROXY_CPU=${PROXY_CPU:-0}
CONF=$(cd "$(dirname "${BASH_SOURCE[0]}")/proxy" && pwd)
source "$CONF/../lib.sh" # free_port
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshlens-instr.XXXXXX")
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port BACKEND_PORT
sed -e "s#@PREFIX@#$WORK#g" -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" "$CONF/backend-nginx.conf" >"$WORK/backend.conf"
sed -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" "$CONF/ingress.yaml" >"$WORK/ingress.yaml"
mkdir -p "$WORK/tmp"
nginx -p "$WORK" -e "$WORK/backend.error.log" -c "$WORK/backend.conf" &
PIDS+=($!)

printf '| binary | requests | instructions | instructions per request |\n|---|--:|--:|--:|\n'
for binary in "$@"; do
    free_port listen
    out="$WORK/callgrind.$listen"
    if [[ $binary == nginx ]]; then
        # The baseline: bench/proxy.sh's nginx reverse proxy (one process, master_process off).
        sed -e "s#@PREFIX@#$WORK#g" -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" -e "s#@PORT@#$listen#g" \
            "$CONF/nginx-proxy.conf" >"$WORK/nginx-proxy.$listen.conf"
        proxy=(nginx -p "$WORK" -e "$WORK/nginx-proxy.$listen.log" -c "$WORK/nginx-proxy.$listen.conf")
    else
        proxy=("$binary" proxy ingress -f "$WORK/ingress.yaml" --listen "80=127.0.0.1:$listen" --access-log off)
    fi
    taskset -c "$PROXY_CPU" valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" "${proxy[@]}" \
        >"$WORK/proxy.$listen.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 120); do
        curl -sf -o /dev/null -H "Host: bench.example.com" "http://127.0.0.1:$listen/" && break
        sleep 0.5
    done
    wrk -t1 -c"$CONNS" -d3s -H "Host: bench.example.com" "http://127.0.0.1:$listen/" >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    wrk -t1 -c"$CONNS" -d"${DURATION}s" -H "Host: bench.example.com" "http://127.0.0.1:$listen/" >"$WORK/wrk.$listen"
    callgrind_control -i off "$pid" >/dev/null
    callgrind_control -d "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" 2>/dev/null || true
    requests=$(awk '/ requests in /{print $1}' "$WORK/wrk.$listen")
    instructions=$(callgrind_annotate "$out.1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !n++ {gsub(",", "", $1); print $1}')
    printf '| %s | %s | %s | %s |\n' "$binary" "$requests" "$instructions" "$((instructions / requests))"
done
