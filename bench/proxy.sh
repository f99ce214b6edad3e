#!/usr/bin/env bash
# Proxy benchmark on loopback: direct to an nginx backend, through nginx and haproxy as reverse proxies,
# through the meshlens ingress gateway, and through a meshlens sidecar pair with mTLS. Prints one markdown
# table: throughput at saturation, p50/p99 and added latency at a fixed rate, proxy CPU seconds and peak
# RSS. Never run in CI. See docs/benchmarks.md for what each column means.
#
# Usage: bench/proxy.sh            (builds the release binary first, see bench/lib.sh)
#        MESHLENS=/path/to/meshlens bench/proxy.sh        (use that binary, no build)
#
# Environment (defaults in brackets):
#   DURATION [10]   seconds of each measurement (saturation run and fixed-rate run)
#   WARMUP [2]      seconds of unmeasured saturation load before each setup's measurements
#   CONNS [32]      wrk connections for the saturation run
#   RATE [1000]     requests per second of the fixed-rate run
#   RATE_CONNS [16] wrk connections for the fixed-rate run (the pacing horizon is RATE_CONNS/RATE seconds)
#   ROUNDS [5]      rounds; setups are interleaved within a round, the table shows per-setup medians
#   PROXY_CPU [0]   core the proxies under test are pinned to (taskset)
#   LOAD_CPU [1]    core wrk and the nginx backend are pinned to
#   KEEP_WORKDIR    set to keep the temporary directory (configs, proxy logs, raw wrk output)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh" # build_release, free_port
CONF=$ROOT/bench/proxy
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-32}
RATE=${RATE:-1000}
RATE_CONNS=${RATE_CONNS:-16}
ROUNDS=${ROUNDS:-5}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
MESHLENS=${MESHLENS:-${MESHLENS_BIN:-}}

