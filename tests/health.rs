//! `/health` and `/ready`, and what the API does while the database is away.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::ToSocketAddrs;
use std::time::Duration;

use actix_web::{HttpResponse, web};
use companion::Application;
use companion::platform::Platform;
use companion::platform::db::DbError;
use companion::platform::http::AppError;
use diesel::RunQueryDsl;
use serde_json::Value;
use support::proxy::TcpProxy;
use support::{TestApp, TestDb, assert_error, eventually};

/// An API route that needs the database, like every module's will.
async fn count_databases(platform: web::Data<Platform>) -> Result<HttpResponse, AppError> {
    platform
        .db
        .run(|c| {
            diesel::sql_query("SELECT 1")
                .execute(c)
                .map_err(DbError::from)
        })
        .await?;
    Ok(HttpResponse::Ok().finish())
}

#[tokio::test]
async fn health_answers_while_the_process_runs() {
    let app = TestApp::spawn().await;
    let response = app.get("/health").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn ready_reports_each_check() {
    let app = TestApp::spawn().await;
    let response = app.get("/ready").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["storage"]["status"], "ok");
    assert_eq!(body["checks"]["redis"]["status"], "not configured");
}

#[tokio::test]
async fn ready_checks_redis_when_it_is_configured() {
    let redis = support::redis_url();
    let app = TestApp::spawn_with(|db| {
        Application::builder(support::test_settings(&db.url, &[("REDIS_URL", &redis)]))
    })
    .await;
    let body: Value = app.get("/ready").await.json().await.unwrap();
    assert_eq!(body["checks"]["redis"]["status"], "ok", "{body}");

    // A configured Redis that does not answer makes the instance not ready.
    let app = TestApp::spawn_with(|db| {
        Application::builder(support::test_settings(
            &db.url,
            &[("REDIS_URL", "redis://127.0.0.1:1")],
        ))
    })
    .await;
    let error = assert_error(app.get("/ready").await, 503, "SERVICE_UNAVAILABLE").await;
    assert!(
        error["message"].as_str().unwrap().contains("redis"),
        "{error}"
    );
    assert_eq!(error["details"]["checks"]["database"]["status"], "ok");
}

#[tokio::test]
async fn ready_is_503_while_migrations_are_pending() {
    let db = TestDb::fresh().await;
    let mut settings = db.settings();
    // Start the server without migrating, on a database whose history lost its last step.
    settings.database.migrate_on_start = false;
    let app = TestApp::start(Application::builder(settings), None).await;
    app.platform
        .db
        .run(|c| {
            diesel::sql_query("DELETE FROM refinery_schema_history WHERE version = (SELECT max(version) FROM refinery_schema_history)")
                .execute(c)
                .map_err(DbError::from)
        })
        .await
        .unwrap();
    let error = assert_error(app.get("/ready").await, 503, "SERVICE_UNAVAILABLE").await;
    assert_eq!(
        error["details"]["checks"]["database"]["reason"],
        "migrations pending"
    );
    drop(app);
    drop(db);
}

#[tokio::test]
async fn losing_the_database_makes_ready_and_the_api_503_and_service_resumes_by_itself() {
    let db = TestDb::fresh().await;
    let server = url::Url::parse(&db.url).unwrap();
    let target = (server.host_str().unwrap(), server.port().unwrap_or(5432))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(target).await;
    let mut via_proxy = server.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.port)).unwrap();

    let settings = support::test_settings(via_proxy.as_str(), &[]);
    let app = TestApp::start(
        Application::builder(settings).api_routes(|cfg| {
            cfg.service(web::resource("/test/db").route(web::get().to(count_databases)));
        }),
        None,
    )
    .await;
    assert_eq!(app.get("/ready").await.status(), 200);
    assert_eq!(app.get("/api/v1/test/db").await.status(), 200);

    proxy.cut().await;
    let error = assert_error(app.get("/ready").await, 503, "SERVICE_UNAVAILABLE").await;
    assert!(
        error["message"].as_str().unwrap().contains("database"),
        "{error}"
    );
    assert_eq!(error["details"]["checks"]["database"]["status"], "failed");
    assert_eq!(error["details"]["checks"]["storage"]["status"], "ok");
    let error = assert_error(app.get("/api/v1/test/db").await, 503, "SERVICE_UNAVAILABLE").await;
    let text = error.to_string();
    assert!(
        !text.contains("5432") && !text.contains("companion_test"),
        "no connection details leak: {text}"
    );
    assert_eq!(
        app.get("/health").await.status(),
        200,
        "the process itself is fine"
    );

    proxy.restore();
    eventually(Duration::from_secs(10), || async {
        (app.get("/ready").await.status() == 200).then_some(())
    })
    .await;
    assert_eq!(app.get("/api/v1/test/db").await.status(), 200);
    drop(app);
    drop(db);
}
