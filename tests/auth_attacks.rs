//! Forged, altered and misplaced tokens: every one is a 401 with the envelope.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use companion::platform::http::AccessClaims;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serde_json::json;
use support::{TestApp, TestUser, assert_error};

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/jwt");

/// The claims of `user`'s real token, for re-signing with changes.
fn claims_of(app: &TestApp, user: &TestUser) -> AccessClaims {
    let payload = user.token.split('.').nth(1).unwrap();
    let decoded = URL_SAFE_NO_PAD.decode(payload).unwrap();
    let claims: AccessClaims = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(claims.iss, app.platform.settings.auth.issuer);
    claims
}

fn hs256(claims: &AccessClaims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn unsigned(claims: &AccessClaims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{body}.")
}

async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let response = app.get_auth("/api/v1/users/profile", token).await;
    assert_eq!(response.status(), 401, "{what}");
    assert_error(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn forged_expired_and_misdirected_hs256_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let secret = app
        .platform
        .settings
        .auth
        .jwt_secret
        .expose_secret()
        .to_owned();
    let real = claims_of(&app, &ann);
    let now = chrono::Utc::now().timestamp();

    // The control: the same construction with the right key and claims is accepted.
    let control = hs256(&real, secret.as_bytes());
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &control)
            .await
            .status(),
        200
    );

    let mut admin = real.clone();
    admin.role = "admin".into();
    assert_refused(&app, &unsigned(&admin), "alg none").await;
    assert_refused(&app, &unsigned(&real), "alg none, unchanged claims").await;
    assert_refused(
        &app,
        &hs256(&admin, b"another secret of sufficient length!!"),
        "wrong key",
    )
    .await;
    let mut expired = real.clone();
    expired.exp = now - 60;
    assert_refused(&app, &hs256(&expired, secret.as_bytes()), "expired").await;
    let mut issuer = real.clone();
    issuer.iss = "someone-else".into();
    assert_refused(&app, &hs256(&issuer, secret.as_bytes()), "wrong iss").await;
    let mut audience = real.clone();
    audience.aud = "another-api".into();
    assert_refused(&app, &hs256(&audience, secret.as_bytes()), "wrong aud").await;
    let mut refresh_type = real.clone();
    refresh_type.typ = "refresh".into();
    assert_refused(
        &app,
        &hs256(&refresh_type, secret.as_bytes()),
        "typ refresh",
    )
    .await;
    let hs512 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS512),
        &real,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    assert_refused(&app, &hs512, "another HMAC algorithm").await;
    // A correctly signed token for a session that never existed.
    let mut no_session = real.clone();
    no_session.sid = uuid::Uuid::now_v7();
    assert_refused(
        &app,
        &hs256(&no_session, secret.as_bytes()),
        "unknown session",
    )
    .await;
    // Someone else's id in a token of ann's session.
    let bob = app.register("bob@example.com").await;
    let mut swapped = real.clone();
    swapped.sub = bob.id.parse().unwrap();
    assert_refused(
        &app,
        &hs256(&swapped, secret.as_bytes()),
        "sub of another user",
    )
    .await;

    // The opaque refresh token is not an access token.
    assert_refused(&app, &ann.refresh_token, "refresh token as bearer").await;
    assert_refused(&app, "not-a-jwt", "garbage").await;
    // A token in the query string is not read.
    let in_query = app
        .get(&format!("/api/v1/users/profile?access_token={}", ann.token))
        .await;
    assert_error(in_query, 401, "UNAUTHORIZED").await;
    let in_query = app
        .get(&format!("/api/v1/users/profile?token={}", ann.token))
        .await;
    assert_error(in_query, 401, "UNAUTHORIZED").await;
    // Basic instead of Bearer.
    let basic = app
        .get_with(
            "/api/v1/users/profile",
            "authorization",
            &format!("Basic {}", ann.token),
        )
        .await;
    assert_error(basic, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn with_eddsa_pinned_an_hs256_token_keyed_with_the_public_key_is_refused() {
    let private = format!("{KEYS}/ed25519.pem");
    let public = format!("{KEYS}/ed25519.pub.pem");
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__AUTH__ALGORITHM", "EdDSA"),
        ("COMPANION__AUTH__PRIVATE_KEY_FILE", &private),
        ("COMPANION__AUTH__PUBLIC_KEY_FILE", &public),
    ])
    .await;
    let ann = app.register("ann@example.com").await;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(ann.token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(
        app.get_auth("/api/v1/users/profile", &ann.token)
            .await
            .status(),
        200
    );

    let real = claims_of(&app, &ann);
    let public_pem = std::fs::read(&public).unwrap();
    assert_refused(
        &app,
        &hs256(&real, &public_pem),
        "HS256 keyed with the public key",
    )
    .await;
    assert_refused(&app, &unsigned(&real), "alg none").await;
    let secret = app
        .platform
        .settings
        .auth
        .jwt_secret
        .expose_secret()
        .to_owned();
    assert_refused(
        &app,
        &hs256(&real, secret.as_bytes()),
        "HS256 with the configured secret",
    )
    .await;
}

#[tokio::test]
async fn tokens_stop_working_after_logout_and_password_change() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let phone = app.relogin(&ann).await;
    let out = app
        .send_auth(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            &ann.token,
            &json!({}),
        )
        .await;
    assert_eq!(out.status(), 204);
    assert_refused(&app, &ann.token, "after logout").await;
    // Logging out twice with the dead token is a 401, not a crash.
    let twice = app
        .send_auth(
            reqwest::Method::POST,
            "/api/v1/auth/logout",
            &ann.token,
            &json!({}),
        )
        .await;
    assert_error(twice, 401, "UNAUTHORIZED").await;

    let laptop = app.relogin(&ann).await;
    let changed = app
        .send_auth(
            reqwest::Method::PUT,
            "/api/v1/users/password",
            &laptop.token,
            &json!({ "currentPassword": support::PASSWORD, "newPassword": "an entirely new passphrase" }),
        )
        .await;
    assert_eq!(changed.status(), 204);
    assert_refused(&app, &phone.token, "other session after password change").await;
    let refreshed = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({ "refreshToken": phone.refresh_token }),
        )
        .await;
    assert_error(refreshed, 401, "UNAUTHORIZED").await;
}
