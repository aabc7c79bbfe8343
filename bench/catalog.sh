#!/usr/bin/env bash
# Catalog benchmarks (issue 4) on 100,000 public characters, release build, 64 connections,
# each measure next to pgbench running the equivalent SQL at the same concurrency:
#   1. GET /api/v1/characters/{id} of one popular character (served by the read cache)
#      against pgbench selecting that row by primary key. Goal: ≥ 1.0× pgbench.
#   2. GET /api/v1/characters?search=dragon against pgbench running the very page query the
#      server runs (printed by `companion admin search-sql`). Goal: ≥ 0.5× pgbench.
# It also prints the search query's plan and fails if it holds a sequential scan.
# Both are anonymous reads; rate limits are switched off for the run.
# Usage: bench/catalog.sh          (needs PostgreSQL like scripts/dev; installs wrk)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source scripts/services.sh

DURATION=${DURATION:-10s}
PORT_APP=${PORT_APP:-18091}
CHARACTERS=${CHARACTERS:-100000}
SEARCH=${SEARCH:-dragon}

ensure_cargo
command -v wrk >/dev/null 2>&1 || install_packages wrk
command -v pgbench >/dev/null 2>&1 || install_packages postgresql-contrib
ensure_postgres companion_bench_catalog
psql -q "$(server_url "$DATABASE_URL")" -c "DROP DATABASE IF EXISTS companion_bench_catalog WITH (FORCE)"
ensure_database

say "building the release binary"
cargo build --release --quiet --bin companion
BIN=target/release/companion
export COMPANION_ENV=production COMPANION__AUTH__JWT_SECRET=bench-secret-bench-secret-bench-secret-0
export COMPANION__STORAGE__URL="file://$ROOT/.local/bench-objects" COMPANION__SERVER__HOST=127.0.0.1
export COMPANION__MAIL__TRANSPORT=log RUST_LOG=warn
for limit in ANONYMOUS LOGIN REGISTER; do export "COMPANION__RATELIMIT__${limit}_PER_MINUTE=0"; done
export COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE=0
"$BIN" migrate >/dev/null

say "seeding $CHARACTERS public characters"
# Descriptions of 30 words: one in five from a list of 100 real words (so a search for one of
# them matches about 6 % of the catalog), the rest made of syllables. Names are two made-up
# words. The seed is fixed so every run has the same catalog. (The `g` and `k` terms that
# add nothing tie each subquery to its row, so PostgreSQL draws new words for every row.)
psql -q -v ON_ERROR_STOP=1 "$DATABASE_URL" <<SQL
SELECT setseed(0.42);
INSERT INTO catalog.characters
    (id, name, description, category, tags, traits, interests, visibility, greeting, tone,
     personality_summary, conversation_count, rating_sum, rating_count)
SELECT gen_random_uuid(), d.name, d.description,
       (ARRAY['companion','assistant','fantasy','sci-fi','adventure','romance','mentor',
              'wellness','humor','history','horror','other'])[1 + (g % 12)],
       ARRAY[w.real[1 + (g % 100)], w.real[1 + ((g * 7) % 100)]],
       ARRAY['kind','curious','brave'], ARRAY['stories','music'], 'public',
       'Hello, traveller. I am ' || d.name || ', and I have been waiting for someone to talk to. '
         || 'Sit by the fire and tell me what brings you here tonight.',
       'warm', 'Gentle and curious, with a dry sense of humour.',
       (random() * 10000)::bigint, (random() * 500)::bigint + 100, 100
FROM generate_series(1, $CHARACTERS) g,
LATERAL (SELECT ARRAY['dragon','elf','wizard','knight','castle','forest','star','ship','robot',
        'android','ghost','witch','vampire','pirate','captain','detective','teacher','doctor',
        'poet','singer','dancer','chef','gardener','sailor','queen','king','prince','princess',
        'hunter','healer','monk','samurai','ninja','cowboy','sheriff','outlaw','merchant',
        'scholar','librarian','alchemist','inventor','engineer','pilot','soldier','spy',
        'assassin','thief','bard','druid','paladin','ranger','sorcerer','necromancer',
        'demon','angel','god','goddess','spirit','fairy','mermaid','werewolf','zombie',
        'alien','cyborg','hacker','gamer','student','friend','sister','brother','mother',
        'father','neighbor','stranger','traveller','wanderer','explorer','survivor','hero',
        'villain','rival','mentor','guardian','companion','lover','nurse','coach','therapist',
        'comedian','historian','philosopher','artist','writer','musician','athlete',
        'scientist','astronaut','ocean','mountain','desert'] AS real,
        ARRAY['ka','lo','mi','ra','ne','to','shi','va','el','on','du','ri','sa','be','ko',
        'ta','ni','mo','ze','ly'] AS syl) w,
LATERAL (SELECT
    initcap(w.syl[1 + floor(random() * 20)::int] || w.syl[1 + floor(random() * 20)::int]
            || w.syl[1 + floor(random() * 20)::int]) || ' '
      || initcap(w.syl[1 + floor(random() * 20)::int] || w.syl[1 + floor(random() * 20)::int])
      || left(g::text, 0) AS name,
    (SELECT string_agg(CASE WHEN random() < 0.2 AND k > 0
                            THEN w.real[1 + floor(random() * 100)::int]
                            ELSE w.syl[1 + floor(random() * 20)::int]
                                 || w.syl[1 + floor(random() * 20)::int]
                                 || w.syl[1 + floor(random() * 20)::int] END, ' ')
     FROM generate_series(1, 30 + (g % 2) * 0) k) AS description) d;
