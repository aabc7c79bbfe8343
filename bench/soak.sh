#!/usr/bin/env bash
# Soak (issue 11), run by bench/load.sh with SOAK=<seconds> SOAK_RATE=<req/s>: the load mix
# at a fixed rate against the running server for SOAK seconds, sampling every 30 s the
# server's RSS, open file descriptors, threads, its database connections (pg_stat_activity)
# and its busy gauges (/metrics). Goals: RSS growth under 5% from the first sample after
# warming (2 minutes) to the last; no error; no growth of connections, descriptors or tasks.
# Usage: bench/soak.sh PID SECONDS RATE CONNECTIONS_PER_THREAD THREADS
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh
pid=$1 seconds=$2 rate=$3 per_thread=$4 threads=$5
OUT=target/load
PORT_APP=${PORT_APP:-18099}
DB=companion_bench_load

sample() {
    local rss fds tasks conns gauges
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 | wc -l)
    tasks=$(awk '/Threads/ {print $2}' "/proc/$pid/status")
    conns=$(psql -Atq "$(server_url "$DATABASE_URL")" \
        -c "SELECT count(*) FROM pg_stat_activity WHERE datname = '$DB'")
    gauges=$(curl -s "http://127.0.0.1:$PORT_APP/metrics" |
        awk '/^virtual_companion_ai_streaming_generations / {s=$2} /^db_pool_connections\{state="in_use"\}/ {u=$2} END {printf "%s %s", s, u}')
    echo "$(date +%s) $rss $fds $tasks $conns $gauges"
}

# Every 2 s, what the machine waited on: the kernel's pressure totals (µs some task stalled
# on CPU, on I/O, or every task on I/O), the CPU time stolen by the hypervisor (ticks), and
# PostgreSQL's checkpoints and the buffers they wrote. A stall in the server's log (warnings
# carry their time) can then be set against what the machine was doing at that moment.
pressure() {
    local cpu io_some io_full steal checkpoints
    while true; do
        cpu=$(awk '/^some/ {sub("total=", "", $5); print $5}' /proc/pressure/cpu 2>/dev/null)
        io_some=$(awk '/^some/ {sub("total=", "", $5); print $5}' /proc/pressure/io 2>/dev/null)
        io_full=$(awk '/^full/ {sub("total=", "", $5); print $5}' /proc/pressure/io 2>/dev/null)
        steal=$(awk '/^cpu / {print $9}' /proc/stat)
        checkpoints=$(psql -Atq "$(server_url "$DATABASE_URL")" -F ' ' -c \
            "SELECT checkpoints_timed + checkpoints_req, buffers_checkpoint FROM pg_stat_bgwriter")
        echo "$(date +%s.%N | cut -c1-14) ${cpu:--} ${io_some:--} ${io_full:--} $steal $checkpoints"
        sleep 2
    done
}

say "soak: $rate req/s for $seconds s"
echo "# time cpu_some_us io_some_us io_full_us steal_ticks checkpoints buffers_checkpoint" \
    >"$OUT/soak-pressure.txt"
pressure >>"$OUT/soak-pressure.txt" &
watcher=$!
trap 'kill $watcher 2>/dev/null || true' EXIT
echo "# time rss_kib fds threads db_connections streaming pool_in_use" >"$OUT/soak-samples.txt"
wrk -t"$threads" -c"$((per_thread * threads))" -d"${seconds}s" --timeout 5s -s bench/load.lua \
    "http://127.0.0.1:$PORT_APP" -- "$OUT/users.txt" "$rate" "$per_thread" "$threads" \
    >"$OUT/soak.txt" &
load=$!
end=$((SECONDS + seconds))
while [ "$SECONDS" -lt "$end" ] && kill -0 "$load" 2>/dev/null; do
    sample >>"$OUT/soak-samples.txt"
    sleep 30
done
wait "$load"
kill "$watcher" 2>/dev/null || true
cat "$OUT/soak.txt"
awk '!/^#/ { n++; t[n]=$1; rss[n]=$2; fd[n]=$3; th[n]=$4; db[n]=$5 }
     END {
       w = 1; while (w < n && t[w] - t[1] < 120) w++;
       printf "samples %d; from %d s in to the end:\n", n, t[w] - t[1];
       printf "  RSS %d -> %d KiB (%+.1f%%)\n", rss[w], rss[n], 100 * (rss[n] - rss[w]) / rss[w];
       printf "  file descriptors %d -> %d, threads %d -> %d, database connections %d -> %d\n",
              fd[w], fd[n], th[w], th[n], db[w], db[n];
     }' "$OUT/soak-samples.txt" | tee "$OUT/soak-summary.txt"
