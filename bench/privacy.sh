#!/usr/bin/env bash
# Privacy benchmark (issue 7), release build. Each round seeds two accounts with the same
# 100,000 messages (20 conversations of 5,000, one branch each), then:
#   1. Export: the data-export job of account A (a streamed ZIP in the object store, on the
#      local disk) against `\copy` of the same rows (every column of A's messages) from
#      PostgreSQL to a CSV file. Goals: the job takes at most 2× the copy, and the server's
#      peak RSS during the export (VmHWM, reset just before through /proc/<pid>/clear_refs)
#      is at most 32 MiB above its RSS before.
#   2. Erasure: account A erased by the server (deletion with no grace period; the job walks
#      every module's PersonalData in batches) against account B removed by plain DELETEs
#      of the same rows in one transaction. Goal: at most 2× the DELETEs.
# The job's time is its own (`started_at` to `completed_at` in privacy.exports/erasures);
# the time from the request to the job being picked up is printed beside it. The copy and
# the DELETEs are timed around psql (its start, a few ms, is included). The order of the
# two sides alternates from round to round.
# Usage: bench/privacy.sh          (needs PostgreSQL like scripts/dev; BUILD=0 measures the
#                                  release binary already in target/ without building it)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

PORT_APP=${PORT_APP:-18095}
ROUNDS=${ROUNDS:-3}
CONVERSATIONS=${CONVERSATIONS:-20}
PER_CONVERSATION=${PER_CONVERSATION:-5000}
PASSWORD='a long bench password'

ensure_cargo
command -v jq >/dev/null 2>&1 || install_packages jq
ensure_postgres companion_bench_privacy
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS companion_bench_privacy WITH (FORCE)"
ensure_database

say "building the release binary"
[ "${BUILD:-1}" = 0 ] || cargo build --release --quiet --bin companion
BIN=target/release/companion
STORE="$ROOT/.local/bench-privacy"
rm -rf "$STORE" && mkdir -p "$STORE"
export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$STORE" COMPANION__SERVER__HOST=127.0.0.1
export COMPANION__SERVER__PORT=$PORT_APP COMPANION__MAIL__TRANSPORT=log RUST_LOG=warn
export COMPANION__PRIVACY__DELETION_GRACE_DAYS=0
for limit in ANONYMOUS LOGIN REGISTER; do export "COMPANION__RATELIMIT__${limit}_PER_MINUTE=0"; done
export COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE=0
"$BIN" migrate >/dev/null

