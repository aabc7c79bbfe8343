//! Rate limits as clients meet them: headers on every API answer, 429 with `Retry-After`,
//! tier and endpoint limits, the client address, and what happens when Redis fails — with
//! the in-process limiter (no Redis) and with real Redis (each behaviour runs on both).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::ToSocketAddrs;

use serde_json::json;
use support::proxy::TcpProxy;
use support::{PASSWORD, TestApp, TestDb, assert_error, test_settings};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

/// A Redis key prefix of its own, so parallel tests sharing one Redis never share budgets.
fn own_prefix() -> String {
    format!("test:{}:", uuid::Uuid::new_v4().simple())
}

/// Where the limiter keeps its counts.
#[derive(Clone, Copy, Debug)]
enum Backend {
    InProcess,
    Redis,
}

/// A server with `vars`, limited in process or on the real Redis.
async fn limited_app(backend: Backend, vars: &[(&str, &str)]) -> TestApp {
    let redis = support::redis_url();
    let prefix = own_prefix();
    let mut all = vars.to_vec();
    if let Backend::Redis = backend {
        all.push(("REDIS_URL", &redis));
        all.push(("COMPANION__RATELIMIT__KEY_PREFIX", &prefix));
    }
    TestApp::spawn_with_vars(&all).await
}

