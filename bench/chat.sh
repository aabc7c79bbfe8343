#!/usr/bin/env bash
# Chat benchmarks (issue 5), release build:
#   1. History: GET /api/v1/conversations/{id}/messages?limit=50 (the newest page) of a
#      10,000-message conversation and of a 100-message one, 16 connections each; the p50
#      ratio (goal ≤ 1.2). Then pgbench running the very statements the server runs for
#      that page (`companion admin history-sql`) at the same concurrency (goal ≥ 0.5×).
#   2. Time to first token: a message sent through the server (SSE) against a streamed
#      request straight to the same fake model, alternated (goal: added p50 ≤ 1 ms,
#      p99 ≤ 3 ms). Measured by the example `chat_bench ttft`. The fake model keeps its
#      connections open, as model servers do, so both paths reuse one.
#   3. 10,000 idle WebSocket connections of 10,000 different users: the server's RSS
#      growth per connection (goal ≤ 16 KiB), next to the same measure on the example
#      `ws_floor` (bare actix-web + actix-ws, no application): what the framework costs.
# The database holds 210,100 messages: the two conversations above and 200 others of 1,000.
# Usage: bench/chat.sh          (needs PostgreSQL like scripts/dev; installs wrk)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

DURATION=${DURATION:-10s}
PORT_APP=${PORT_APP:-18092}
SOCKETS=${SOCKETS:-10000}
TTFT_COUNT=${TTFT_COUNT:-500}

ensure_cargo
command -v wrk >/dev/null 2>&1 || install_packages wrk
command -v pgbench >/dev/null 2>&1 || install_packages postgresql-contrib
ensure_postgres companion_bench_chat
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS companion_bench_chat WITH (FORCE)"
ensure_database

say "building the release binary and the measuring example"
cargo build --release --quiet --bin companion --example chat_bench --example ws_floor
BIN=target/release/companion
TOOL=target/release/examples/chat_bench
export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$ROOT/.local/bench-objects" COMPANION__SERVER__HOST=127.0.0.1
export COMPANION__MAIL__TRANSPORT=log RUST_LOG=warn
for limit in ANONYMOUS LOGIN REGISTER; do export "COMPANION__RATELIMIT__${limit}_PER_MINUTE=0"; done
export COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE=0
export COMPANION__PLANS__FREE__MONTHLY_TOKENS=0
"$BIN" migrate >/dev/null

