//! The rules of privacy: consents, the two exports, closing and restoring an account, and
//! the jobs that write archives, erase accounts and apply retention.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use diesel::RunQueryDsl;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutMultipartOptions, WriteMultipart};
use serde_json::{Value, json};
use uuid::Uuid;

use super::archive::{JsonExport, TooLarge, ZipExport};
use super::store::{self, ErasureRow, ExportRow};
use crate::config::PrivacySettings;
use crate::modules::identity::Accounts;
use crate::platform::db::{Db, DbError};
use crate::platform::http::{AppError, ClientInfo, ErrorCode};
use crate::platform::jobs::{self, NewJob};
use crate::platform::mail::{self, Email};
use crate::platform::personal::{PersonalData, Retention};
use crate::platform::storage::Storage;

pub const EXPORT_JOB: &str = "privacy.export";
pub const EXPIRE_EXPORT_JOB: &str = "privacy.export_expire";
pub const ERASE_JOB: &str = "privacy.erase";
pub const RETENTION_JOB: &str = "privacy.retention";
/// Attempts of an export before it is reported failed.
pub const EXPORT_ATTEMPTS: i32 = 5;
/// Users handed to a retention rule at a time.
const RETENTION_BATCH: i64 = 500;
/// Exports listed by `GET /users/data-exports`.
const RECENT_EXPORTS: i64 = 20;

/// The consent purposes, in the order the API lists them.
pub const PURPOSES: [&str; 3] = ["marketing", "analytics", "tracking"];

#[derive(Clone)]
pub struct Service {
    pub(super) db: Db,
    pub(super) storage: Storage,
    pub(super) settings: PrivacySettings,
    public_url: String,
    accounts: Arc<dyn Accounts>,
    /// Every module's share (privacy's own first, identity's last), in erasure order.
    shares: Arc<Vec<Arc<dyn PersonalData>>>,
    retention: Arc<Vec<Arc<dyn Retention>>>,
}

/// Where an export's archive is kept.
pub fn export_key(user: Uuid, export: Uuid) -> String {
    format!("exports/{user}/{export}.zip")
}

pub fn export_file_name(row: &ExportRow) -> String {
    format!("companion-export-{}.zip", row.created_at.format("%Y-%m-%d"))
}

impl Service {
    pub fn new(
        db: Db,
        storage: Storage,
        settings: PrivacySettings,
        public_url: String,
        accounts: Arc<dyn Accounts>,
        shares: Vec<Arc<dyn PersonalData>>,
        retention: Vec<Arc<dyn Retention>>,
    ) -> Self {
        Self {
            db,
            storage,
            settings,
            public_url,
            accounts,
            shares: Arc::new(shares),
            retention: Arc::new(retention),
        }
    }

    pub fn shares(&self) -> Vec<Arc<dyn PersonalData>> {
        self.shares.iter().cloned().collect()
    }

    // ---- consents

    pub async fn consents(&self, user: Uuid) -> Result<Value, AppError> {
        let (current, history) = self
            .db
            .run(move |conn| {
                let current = store::consents_of(conn, user)?;
                let history = store::consent_history(conn, user)?;
                Ok::<_, DbError>((current, history))
            })
            .await?;
        let mut answer = serde_json::Map::new();
        let mut changed = serde_json::Map::new();
        for purpose in PURPOSES {
            let row = current.iter().find(|c| c.purpose == purpose);
            answer.insert(purpose.into(), json!(row.is_some_and(|c| c.granted)));
            changed.insert(purpose.into(), json!(row.map(|c| c.changed_at)));
        }
        answer.insert("changedAt".into(), Value::Object(changed));
        let history: Vec<Value> = history
            .into_iter()
            .map(|e| json!({ "purpose": e.purpose, "granted": e.granted, "at": e.occurred_at }))
            .collect();
        answer.insert("history".into(), Value::Array(history));
        Ok(Value::Object(answer))
    }

