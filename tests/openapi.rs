//! The published OpenAPI document against the routes the server really mounts: every route
//! documented, nothing documented that is not served, every operation's error envelope and
//! security as the server enforces them, and the reference at `/docs` self-hosted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use support::TestApp;

/// The operation for `method` at `path` in `doc`.
fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    doc["paths"].get(path)?.get(method.to_ascii_lowercase())
}

/// Every documented `(method, path)`.
fn documented(doc: &Value) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in [
            "get", "head", "post", "put", "patch", "delete", "options", "trace",
        ] {
            if item.get(method).is_some() {
                all.push((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    all
}

#[tokio::test]
async fn every_mounted_route_is_documented_and_nothing_else() {
    let app = TestApp::spawn().await;
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );

    assert!(
        app.routes.len() > 60,
        "the route table is filled: {}",
        app.routes.len()
    );
    let mounted: Vec<(String, String)> = app
        .routes
        .iter()
        .map(|r| (r.method.to_string(), r.path.clone()))
        .collect();
    let undocumented: Vec<_> = mounted
        .iter()
        .filter(|(method, path)| operation(&doc, method, path).is_none())
        .collect();
    assert!(
        undocumented.is_empty(),
        "mounted but not documented: {undocumented:#?}"
    );
    let unserved: Vec<_> = documented(&doc)
        .into_iter()
        .filter(|route| !mounted.contains(route))
        .collect();
    assert!(
        unserved.is_empty(),
        "documented but not mounted: {unserved:#?}"
    );
}

#[tokio::test]
async fn every_operation_describes_its_success_and_the_error_envelope() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]), "{error}");
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "VALIDATION_ERROR",
        "NOT_FOUND",
        "RATE_LIMITED",
        "TOKEN_QUOTA_EXCEEDED",
    ] {
        assert!(
            codes.as_array().unwrap().iter().any(|c| c == code),
            "{code} in {codes}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    for (method, path) in documented(&doc) {
        let op = operation(&doc, &method, &path).unwrap();
        let responses = op["responses"].as_object().unwrap();
        assert_eq!(
            responses["default"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{method} {path}: the error envelope"
        );
        assert!(
            responses
                .keys()
                .any(|status| status.starts_with(['1', '2', '3'])),
            "{method} {path} documents its success: {responses:?}"
        );
        for (status, response) in responses {
            assert!(
                response["description"]
                    .as_str()
                    .is_some_and(|d| !d.is_empty()),
                "{method} {path} {status} has a description"
            );
        }
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{method} {path} tagged"
        );
    }
}

/// What the document says about authentication is what the server does: an operation that
/// answers an anonymous caller 401 declares the bearer scheme (and no anonymous option), and
/// one that serves anonymous callers allows them.
#[tokio::test]
async fn documented_security_matches_what_the_server_enforces() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut wrong = Vec::new();
    for route in &app.routes {
        let method = support::method_of(route);
        let status = app
            .client
            .request(method, app.url(&support::nobodys_path(&route.path)))
            .send()
            .await
            .unwrap()
            .status();
        let op = operation(&doc, route.method.as_str(), &route.path).unwrap();
        let security = op["security"].as_array().cloned().unwrap_or_default();
        let bearer = security.iter().any(|s| s.get("bearer").is_some());
        let anonymous = security.is_empty() || security.iter().any(|s| s == &serde_json::json!({}));
        if status == 401 && (!bearer || anonymous) {
            wrong.push(format!(
                "{} {}: 401 but documented {security:?}",
                route.method, route.path
            ));
        }
        if status != 401 && !anonymous {
            wrong.push(format!(
                "{} {}: {status} anonymously but documented {security:?}",
                route.method, route.path
            ));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[tokio::test]
async fn the_reference_is_served_from_this_server() {
    let app = TestApp::spawn().await;
    let redirect = app.get("/docs").await;
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/docs/");

    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Every script and stylesheet comes from here.
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for part in html.split(attribute).skip(1) {
            let target = part.split('"').next().unwrap();
            assert!(!target.contains("//"), "{target} is not self-hosted");
            assets.push(target.trim_start_matches("./").to_owned());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{assets:?}");
    for asset in assets {
        let response = app.get(&format!("/docs/{asset}")).await;
        assert_eq!(response.status(), 200, "{asset}");
    }
    // The initializer points the reference at our document.
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
}

#[tokio::test]
async fn the_reference_can_be_turned_off() {
    let app = TestApp::spawn_with(|db| {
        companion::app::Application::builder(support::test_settings(
            &db.url,
            &[("COMPANION__HTTP__API_DOCS", "false")],
        ))
    })
    .await;
    support::assert_error(app.get("/openapi.json").await, 404, "NOT_FOUND").await;
    support::assert_error(app.get("/docs/").await, 404, "NOT_FOUND").await;
    // Production's default.
    let settings = app.platform.settings.http.clone();
    let unset = companion::config::HttpSettings {
        api_docs: None,
        ..settings
    };
    assert!(!unset.api_docs_enabled(companion::config::Environment::Production));
    assert!(unset.api_docs_enabled(companion::config::Environment::Development));
}
