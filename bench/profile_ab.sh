#!/usr/bin/env bash
# Authenticated GET /api/v1/users/profile, 64 connections, for two or more server builds in
# turn on one database, with the machine's context switches per request; then `pgbench -S`
# (64 clients) on the same PostgreSQL. For comparing builds (bench/identity.sh gives the
# goal's figure for the current one).
#   bench/profile_ab.sh OLD_BINARY NEW_BINARY [...]     (ROUNDS=3 DURATION=10s by default)
# Build an older commit's binary with e.g.
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release --bin companion)
# An entry may be a wrapper script that sets COMPANION__… variables and execs a binary.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

[ $# -ge 1 ] || die "usage: bench/profile_ab.sh BINARY [BINARY...]"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
PORT_APP=${PORT_APP:-18092}

command -v wrk >/dev/null 2>&1 || install_packages wrk
command -v pgbench >/dev/null 2>&1 || install_packages postgresql-contrib
ensure_postgres companion_bench_profile
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS companion_bench_profile WITH (FORCE)"
ensure_database

export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$ROOT/.local/bench-objects" COMPANION__SERVER__HOST=127.0.0.1
export COMPANION__MAIL__TRANSPORT=log RUST_LOG=warn
for limit in ANONYMOUS LOGIN REGISTER; do export "COMPANION__RATELIMIT__${limit}_PER_MINUTE=0"; done
export COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE=0 COMPANION__RATELIMIT__LOGIN_ACCOUNT_PER_HOUR=0
"$1" migrate >/dev/null

API="http://127.0.0.1:$PORT_APP/api/v1"
ACCOUNT='"email":"bench@example.com","password":"a long and unusual passphrase"'
app=
trap '[ -n "$app" ] && kill $app 2>/dev/null || true' EXIT
switches() { awk '/^ctxt/ {print $2}' /proc/stat; }

for round in $(seq "$ROUNDS"); do
    for bin in "$@"; do
        PORT=$PORT_APP "$bin" serve 2>/dev/null &
        app=$!
        until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_APP/ready")" = 200 ]; do
            kill -0 $app 2>/dev/null || die "$bin did not start"
            sleep 0.05
        done
        token=$(curl -sf -H 'content-type: application/json' -d "{$ACCOUNT}" "$API/auth/login" | jq -r .token) ||
            token=$(curl -sf -H 'content-type: application/json' -d "{$ACCOUNT,\"displayName\":\"Bench\"}" "$API/auth/register" | jq -r .token)
        wrk -t2 -c64 -d2s -H "Authorization: Bearer $token" "$API/users/profile" >/dev/null
        before=$(switches)
        out=$(wrk -t2 -c64 -d"$DURATION" --latency -H "Authorization: Bearer $token" "$API/users/profile")
        after=$(switches)
        rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
        seconds=${DURATION%s}
        printf '%s round %s: %s req/s, non-2xx %s, p50 %s, p99 %s, %s context switches per request\n' \
            "$bin" "$round" "$rps" "$(echo "$out" | awk '/Non-2xx/ {print $5}' | grep . || echo 0)" \
            "$(echo "$out" | awk '$1 == "50%" {print $2}')" "$(echo "$out" | awk '$1 == "99%" {print $2}')" \
            "$(awk -v s=$((after - before)) -v t="$seconds" -v r="$rps" 'BEGIN { printf "%.2f", s / t / r }')"
        kill $app
        wait $app 2>/dev/null || true
        app=
    done
done

PGB_DB=companion_bench_pgbench
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS $PGB_DB WITH (FORCE)" -c "CREATE DATABASE $PGB_DB"
PGB_URL="${DATABASE_URL%/*}/$PGB_DB"
pgbench -q -i -s 10 "$PGB_URL" >/dev/null 2>&1
pgbench -S -c 64 -j 2 -T "${DURATION%s}" "$PGB_URL" 2>&1 | grep '^tps'
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS $PGB_DB WITH (FORCE)"