    pub async fn set_consents(
        &self,
        user: Uuid,
        changes: Vec<(&'static str, bool)>,
        client: ClientInfo,
    ) -> Result<Value, AppError> {
        self.db
            .transaction(move |conn| {
                for (purpose, granted) in &changes {
                    store::set_consent(
                        conn,
                        user,
                        purpose,
                        *granted,
                        client.ip.as_deref(),
                        client.user_agent.as_deref(),
                    )?;
                }
                Ok::<_, DbError>(())
            })
            .await?;
        self.consents(user).await
    }

    // ---- exports

    /// Everything about the user as one JSON document: `{format, exportedAt, userId,
    /// files: {path: document}}`, the archive's files without the media bytes.
    pub async fn export_json(&self, user: Uuid) -> Result<Value, AppError> {
        let mut archive = JsonExport::new(self.settings.json_export_max_bytes);
        for share in self.shares.iter() {
            if let Err(error) = share.export(user, &mut archive).await {
                if error.downcast_ref::<TooLarge>().is_some() {
                    return Err(AppError::from_code(ErrorCode::ExportTooLarge).with_details(
                        json!({
                            "archive": "POST /api/v1/users/data-export",
                            "limitBytes": self.settings.json_export_max_bytes,
                        }),
                    ));
                }
                return Err(AppError::internal(error));
            }
        }
        Ok(json!({
            "format": "companion-export/1",
            "exportedAt": Utc::now(),
            "userId": user,
            "files": archive.files,
        }))
    }

    /// Starts an archive; one per `export_every_hours` (a failed one does not count).
    pub async fn request_export(&self, user: Uuid) -> Result<ExportRow, AppError> {
        let every = chrono::Duration::hours(i64::from(self.settings.export_every_hours));
        let answer = self
            .db
            .transaction(move |conn| {
                diesel::sql_query(
                    "SELECT pg_advisory_xact_lock(hashtext('privacy.export:' || $1))",
                )
                .bind::<diesel::sql_types::Text, _>(user.to_string())
                .execute(conn)?;
                if let Some(latest) = store::latest_export_locked(conn, user)? {
                    let next = latest.created_at + every;
                    if latest.state != "failed" && next > Utc::now() {
                        let wait = (next - Utc::now()).num_seconds().max(1);
                        return Ok(Err(u64::try_from(wait).unwrap_or(1)));
                    }
                }
                let id = Uuid::now_v7();
                let row = store::insert_export(conn, id, user, &export_key(user, id))?;
                jobs::enqueue(
                    conn,
                    &NewJob::new(EXPORT_JOB, json!({ "exportId": id }))
                        .max_attempts(EXPORT_ATTEMPTS)
                        .dedup_key(format!("{EXPORT_JOB}:{id}")),
                )?;
                Ok::<_, DbError>(Ok(row))
            })
            .await?;
        answer.map_err(AppError::rate_limited)
    }

    /// The user's export `id` (404 for anyone else's).
    pub async fn export(&self, user: Uuid, id: Uuid) -> Result<ExportRow, AppError> {
        let row = self
            .db
            .run(move |conn| store::find_export(conn, id).map_err(DbError::from))
            .await?;
        row.filter(|r| r.user_id == user)
            .ok_or_else(AppError::not_found)
    }

    /// The caller's latest exports (what a profile page lists), newest first.
    pub async fn recent_exports(&self, user: Uuid) -> Result<Vec<ExportRow>, AppError> {
        Ok(self
            .db
            .run(move |conn| {
                store::recent_exports(conn, user, RECENT_EXPORTS).map_err(DbError::from)
            })
            .await?)
    }

    /// Writes the archive of export `id` (the job). Every attempt starts the archive over;
    /// a finished export is left alone, so a repeated job sends no second email.
    pub async fn run_export(&self, id: Uuid) -> anyhow::Result<()> {
        let Some(row) = self
            .db
            .run(move |conn| store::find_export(conn, id).map_err(DbError::from))
            .await?
        else {
            return Ok(());
        };
        if !matches!(row.state.as_str(), "queued" | "running") {
            return Ok(());
        }
        self.db
            .run(move |conn| store::start_export(conn, id).map_err(DbError::from))
            .await?;
        let key = Path::from(row.object_key.clone());
        let disposition = format!("attachment; filename=\"{}\"", export_file_name(&row));
        let options = PutMultipartOptions {
            attributes: self.storage.attributes("application/zip", &disposition),
            ..PutMultipartOptions::default()
        };
        let upload = self
            .storage
            .store()
            .put_multipart_opts(&key, options)
            .await?;
        let mut zip = ZipExport::new(WriteMultipart::new_with_chunk_size(
            upload,
            self.storage.part_size(),
        ));
        let written = async {
            for share in self.shares.iter() {
                share.export(row.user_id, &mut zip).await?;
            }
            let readme = readme(&zip.paths, row.user_id);
            zip.text("README.txt", &readme).await
        }
        .await;
        if let Err(error) = written {
            zip.abort().await;
            return Err(error);
        }
        let size = zip.finish().await?;
        let expires = Utc::now() + chrono::Duration::days(i64::from(self.settings.export_ttl_days));
        let contact = self.accounts.contact(row.user_id).await?;
        let email =
            contact.map(|c| ready_email(&c.email, &c.display_name, &self.public_url, expires));
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        self.db
            .transaction(move |conn| {
                if store::finish_export(conn, id, size, expires)? {
                    if let Some(email) = &email {
                        jobs::enqueue(conn, &mail::send_job(email))?;
                    }
                    jobs::enqueue(
                        conn,
                        &NewJob::new(EXPIRE_EXPORT_JOB, json!({ "exportId": id }))
                            .run_at(expires)
                            .dedup_key(format!("{EXPIRE_EXPORT_JOB}:{id}")),
                    )?;
                }
                Ok::<_, DbError>(())
            })
            .await?;
        tracing::info!(export = %id, bytes = size, "export archive written");
        Ok(())
    }

    /// The last attempt failed: the user sees `failed` (and may ask again at once).
    pub async fn export_failed(&self, id: Uuid, error: &anyhow::Error) -> Result<(), DbError> {
        tracing::error!(export = %id, %error, "an export failed for good");
        self.db
            .run(move |conn| {
                store::fail_export(conn, id, "the archive could not be written")
                    .map_err(DbError::from)
            })
            .await?;
        Ok(())
    }

    /// Deletes an export's archive once its time is up.
    pub async fn expire_export(&self, row: &ExportRow) -> anyhow::Result<()> {
        match self
            .storage
            .store()
            .delete(&Path::from(row.object_key.clone()))
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => return Err(error.into()),
        }
        let id = row.id;
        self.db
            .run(move |conn| store::mark_expired(conn, id).map_err(DbError::from))
            .await?;
        Ok(())
    }

