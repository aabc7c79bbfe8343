#!/usr/bin/env bash
# Media benchmark (issue 6), release build: a 100 MiB video uploaded through the server
# (multipart, streamed) against writing the same bytes straight to the same object store
# (the local disk, `file://`), alternated 3 times. Goals: the server's RSS grows by less than
# 16 MiB during an upload, and its throughput is at least 0.5× the direct write's.
# Measured by the example `media_bench`.
# Usage: bench/media.sh          (needs PostgreSQL like scripts/dev)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

PORT_APP=${PORT_APP:-18094}
SIZE_MIB=${SIZE_MIB:-100}
ROUNDS=${ROUNDS:-3}

ensure_cargo
command -v jq >/dev/null 2>&1 || install_packages jq
ensure_postgres companion_bench_media
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS companion_bench_media WITH (FORCE)"
ensure_database

say "building the release binary and the measuring example"
cargo build --release --quiet --bin companion --example media_bench
BIN=target/release/companion
STORE="$ROOT/.local/bench-media"
rm -rf "$STORE" && mkdir -p "$STORE"
export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$STORE" COMPANION__SERVER__HOST=127.0.0.1
export COMPANION__SERVER__PORT=$PORT_APP COMPANION__MAIL__TRANSPORT=log RUST_LOG=warn
# No quota for the run (a free account holds 100 MiB in all).
export COMPANION__PLANS__FREE__STORAGE_BYTES=0
for limit in ANONYMOUS LOGIN REGISTER; do export "COMPANION__RATELIMIT__${limit}_PER_MINUTE=0"; done
export COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE=0
"$BIN" migrate >/dev/null

cleanup() {
    [ -n "${app:-}" ] && kill "$app" 2>/dev/null || true
}
trap cleanup EXIT
PORT=$PORT_APP "$BIN" serve & app=$!
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT_APP/ready" >/dev/null 2>&1 && break
    sleep 0.1
done

token=$(curl -fs "http://127.0.0.1:$PORT_APP/api/v1/auth/register" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"a long bench password","displayName":"Bench"}' | jq -r .token)

say "uploading $SIZE_MIB MiB, $ROUNDS times, against writing it straight to the store"
target/release/examples/media_bench --base "http://127.0.0.1:$PORT_APP" --token "$token" \
    --store-url "file://$STORE" --pid "$app" --size-mib "$SIZE_MIB" --rounds "$ROUNDS"
