//! The one way to reach PostgreSQL: an r2d2 pool of diesel connections behind a gateway that
//! runs each unit of work on the blocking thread pool.
//!
//! - The connection is taken from the pool *inside* the blocking closure, so an async worker
//!   never waits on the pool.
//! - A semaphore sized to the pool makes extra requests queue in async land instead of
//!   piling up blocking threads that would each wait for a connection. The connect timeout
//!   bounds the whole wait, queue and connection together: while PostgreSQL is away a
//!   request is answered 503 within it, however many others wait too.
//! - Once a connection could not be had (the database is down, not merely busy: the semaphore
//!   leaves every caller a connection to take or to open), callers wait at most
//!   [`WAIT_WHILE_DOWN`] until one is had again. During an outage requests get their 503 in a
//!   fraction of the timeout, and one that meets the outage in two calls does not wait twice;
//!   the pool keeps opening connections in the background, so the first caller after the
//!   database returns finds one.
//! - A connection is tested (`SELECT 1`) on checkout when it sat idle for more than
//!   [`TRUST_RECENT_FOR`] or when the last work on it failed, so after a PostgreSQL restart
//!   broken connections are replaced and service resumes by itself. A connection that came
//!   back healthy a moment ago is handed out as is: under load that saves a round trip on
//!   every query (the test used to double the cost of a primary-key read).
//! - The caller's tracing span is carried into the blocking thread.
//!
//! The hottest single-statement reads skip the blocking pool: [`Db::read`] runs them on a
//! pipelined connection owned by the calling thread (see [`pipeline`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::r2d2::{ConnectionManager, ManageConnection, Pool, PoolError};
use diesel::{PgConnection, RunQueryDsl};
use tokio::sync::Semaphore;

use crate::config::DatabaseSettings;

mod joint;
mod pipeline;

pub use joint::{Columns, JointRead, RowRead};

pub use pipeline::APPLICATION_NAME as PIPELINED_READS;

pub use tokio_postgres::Row;
pub use tokio_postgres::types::ToSql;

/// The longest wait for a connection while the last attempt to get one failed.
pub const WAIT_WHILE_DOWN: Duration = Duration::from_millis(200);

/// How long a connection that came back without error is trusted without a test.
pub const TRUST_RECENT_FOR: Duration = Duration::from_millis(250);

type PgPool = Pool<Manager>;

/// A pooled connection with what the pool knows of its health.
struct Pooled {
    conn: PgConnection,
    returned_at: Instant,
    /// The last work on it failed: test it before it is used again.
    suspect: bool,
}

/// diesel's connection manager, testing only connections that need it.
struct Manager(ConnectionManager<PgConnection>);

impl ManageConnection for Manager {
    type Connection = Pooled;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Pooled, Self::Error> {
        Ok(Pooled {
            conn: self.0.connect()?,
            returned_at: Instant::now(),
            suspect: false,
        })
    }

    fn is_valid(&self, pooled: &mut Pooled) -> Result<(), Self::Error> {
        if !pooled.suspect && pooled.returned_at.elapsed() < TRUST_RECENT_FOR {
            return Ok(());
        }
        self.0.is_valid(&mut pooled.conn)?;
        pooled.suspect = false;
        Ok(())
    }

