//! Response headers across the whole server, not a sample: every route of the route table,
//! the browser client and its assets, the API reference, errors of every kind and paths that
//! name nothing all carry the security headers; a foreign origin gets no CORS grant; TRACE
//! and other methods nobody serves are 405.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use reqwest::header::HeaderMap;
use support::{TestApp, assert_error};

fn assert_secure(headers: &HeaderMap, what: &str) {
    let csp = headers
        .get("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"))
        .to_str()
        .unwrap();
    for directive in [
        "default-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{what}: CSP lacks {directive}");
    }
    assert_eq!(
        headers
            .get("x-content-type-options")
            .map(|v| v.to_str().unwrap()),
        Some("nosniff"),
        "{what}"
    );
    assert!(headers.contains_key("referrer-policy"), "{what}");
    assert!(headers.contains_key("x-request-id"), "{what}");
}

#[tokio::test]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let user = app.register("headers@example.com").await;

    // Every route, as an anonymous caller and as a signed-in one, on ids that name nothing:
    // successes, 401s, 404s and 422s alike.
    for route in &app.routes {
        let method = support::method_of(route);
        let path = support::nobodys_path(&route.path);
        if path == "/api/v1/ws" {
            continue;
        }
        for token in [None, Some(&user.token)] {
            let mut request = app.client.request(method.clone(), app.url(&path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.unwrap();
            let what = format!("{method} {path} ({})", response.status());
            assert_secure(response.headers(), &what);
            if path.starts_with("/api/") && token.is_some() {
                assert_eq!(response.headers()["cache-control"], "no-store", "{what}");
            }
        }
    }

    // The browser client, one of its assets, the API reference, the WebSocket address spoken
    // to in plain HTTP, and paths and methods nobody serves.
    let index = app.get("/").await;
    assert_eq!(index.status(), 200);
    assert_secure(index.headers(), "/");
    let html = index.text().await.unwrap();
    let asset = html
        .split('"')
        .find(|s| s.starts_with("/assets/"))
        .expect("index.html links its assets")
        .to_owned();
    let mut paths = vec![
        asset,
        "/docs".to_owned(),
        "/docs/".to_owned(),
        "/openapi.json".to_owned(),
        "/api/v1/ws".to_owned(),
        "/no-such-page".to_owned(),
        "/api/v1/no-such-thing".to_owned(),
        "/assets/0000/no-such-file.js".to_owned(),
        "/api/v1/characters?size=0".to_owned(),
    ];
    paths.push("/api/v1/characters/not-a-uuid".to_owned());
    for path in &paths {
        let response = app.get(path).await;
        assert_secure(
            response.headers(),
            &format!("GET {path} ({})", response.status()),
        );
    }
    let large = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 * 1024 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(large.status(), 413);
    assert_secure(large.headers(), "a body over the limit");
}

#[tokio::test]
async fn trace_and_unserved_methods_are_405_everywhere() {
    let app = TestApp::spawn().await;
    let user = app.register("trace@example.com").await;
    let trace = Method::from_bytes(b"TRACE").unwrap();
    for path in [
        "/",
        "/health",
        "/api/v1/users/profile",
        "/api/v1/characters",
        "/openapi.json",
    ] {
        let response = app
            .client
            .request(trace.clone(), app.url(path))
            .bearer_auth(&user.token)
            .header("x-secret-probe", "reflected?")
            .send()
            .await
            .unwrap();
        assert_secure(response.headers(), &format!("TRACE {path}"));
        let body = assert_error(response, 405, "METHOD_NOT_ALLOWED").await;
        assert!(
            !body.to_string().contains("reflected?") && !body.to_string().contains(&user.token),
            "TRACE {path} echoes nothing of the request: {body}"
        );
    }
    let put = app
        .client
        .put(app.url("/api/v1/billing/plans"))
        .send()
        .await
        .unwrap();
    assert_error(put, 405, "METHOD_NOT_ALLOWED").await;
}

#[tokio::test]
async fn a_foreign_origin_gets_no_cors_grant_and_a_configured_one_does() {
    let app =
        TestApp::spawn_with_vars(&[("COMPANION__HTTP__CORS_ORIGINS", "https://app.example")]).await;
    let user = app.register("cors@example.com").await;
    let preflight = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/api/v1/users/profile"))
            .header("origin", origin)
            .header("access-control-request-method", "PUT")
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "null",
        "http://app.example",
    ] {
        let denied = preflight(origin).await.unwrap();
        assert!(
            !denied.headers().contains_key("access-control-allow-origin"),
            "preflight from {origin}"
        );
        let simple = app
            .client
            .get(app.url("/api/v1/users/profile"))
            .bearer_auth(&user.token)
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(
            !simple.headers().contains_key("access-control-allow-origin"),
            "GET from {origin}"
        );
        assert!(
            !simple
                .headers()
                .contains_key("access-control-allow-credentials"),
            "GET from {origin}"
        );
    }
}
