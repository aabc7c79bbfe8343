//! Closing and reopening an account for privacy's erasure with a grace period
//! ([`Accounts`]): the account is disabled and its sessions end at once; the right
//! credentials reopen it until the erasure starts.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::Value;
use uuid::Uuid;

use super::service::{IdentityError, Service};
use super::{Accounts, AuditEntry, AuditLog, Contact, DueErasure, Outcome, audit, password, store};
use crate::platform::db::DbError;
use crate::platform::http::{AppError, ClientInfo};

/// What a live connection of the user receives when their sessions end, so it closes at
/// once instead of at its next check.
pub const SESSIONS_ENDED_EVENT: &str = r#"{"type":"session.ended"}"#;

impl Service {
    /// Re-authentication is guessing a password like login: the same per-account limit.
    pub(super) async fn check_password(
        &self,
        email: &str,
        hash: String,
        given: String,
    ) -> Result<bool, IdentityError> {
        self.limit(
            format!("login-account:{email}"),
            self.settings.ratelimit.login_account_per_hour,
            Duration::from_secs(3600),
        )
        .await?;
        Ok(password::verify_blocking(given, Some(hash)).await?)
    }

    async fn close_account(
        &self,
        user_id: Uuid,
        given: String,
        erase_at: DateTime<Utc>,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
        let user = self.user(user_id).await?;
        if !self
            .check_password(&user.email, user.password_hash, given)
            .await?
        {
            self.audit
                .record(
                    AuditEntry::new("account.deletion_requested", Outcome::Failure)
                        .by_self(user_id)
                        .client(&client),
                )
                .await?;
            return Err(IdentityError::field("password", "is not correct"));
        }
        let revoked = self
            .db
            .transaction(move |conn| {
                let revoked = store::close_account(conn, user_id, erase_at)?;
                audit::record_in(
                    conn,
                    AuditEntry::new("account.deletion_requested", Outcome::Success)
                        .by_self(user_id)
                        .change(None, Some(serde_json::json!({ "scheduledFor": erase_at })))
                        .client(&client),
                )?;
                Ok::<_, IdentityError>(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        self.realtime.publish(user_id, SESSIONS_ENDED_EVENT).await;
        Ok(())
    }

    /// The account these credentials open, if it waits for its erasure. Wrong
    /// credentials get the login's 401, alike for every reason.
    async fn pending_account(
        &self,
        email: String,
        given: String,
        client: ClientInfo,
    ) -> Result<Uuid, IdentityError> {
        let (user, matches) = self.credentials(&email, given, &client).await?;
        match user {
            Some(user) if matches => {
                if user.deletion_scheduled_for.is_some() {
                    Ok(user.id)
                } else {
                    Err(IdentityError::NotPendingDeletion)
                }
            }
            other => {
                let mut entry =
                    AuditEntry::new("account.restore", Outcome::Failure).client(&client);
                if let Some(user) = other {
                    entry = entry.subject(user.id);
                }
                self.audit.record(entry).await?;
                Err(IdentityError::InvalidCredentials)
            }
        }
    }

    /// Enables the account again and starts a session: the login's answer.
    async fn reopen_account(
        &self,
        user_id: Uuid,
        client: ClientInfo,
    ) -> Result<Value, IdentityError> {
        let service = self.clone();
        let opened = self
            .db
            .transaction(move |conn| {
                let Some(user) = store::reopen_account(conn, user_id)? else {
                    return Ok(None);
                };
                let (session_id, refresh) = service.start_session(conn, user.id, &client)?;
                audit::record_in(
                    conn,
                    AuditEntry::new("account.restore", Outcome::Success)
                        .by_self(user.id)
                        .resource("session", session_id)
                        .client(&client),
                )?;
                Ok::<_, IdentityError>(Some((user, session_id, refresh)))
            })
            .await?;
        let (user, session_id, refresh) = opened.ok_or(IdentityError::NotPendingDeletion)?;
        let issued = self.issue(user, session_id, refresh).await?;
        Ok(super::api::tokens_body(issued))
    }
}

impl Accounts for Service {
    fn close(
        &self,
        user: Uuid,
        password: String,
        erase_at: DateTime<Utc>,
        client: ClientInfo,
    ) -> BoxFuture<'_, Result<(), AppError>> {
        Box::pin(async move { Ok(self.close_account(user, password, erase_at, client).await?) })
    }

    fn pending(
        &self,
        email: String,
        password: String,
        client: ClientInfo,
    ) -> BoxFuture<'_, Result<Uuid, AppError>> {
        Box::pin(async move { Ok(self.pending_account(email, password, client).await?) })
    }

    fn reopen(&self, user: Uuid, client: ClientInfo) -> BoxFuture<'_, Result<Value, AppError>> {
        Box::pin(async move { Ok(self.reopen_account(user, client).await?) })
    }

    fn contact(&self, user: Uuid) -> BoxFuture<'_, Result<Option<Contact>, DbError>> {
        Box::pin(async move {
            let found = self
                .db
                .run(move |conn| store::find_user(conn, user).map_err(DbError::from))
                .await?;
            Ok(found.map(|u| Contact {
                email: u.email,
                display_name: u.display_name,
            }))
        })
    }

    fn free_tier(
        &self,
        after: Option<Uuid>,
        limit: i64,
    ) -> BoxFuture<'_, Result<Vec<Uuid>, DbError>> {
        // Billing knows the tiers: accounts are read a page at a time and the paid ones
        // left out, until a page holds free ones or the accounts run out.
        Box::pin(async move {
            let mut after = after;
            loop {
                let page = self
                    .db
                    .run(move |conn| store::users_after(conn, after, limit).map_err(DbError::from))
                    .await?;
                let Some(last) = page.last().copied() else {
                    return Ok(Vec::new());
                };
                let standings = self.subscriptions.standings(page.clone()).await?;
                let free: Vec<Uuid> = page
                    .into_iter()
                    .filter(|id| standings.get(id).is_none_or(|s| s.tier == "free"))
                    .collect();
                if !free.is_empty() {
                    return Ok(free);
                }
                after = Some(last);
            }
        })
    }

    fn overdue(&self, limit: i64) -> BoxFuture<'_, Result<Vec<DueErasure>, DbError>> {
        Box::pin(async move {
            self.db
                .run(move |conn| store::overdue_deletions(conn, limit).map_err(DbError::from))
                .await
        })
    }
}