WORK=$(mktemp -d)
cleanup() {
    [ -n "${app:-}" ] && kill "$app" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
PORT=$PORT_APP "$BIN" serve & app=$!
API="http://127.0.0.1:$PORT_APP/api/v1"
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$PORT_APP/ready" >/dev/null 2>&1 && break
    sleep 0.1
done

now_ms() { echo $(($(date +%s%N) / 1000000)); }
sql() { psql -qtAX -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }
kib() { awk -v key="$1:" '$1 == key {print $2}' "/proc/$app/status"; }

# Registers account $1 (through the API, so it has a real password and session) and
# gives it the messages; prints "<user id> <access token>".
account() {
    local n=$1 body user token
    body=$(curl -fs "$API/auth/register" -H 'content-type: application/json' \
        -d "{\"email\":\"bench$n@example.com\",\"password\":\"$PASSWORD\",\"displayName\":\"Bench $n\"}")
    user=$(jq -r .user.id <<<"$body")
    token=$(jq -r .token <<<"$body")
    # Ids from counters: conversation c of account n, message i of it (parent i - 1).
    psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<SQL
INSERT INTO chat.conversations (id, user_id, character_id, character_name, title, active_leaf_id)
SELECT (lpad(to_hex($n), 4, '0') || lpad(to_hex(c), 4, '0') || '-0000-7000-9000-000000000000')::uuid,
       '$user', '01930000-0000-7000-8000-000000000001', 'Luna', 'Talk ' || c,
       (lpad(to_hex($n), 4, '0') || lpad(to_hex(c), 4, '0') || '-0000-7000-8000-' || lpad(to_hex($PER_CONVERSATION), 12, '0'))::uuid
FROM generate_series(1, $CONVERSATIONS) c;
INSERT INTO chat.messages (id, conversation_id, parent_id, depth, role, content, status)
SELECT (lpad(to_hex($n), 4, '0') || lpad(to_hex(c), 4, '0') || '-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid,
       (lpad(to_hex($n), 4, '0') || lpad(to_hex(c), 4, '0') || '-0000-7000-9000-000000000000')::uuid,
       CASE WHEN i > 1 THEN (lpad(to_hex($n), 4, '0') || lpad(to_hex(c), 4, '0') || '-0000-7000-8000-' || lpad(to_hex(i - 1), 12, '0'))::uuid END,
       i - 1, CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END,
       'Message ' || i || '. ' || repeat('The lantern swung as we walked along the shore. ', 2),
       'complete'
FROM generate_series(1, $CONVERSATIONS) c, generate_series(1, $PER_CONVERSATION) i;
SQL
    echo "$user $token"
}

copy_rows() { # $1 user: every column of the user's messages, to a CSV file
    local start=$(now_ms)
    psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "\\copy (SELECT m.* FROM chat.messages m \
        JOIN chat.conversations c ON c.id = m.conversation_id WHERE c.user_id = '$1' \
        ORDER BY m.conversation_id, m.id) TO '$WORK/copy.csv' WITH (FORMAT csv)"
    echo $(($(now_ms) - start))
}

export_job() { # $1 token; prints "<job ms> <request-to-ready ms> <peak growth KiB> <bytes>"
    local before job state
    before=$(kib VmRSS)
    echo 5 >"/proc/$app/clear_refs" # resets VmHWM to the current RSS
    job=$(curl -fs -X POST "$API/users/data-export" -H "authorization: Bearer $1" | jq -r .jobId)
    while :; do
        state=$(curl -fs "$API/users/data-export/$job" -H "authorization: Bearer $1" | jq -r .status)
        [ "$state" = ready ] && break
        [ "$state" = failed ] && { echo "export $job failed" >&2; exit 1; }
        sleep 0.02
    done
    local peak=$(kib VmHWM)
    sql "SELECT round(extract(epoch FROM completed_at - started_at) * 1000),
                round(extract(epoch FROM completed_at - created_at) * 1000),
                $((peak - before)), size_bytes
         FROM privacy.exports WHERE id = '$job'" | tr '|' ' '
}

erase_job() { # $1 user, $2 token; prints "<job ms> <request-to-done ms>"
    local id
    curl -fs -X DELETE "$API/users/account" -H "authorization: Bearer $2" \
        -H 'content-type: application/json' -d "{\"password\":\"$PASSWORD\"}" >/dev/null
    id=$(sql "SELECT id FROM privacy.erasures WHERE user_id = '$1'")
    until [ "$(sql "SELECT state FROM privacy.erasures WHERE id = '$id'")" = done ]; do sleep 0.02; done
    [ "$(sql "SELECT count(*) FROM chat.conversations WHERE user_id = '$1'")" = 0 ] || {
        echo "erasure $id left conversations" >&2
        exit 1
    }
    sql "SELECT round(extract(epoch FROM completed_at - started_at) * 1000),
                round(extract(epoch FROM completed_at - requested_at) * 1000)
         FROM privacy.erasures WHERE id = '$id'" | tr '|' ' '
}

plain_delete() { # $1 user: the same rows, gone in one transaction
    local start=$(now_ms)
    psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" >/dev/null <<SQL
BEGIN;
DELETE FROM chat.messages WHERE conversation_id IN (SELECT id FROM chat.conversations WHERE user_id = '$1');
DELETE FROM chat.conversations WHERE user_id = '$1';
DELETE FROM identity.sessions WHERE user_id = '$1';
DELETE FROM identity.audit_log WHERE subject_id = '$1' OR actor_id = '$1';
DELETE FROM identity.users WHERE id = '$1';
COMMIT;
SQL
    echo $(($(now_ms) - start))
}

total=$((CONVERSATIONS * PER_CONVERSATION))
say "seeding $((2 * ROUNDS)) accounts of $total messages each"
declare -a A_USER A_TOKEN B_USER
for r in $(seq "$ROUNDS"); do
    line=$(account $((2 * r - 1))); read -r "A_USER[r]" "A_TOKEN[r]" <<<"$line"
    line=$(account $((2 * r))); read -r "B_USER[r]" _ <<<"$line"
done
sql "VACUUM ANALYZE" >/dev/null

declare -a COPY EXPORT EXPORT_E2E GROWTH ERASE ERASE_E2E DELETE
for r in $(seq "$ROUNDS"); do
    say "round $r of $ROUNDS"
    if ((r % 2)); then
        COPY[r]=$(copy_rows "${A_USER[r]}")
        line=$(export_job "${A_TOKEN[r]}"); read -r "EXPORT[r]" "EXPORT_E2E[r]" "GROWTH[r]" size <<<"$line"
        DELETE[r]=$(plain_delete "${B_USER[r]}")
        line=$(erase_job "${A_USER[r]}" "${A_TOKEN[r]}"); read -r "ERASE[r]" "ERASE_E2E[r]" <<<"$line"
    else
        line=$(export_job "${A_TOKEN[r]}"); read -r "EXPORT[r]" "EXPORT_E2E[r]" "GROWTH[r]" size <<<"$line"
        COPY[r]=$(copy_rows "${A_USER[r]}")
        line=$(erase_job "${A_USER[r]}" "${A_TOKEN[r]}"); read -r "ERASE[r]" "ERASE_E2E[r]" <<<"$line"
        DELETE[r]=$(plain_delete "${B_USER[r]}")
    fi
    echo "  copy ${COPY[r]} ms ($(stat -c %s "$WORK/copy.csv") bytes) | export job ${EXPORT[r]} ms" \
        "(request to ready ${EXPORT_E2E[r]} ms, archive $size bytes, peak RSS +$((GROWTH[r] / 1024)) MiB)"
    echo "  plain DELETEs ${DELETE[r]} ms | erasure job ${ERASE[r]} ms (request to done ${ERASE_E2E[r]} ms)"
done

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
copy=$(median "${COPY[@]}") export=$(median "${EXPORT[@]}")
delete=$(median "${DELETE[@]}") erase=$(median "${ERASE[@]}")
growth=$(printf '%s\n' "${GROWTH[@]}" | sort -n | tail -1)
say "medians of $ROUNDS rounds ($total messages)"
awk -v c="$copy" -v e="$export" -v d="$delete" -v x="$erase" -v g="$growth" 'BEGIN {
    printf "export: job %d ms, copy %d ms, ratio %.2fx (goal <= 2); largest peak RSS growth %.1f MiB (goal <= 32)\n", e, c, e / c, g / 1024
    printf "erasure: job %d ms, plain DELETEs %d ms, ratio %.2fx (goal <= 2)\n", x, d, x / d
}'
