//! Demo characters for load tests (`companion admin seed-demo`): public characters owned by
//! the demo accounts, spread over the categories. Ids are derived from their number, so
//! seeding again adds only what is missing.

use diesel::RunQueryDsl;
use diesel::sql_types::{Array, BigInt, Text, Uuid as SqlUuid};
use uuid::Uuid;

use crate::platform::db::{Db, DbError};

/// A seeded character: what chat keeps of it in a conversation.
pub struct DemoCharacter {
    pub id: Uuid,
    pub name: String,
}

/// Makes sure `count` public demo characters exist, owned in turn by `owners`.
pub async fn seed(db: &Db, count: i64, owners: Vec<Uuid>) -> anyhow::Result<Vec<DemoCharacter>> {
    if owners.is_empty() {
        anyhow::bail!("demo characters need demo users to own them");
    }
    db.run(move |conn| {
        diesel::sql_query(
            "WITH o AS (SELECT $2::uuid[] AS owners), \
                  c AS (SELECT array_agg(slug ORDER BY slug) AS slugs FROM catalog.categories) \
             INSERT INTO catalog.characters \
               (id, owner_id, name, description, category, traits, greeting, tone, interests, \
                visibility, tags, created_at, updated_at) \
             SELECT md5('demo-character-' || i)::uuid, \
                    o.owners[1 + (i % array_length(o.owners, 1))], \
                    'Demo character ' || i, \
                    'A companion made for load tests, number ' || i || \
                      ', who likes long walks, old films and talking about the stars.', \
                    c.slugs[1 + (i % array_length(c.slugs, 1))], \
                    ARRAY['curious', 'kind'], \
                    'Hello! I am demo character ' || i || '. How was your day?', \
                    'warm', ARRAY['films', 'stars'], 'public', \
                    ARRAY['demo', 'tag' || (i % 50)], \
                    now() - make_interval(mins => i::int), now() \
             FROM generate_series(1, $1::bigint) i, o, c \
             ON CONFLICT DO NOTHING",
        )
        .bind::<BigInt, _>(count)
        .bind::<Array<SqlUuid>, _>(owners)
        .execute(conn)?;
        #[derive(diesel::QueryableByName)]
        struct Row {
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
            #[diesel(sql_type = Text)]
            name: String,
        }
        let rows: Vec<Row> = diesel::sql_query(
            "SELECT ch.id, ch.name FROM generate_series(1, $1::bigint) i \
             JOIN catalog.characters ch ON ch.id = md5('demo-character-' || i)::uuid ORDER BY i",
        )
        .bind::<BigInt, _>(count)
        .load(conn)?;
        Ok::<_, DbError>(
            rows.into_iter()
                .map(|r| DemoCharacter {
                    id: r.id,
                    name: r.name,
                })
                .collect(),
        )
    })
    .await
    .map_err(Into::into)
}
