//! Privacy's own share of a person's data ([`PersonalData`]): consents and their history,
//! and the exports they asked for (rows and archives). The erasure's own record is not
//! part of it: the erasure clears its marker itself, last.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

use super::store;
use crate::platform::db::{Db, DbError};
use crate::platform::personal::{Archive, Coverage, PersonalData};
use crate::platform::storage::Storage;

pub struct Own {
    pub db: Db,
    pub storage: Storage,
}

impl PersonalData for Own {
    fn name(&self) -> &'static str {
        "privacy"
    }

    fn coverage(&self) -> Coverage {
        Coverage {
            tables: &[
                "privacy.consents",
                "privacy.consent_events",
                "privacy.exports",
                "privacy.erasures",
                // The erasure ledger keeps an erased account's bare id, by design: it is how
                // a restore of an older backup erases the person again (V14's comment).
                "privacy_ledger.erased_accounts",
            ],
            prefixes: &["exports/{user}/"],
        }
    }

    /// `consents.json` (the current answers and every change) and `exports.json`.
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let (current, history, exports) = self
                .db
                .run(move |conn| {
                    Ok::<_, DbError>((
                        store::consents_of(conn, user)?,
                        store::consent_history(conn, user)?,
                        store::exports_of(conn, user)?,
                    ))
                })
                .await?;
            let current: Vec<Value> = current
                .into_iter()
                .map(|c| json!({ "purpose": c.purpose, "granted": c.granted, "changedAt": c.changed_at }))
                .collect();
            let history: Vec<Value> = history
                .into_iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "purpose": e.purpose,
                        "granted": e.granted,
                        "at": e.occurred_at,
                        "ip": e.ip,
                        "userAgent": e.user_agent,
                    })
                })
                .collect();
            archive
                .json("consents.json", json!({ "current": current, "history": history }))
                .await?;
            let exports: Vec<Value> = exports
                .into_iter()
                .map(|e| {
                    json!({
                        "id": e.id,
                        "status": e.state,
                        "createdAt": e.created_at,
                        "completedAt": e.completed_at,
                        "expiresAt": e.expires_at,
                    })
                })
                .collect();
            archive.json("exports.json", Value::Array(exports)).await
        }
        .boxed()
    }

    fn erase(&self, user: Uuid, _pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            self.storage
                .delete_prefix(&format!("exports/{user}"))
                .await?;
            self.db
                .transaction(move |conn| {
                    store::delete_consents(conn, user)?;
                    store::delete_exports(conn, user)?;
                    Ok::<_, DbError>(())
                })
                .await?;
            Ok(())
        }
        .boxed()
    }
}
