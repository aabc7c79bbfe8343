//! Catalog's share of a person's data ([`PersonalData`]): the characters they created
//! and the ratings they gave.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use uuid::Uuid;

use super::cards;
use super::service::Service;
use super::store;
use crate::platform::db::DbError;
use crate::platform::personal::{Archive, Coverage, PersonalData};

/// Characters read per query (each may carry a long definition and lorebook).
const READ_BATCH: i64 = 100;
const DELETE_BATCH: i64 = 500;

/// Catalog's [`PersonalData`], with the installation's choice for erased creators' public
/// characters.
pub struct Share {
    pub service: Service,
    /// Give public characters to the installation instead of deleting them.
    pub transfer_public: bool,
}

impl PersonalData for Share {
    fn name(&self) -> &'static str {
        "catalog"
    }

    fn coverage(&self) -> Coverage {
        Coverage {
            tables: &["catalog.characters", "catalog.ratings"],
            prefixes: &[],
        }
    }

    /// `characters/<id>.json`, each character the user created as a V3 card (what
    /// `GET /characters/{id}/export` gives), and `characters/<id>.png`, the PNG card with its
    /// avatar, for those that have one; `ratings.json`, the stars they gave.
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let service = &self.service;
            let mut after = None;
            loop {
                let rows = service
                    .db
                    .run(move |conn| {
                        store::owned_batch(conn, user, after, READ_BATCH).map_err(DbError::from)
                    })
                    .await?;
                let Some((last, _)) = rows.last() else { break };
                after = Some(last.id);
                for (row, extra) in rows {
                    let v3 = cards::export_v3(&row, &extra);
                    archive
                        .json(&format!("characters/{}.json", row.id), v3.clone())
                        .await?;
                    let Some(avatar) = row.avatar_media_id else {
                        continue;
                    };
                    if !archive.takes_files() {
                        continue;
                    }
                    let Some(image) = service.media_read(avatar).await? else {
                        continue;
                    };
                    let v2 = cards::export_v2(&row, &extra);
                    let png = tokio::task::spawn_blocking(move || {
                        cards::export_png_with(&v3, &v2, Some(&image), &extra)
                    })
                    .await??;
                    let bytes = futures_util::stream::once(async move {
                        Ok::<_, anyhow::Error>(bytes::Bytes::from(png))
                    });
                    archive
                        .file(&format!("characters/{}.png", row.id), Box::pin(bytes))
                        .await?;
                }
            }
            let ratings = service
                .db
                .run(move |conn| store::ratings_by(conn, user).map_err(DbError::from))
                .await?;
            let ratings: Vec<Value> = ratings
                .into_iter()
                .map(|r| {
                    json!({
                        "characterId": r.character_id,
                        "stars": r.stars,
                        "createdAt": r.created_at,
                        "updatedAt": r.updated_at,
                    })
                })
                .collect();
            archive.json("ratings.json", Value::Array(ratings)).await
        }
        .boxed()
    }

    /// Ratings first (out of the characters' averages), then the characters: public ones
    /// given to the installation when so configured, all others deleted (other people's
    /// conversations with them keep their own copy of the name). Cached details go too.
    fn erase(&self, user: Uuid, _pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            let service = &self.service;
            while service
                .db
                .run(move |conn| {
                    store::withdraw_ratings(conn, user, DELETE_BATCH).map_err(DbError::from)
                })
                .await?
                > 0
            {}
            if self.transfer_public {
                let given = service
                    .db
                    .run(move |conn| store::transfer_public(conn, user).map_err(DbError::from))
                    .await?;
                for id in given {
                    service.forget_cached(id).await;
                }
            }
            loop {
                let deleted = service
                    .db
                    .run(move |conn| {
                        store::delete_owned(conn, user, DELETE_BATCH).map_err(DbError::from)
                    })
                    .await?;
                if deleted.is_empty() {
                    break;
                }
                for id in deleted {
                    service.forget_cached(id).await;
                }
            }
            Ok(())
        }
        .boxed()
    }
}
