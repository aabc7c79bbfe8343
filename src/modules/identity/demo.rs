//! Demo accounts for load tests (`companion admin seed-demo`): `demo<N>@example.com`, all
//! with the password [`DEMO_PASSWORD`], verified, free tier. Ids are derived from `N`, so
//! seeding again adds only what is missing.

use diesel::RunQueryDsl;
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use uuid::Uuid;

use super::password;
use crate::platform::db::{Db, DbError};

/// Every demo account's password (they are for load tests, never for a real installation).
pub const DEMO_PASSWORD: &str = "demo-password-2026";

/// Users are written this many per statement.
const BATCH: i64 = 5_000;

/// Makes sure accounts `demo1` … `demo<count>` exist; their ids, in order.
pub async fn seed(db: &Db, count: i64) -> anyhow::Result<Vec<Uuid>> {
    // One hash for every account: argon2id is deliberately slow, and they share a password.
    let hash = password::hash_blocking(DEMO_PASSWORD.to_owned()).await?;
    let mut from = 1;
    while from <= count {
        let to = (from + BATCH - 1).min(count);
        let hash = hash.clone();
        db.run(move |conn| {
            diesel::sql_query(
                "INSERT INTO identity.users \
                   (id, email, password_hash, display_name, bio, email_verified_at, created_at) \
                 SELECT md5('demo-user-' || i)::uuid, 'demo' || i || '@example.com', $3, \
                        'Demo ' || i, 'A demo account for load tests.', now(), \
                        now() - make_interval(mins => i::int) \
                 FROM generate_series($1::bigint, $2::bigint) i \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<BigInt, _>(from)
            .bind::<BigInt, _>(to)
            .bind::<Text, _>(hash)
            .execute(conn)
            .map_err(DbError::from)
        })
        .await?;
        from = to + 1;
    }
    db.run(move |conn| {
        #[derive(diesel::QueryableByName)]
        struct Id {
            #[diesel(sql_type = SqlUuid)]
            id: Uuid,
        }
        let ids: Vec<Id> = diesel::sql_query(
            "SELECT u.id FROM generate_series(1, $1::bigint) i \
             JOIN identity.users u ON u.id = md5('demo-user-' || i)::uuid ORDER BY i",
        )
        .bind::<BigInt, _>(count)
        .load(conn)?;
        Ok::<_, DbError>(ids.into_iter().map(|r| r.id).collect())
    })
    .await
    .map_err(Into::into)
}
