//! Changes to an account: the profile, and role and tier by an operator.

use serde_json::{Value, json};
use uuid::Uuid;

use super::audit;
use super::rules::normalize_email;
use super::service::{IdentityError, Service};
use super::store::{self, ProfileChanges, UserRow};
use super::{AuditEntry, Outcome};
use crate::platform::http::{AppError, ClientInfo};

impl Service {
    /// Whether media `id` may be `user_id`'s avatar: an image they uploaded.
    pub async fn avatar_usable(&self, user_id: Uuid, id: Uuid) -> Result<bool, AppError> {
        self.media.usable(user_id, id).await
    }

    /// The bytes the user's media take, and the quota of their tier.
    pub async fn storage(&self, user_id: Uuid, tier: &str) -> Result<(u64, Option<u64>), AppError> {
        self.media.storage(user_id, tier).await
    }

    pub async fn update_profile(
        &self,
        user_id: Uuid,
        changes: ProfileChanges,
        client: ClientInfo,
    ) -> Result<UserRow, IdentityError> {
        self.db
            .transaction(move |conn| {
                let before =
                    store::find_user(conn, user_id)?.ok_or(IdentityError::UnknownAccount)?;
                let after = store::update_profile(conn, user_id, &changes)?;
                let (old, new) = profile_diff(&before, &after);
                if !new.is_empty() {
                    audit::record_in(
                        conn,
                        AuditEntry::new("profile.update", Outcome::Success)
                            .by_self(user_id)
                            .change(Some(Value::Object(old)), Some(Value::Object(new)))
                            .client(&client),
                    )?;
                }
                Ok(after)
            })
            .await
    }

    /// Sets role and tier by email. A role change ends the account's sessions so no token
    /// keeps a role it no longer has.
    pub async fn set_user(
        &self,
        actor: Option<Uuid>,
        email: &str,
        role: Option<&str>,
        tier: Option<&str>,
        client: &ClientInfo,
    ) -> Result<(), IdentityError> {
        let email = normalize_email(email).map_err(|p| IdentityError::field("email", p))?;
        if let Some(role) = role
            && !matches!(role, "user" | "moderator" | "admin")
        {
            return Err(IdentityError::field(
                "role",
                "must be user, moderator or admin",
            ));
        }
        if let Some(tier) = tier
            && !matches!(tier, "free" | "premium" | "enterprise")
        {
            return Err(IdentityError::field(
                "tier",
                "must be free, premium or enterprise",
            ));
        }
        let (role, tier, client) = (
            role.map(str::to_owned),
            tier.map(str::to_owned),
            client.clone(),
        );
        let revoked = self
            .db
            .transaction(move |conn| {
                let user = store::find_user_by_email(conn, &email)?
                    .ok_or(IdentityError::UnknownAccount)?;
                let new_role = role.unwrap_or_else(|| user.role.clone());
                let new_tier = tier.unwrap_or_else(|| user.tier.clone());
                store::set_role_and_tier(conn, user.id, &new_role, &new_tier)?;
                let mut revoked = Vec::new();
                for (action, old, new) in [
                    ("user.role_change", &user.role, &new_role),
                    ("user.tier_change", &user.tier, &new_tier),
                ] {
                    if old == new {
                        continue;
                    }
                    let mut entry = AuditEntry::new(action, Outcome::Success)
                        .subject(user.id)
                        .change(Some(json!(old)), Some(json!(new)))
                        .client(&client);
                    if let Some(actor) = actor {
                        entry = entry.actor(actor);
                    }
                    audit::record_in(conn, entry)?;
                    if action == "user.role_change" {
                        revoked = store::revoke_user_sessions(conn, user.id, None, "role_changed")?;
                    }
                }
                Ok::<_, IdentityError>(revoked)
            })
            .await?;
        self.sessions.revoked(&revoked).await;
        Ok(())
    }
}

/// The changed profile fields, before and after.
fn profile_diff(
    before: &UserRow,
    after: &UserRow,
) -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
    let mut old = serde_json::Map::new();
    let mut new = serde_json::Map::new();
    let pairs = [
        (
            "displayName",
            json!(before.display_name),
            json!(after.display_name),
        ),
        ("bio", json!(before.bio), json!(after.bio)),
        (
            "avatarMediaId",
            json!(before.avatar_media_id),
            json!(after.avatar_media_id),
        ),
        (
            "preferences",
            before.preferences.clone(),
            after.preferences.clone(),
        ),
    ];
    for (name, was, is) in pairs {
        if was != is {
            old.insert(name.to_owned(), was);
            new.insert(name.to_owned(), is);
        }
    }
    (old, new)
}