if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# --- prerequisites ----------------------------------------------------------------------------------------
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need wrk wrk
need nginx nginx
need haproxy haproxy
need taskset util-linux
need ss iproute2
need awk mawk
need getconf libc-bin
if ((${#missing[@]})); then
    say "missing tools; install them with:"
    say "  apt-get install -y $(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')"
    exit 1
fi
if [[ -z $MESHLENS ]] && ! command -v cargo >/dev/null 2>&1; then
    die "cargo not found: install a Rust toolchain (https://rustup.rs), or set MESHLENS=/path/to/meshlens"
fi
CORES=$(nproc)
if ((CORES < 2)); then
    say "warning: only $CORES core: the proxy and the load generator share it, numbers are not comparable to 2+ cores"
    PROXY_CPU=0 LOAD_CPU=0
fi

# --- build ------------------------------------------------------------------------------------------------
BINARY_NOTE=""
[[ -n $MESHLENS && -z ${MESHLENS_BENCH_BUILT:-} ]] && BINARY_NOTE=" (binary given: $MESHLENS, not necessarily built from this commit)"
if [[ -z $MESHLENS ]]; then
    build_release
    MESHLENS=$MESHLENS_BIN
fi
[[ -x $MESHLENS ]] || die "no meshlens binary at $MESHLENS"

# --- processes and cleanup --------------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshlens-bench.XXXXXX")
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${KEEP_WORKDIR:-} ]]; then say "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start NAME CPU CMD...: runs CMD pinned to CPU in the background, output in $WORK/NAME.log; sets LAST_PID.
start() {
    local name=$1 cpu=$2
    shift 2
    taskset -c "$cpu" "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}


# status_line PORT HOST TARGET: the status line of one GET (bash's /dev/tcp, no curl needed).
status_line() {
    (
        # A server that refuses plaintext (STRICT mTLS) may close before the request is written: that is an
        # answer too, not a reason for SIGPIPE to end the script.
        trap '' PIPE
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
        printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$3" "$2" >&3 || true
        IFS= read -r -t 2 line <&3 || true
        printf '%s' "${line%$'\r'}"
    ) 2>/dev/null
}

# http_body PORT PATH: the body of a GET (for the admin endpoint).
http_body() {
    (
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 0
        printf 'GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n' "$2" >&3
        timeout 5 cat <&3 | sed '1,/^\r\{0,1\}$/d'
    ) 2>/dev/null
}

# wait_200 NAME PID PORT HOST TARGET: until a GET through PORT answers 200; dies if PID (whose output is
# $WORK/NAME.log) exits.
wait_200() {
    local name=$1 pid=$2 port=$3 host=$4 target=$5 line="" _
    for _ in $(seq 150); do
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/$name.log" >&2; die "$name exited"; }
        line=$(status_line "$port" "$host" "$target")
        [[ $line == "HTTP/1."?" 200"* ]] && return 0
        sleep 0.1
    done
    cat "$WORK/$name.log" >&2
    die "$name: GET $target (Host: $host) on port $port does not answer 200 (last status line: '${line}')"
}

render() { # TEMPLATE OUT: fills in the @PLACEHOLDERS@
    sed -e "s#@PREFIX@#$WORK#g" -e "s#@BACKEND_PORT@#$BACKEND_PORT#g" -e "s#@INBOUND_PORT@#$INBOUND_PORT#g" \
        -e "s#@CLIENT_INBOUND_PORT@#$CLIENT_INBOUND_PORT#g" -e "s#@PORT@#${PORT:-}#g" "$1" >"$2"
}

CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # PID...: utime+stime of all threads of these processes, in clock ticks
    local total=0 pid stat f
    for pid in "$@"; do
        stat=$(<"/proc/$pid/stat")
        read -r -a f <<<"${stat##*) }"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}
hwm_kb() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# --- setups -----------------------------------------------------------------------------------------------
mkdir -p "$WORK/tmp" "$WORK/results"
free_port BACKEND_PORT
free_port NGINX_PORT
free_port HAPROXY_PORT
free_port INGRESS_PORT
free_port INGRESS_ADMIN
free_port INBOUND_PORT
free_port SERVER_OUTBOUND
free_port SERVER_ADMIN
free_port CLIENT_OUTBOUND
free_port CLIENT_ADMIN
free_port CLIENT_APP
free_port CLIENT_INBOUND_PORT

render "$CONF/backend-nginx.conf" "$WORK/backend-nginx.conf"
PORT=$NGINX_PORT render "$CONF/nginx-proxy.conf" "$WORK/nginx-proxy.conf"
PORT=$HAPROXY_PORT render "$CONF/haproxy.cfg" "$WORK/haproxy.cfg"
render "$CONF/ingress.yaml" "$WORK/ingress.yaml"
render "$CONF/mesh.yaml" "$WORK/mesh.yaml"
"$MESHLENS" ca init --ca-dir "$WORK/ca" >"$WORK/ca.log" 2>&1 || { cat "$WORK/ca.log" >&2; die "meshlens ca init failed"; }

say "starting the backend and the proxies (proxies on CPU $PROXY_CPU, wrk and backend on CPU $LOAD_CPU)"
start backend "$LOAD_CPU" nginx -p "$WORK" -e "$WORK/backend-nginx.error.log" -c "$WORK/backend-nginx.conf"
BACKEND_PID=$LAST_PID
wait_200 backend "$BACKEND_PID" "$BACKEND_PORT" bench.example.com /

start nginx-proxy "$PROXY_CPU" nginx -p "$WORK" -e "$WORK/nginx-proxy.error.log" -c "$WORK/nginx-proxy.conf"
NGINX_PID=$LAST_PID
start haproxy "$PROXY_CPU" haproxy -db -f "$WORK/haproxy.cfg"
HAPROXY_PID=$LAST_PID
start ingress "$PROXY_CPU" "$MESHLENS" proxy ingress -f "$WORK/ingress.yaml" --listen "80=127.0.0.1:$INGRESS_PORT" \
    --admin "127.0.0.1:$INGRESS_ADMIN" --access-log off
INGRESS_PID=$LAST_PID
start sidecar-server "$PROXY_CPU" "$MESHLENS" proxy sidecar -f "$WORK/mesh.yaml" --workload bench/backend-1 \
    --app "127.0.0.1:$BACKEND_PORT" --outbound "127.0.0.1:$SERVER_OUTBOUND" --ca-dir "$WORK/ca" \
    --admin "127.0.0.1:$SERVER_ADMIN" --access-log off
SERVER_PID=$LAST_PID
start sidecar-client "$PROXY_CPU" "$MESHLENS" proxy sidecar -f "$WORK/mesh.yaml" --workload bench/client-1 \
    --app "127.0.0.1:$CLIENT_APP" --outbound "127.0.0.1:$CLIENT_OUTBOUND" --ca-dir "$WORK/ca" \
    --admin "127.0.0.1:$CLIENT_ADMIN" --access-log off
CLIENT_PID=$LAST_PID

SIDECAR_TARGET=http://backend.bench:8080/
SETUPS=(direct nginx haproxy meshlens-ingress meshlens-sidecars)
declare -A PORT_OF HOST_OF TARGET_OF PIDS_OF HOPS_OF LABEL_OF LOG_OF
PORT_OF=([direct]=$BACKEND_PORT [nginx]=$NGINX_PORT [haproxy]=$HAPROXY_PORT [meshlens-ingress]=$INGRESS_PORT
    [meshlens-sidecars]=$CLIENT_OUTBOUND)
HOST_OF=([direct]=bench.example.com [nginx]=bench.example.com [haproxy]=bench.example.com
    [meshlens-ingress]=bench.example.com [meshlens-sidecars]=backend.bench:8080)
TARGET_OF=([direct]=/ [nginx]=/ [haproxy]=/ [meshlens-ingress]=/ [meshlens-sidecars]=$SIDECAR_TARGET)
PIDS_OF=([direct]="" [nginx]=$NGINX_PID [haproxy]=$HAPROXY_PID [meshlens-ingress]=$INGRESS_PID
    [meshlens-sidecars]="$CLIENT_PID $SERVER_PID")
HOPS_OF=([direct]=0 [nginx]=1 [haproxy]=1 [meshlens-ingress]=1 [meshlens-sidecars]=2)
LOG_OF=([nginx]=nginx-proxy [haproxy]=haproxy [meshlens-ingress]=ingress [meshlens-sidecars]=sidecar-client)
LABEL_OF=([direct]="direct (baseline)" [nginx]="nginx reverse proxy" [haproxy]="haproxy reverse proxy"
    [meshlens-ingress]="meshlens ingress" [meshlens-sidecars]="meshlens sidecar pair, mTLS")

for s in "${SETUPS[@]}"; do
    [[ $s == direct ]] && continue
    pid=${PIDS_OF[$s]%% *}
    wait_200 "${LOG_OF[$s]}" "$pid" "${PORT_OF[$s]}" "${HOST_OF[$s]}" "${TARGET_OF[$s]}"
done
# The inbound side must refuse plaintext (STRICT), so the 200 above went over mTLS.
line=$(status_line "$INBOUND_PORT" backend.bench:8080 /)
[[ $line != "HTTP/1."?" 200"* ]] || die "the server sidecar's inbound answered plaintext: PeerAuthentication STRICT not in force"

# --- measurements -----------------------------------------------------------------------------------------
# wrk_run SETUP MODE OUT: MODE is sat (as fast as possible, CONNS connections) or rate (RATE req/s).
wrk_run() {
    local s=$1 mode=$2 out=$3 conns=$CONNS rate=0 duration=$DURATION
    case $mode in
    warmup) duration=$WARMUP ;;
    rate) conns=$RATE_CONNS rate=$RATE ;;
    esac
    BENCH_PATH=${TARGET_OF[$s]} BENCH_HOST=${HOST_OF[$s]} BENCH_RATE=$rate \
        taskset -c "$LOAD_CPU" wrk -t1 -c"$conns" -d"${duration}s" --timeout 5s -s "$CONF/wrk.lua" \
        "http://127.0.0.1:${PORT_OF[$s]}/" -- 1 >"$out" 2>&1 || { cat "$out" >&2; die "wrk failed for $s"; }
}
field() { sed -n "s/.*[ ]$2=\([0-9.]*\).*/\1/p" "$1"; }

