//! The `companion` binary: its CLI, configuration refusals, and graceful shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{HttpResponse, web};
use companion::Application;
use support::process::{companion, free_port};
use support::{TestApp, TestDb, eventually};
use tokio::process::Command;

#[tokio::test]
async fn help_explains_serve_and_migrate() {
    let out = companion().arg("--help").output().await.unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("serve"), "{text}");
    assert!(text.contains("migrate"), "{text}");
    assert!(
        text.contains("default"),
        "serve is said to be the default: {text}"
    );
}

async fn migrate(db: &TestDb) -> std::process::Output {
    companion()
        .arg("migrate")
        .env("COMPANION_ENV", "test")
        .env("DATABASE_URL", &db.url)
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn migrate_applies_pending_migrations_once() {
    let db = TestDb::empty().await;
    let first = migrate(&db).await;
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(stdout.contains("applied V1__module_schemas"), "{stdout}");

    let second = migrate(&db).await;
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stdout).contains("up to date"));
}

async fn refused(vars: &[(&str, &str)]) -> String {
    let mut command = companion();
    command.env("COMPANION_ENV", "production");
    for (k, v) in vars {
        command.env(k, v);
    }
    let out = command.output().await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "refused with a configuration error"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    stderr
}

#[tokio::test]
async fn production_refuses_to_start_without_its_settings() {
    let stderr = refused(&[(
        "COMPANION__AUTH__JWT_SECRET",
        "a-long-and-random-production-secret-42",
    )])
    .await;
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let stderr = refused(&[("DATABASE_URL", "postgres://db.internal/companion")]).await;
    assert!(stderr.contains("COMPANION__AUTH__JWT_SECRET"), "{stderr}");
    assert!(stderr.contains("development secret"), "{stderr}");
    assert!(
        !stderr.contains("insecure-dev-secret"),
        "the secret itself is not printed"
    );
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let db = TestDb::fresh().await;
    let port = free_port();
    let mut child = companion()
        .env("COMPANION_ENV", "test")
        .env("DATABASE_URL", &db.url)
        .env("PORT", port.to_string())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let ready = format!("http://127.0.0.1:{port}/ready");
    eventually(Duration::from_secs(30), || async {
        let status = client.get(&ready).send().await.ok()?.status();
        (status == 200).then_some(())
    })
    .await;

    let pid = child.id().unwrap().to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("exits within the shutdown timeout")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    drop(db);
}

#[tokio::test]
async fn stopping_lets_in_flight_requests_finish_and_refuses_new_ones() {
    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel::<()>();
    let entered = Arc::new(Mutex::new(Some(entered_tx)));
    let mut app = TestApp::spawn_with(move |db| {
        Application::builder(db.settings()).api_routes(move |cfg| {
            let entered = entered.clone();
            cfg.service(web::resource("/test/slow").route(web::get().to(move || {
                let entered = entered.clone();
                async move {
                    if let Some(tx) = entered.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    HttpResponse::Ok().body("finished")
                }
            })));
        })
    })
    .await;

    let in_flight = tokio::spawn(app.client.get(app.url("/api/v1/test/slow")).send());
    entered_rx.await.unwrap();
    app.stop().await.unwrap();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "finished");
    let refused = reqwest::Client::new().get(app.url("/health")).send().await;
    assert!(refused.is_err(), "no longer accepting connections");
}