#[tokio::test]
async fn every_api_answer_reports_the_budget_and_the_limit_refuses_with_retry_after() {
    let app =
        TestApp::spawn_with_vars(&[("COMPANION__RATELIMIT__ANONYMOUS_PER_MINUTE", "3")]).await;
    for remaining in ["2", "1", "0"] {
        // Even a 404 counts and carries the headers.
        let response = app.get("/api/v1/no-such-thing").await;
        assert_eq!(response.status(), 404);
        assert_eq!(header(&response, "x-ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "x-ratelimit-remaining").as_deref(),
            Some(remaining)
        );
        let reset: u64 = header(&response, "x-ratelimit-reset")
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&reset), "reset {reset}");
    }
    let refused = app.get("/api/v1/no-such-thing").await;
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "retry after {retry_after}");
    assert_eq!(
        header(&refused, "x-ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_error(refused, 429, "RATE_LIMITED").await;
    // Operations endpoints are not API answers and are never limited.
    let health = app.get("/health").await;
    assert_eq!(health.status(), 200);
    assert!(header(&health, "x-ratelimit-limit").is_none());
}

#[tokio::test]
async fn the_limit_follows_the_tier_in_process() {
    the_limit_follows_the_tier_of_the_token(Backend::InProcess).await;
}

#[tokio::test]
async fn the_limit_follows_the_tier_on_redis() {
    the_limit_follows_the_tier_of_the_token(Backend::Redis).await;
}

async fn the_limit_follows_the_tier_of_the_token(backend: Backend) {
    let app = limited_app(
        backend,
        &[
            ("COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE", "4"),
            ("COMPANION__PLANS__PREMIUM__REQUESTS_PER_MINUTE", "40"),
            ("COMPANION__PLANS__ENTERPRISE__REQUESTS_PER_MINUTE", "0"),
        ],
    )
    .await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let bob = app.set_user(&bob, None, Some("premium")).await;
    let cat = app.register("cat@example.com").await;
    let cat = app.set_user(&cat, None, Some("enterprise")).await;

    for _ in 0..4 {
        assert_eq!(
            app.get_auth("/api/v1/users/profile", &ann.token)
                .await
                .status(),
            200
        );
    }
    assert_error(
        app.get_auth("/api/v1/users/profile", &ann.token).await,
        429,
        "RATE_LIMITED",
    )
    .await;
    // Counted per account: bob and cat are untouched by ann's budget.
    let premium = app.get_auth("/api/v1/users/profile", &bob.token).await;
    assert_eq!(premium.status(), 200);
    assert_eq!(header(&premium, "x-ratelimit-limit").as_deref(), Some("40"));
    for _ in 0..10 {
        let unlimited = app.get_auth("/api/v1/users/profile", &cat.token).await;
        assert_eq!(unlimited.status(), 200);
        assert!(header(&unlimited, "x-ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn login_is_limited_per_account_and_address_in_process() {
    login_is_limited_per_account_and_address_and_forged_addresses_do_not_help(Backend::InProcess)
        .await;
}

#[tokio::test]
async fn login_is_limited_per_account_and_address_on_redis() {
    login_is_limited_per_account_and_address_and_forged_addresses_do_not_help(Backend::Redis).await;
}

async fn login_is_limited_per_account_and_address_and_forged_addresses_do_not_help(
    backend: Backend,
) {
    let app = limited_app(backend, &[("COMPANION__RATELIMIT__LOGIN_PER_MINUTE", "5")]).await;
    let ann = app.register("ann@example.com").await;
    for i in 0..5 {
        // Changing X-Forwarded-For changes nothing: the server does not trust it by default.
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header("x-forwarded-for", format!("10.0.0.{i}"))
            .json(&json!({ "email": ann.email, "password": "wrong password attempt" }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    // Even the right password waits now.
    assert_error(app.login(&ann.email, PASSWORD).await, 429, "RATE_LIMITED").await;
    // Another account from the same address is not affected.
    let bob = app.register("bob@example.com").await;
    assert_eq!(app.login(&bob.email, PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn of_150_guesses_at_most_100_are_evaluated_in_process() {
    of_150_guesses_from_many_addresses_at_most_100_are_evaluated(Backend::InProcess).await;
}

#[tokio::test]
async fn of_150_guesses_at_most_100_are_evaluated_on_redis() {
    of_150_guesses_from_many_addresses_at_most_100_are_evaluated(Backend::Redis).await;
}

async fn of_150_guesses_from_many_addresses_at_most_100_are_evaluated(backend: Backend) {
    let app = limited_app(
        backend,
        &[
            ("COMPANION__HTTP__CLIENT_IP_SOURCE", "x-forwarded-for"),
            ("COMPANION__RATELIMIT__LOGIN_PER_MINUTE", "5"),
            ("COMPANION__RATELIMIT__LOGIN_ACCOUNT_PER_HOUR", "100"),
        ],
    )
    .await;
    let ann = app.register("ann@example.com").await;
    let mut statuses = Vec::new();
    for i in 0..150 {
        let response = app
            .client
            .post(app.url("/api/v1/auth/login"))
            .header(
                "x-forwarded-for",
                format!("203.0.113.7, 198.51.{}.{}", i / 200, i % 200),
            )
            .json(&json!({ "email": ann.email, "password": format!("guess number {i}") }))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    let evaluated = statuses.iter().filter(|s| **s == 401).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(evaluated + refused, 150, "{statuses:?}");
    assert!(evaluated <= 100, "{evaluated} guesses evaluated");
    assert!(refused >= 50);
    // The audit log agrees: no more than 100 failed logins were recorded for ann.
    let failures = app
        .query_one(&format!(
            "SELECT count(*) FROM identity.audit_log WHERE action = 'auth.login' AND outcome = 'failure' AND subject_id = '{}'",
            ann.id
        ))
        .unwrap();
    assert_eq!(failures.parse::<usize>().unwrap(), evaluated);
    // The rightmost X-Forwarded-For entry was taken as the client (the proxy's view).
    let ip = app
        .query_one("SELECT ip FROM identity.audit_log WHERE action = 'auth.login' ORDER BY occurred_at LIMIT 1")
        .unwrap();
    assert_eq!(ip, "198.51.0.0");
}

#[tokio::test]
async fn registration_and_password_reset_limits_in_process() {
    registration_and_password_reset_requests_have_their_own_limits(Backend::InProcess).await;
}

#[tokio::test]
async fn registration_and_password_reset_limits_on_redis() {
    registration_and_password_reset_requests_have_their_own_limits(Backend::Redis).await;
}

async fn registration_and_password_reset_requests_have_their_own_limits(backend: Backend) {
    let app = limited_app(
        backend,
        &[
            ("COMPANION__RATELIMIT__REGISTER_PER_MINUTE", "3"),
            ("COMPANION__RATELIMIT__FORGOT_PASSWORD_PER_HOUR", "2"),
        ],
    )
    .await;
    for name in ["a", "b", "c"] {
        app.register(&format!("{name}@example.com")).await;
    }
    let fourth = app
        .post_json(
            "/api/v1/auth/register",
            &json!({ "email": "d@example.com", "password": PASSWORD, "displayName": "D" }),
        )
        .await;
    assert_error(fourth, 429, "RATE_LIMITED").await;

    // Known and unknown accounts are limited alike, so the limit reveals nothing.
    for email in ["a@example.com", "nobody@example.com"] {
        for _ in 0..2 {
            let response = app
                .post_json("/api/v1/auth/forgot-password", &json!({ "email": email }))
                .await;
            assert_eq!(response.status(), 202);
        }
        let third = app
            .post_json("/api/v1/auth/forgot-password", &json!({ "email": email }))
            .await;
        assert_error(third, 429, "RATE_LIMITED").await;
    }
}

#[tokio::test]
async fn with_redis_instances_share_one_budget() {
    let db = TestDb::fresh().await;
    let prefix = own_prefix();
    let vars = [
        ("REDIS_URL", support::redis_url()),
        ("COMPANION__RATELIMIT__KEY_PREFIX", prefix),
        ("COMPANION__RATELIMIT__ANONYMOUS_PER_MINUTE", "4".to_owned()),
    ];
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = TestApp::start(
        companion::Application::builder(test_settings(&db.url, &vars)),
        None,
    )
    .await;
    let b = TestApp::start(
        companion::Application::builder(test_settings(&db.url, &vars)),
        None,
    )
    .await;
    for app in [&a, &b, &a, &b] {
        assert_eq!(app.get("/api/v1/nothing").await.status(), 404);
    }
    assert_error(a.get("/api/v1/nothing").await, 429, "RATE_LIMITED").await;
    assert_error(b.get("/api/v1/nothing").await, 429, "RATE_LIMITED").await;
    drop((a, b));
    drop(db);
}

#[tokio::test]
async fn when_redis_fails_general_traffic_flows_but_login_stays_limited() {
    let redis = url::Url::parse(&support::redis_url()).unwrap();
    let target = (redis.host_str().unwrap(), redis.port().unwrap_or(6379))
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = TcpProxy::start(target).await;
    let via_proxy = format!("redis://127.0.0.1:{}", proxy.port);
    let prefix = own_prefix();
    let app = TestApp::spawn_with_vars(&[
        ("REDIS_URL", &via_proxy),
        ("COMPANION__RATELIMIT__KEY_PREFIX", &prefix),
        ("COMPANION__RATELIMIT__ANONYMOUS_PER_MINUTE", "2"),
        ("COMPANION__RATELIMIT__LOGIN_PER_MINUTE", "3"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;
    let limited = app.get("/api/v1/nothing").await;
    assert_eq!(header(&limited, "x-ratelimit-limit").as_deref(), Some("2"));

    proxy.cut().await;
    // General traffic fails open: past the limit of 2, without headers.
    for _ in 0..4 {
        let response = app.get("/api/v1/nothing").await;
        assert_eq!(response.status(), 404);
        assert!(header(&response, "x-ratelimit-limit").is_none());
    }
    // Sessions are still checked (by the database) while Redis is away.
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &ann.token)
            .await
            .status(),
        200
    );
    // Login falls back to the in-process limiter: never unlimited.
    for _ in 0..3 {
        assert_eq!(
            app.login(&ann.email, "wrong password attempt")
                .await
                .status(),
            401
        );
    }
    assert_error(app.login(&ann.email, PASSWORD).await, 429, "RATE_LIMITED").await;

    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("rate_limit_events_total{event=\"fail_open\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("rate_limit_events_total{event=\"fallback_local\"}"));

    proxy.restore();
    support::eventually(std::time::Duration::from_secs(10), || async {
        let response = app.get("/api/v1/nothing").await;
        header(&response, "x-ratelimit-limit").map(|_| ())
    })
    .await;
}
