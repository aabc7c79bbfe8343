//! The browser client's files: `index.html` never cached and pointing at versioned assets,
//! the assets cached for good under their version, nothing outside `static/` reachable.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::{TestApp, assert_error};

/// The `/assets/<version>/app.js` that `index.html` loads.
async fn entry_script(app: &TestApp) -> String {
    let index = app.get("/").await;
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert!(
        index.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(index.headers().contains_key("content-security-policy"));
    let html = index.text().await.unwrap();
    let start = html
        .find("src=\"/assets/")
        .expect("index.html loads its script")
        + 5;
    let end = start + html[start..].find('"').unwrap();
    let src = html[start..end].to_owned();
    assert!(
        !html.contains("\"/assets/app.js\""),
        "every asset URL is versioned"
    );
    // What the client states about this installation comes from its settings.
    assert!(
        html.contains("<meta name=\"companion:deletion-grace-days\" content=\"30\">"),
        "{html}"
    );
    src
}

#[tokio::test]
async fn index_is_revalidated_and_assets_are_immutable_under_their_version() {
    let app = TestApp::spawn().await;
    let script = entry_script(&app).await;
    let version = script.split('/').nth(2).unwrap().to_owned();
    assert_eq!(version.len(), 12, "{script}");
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{script}");
    assert_eq!(
        app.get("/index.html").await.headers()["cache-control"],
        "no-cache"
    );

    let asset = app.get(&script).await;
    assert_eq!(asset.status(), 200);
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let kind = asset.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(kind.contains("javascript"), "{kind}");
    assert!(asset.headers().contains_key("etag"));
    assert!(asset.headers().contains_key("content-security-policy"));
    let body = asset.text().await.unwrap();
    assert_eq!(
        body,
        std::fs::read_to_string("static/assets/app.js").unwrap()
    );

    // Modules import each other relatively, so they come under the same version.
    let view = app.get(&format!("/assets/{version}/views/chat.js")).await;
    assert_eq!(view.status(), 200);

    // Another release's version still gets the file, but nothing may keep it.
    let other = app.get("/assets/000000000000/app.js").await;
    assert_eq!(other.status(), 200);
    assert_eq!(other.headers()["cache-control"], "no-cache");

    // Other files of static/ are revalidated on each use.
    let icon = app.get("/favicon.svg").await;
    assert_eq!(icon.status(), 200);
    assert_eq!(icon.headers()["cache-control"], "no-cache");
}

#[tokio::test]
async fn nothing_outside_the_assets_is_served() {
    let app = TestApp::spawn().await;
    let script = entry_script(&app).await;
    let version = script.split('/').nth(2).unwrap().to_owned();
    for path in [
        format!("/assets/{version}/missing.js"),
        format!("/assets/{version}/..%2f..%2fCargo.toml"),
        format!("/assets/{version}/.hidden"),
        format!("/assets/{version}/views"),
        "/assets/".to_owned(),
        "/Cargo.toml".to_owned(),
        "/../Cargo.toml".to_owned(),
    ] {
        assert_error(app.get(&path).await, 404, "NOT_FOUND").await;
    }
}
