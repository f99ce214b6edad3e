#!/usr/bin/env bash
# Interleaved A/B of the nginx reverse proxy and meshlens ingress binaries on one pinned core each: the
# comparison of CPU per request that moves least between minutes on a shared machine. For every round,
# each proxy in turn gets a 2 s warm-up and an 8 s `wrk -t1 -c32` saturation run (plain wrk, no Lua);
# user and system CPU per request come from /proc/PID/stat. Never run in CI. See docs/benchmarks.md
# (sessions 10 and 11).
#
# Usage: bench/proxy-ab.sh ROUNDS BINARY [BINARY...]   (e.g. the release binaries of two commits)
# Environment: PROXY_CPU (0) for the proxies, LOAD_CPU (1) for wrk and the nginx backend.
set -euo pipefail
if [[ ${1:-} == -h || ${1:-} == --help || $# -lt 2 ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
for tool in wrk nginx taskset curl ss; do
    command -v "$tool" >/dev/null || { echo "error: $tool not found (apt-get install wrk nginx util-linux curl iproute2)" >&2; exit 1; }
done
ROUNDS=$1
shift
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
CONF=$(cd "$(dirname "${BASH_SOURCE[0]}")/proxy" && pwd)
source "$CONF/../lib.sh" # free_port
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshlens-ab.XXXXXX")
mkdir -p "$WORK/tmp"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
free_port BACKEND_PORT
free_port NGINX_PORT
render() { sed -e "s#@PREFIX@#$WORK#g" -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" -e "s#@PORT@#$NGINX_PORT#g" "$1" >"$2"; }
render "$CONF/backend-nginx.conf" "$WORK/backend.conf"
render "$CONF/nginx-proxy.conf" "$WORK/nginx-proxy.conf"
render "$CONF/ingress.yaml" "$WORK/ingress.yaml"
taskset -c "$LOAD_CPU" nginx -p "$WORK" -e "$WORK/backend.error.log" -c "$WORK/backend.conf" &
PIDS+=($!)
taskset -c "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/nginx-proxy.error.log" -c "$WORK/nginx-proxy.conf" &
NAMES=(nginx)
PROCS=($!)
PORTS=("$NGINX_PORT")
PIDS+=($!)
for binary in "$@"; do
    free_port listen
    taskset -c "$PROXY_CPU" "$binary" proxy ingress -f "$WORK/ingress.yaml" --listen "80=127.0.0.1:$listen" \
        --access-log off >"$WORK/ingress.$listen.log" 2>&1 &
    NAMES+=("$binary")
    PROCS+=($!)
    PORTS+=("$listen")
    PIDS+=($!)
done
for listen in "${PORTS[@]}"; do
    for _ in $(seq 60); do
        curl -sf -o /dev/null -H "Host: bench.example.com" "http://127.0.0.1:$listen/" && break
        sleep 0.5
    done
done
cpu_ticks() { # user and system clock ticks of a process and its children
    local user=0 system=0 pid u s
    for pid in "$1" $(pgrep -P "$1"); do
        read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
        user=$((user + u)) system=$((system + s))
    done
    echo "$user $system"
}
TICK=$(getconf CLK_TCK)
printf '| round | proxy | req/s | user µs/req | system µs/req |\n|--:|---|--:|--:|--:|\n'
for round in $(seq "$ROUNDS"); do
    for i in "${!NAMES[@]}"; do
        url="http://127.0.0.1:${PORTS[$i]}/"
        taskset -c "$LOAD_CPU" wrk -t1 -c32 -d2s -H "Host: bench.example.com" "$url" >/dev/null
        read -r u0 s0 < <(cpu_ticks "${PROCS[$i]}")
        out=$(taskset -c "$LOAD_CPU" wrk -t1 -c32 -d8s -H "Host: bench.example.com" "$url")
        read -r u1 s1 < <(cpu_ticks "${PROCS[$i]}")
        requests=$(awk '/ requests in /{print $1}' <<<"$out")
        rate=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        awk -v r="$round" -v n="${NAMES[$i]}" -v rate="$rate" -v q="$requests" -v u=$((u1 - u0)) -v s=$((s1 - s0)) \
            -v t="$TICK" 'BEGIN { printf "| %d | %s | %.0f | %.2f | %.2f |\n", r, n, rate, u * 1e6 / t / q, s * 1e6 / t / q }'
    done
done
