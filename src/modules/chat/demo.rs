//! Demo conversations for load tests (`companion admin seed-demo`): each demo user gets
//! conversations with demo characters, each a straight branch of alternating messages (the
//! character's greeting first), written set-wise by PostgreSQL (`generate_series`), a batch
//! of users per statement. Ids are derived from the user's number, the conversation's and the
//! message's, so seeding again adds only what is missing.

use diesel::RunQueryDsl;
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::platform::db::{Db, DbError};

/// Users per statement: with 50 messages each, 100,000 rows a statement.
const BATCH: usize = 1_000;

/// Gives each of `users` `per_user` conversations of `length` messages with `characters`
/// (id and name) in turn; the number of messages written.
pub async fn seed(
    db: &Db,
    users: &[Uuid],
    characters: &[(Uuid, String)],
    per_user: i64,
    length: i64,
) -> anyhow::Result<u64> {
    if characters.is_empty() {
        anyhow::bail!("demo conversations need demo characters");
    }
    let ids: Vec<Uuid> = characters.iter().map(|(id, _)| *id).collect();
    let names: Vec<String> = characters.iter().map(|(_, name)| name.clone()).collect();
    let mut written = 0u64;
    for (chunk, batch) in users.chunks(BATCH).enumerate() {
        let batch = batch.to_vec();
        let first = i64::try_from(chunk * BATCH).unwrap_or(i64::MAX);
        let (ids, names) = (ids.clone(), names.clone());
        written += db
            .transaction(move |conn| {
                // u.n numbers users across batches (the ids' seed); k conversations; m messages.
                diesel::sql_query(
                    "WITH u AS (SELECT id, $1::bigint + ord AS n \
                                FROM unnest($2::uuid[]) WITH ORDINALITY AS t(id, ord)) \
                     INSERT INTO chat.conversations \
                       (id, user_id, character_id, character_name, title, active_leaf_id, \
                        last_message_at, created_at, updated_at) \
                     SELECT md5('demo-conv-' || u.n || '-' || k)::uuid, u.id, \
                            ($3::uuid[])[1 + ((u.n * 7 + k) % array_length($3::uuid[], 1))], \
                            ($4::text[])[1 + ((u.n * 7 + k) % array_length($3::uuid[], 1))], \
                            'Demo conversation ' || k, \
                            md5('demo-msg-' || u.n || '-' || k || '-' || ($6::bigint - 1))::uuid, \
                            now() - make_interval(secs => (u.n * 10 + k)::double precision), \
                            now() - interval '30 days', now() \
                     FROM u, generate_series(1, $5::bigint) k \
                     ON CONFLICT DO NOTHING",
                )
                .bind::<BigInt, _>(first)
                .bind::<Array<SqlUuid>, _>(batch.clone())
                .bind::<Array<SqlUuid>, _>(ids)
                .bind::<Array<Text>, _>(names)
                .bind::<BigInt, _>(per_user)
                .bind::<BigInt, _>(length)
                .execute(conn)?;
                let rows = diesel::sql_query(
                    "WITH u AS (SELECT id, $1::bigint + ord AS n \
                                FROM unnest($2::uuid[]) WITH ORDINALITY AS t(id, ord)) \
                     INSERT INTO chat.messages \
                       (id, conversation_id, parent_id, depth, role, content, status, \
                        created_at, updated_at) \
                     SELECT md5('demo-msg-' || u.n || '-' || k || '-' || m)::uuid, \
                            md5('demo-conv-' || u.n || '-' || k)::uuid, \
                            CASE WHEN m = 0 THEN NULL \
                                 ELSE md5('demo-msg-' || u.n || '-' || k || '-' || (m - 1))::uuid \
                            END, \
                            m, \
                            CASE WHEN m % 2 = 0 THEN 'assistant' ELSE 'user' END, \
                            CASE WHEN m % 2 = 0 \
                                 THEN 'Reply ' || m || ': that sounds lovely, tell me more ' \
                                      || 'about it. What did you like most?' \
                                 ELSE 'Message ' || m || ': I went for a walk today and ' \
                                      || 'thought about the stars.' \
                            END, \
                            'complete', \
                            now() - interval '30 days' + make_interval(mins => m::int), \
                            now() - interval '30 days' + make_interval(mins => m::int) \
                     FROM u, generate_series(1, $3::bigint) k, generate_series(0, $4::bigint - 1) m \
                     ON CONFLICT DO NOTHING",
                )
                .bind::<BigInt, _>(first)
                .bind::<Array<SqlUuid>, _>(batch)
                .bind::<BigInt, _>(per_user)
                .bind::<BigInt, _>(length)
                .execute(conn)?;
                Ok::<_, DbError>(rows as u64)
            })
            .await?;
    }
    Ok(written)
}
