#!/usr/bin/env bash
# Foundation benchmarks (issue 2), on a release build:
#   1. start-up: process start to the first 200 on /ready, migrations already applied
#      (median of 7 starts);
#   2. idle RSS two seconds after ready;
#   3. /health throughput at 64 connections, Companion against a bare actix-web handler
#      (examples/hello_actix.rs) measured in the same run with the same load generator.
# Usage: bench/foundation.sh            (needs PostgreSQL like scripts/dev; installs wrk)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
PORT_APP=${PORT_APP:-18080}
PORT_BASE=${PORT_BASE:-18081}

ensure_cargo
command -v wrk >/dev/null 2>&1 || install_packages wrk
ensure_postgres companion_bench
ensure_database

say "building release binaries"
cargo build --release --quiet --bin companion --example hello_actix
BIN=target/release/companion
BASE=target/release/examples/hello_actix
export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$ROOT/.local/bench-objects" COMPANION__SERVER__HOST=127.0.0.1
export RUST_LOG=warn
"$BIN" migrate >/dev/null

now_ms() { date +%s%3N; }
wait_ready() {
    until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/ready")" = 200 ]; do sleep 0.002; done
}

say "start-up time (7 runs)"
times=()
for _ in 1 2 3 4 5 6 7; do
    start=$(now_ms)
    PORT=$PORT_APP "$BIN" serve 2>/dev/null &
    pid=$!
    wait_ready "$PORT_APP"
    times+=($(( $(now_ms) - start )))
    kill -TERM "$pid"; wait "$pid" || true
done
startup_median=$(printf '%s\n' "${times[@]}" | sort -n | sed -n 4p)
echo "start-up to first /ready 200: runs ${times[*]} ms; median ${startup_median} ms"

PORT=$PORT_APP "$BIN" serve 2>/dev/null &
app=$!
PORT=$PORT_BASE "$BASE" &
base=$!
trap 'kill $app $base 2>/dev/null || true' EXIT
wait_ready "$PORT_APP"
until curl -sf "http://127.0.0.1:$PORT_BASE/health" >/dev/null; do sleep 0.01; done
sleep 2
rss_kb=$(awk '/^VmRSS/ {print $2}' "/proc/$app/status")
echo "idle RSS: $((rss_kb / 1024)) MiB ($rss_kb KiB)"

rate() { wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency "$1" | tee /dev/stderr | awk '/Requests\/sec/ {print $2}'; }
say "warm-up"
wrk -t2 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT_APP/health" >/dev/null
wrk -t2 -c"$CONNECTIONS" -d2s "http://127.0.0.1:$PORT_BASE/health" >/dev/null
say "companion /health, $CONNECTIONS connections, $DURATION"
app_rps=$(rate "http://127.0.0.1:$PORT_APP/health")
say "bare actix-web /health, $CONNECTIONS connections, $DURATION"
base_rps=$(rate "http://127.0.0.1:$PORT_BASE/health")
ratio=$(awk -v a="$app_rps" -v b="$base_rps" 'BEGIN { printf "%.2f", a / b }')

echo
echo "| measure | result | goal |"
echo "|---|---|---|"
echo "| start-up to first 200 on /ready (median of 7) | ${startup_median} ms | ≤ 300 ms |"
echo "| idle RSS | $((rss_kb / 1024)) MiB | ≤ 30 MB |"
echo "| /health req/s, companion | ${app_rps} | |"
echo "| /health req/s, bare actix-web | ${base_rps} | |"
echo "| ratio | ${ratio}× | ≥ 0.7× |"
