//! The one contract between the modules and the privacy module (GDPR articles 15, 17, 20):
//! each module that keeps something about a person implements [`PersonalData`] for its own
//! tables and objects, and `app.rs` hands the list to privacy. Privacy never reads another
//! module's tables, and no module depends on privacy.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use serde_json::Value;
use serde_json::value::RawValue;
use uuid::Uuid;

/// What a module's [`PersonalData`] answers for: its tables that hold data about users
/// (`schema.table`), and the object-store prefixes it keeps per user (`{user}` stands for
/// the user's id, e.g. `media/{user}/`). A test holds every table of the database that
/// refers to a user against the union of these.
#[derive(Debug, Clone, Copy)]
pub struct Coverage {
    pub tables: &'static [&'static str],
    pub prefixes: &'static [&'static str],
}

/// A file's bytes as they are read (from the object store), for an archive to copy.
pub type FileStream = BoxStream<'static, Result<Bytes, anyhow::Error>>;

/// The items of a long JSON array, read in batches as the archive writes them. Each item
/// comes serialized already ([`item`]): the module that reads the rows writes them, on the
/// task that read them, while the archive compresses the previous batch.
pub type ItemStream<'a> = BoxStream<'a, anyhow::Result<Box<RawValue>>>;

/// One item of an [`ItemStream`]: `value` serialized.
pub fn item(value: &impl serde::Serialize) -> anyhow::Result<Box<RawValue>> {
    Ok(serde_json::value::to_raw_value(value)?)
}

/// Where a module writes its part of someone's export. Paths are relative to the archive's
/// root (`profile.json`, `conversations/<id>.json`, `media/<id>.png`).
pub trait Archive: Send {
    /// A JSON document.
    fn json<'a>(&'a mut self, path: &'a str, value: Value) -> BoxFuture<'a, anyhow::Result<()>>;

    /// A JSON object too long to hold at once: `head`'s members, then `key` holding the
    /// items of `items` as an array (a conversation and its messages). The archive writes
    /// each item as it arrives, so memory does not grow with the array.
    fn json_array<'a>(
        &'a mut self,
        path: &'a str,
        head: Value,
        key: &'a str,
        items: ItemStream<'a>,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Whether the archive takes files' bytes (the ZIP does; the JSON answer lists files by
    /// their metadata only, which the modules write as JSON anyway).
    fn takes_files(&self) -> bool;

    /// A file's bytes, copied as they stream (only asked when [`Archive::takes_files`]).
    fn file<'a>(
        &'a mut self,
        path: &'a str,
        bytes: FileStream,
    ) -> BoxFuture<'a, anyhow::Result<()>>;
}

/// A module's share of a person's data.
pub trait PersonalData: Send + Sync {
    /// The module's name (for logs and the erasure's progress).
    fn name(&self) -> &'static str;

    /// The tables and prefixes this implementation exports and erases.
    fn coverage(&self) -> Coverage;

    /// Writes everything this module keeps about `user` into `archive`.
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>>;

    /// Removes everything this module keeps about `user`, in batches, Redis keys included.
    /// Every step deletes what still exists, so running it again (after a crash) ends the
    /// same way. Records kept for security (the audit log) name `pseudonym` instead of the
    /// user from then on: the same value on every run of one erasure.
    fn erase(&self, user: Uuid, pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>>;
}

/// A long array read a batch at a time: `next(after)` gives the items after the cursor
/// `after` (`None`: from the start), each with its own cursor (its id); an empty batch ends
/// the array. The next batch is read (on its own task) while the consumer works through
/// the current one, so reading and writing overlap; at most two batches are in memory.
pub fn batched<F, Fut>(next: F) -> ItemStream<'static>
where
    F: Fn(Option<Uuid>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<Vec<(Uuid, Box<RawValue>)>>> + Send + 'static,
{
    use futures_util::{StreamExt, TryStreamExt};
    use tokio_util::task::AbortOnDropHandle;
    let first = AbortOnDropHandle::new(tokio::spawn(next(None)));
    futures_util::stream::try_unfold((Some(first), next), |(pending, next)| async move {
        let Some(pending) = pending else {
            return Ok::<_, anyhow::Error>(None);
        };
        let items = pending.await??;
        let following = items
            .last()
            .map(|(id, _)| AbortOnDropHandle::new(tokio::spawn(next(Some(*id)))));
        let values = items
            .into_iter()
            .map(|(_, value)| Ok::<_, anyhow::Error>(value));
        Ok(Some((
            futures_util::stream::iter(values),
            (following, next),
        )))
    })
    .try_flatten()
    .boxed()
}

/// A module's rule for how long it keeps what people wrote: the privacy module's daily job
/// calls it for the accounts the rule applies to (free-tier accounts, for chat messages).
pub trait Retention: Send + Sync {
    /// The module's name (for the job's log and counts).
    fn name(&self) -> &'static str;

    /// Deletes what `users` wrote before `before`; returns how many rows went.
    fn expire<'a>(
        &'a self,
        users: &'a [Uuid],
        before: DateTime<Utc>,
    ) -> BoxFuture<'a, anyhow::Result<u64>>;
}