    /// Called by r2d2 every time a connection comes back.
    fn has_broken(&self, pooled: &mut Pooled) -> bool {
        pooled.returned_at = Instant::now();
        self.0.has_broken(&mut pooled.conn)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No connection could be had (database down, pool exhausted past the timeout).
    #[error("database unavailable")]
    Unavailable(#[source] PoolError),
    #[error(transparent)]
    Query(#[from] diesel::result::Error),
    /// No connection came free within the connect timeout: every one was in use (or being
    /// tried against a database that does not answer).
    #[error("database unavailable: no connection came free in time")]
    Saturated,
    /// The blocking task panicked or was cancelled.
    #[error("database task failed")]
    TaskFailed,
    /// A pipelined connection could not be opened (`None`: the URL is not a connection
    /// string).
    #[error("database unavailable")]
    Unreachable(#[source] Option<tokio_postgres::Error>),
    /// A pipelined read failed, or its row could not be decoded.
    #[error("database read failed")]
    Read(#[source] tokio_postgres::Error),
    /// A pipelined read did not answer within the connect timeout.
    #[error("database unavailable: a read did not answer in time")]
    TimedOut,
}

impl DbError {
    /// True when the failure is about reaching the database, not about the query.
    pub fn is_unavailable(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            Self::Unavailable(_) | Self::Saturated => true,
            Self::Query(Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _)) => true,
            Self::Query(Error::DatabaseError(DatabaseErrorKind::UnableToSendCommand, _)) => true,
            Self::Query(Error::BrokenTransactionManager) => true,
            Self::Query(_) | Self::TaskFailed => false,
            Self::Unreachable(_) | Self::TimedOut => true,
            // The connection broke under the read (closed, or the socket failed); an error
            // PostgreSQL answered, or a column that would not decode, is the read's own.
            Self::Read(error) => {
                error.is_closed()
                    || std::error::Error::source(error).is_some_and(|s| s.is::<std::io::Error>())
            }
        }
    }
}

/// Pool statistics for `/metrics`.
#[derive(Debug, Clone, Copy)]
pub struct PoolStats {
    pub in_use: u32,
    pub idle: u32,
    pub max: u32,
}

#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    permits: Arc<Semaphore>,
    connect_timeout: Duration,
    /// The last attempt to get a connection failed.
    down: Arc<AtomicBool>,
    pipeline: Arc<pipeline::Pipeline>,
}

impl Db {
    /// Builds the pool without connecting: the server can start (and report "not ready")
    /// while the database is still coming up.
    pub fn new(url: &str, settings: &DatabaseSettings) -> Self {
        let manager = Manager(ConnectionManager::<PgConnection>::new(url));
        let down = Arc::new(AtomicBool::new(false));
        let pool = Pool::builder()
            .max_size(settings.pool_size)
            .min_idle(Some(0))
            .connection_timeout(settings.connect_timeout())
            .idle_timeout(Some(Duration::from_secs(300)))
            .test_on_check_out(true)
            .build_unchecked(manager);
        Self {
            permits: Arc::new(Semaphore::new(settings.pool_size as usize)),
            pool,
            connect_timeout: settings.connect_timeout(),
            pipeline: Arc::new(pipeline::Pipeline::new(
                url,
                settings.connect_timeout(),
                down.clone(),
            )),
            down,
        }
    }

    /// Runs one read-only statement on the calling thread's pipelined connection and
    /// returns its row, if any, without a hop to the blocking pool. For the reads asked on
    /// nearly every request; `sql` must be one of a fixed few texts (values go in
    /// `params`), since each is kept prepared under it. It sees only committed data: a read
    /// that must see a transaction's own writes belongs in [`Db::run`].
    pub async fn read(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, DbError> {
        self.pipeline.query_opt(sql, params).await
    }

    /// One module's [`RowRead`] about `key`, alone ([`Db::read`]); decode it with
    /// [`Columns::whole`].
    pub async fn read_part(&self, part: RowRead, key: uuid::Uuid) -> Result<Option<Row>, DbError> {
        self.read(part.sql, &[&key]).await
    }

    /// Several modules' [`RowRead`]s about `key` as one statement ([`Db::read`]); each part
    /// decodes its columns from [`JointRead::part`]. Always one row: a part whose row is
    /// missing reads as NULLs.
    pub async fn read_joint(
        &self,
        joint: &JointRead,
        key: uuid::Uuid,
    ) -> Result<Option<Row>, DbError> {
        self.read(joint.sql(), &[&key]).await
    }

    /// Runs `work` with a pooled connection on the blocking thread pool.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + Send + 'static,
    {
        let wait = if self.down.load(Ordering::Relaxed) {
            self.connect_timeout.min(WAIT_WHILE_DOWN)
        } else {
            self.connect_timeout
        };
        let deadline = tokio::time::Instant::now() + wait;
        let down = self.down.clone();
        let _permit = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| DbError::Saturated)?
            .map_err(|_| DbError::TaskFailed)?;
        let pool = self.pool.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            span.in_scope(|| {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let got = pool.get_timeout(left.max(Duration::from_millis(1)));
                down.store(got.is_err(), Ordering::Relaxed);
                let mut pooled = got.map_err(DbError::Unavailable)?;
                let result = work(&mut pooled.conn);
                pooled.suspect = result.is_err();
                result
            })
        })
        .await
        .map_err(|_| DbError::TaskFailed)?
    }

