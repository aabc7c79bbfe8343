//! Object storage chosen by URL:
//! - `file://<dir>` — local disk (relative paths are under the working directory);
//! - `memory://` — in memory (tests);
//! - `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]` — the cloud
//!   stores, with credentials from the provider's usual environment variables
//!   (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT` for S3-compatible stores, `GOOGLE_…`, `AZURE_…`).

use std::path::PathBuf;
use std::sync::Arc;

use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage.url is not a valid URL")]
    BadUrl,
    #[error("could not create the storage folder {0}: {1}")]
    Folder(PathBuf, #[source] std::io::Error),
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// A handle on the configured object store.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    part_size: usize,
}

/// Parts of a streamed upload: cloud stores want at least 5 MiB (S3's minimum), the local
/// disk and memory take smaller ones, which keeps less of an upload in memory.
const CLOUD_PART: usize = 5 * 1024 * 1024;
const LOCAL_PART: usize = 1024 * 1024;

impl Storage {
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        let local = url.starts_with("file://") || url.starts_with("memory://");
        Ok(Self {
            store: build(url)?,
            part_size: if local { LOCAL_PART } else { CLOUD_PART },
        })
    }

    /// The part size of streamed uploads to this store.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Stores a whole object (small ones: avatars, cards). Large uploads stream instead.
    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.store.put(&Path::from(key), bytes.into()).await?;
        Ok(())
    }

    /// A whole object, or `None` when there is none under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<bytes::Bytes>, StorageError> {
        match self.store.get(&Path::from(key)).await {
            Ok(found) => Ok(Some(found.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes an object; one that is already gone is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Reachability probe for `/ready`: a metadata lookup; "not found" proves the store answers.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self.store.head(&Path::from(".ready-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn build(url: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
    if url.starts_with("memory://") {
        return Ok(Arc::new(InMemory::new()));
    }
    if let Some(dir) = url.strip_prefix("file://") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(|e| StorageError::Folder(dir.clone(), e))?
                .join(dir)
        };
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::Folder(dir.clone(), e))?;
        return Ok(Arc::new(LocalFileSystem::new_with_prefix(&dir)?));
    }
    let parsed = Url::parse(url).map_err(|_| StorageError::BadUrl)?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| StorageError::BadUrl)?;
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => Arc::new(AmazonS3Builder::from_env().with_url(url).build()?),
        ObjectStoreScheme::GoogleCloudStorage => Arc::new(
            GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()?,
        ),
        ObjectStoreScheme::MicrosoftAzure => {
            Arc::new(MicrosoftAzureBuilder::from_env().with_url(url).build()?)
        }
        _ => Arc::from(object_store::parse_url(&parsed)?.0),
    };
    Ok(if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    })
}
