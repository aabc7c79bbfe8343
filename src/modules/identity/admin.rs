//! What operators do to accounts: list and search them, change a role, grant a tier
//! (billing keeps it), disable an account. Every change is audited with its old and new
//! values; disabling ends the account's sessions and live connections at once.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::deletion::SESSIONS_ENDED_EVENT;
use super::rules::normalize_email;
use super::service::{IdentityError, Service};
use super::store::{self, UserRow};
use super::{AuditEntry, AuditLog, Outcome, audit};
use crate::modules::billing::{Grant, Standing};
use crate::platform::http::{ClientInfo, Paging};

pub const ROLES: [&str; 3] = ["user", "moderator", "admin"];
pub const TIERS: [&str; 3] = ["free", "premium", "enterprise"];

/// What an operator changes; `None` leaves it.
#[derive(Debug, Clone, Default)]
pub struct AdminChange {
    pub role: Option<String>,
    pub tier: Option<Grant>,
    pub disabled: Option<bool>,
}

/// An account as operators see it.
pub struct AdminUser {
    pub row: UserRow,
    pub subscription: Standing,
}

impl AdminUser {
    /// `active`, `disabled` (by an operator) or `pending_deletion` (its owner asked).
    pub fn status(&self) -> &'static str {
        match (&self.row.deletion_scheduled_for, &self.row.disabled_at) {
            (Some(_), _) => "pending_deletion",
            (None, Some(_)) => "disabled",
            (None, None) => "active",
        }
    }
}

/// Who changes which account from where: each audit entry of one change.
#[derive(Clone)]
struct Entry {
    actor: Option<Uuid>,
    user: Uuid,
    client: ClientInfo,
}

impl Entry {
    fn of(&self, action: &str, old: serde_json::Value, new: serde_json::Value) -> AuditEntry {
        let entry = AuditEntry::new(action, Outcome::Success)
            .subject(self.user)
            .resource("user", self.user)
            .change(Some(old), Some(new))
            .client(&self.client);
        match self.actor {
            Some(actor) => entry.actor(actor),
            None => entry,
        }
    }
}

impl Service {
    /// A page of accounts, newest first, with their subscriptions.
    pub async fn list_users(
        &self,
        search: Option<String>,
        paging: Paging,
    ) -> Result<(Vec<AdminUser>, i64), IdentityError> {
        let (rows, total) = self
            .db
            .run(move |conn| {
                store::list_users(conn, search.as_deref(), paging).map_err(IdentityError::from)
            })
            .await?;
        let mut standings = self
            .subscriptions
            .standings(rows.iter().map(|r| r.id).collect())
            .await?;
        let users = rows
            .into_iter()
            .map(|row| AdminUser {
                subscription: standings.remove(&row.id).unwrap_or_else(Standing::free),
                row,
            })
            .collect();
        Ok((users, total))
    }

    /// Applies an operator's change to `user_id` (`actor` is `None` for the CLI).
    pub async fn administer(
        &self,
        actor: Option<Uuid>,
        user_id: Uuid,
        change: AdminChange,
        client: &ClientInfo,
    ) -> Result<AdminUser, IdentityError> {
        if let Some(role) = &change.role
            && !ROLES.contains(&role.as_str())
        {
            return Err(IdentityError::field(
                "role",
                "must be user, moderator or admin",
            ));
        }
        if let Some(grant) = &change.tier
            && !TIERS.contains(&grant.tier.as_str())
        {
            return Err(IdentityError::field(
                "tier",
                "must be free, premium or enterprise",
            ));
        }
        if actor == Some(user_id)
            && (change.disabled == Some(true)
                || change.role.as_deref().is_some_and(|r| r != "admin"))
        {
            return Err(IdentityError::Conflict(
                "Operators cannot disable or demote their own account; ask another admin.",
            ));
        }
        let (role, disabled) = (change.role.clone(), change.disabled);
        let entry = Entry {
            actor,
            user: user_id,
            client: client.clone(),
        };
        let inner = entry.clone();
        let revoked = self
            .db
            .transaction(move |conn| {
                let user = store::find_user_for_update(conn, user_id)?
                    .ok_or(IdentityError::UnknownAccount)?;
                let mut revoked = Vec::new();
                if let Some(role) = role.filter(|r| *r != user.role) {
                    store::set_role(conn, user_id, &role)?;
                    audit::record_in(
                        conn,
                        inner.of("user.role_change", json!(user.role), json!(role)),
                    )?;
                    // No token keeps a role the account no longer has.
                    revoked.extend(store::revoke_user_sessions(
                        conn,
                        user_id,
                        None,
                        "role_changed",
                    )?);
                }
                if let Some(disabled) = disabled.filter(|d| *d != user.disabled_at.is_some()) {
                    if !disabled && user.deletion_scheduled_for.is_some() {
                        return Err(IdentityError::Conflict(
                            "This account waits for its erasure; only its owner can restore it.",
                        ));
                    }
                    revoked.extend(store::set_disabled(conn, user_id, disabled)?);
                    let action = if disabled {
                        "user.disable"
                    } else {
                        "user.enable"
                    };
                    audit::record_in(
                        conn,
                        inner.of(
                            action,
                            json!({ "disabled": !disabled }),
                            json!({ "disabled": disabled }),
                        ),
                    )?;
                }
                Ok::<_, IdentityError>(revoked)
            })
            .await?;
        if !revoked.is_empty() {
            self.sessions.revoked(&revoked).await;
            self.realtime.publish(user_id, SESSIONS_ENDED_EVENT).await;
        }
        if let Some(grant) = change.tier {
            let (before, after) = self.subscriptions.grant(user_id, grant).await?;
            if before != after {
                self.audit
                    .record(entry.of(
                        "user.tier_change",
                        serde_json::to_value(&before).unwrap_or_default(),
                        serde_json::to_value(&after).unwrap_or_default(),
                    ))
                    .await?;
            }
        }
        let row = self.user(user_id).await?;
        let subscription = self.subscriptions.standing(user_id).await?;
        Ok(AdminUser { row, subscription })
    }

    /// The `companion admin set-user` command: role and tier by email.
    pub async fn set_user(
        &self,
        email: &str,
        role: Option<&str>,
        tier: Option<&str>,
        valid_until: Option<DateTime<Utc>>,
    ) -> Result<(), IdentityError> {
        let email = normalize_email(email).map_err(|p| IdentityError::field("email", p))?;
        let user = store::read_user_by_email(&self.db, &email)
            .await?
            .ok_or(IdentityError::UnknownAccount)?;
        let change = AdminChange {
            role: role.map(str::to_owned),
            tier: tier.map(|tier| Grant {
                tier: tier.to_owned(),
                valid_until,
            }),
            disabled: None,
        };
        self.administer(None, user.id, change, &ClientInfo::default())
            .await?;
        Ok(())
    }

    /// Accounts in all, and those active (a session used) in the last 24 hours.
    pub async fn census(&self) -> Result<(i64, i64), IdentityError> {
        self.db
            .run(|conn| store::census(conn).map_err(IdentityError::from))
            .await
    }
}
