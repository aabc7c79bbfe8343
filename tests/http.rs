//! The HTTP platform seen from a client: the error envelope for every status, security
//! headers, request ids, CORS and metrics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use actix_web::{HttpResponse, web};
use companion::Application;
use companion::platform::http::{AppError, ErrorCode};
use serde::Deserialize;
use serde_json::json;
use support::{TestApp, assert_error};

#[derive(Deserialize)]
struct Greeting {
    name: String,
    times: u8,
}

async fn greet(body: web::Json<Greeting>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({ "greeting": format!("hello {}", body.name).repeat(body.times.into()) }))
}

async fn thing(id: web::Path<uuid::Uuid>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "id": *id }))
}

/// Errors a module would raise, with causes that must never reach the client.
async fn refuse(kind: web::Path<String>) -> Result<HttpResponse, AppError> {
    Err(match kind.as_str() {
        "forbidden" => AppError::forbidden("Only the owner may do this."),
        "conflict" => AppError::conflict("That name is taken."),
        "slow-down" => AppError::rate_limited(7),
        _ => AppError::internal(anyhow::anyhow!(
            "SELECT password_hash FROM identity.users failed: connection reset"
        )),
    })
}

async fn spawn() -> TestApp {
    TestApp::spawn_with(|db| {
        let settings = support::test_settings(
            &db.url,
            &[
                ("COMPANION__HTTP__JSON_LIMIT_BYTES", "1024"),
                ("COMPANION__HTTP__CORS_ORIGINS", "https://app.example"),
            ],
        );
        Application::builder(settings).api_routes(|cfg| {
            cfg.service(web::resource("/test/greet").route(web::post().to(greet)))
                .service(web::resource("/test/things/{id}").route(web::get().to(thing)))
                .service(web::resource("/test/refuse/{kind}").route(web::get().to(refuse)));
        })
    })
    .await
}

#[tokio::test]
async fn a_valid_request_passes_through_the_stack() {
    let app = spawn().await;
    let response = app
        .post_json("/api/v1/test/greet", &json!({"name": "Ann", "times": 2}))
        .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["greeting"], "hello Annhello Ann");
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = spawn().await;
    let response = app
        .post_raw(
            "/api/v1/test/greet",
            "application/json",
            "{\"name\": \"Ann\",",
        )
        .await;
    assert_error(response, 400, "BAD_REQUEST").await;
}

#[tokio::test]
async fn json_of_the_wrong_shape_is_422_with_the_reason() {
    let app = spawn().await;
    let response = app
        .post_json(
            "/api/v1/test/greet",
            &json!({"name": "Ann", "times": "many"}),
        )
        .await;
    let error = assert_error(response, 422, "VALIDATION_ERROR").await;
    assert!(
        error["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalid type"),
        "{error}"
    );

    let response = app
        .post_json("/api/v1/test/greet", &json!({"times": 1}))
        .await;
    let error = assert_error(response, 422, "VALIDATION_ERROR").await;
    assert!(
        error["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("name"),
        "{error}"
    );
}

#[tokio::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn().await;
    let response = app
        .post_raw("/api/v1/test/greet", "text/plain", "name=Ann")
        .await;
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn().await;
    let long_name = "a".repeat(2048);
    let response = app
        .post_json(
            "/api/v1/test/greet",
            &json!({"name": long_name, "times": 1}),
        )
        .await;
    let error = assert_error(response, 413, "PAYLOAD_TOO_LARGE").await;
    assert!(error["message"].as_str().unwrap().contains("1024"));
}