    pub async fn expire_export_by_id(&self, id: Uuid) -> anyhow::Result<()> {
        let row = self
            .db
            .run(move |conn| store::find_export(conn, id).map_err(DbError::from))
            .await?;
        match row {
            Some(row)
                if row.state == "ready" && row.expires_at.is_some_and(|at| at <= Utc::now()) =>
            {
                self.expire_export(&row).await
            }
            _ => Ok(()),
        }
    }

    // ---- erasure

    /// Closes the account (password checked by identity) and schedules its erasure after
    /// the grace period; answers when it will happen.
    pub async fn delete_account(
        &self,
        user: Uuid,
        password: String,
        client: ClientInfo,
    ) -> Result<DateTime<Utc>, AppError> {
        let at = Utc::now() + chrono::Duration::days(i64::from(self.settings.deletion_grace_days));
        self.accounts.close(user, password, at, client).await?;
        let row = self.schedule(user, at).await?;
        Ok(row.scheduled_for)
    }

    /// Records the erasure and enqueues its job for `at` (both once, however often called).
    async fn schedule(&self, user: Uuid, at: DateTime<Utc>) -> Result<ErasureRow, DbError> {
        self.db
            .transaction(move |conn| {
                let row = store::schedule_erasure(conn, user, at)?;
                jobs::enqueue(conn, &erase_job(&row))?;
                Ok::<_, DbError>(row)
            })
            .await
    }

