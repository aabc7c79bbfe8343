//! `companion admin backup` and `companion admin restore`: the database and the object
//! store's files, to and from a folder or an object-store URL.
//!
//! A backup is three things under its location:
//! - `database.dump`: `pg_dump --format=custom` of the whole database, one consistent
//!   snapshot (pg_dump reads in one repeatable-read transaction). The erasure ledger (schema
//!   `privacy_ledger`) is left out: it belongs to the running database, not to a backup.
//! - `media/<key>`: every object of the store, copied after the dump. A file uploaded while
//!   the backup ran may be there without its row, and one deleted meanwhile may be missing;
//!   the media sweep resolves both after a restore.
//! - `manifest.json`, written last: a location without it holds no complete backup.
//!
//! A restore replaces the database in one transaction (the schemas the dump holds are
//! dropped and loaded again; the ledger's schema is not among them), then makes
//! the store hold exactly the backup's files. The caller then applies pending migrations and
//! erases again every restored account the ledger names (see `main.rs`). Instances should
//! be stopped while it runs.
//!
//! The PostgreSQL client tools (`pg_dump`, `pg_restore`, `psql`) must be on `PATH`, of the
//! server's major version or newer.

use std::collections::BTreeSet;
use std::path::{Path as FsPath, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use chrono::{DateTime, Utc};
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::migrate;
use super::storage::Storage;

const DUMP: &str = "database.dump";
const MANIFEST: &str = "manifest.json";
const MEDIA: &str = "media";
const FORMAT: u32 = 1;
/// The erasure ledger's schema: it stays with the database, never in a backup.
const LEDGER: &str = "privacy_ledger";
/// The ledger's (idempotent) migration, run before a restore so that the ledger exists
/// even in a new, empty database.
const LEDGER_SQL: &str = include_str!("../../migrations/V14__erasure_ledger.sql");

/// What a backup holds, written last.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub created_at: DateTime<Utc>,
    /// The last migration applied to the database backed up.
    pub schema_version: i32,
    pub database_bytes: u64,
    pub objects: u64,
    pub object_bytes: u64,
}

/// A backup's location: a folder (created when missing) or an object-store URL
/// (`s3://bucket/prefix`, `file:///path`, … with the provider's usual credentials).
pub fn location(place: &str) -> anyhow::Result<Storage> {
    let url = if place.contains("://") {
        place.to_owned()
    } else {
        let path = std::path::absolute(place).context("the backup folder")?;
        format!("file://{}", path.display())
    };
    Storage::from_url(&url).context("the backup location")
}

/// Backs up the database at `database_url` and every object of `media` to `to`.
pub async fn backup(database_url: &str, media: &Storage, to: &Storage) -> anyhow::Result<Manifest> {
    if to.get(MANIFEST).await?.is_some() {
        bail!("the location already holds a backup; give an empty one");
    }
    let schema_version = schema_version(database_url).await?;

    let mut dump = Command::new("pg_dump")
        .args([
            "--format=custom",
            "--no-owner",
            "--no-privileges",
            &format!("--exclude-schema={LEDGER}"),
            "--dbname",
            database_url,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("could not run pg_dump (install the PostgreSQL client tools)")?;
    let mut output = dump.stdout.take().context("pg_dump's output")?;
    let mut stderr = dump.stderr.take().context("pg_dump's errors")?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut upload = writer(to, DUMP).await?;
    let mut database_bytes = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let read = output.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        database_bytes += read as u64;
        upload.wait_for_capacity(2).await?;
        upload.write(&buffer[..read]);
    }
    let status = dump.wait().await?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        upload.abort().await?;
        bail!("pg_dump failed: {}", errors.trim());
    }
    upload.finish().await?;

    let (mut objects, mut object_bytes) = (0u64, 0u64);
    let mut listing = media.store().list(None);
    while let Some(meta) = listing.try_next().await? {
        let key = meta.location.to_string();
        object_bytes += copy(media, &key, to, &format!("{MEDIA}/{key}")).await?;
        objects += 1;
    }

    let manifest = Manifest {
        format: FORMAT,
        created_at: Utc::now(),
        schema_version,
        database_bytes,
        objects,
        object_bytes,
    };
    to.put(MANIFEST, serde_json::to_vec_pretty(&manifest)?)
        .await?;
    Ok(manifest)
}

