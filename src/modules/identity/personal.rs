//! Identity's share of a person's data ([`PersonalData`]): the account, its sessions and
//! tokens, and the audit events about it. Erasure deletes the account and its sessions and
//! keeps the audit events for security under a pseudonym.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

use super::service::Service;
use super::store::{self, AuditRow};
use super::{AuditEntry, Outcome, audit};
use crate::platform::db::DbError;
use crate::platform::http::user_key;
use crate::platform::personal::{Archive, Coverage, PersonalData, batched, item};

/// Rows read or changed per statement.
const BATCH: i64 = 1000;

fn event(row: AuditRow, user: Uuid) -> Value {
    let by = match row.actor_id {
        Some(actor) if actor == user => "you",
        Some(_) => "staff",
        None => "system",
    };
    json!({
        "id": row.id,
        "occurredAt": row.occurred_at,
        "action": row.action,
        "outcome": row.outcome,
        "by": by,
        "resourceType": row.resource_type,
        "resourceId": row.resource_id,
        "oldValue": row.old_value,
        "newValue": row.new_value,
        "ip": row.ip,
        "userAgent": row.user_agent,
    })
}

impl PersonalData for Service {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn coverage(&self) -> Coverage {
        Coverage {
            tables: &[
                "identity.users",
                "identity.sessions",
                "identity.refresh_tokens",
                "identity.email_tokens",
                "identity.audit_log",
            ],
            prefixes: &[],
        }
    }

    /// `profile.json` (the account, with what the profile page does not show: when the
    /// address was verified, the account disabled or its erasure scheduled), `sessions.json`
    /// (every login: when, from where, how it ended) and `audit-log.json` (the security
    /// events about the account; who acted is "you", "staff" or "system"). Token hashes and
    /// the password hash are secrets, not data about the person, and stay out.
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let (row, sessions) = self
                .db
                .run(move |conn| {
                    let row = store::find_user(conn, user)?;
                    let sessions = store::user_sessions(conn, user)?;
                    Ok::<_, DbError>((row, sessions))
                })
                .await?;
            let Some(row) = row else { return Ok(()) };
            let (verified, disabled, deletion) = (
                row.email_verified_at,
                row.disabled_at,
                row.deletion_scheduled_for,
            );
            let standing = self.subscriptions.standing(user).await?;
            let mut profile = super::api::user_body(row, standing);
            profile["emailVerifiedAt"] = json!(verified);
            profile["disabledAt"] = json!(disabled);
            profile["deletionScheduledFor"] = json!(deletion);
            archive.json("profile.json", profile).await?;
            let sessions: Vec<Value> = sessions
                .into_iter()
                .map(|s| {
                    json!({
                        "id": s.id,
                        "createdAt": s.created_at,
                        "lastUsedAt": s.last_used_at,
                        "revokedAt": s.revoked_at,
                        "revokedReason": s.revoked_reason,
                        "ip": s.ip,
                        "userAgent": s.user_agent,
                    })
                })
                .collect();
            archive
                .json("sessions.json", Value::Array(sessions))
                .await?;

            let db = self.db.clone();
            let events = batched(move |after| {
                let db = db.clone();
                async move {
                    let rows = db
                        .run(move |conn| {
                            store::audit_of(conn, user, after, BATCH).map_err(DbError::from)
                        })
                        .await?;
                    rows.into_iter()
                        .map(|r| Ok((r.id, item(&event(r, user))?)))
                        .collect()
                }
            });
            archive
                .json_array(
                    "audit-log.json",
                    json!({ "userId": user }),
                    "events",
                    events,
                )
                .await
        }
        .boxed()
    }

    /// Sessions (with their refresh tokens) and email tokens go; the audit events stay,
    /// naming `pseudonym` instead of the user and without the values they recorded; then
    /// the account row, with one `account.erased` event written in the same transaction (so
    /// a second run writes none). Redis keys go first, while the address is still known:
    /// revocation markers and the rate-limit counters of the account and its address.
    fn erase(&self, user: Uuid, pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            let (row, sessions) = self
                .db
                .run(move |conn| {
                    let row = store::find_user(conn, user)?;
                    let sessions = store::user_sessions(conn, user)?;
                    Ok::<_, DbError>((row, sessions))
                })
                .await?;
            let ids: Vec<Uuid> = sessions.iter().map(|s| s.id).collect();
            self.sessions.forget(&ids).await?;
            self.limits.forget(&user_key(user)).await?;
            if let Some(row) = &row {
                for start in [
                    format!("login:{}:", row.email),
                    format!("login-account:{}", row.email),
                    format!("forgot:{}", row.email),
                ] {
                    self.limits.forget(&start).await?;
                }
            }
            loop {
                let deleted = self
                    .db
                    .run(move |conn| {
                        store::delete_sessions(conn, user, BATCH).map_err(DbError::from)
                    })
                    .await?;
                if deleted.is_empty() {
                    break;
                }
            }
            loop {
                let changed = self
                    .db
                    .run(move |conn| {
                        store::pseudonymize_audit(conn, user, pseudonym, BATCH)
                            .map_err(DbError::from)
                    })
                    .await?;
                if changed == 0 {
                    break;
                }
            }
            self.db
                .transaction(move |conn| {
                    store::delete_email_tokens(conn, user)?;
                    if store::delete_user(conn, user)? {
                        audit::record_in(
                            conn,
                            AuditEntry::new("account.erased", Outcome::Success).subject(pseudonym),
                        )?;
                    }
                    Ok::<_, DbError>(())
                })
                .await?;
            Ok(())
        }
        .boxed()
    }
}
