//! Billing through the real server: plans from configuration, the caller's subscription,
//! token quotas by month, tiers that reach the rate limit on the next token, and the
//! payment provider's webhook with Stripe's signatures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use chrono::{Datelike, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use support::chat::{LUNA, spawn_with_model, start};
use support::fake_llm::{FakeModel, Reply, openai_events};
use support::{TestApp, TestUser, assert_error, eventually};

const SECRET: &str = "whsec_test_secret_for_the_webhook";
const WAIT: Duration = Duration::from_secs(10);

fn sign(timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

async fn webhook(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .client
        .post(app.url("/api/v1/billing/webhook"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("stripe-signature", signature);
    }
    request.send().await.unwrap()
}

/// A `customer.subscription.*` event for `user`, on the price whose lookup key is `plan`.
fn subscription_event(
    id: &str,
    kind: &str,
    created: i64,
    user: &str,
    status: &str,
    plan: &str,
    period_end: i64,
) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": created,
        "data": { "object": {
            "id": "sub_1Q2w3E",
            "object": "subscription",
            "customer": "cus_R4t5Y6",
            "status": status,
            "metadata": { "userId": user },
            "items": { "object": "list", "data": [{
                "id": "si_1",
                "price": { "id": "price_9x8y7z", "lookup_key": plan },
                "current_period_end": period_end,
            }]},
        }},
    })
    .to_string()
}

async fn subscription(app: &TestApp, user: &TestUser) -> Value {
    let response = app
        .get_auth("/api/v1/billing/subscription", &user.token)
        .await;
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

async fn webhook_app() -> TestApp {
    TestApp::spawn_with_vars(&[("COMPANION__BILLING__WEBHOOK_SECRET", SECRET)]).await
}

async fn audit_actions(app: &TestApp, admin: &TestUser, query: &str) -> Vec<Value> {
    let response = app
        .get_auth(
            &format!("/api/v1/admin/audit-log?size=100{query}"),
            &admin.token,
        )
        .await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["content"].as_array().unwrap().clone()
}

#[tokio::test]
async fn plans_are_public_and_come_from_the_configuration() {
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__PLANS__PREMIUM__MONTHLY_TOKENS", "123456"),
        ("COMPANION__PLANS__PREMIUM__PRICE_CENTS", "1299"),
    ])
    .await;
    let response = app.get("/api/v1/billing/plans").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let plans = body["content"].as_array().unwrap();
    let tiers: Vec<&str> = plans.iter().map(|p| p["tier"].as_str().unwrap()).collect();
    assert_eq!(tiers, ["free", "premium", "enterprise"]);
    let premium = &plans[1];
    assert_eq!(premium["monthlyTokens"], 123_456);
    assert_eq!(premium["priceCents"], 1299);
    assert_eq!(premium["requestsPerMinute"], 1000);
    assert_eq!(premium["customCharacters"], true);
    assert_eq!(plans[0]["customCharacters"], false);
    // Unlimited is null; the context never exceeds the model's window.
    assert_eq!(plans[2]["requestsPerMinute"], Value::Null);
    assert_eq!(plans[2]["monthlyTokens"], Value::Null);
    assert_eq!(plans[2]["contextTokens"], 4096);
}