/// Replaces the database at `database_url` and the objects of `media` with the backup at
/// `from`; the erasure ledger stays as it is. Migrations and the ledger's erasures are the
/// caller's next steps.
pub async fn restore(
    database_url: &str,
    media: &Storage,
    from: &Storage,
) -> anyhow::Result<Manifest> {
    let manifest: Manifest = match from.get(MANIFEST).await? {
        Some(bytes) => serde_json::from_slice(&bytes).context("the backup's manifest")?,
        None => bail!("no complete backup there ({MANIFEST} is missing)"),
    };
    if manifest.format != FORMAT {
        bail!(
            "backup format {} is not one this version reads",
            manifest.format
        );
    }
    if manifest.schema_version > migrate::latest_version() {
        bail!(
            "the backup is of a newer version (schema {}, this one knows up to {}); restore it \
             with that version",
            manifest.schema_version,
            migrate::latest_version()
        );
    }

    let scratch = Scratch::new()?;
    let dump = scratch.0.join(DUMP);
    download(from, DUMP, &dump).await?;
    let (schemas, public_tables) = dump_contents(&dump).await?;
    let before = scratch.0.join("before.sql");
    tokio::fs::write(&before, before_sql(&schemas, &public_tables)).await?;
    // One transaction: the ledger made sure of, the dump's schemas dropped and loaded
    // again. Any error leaves the database as it was.
    let mut pipeline = Command::new("bash");
    pipeline
        .args([
            "-c",
            "set -o pipefail; { cat \"$BEFORE\"; pg_restore --no-owner --no-privileges -f - \
             \"$DUMP\"; } | psql -X -q -v ON_ERROR_STOP=1 --single-transaction \
             --dbname \"$TARGET\"",
        ])
        .env("BEFORE", &before)
        .env("DUMP", &dump)
        .env("TARGET", database_url);
    finished(
        pipeline,
        "pg_restore and psql",
        "the database was not restored (it is unchanged)",
    )
    .await?;

    let prefix = Path::from(MEDIA);
    let mut kept = BTreeSet::new();
    let mut listing = from.store().list(Some(&prefix));
    while let Some(meta) = listing.try_next().await? {
        let key = meta.location.to_string();
        let Some(own) = key.strip_prefix(&format!("{MEDIA}/")) else {
            continue;
        };
        copy(from, &key, media, own).await?;
        kept.insert(own.to_owned());
    }
    let extra: Vec<String> = media
        .store()
        .list(None)
        .map_ok(|meta| meta.location.to_string())
        .try_filter(|key| futures_util::future::ready(!kept.contains(key)))
        .try_collect()
        .await?;
    for key in extra {
        media.delete(&key).await?;
    }
    if kept.len() as u64 != manifest.objects {
        bail!(
            "the backup lists {} files but holds {}",
            manifest.objects,
            kept.len()
        );
    }
    Ok(manifest)
}

/// Makes sure of the ledger, then drops what the dump will create.
fn before_sql(schemas: &[String], public_tables: &[String]) -> String {
    let mut sql = format!("{LEDGER_SQL}\n");
    for schema in schemas.iter().filter(|s| *s != LEDGER) {
        sql.push_str(&format!(
            "DROP SCHEMA IF EXISTS {} CASCADE;\n",
            quoted(schema)
        ));
    }
    for table in public_tables {
        sql.push_str(&format!(
            "DROP TABLE IF EXISTS public.{} CASCADE;\n",
            quoted(table)
        ));
    }
    sql
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The schemas, and the tables of `public`, that a dump creates (from its table of contents).
async fn dump_contents(dump: &FsPath) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let mut list = Command::new("pg_restore");
    list.arg("--list").arg(dump);
    let contents = finished(
        list,
        "pg_restore",
        "the backup's database dump cannot be read",
    )
    .await?;
    let mut schemas = Vec::new();
    let mut tables = Vec::new();
    // Entries look like `215; 2615 16386 SCHEMA - chat` and `216; 1259 16387 TABLE public t`.
    for line in contents.lines() {
        if line.starts_with(';') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            [_, _, _, "SCHEMA", "-", name, ..] => schemas.push((*name).to_owned()),
            [_, _, _, "TABLE", "public", name, ..] => tables.push((*name).to_owned()),
            _ => {}
        }
    }
    if !schemas.iter().any(|s| s == "privacy") {
        bail!("the backup's database has no privacy schema: not a Companion backup");
    }
    Ok((schemas, tables))
}

async fn schema_version(database_url: &str) -> anyhow::Result<i32> {
    let mut query = Command::new("psql");
    query.args([
        "-X",
        "-At",
        "-c",
        "SELECT max(version) FROM refinery_schema_history",
        "--dbname",
        database_url,
    ]);
    finished(query, "psql", "could not read the database's version")
        .await?
        .trim()
        .parse()
        .context("the database has no migrations applied")
}

/// Runs `command` to its end: what it printed, or an error starting with `failed` and
/// ending with what it printed on standard error.
async fn finished(mut command: Command, tools: &str, failed: &str) -> anyhow::Result<String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("could not run {tools} (install the PostgreSQL client tools)"))?;
    if !out.status.success() {
        bail!("{failed}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn writer(to: &Storage, key: &str) -> anyhow::Result<WriteMultipart> {
    let upload = to.store().put_multipart(&Path::from(key)).await?;
    Ok(WriteMultipart::new_with_chunk_size(upload, to.part_size()))
}

/// Streams one object to another store; its size.
async fn copy(from: &Storage, key: &str, to: &Storage, to_key: &str) -> anyhow::Result<u64> {
    let mut stream = from.store().get(&Path::from(key)).await?.into_stream();
    let mut upload = writer(to, to_key).await?;
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        upload.wait_for_capacity(2).await?;
        upload.put(chunk);
    }
    upload.finish().await?;
    Ok(size)
}

async fn download(from: &Storage, key: &str, file: &FsPath) -> anyhow::Result<()> {
    let mut stream = match from.store().get(&Path::from(key)).await {
        Ok(found) => found.into_stream(),
        Err(object_store::Error::NotFound { .. }) => bail!("the backup has no {key}"),
        Err(e) => return Err(e.into()),
    };
    let mut out = tokio::fs::File::create(file).await?;
    while let Some(chunk) = stream.next().await {
        out.write_all(&chunk?).await?;
    }
    out.flush().await?;
    Ok(())
}

/// A private temporary folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("companion-restore-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