#[tokio::test]
async fn unknown_routes_and_malformed_ids_are_404() {
    let app = spawn().await;
    assert_error(app.get("/api/v1/no-such-thing").await, 404, "NOT_FOUND").await;
    assert_error(app.get("/no-such-page").await, 404, "NOT_FOUND").await;
    assert_error(
        app.get("/api/v1/test/things/not-a-uuid").await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn a_wrong_method_is_405() {
    let app = spawn().await;
    let response = app.client.delete(app.url("/health")).send().await.unwrap();
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
    let response = app
        .client
        .get(app.url("/api/v1/test/greet"))
        .send()
        .await
        .unwrap();
    assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn module_errors_keep_their_status_and_hide_their_cause() {
    let app = spawn().await;
    assert_error(
        app.get("/api/v1/test/refuse/forbidden").await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_error(
        app.get("/api/v1/test/refuse/conflict").await,
        409,
        "CONFLICT",
    )
    .await;

    let response = app.get("/api/v1/test/refuse/slow-down").await;
    assert_eq!(response.headers()["retry-after"], "7");
    assert_error(response, 429, "RATE_LIMITED").await;

    let response = app.get("/api/v1/test/refuse/boom").await;
    let text = {
        assert_eq!(response.status(), 500);
        response.text().await.unwrap()
    };
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    for leak in [
        "SELECT",
        "password_hash",
        "identity.users",
        "connection reset",
    ] {
        assert!(!text.contains(leak), "500 body leaks {leak:?}: {text}");
    }
}

#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let app = spawn().await;
    for path in [
        "/health",
        "/api/v1/no-such-thing",
        "/api/v1/test/refuse/conflict",
    ] {
        let response = app.get(path).await;
        let headers = response.headers();
        let csp = headers["content-security-policy"].to_str().unwrap();
        for directive in [
            "object-src 'none'",
            "base-uri 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(
                csp.contains(directive),
                "{path}: CSP lacks {directive}: {csp}"
            );
        }
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert!(headers.contains_key("referrer-policy"), "{path}");
        // Plain HTTP: no HSTS.
        assert!(!headers.contains_key("strict-transport-security"), "{path}");
    }
    let api = app.get("/api/v1/test/refuse/conflict").await;
    assert_eq!(api.headers()["cache-control"], "no-store");
}

#[tokio::test]
async fn hsts_is_sent_when_served_over_https() {
    let app = spawn().await;
    let response = app.get_with("/health", "x-forwarded-proto", "https").await;
    let hsts = response.headers()["strict-transport-security"]
        .to_str()
        .unwrap();
    assert!(hsts.contains("max-age=31536000"), "{hsts}");
}

#[tokio::test]
async fn the_request_id_is_echoed_or_created() {
    let app = spawn().await;
    let response = app
        .get_with("/health", "x-request-id", "client-chose-this-42")
        .await;
    assert_eq!(response.headers()["x-request-id"], "client-chose-this-42");

    let created = app.get("/api/v1/no-such-thing").await;
    let id = created.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");

    // A hostile value is replaced, not echoed.
    let response = app
        .get_with("/health", "x-request-id", "a b <script>")
        .await;
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

#[tokio::test]
async fn cors_answers_only_configured_origins() {
    let app = spawn().await;
    let preflight = |origin: &'static str| {
        app.client
            .request(reqwest::Method::OPTIONS, app.url("/api/v1/test/greet"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );

    let other = preflight("https://evil.example").await.unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));

    let simple = app
        .get_with("/health", "origin", "https://evil.example")
        .await;
    assert!(!simple.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn metrics_count_requests_by_route_pattern() {
    let app = spawn().await;
    for _ in 0..3 {
        assert_eq!(app.get("/health").await.status(), 200);
    }
    let id = uuid::Uuid::now_v7();
    assert_eq!(
        app.get(&format!("/api/v1/test/things/{id}")).await.status(),
        200
    );
    app.get("/api/v1/no-such-thing").await;

    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();

    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health",status="200"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"http_requests_total{method="GET",route="/api/v1/test/things/{id}",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(
        !text.contains(&id.to_string()),
        "raw paths must not become labels"
    );
    assert!(text.contains(r#"status="404""#), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(
        text.contains(r#"http_request_duration_seconds_count{method="GET",route="/health"} 3"#),
        "{text}"
    );
    for state in ["in_use", "idle", "max"] {
        assert!(
            text.contains(&format!(r#"db_pool_connections{{state="{state}"}}"#)),
            "{text}"
        );
    }
    assert!(
        text.contains(r#"db_pool_connections{state="max"} 4"#),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_can_require_a_token() {
    let app = TestApp::spawn_with(|db| {
        Application::builder(support::test_settings(
            &db.url,
            &[("COMPANION__METRICS__BEARER_TOKEN", "scrape-me")],
        ))
    })
    .await;
    assert_error(app.get("/metrics").await, 401, "UNAUTHORIZED").await;
    let ok = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[test]
fn error_codes_map_to_their_statuses() {
    // The table clients rely on; a changed mapping must be a deliberate change.
    for (code, status) in [
        (ErrorCode::BadRequest, 400),
        (ErrorCode::Unauthorized, 401),
        (ErrorCode::Forbidden, 403),
        (ErrorCode::NotFound, 404),
        (ErrorCode::MethodNotAllowed, 405),
        (ErrorCode::Conflict, 409),
        (ErrorCode::PayloadTooLarge, 413),
        (ErrorCode::UnsupportedMediaType, 415),
        (ErrorCode::ValidationError, 422),
        (ErrorCode::RateLimited, 429),
        (ErrorCode::InternalError, 500),
        (ErrorCode::ServiceUnavailable, 503),
    ] {
        assert_eq!(code.status().as_u16(), status, "{code:?}");
    }
}