#[tokio::test]
async fn usage_is_counted_per_reply_atomically_and_shown_with_the_subscription() {
    let model = FakeModel::start(|_| {
        Reply::new(
            "text/event-stream",
            vec![openai_events(&["Hello ", "there."], "\n\n", (11, 4))],
        )
    })
    .await;
    let app = spawn_with_model(&model.url, &[]).await;
    let ann = app.register("ann@example.com").await;
    let before = subscription(&app, &ann).await;
    assert_eq!(before["tier"], "free");
    assert_eq!(before["status"], "active");
    assert_eq!(before["usage"]["tokens"], 0);
    assert_eq!(before["plan"]["monthlyTokens"], 200_000);

    // Four replies at once, in four conversations: every increment lands.
    let mut conversations = Vec::new();
    for _ in 0..4 {
        conversations.push(start(&app, &ann, LUNA, None).await.0);
    }
    let body = json!({ "content": "Hi", "type": "text" });
    let paths: Vec<String> = conversations
        .iter()
        .map(|id| format!("/api/v1/conversations/{id}/messages"))
        .collect();
    let sends = paths
        .iter()
        .map(|path| app.send_auth(reqwest::Method::POST, path, &ann.token, &body));
    for response in futures_util::future::join_all(sends).await {
        assert_eq!(response.status(), 201);
    }
    let after = eventually(WAIT, || async {
        let now = subscription(&app, &ann).await;
        (now["usage"]["requests"] == 4).then_some(now)
    })
    .await;
    assert_eq!(after["usage"]["tokens"], 4 * 15);
    let (period, resets) = (
        after["period"]["start"].as_str().unwrap().to_owned(),
        after["period"]["resetsAt"].as_str().unwrap().to_owned(),
    );
    let today = Utc::now();
    assert!(period.starts_with(&format!("{}-{:02}-01", today.year(), today.month())));
    assert!(resets.ends_with("-01T00:00:00Z"), "{resets}");
}

#[tokio::test]
async fn a_spent_token_quota_refuses_new_generations_until_the_month_turns() {
    let model = FakeModel::start(|_| {
        Reply::new(
            "text/event-stream",
            vec![openai_events(&["Fine, ", "thanks."], "\n\n", (10, 15))],
        )
    })
    .await;
    let app = spawn_with_model(
        &model.url,
        &[("COMPANION__PLANS__FREE__MONTHLY_TOKENS", "20")],
    )
    .await;
    let ann = app.register("ann@example.com").await;
    let (id, _) = start(&app, &ann, LUNA, None).await;
    let path = format!("/api/v1/conversations/{id}/messages");
    let body = json!({ "content": "How are you?", "type": "text" });
    let send = || app.send_auth(reqwest::Method::POST, &path, &ann.token, &body);
    // The reply that reaches the quota finishes.
    assert_eq!(send().await.status(), 201);
    eventually(WAIT, || async {
        (subscription(&app, &ann).await["usage"]["tokens"] == 25).then_some(())
    })
    .await;
    let count = |app: &TestApp| {
        app.query_one(&format!(
            "SELECT count(*) FROM chat.messages WHERE conversation_id = '{id}'"
        ))
        .unwrap()
    };
    let stored = count(&app);
    let conversation = |app: &TestApp| {
        app.query_one(&format!(
            "SELECT concat_ws(' ', active_leaf_id, generating_id, last_message_at) \
             FROM chat.conversations WHERE id = '{id}'"
        ))
        .unwrap()
    };
    let before = conversation(&app);

    // The conversation is warm (its last reply ended here): billing is asked while the
    // turn is stored, and the refusal takes the turn back.
    let refused = send().await;
    let retry_after: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let error = assert_error(refused, 429, "TOKEN_QUOTA_EXCEEDED").await;
    assert_eq!(error["details"]["quotaTokens"], 20);
    assert_eq!(error["details"]["usedTokens"], 25);
    let now = Utc::now();
    let next_month = if now.month() == 12 {
        Utc.with_ymd_and_hms(now.year() + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(now.year(), now.month() + 1, 1, 0, 0, 0)
    }
    .unwrap();
    let resets: chrono::DateTime<Utc> = error["details"]["resetsAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(resets, next_month);
    assert!(retry_after.abs_diff(u64::try_from((next_month - now).num_seconds()).unwrap()) < 5);
    // Nothing of the refused message was kept, and the conversation is as it was (its
    // leaf, its last activity, free for the next message); regenerating is refused alike.
    assert_eq!(count(&app), stored);
    assert_eq!(conversation(&app), before);
    assert!(
        app.get("/metrics")
            .await
            .text()
            .await
            .unwrap()
            .contains("virtual_companion_chat_warm_sends_total{outcome=\"hit\"} 1"),
        "the refused message went the warm way"
    );
    let last: Value = app
        .get_auth(
            &format!("/api/v1/conversations/{id}/messages?limit=1"),
            &ann.token,
        )
        .await
        .json()
        .await
        .unwrap();
    let reply = last["messages"].as_array().unwrap().last().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        app.send_auth(
            reqwest::Method::POST,
            &format!("/api/v1/conversations/{id}/messages/{reply}/regenerate"),
            &ann.token,
            &json!({}),
        )
        .await,
        429,
        "TOKEN_QUOTA_EXCEEDED",
    )
    .await;
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("virtual_companion_quota_rejections_total{quota=\"tokens\"} 2"),
        "{metrics}"
    );

    // The month turns (the stored usage now belongs to last month): generations resume.
    app.execute(&format!(
        "UPDATE billing.usage SET period = period - interval '1 month' WHERE user_id = '{}'",
        ann.id
    ));
    assert_eq!(send().await.status(), 201);
}

