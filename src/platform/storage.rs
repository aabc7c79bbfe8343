//! Object storage chosen by URL:
//! - `file://<dir>` — local disk (relative paths are under the working directory);
//! - `memory://` — in memory (tests);
//! - `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]` — the cloud
//!   stores, with credentials from the provider's usual environment variables
//!   (`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT` for S3-compatible stores, `GOOGLE_…`, `AZURE_…`),
//!   overridden by `storage.options`.
//!
//! An S3 store can also sign short-lived download URLs (`storage.presign_secs`), so a client
//! fetches a file straight from the bucket. Objects written to a cloud store carry their
//! content type and disposition, which the bucket answers with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::signer::{Method, SignedUrlOptions, Signer};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, ObjectStoreScheme};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::StorageSettings;

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage.url is not a valid URL")]
    BadUrl,
    #[error("could not create the storage folder {0}: {1}")]
    Folder(PathBuf, #[source] std::io::Error),
    #[error("storage.options.{0} is not a setting of this store")]
    UnknownOption(String),
    #[error("storage.options apply to s3://, gs:// and az:// stores only")]
    OptionsNotUsed,
    #[error("object store: {0}")]
    Store(#[from] object_store::Error),
}

/// A handle on the configured object store.
#[derive(Clone)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    part_size: usize,
    parts_in_flight: usize,
    /// Whether objects keep attributes (content type, disposition): cloud stores do.
    described: bool,
    presigner: Option<Presigner>,
}

/// Signs download URLs of an S3 bucket for keys under the store's prefix.
#[derive(Clone)]
struct Presigner {
    s3: Arc<AmazonS3>,
    prefix: Path,
    valid_for: Duration,
}

/// Parts of a streamed upload: cloud stores want at least 5 MiB (S3's minimum), the local
/// disk and memory take smaller ones, which keeps less of an upload in memory.
const CLOUD_PART: usize = 5 * 1024 * 1024;
const LOCAL_PART: usize = 1024 * 1024;
/// Parts written at once while an upload streams; with the part size this bounds what one
/// upload holds in memory (cloud 10 MiB, local 8 MiB). The local disk writes one part at a
/// time, so more in flight only lets the upload keep reading its socket while a part waits
/// to be written: 8 against 2 raised `bench/media.sh`'s median (bench/RESULTS.md, Media).
const CLOUD_PARTS_IN_FLIGHT: usize = 2;
const LOCAL_PARTS_IN_FLIGHT: usize = 8;

impl Storage {
    /// The store at `url`, with the provider's environment for credentials.
    pub fn from_url(url: &str) -> Result<Self, StorageError> {
        Self::from_settings(&StorageSettings {
            url: url.to_owned(),
            presign_secs: 0,
            options: BTreeMap::new(),
        })
    }

    pub fn from_settings(settings: &StorageSettings) -> Result<Self, StorageError> {
        let url = settings.url.as_str();
        let local = url.starts_with("file://") || url.starts_with("memory://");
        if local {
            if !settings.options.is_empty() {
                return Err(StorageError::OptionsNotUsed);
            }
            return Ok(Self {
                store: build_local(url)?,
                part_size: LOCAL_PART,
                parts_in_flight: LOCAL_PARTS_IN_FLIGHT,
                described: false,
                presigner: None,
            });
        }
        let (store, s3) = build_cloud(url, &settings.options)?;
        let presigner = match (s3, settings.presign_secs) {
            (Some((s3, prefix)), secs) if secs > 0 => Some(Presigner {
                s3,
                prefix,
                valid_for: Duration::from_secs(secs),
            }),
            (None, secs) if secs > 0 => {
                tracing::warn!("storage.presign_secs is set but only S3 stores sign URLs");
                None
            }
            _ => None,
        };
        Ok(Self {
            store,
            part_size: CLOUD_PART,
            parts_in_flight: CLOUD_PARTS_IN_FLIGHT,
            described: true,
            presigner,
        })
    }

    /// The attributes to store an object with so that a store serving it directly answers
    /// like the server would; none for the local stores, which cannot keep them.
    pub fn attributes(&self, content_type: &str, disposition: &str) -> Attributes {
        let mut attributes = Attributes::new();
        if self.described {
            attributes.insert(Attribute::ContentType, content_type.to_owned().into());
            attributes.insert(Attribute::ContentDisposition, disposition.to_owned().into());
        }
        attributes
    }