# measure SETUP MODE ROUND: one wrk run; appends "rps p50_us p99_us errors late cpu_s requests" to results.
measure() {
    local s=$1 mode=$2 round=$3 out="$WORK/results/$1.$2.$3.txt" pids before=0 after=0 reqs dur
    pids=${PIDS_OF[$s]}
    # shellcheck disable=SC2086
    [[ -n $pids ]] && before=$(cpu_ticks $pids)
    wrk_run "$s" "$mode" "$out"
    # shellcheck disable=SC2086
    [[ -n $pids ]] && after=$(cpu_ticks $pids)
    reqs=$(field "$out" requests)
    dur=$(field "$out" duration_us)
    [[ -n $reqs ]] || { cat "$out" >&2; die "no result from wrk for $s"; }
    awk -v r="$reqs" -v d="$dur" -v p50="$(field "$out" p50_us)" -v p99="$(field "$out" p99_us)" \
        -v e1="$(field "$out" socket_errors)" -v e2="$(field "$out" non2xx)" -v late="$(field "$out" late)" \
        -v t=$((after - before)) -v hz="$CLK_TCK" -v pids="$pids" \
        'BEGIN { printf "%.1f %d %d %d %d %s %d\n", r / (d / 1e6), p50, p99, e1 + e2, late, (pids == "" ? "-" : sprintf("%.2f", t / hz)), r }' \
        >>"$WORK/results/$s.$mode"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
total=$((ROUNDS * ${#SETUPS[@]} * (WARMUP + 2 * DURATION)))
say "measuring: $ROUNDS round(s) x ${#SETUPS[@]} setups x (${WARMUP}s warm-up + 2 x ${DURATION}s), about $((total / 60 + 1)) min"
for round in $(seq "$ROUNDS"); do
    for s in "${SETUPS[@]}"; do
        say "  round $round/$ROUNDS: $s"
        wrk_run "$s" warmup "$WORK/results/$s.warmup.$round.txt"
        measure "$s" sat "$round"
        measure "$s" rate "$round"
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# Requests the server sidecar saw over mTLS, from its Prometheus endpoint.
MTLS_REQUESTS=$(http_body "$SERVER_ADMIN" /stats/prometheus |
    awk '/^istio_requests_total\{/ && /connection_security_policy="mutual_tls"/ { n += $NF } END { printf "%d", n }')

# --- report -----------------------------------------------------------------------------------------------
# col SETUP MODE N: the median of column N over the rounds ("-" when not numeric).
col() {
    awk -v c="$3" '{ print $c }' "$WORK/results/$1.$2" | sort -n |
        awk '$1 == "-" { dash = 1 } { a[NR] = $1 } END { if (dash || NR == 0) print "-"; else if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
sum_col() { awk -v c="$3" '{ n += $c } END { print n + 0 }' "$WORK/results/$1.$2"; }
rss() { # SETUP: peak RSS in MB of its processes, "a + b" for several
    local pid out=""
    for pid in ${PIDS_OF[$1]}; do
        out+="${out:+ + }$(awk -v k="$(hwm_kb "$pid")" 'BEGIN { printf "%.1f", k / 1024 }')"
    done
    echo "${out:--}"
}

declare -A RPS P50 P99 CPU_SAT CPU_RATE REQ_SAT ERR LATE RSS
for s in "${SETUPS[@]}"; do
    RPS[$s]=$(col "$s" sat 1)
    P50[$s]=$(col "$s" rate 2)
    P99[$s]=$(col "$s" rate 3)
    CPU_SAT[$s]=$(col "$s" sat 6)
    CPU_RATE[$s]=$(col "$s" rate 6)
    REQ_SAT[$s]=$(col "$s" sat 7)
    ERR[$s]=$(($(sum_col "$s" sat 4) + $(sum_col "$s" rate 4)))
    LATE[$s]=$(sum_col "$s" rate 5)
    RSS[$s]=$(rss "$s")
done

{
    echo "meshlens proxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), meshlens $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet HEAD -- proxy model src/cli/proxy.rs src/cli/ca.rs 2>/dev/null || echo " with uncommitted proxy changes")$BINARY_NOTE"
    echo "machine: $CORES cores, $(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo); load average before $LOAD_BEFORE, after $LOAD_AFTER"
    echo "proxies pinned to CPU $PROXY_CPU (one core: one nginx worker, one haproxy thread, one tokio worker per meshlens process), wrk and the nginx backend to CPU $LOAD_CPU"
    echo "saturation: wrk -t1 -c$CONNS -d${DURATION}s; fixed rate: $RATE req/s over $RATE_CONNS connections for ${DURATION}s (wrk paced by bench/proxy/wrk.lua); median of $ROUNDS round(s) after a ${WARMUP}s warm-up each; access logs off everywhere (meshlens --access-log off)"
    echo
    echo "| setup | hops | req/s at saturation | vs nginx | proxy CPU s (sat) | CPU µs/req (sat) | p50 ms @${RATE}/s | p99 ms @${RATE}/s | added p50 ms | added p99 ms | added p99 ms/hop | proxy CPU s (@${RATE}/s) | peak RSS MB | errors |"
    echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for s in "${SETUPS[@]}"; do
        awk -v label="${LABEL_OF[$s]}" -v hops="${HOPS_OF[$s]}" -v rps="${RPS[$s]}" -v nginx="${RPS[nginx]}" \
            -v cs="${CPU_SAT[$s]}" -v reqs="${REQ_SAT[$s]}" -v p50="${P50[$s]}" -v p99="${P99[$s]}" \
            -v d50="${P50[direct]}" -v d99="${P99[direct]}" -v cr="${CPU_RATE[$s]}" -v rss="${RSS[$s]}" \
            -v err="${ERR[$s]}" 'BEGIN {
                added50 = hops ? sprintf("%+.3f", (p50 - d50) / 1000) : "-"
                added99 = hops ? sprintf("%+.3f", (p99 - d99) / 1000) : "-"
                perhop = hops ? sprintf("%+.3f", (p99 - d99) / 1000 / hops) : "-"
                cpureq = cs == "-" ? "-" : sprintf("%.1f", cs * 1e6 / reqs)
                printf "| %s | %d | %.0f | %.2fx | %s | %s | %.3f | %.3f | %s | %s | %s | %s | %s | %d |\n",
                    label, hops, rps, rps / nginx, cs, cpureq, p50 / 1000, p99 / 1000, added50, added99, perhop, cr, rss, err
            }'
    done
    echo
    echo "targets for meshlens: added p99 <= 1 ms per hop at ${RATE} req/s, throughput >= nginx on the same core, peak RSS <= 30 MB per proxy"
    for s in meshlens-ingress meshlens-sidecars; do
        awk -v label="${LABEL_OF[$s]}" -v hops="${HOPS_OF[$s]}" -v rps="${RPS[$s]}" -v nginx="${RPS[nginx]}" \
            -v p99="${P99[$s]}" -v d99="${P99[direct]}" -v rss="${RSS[$s]}" 'BEGIN {
                perhop = (p99 - d99) / 1000 / hops; ratio = rps / nginx
                n = split(rss, parts, / \+ /); max = 0
                for (i = 1; i <= n; i++) if (parts[i] + 0 > max) max = parts[i] + 0
                printf "- %s: added p99 %.3f ms/hop %s; throughput %.2fx nginx %s; peak RSS %.1f MB %s\n", label,
                    perhop, (perhop <= 1 ? "(met)" : "(MISSED)"), ratio, (ratio >= 1 ? "(met)" : "(MISSED)"),
                    max, (max <= 30 ? "(met)" : "(MISSED)")
                # One line of bench/run.sh combined table: bench | measure | value | baseline | its value |
                # ratio | target | verdict.
                printf "summary: proxy | %s, req/s on one core (added p99 %.3f ms/hop, peak RSS %.1f MB) | %.0f | nginx reverse proxy | %.0f | %.2fx | >= 1x, <= 1 ms/hop, <= 30 MB | %s\n",
                    label, perhop, max, rps, nginx, ratio, (ratio >= 1 && perhop <= 1 && max <= 30 ? "met" : "MISSED")
            }'
    done
    echo "- the server sidecar counted $MTLS_REQUESTS requests with connection_security_policy=\"mutual_tls\"; its inbound port refuses plaintext (STRICT)"
    late=""
    for s in "${SETUPS[@]}"; do
        ((LATE[$s] > 0)) && late+="${late:+, }${LABEL_OF[$s]} ${LATE[$s]}"
    done
    if [[ -n $late ]]; then
        echo "- fixed-rate sends more than 1 ms behind their slot (all connections busy or a load-generator stall; their latency is measured from the actual send, not corrected for coordinated omission), of $((RATE * DURATION * ROUNDS)) per setup: $late"
    fi
} | tee "$WORK/report.md"