    /// Runs `work` inside a transaction (committed when it returns `Ok`).
    pub async fn transaction<T, E, F>(&self, work: F) -> Result<T, E>
    where
        F: FnOnce(&mut PgConnection) -> Result<T, E> + Send + 'static,
        T: Send + 'static,
        E: From<DbError> + From<diesel::result::Error> + Send + 'static,
    {
        use diesel::Connection;
        self.run(move |conn| conn.transaction(work)).await
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.pool.state();
        PoolStats {
            in_use: state.connections - state.idle_connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }
}

/// A raw SQL statement (`diesel::sql_query` with its binds) kept prepared on each
/// connection, keyed by its text.
///
/// diesel never caches `sql_query` statements, since it cannot know whether their text was
/// built from values, so PostgreSQL parses and plans them on every call: for the recursive
/// branch walks and the statement that starts a reply, planning costs more than running
/// (0.85 ms against 0.3 ms, measured with `EXPLAIN ANALYZE`). Wrap only a statement whose
/// text is the same on every call (values go in binds), or the cache grows without bound.
///
/// The same holds for diesel's `UPDATE` and upsert statements, which it never caches either.
///
/// This overrides `QueryFragment::is_safe_to_cache_prepared`, a method diesel documents as
/// hidden; with the version pinned in `Cargo.lock` it is what diesel's statement cache asks.
/// Only the reading calls (`load`, `get_result`, `get_results`, `first`) see the override.
/// `execute` hands the statement on by reference, and diesel's `QueryFragment for &T` does
/// not forward the method, so a wrapped statement run with `execute` is still parsed on
/// every call (PostgreSQL's statement log shows it). A statement that needs to stay
/// prepared and has nothing to return gets a `RETURNING` column and is loaded.
#[derive(Debug, Clone, Copy)]
pub struct Prepared<Q>(pub Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Prepared<Q> {
    fn walk_ast<'b>(&'b self, pass: AstPass<'_, 'b, Pg>) -> diesel::QueryResult<()> {
        self.0.walk_ast(pass)
    }

    fn is_safe_to_cache_prepared(&self, _: &Pg) -> diesel::QueryResult<bool> {
        Ok(true)
    }
}

impl<Q> QueryId for Prepared<Q> {
    type QueryId = ();
    // No type identifies the text: the cache keys it by the SQL itself.
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl<Q: Query> Query for Prepared<Q> {
    type SqlType = Q::SqlType;
}

impl<Q, Conn> RunQueryDsl<Conn> for Prepared<Q> {}

/// Whether `value` holds U+0000 in a string or a key: PostgreSQL's `text` and `jsonb` cannot
/// store it, so such input is refused (or cleaned) before it reaches a query.
pub fn holds_nul(value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(object) => object
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// `value` with every U+0000 removed from its strings and keys (for files from elsewhere,
/// such as imported cards, where refusing would only frustrate).
pub fn strip_nul(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::String(s) if s.contains('\0') => Value::String(s.replace('\0', "")),
        Value::Array(items) => Value::Array(items.into_iter().map(strip_nul).collect()),
        Value::Object(object) => Value::Object(
            object
                .into_iter()
                .map(|(key, value)| (key.replace('\0', ""), strip_nul(value)))
                .collect(),
        ),
        other => other,
    }
}

/// A `LIKE`/`ILIKE` pattern that finds `text` literally anywhere: `%`, `_` and `\` in it
/// are escaped (PostgreSQL's default escape character is the backslash).
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}
