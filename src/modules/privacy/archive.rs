//! The two [`Archive`]s a person's data is written into: [`JsonExport`], one JSON document
//! held in memory up to a bound (the synchronous export), and [`ZipExport`], a ZIP streamed
//! to the object store as it is written (the archive job), whose memory does not grow with
//! the account.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use object_store::WriteMultipart;
use serde_json::{Map, Value};
use zip::CompressionMethod;
use zip::write::{SimpleFileOptions, StreamWriter, ZipWriter};

use crate::platform::personal::{Archive, FileStream, ItemStream};

/// The synchronous export went past its bound.
#[derive(Debug, thiserror::Error)]
#[error("the export is larger than {0} bytes")]
pub struct TooLarge(pub u64);

/// Every document by its path, counted as it grows.
pub struct JsonExport {
    pub files: BTreeMap<String, Value>,
    size: u64,
    limit: u64,
}

impl JsonExport {
    pub fn new(limit: u64) -> Self {
        Self {
            files: BTreeMap::new(),
            size: 0,
            limit,
        }
    }

    fn count(&mut self, value: &Value) -> anyhow::Result<()> {
        let mut counter = Counter(0);
        serde_json::to_writer(&mut counter, value)?;
        self.grow(counter.0)
    }

    /// Adds `bytes` of JSON to the export's size, within its bound.
    fn grow(&mut self, bytes: u64) -> anyhow::Result<()> {
        self.size += bytes;
        if self.size > self.limit {
            return Err(TooLarge(self.limit).into());
        }
        Ok(())
    }
}

/// A writer that only counts.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Archive for JsonExport {
    fn json<'a>(&'a mut self, path: &'a str, value: Value) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            self.count(&value)?;
            self.files.insert(path.to_owned(), value);
            Ok(())
        }
        .boxed()
    }

    fn json_array<'a>(
        &'a mut self,
        path: &'a str,
        head: Value,
        key: &'a str,
        mut items: ItemStream<'a>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            self.count(&head)?;
            let mut document = match head {
                Value::Object(members) => members,
                _ => Map::new(),
            };
            let mut array = Vec::new();
            while let Some(item) = items.next().await {
                let item = item?;
                self.grow(item.get().len() as u64)?;
                array.push(serde_json::from_str::<Value>(item.get())?);
            }
            document.insert(key.to_owned(), Value::Array(array));
            self.files.insert(path.to_owned(), Value::Object(document));
            Ok(())
        }
        .boxed()
    }

    fn takes_files(&self) -> bool {
        false
    }

    fn file<'a>(
        &'a mut self,
        _path: &'a str,
        _bytes: FileStream,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async { Ok(()) }.boxed()
    }
}

/// Bytes the ZIP writer produced and the upload has not taken yet.
#[derive(Clone, Default)]
struct Pending(Arc<Mutex<Vec<u8>>>);

impl Pending {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Write for Pending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Parts uploading at once.
const PARTS_IN_FLIGHT: usize = 2;
/// Hand the upload what the writer produced once this much is waiting.
const HAND_OVER: usize = 256 * 1024;
/// Serialized JSON handed to the ZIP writer at a time.
const BUFFER: usize = 64 * 1024;

/// A ZIP written straight into a multipart upload. JSON is compressed (deflate, fast
/// level); files are stored as they are (pictures and sounds are compressed already).
/// What is in memory at any time: the part being filled, the parts in flight, up to 64 KiB
/// of JSON not compressed yet, and the items the module has read.
pub struct ZipExport {
    zip: ZipWriter<StreamWriter<Pending>>,
    /// What the current file's JSON serializes into, handed to the ZIP writer in large
    /// pieces: the compressor does a fixed amount of work per write, so serde's many small
    /// writes must not reach it one by one.
    buffer: Vec<u8>,
    pending: Pending,
    upload: WriteMultipart,
    /// Every path written, for the README.
    pub paths: Vec<String>,
    pub size: u64,
}

fn json_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .compression_level(Some(1))
}

fn file_options() -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .large_file(true)
}

impl ZipExport {
    pub fn new(upload: WriteMultipart) -> Self {
        let pending = Pending::default();
        Self {
            zip: ZipWriter::new_stream(pending.clone()),
            buffer: Vec::with_capacity(BUFFER),
            pending,
            upload,
            paths: Vec::new(),
            size: 0,
        }
    }

