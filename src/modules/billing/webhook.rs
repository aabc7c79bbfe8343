//! The payment provider's webhook, in Stripe's format: the signature scheme and what each
//! event means for a subscription.
//!
//! A `Stripe-Signature: t=<unix time>,v1=<hex>[,v1=…]` header signs `"{t}.{raw body}"` with
//! HMAC-SHA256 under the endpoint's secret. Every `v1` is tried (the provider sends two
//! while a secret is being rolled); the comparison takes the same time wherever the strings
//! differ; a timestamp further than the tolerance from now is refused, so a captured request
//! cannot be replayed later.

use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// Why a signature was refused (each says so in the 400 and the audit entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

impl SignatureError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Stale => "stale",
            Self::Mismatch => "mismatch",
        }
    }
}

/// The hex HMAC-SHA256 of `"{timestamp}.{payload}"` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, payload: &[u8]) -> String {
    // HMAC takes a key of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Checks a `Stripe-Signature` header against the raw body.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secret: &[u8],
    tolerance_secs: u64,
    now: DateTime<Utc>,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Malformed)?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            "v1" => candidates.push(value),
            // v0 (test-mode scheme) and anything newer are ignored, as Stripe's libraries do.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed);
    }
    let age = now.timestamp().abs_diff(timestamp);
    if age > tolerance_secs {
        return Err(SignatureError::Stale);
    }
    let expected = sign(secret, timestamp, payload);
    let matched = candidates.iter().fold(false, |found, candidate| {
        found | bool::from(expected.as_bytes().ct_eq(candidate.as_bytes()))
    });
    if matched {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The envelope of an event: what idempotency and ordering need.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub kind: String,
    pub created: DateTime<Utc>,
}

/// Reads `{id, type, created, data: {object}}`; `None` when it is not an event.
pub fn envelope(event: &Value) -> Option<Envelope> {
    let id = event.get("id")?.as_str()?;
    let kind = event.get("type")?.as_str()?;
    let created = Utc
        .timestamp_opt(event.get("created")?.as_i64()?, 0)
        .single()?;
    event.get("data")?.get("object")?.as_object()?;
    if id.is_empty() || id.len() > 255 || kind.len() > 255 {
        return None;
    }
    Some(Envelope {
        id: id.to_owned(),
        kind: kind.to_owned(),
        created,
    })
}

/// A paid period stays valid this long past its end, so the renewal's payment has time to
/// arrive before the account falls back to free.
pub const RENEWAL_GRACE: Duration = Duration::days(1);

/// What an event says about the subscription it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The subscription is (now) on `tier` with `status`, paid until `period_end`.
    Set {
        tier: Option<String>,
        status: &'static str,
        period_end: Option<DateTime<Utc>>,
    },
    /// It ended: back to free.
    Ended,
    /// A renewal was paid up to `period_end`.
    Paid { period_end: Option<DateTime<Utc>> },
    /// A renewal's payment failed: past due until it is paid or the period lapses.
    PaymentFailed,
    /// Nothing to change (a subscription whose first payment is still pending).
    Ignored,
}

/// Who the event is about, as the provider names them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parties {
    /// Our account id, when the checkout put it in the metadata (`metadata.userId`).
    pub user: Option<Uuid>,
    pub customer: Option<String>,
    pub subscription: Option<String>,
}

