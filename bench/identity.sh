#!/usr/bin/env bash
# Identity benchmarks (issue 3), on a release build, each measure next to its ceiling from
# the same run on the same machine:
#   1. login throughput (16 connections) against the raw argon2id verify rate of one core
#      (examples/argon2_rate.rs, the same parameters). Goal: login ≥ 0.8 × cores × that rate.
#   2. authenticated GET /api/v1/users/profile (64 connections) against `pgbench -S` (64
#      clients) on the same PostgreSQL. Goal: ≥ 0.5× pgbench.
# Rate limits are switched off for the run (they would refuse a benchmark, by design).
# Usage: bench/identity.sh          (needs PostgreSQL like scripts/dev; installs wrk)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

DURATION=${DURATION:-10s}
PORT_APP=${PORT_APP:-18090}
CORES=$(nproc)

ensure_cargo
command -v wrk >/dev/null 2>&1 || install_packages wrk
command -v pgbench >/dev/null 2>&1 || install_packages postgresql-contrib
ensure_postgres companion_bench_identity
# A clean database each run, so the session and audit tables start empty.
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS companion_bench_identity WITH (FORCE)"
ensure_database

say "building release binaries"
cargo build --release --quiet --bin companion --example argon2_rate
BIN=target/release/companion
export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$ROOT/.local/bench-objects" COMPANION__SERVER__HOST=127.0.0.1
export COMPANION__MAIL__TRANSPORT=log RUST_LOG=warn
for limit in ANONYMOUS LOGIN REGISTER; do export "COMPANION__RATELIMIT__${limit}_PER_MINUTE=0"; done
export COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE=0
export COMPANION__RATELIMIT__LOGIN_ACCOUNT_PER_HOUR=0
"$BIN" migrate >/dev/null

PORT=$PORT_APP "$BIN" serve 2>/dev/null &
app=$!
trap 'kill $app 2>/dev/null || true' EXIT
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_APP/ready")" = 200 ]; do sleep 0.01; done

API="http://127.0.0.1:$PORT_APP/api/v1"
BODY='{"email":"bench@example.com","password":"a long and unusual passphrase","displayName":"Bench"}'
TOKEN=$(curl -sf -H 'content-type: application/json' -d "$BODY" "$API/auth/register" | jq -r .token)

LUA=$(mktemp)
cat >"$LUA" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email":"bench@example.com","password":"a long and unusual passphrase"}'
LUA


# This shared machine's speed drifts by ±20 % over minutes, so the one-core rate is taken
# right before and right after the login run and the ceiling is their mean.
say "argon2id verify rate, one core, 5 s"
rate_before=$(target/release/examples/argon2_rate 5)
echo "$rate_before verifies/s"

say "login, 16 connections, $DURATION"
login_out=$(wrk -t2 -c16 -d"$DURATION" --latency -s "$LUA" "$API/auth/login")
echo "$login_out"

say "argon2id verify rate again, one core, 5 s"
rate_after=$(target/release/examples/argon2_rate 5)
echo "$rate_after verifies/s"
verify_rate=$(awk -v a="$rate_before" -v b="$rate_after" 'BEGIN { printf "%.1f", (a + b) / 2 }')
login_rps=$(echo "$login_out" | awk '/Requests\/sec/ {print $2}')
login_errors=$(echo "$login_out" | awk '/Non-2xx/ {print $5}')

say "profile, 64 connections, $DURATION"
wrk -t2 -c64 -d2s -H "Authorization: Bearer $TOKEN" "$API/users/profile" >/dev/null
profile_out=$(wrk -t2 -c64 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "$API/users/profile")
echo "$profile_out"
profile_rps=$(echo "$profile_out" | awk '/Requests\/sec/ {print $2}')
profile_errors=$(echo "$profile_out" | awk '/Non-2xx/ {print $5}')
kill $app; wait $app 2>/dev/null || true

say "pgbench -S, 64 clients, $DURATION"
PGB_DB=companion_bench_pgbench
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS $PGB_DB WITH (FORCE)" -c "CREATE DATABASE $PGB_DB"
PGB_URL="${DATABASE_URL%/*}/$PGB_DB"
pgbench -q -i -s 10 "$PGB_URL" >/dev/null 2>&1
pg_out=$(pgbench -S -c 64 -j 2 -T "${DURATION%s}" "$PGB_URL" 2>&1)
echo "$pg_out" | tail -5
pg_tps=$(echo "$pg_out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]}')
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS $PGB_DB WITH (FORCE)"

login_goal=$(awk -v r="$verify_rate" -v c="$CORES" 'BEGIN { printf "%.1f", 0.8 * c * r }')
login_ratio=$(awk -v l="$login_rps" -v r="$verify_rate" -v c="$CORES" 'BEGIN { printf "%.2f", l / (c * r) }')
profile_ratio=$(awk -v p="$profile_rps" -v g="$pg_tps" 'BEGIN { printf "%.2f", p / g }')

echo
echo "| measure | result | goal |"
echo "|---|---|---|"
echo "| argon2id verifies/s, one core (before ${rate_before}, after ${rate_after}) | ${verify_rate} | |"
echo "| login req/s, 16 connections (non-2xx: ${login_errors:-0}) | ${login_rps} | ≥ ${login_goal} (0.8 × ${CORES} cores × verify rate) |"
echo "| login ÷ (cores × verify rate) | ${login_ratio}× | ≥ 0.8× |"
echo "| profile req/s, 64 connections (non-2xx: ${profile_errors:-0}) | ${profile_rps} | |"
echo "| pgbench -S tps, 64 clients, same run | ${pg_tps} | |"
echo "| profile ÷ pgbench | ${profile_ratio}× | ≥ 0.5× |"
