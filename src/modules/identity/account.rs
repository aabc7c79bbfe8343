//! Changes to an account by its owner: the profile.

use serde_json::{Value, json};
use uuid::Uuid;

use super::audit;
use super::service::{IdentityError, Service};
use super::store::{self, ProfileChanges, UserRow};
use super::{AuditEntry, Outcome};
use crate::modules::billing::Standing;
use crate::platform::http::{AppError, ClientInfo};

/// What `GET /users/profile` shows.
pub struct Profile {
    pub user: UserRow,
    pub standing: Standing,
    /// The bytes the account's media take.
    pub used: u64,
    /// Its tier's storage quota (`None`: unlimited).
    pub quota: Option<u64>,
}

impl Service {
    /// Whether media `id` may be `user_id`'s avatar: an image they uploaded.
    pub async fn avatar_usable(&self, user_id: Uuid, id: Uuid) -> Result<bool, AppError> {
        self.media.usable(user_id, id).await
    }

    /// What the profile shows: the account, its subscription, and the bytes its media take
    /// against its tier's quota. Each module's read is its own, but the three are asked as
    /// one statement (`JointRead`): one answer from PostgreSQL instead of three.
    pub async fn profile(&self, user_id: Uuid) -> Result<Profile, AppError> {
        let read = &self.profile_read;
        let unknown = || AppError::from(IdentityError::UnknownAccount);
        let row = self
            .db
            .read_joint(read, user_id)
            .await?
            .ok_or_else(unknown)?;
        let user = UserRow::decode(read.part(&row, 0))?.ok_or_else(unknown)?;
        let standing = self.subscriptions.standing_from(read.part(&row, 1))?;
        let used = self.media.usage_from(read.part(&row, 2))?;
        let quota = self.media.quota(&standing.tier);
        Ok(Profile {
            user,
            standing,
            used,
            quota,
        })
    }

    pub async fn update_profile(
        &self,
        user_id: Uuid,
        changes: ProfileChanges,
        client: ClientInfo,
    ) -> Result<(), IdentityError> {
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
                Ok(())
            })
            .await
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