    /// Moves what the writer produced into the upload once there is enough (or `all`),
    /// waiting while too many parts are in flight.
    async fn drain(&mut self, all: bool) -> anyhow::Result<()> {
        let waiting = self.pending.0.lock().map(|b| b.len()).unwrap_or(0);
        if waiting == 0 || (!all && waiting < HAND_OVER) {
            return Ok(());
        }
        let bytes = self.pending.take();
        self.size += bytes.len() as u64;
        self.upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        self.upload.put(Bytes::from(bytes));
        Ok(())
    }

    /// Passes what was written on: buffered JSON to the compressor, compressed bytes to
    /// the upload, each once there is enough of it.
    async fn pass_on(&mut self) -> anyhow::Result<()> {
        self.spill(false)?;
        self.drain(false).await
    }

    /// Hands the buffered JSON to the ZIP writer once there is enough (or `all`).
    fn spill(&mut self, all: bool) -> anyhow::Result<()> {
        if !self.buffer.is_empty() && (all || self.buffer.len() >= BUFFER) {
            self.zip.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Ends the file being written (its buffered JSON goes first) and starts the next.
    fn start(&mut self, path: &str, options: SimpleFileOptions) -> anyhow::Result<()> {
        self.spill(true)?;
        self.zip.start_file(path, options)?;
        self.paths.push(path.to_owned());
        Ok(())
    }

    /// A text file (the README).
    pub async fn text(&mut self, path: &str, text: &str) -> anyhow::Result<()> {
        self.start(path, json_options())?;
        self.buffer.extend_from_slice(text.as_bytes());
        self.pass_on().await
    }

    /// Writes the central directory and completes the upload.
    pub async fn finish(mut self) -> anyhow::Result<u64> {
        self.spill(true)?;
        let Self {
            zip,
            pending,
            mut upload,
            size,
            ..
        } = self;
        zip.finish()?;
        let rest = pending.take();
        let size = size + rest.len() as u64;
        upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
        upload.put(Bytes::from(rest));
        upload.finish().await?;
        Ok(size)
    }

    /// Gives the upload up (a failed export).
    pub async fn abort(self) {
        if let Err(error) = self.upload.abort().await {
            tracing::warn!(%error, "could not abort an export's upload");
        }
    }
}

impl Archive for ZipExport {
    fn json<'a>(&'a mut self, path: &'a str, value: Value) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            self.start(path, json_options())?;
            serde_json::to_writer_pretty(&mut self.buffer, &value)?;
            self.pass_on().await
        }
        .boxed()
    }

    fn json_array<'a>(
        &'a mut self,
        path: &'a str,
        head: Value,
        key: &'a str,
        mut items: ItemStream<'a>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            self.start(path, json_options())?;
            // The head's members, then the array, written as they come.
            let mut members = match head {
                Value::Object(members) => members,
                _ => Map::new(),
            };
            members.remove(key);
            self.buffer.push(b'{');
            for (name, value) in &members {
                serde_json::to_writer(&mut self.buffer, name)?;
                self.buffer.push(b':');
                serde_json::to_writer(&mut self.buffer, value)?;
                self.buffer.push(b',');
            }
            serde_json::to_writer(&mut self.buffer, key)?;
            self.buffer.extend_from_slice(b":[");
            let mut first = true;
            while let Some(item) = items.next().await {
                let item = item?;
                if !first {
                    self.buffer.extend_from_slice(b",\n");
                }
                first = false;
                self.buffer.extend_from_slice(item.get().as_bytes());
                self.pass_on().await?;
            }
            self.buffer.extend_from_slice(b"]}");
            self.pass_on().await
        }
        .boxed()
    }

    fn takes_files(&self) -> bool {
        true
    }

    fn file<'a>(
        &'a mut self,
        path: &'a str,
        mut bytes: FileStream,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        async move {
            self.start(path, file_options())?;
            while let Some(chunk) = bytes.next().await {
                self.zip.write_all(&chunk?)?;
                self.drain(false).await?;
            }
            Ok(())
        }
        .boxed()
    }
}