    /// Reopens a closed account with its credentials and calls its erasure off.
    pub async fn restore(
        &self,
        email: String,
        password: String,
        client: ClientInfo,
    ) -> Result<Value, AppError> {
        let user = self
            .accounts
            .pending(email, password, client.clone())
            .await?;
        let called_off = self
            .db
            .transaction(move |conn| match store::erasure_of_locked(conn, user)? {
                Some(row) if row.state == "scheduled" => {
                    store::cancel_erasure(conn, row.id)?;
                    Ok(true)
                }
                Some(_) => Ok(false),
                None => Ok::<_, DbError>(true),
            })
            .await?;
        if !called_off {
            return Err(AppError::conflict(
                "The erasure of this account has already started; it cannot be restored.",
            ));
        }
        self.accounts.reopen(user, client).await
    }

    /// Erases what every module keeps about the account of erasure `id` (the job). Safe to
    /// run again at any point: each step deletes what still exists, the pseudonym is the
    /// erasure's, and the marker goes last.
    pub async fn run_erasure(&self, id: Uuid) -> anyhow::Result<()> {
        let Some(row) = self
            .db
            .run(move |conn| {
                let row = store::find_erasure(conn, id)?;
                match row {
                    Some(row) if row.scheduled_for <= Utc::now() => {
                        store::start_erasure(conn, id).map_err(DbError::from)
                    }
                    _ => Ok(None),
                }
            })
            .await?
        else {
            return Ok(());
        };
        let Some(user) = row.user_id else {
            return Ok(());
        };
        for share in self.shares.iter() {
            let started = std::time::Instant::now();
            share.erase(user, row.pseudonym).await?;
            let name = share.name();
            let elapsed_ms = started.elapsed().as_millis() as u64;
            tracing::info!(erasure = %id, step = name, elapsed_ms, "erasure step done");
            self.db
                .run(move |conn| store::erasure_step_done(conn, id, name).map_err(DbError::from))
                .await?;
        }
        self.db
            .run(move |conn| store::finish_erasure(conn, id).map_err(DbError::from))
            .await?;
        tracing::info!(erasure = %id, "account erased");
        Ok(())
    }

    /// After a restore: erases again, at once, every account of the erasure ledger that the
    /// restored data brought back. Returns how many there were.
    pub async fn reapply_erasures(&self) -> anyhow::Result<usize> {
        let ledger = self
            .db
            .run(|conn| store::erased_accounts(conn).map_err(DbError::from))
            .await?;
        let mut erased = 0;
        for user in ledger {
            if self.accounts.contact(user).await?.is_none() {
                continue;
            }
            // A new erasure, or the one a restored backup held, due now.
            let row = self
                .db
                .transaction(move |conn| {
                    let row = store::schedule_erasure(conn, user, Utc::now())?;
                    store::bring_forward(conn, row.id)?;
                    Ok::<_, DbError>(row)
                })
                .await?;
            self.run_erasure(row.id).await?;
            tracing::info!(erasure = %row.id, "erased again after a restore");
            erased += 1;
        }
        Ok(erased)
    }

    // ---- retention

    /// The daily job: expired archives, erasures that are due (catch-up), old free-tier
    /// messages. Logs what it did and returns the counts.
    pub async fn retention_run(&self) -> anyhow::Result<Value> {
        let mut archives = 0u64;
        loop {
            let rows = self
                .db
                .run(|conn| store::expired_exports(conn, 100).map_err(DbError::from))
                .await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                self.expire_export(row).await?;
                archives += 1;
            }
        }

        let mut erasures = 0u64;
        for (user, due) in self.accounts.overdue(1000).await? {
            // An account closed without its erasure recorded (a crash between the two).
            self.schedule(user, due).await?;
        }
        let due = self
            .db
            .run(|conn| store::due_erasures(conn, 1000).map_err(DbError::from))
            .await?;
        for row in due {
            if self
                .db
                .run(move |conn| jobs::enqueue(conn, &erase_job(&row)).map_err(DbError::from))
                .await?
                .is_some()
            {
                erasures += 1;
            }
        }