    /// A URL that lets anyone holding it GET the object `key` for the configured time, or
    /// `None` when the store does not sign URLs (not S3, or `storage.presign_secs` is 0).
    /// The URL also asks the bucket to answer with `content_type` and `disposition`.
    pub async fn presigned_get(
        &self,
        key: &Path,
        content_type: &str,
        disposition: &str,
    ) -> Result<Option<Url>, object_store::Error> {
        let Some(signer) = &self.presigner else {
            return Ok(None);
        };
        let path: Path = signer.prefix.parts().chain(key.parts()).collect();
        let options = SignedUrlOptions::default().with_query([
            ("response-content-type", content_type),
            ("response-content-disposition", disposition),
        ]);
        let url = signer
            .s3
            .signed_url_opts(Method::GET, &path, signer.valid_for, &options)
            .await?;
        Ok(Some(url))
    }

    /// The part size of streamed uploads to this store.
    pub fn part_size(&self) -> usize {
        self.part_size
    }

    /// How many parts of a streamed upload may be written at once.
    pub fn parts_in_flight(&self) -> usize {
        self.parts_in_flight
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

    /// Removes every object under `prefix` (a folder: `media/<user>`); objects that vanish
    /// meanwhile are not an error, so a repeated call ends the same way.
    pub async fn delete_prefix(&self, prefix: &str) -> Result<(), StorageError> {
        use futures_util::{StreamExt, TryStreamExt};
        let prefix = Path::from(prefix);
        let locations = self
            .store
            .list(Some(&prefix))
            .map_ok(|meta| meta.location)
            .boxed();
        self.store
            .delete_stream(locations)
            .map(|deleted| match deleted {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(other) => Err(other),
            })
            .try_collect::<()>()
            .await?;
        Ok(())
    }

    /// Reachability probe for `/ready`: a metadata lookup; "not found" proves the store answers.
    pub async fn check(&self) -> Result<(), StorageError> {
        match self.store.head(&Path::from(".ready-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn build_local(url: &str) -> Result<Arc<dyn ObjectStore>, StorageError> {
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
    Err(StorageError::BadUrl)
}

/// A cloud store, and for S3 the bucket's own client and the prefix, which signing needs.
type Cloud = (Arc<dyn ObjectStore>, Option<(Arc<AmazonS3>, Path)>);

fn build_cloud(url: &str, options: &BTreeMap<String, SecretString>) -> Result<Cloud, StorageError> {
    let parsed = Url::parse(url).map_err(|_| StorageError::BadUrl)?;
    let (scheme, prefix) = ObjectStoreScheme::parse(&parsed).map_err(|_| StorageError::BadUrl)?;
    let mut s3 = None;
    let store: Arc<dyn ObjectStore> = match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let builder = AmazonS3Builder::from_env().with_url(url);
            let bucket = configured(builder, options, |b, k, v| b.with_config(k, v))?.build()?;
            let bucket = Arc::new(bucket);
            s3 = Some((Arc::clone(&bucket), prefix.clone()));
            bucket
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let builder = GoogleCloudStorageBuilder::from_env().with_url(url);
            Arc::new(configured(builder, options, |b, k, v| b.with_config(k, v))?.build()?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let builder = MicrosoftAzureBuilder::from_env().with_url(url);
            Arc::new(configured(builder, options, |b, k, v| b.with_config(k, v))?.build()?)
        }
        _ => return Err(StorageError::BadUrl),
    };
    let store = if prefix.as_ref().is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    Ok((store, s3))
}

/// Applies `storage.options` to a store's builder; a name the store does not know is an error.
fn configured<B, K: FromStr>(
    mut builder: B,
    options: &BTreeMap<String, SecretString>,
    with: impl Fn(B, K, &str) -> B,
) -> Result<B, StorageError> {
    for (name, value) in options {
        let key = name
            .parse()
            .map_err(|_| StorageError::UnknownOption(name.clone()))?;
        builder = with(builder, key, value.expose_secret());
    }
    Ok(builder)
}
