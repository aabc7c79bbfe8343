//! The browser client in `static/`, served at `/` with caching that cannot go stale.
//!
//! The client has no build step, so the version is taken at start-up: a SHA-256 of every
//! file under `static/assets/` (paths and contents). `index.html` is read once, every
//! `"/assets/` in it becomes `"/assets/<version>/`, and it is answered with
//! `Cache-Control: no-cache`. Files under `/assets/<version>/` are answered as immutable
//! for a year: a change to any asset changes the version, so a browser never keeps an old
//! one. The modules import each other by relative URLs, so they all stay under one version.
//!
//! An asset asked for under another version (a page loaded from an instance that runs
//! another release, during a rolling deploy) is still answered, from this release's file,
//! but with `no-cache`, so no cache keeps it under the wrong name. Other files of `static/`
//! (the icon) are served as they are, revalidated on each use.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use actix_files::NamedFile;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse, web};
use anyhow::Context;
use sha2::{Digest, Sha256};

use super::AppError;

/// Assets under the running release's version: a year, never revalidated.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// Everything else: kept, but checked with the server before each use.
const NO_CACHE: &str = "no-cache";

/// The loaded client: its version and its `index.html` pointing at that version.
#[derive(Debug, Clone)]
pub struct WebClient {
    root: PathBuf,
    version: String,
    index: web::Bytes,
}

impl WebClient {
    /// Reads `root` (normally `static/`). A missing `index.html` or `assets/` is an error:
    /// the server would otherwise start without its client. `settings` become
    /// `<meta name="companion:<name>" content="<value>">` in the page's head: what the
    /// client must know of this installation (the deletion grace period it states).
    pub fn load(root: &Path, settings: &[(&str, String)]) -> anyhow::Result<Arc<WebClient>> {
        let assets = root.join("assets");
        let mut files = Vec::new();
        collect(&assets, &mut files).with_context(|| {
            format!("could not read the client's assets in {}", assets.display())
        })?;
        files.sort();
        let mut hash = Sha256::new();
        for file in &files {
            let name = file.strip_prefix(&assets).unwrap_or(file);
            hash.update(name.to_string_lossy().as_bytes());
            hash.update([0]);
            hash.update(std::fs::read(file)?);
            hash.update([0]);
        }
        let digest = hash.finalize();
        let version: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let index_path = root.join("index.html");
        let meta: String = settings
            .iter()
            .map(|(name, value)| {
                format!(
                    "<meta name=\"companion:{}\" content=\"{}\">\n",
                    escape(name),
                    escape(value)
                )
            })
            .collect();
        let index = std::fs::read_to_string(&index_path)
            .with_context(|| format!("could not read {}", index_path.display()))?
            .replace("\"/assets/", &format!("\"/assets/{version}/"))
            .replacen("</head>", &format!("{meta}</head>"), 1);
        Ok(Arc::new(WebClient {
            root: root.to_owned(),
            version,
            index: web::Bytes::from(index),
        }))
    }

    /// The assets' version (what `/assets/<version>/` carries).
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `/`, `/index.html`, `/assets/…` and the other files of the client's directory.
    pub fn routes(self: &Arc<Self>, cfg: &mut web::ServiceConfig) {
        cfg.app_data(web::Data::from(self.clone()))
            .route("/", web::get().to(index))
            .route("/", web::head().to(index))
            .route("/index.html", web::get().to(index))
            .route("/index.html", web::head().to(index))
            .route("/assets/{version}/{path:.*}", web::get().to(asset))
            .route("/assets/{version}/{path:.*}", web::head().to(asset))
            .service(
                web::scope("")
                    .wrap(
                        actix_web::middleware::DefaultHeaders::new()
                            .add((header::CACHE_CONTROL, HeaderValue::from_static(NO_CACHE))),
                    )
                    .service(
                        actix_files::Files::new("/", &self.root)
                            .default_handler(web::to(super::not_found)),
                    ),
            );
    }
}

/// `text` safe inside an HTML attribute.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

async fn index(client: web::Data<WebClient>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, NO_CACHE))
        .body(client.index.clone())
}

/// A path under `assets/` made only of plain names (no `..`, no hidden files, no
/// backslashes), or `None`.
fn asset_path(path: &str) -> Option<PathBuf> {
    let mut safe = PathBuf::new();
    for segment in path.split('/') {
        let plain = !segment.is_empty()
            && !segment.starts_with('.')
            && segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !plain {
            return None;
        }
        safe.push(segment);
    }
    Some(safe)
}

async fn asset(
    req: HttpRequest,
    client: web::Data<WebClient>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, AppError> {
    let (version, path) = path.into_inner();
    let relative = asset_path(&path).ok_or_else(AppError::not_found)?;
    let path = client.root.join("assets").join(relative);
    // A directory opens like a file; only files are assets.
    let file = web::block(move || {
        if !path.is_file() {
            return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        }
        NamedFile::open(path)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .ok_or_else(AppError::not_found)?;
    let cache = if version == client.version {
        IMMUTABLE
    } else {
        NO_CACHE
    };
    let mut response = file.into_response(&req);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::asset_path;

    #[test]
    fn asset_paths_are_plain_names_only() {
        assert!(asset_path("app.js").is_some());
        assert!(asset_path("views/chat.js").is_some());
        for bad in [
            "",
            "../Cargo.toml",
            "views/../../x",
            ".env",
            "a//b",
            "a\\b",
            "a%2f",
        ] {
            assert!(asset_path(bad).is_none(), "{bad}");
        }
    }
}