fn text(value: &Value, path: &[&str]) -> Option<String> {
    let mut at = value;
    for key in path {
        at = at.get(key)?;
    }
    match at {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        // Expanded objects carry their id.
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn time(value: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    let mut at = value;
    for key in path {
        at = at.get(key)?;
    }
    Utc.timestamp_opt(at.as_i64()?, 0).single()
}

fn user_in(metadata: Option<&Value>) -> Option<Uuid> {
    let metadata = metadata?;
    ["userId", "user_id"]
        .iter()
        .find_map(|key| metadata.get(key)?.as_str()?.parse().ok())
}

/// The parties and the effect of a handled event's `data.object`; `None` for events we do
/// not act on.
pub fn interpret(
    kind: &str,
    object: &Value,
    prices: &dyn Fn(&Value) -> Option<String>,
) -> Option<(Parties, Effect)> {
    match kind {
        "customer.subscription.created" | "customer.subscription.updated" => {
            let parties = Parties {
                user: user_in(object.get("metadata")),
                customer: text(object, &["customer"]),
                subscription: text(object, &["id"]),
            };
            let item = object.pointer("/items/data/0");
            let tier = item.and_then(|item| item.get("price")).and_then(prices);
            // Newer API versions keep the period on the item.
            let period_end = time(object, &["current_period_end"])
                .or_else(|| item.and_then(|item| time(item, &["current_period_end"])));
            let status = object.get("status").and_then(Value::as_str).unwrap_or("");
            let effect = match status {
                "active" => Effect::Set {
                    tier,
                    status: "active",
                    period_end,
                },
                "trialing" => Effect::Set {
                    tier,
                    status: "trialing",
                    period_end,
                },
                "past_due" | "unpaid" => Effect::Set {
                    tier,
                    status: "past_due",
                    period_end,
                },
                "canceled" | "incomplete_expired" => Effect::Ended,
                // `incomplete` (first payment pending) and `paused` change nothing.
                _ => Effect::Ignored,
            };
            Some((parties, effect))
        }
        "customer.subscription.deleted" => Some((
            Parties {
                user: user_in(object.get("metadata")),
                customer: text(object, &["customer"]),
                subscription: text(object, &["id"]),
            },
            Effect::Ended,
        )),
        "invoice.paid" | "invoice.payment_failed" => {
            // The subscription moved under `parent.subscription_details` in newer versions.
            let subscription = text(object, &["subscription"])
                .or_else(|| text(object, &["parent", "subscription_details", "subscription"]));
            let metadata = object
                .pointer("/parent/subscription_details/metadata")
                .or_else(|| {
                    object
                        .get("subscription_details")
                        .and_then(|d| d.get("metadata"))
                });
            let parties = Parties {
                user: user_in(metadata),
                customer: text(object, &["customer"]),
                subscription,
            };
            let effect = if kind == "invoice.paid" {
                let period_end = object
                    .pointer("/lines/data")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|line| time(line, &["period", "end"]))
                    .max();
                Effect::Paid { period_end }
            } else {
                Effect::PaymentFailed
            };
            Some((parties, effect))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"whsec_test";

    fn header(t: i64, payload: &[u8]) -> String {
        format!("t={t},v1={}", sign(SECRET, t, payload))
    }

    #[test]
    fn a_fresh_signature_of_the_exact_body_passes() {
        let now = Utc::now();
        let body = br#"{"id":"evt_1"}"#;
        let signed = header(now.timestamp(), body);
        assert_eq!(verify(Some(&signed), body, SECRET, 300, now), Ok(()));
        // A rolled secret: the second v1 matches.
        let two = format!(
            "t={},v1=00ff,v1={}",
            now.timestamp(),
            sign(SECRET, now.timestamp(), body)
        );
        assert_eq!(verify(Some(&two), body, SECRET, 300, now), Ok(()));
    }

    #[test]
    fn altered_bodies_other_secrets_and_old_timestamps_fail() {
        let now = Utc::now();
        let body = br#"{"id":"evt_1"}"#;
        let signed = header(now.timestamp(), body);
        assert_eq!(
            verify(Some(&signed), br#"{"id":"evt_2"}"#, SECRET, 300, now),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(Some(&signed), body, b"whsec_other", 300, now),
            Err(SignatureError::Mismatch)
        );
        let old = header(now.timestamp() - 301, body);
        assert_eq!(
            verify(Some(&old), body, SECRET, 300, now),
            Err(SignatureError::Stale)
        );
        for bad in ["", "t=abc,v1=00", "v1=00", "t=1", "garbage"] {
            assert_eq!(
                verify(Some(bad), body, SECRET, 300, now),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify(None, body, SECRET, 300, now),
            Err(SignatureError::Malformed)
        );
    }
}
