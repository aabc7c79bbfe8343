//! Writing and reading `identity.audit_log`.

use diesel::PgConnection;
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::store::{self, AuditRow};
use super::{AuditEntry, AuditLog};
use crate::platform::db::{Db, DbError};

#[derive(Clone)]
pub struct Audit {
    db: Db,
}

pub(super) fn row(entry: AuditEntry) -> AuditRow {
    AuditRow {
        id: Uuid::now_v7(),
        occurred_at: chrono::Utc::now(),
        actor_id: entry.actor_id,
        subject_id: entry.subject_id,
        action: entry.action,
        resource_type: entry.resource_type,
        resource_id: entry.resource_id,
        old_value: entry.old_value,
        new_value: entry.new_value,
        ip: entry.ip,
        user_agent: entry.user_agent,
        outcome: entry.outcome.as_str().to_owned(),
    }
}

/// Records inside the caller's transaction, so the record exists exactly when the action does.
pub fn record_in(conn: &mut PgConnection, entry: AuditEntry) -> diesel::QueryResult<()> {
    store::insert_audit(conn, &row(entry)).map(|_| ())
}

impl Audit {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn list(
        &self,
        subject: Option<Uuid>,
        action: Option<String>,
        page: i64,
        size: i64,
    ) -> Result<(Vec<AuditRow>, i64), DbError> {
        self.db
            .run(move |conn| {
                store::list_audit(conn, subject, action.as_deref(), page * size, size)
                    .map_err(DbError::from)
            })
            .await
    }
}

impl AuditLog for Audit {
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), DbError>> {
        Box::pin(async move {
            self.db
                .run(move |conn| record_in(conn, entry).map_err(DbError::from))
                .await
        })
    }
}
