//! Uploads, downloads and deletions of media.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStoreExt, WriteMultipart};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::sniff::{self, Format, Kind, SNIFF_BYTES};
use super::store::{self, MediaRow, NewMedia};
use crate::config::MediaSettings;
use crate::platform::db::{Db, DbError};
use crate::platform::storage::Storage;

/// Parts in flight while an upload streams to the store; with the part size this bounds the
/// memory an upload holds, whatever the file's size.
const PARTS_IN_FLIGHT: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("not found")]
    NotFound,
    #[error("the file is not an allowed {0} format")]
    Unsupported(String),
    #[error("the file is larger than {limit} bytes")]
    TooLarge { limit: u64 },
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
    pub sha256: String,
}

/// The bytes of a download as they are read from the store.
pub type Body = futures_util::stream::BoxStream<'static, Result<Bytes, object_store::Error>>;

#[derive(Clone)]
pub struct Service {
    db: Db,
    storage: Storage,
    limits: MediaSettings,
}

/// Where an object's bytes live: under its owner, so erasure can list one prefix.
pub fn object_key(owner: Uuid, id: Uuid) -> Path {
    Path::from(format!("media/{owner}/{id}"))
}

impl Service {
    pub fn new(db: Db, storage: Storage, limits: MediaSettings) -> Self {
        Self {
            db,
            storage,
            limits,
        }
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
        let limit = self.limit(format.kind);
        let id = Uuid::now_v7();
        let key = object_key(owner, id);
        let upload = self.storage.store().put_multipart(&key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.storage.part_size());
        let mut hasher = Sha256::new();
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
                break Err(MediaError::TooLarge { limit });
            }
            hasher.update(&bytes);
            if let Err(error) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                break Err(error.into());
            }
            writer.write(&bytes);
            chunk = file.next().await.map(|next| next.map_err(cut));
        };
        match outcome {
            Ok(()) => {
                writer.finish().await?;
                Ok(Received {
                    id,
                    format,
                    size,
                    sha256: URL_SAFE_NO_PAD.encode(hasher.finalize()),
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

    /// Stores the row of a received object; if that fails the object is removed.
    pub async fn record(
        &self,
        owner: Uuid,
        received: Received,
        character: Option<Uuid>,
    ) -> Result<MediaRow, MediaError> {
        let stored = self
            .db
            .run(move |conn| {
                store::insert(
                    conn,
                    &NewMedia {
                        id: received.id,
                        owner_id: owner,
                        kind: received.format.kind.as_str(),
                        content_type: received.format.content_type,
                        size: i64::try_from(received.size).unwrap_or(i64::MAX),
                        sha256: &received.sha256,
                        character_id: character,
                    },
                )
                .map_err(DbError::from)
            })
            .await;
        if stored.is_err() {
            self.remove(&object_key(owner, received.id)).await;
        }
        Ok(stored?)
    }

    /// Removes an object written for an upload that was then refused.
    pub async fn discard(&self, owner: Uuid, received: &Received) {
        self.remove(&object_key(owner, received.id)).await;
    }

    async fn remove(&self, key: &Path) {
        match self.storage.store().delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(error) => tracing::warn!(%error, %key, "could not remove an object"),
        }
    }

    /// The media `viewer` may see: its owner's, or a public one; otherwise not found.
    pub async fn visible(&self, viewer: Option<Uuid>, id: Uuid) -> Result<MediaRow, MediaError> {
        let row = self
            .db
            .run(move |conn| store::find(conn, id).map_err(DbError::from))
            .await?
            .ok_or(MediaError::NotFound)?;
        if row.is_public || Some(row.owner_id) == viewer {
            Ok(row)
        } else {
            Err(MediaError::NotFound)
        }
    }

    /// Opens `row`'s bytes, all of them or `range` (first and last byte, inclusive).
    pub async fn open(
        &self,
        row: &MediaRow,
        range: Option<(u64, u64)>,
    ) -> Result<Body, MediaError> {
        let options = GetOptions {
            range: range.map(|(first, last)| GetRange::Bounded(first..last + 1)),
            ..GetOptions::default()
        };
        let found = self
            .storage
            .store()
            .get_opts(&object_key(row.owner_id, row.id), options)
            .await;
        let found = match found {
            Ok(found) => found,
            // The row outlived its object: the orphan sweep will remove the row.
            Err(object_store::Error::NotFound { .. }) => return Err(MediaError::NotFound),
            Err(error) => return Err(error.into()),
        };
        Ok(found.into_stream())
    }

    /// Deletes `owner`'s media: the row, then its object.
    pub async fn delete(&self, owner: Uuid, id: Uuid) -> Result<(), MediaError> {
        let row = self
            .db
            .run(move |conn| store::delete(conn, id, owner).map_err(DbError::from))
            .await?
            .ok_or(MediaError::NotFound)?;
        self.remove(&object_key(row.owner_id, row.id)).await;
        Ok(())
    }
}

fn cut(error: impl std::fmt::Display) -> MediaError {
    MediaError::Cut(error.to_string())
}