VACUUM ANALYZE catalog.characters;
SQL
ID=$(psql -Atq "$DATABASE_URL" -c "SELECT id FROM catalog.characters WHERE visibility = 'public' ORDER BY conversation_count DESC LIMIT 1")
MATCHES=$(psql -Atq "$DATABASE_URL" -c "SELECT count(*) FROM catalog.characters WHERE search @@ to_tsquery('simple', '$SEARCH:*')")
echo "popular character $ID; '$SEARCH' matches $MATCHES characters by text"

SEARCH_SQL=$("$BIN" admin search-sql --search "$SEARCH")
say "plan of the search page query"
PLAN=$(psql -Atq "$DATABASE_URL" -c "EXPLAIN $SEARCH_SQL")
echo "$PLAN"
if echo "$PLAN" | grep -q "Seq Scan"; then die "the search plan holds a sequential scan"; fi

PORT=$PORT_APP "$BIN" serve 2>/dev/null &
app=$!
trap 'kill $app 2>/dev/null || true' EXIT
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT_APP/ready")" = 200 ]; do sleep 0.01; done
API="http://127.0.0.1:$PORT_APP/api/v1"
curl -sf "$API/characters/$ID" >/dev/null

say "GET /characters/{id}, 64 connections, $DURATION"
wrk -t2 -c64 -d2s "$API/characters/$ID" >/dev/null
read_out=$(wrk -t2 -c64 -d"$DURATION" --latency "$API/characters/$ID")
echo "$read_out"
read_rps=$(echo "$read_out" | awk '/Requests\/sec/ {print $2}')
read_errors=$(echo "$read_out" | awk '/Non-2xx/ {print $5}')

say "GET /characters?search=$SEARCH, 64 connections, $DURATION"
wrk -t2 -c64 -d2s "$API/characters?search=$SEARCH" >/dev/null
search_out=$(wrk -t2 -c64 -d"$DURATION" --timeout 10s --latency "$API/characters?search=$SEARCH")
echo "$search_out"
search_rps=$(echo "$search_out" | awk '/Requests\/sec/ {print $2}')
search_errors=$(echo "$search_out" | awk '/Non-2xx/ {print $5}')
kill $app; wait $app 2>/dev/null || true

# The columns the server reads for a character (listing.rs, CharacterRow).
COLUMNS="c.id, c.owner_id, c.name, c.description, c.avatar_url, c.category, c.traits, c.greeting,
 c.tone, c.interests, c.visibility, c.nsfw, c.tags, c.scenario, c.personality_summary,
 c.example_dialogue, c.alternate_greetings, c.system_prompt, c.post_history_instructions,
 c.creator_notes, c.creator, c.character_version, c.extensions, c.lorebook, c.hidden_at,
 c.rating_count, c.rating, c.conversation_count, c.created_at, c.updated_at"
PK_SQL=$(mktemp)
echo "SELECT $(echo $COLUMNS) FROM catalog.characters c WHERE c.id = '$ID';" >"$PK_SQL"
SEARCH_FILE=$(mktemp)
echo "$SEARCH_SQL;" >"$SEARCH_FILE"

say "pgbench, primary-key select of that character, 64 clients, $DURATION"
pk_out=$(pgbench -n -f "$PK_SQL" -c 64 -j 2 -T "${DURATION%s}" "$DATABASE_URL" 2>&1)
echo "$pk_out" | tail -3
pk_tps=$(echo "$pk_out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]}')

say "pgbench, the search page query, 64 clients, $DURATION"
ps_out=$(pgbench -n -f "$SEARCH_FILE" -c 64 -j 2 -T "${DURATION%s}" "$DATABASE_URL" 2>&1)
echo "$ps_out" | tail -3
ps_tps=$(echo "$ps_out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]}')
rm -f "$PK_SQL" "$SEARCH_FILE"

read_ratio=$(awk -v a="$read_rps" -v b="$pk_tps" 'BEGIN { printf "%.2f", a / b }')
search_ratio=$(awk -v a="$search_rps" -v b="$ps_tps" 'BEGIN { printf "%.2f", a / b }')
echo
echo "| measure | result | goal |"
echo "|---|---|---|"
echo "| cached \`GET /characters/{id}\` req/s (non-2xx: ${read_errors:-0}) | ${read_rps} | |"
echo "| pgbench primary-key select tps, same run | ${pk_tps} | |"
echo "| cached read ÷ pgbench | ${read_ratio}× | ≥ 1.0× |"
echo "| \`GET /characters?search=${SEARCH}\` req/s (non-2xx: ${search_errors:-0}; ${MATCHES} text matches) | ${search_rps} | |"
echo "| pgbench of the same page query tps, same run | ${ps_tps} | |"
echo "| search ÷ pgbench | ${search_ratio}× | ≥ 0.5× |"
