#!/usr/bin/env bash
# Collector benchmark: access-log lines/s through `POST /v1/accesslogs` and `meshlens import`, spans/s through
# OTLP/HTTP protobuf and OTLP/gRPC, each against the real release `meshlens` binary, with its peak RSS and
# CPU time, and each as a ratio to the store's own in-process append rate for the same records. Prints one
# markdown table with PASS/FAIL against the targets (>= 200k lines/s, >= 100k spans/s, <= 200 MiB RSS).
# Never run in CI. See docs/benchmarks.md for what each column means.
#
# Usage: bench/collector.sh        (builds the release binary and the driver, collector/benches/collector/)
#
# Environment (defaults in brackets):
#   LINES [2000000]      access-log lines per access-log path (Istio TEXT, 1.9+ default format)
#   SPANS [1000000]      spans per OTLP path
#   BATCH [1000]         lines per POST / spans per OTLP export / records per baseline append
#   SENDERS [4]          concurrent senders (one connection each) and baseline appenders
#   CARGO_TARGET_DIR     where cargo builds [$HOME/.cache/meshlens-target-release]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
[[ -x /usr/bin/time ]] || { echo "error: /usr/bin/time is missing (apt-get install -y time)" >&2; exit 1; }
source "$ROOT/bench/lib.sh"
build_release

cd "$ROOT"

echo "meshlens collector benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), meshlens $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- collector store src || echo '+changes')"
echo "machine: $(nproc) cores, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(awk '/^MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo); load average before $(cut -d' ' -f1-3 /proc/loadavg)"
run_driver collector
echo "load average after $(cut -d' ' -f1-3 /proc/loadavg)"
