//! Uploads, downloads and deletions of media.

use bytes::{Bytes, BytesMut};
use diesel::Connection;
use futures_util::TryStreamExt;
use futures_util::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, GetOptions, GetRange, ObjectStoreExt, PutMultipartOptions, PutOptions, PutPayload,
    WriteMultipart,
};
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::images::{self, INLINE_THUMBNAIL_PIXELS, ImageError};
use super::sniff::{self, Format, Kind, SNIFF_BYTES};
use super::store::{self, MediaRow, NewMedia};
use crate::config::{MediaSettings, Plans};
use crate::platform::db::{Columns, Db, DbError};
use crate::platform::jobs::{self, Job, JobRegistry, NewJob};
use crate::platform::storage::Storage;

/// The job that makes the thumbnail of a large image.
pub const THUMBNAIL_JOB: &str = "media.thumbnail";

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("not found")]
    NotFound,
    #[error("the file is not an allowed {0} format")]
    Unsupported(String),
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the file does not fit the storage quota of {quota} bytes ({used} used)")]
    OverQuota { quota: u64, used: u64 },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("the upload was cut off: {0}")]
    Cut(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// An object written to the store whose row is not stored yet.
pub struct Received {
    pub id: Uuid,
    pub format: Format,
    pub size: u64,
    pub image: Option<ImageFacts>,
}

/// What an image upload learnt about the image.
pub struct ImageFacts {
    pub width: u32,
    pub height: u32,
    /// The thumbnail made during the upload (its type and size), or `None` when a job makes
    /// it.
    pub thumbnail: Option<(&'static str, u64)>,
}

/// The bytes of a download as they are read from the store.
pub type Body = futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>;

#[derive(Clone)]
pub struct Service {
    pub(super) db: Db,
    pub(super) storage: Storage,
    limits: MediaSettings,
    plans: Plans,
    /// Image work (decode, strip, thumbnail) at once, at most one per core.
    image_work: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Where an object's bytes live: under its owner, so erasure can list one prefix.
pub fn object_key(owner: Uuid, id: Uuid) -> Path {
    Path::from(format!("media/{owner}/{id}"))
}

/// Where an image's thumbnail lives, beside it.
pub fn thumbnail_key(owner: Uuid, id: Uuid) -> Path {
    Path::from(format!("media/{owner}/{id}.thumb"))
}

/// The name media `id`'s file goes by (downloads, exports): the id and the format's
/// extension. Never the client's file name, so it cannot carry quotes or line breaks into a
/// header.
pub fn file_name(id: Uuid, content_type: &str) -> String {
    let extension = sniff::by_content_type(content_type).map_or("bin", |f| f.extension);
    format!("{id}.{extension}")
}

/// How a browser is told to show media `id`'s file: inline, under [`file_name`].
pub fn disposition(id: Uuid, content_type: &str) -> String {
    format!("inline; filename=\"{}\"", file_name(id, content_type))
}

impl Service {
    pub fn new(db: Db, storage: Storage, limits: MediaSettings, plans: Plans) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            db,
            storage,
            limits,
            plans,
            image_work: std::sync::Arc::new(tokio::sync::Semaphore::new(cores)),
        }
    }

    /// Writes a whole object of media `id`, described (type, disposition) for a store that
    /// serves it directly.
    async fn put(
        &self,
        key: &Path,
        bytes: impl Into<PutPayload>,
        id: Uuid,
        content_type: &str,
    ) -> Result<(), object_store::Error> {
        let options = PutOptions {
            attributes: self.attributes(id, content_type),
            ..PutOptions::default()
        };
        self.storage
            .store()
            .put_opts(key, bytes.into(), options)
            .await?;
        Ok(())
    }

    /// What an object of media `id` is stored with, for a store that serves it directly.
    fn attributes(&self, id: Uuid, content_type: &str) -> Attributes {
        self.storage
            .attributes(content_type, &disposition(id, content_type))
    }

    /// A short-lived URL at which the store itself serves `key` of media `id`, when it
    /// signs URLs (`storage.presign_secs`).
    pub async fn presigned(
        &self,
        key: &Path,
        id: Uuid,
        content_type: &str,
    ) -> Result<Option<url::Url>, MediaError> {
        let signed = self
            .storage
            .presigned_get(key, content_type, &disposition(id, content_type))
            .await?;
        Ok(signed)
    }

    /// The storage quota of a tier, in bytes (`None`: unlimited).
    pub fn quota(&self, tier: &str) -> Option<u64> {
        self.plans.get(tier).storage_quota()
    }

    /// The bytes `owner`'s media take.
    pub async fn usage(&self, owner: Uuid) -> Result<u64, MediaError> {
        match self.db.read_part(store::USAGE, owner).await? {
            Some(row) => Ok(store::usage_from(Columns::whole(&row))?),
            None => Ok(0),
        }
    }

    /// Runs image work on the blocking pool, a few at a time.
    async fn image_work<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, ImageError> + Send + 'static,
    ) -> Result<T, MediaError> {
        let _permit = self
            .image_work
            .acquire()
            .await
            .map_err(|_| ImageError::Unreadable("shutting down".into()))?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| ImageError::Unreadable(error.to_string()))?
            .map_err(MediaError::from)
    }

    pub fn limit(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Image => self.limits.image_max_bytes,
            Kind::Audio => self.limits.audio_max_bytes,
            Kind::Video => self.limits.video_max_bytes,
        }
    }

    /// Streams a file to the store as it arrives. Its format comes from its first bytes and
    /// must be on the allowlist (and match `declared` when the client said it already); its
    /// size is checked as it streams. On any failure nothing is left in the store.
    pub async fn receive<S, E>(
        &self,
        owner: Uuid,
        file: S,
        declared: Option<Kind>,
        quota: Option<u64>,
    ) -> Result<Received, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        // Fused: a file shorter than the sniffed head has ended before the copy loop asks.
        let mut file = file.fuse();
        let mut head = BytesMut::new();
        while head.len() < SNIFF_BYTES {
            match file.next().await {
                Some(chunk) => head.extend_from_slice(&chunk.map_err(cut)?),
                None => break,
            }
        }
        let claimed = declared.map_or("media", Kind::as_str);
        let format = sniff::sniff(&head)
            .filter(|format| declared.is_none_or(|kind| kind == format.kind))
            .filter(|_| !sniff::looks_like_markup(&head))
            .ok_or_else(|| MediaError::Unsupported(claimed.to_owned()))?;
        // The kind's limit, or what is left of the quota when that is less.
        let quota = match quota {
            Some(quota) => Some((quota, self.usage(owner).await?)),
            None => None,
        };
        let kind_limit = self.limit(format.kind);
        let limit = quota.map_or(kind_limit, |(quota, used)| {
            kind_limit.min(quota.saturating_sub(used))
        });
        let too_large = move || match quota {
            Some((quota, used)) if quota.saturating_sub(used) < kind_limit => {
                MediaError::OverQuota { quota, used }
            }
            _ => MediaError::TooLarge { limit: kind_limit },
        };
        if format.kind == Kind::Image {
            return self
                .receive_image(owner, format, head, file, limit, too_large)
                .await;
        }
        let id = Uuid::now_v7();
        let key = object_key(owner, id);
        let options = PutMultipartOptions {
            attributes: self.attributes(id, format.content_type),
            ..PutMultipartOptions::default()
        };
        let upload = self
            .storage
            .store()
            .put_multipart_opts(&key, options)
            .await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.storage.part_size());
        let in_flight = self.storage.parts_in_flight();
        let mut size = 0u64;
        let mut chunk = Some(Ok(head.freeze()));
        let outcome = loop {
            let bytes = match chunk.take() {
                Some(Ok(bytes)) => bytes,
                Some(Err(error)) => break Err(error),
                None => break Ok(()),
            };
            size += bytes.len() as u64;
            if size > limit {
                break Err(too_large());
            }
            // The store's parts in flight and part size bound what an upload holds in memory,
            // whatever the file's size.
            if let Err(error) = writer.wait_for_capacity(in_flight).await {
                break Err(error.into());
            }
            // Handed over as it came off the socket, not copied into the part.
            writer.put(bytes);
            chunk = file.next().await.map(|next| next.map_err(cut));
        };
        match outcome {
            Ok(()) => {
                writer.finish().await?;
                Ok(Received {
                    id,
                    format,
                    size,
                    image: None,
                })
            }
            Err(error) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(error = %abort, %id, "could not abort an upload");
                }
                // Stores that wrote parts in place (the local disk) may hold something.
                self.remove(&key).await;
                Err(error)
            }
        }
    }

    /// An image is read whole (it is at most `image_max_bytes`) since it must be decoded
    /// anyway: its pixel count is read from its header and refused past
    /// [`images::MAX_PIXELS`], its metadata is stripped, and what is stored and served is the
    /// stripped file. Its thumbnail is made now when it is small, otherwise by a job.
    async fn receive_image<S, E>(
        &self,
        owner: Uuid,
        format: Format,
        head: BytesMut,
        mut file: futures_util::stream::Fuse<S>,
        limit: u64,
        too_large: impl Fn() -> MediaError,
    ) -> Result<Received, MediaError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut buffer = head;
        loop {
            if buffer.len() as u64 > limit {
                return Err(too_large());
            }
            match file.next().await {
                Some(chunk) => buffer.extend_from_slice(&chunk.map_err(cut)?),
                None => break,
            }
        }
        let original = buffer.freeze();
        let prepared = self
            .image_work(move || {
                images::dimensions(&original, format)?;
                let stripped = images::strip(original, format)?;
                let (width, height) = images::dimensions(&stripped, format)?;
                let small = u64::from(width) * u64::from(height) <= INLINE_THUMBNAIL_PIXELS;
                let thumbnail = if small {
                    Some(images::thumbnail(&stripped, format)?)
                } else {
                    None
                };
                Ok((stripped, width, height, thumbnail))
            })
            .await?;
        let (stripped, width, height, thumbnail) = prepared;
        let id = Uuid::now_v7();
        let size = stripped.len() as u64;
        self.put(&object_key(owner, id), stripped, id, format.content_type)
            .await?;
        let thumbnail = match thumbnail {
            Some(thumbnail) => {
                let facts = (thumbnail.content_type, thumbnail.bytes.len() as u64);
                let key = thumbnail_key(owner, id);
                let put = self.put(&key, thumbnail.bytes, id, thumbnail.content_type);
                if let Err(error) = put.await {
                    self.remove(&object_key(owner, id)).await;
                    return Err(error.into());
                }
                Some(facts)
            }
            None => None,
        };
        Ok(Received {
            id,
            format,
            size,
            image: Some(ImageFacts {
                width,
                height,
                thumbnail,
            }),
        })
    }

    /// Stores the row of a received object (within `quota`, counted again now that other
    /// uploads may have finished), and the job that makes its thumbnail when one is due; if
    /// that fails the object is removed.
    pub async fn record(
        &self,
        owner: Uuid,
        received: Received,
        character: Option<Uuid>,
        quota: Option<u64>,
    ) -> Result<MediaRow, MediaError> {
        let id = received.id;
        let stored = self
            .db
            .run(move |conn| {
                let image = received.image.as_ref();
                let thumbnail = image.and_then(|image| image.thumbnail);
                let new = NewMedia {
                    id: received.id,
                    owner_id: owner,
                    kind: received.format.kind.as_str(),
                    content_type: received.format.content_type,
                    size: i64::try_from(received.size).unwrap_or(i64::MAX),
                    character_id: character,
                    width: image.and_then(|image| i32::try_from(image.width).ok()),
                    height: image.and_then(|image| i32::try_from(image.height).ok()),
                    thumbnail: match (image, thumbnail) {
                        (None, _) => "none",
                        (Some(_), Some(_)) => "ready",
                        (Some(_), None) => "pending",
                    },
                    thumbnail_type: thumbnail.map(|(content_type, _)| content_type),
                    thumbnail_size: thumbnail.and_then(|(_, size)| i64::try_from(size).ok()),
                };
                let quota = quota.map(|quota| i64::try_from(quota).unwrap_or(i64::MAX));
                conn.transaction(|conn| {
                    let row = store::insert_within(conn, &new, quota)?;
                    if let Ok(row) = &row
                        && row.thumbnail == "pending"
                    {
                        let job = NewJob::new(THUMBNAIL_JOB, serde_json::json!({ "id": row.id }));
                        jobs::enqueue(conn, &job)?;
                    }
                    Ok::<_, diesel::result::Error>(row)
                })
                .map_err(DbError::from)
            })
            .await;
        let outcome = match stored {
            Ok(Ok(row)) => return Ok(row),
            Ok(Err(over)) => MediaError::OverQuota {
                quota: quota.unwrap_or(0),
                used: u64::try_from(over.used).unwrap_or(0),
            },
            Err(error) => error.into(),
        };
        self.remove(&object_key(owner, id)).await;
        self.remove(&thumbnail_key(owner, id)).await;
        Err(outcome)
    }

    /// Removes an object written for an upload that was then refused.
    pub async fn discard(&self, owner: Uuid, received: &Received) {
        self.remove(&object_key(owner, received.id)).await;
        if received.image.is_some() {
            self.remove(&thumbnail_key(owner, received.id)).await;
        }
    }

    async fn remove(&self, key: &Path) {
        match self.storage.store().delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%error, %key, "could not remove an object"),
        }
    }

    async fn find(&self, id: Uuid) -> Result<Option<MediaRow>, DbError> {
        self.db
            .run(move |conn| store::find(conn, id).map_err(DbError::from))
            .await
    }

    /// Whether `id` is an image `owner` uploaded.
    pub async fn is_image_of(&self, owner: Uuid, id: Uuid) -> Result<bool, MediaError> {
        let row = self.find(id).await?;
        Ok(row.is_some_and(|row| row.owner_id == owner && row.kind == Kind::Image.as_str()))
    }

    pub async fn set_public(&self, id: Uuid, public: bool) -> Result<(), MediaError> {
        self.db
            .run(move |conn| store::set_public(conn, id, public).map_err(DbError::from))
            .await?;
        Ok(())
    }

    /// Stores an image received whole (from a character card) as an upload of `owner`'s.
    pub async fn store_image(
        &self,
        owner: Uuid,
        quota: Option<u64>,
        image: Vec<u8>,
    ) -> Result<Uuid, MediaError> {
        let file = futures_util::stream::iter([Ok::<_, MediaError>(Bytes::from(image))]);
        let received = self.receive(owner, file, Some(Kind::Image), quota).await?;
        Ok(self.record(owner, received, None, quota).await?.id)
    }

    /// All of `id`'s bytes, if it exists (for images, which are at most a few MiB).
    pub async fn read_whole(&self, id: Uuid) -> Result<Option<Bytes>, MediaError> {
        let row = self.find(id).await?;
        let Some(row) = row else {
            return Ok(None);
        };
        match self
            .storage
            .store()
            .get(&object_key(row.owner_id, id))
            .await
        {
            Ok(found) => Ok(Some(found.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// `limit` of `owner`'s media after the `offset` newest, of one kind or all; and how
    /// many there are in all.
    pub async fn list(
        &self,
        owner: Uuid,
        kind: Option<Kind>,
        offset: i64,
        limit: i64,
    ) -> Result<(Vec<MediaRow>, i64), MediaError> {
        let kind = kind.map(Kind::as_str);
        let found = self
            .db
            .run(move |conn| {
                store::page_of(conn, owner, kind, offset, limit).map_err(DbError::from)
            })
            .await?;
        Ok(found)
    }

    /// The media `viewer` may see: its owner's, or a public one; otherwise not found.
    pub async fn visible(&self, viewer: Option<Uuid>, id: Uuid) -> Result<MediaRow, MediaError> {
        let row = self.find(id).await?.ok_or(MediaError::NotFound)?;
        if row.is_public || Some(row.owner_id) == viewer {
            Ok(row)
        } else {
            Err(MediaError::NotFound)
        }
    }

    /// Opens the object at `key` (a row's file or thumbnail), all of it or `range` (first
    /// and last byte, inclusive).
    pub async fn open(&self, key: &Path, range: Option<(u64, u64)>) -> Result<Body, MediaError> {
        let options = GetOptions {
            range: range.map(|(first, last)| GetRange::Bounded(first..last + 1)),
            ..GetOptions::default()
        };
        let found = self.storage.store().get_opts(key, options).await;
        let found = match found {
            Ok(found) => found,
            // The row outlived its object: the orphan sweep will remove the row.
            Err(object_store::Error::NotFound { .. }) => return Err(MediaError::NotFound),
            Err(error) => return Err(error.into()),
        };
        Ok(found.into_stream())
    }

    /// Deletes `owner`'s media: the row (announcing [`REMOVED_JOB`] in the same
    /// transaction, so avatars that pointed at it fall back to none), then its objects.
    pub async fn delete(&self, owner: Uuid, id: Uuid) -> Result<(), MediaError> {
        let row = self
            .db
            .run(move |conn| {
                conn.transaction(|conn| {
                    let row = store::delete(conn, id, owner)?;
                    if row.is_some() {
                        jobs::enqueue(conn, &removed_job(id))?;
                    }
                    Ok::<_, diesel::result::Error>(row)
                })
                .map_err(DbError::from)
            })
            .await?
            .ok_or(MediaError::NotFound)?;
        self.remove(&object_key(row.owner_id, row.id)).await;
        self.remove(&thumbnail_key(row.owner_id, row.id)).await;
        Ok(())
    }

    pub fn register_jobs(&self, registry: &mut JobRegistry) {
        let service = self.clone();
        registry.register(THUMBNAIL_JOB, move |job| {
            let service = service.clone();
            async move { service.make_thumbnail(job).await }
        });
        let service = self.clone();
        registry.register(SWEEP_JOB, move |job| {
            let service = service.clone();
            async move {
                let swept = service.sweep(&job.cancel).await?;
                tracing::info!(
                    objects = swept.objects,
                    rows = swept.rows,
                    "media orphan sweep"
                );
                Ok(())
            }
        });
        let every = std::time::Duration::from_secs(self.limits.sweep_interval_secs);
        registry.schedule(SWEEP_JOB, SWEEP_JOB, every);
    }

    /// Removes what an interrupted upload or delete left behind, owner by owner (so memory
    /// holds one owner's listing at a time): objects no row knows, and rows whose file
    /// vanished (announcing [`REMOVED_JOB`] for them), each once older than the grace
    /// period. Owners come from both sides: the store's prefixes and the table.
    pub async fn sweep(&self, cancel: &CancellationToken) -> anyhow::Result<Swept> {
        let grace = chrono::Duration::seconds(
            i64::try_from(self.limits.orphan_grace_secs).unwrap_or(i64::MAX),
        );
        let cutoff = chrono::Utc::now() - grace;
        let store = self.storage.store();
        let listed = store
            .list_with_delimiter(Some(&Path::from("media")))
            .await?;
        let mut owners: Vec<Uuid> = listed
            .common_prefixes
            .iter()
            .filter_map(|prefix| prefix.filename()?.parse().ok())
            .collect();
        owners.extend(
            self.db
                .run(|conn| store::owners(conn).map_err(DbError::from))
                .await?,
        );
        owners.sort_unstable();
        owners.dedup();
        let mut swept = Swept::default();
        for owner in owners {
            if cancel.is_cancelled() {
                break;
            }
            let rows: HashMap<Uuid, chrono::DateTime<chrono::Utc>> = self
                .db
                .run(move |conn| store::ids_of(conn, owner).map_err(DbError::from))
                .await?
                .into_iter()
                .collect();
            let prefix = Path::from(format!("media/{owner}"));
            let objects: Vec<object_store::ObjectMeta> =
                store.list(Some(&prefix)).try_collect().await?;
            let mut files = std::collections::HashSet::new();
            for object in objects {
                let name = object.location.filename().unwrap_or_default();
                let (id, thumbnail) = match name.strip_suffix(".thumb") {
                    Some(id) => (id.parse::<Uuid>().ok(), true),
                    None => (name.parse::<Uuid>().ok(), false),
                };
                if let Some(id) = id
                    && !thumbnail
                {
                    files.insert(id);
                }
                let known = id.is_some_and(|id| rows.contains_key(&id));
                if !known && object.last_modified < cutoff {
                    self.remove(&object.location).await;
                    swept.objects += 1;
                }
            }
            for (id, created) in rows {
                if files.contains(&id) || created >= cutoff {
                    continue;
                }
                let removed = self
                    .db
                    .run(move |conn| {
                        conn.transaction(|conn| {
                            let removed = store::delete_any(conn, id)?;
                            if removed > 0 {
                                jobs::enqueue(conn, &removed_job(id))?;
                            }
                            Ok::<_, diesel::result::Error>(removed)
                        })
                        .map_err(DbError::from)
                    })
                    .await?;
                if removed > 0 {
                    self.remove(&thumbnail_key(owner, id)).await;
                    swept.rows += 1;
                }
            }
        }
        Ok(swept)
    }

    /// The [`THUMBNAIL_JOB`]: makes the thumbnail of a large image. Runs again harmlessly
    /// (the thumbnail is only written while the row says it is pending).
    async fn make_thumbnail(&self, job: Job) -> anyhow::Result<()> {
        #[derive(serde::Deserialize)]
        struct Payload {
            id: Uuid,
        }
        let Payload { id } = job.payload_as()?;
        let row = self.find(id).await?;
        let Some(row) = row.filter(|row| row.thumbnail == "pending") else {
            return Ok(());
        };
        let Some(format) = sniff::by_content_type(&row.content_type) else {
            return Ok(());
        };
        let store = self.storage.store();
        let bytes = match store.get(&object_key(row.owner_id, id)).await {
            Ok(found) => found.bytes().await?,
            // Deleted meanwhile (or vanished: the orphan sweep removes the row).
            Err(object_store::Error::NotFound { .. }) => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        let made = self
            .image_work(move || images::thumbnail(&bytes, format))
            .await;
        let (state, facts) = match made {
            Ok(thumbnail) => {
                let facts = (thumbnail.content_type, thumbnail.bytes.len() as i64);
                let key = thumbnail_key(row.owner_id, id);
                self.put(&key, thumbnail.bytes, id, thumbnail.content_type)
                    .await?;
                ("ready", Some(facts))
            }
            Err(MediaError::Image(error)) => {
                tracing::warn!(%error, %id, "could not make a thumbnail");
                ("failed", None)
            }
            Err(error) => return Err(error.into()),
        };
        let updated = self
            .db
            .run(move |conn| {
                store::set_thumbnail(
                    conn,
                    id,
                    state,
                    facts.map(|(content_type, _)| content_type),
                    facts.map(|(_, size)| size),
                )
                .map_err(DbError::from)
            })
            .await?;
        if updated == 0 {
            // The image was deleted while its thumbnail was made.
            self.remove(&thumbnail_key(row.owner_id, id)).await;
        }
        Ok(())
    }
}

/// The recurring job that removes orphans ([`Service::sweep`]).
pub const SWEEP_JOB: &str = "media.sweep";

/// What one sweep removed.
#[derive(Debug, Default)]
pub struct Swept {
    pub objects: u64,
    pub rows: u64,
}

/// The job that tells whoever kept a reference to media `id` (an avatar) that it is gone.
/// `app.rs` registers its handler, since media knows nothing of who refers to it.
pub const REMOVED_JOB: &str = "media.removed";

pub(super) fn removed_job(id: Uuid) -> NewJob {
    NewJob::new(REMOVED_JOB, serde_json::json!({ "id": id }))
}

fn cut(error: impl std::fmt::Display) -> MediaError {
    MediaError::Cut(error.to_string())
}
