//! Media's share of a person's data ([`PersonalData`]): the rows of `media.objects` and
//! everything under `media/<user>/` in the store.

use diesel::Connection;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use serde_json::Value;
use uuid::Uuid;

use super::service::{Service, file_name, object_key, removed_job};
use super::store;
use crate::platform::db::DbError;
use crate::platform::jobs;
use crate::platform::personal::{Archive, Coverage, PersonalData};

/// Rows read or deleted at a time: an export holds one batch of rows (and the listing, a
/// small JSON object per file), an erasure's transactions stay short.
const BATCH: i64 = 500;

impl PersonalData for Service {
    fn name(&self) -> &'static str {
        "media"
    }

    fn coverage(&self) -> Coverage {
        Coverage {
            tables: &["media.objects"],
            prefixes: &["media/{user}/"],
        }
    }

    /// `media.json` lists every file as the API describes it; `media/<id>.<ext>` are the
    /// files themselves (as served: without their metadata). Thumbnails, which we made from
    /// the files, are left out.
    fn export<'a>(
        &'a self,
        user: Uuid,
        archive: &'a mut dyn Archive,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            let mut listed: Vec<Value> = Vec::new();
            let mut after = None;
            loop {
                let rows = self
                    .db
                    .run(move |conn| {
                        store::batch_of(conn, user, after, BATCH).map_err(DbError::from)
                    })
                    .await?;
                let Some(last) = rows.last() else { break };
                after = Some(last.id);
                for row in &rows {
                    let name = format!("media/{}", file_name(row.id, &row.content_type));
                    let mut entry = super::api::view(row);
                    entry["file"] = Value::String(name.clone());
                    listed.push(entry);
                    if archive.takes_files() {
                        match self.storage.store().get(&object_key(user, row.id)).await {
                            Ok(found) => {
                                let bytes = found.into_stream().map_err(anyhow::Error::from);
                                archive.file(&name, bytes.boxed()).await?;
                            }
                            // A row whose file vanished (the sweep will remove it).
                            Err(object_store::Error::NotFound { .. }) => {}
                            Err(error) => return Err(error.into()),
                        }
                    }
                }
            }
            archive.json("media.json", Value::Array(listed)).await
        }
        .boxed()
    }

    /// Rows first, a batch per transaction (each announcing `media.removed`, so nothing
    /// keeps pointing at them), then every object under the user's prefix: files,
    /// thumbnails and anything an interrupted upload left.
    fn erase(&self, user: Uuid, _pseudonym: Uuid) -> BoxFuture<'_, anyhow::Result<()>> {
        async move {
            loop {
                let deleted = self
                    .db
                    .run(move |conn| {
                        conn.transaction(|conn| {
                            let ids = store::delete_batch(conn, user, BATCH)?;
                            for id in &ids {
                                jobs::enqueue(conn, &removed_job(*id))?;
                            }
                            Ok::<_, diesel::result::Error>(ids.len())
                        })
                        .map_err(DbError::from)
                    })
                    .await?;
                if deleted == 0 {
                    break;
                }
            }
            self.storage.delete_prefix(&format!("media/{user}")).await?;
            Ok(())
        }
        .boxed()
    }
}
