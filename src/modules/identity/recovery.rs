//! Proving control of the address and recovering the account: email verification, the
//! password change, and the forgot/reset flow.

use std::time::Duration;

use chrono::Utc;
use diesel::PgConnection;
use serde_json::json;
use uuid::Uuid;

use super::audit;
use super::rules::normalize_email;
use super::service::{IdentityError, Service};
use super::store::{self, UserRow};
use super::{AuditEntry, AuditLog, Outcome, emails, password, secret};
use crate::platform::http::ClientInfo;
use crate::platform::jobs::{self, NewJob};
use crate::platform::mail;

const VERIFY_EMAIL: &str = "verify_email";
const RESET_PASSWORD: &str = "reset_password";
const VERIFY_TTL: Duration = Duration::from_secs(24 * 3600);
const RESET_TTL: Duration = Duration::from_secs(3600);
pub(super) const RESET_REQUEST_JOB: &str = "identity.password_reset_requested";

impl Service {
    pub(super) fn send_verification(
        &self,
        conn: &mut PgConnection,
        user: &UserRow,
    ) -> diesel::QueryResult<()> {
        let (token, hash) = secret::generate();
        store::insert_email_token(conn, &hash, user.id, VERIFY_EMAIL, Utc::now() + VERIFY_TTL)?;
        let email = emails::verify_address(
            &user.email,
            &user.display_name,
            &self.settings.server.public_url,
            &token,
        );
        jobs::enqueue(conn, &mail::send_job(&email))?;
        Ok(())
    }

    /// Changes the password (the current one is required) and ends every other session.
    pub async fn change_password(
        &self,
        user_id: Uuid,
        session_id: Uuid,
        current: String,
        new: String,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
        if let Some(problem) = password::policy_violation(&new) {
            return Err(IdentityError::field("newPassword", problem));
        }
        let user = self.user(user_id).await?;
        if !self
            .check_password(&user.email, user.password_hash, current)
            .await?
        {
            self.audit
                .record(
                    AuditEntry::new("password.change", Outcome::Failure)
                        .by_self(user_id)
                        .client(&client),
                )
                .await?;
            return Err(IdentityError::field("currentPassword", "is not correct"));
        }
        let hash = password::hash_blocking(new).await?;
        let revoked = self
            .db
            .transaction(move |conn| {
                store::set_password(conn, user_id, &hash)?;
                let revoked = store::revoke_user_sessions(
                    conn,
                    user_id,
                    Some(session_id),
                    "password_changed",
                )?;
                audit::record_in(
                    conn,
                    AuditEntry::new("password.change", Outcome::Success)
                        .by_self(user_id)
                        .change(None, Some(json!({ "sessionsEnded": revoked.len() })))
                        .client(&client),
                )?;
                Ok::<_, IdentityError>(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        Ok(())
    }

    /// Always the same answer, and the same work on the request path, whether or not the
    /// account exists: the lookup happens in a job.
    pub async fn forgot_password(&self, email: &str) -> Result<(), IdentityError> {
        let email = normalize_email(email).map_err(|p| IdentityError::field("email", p))?;
        self.limit(
            format!("forgot:{email}"),
            self.settings.ratelimit.forgot_password_per_hour,
            Duration::from_secs(3600),
        )
        .await?;
        let job = NewJob::new(RESET_REQUEST_JOB, json!({ "email": email })).max_attempts(5);
        self.db
            .run(move |conn| jobs::enqueue(conn, &job).map_err(IdentityError::from))
            .await?;
        Ok(())
    }

    /// The job behind [`Service::forgot_password`]: a reset token and its email, together.
    pub(super) async fn send_reset(&self, email: String) -> Result<(), IdentityError> {
        let public_url = self.settings.server.public_url.clone();
        self.db
            .transaction(move |conn| {
                let Some(user) = store::find_user_by_email(conn, &email)? else {
                    return Ok(());
                };
                if user.disabled_at.is_some() {
                    return Ok(());
                }
                store::expire_email_tokens(conn, user.id, RESET_PASSWORD)?;
                let (token, hash) = secret::generate();
                store::insert_email_token(
                    conn,
                    &hash,
                    user.id,
                    RESET_PASSWORD,
                    Utc::now() + RESET_TTL,
                )?;
                let message =
                    emails::reset_password(&user.email, &user.display_name, &public_url, &token);
                jobs::enqueue(conn, &mail::send_job(&message))?;
                audit::record_in(
                    conn,
                    AuditEntry::new("password.reset_requested", Outcome::Success).subject(user.id),
                )?;
                Ok::<_, IdentityError>(())
            })
            .await
    }

    /// Sets a new password from a reset link; ends every session.
    pub async fn reset_password(
        &self,
        token: &str,
        new: String,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
        if let Some(problem) = password::policy_violation(&new) {
            return Err(IdentityError::field("password", problem));
        }
        let hash = password::hash_blocking(new).await?;
        let token_hash = secret::digest(token);
        let revoked = self
            .db
            .transaction(move |conn| {
                let Some(user_id) = store::consume_email_token(conn, &token_hash, RESET_PASSWORD)?
                else {
                    return Err(IdentityError::field("token", "is invalid, used or expired"));
                };
                store::set_password(conn, user_id, &hash)?;
                // The link arrived by email: the address is proven.
                store::set_email_verified(conn, user_id)?;
                let revoked = store::revoke_user_sessions(conn, user_id, None, "password_reset")?;
                audit::record_in(
                    conn,
                    AuditEntry::new("password.reset", Outcome::Success)
                        .by_self(user_id)
                        .change(None, Some(json!({ "sessionsEnded": revoked.len() })))
                        .client(&client),
                )?;
                Ok(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        Ok(())
    }

    pub async fn verify_email(&self, token: &str, client: ClientInfo) -> Result<(), IdentityError> {
        let token_hash = secret::digest(token);
        self.db
            .transaction(move |conn| {
                let Some(user_id) = store::consume_email_token(conn, &token_hash, VERIFY_EMAIL)?
                else {
                    return Err(IdentityError::field("token", "is invalid, used or expired"));
                };
                store::set_email_verified(conn, user_id)?;
                audit::record_in(
                    conn,
                    AuditEntry::new("email.verified", Outcome::Success)
                        .by_self(user_id)
                        .client(&client),
                )?;
                Ok(())
            })
            .await
    }
}