        let mut messages = 0u64;
        if self.settings.message_retention_days > 0 {
            let before = Utc::now()
                - chrono::Duration::days(i64::from(self.settings.message_retention_days));
            let mut after = None;
            loop {
                let users = self.accounts.free_tier(after, RETENTION_BATCH).await?;
                let Some(last) = users.last() else { break };
                after = Some(*last);
                for rule in self.retention.iter() {
                    messages += rule.expire(&users, before).await?;
                }
            }
        }
        tracing::info!(
            expired_archives = archives,
            erasures_enqueued = erasures,
            messages_deleted = messages,
            "retention run"
        );
        Ok(
            json!({ "expiredArchives": archives, "erasuresEnqueued": erasures, "messagesDeleted": messages }),
        )
    }
}

fn erase_job(row: &ErasureRow) -> NewJob {
    NewJob::new(ERASE_JOB, json!({ "erasureId": row.id }))
        .run_at(row.scheduled_for)
        .max_attempts(100)
        .dedup_key(format!("{ERASE_JOB}:{}", row.id))
}

fn ready_email(to: &str, name: &str, public_url: &str, expires: DateTime<Utc>) -> Email {
    Email {
        to: to.to_owned(),
        subject: "Your Companion data export is ready".to_owned(),
        body: format!(
            "Hello {name},\n\n\
             The copy of your data you asked for is ready. Download it from your profile:\n\n\
             {public_url}/#/profile\n\n\
             It stays available until {} (UTC), then it is deleted. If you did not ask for \
             it, change your password.\n",
            expires.format("%Y-%m-%d %H:%M")
        ),
    }
}

/// The archive's `README.txt`: what each file holds.
fn readme(paths: &[String], user: Uuid) -> String {
    let described = [
        (
            "profile.json",
            "Your account: email, display name, bio, avatar, preferences, role, subscription tier, level and experience, and when the account was created and verified.",
        ),
        (
            "sessions.json",
            "Every login: when it started and was last used, the address and browser it came from, and how it ended.",
        ),
        (
            "audit-log.json",
            "The security events about your account (logins, password changes, profile changes, ...): when, what, the outcome, from which address; \"by\" says whether you, staff or the system acted.",
        ),
        (
            "consents.json",
            "Your answers for marketing, analytics and tracking, and every change with its time.",
        ),
        ("exports.json", "The exports of your data you asked for."),
        ("ratings.json", "The stars you gave to characters."),
        (
            "characters/",
            "Each character you created: <id>.json is its card (Character Card V3, which other apps import); <id>.png is the card as a PNG with its avatar, when it has one.",
        ),
        (
            "conversations/",
            "Each conversation: <id>.json holds the conversation and every message of every branch and regenerated reply (\"parentId\" links them into a tree), with times, status and the model that wrote replies.",
        ),
        (
            "media.json",
            "Every file you uploaded, as the API describes it; \"file\" names its copy in media/.",
        ),
        (
            "media/",
            "The files you uploaded, as we serve them (metadata such as EXIF removed from pictures).",
        ),
        (
            "billing.json",
            "Your subscription (plan, status, until when, the payment provider's ids), the replies and tokens of each month, and the payment provider's messages about your subscription.",
        ),
    ];
    let mut text = format!(
        "Companion: a copy of your data\n\
         ==============================\n\n\
         Account {user}, written {} (UTC).\n\
         Everything is JSON (UTF-8) except the media files. Times are RFC 3339 in UTC.\n\n\
         Files\n-----\n",
        Utc::now().format("%Y-%m-%d %H:%M")
    );
    for (name, what) in described {
        let count = paths
            .iter()
            .filter(|p| p.as_str() == name || (name.ends_with('/') && p.starts_with(name)))
            .count();
        if count > 0 {
            let suffix = if name.ends_with('/') {
                format!(" ({count} files)")
            } else {
                String::new()
            };
            text.push_str(&format!("{name}{suffix}\n    {what}\n\n"));
        }
    }
    text.push_str("README.txt\n    This file.\n");
    text
}
