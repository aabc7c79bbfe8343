//! Migrations: embedded, applied at start-up under an advisory lock, once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use companion::Application;
use companion::platform::db::DbError;
use companion::platform::migrate;
use diesel::RunQueryDsl;
use support::{TestApp, TestDb};

#[derive(diesel::QueryableByName)]
struct Applied {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    version: i32,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    times: i64,
}

#[derive(diesel::QueryableByName)]
struct Schema {
    #[diesel(sql_type = diesel::sql_types::Text)]
    schema_name: String,
}

#[tokio::test]
async fn two_servers_starting_on_an_empty_database_both_come_up_and_migrate_once() {
    let db = TestDb::empty().await;
    let (a, b) = tokio::join!(
        Application::build(db.settings()),
        Application::build(db.settings())
    );
    let a = TestApp::start_built(a.unwrap()).await;
    let b = TestApp::start_built(b.unwrap()).await;
    for app in [&a, &b] {
        assert_eq!(app.get("/ready").await.status(), 200);
    }

    let applied: Vec<Applied> = a
        .platform
        .db
        .run(|c| {
            diesel::sql_query(
                "SELECT version, count(*) AS times FROM refinery_schema_history GROUP BY version ORDER BY version",
            )
            .load(c)
            .map_err(DbError::from)
        })
        .await
        .unwrap();
    let versions: Vec<i32> = applied.iter().map(|m| m.version).collect();
    assert_eq!(
        versions,
        (1..=migrate::latest_version()).collect::<Vec<_>>()
    );
    assert!(
        applied.iter().all(|m| m.times == 1),
        "a migration was applied twice"
    );
    drop((a, b));
    drop(db);
}

#[tokio::test]
async fn every_module_has_its_own_schema() {
    let app = TestApp::spawn().await;
    let schemas: Vec<Schema> = app
        .platform
        .db
        .run(|c| {
            diesel::sql_query("SELECT schema_name::text FROM information_schema.schemata")
                .load(c)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    let names: Vec<_> = schemas.into_iter().map(|s| s.schema_name).collect();
    for module in [
        "platform", "identity", "catalog", "chat", "media", "billing", "privacy",
    ] {
        assert!(
            names.iter().any(|n| n == module),
            "schema {module} missing from {names:?}"
        );
    }
}
