//! Hot reads on pipelined connections: one asynchronous PostgreSQL connection per thread that
//! reads, shared by every request that thread serves.
//!
//! The blocking pool gives each query a connection of its own and a blocking thread: two
//! thread wake-ups per query, and PostgreSQL wakes one backend per query. For a read asked on
//! nearly every request (the profile, with its subscription and storage) that is most of the
//! request's cost. Here the thread that serves the request writes the statement on its own
//! connection and awaits the answer in place:
//! - every request on the same thread shares that connection, and statements sent while
//!   earlier ones run are queued behind them on the socket (tokio-postgres pipelines), so
//!   under load one backend answers a stream of statements without sleeping in between;
//! - statements a request sends together go out in one write, though PostgreSQL still
//!   answers each on its own (several modules' rows about one key are better joined into one
//!   statement: [`JointRead`](super::JointRead));
//! - each statement text is prepared once per connection and kept.
//!
//! Only single-statement reads that need no transaction belong here; writes, and reads that
//! must see a transaction's own changes, stay on [`Db::run`](super::Db::run).
//!
//! Failures: a connection that closed (PostgreSQL restarted, the network dropped) is replaced
//! on the next read; a connection that could not be opened, or a read that did not answer
//! within the connect timeout, is unavailable (`DbError::Unreachable` or `TimedOut`: 503),
//! and the connection is dropped so that the next read starts afresh. Like the migrations, these
//! connections do not use TLS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thread_local::ThreadLocal;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};

use super::{DbError, WAIT_WHILE_DOWN};

/// How these connections show in `pg_stat_activity` (unless the URL names one).
pub const APPLICATION_NAME: &str = "companion: pipelined reads";

pub(super) struct Pipeline {
    /// `None` when the database URL could not be read as a connection string: every read
    /// then fails as unavailable, as the pool does with the same URL.
    config: Option<tokio_postgres::Config>,
    connect_timeout: Duration,
    /// Shared with the pool: the last attempt to reach the database failed.
    down: Arc<AtomicBool>,
    slots: ThreadLocal<Slot>,
}

/// One thread's connection.
#[derive(Default)]
struct Slot {
    conn: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so that the requests arriving meanwhile wait for that one
    /// connection instead of each opening their own.
    connecting: tokio::sync::Mutex<()>,
}

struct Conn {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Pipeline {
    pub(super) fn new(url: &str, connect_timeout: Duration, down: Arc<AtomicBool>) -> Self {
        let config = url
            .parse::<tokio_postgres::Config>()
            .ok()
            .map(|mut config| {
                config.connect_timeout(connect_timeout);
                if config.get_application_name().is_none() {
                    config.application_name(APPLICATION_NAME);
                }
                config
            });
        Self {
            config,
            connect_timeout,
            down,
            slots: ThreadLocal::new(),
        }
    }

    /// Runs `sql` (one read-only statement; values go in `params`) and returns its row, if
    /// any. The text must be one of a fixed few: each is kept prepared under it.
    pub(super) async fn query_opt(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        let slot = self.slots.get_or_default();
        let wait = if self.down.load(Ordering::Relaxed) {
            self.connect_timeout.min(WAIT_WHILE_DOWN)
        } else {
            self.connect_timeout
        };
        let mut used = None;
        let read = async {
            let conn = self.connection(slot).await?;
            used = Some(conn.clone());
            let statement = conn.statement(sql).await?;
            conn.client
                .query_opt(&statement, params)
                .await
                .map_err(DbError::Read)
        };
        let result = match tokio::time::timeout(wait, read).await {
            Ok(result) => result,
            Err(_) => Err(DbError::TimedOut),
        };
        if let Err(error) = &result
            && error.is_unavailable()
        {
            // Whatever this connection was waiting for, the next read starts on a new one.
            if let Some(conn) = used {
                slot.forget(&conn);
            }
        }
        result
    }

    /// This thread's connection, opened when it has none or its last one closed.
    async fn connection(&self, slot: &Slot) -> Result<Arc<Conn>, DbError> {
        if let Some(conn) = slot.current() {
            return Ok(conn);
        }
        let _connecting = slot.connecting.lock().await;
        if let Some(conn) = slot.current() {
            return Ok(conn);
        }
        let Some(config) = &self.config else {
            self.down.store(true, Ordering::Relaxed);
            return Err(DbError::Unreachable(None));
        };
        let (client, connection) = match config.connect(NoTls).await {
            Ok(pair) => pair,
            Err(error) => {
                self.down.store(true, Ordering::Relaxed);
                return Err(DbError::Unreachable(Some(error)));
            }
        };
        self.down.store(false, Ordering::Relaxed);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "pipelined database connection closed");
            }
        });
        let conn = Arc::new(Conn {
            client,
            statements: Mutex::new(HashMap::new()),
        });
        if let Ok(mut current) = slot.conn.lock() {
            *current = Some(conn.clone());
        }
        Ok(conn)
    }
}

impl Slot {
    fn current(&self) -> Option<Arc<Conn>> {
        let current = self.conn.lock().ok()?;
        current
            .as_ref()
            .filter(|conn| !conn.client.is_closed())
            .cloned()
    }

    fn forget(&self, conn: &Arc<Conn>) {
        if let Ok(mut current) = self.conn.lock()
            && current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn))
        {
            *current = None;
        }
    }
}

impl Conn {
    /// `sql` prepared on this connection (the first use of a text prepares it).
    async fn statement(&self, sql: &str) -> Result<Statement, DbError> {
        let known = self
            .statements
            .lock()
            .ok()
            .and_then(|statements| statements.get(sql).cloned());
        if let Some(statement) = known {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await.map_err(DbError::Read)?;
        if let Ok(mut statements) = self.statements.lock() {
            statements.insert(sql.to_owned(), statement.clone());
        }
        Ok(statement)
    }
}