#[tokio::test]
async fn a_tier_reaches_the_rate_limit_with_the_next_token() {
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__PLANS__FREE__REQUESTS_PER_MINUTE", "100"),
        ("COMPANION__PLANS__PREMIUM__REQUESTS_PER_MINUTE", "1000"),
        ("COMPANION__BILLING__WEBHOOK_SECRET", SECRET),
    ])
    .await;
    let root = app.register("root@example.com").await;
    let root = app.set_user(&root, Some("admin"), None).await;
    let ann = app.register("ann@example.com").await;
    let limit = |token: String| {
        let app = &app;
        async move {
            let response = app.get_auth("/api/v1/users/profile", &token).await;
            assert_eq!(response.status(), 200);
            response.headers()["x-ratelimit-limit"]
                .to_str()
                .unwrap()
                .to_owned()
        }
    };
    assert_eq!(limit(ann.token.clone()).await, "100");

    let granted = app
        .send_auth(
            reqwest::Method::PATCH,
            &format!("/api/v1/admin/users/{}", ann.id),
            &root.token,
            &json!({ "tier": "premium" }),
        )
        .await;
    assert_eq!(granted.status(), 200);
    // The old token still says free; the next one carries premium.
    assert_eq!(limit(ann.token.clone()).await, "100");
    let refreshed: Value = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({ "refreshToken": ann.refresh_token }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(refreshed["user"]["subscription"]["tier"], "premium");
    assert_eq!(
        limit(refreshed["token"].as_str().unwrap().to_owned()).await,
        "1000"
    );

    // The provider ends the subscription: free again on the next refresh.
    let now = Utc::now().timestamp();
    let ended = subscription_event(
        "evt_end",
        "customer.subscription.deleted",
        now,
        &ann.id,
        "canceled",
        "premium",
        now,
    );
    assert_eq!(
        webhook(&app, &ended, Some(sign(now, &ended)))
            .await
            .status(),
        200
    );
    // (Watched in the database: polling the API would spend the 100 requests a minute.)
    eventually(WAIT, || async {
        app.query_one(&format!(
            "SELECT status FROM billing.subscriptions WHERE user_id = '{}'",
            ann.id
        ))
        .filter(|status| status == "canceled")
    })
    .await;
    let token: Value = app
        .post_json(
            "/api/v1/auth/refresh",
            &json!({ "refreshToken": refreshed["refreshToken"] }),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(token["user"]["subscription"]["tier"], "free");
    assert_eq!(
        limit(token["token"].as_str().unwrap().to_owned()).await,
        "100"
    );
}

#[tokio::test]
async fn the_webhook_is_absent_without_a_secret() {
    let app = TestApp::spawn().await;
    let body = r#"{"id":"evt_1"}"#;
    let now = Utc::now().timestamp();
    assert_error(
        webhook(&app, body, Some(sign(now, body))).await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn a_signed_subscription_event_sets_the_tier_and_bad_signatures_are_refused_and_audited() {
    let app = webhook_app().await;
    let root = app.register("root@example.com").await;
    let root = app.set_user(&root, Some("admin"), None).await;
    let ann = app.register("ann@example.com").await;
    let now = Utc::now().timestamp();
    let period_end = now + 30 * 86_400;
    let created = subscription_event(
        "evt_created",
        "customer.subscription.created",
        now,
        &ann.id,
        "active",
        "premium",
        period_end,
    );

    // Refused: no header, another secret's signature, a tampered body, a stale timestamp.
    let refusals = [
        webhook(&app, &created, None).await,
        webhook(
            &app,
            &created,
            Some(format!("t={now},v1={}", "0".repeat(64))),
        )
        .await,
        webhook(
            &app,
            &created.replace("premium", "enterprise"),
            Some(sign(now, &created)),
        )
        .await,
        webhook(&app, &created, Some(sign(now - 301, &created))).await,
    ];
    for response in refusals {
        assert_error(response, 400, "BAD_REQUEST").await;
    }
    let denied = eventually(WAIT, || async {
        let entries = audit_actions(&app, &root, "&action=billing.webhook").await;
        (entries.len() == 4).then_some(entries)
    })
    .await;
    let mut reasons: Vec<&str> = denied
        .iter()
        .map(|e| {
            assert_eq!(e["outcome"], "denied");
            e["newValue"]["reason"].as_str().unwrap()
        })
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons, ["malformed", "mismatch", "mismatch", "stale"]);
    assert_eq!(subscription(&app, &ann).await["tier"], "free");

    let accepted = webhook(&app, &created, Some(sign(now, &created))).await;
    assert_eq!(accepted.status(), 200);
    let body: Value = accepted.json().await.unwrap();
    assert_eq!(body["duplicate"], false);
    let standing = eventually(WAIT, || async {
        let now = subscription(&app, &ann).await;
        (now["tier"] == "premium").then_some(now)
    })
    .await;
    assert_eq!(standing["status"], "active");
    let valid_until: chrono::DateTime<Utc> =
        standing["validUntil"].as_str().unwrap().parse().unwrap();
    // Paid through the period, plus a day for the renewal's payment to arrive.
    assert_eq!(valid_until.timestamp(), period_end + 86_400);
    let changes = eventually(WAIT, || async {
        let entries = audit_actions(&app, &root, "&action=subscription.change").await;
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!(changes[0]["userId"], ann.id.as_str());
    assert_eq!(changes[0]["oldValue"]["tier"], "free");
    assert_eq!(changes[0]["newValue"]["tier"], "premium");
}

#[tokio::test]
async fn replayed_and_out_of_order_events_change_nothing() {
    let app = webhook_app().await;
    let ann = app.register("ann@example.com").await;
    let t0 = Utc::now().timestamp() - 120;
    let end = t0 + 30 * 86_400;
    let send = |id: &str, kind: &str, created: i64, status: &str, plan: &str| {
        let body = subscription_event(id, kind, created, &ann.id, status, plan, end);
        let app = &app;
        async move {
            let now = Utc::now().timestamp();
            let response = webhook(app, &body, Some(sign(now, &body))).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let outcome = |id: &str| {
        let id = id.to_owned();
        let app = &app;
        async move {
            eventually(WAIT, || async {
                app.query_one(&format!(
                    "SELECT outcome FROM billing.webhook_events WHERE id = '{id}' AND processed_at IS NOT NULL"
                ))
            })
            .await
        }
    };

    send(
        "evt_a",
        "customer.subscription.created",
        t0,
        "active",
        "premium",
    )
    .await;
    assert_eq!(outcome("evt_a").await, "applied");
    send(
        "evt_c",
        "customer.subscription.updated",
        t0 + 20,
        "active",
        "enterprise",
    )
    .await;
    assert_eq!(outcome("evt_c").await, "applied");
    assert_eq!(subscription(&app, &ann).await["tier"], "enterprise");

    // Sent at t0 + 10, delivered after the event of t0 + 20: older, so it changes nothing.
    send(
        "evt_b",
        "customer.subscription.updated",
        t0 + 10,
        "canceled",
        "premium",
    )
    .await;
    assert_eq!(outcome("evt_b").await, "stale");
    assert_eq!(subscription(&app, &ann).await["tier"], "enterprise");

    // The provider ends it; a replay of the first event (same id) is acknowledged, not applied.
    send(
        "evt_d",
        "customer.subscription.deleted",
        t0 + 30,
        "canceled",
        "enterprise",
    )
    .await;
    assert_eq!(outcome("evt_d").await, "applied");
    let replay = send(
        "evt_a",
        "customer.subscription.created",
        t0,
        "active",
        "premium",
    )
    .await;
    assert_eq!(replay["duplicate"], true);
    assert_eq!(
        app.query_one("SELECT count(*) FROM billing.webhook_events WHERE id = 'evt_a'"),
        Some("1".to_owned())
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let standing = subscription(&app, &ann).await;
    assert_eq!(standing["tier"], "free");
    assert_eq!(standing["status"], "canceled");

    // Invoices find the account by the subscription id seen before: a renewal paid.
    send(
        "evt_e",
        "customer.subscription.updated",
        t0 + 40,
        "active",
        "premium",
    )
    .await;
    assert_eq!(outcome("evt_e").await, "applied");
    let paid_to = end + 30 * 86_400;
    let invoice = json!({
        "id": "evt_f", "object": "event", "type": "invoice.paid", "created": t0 + 50,
        "data": { "object": {
            "id": "in_1", "object": "invoice", "customer": "cus_R4t5Y6",
            "subscription": "sub_1Q2w3E", "status": "paid",
            "lines": { "data": [{ "period": { "start": end, "end": paid_to } }] },
        }},
    })
    .to_string();
    let now = Utc::now().timestamp();
    assert_eq!(
        webhook(&app, &invoice, Some(sign(now, &invoice)))
            .await
            .status(),
        200
    );
    assert_eq!(outcome("evt_f").await, "applied");
    let renewed = subscription(&app, &ann).await;
    let until: chrono::DateTime<Utc> = renewed["validUntil"].as_str().unwrap().parse().unwrap();
    assert_eq!(until.timestamp(), paid_to + 86_400);
}

#[tokio::test]
async fn a_lapsed_subscription_is_free_at_once_and_written_down_by_the_job() {
    let app = TestApp::spawn_with_vars(&[("COMPANION__BILLING__EXPIRY_CHECK_SECS", "1")]).await;
    let ann = app.register("ann@example.com").await;
    let ann = app.set_user(&ann, None, Some("premium")).await;
    assert_eq!(subscription(&app, &ann).await["tier"], "premium");
    app.execute(&format!(
        "UPDATE billing.subscriptions SET valid_until = now() - interval '1 second' WHERE user_id = '{}'",
        ann.id
    ));
    let standing = subscription(&app, &ann).await;
    assert_eq!(standing["tier"], "free");
    assert_eq!(standing["status"], "expired");
    // The next token is free too, and the recurring job writes it down.
    let again = app.relogin(&ann).await;
    let profile: Value = app
        .get_auth("/api/v1/users/profile", &again.token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(profile["subscription"]["tier"], "free");
    eventually(WAIT, || async {
        app.query_one(&format!(
            "SELECT tier FROM billing.subscriptions WHERE user_id = '{}' AND status = 'expired'",
            ann.id
        ))
        .filter(|tier| tier == "free")
    })
    .await;
}