WORK=$(mktemp -d)
cleanup() {
    [ -n "${app:-}" ] && kill "$app" 2>/dev/null || true
    [ -n "${idle:-}" ] && kill "$idle" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

say "seeding $SOCKETS users with a session each, and 210,100 messages"
# Ids are built from counters so the script knows them: user n, session n, conversation c,
# and message i of conversation c (its parent is message i - 1: one long branch).
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<SQL
CREATE FUNCTION pg_temp.id(prefix text, n bigint) RETURNS uuid
    LANGUAGE sql IMMUTABLE AS \$\$ SELECT (prefix || '-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid \$\$;
INSERT INTO identity.users (id, email, password_hash, display_name)
SELECT pg_temp.id('00000000', g), 'bench' || g || '@example.com', 'not a hash', 'Bench ' || g
FROM generate_series(1, $SOCKETS) g;
INSERT INTO identity.sessions (id, user_id)
SELECT pg_temp.id('00000001', g), pg_temp.id('00000000', g) FROM generate_series(1, $SOCKETS) g;
-- Conversation 1 (10,000 messages) and 2 (100) are user 1's; 3 to 202 belong to others.
CREATE TEMP TABLE sizes AS
SELECT c, CASE c WHEN 1 THEN 10000 WHEN 2 THEN 100 ELSE 1000 END AS n,
       CASE WHEN c <= 2 THEN 1 ELSE c END AS owner
FROM generate_series(1, 202) c;
INSERT INTO chat.conversations (id, user_id, character_id, character_name, title, active_leaf_id)
SELECT pg_temp.id('cccccccc', c), pg_temp.id('00000000', owner),
       '01930000-0000-7000-8000-000000000001', 'Luna', 'Luna',
       (lpad(to_hex(c), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(n), 12, '0'))::uuid
FROM sizes;
INSERT INTO chat.messages (id, conversation_id, parent_id, depth, role, content, status)
SELECT (lpad(to_hex(c), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       pg_temp.id('cccccccc', c),
       CASE WHEN i > 1 THEN (lpad(to_hex(c), 8, '0') || '-0000-7000-8000-' || lpad(to_hex(i - 1), 12, '0'))::uuid END,
       i - 1, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END,
       'Message ' || i || '. ' || repeat('The lantern swung as we walked along the shore. ', 6),
       'complete'
FROM sizes, generate_series(1, n) i;
VACUUM ANALYZE;
SQL
conversation() { echo "cccccccc-0000-7000-8000-$(printf '%012x' "$1")"; }
user_one=00000000-0000-7000-8000-000000000001
for g in $(seq 1 "$SOCKETS"); do
    printf '00000000-0000-7000-8000-%012x 00000001-0000-7000-8000-%012x\n' "$g" "$g"
done >"$WORK/sessions"
"$TOOL" tokens --sessions "$WORK/sessions" >"$WORK/tokens"
TOKEN=$(head -1 "$WORK/tokens")
LONG=$(conversation 1)
SHORT=$(conversation 2)

PORT=$PORT_APP "$BIN" serve 2>/dev/null &
app=$!
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_APP/ready")" = 200 ]; do sleep 0.01; done
API="http://127.0.0.1:$PORT_APP/api/v1"
for id in "$LONG" "$SHORT"; do
    [ "$(curl -s "$API/conversations/$id/messages?limit=50" -H "Authorization: Bearer $TOKEN" | jq '.messages | length')" = 50 ] \
        || die "the history page of $id did not hold 50 messages"
done

history() {
    wrk -t2 -c16 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
        "$API/conversations/$1/messages?limit=50"
}
p50_ms() { # wrk's 50% line, in milliseconds
    awk '/^ +50%/ { v = $2; if (v ~ /us$/) { sub(/us/, "", v); v /= 1000 }
                    else if (v ~ /ms$/) { sub(/ms/, "", v) } else { sub(/s/, "", v); v *= 1000 }
                    print v }'
}
say "history page of 50, 10,000-message conversation, 16 connections, $DURATION"
wrk -t2 -c16 -d2s -H "Authorization: Bearer $TOKEN" "$API/conversations/$LONG/messages?limit=50" >/dev/null
long_out=$(history "$LONG")
echo "$long_out"
say "history page of 50, 100-message conversation, 16 connections, $DURATION"
short_out=$(history "$SHORT")
echo "$short_out"
long_rps=$(echo "$long_out" | awk '/Requests\/sec/ {print $2}')
short_rps=$(echo "$short_out" | awk '/Requests\/sec/ {print $2}')
long_p50=$(echo "$long_out" | p50_ms)
short_p50=$(echo "$short_out" | p50_ms)
long_errors=$(echo "$long_out" | awk '/Non-2xx/ {print $5}')

say "idle WebSockets: $SOCKETS connections of $SOCKETS users"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$app/status"; }
sleep 1
rss_before=$(rss_kib)
"$TOOL" idle --url "ws://127.0.0.1:$PORT_APP/api/v1/ws" --tokens "$WORK/tokens" --count "$SOCKETS" >"$WORK/idle.out" &
idle=$!
until grep -q '^open' "$WORK/idle.out" 2>/dev/null; do
    kill -0 "$idle" 2>/dev/null || die "the WebSocket client stopped: $(cat "$WORK/idle.out")"
    sleep 0.2
done
sleep 3
rss_after=$(rss_kib)
opened=$(awk '/^open/ {print $2}' "$WORK/idle.out")
failed=$(awk '/^open/ {print $4}' "$WORK/idle.out")
gauge=$(curl -s "http://127.0.0.1:$PORT_APP/metrics" | awk '/^virtual_companion_websocket_connections / {print $2}')
kill "$idle"; wait "$idle" 2>/dev/null || true
idle=
echo "RSS before ${rss_before} KiB, with $opened connections ${rss_after} KiB (server gauge: $gauge open, $failed failed)"
kill "$app"; wait "$app" 2>/dev/null || true
app=

say "idle WebSockets on the bare framework (ws_floor)"
target/release/examples/ws_floor "$PORT_APP" &
app=$!
until curl -s -o /dev/null "http://127.0.0.1:$PORT_APP/"; do sleep 0.05; done
sleep 1
floor_before=$(rss_kib)
: >"$WORK/idle.out"
"$TOOL" idle --url "ws://127.0.0.1:$PORT_APP/api/v1/ws" --tokens "$WORK/tokens" --count "$SOCKETS" >"$WORK/idle.out" &
idle=$!
until grep -q '^open' "$WORK/idle.out" 2>/dev/null; do sleep 0.2; done
sleep 3
floor_after=$(rss_kib)
floor_opened=$(awk '/^open/ {print $2}' "$WORK/idle.out")
kill "$idle"; wait "$idle" 2>/dev/null || true
idle=
kill "$app"; wait "$app" 2>/dev/null || true
app=

"$BIN" admin history-sql --conversation "$LONG" --user "$user_one" \
    --leaf "00000001-0000-7000-8000-$(printf '%012x' 10000)" \
    >"$WORK/history.sql"
say "plan of the branch statement"
psql -Atq "$DATABASE_URL" -c "EXPLAIN $(sed -n 2p "$WORK/history.sql")"
say "pgbench, the history page statements, 16 clients, $DURATION"
pg_out=$(pgbench -n -f "$WORK/history.sql" -c 16 -j 2 -T "${DURATION%s}" "$DATABASE_URL" 2>&1)
echo "$pg_out" | tail -3
pg_tps=$(echo "$pg_out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]}')

say "time to first token, $TTFT_COUNT sends"
ttft_out=$("$TOOL" ttft --server-bin "$BIN" --count "$TTFT_COUNT")

ratio=$(awk -v a="$long_p50" -v b="$short_p50" 'BEGIN { printf "%.2f", a / b }')
vs_pg=$(awk -v a="$long_rps" -v b="$pg_tps" 'BEGIN { printf "%.2f", a / b }')
per_socket=$(awk -v a="$rss_after" -v b="$rss_before" -v n="$opened" 'BEGIN { printf "%.1f", (a - b) / n }')
floor=$(awk -v a="$floor_after" -v b="$floor_before" -v n="$floor_opened" 'BEGIN { printf "%.1f", (a - b) / n }')
echo
echo "| measure | result | goal |"
echo "|---|---|---|"
echo "| history page, 10,000 messages: req/s (non-2xx: ${long_errors:-0}), p50 | ${long_rps}, ${long_p50} ms | |"
echo "| history page, 100 messages: req/s, p50 | ${short_rps}, ${short_p50} ms | |"
echo "| p50 ratio 10,000 ÷ 100 | ${ratio} | ≤ 1.2 |"
echo "| pgbench of the same statements, tps | ${pg_tps} | |"
echo "| history (10,000) ÷ pgbench | ${vs_pg}× | ≥ 0.5× |"
echo "| idle WebSockets: RSS growth per connection ($opened open) | ${per_socket} KiB | ≤ 16 KiB |"
echo "| the same on bare actix-web + actix-ws ($floor_opened open) | ${floor} KiB | |"
echo
echo "$ttft_out"
