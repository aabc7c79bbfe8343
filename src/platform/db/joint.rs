//! Several modules' rows about one key, read in one statement.
//!
//! A page such as the profile shows one row from each of several modules (the account, its
//! subscription, the storage its media take). Sent as separate statements on the pipelined
//! connection they share a round trip, but PostgreSQL still answers each on its own: a flush
//! and, under load, a wake-up of the server per statement, which measured as the larger part
//! of the profile's cost (`bench/RESULTS.md`, Identity). A [`JointRead`] asks them as one
//! statement instead, and each module still writes, and decodes, its own part:
//! - a module offers a [`RowRead`]: its own `SELECT` over its own tables, keyed by `$1` (a
//!   `uuid`), answering at most one row, with its column count;
//! - the owner of the page joins the parts (`LEFT JOIN LATERAL`, so a missing row is NULLs,
//!   not a missing answer) without reading their text;
//! - each module reads its columns back through [`Columns`], by its own positions.
//!
//! The same [`RowRead`] serves a read of that part alone ([`super::Db::read_part`]).

use tokio_postgres::Row;
use tokio_postgres::types::FromSql;

use super::DbError;

/// One module's read of at most one row about a key: `sql` takes the key as `$1` (a
/// `uuid`) and no other parameter, and answers `columns` columns.
#[derive(Debug, Clone, Copy)]
pub struct RowRead {
    pub sql: &'static str,
    pub columns: usize,
}

/// Parts of several modules about the same key, joined into one statement (built once,
/// then run with [`super::Db::read_joint`]).
#[derive(Debug, Clone)]
pub struct JointRead {
    sql: String,
    offsets: Vec<usize>,
}

impl JointRead {
    pub fn new(parts: &[RowRead]) -> Self {
        let mut select = Vec::new();
        let mut joins = String::new();
        let mut offsets = Vec::new();
        let mut offset = 0;
        for (index, part) in parts.iter().enumerate() {
            select.push(format!("p{index}.*"));
            joins.push_str(&format!(
                " LEFT JOIN LATERAL ({}) AS p{index} ON true",
                part.sql
            ));
            offsets.push(offset);
            offset += part.columns;
        }
        Self {
            sql: format!(
                "SELECT {} FROM (VALUES (1)) AS joint(one){joins}",
                select.join(", ")
            ),
            offsets,
        }
    }

    pub(super) fn sql(&self) -> &str {
        &self.sql
    }

    /// The columns of part `index` (in the order given to [`JointRead::new`]) of `row`.
    pub fn part<'a>(&self, row: &'a Row, index: usize) -> Columns<'a> {
        Columns {
            row,
            offset: self.offsets.get(index).copied().unwrap_or(usize::MAX),
        }
    }
}

/// One part's columns of a row, read by the part's own positions.
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    row: &'a Row,
    offset: usize,
}

impl<'a> Columns<'a> {
    /// The whole row (a part read alone).
    pub fn whole(row: &'a Row) -> Self {
        Self { row, offset: 0 }
    }

    /// The part's column `index`, decoded.
    pub fn get<T: FromSql<'a>>(&self, index: usize) -> Result<T, DbError> {
        self.row
            .try_get(self.offset.saturating_add(index))
            .map_err(DbError::Read)
    }
}
