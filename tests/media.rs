//! Media through the public API: streamed uploads typed by their bytes, limits enforced while
//! streaming, downloads with ranges and ETags, owner-only access, deletion. Against the
//! in-memory store, the local disk and a real S3-compatible server (`support::s3`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use reqwest::multipart::{Form, Part};
use serde_json::Value;
use support::images::{png, png_sized};
use support::personal::Kept;
use support::s3::S3Server;
use support::{TestApp, TestUser, assert_error};

/// An MP3 as its first bytes show it (an ID3 tag), then silence.
fn mp3() -> Vec<u8> {
    let mut out = b"ID3\x04\x00\x00\x00\x00\x00\x00".to_vec();
    out.extend_from_slice(&[0xff, 0xfb, 0x90, 0x64]);
    out.extend(std::iter::repeat_n(0u8, 5000));
    out
}

fn form(kind: &str, file: Vec<u8>, name: &str, claimed: &str) -> Form {
    Form::new().text("type", kind.to_owned()).part(
        "file",
        Part::bytes(file)
            .file_name(name.to_owned())
            .mime_str(claimed)
            .unwrap(),
    )
}

async fn uploaded(app: &TestApp, user: &TestUser, form: Form) -> Value {
    let response = app.upload(user, form).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

/// Every object the store holds under `media/`.
async fn objects(app: &TestApp) -> Vec<String> {
    let store = app.platform.storage.store();
    store
        .list(Some(&Path::from("media")))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .unwrap()
}

/// `user` deletes the media at `url` (its API path).
async fn delete(app: &TestApp, user: &TestUser, url: &str) -> reqwest::Response {
    app.client
        .delete(app.url(url))
        .bearer_auth(&user.token)
        .send()
        .await
        .unwrap()
}

fn rows(app: &TestApp) -> String {
    app.query_one("SELECT count(*) FROM media.objects").unwrap()
}

#[tokio::test]
async fn an_upload_is_stored_typed_by_its_bytes_and_served_to_its_owner_only() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let image = png(4, 3000);
    // What is kept and served is the image without its metadata.
    let served = png(4, 0);

    // The client calls it a JPEG named .jpg: the bytes say PNG, and PNG it is.
    let media = uploaded(
        &app,
        &ann,
        form("image", image.clone(), "photo.jpg", "image/jpeg"),
    )
    .await;
    assert_eq!(media["type"], "image");
    assert_eq!(media["contentType"], "image/png");
    assert_eq!(media["size"], served.len());
    assert_eq!(media["isPublic"], false);
    let url = media["url"].as_str().unwrap().to_owned();
    assert_eq!(
        url,
        format!("/api/v1/media/{}", media["id"].as_str().unwrap())
    );
    // The file and its thumbnail.
    assert_eq!(objects(&app).await.len(), 2);

    let got = app.get_auth(&url, &ann.token).await;
    assert_eq!(got.status(), 200);
    let headers = got.headers().clone();
    assert_eq!(headers["content-type"], "image/png");
    assert_eq!(headers["content-length"], served.len().to_string().as_str());
    assert_eq!(headers["accept-ranges"], "bytes");
    assert_eq!(headers["cache-control"], "private, no-cache");
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(
        headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("sandbox")
    );
    let disposition = headers["content-disposition"].to_str().unwrap();
    assert_eq!(
        disposition,
        format!("inline; filename=\"{}.png\"", media["id"].as_str().unwrap())
    );
    assert_eq!(got.bytes().await.unwrap().as_ref(), served.as_slice());

    // The ETag is the content's: asking again with it is answered 304, without the body.
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(app.url(&url))
        .bearer_auth(&ann.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    // Another user, and nobody at all, get exactly what an unknown id gets.
    assert_error(app.get_auth(&url, &bob.token).await, 404, "NOT_FOUND").await;
    assert_error(app.get(&url).await, 404, "NOT_FOUND").await;
    let unknown = format!("/api/v1/media/{}", uuid::Uuid::now_v7());
    assert_error(app.get_auth(&unknown, &ann.token).await, 404, "NOT_FOUND").await;
    let bob_deletes = delete(&app, &bob, &url).await;
    assert_error(bob_deletes, 404, "NOT_FOUND").await;
    assert_eq!(objects(&app).await.len(), 2);

    // The owner deletes it: the row and both objects go.
    let deleted = delete(&app, &ann, &url).await;
    assert_eq!(deleted.status(), 204);
    assert_error(app.get_auth(&url, &ann.token).await, 404, "NOT_FOUND").await;
    assert!(objects(&app).await.is_empty());
    assert_eq!(rows(&app), "0");
}

#[tokio::test]
async fn ranges_are_served_for_seeking() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let sound = mp3();
    let media = uploaded(
        &app,
        &ann,
        form("audio", sound.clone(), "a.mp3", "audio/mpeg"),
    )
    .await;
    assert_eq!(media["contentType"], "audio/mpeg");
    let url = app.url(media["url"].as_str().unwrap());
    let ranged = |range: &'static str| {
        app.client
            .get(&url)
            .bearer_auth(&ann.token)
            .header("range", range)
            .send()
    };

    let part = ranged("bytes=10-19").await.unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 10-19/{}", sound.len()).as_str()
    );
    assert_eq!(part.headers()["content-length"], "10");
    assert_eq!(part.bytes().await.unwrap().as_ref(), &sound[10..20]);

    // The last 100 bytes, and everything from an offset.
    let tail = ranged("bytes=-100").await.unwrap();
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.unwrap().as_ref(),
        &sound[sound.len() - 100..]
    );
    let rest = ranged("bytes=5000-").await.unwrap();
    assert_eq!(rest.bytes().await.unwrap().as_ref(), &sound[5000..]);

    // Outside the file: 416, saying how long the file is.
    let outside = ranged("bytes=999999-").await.unwrap();
    assert_eq!(
        outside.headers()["content-range"],
        format!("bytes */{}", sound.len()).as_str()
    );
    assert_error(outside, 416, "RANGE_NOT_SATISFIABLE").await;
}

#[tokio::test]
async fn files_that_are_not_what_they_claim_are_refused_and_leave_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;

    // A PDF named and labelled as a PNG.
    let pdf = b"%PDF-1.7\n1 0 obj << /Type /Catalog >> endobj\n".repeat(20);
    let spoofed = app
        .upload(&ann, form("image", pdf, "cat.png", "image/png"))
        .await;
    assert_error(spoofed, 415, "UNSUPPORTED_MEDIA_TYPE").await;

    // A real MP3 declared as an image, with `type` before the file and after it.
    let mismatch = app
        .upload(&ann, form("image", mp3(), "a.png", "image/png"))
        .await;
    assert_error(mismatch, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    let type_last = Form::new()
        .part("file", Part::bytes(mp3()).file_name("a.mp3"))
        .text("type", "video");
    assert_error(
        app.upload(&ann, type_last).await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;

    // A polyglot: a valid PNG header followed by a page a browser would run.
    let mut polyglot = png(2, 0);
    polyglot.truncate(33);
    polyglot.extend_from_slice(b"<html><body><script>alert(document.cookie)</script>");
    polyglot.extend(std::iter::repeat_n(0u8, 500));
    let refused = app
        .upload(&ann, form("image", polyglot, "p.png", "image/png"))
        .await;
    assert_error(refused, 415, "UNSUPPORTED_MEDIA_TYPE").await;

    // Malformed forms: no file, no type, an unknown type, a stray field, not multipart.
    let no_file = Form::new().text("type", "image");
    let error = assert_error(app.upload(&ann, no_file).await, 422, "VALIDATION_ERROR").await;
    assert!(error["details"]["fields"]["file"].is_string(), "{error}");
    let no_type = Form::new().part("file", Part::bytes(png(2, 0)).file_name("a.png"));
    let error = assert_error(app.upload(&ann, no_type).await, 422, "VALIDATION_ERROR").await;
    assert!(error["details"]["fields"]["type"].is_string(), "{error}");
    let odd_type = form("document", png(2, 0), "a.png", "image/png");
    assert_error(app.upload(&ann, odd_type).await, 422, "VALIDATION_ERROR").await;
    let stray = form("image", png(2, 0), "a.png", "image/png").text("ownerId", "someone");
    let error = assert_error(app.upload(&ann, stray).await, 422, "VALIDATION_ERROR").await;
    assert!(error["details"]["fields"]["ownerId"].is_string(), "{error}");
    let json = app
        .client
        .post(app.url("/api/v1/media/upload"))
        .bearer_auth(&ann.token)
        .json(&serde_json::json!({"file": "aGVsbG8="}))
        .send()
        .await
        .unwrap();
    assert_error(json, 415, "UNSUPPORTED_MEDIA_TYPE").await;
    // Forms the reader refuses, each saying why: too many parts, no closing boundary.
    let mut crowded = form("image", png(2, 0), "a.png", "image/png");
    for n in 0..16 {
        crowded = crowded.text(format!("extra{n}"), "x");
    }
    let error = assert_error(app.upload(&ann, crowded).await, 400, "BAD_REQUEST").await;
    assert!(
        error["message"].as_str().unwrap().contains("16 parts"),
        "{error}"
    );
    // A stray field is not read to its end once it passes what the form may skip.
    let padded = form("image", png(2, 0), "a.png", "image/png").text("junk", "j".repeat(100_000));
    assert_error(app.upload(&ann, padded).await, 413, "PAYLOAD_TOO_LARGE").await;
    let unclosed = app
        .client
        .post(app.url("/api/v1/media/upload"))
        .bearer_auth(&ann.token)
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body("--XyZ\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\nimage\r\n")
        .send()
        .await
        .unwrap();
    let error = assert_error(unclosed, 400, "BAD_REQUEST").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("closing boundary"),
        "{error}"
    );
    let anonymous = app
        .client
        .post(app.url("/api/v1/media/upload"))
        .multipart(form("image", png(2, 0), "a.png", "image/png"))
        .send()
        .await
        .unwrap();
    assert_error(anonymous, 401, "UNAUTHORIZED").await;

    assert!(objects(&app).await.is_empty(), "{:?}", objects(&app).await);
    assert_eq!(rows(&app), "0");
}

#[tokio::test]
async fn an_upload_over_its_limit_is_cut_off_while_streaming_and_nothing_is_left_on_disk() {
    let dir = std::env::temp_dir().join(format!("companion-media-{}", uuid::Uuid::now_v7()));
    let url = format!("file://{}", dir.display());
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__STORAGE__URL", url.as_str()),
        ("COMPANION__MEDIA__IMAGE_MAX_BYTES", "200000"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;

    // Streamed in 64 KiB pieces, three times the limit.
    let big = png(4, 600_000);
    let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(65536).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
    let streamed = Form::new()
        .text("type", "image")
        .part("file", Part::stream(body).file_name("big.png"));
    let error = assert_error(app.upload(&ann, streamed).await, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(error["details"]["limitBytes"], 200_000);
    assert!(objects(&app).await.is_empty(), "{:?}", objects(&app).await);
    assert_eq!(rows(&app), "0");
    // Nothing on the disk either: no object, no staged part.
    let files: Vec<_> = walk(&dir);
    assert!(files.is_empty(), "{files:?}");

    // Under the limit, the same store keeps it, on disk.
    let fits = png(4, 150_000);
    let media = uploaded(&app, &ann, form("image", fits, "ok.png", "image/png")).await;
    let got = app
        .get_auth(media["url"].as_str().unwrap(), &ann.token)
        .await;
    assert_eq!(got.bytes().await.unwrap().as_ref(), png(4, 0).as_slice());
    // The file and its thumbnail.
    assert_eq!(walk(&dir).len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every file under `dir`.
fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

/// A real JPEG of `width`×`height` pixels, with the APPn/COM `segments` (marker, contents)
/// put right after its start.
fn jpeg(width: u32, height: u32, segments: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let pixels = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 90])
    });
    let mut encoded = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut encoded, 90)
        .encode_image(&pixels)
        .unwrap();
    let mut out = encoded[..2].to_vec();
    for (marker, contents) in segments {
        out.extend_from_slice(&[0xFF, *marker]);
        out.extend_from_slice(&u16::try_from(contents.len() + 2).unwrap().to_be_bytes());
        out.extend_from_slice(contents);
    }
    out.extend_from_slice(&encoded[2..]);
    out
}

/// An EXIF block (APP1) with the orientation tag and a GPS-looking string an uploader would
/// not want to publish.
fn exif(orientation: u16) -> Vec<u8> {
    let mut out = b"Exif\0\0MM\0\x2a\0\0\0\x08".to_vec();
    out.extend_from_slice(&2u16.to_be_bytes()); // two entries
    out.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1]); // Orientation, SHORT, 1
    out.extend_from_slice(&orientation.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let text = b"GPS 48.8584N 2.2945E\0";
    out.extend_from_slice(&[0x01, 0x0e, 0, 2]); // ImageDescription, ASCII
    out.extend_from_slice(&u32::try_from(text.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&38u32.to_be_bytes()); // offset of the text from the TIFF header
    out.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    out.extend_from_slice(text);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn bytes_of(
    app: &TestApp,
    user: &TestUser,
    url: &str,
) -> (reqwest::header::HeaderMap, Vec<u8>) {
    let got = app.get_auth(url, &user.token).await;
    assert_eq!(got.status(), 200, "{url}");
    let headers = got.headers().clone();
    (headers, got.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn images_are_served_without_their_metadata_and_with_a_thumbnail() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;

    // A photo with EXIF (GPS in it) and a comment, 600×300.
    let photo = jpeg(
        600,
        300,
        &[
            (0xE1, exif(1)),
            (0xFE, b"taken at home, 12 Rue Exemple".to_vec()),
        ],
    );
    let media = uploaded(&app, &ann, form("image", photo, "me.jpg", "image/jpeg")).await;
    assert_eq!(media["contentType"], "image/jpeg");
    assert_eq!(
        (media["width"].as_u64(), media["height"].as_u64()),
        (Some(600), Some(300))
    );
    // Small enough to be made during the upload, and the answer says so.
    assert_eq!(media["thumbnailStatus"], "ready");
    let (_, served) = bytes_of(&app, &ann, media["url"].as_str().unwrap()).await;
    assert!(!contains(&served, b"Exif"), "EXIF left in");
    assert!(!contains(&served, b"GPS"), "GPS left in");
    assert!(!contains(&served, b"Rue Exemple"), "comment left in");
    let decoded = image::load_from_memory(&served).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (600, 300));
    assert_eq!(media["size"], served.len());

    // The thumbnail: 256 on its long side, a JPEG (the photo is opaque), owner-only too.
    let thumbnail_url = media["thumbnailUrl"].as_str().unwrap().to_owned();
    let (headers, thumbnail) = bytes_of(&app, &ann, &thumbnail_url).await;
    assert_eq!(headers["content-type"], "image/jpeg");
    assert_eq!(
        headers["content-length"],
        thumbnail.len().to_string().as_str()
    );
    let small = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!((small.width(), small.height()), (256, 128));
    assert_error(
        app.get_auth(&thumbnail_url, &bob.token).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let etag = headers["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(app.url(&thumbnail_url))
        .bearer_auth(&ann.token)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // A phone photo EXIF says to turn a quarter (orientation 6) is served turned, since
    // without EXIF it would show sideways.
    let sideways = jpeg(400, 200, &[(0xE1, exif(6))]);
    let media = uploaded(&app, &ann, form("image", sideways, "s.jpg", "image/jpeg")).await;
    let (_, served) = bytes_of(&app, &ann, media["url"].as_str().unwrap()).await;
    assert!(!contains(&served, b"Exif"));
    let decoded = image::load_from_memory(&served).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (200, 400));
    assert_eq!(
        (media["width"].as_u64(), media["height"].as_u64()),
        (Some(200), Some(400))
    );

    // An animated GIF keeps its frames and loses its comment.
    let mut gif_bytes = Vec::new();
    {
        let palette = [0u8, 0, 0, 255, 255, 255];
        let mut encoder = gif::Encoder::new(&mut gif_bytes, 8, 8, &palette).unwrap();
        encoder.set_repeat(gif::Repeat::Infinite).unwrap();
        encoder
            .write_raw_extension(gif::AnyExtension(0xFE), &[b"secret note"])
            .unwrap();
        for colour in [0u8, 1] {
            let frame = gif::Frame {
                width: 8,
                height: 8,
                buffer: std::borrow::Cow::Owned(vec![colour; 64]),
                ..gif::Frame::default()
            };
            encoder.write_frame(&frame).unwrap();
        }
    }
    let media = uploaded(&app, &ann, form("image", gif_bytes, "a.gif", "image/gif")).await;
    let (_, served) = bytes_of(&app, &ann, media["url"].as_str().unwrap()).await;
    assert!(!contains(&served, b"secret note"));
    let mut decoder = gif::DecodeOptions::new()
        .read_info(served.as_slice())
        .unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = decoder.read_next_frame().unwrap() {
        frames.push(frame.buffer[0]);
    }
    assert_eq!(frames, vec![0, 1]);
    assert_eq!(decoder.repeat(), gif::Repeat::Infinite);

    // Audio has no thumbnail.
    let sound = uploaded(&app, &ann, form("audio", mp3(), "a.mp3", "audio/mpeg")).await;
    assert_eq!(sound["thumbnailUrl"], Value::Null);
    assert_eq!(sound["thumbnailStatus"], Value::Null);
    let url = format!("{}/thumbnail", sound["url"].as_str().unwrap());
    assert_error(app.get_auth(&url, &ann.token).await, 404, "NOT_FOUND").await;
}

#[tokio::test]
async fn decompression_bombs_and_unreadable_images_are_refused_and_leave_nothing() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;

    // 20,000 × 20,000 pixels claimed by a file of a few hundred bytes: refused from its
    // header, before anything is decoded.
    let mut bomb = png_sized(1, 1, 0);
    bomb[16..24].copy_from_slice(&[0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20]); // IHDR: 20,000²
    let crc = crc32fast::hash(&bomb[12..29]);
    bomb[29..33].copy_from_slice(&crc.to_be_bytes());
    let error = assert_error(
        app.upload(&ann, form("image", bomb, "b.png", "image/png"))
            .await,
        413,
        "PAYLOAD_TOO_LARGE",
    )
    .await;
    assert_eq!(error["details"]["maxPixels"], 40_000_000);
    assert_eq!(error["details"]["width"], 20_000);

    // A PNG whose pixel data is noise.
    let mut broken = png(64, 0);
    let idat = broken.windows(4).position(|w| w == b"IDAT").unwrap() + 4;
    for byte in &mut broken[idat..idat + 20] {
        *byte = 0x5a;
    }
    assert_error(
        app.upload(&ann, form("image", broken, "x.png", "image/png"))
            .await,
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    )
    .await;
    assert!(objects(&app).await.is_empty(), "{:?}", objects(&app).await);
    assert_eq!(rows(&app), "0");
}

#[tokio::test]
async fn a_large_image_gets_its_thumbnail_from_a_job() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    // 2,100 × 2,000 pixels: over the 4 megapixels made during the upload.
    let big = png_sized(2100, 2000, 0);
    let media = uploaded(&app, &ann, form("image", big, "big.png", "image/png")).await;
    assert_eq!(media["thumbnailStatus"], "pending");
    let url = media["thumbnailUrl"].as_str().unwrap().to_owned();
    let thumbnail = support::eventually(std::time::Duration::from_secs(30), || async {
        let got = app.get_auth(&url, &ann.token).await;
        if got.status() == 200 {
            Some(got.bytes().await.unwrap())
        } else {
            None
        }
    })
    .await;
    let small = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!(small.width(), 256);
    assert!((243..=244).contains(&small.height()), "{}", small.height());
    let status: String = app
        .query_one("SELECT thumbnail FROM media.objects")
        .unwrap();
    assert_eq!(status, "ready");
}

#[tokio::test]
async fn storage_is_limited_by_a_quota_per_tier() {
    let app = TestApp::spawn_with_vars(&[("COMPANION__PLANS__FREE__STORAGE_BYTES", "8000")]).await;
    let ann = app.register("ann@example.com").await;
    let first = uploaded(&app, &ann, form("audio", mp3(), "a.mp3", "audio/mpeg")).await;
    let used = first["size"].as_u64().unwrap();

    // The second would pass the quota: cut off while streaming, nothing kept.
    let error = assert_error(
        app.upload(&ann, form("audio", mp3(), "b.mp3", "audio/mpeg"))
            .await,
        413,
        "STORAGE_QUOTA_EXCEEDED",
    )
    .await;
    assert_eq!(error["details"]["quotaBytes"], 8_000);
    assert_eq!(error["details"]["usedBytes"], used);
    assert_eq!(objects(&app).await.len(), 1);
    assert_eq!(rows(&app), "1");

    // Deleting frees the space.
    let deleted = delete(&app, &ann, first["url"].as_str().unwrap()).await;
    assert_eq!(deleted.status(), 204);
    uploaded(&app, &ann, form("audio", mp3(), "b.mp3", "audio/mpeg")).await;

    // A premium account has its own, larger quota.
    let pam = app.premium("pam@example.com").await;
    for name in ["a.mp3", "b.mp3", "c.mp3"] {
        uploaded(&app, &pam, form("audio", mp3(), name, "audio/mpeg")).await;
    }
}

#[tokio::test]
async fn avatars_are_media_their_owner_uploaded_public_while_their_character_is() {
    use reqwest::Method;
    use serde_json::json;
    let app = TestApp::spawn().await;
    let ann = app.premium("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let picture = uploaded(&app, &ann, form("image", png(8, 0), "a.png", "image/png")).await;
    let picture_id = picture["id"].as_str().unwrap().to_owned();
    let picture_url = picture["url"].as_str().unwrap().to_owned();
    let bobs = uploaded(&app, &bob, form("image", png(8, 0), "b.png", "image/png")).await;
    let sound = uploaded(&app, &ann, form("audio", mp3(), "a.mp3", "audio/mpeg")).await;

    // A profile's avatar: only an image of one's own.
    let (app_ref, token) = (&app, ann.token.clone());
    let profile = |body: Value| {
        let token = token.clone();
        async move {
            app_ref
                .send_auth(Method::PUT, "/api/v1/users/profile", &token, &body)
                .await
        }
    };
    for refused in [&bobs["id"], &sound["id"]] {
        let error = assert_error(
            profile(json!({ "avatarMediaId": refused })).await,
            422,
            "VALIDATION_ERROR",
        )
        .await;
        assert!(
            error["details"]["fields"]["avatarMediaId"].is_string(),
            "{error}"
        );
    }
    let error = assert_error(
        profile(json!({ "avatarUrl": "https://tracker.example/p.png" })).await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(
        error["details"]["fields"]["avatarUrl"].is_string(),
        "{error}"
    );
    let me: Value = profile(json!({ "avatarMediaId": picture_id }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["avatarUrl"], picture_url.as_str());
    assert_eq!(me["avatarMediaId"], picture_id.as_str());
    // Its storage shows in the profile.
    let used = [&picture, &sound]
        .iter()
        .map(|m| m["size"].as_u64().unwrap())
        .sum::<u64>();
    assert_eq!(me["storage"]["usedBytes"], used);
    assert_eq!(me["storage"]["quotaBytes"], 5u64 * 1024 * 1024 * 1024);

    // A private character's avatar stays owner-only; public, anyone may see it.
    let created = app
        .send_auth(
            Method::POST,
            "/api/v1/characters",
            &ann.token,
            &json!({ "name": "Iris", "avatarMediaId": picture_id, "visibility": "private" }),
        )
        .await;
    assert_eq!(created.status(), 201);
    let character: Value = created.json().await.unwrap();
    assert_eq!(character["avatarUrl"], picture_url.as_str());
    assert_eq!(app.get(&picture_url).await.status(), 404);
    let path = format!("/api/v1/characters/{}", character["id"].as_str().unwrap());
    let public = app
        .send_auth(
            Method::PATCH,
            &path,
            &ann.token,
            &json!({ "visibility": "public" }),
        )
        .await;
    assert_eq!(public.status(), 200);
    let seen = app.get(&picture_url).await;
    assert_eq!(seen.status(), 200);
    assert_eq!(seen.headers()["cache-control"], "public, max-age=3600");
    let thumbnail = format!("{picture_url}/thumbnail");
    assert_eq!(app.get(&thumbnail).await.status(), 200);
    // Someone else's image cannot become a character's avatar.
    let error = assert_error(
        app.send_auth(
            Method::PATCH,
            &path,
            &ann.token,
            &json!({ "avatarMediaId": bobs["id"] }),
        )
        .await,
        422,
        "VALIDATION_ERROR",
    )
    .await;
    assert!(
        error["details"]["fields"]["avatarMediaId"].is_string(),
        "{error}"
    );
    let private = app
        .send_auth(
            Method::PATCH,
            &path,
            &ann.token,
            &json!({ "visibility": "private" }),
        )
        .await;
    assert_eq!(private.status(), 200);
    assert_eq!(app.get(&picture_url).await.status(), 404);

    // The owner deletes the picture: the profile and the character fall back to none.
    let deleted = delete(&app, &ann, &picture_url).await;
    assert_eq!(deleted.status(), 204);
    support::eventually(std::time::Duration::from_secs(20), || async {
        let me: Value = app
            .get_auth("/api/v1/users/profile", &ann.token)
            .await
            .json()
            .await
            .unwrap();
        let character: Value = app.get_auth(&path, &ann.token).await.json().await.unwrap();
        (me["avatarUrl"].is_null()
            && me["avatarMediaId"].is_null()
            && character["avatarUrl"].is_null()
            && character["avatarMediaId"].is_null())
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn the_sweep_removes_objects_without_rows_and_rows_without_objects() {
    let app = TestApp::spawn_with_vars(&[
        ("COMPANION__MEDIA__SWEEP_INTERVAL_SECS", "1"),
        ("COMPANION__MEDIA__ORPHAN_GRACE_SECS", "2"),
    ])
    .await;
    let ann = app.register("ann@example.com").await;
    let kept = uploaded(&app, &ann, form("image", png(8, 0), "k.png", "image/png")).await;
    let vanishing = uploaded(&app, &ann, form("audio", mp3(), "v.mp3", "audio/mpeg")).await;
    let store = app.platform.storage.store();
    // An object no row knows (an upload cut off between the store and the database)…
    let stray = Path::from(format!("media/{}/{}", ann.id, uuid::Uuid::now_v7()));
    store
        .put(&stray, bytes::Bytes::from_static(b"left behind").into())
        .await
        .unwrap();
    // …and a row whose object vanished.
    let gone = Path::from(format!(
        "media/{}/{}",
        ann.id,
        vanishing["id"].as_str().unwrap()
    ));
    store.delete(&gone).await.unwrap();

    support::eventually(std::time::Duration::from_secs(30), || async {
        let listed = objects(&app).await;
        (!listed.contains(&stray.to_string()) && rows(&app) == "1").then_some(())
    })
    .await;
    // What belongs together stays: the kept image, its thumbnail, its row.
    let id = kept["id"].as_str().unwrap();
    let mut listed = objects(&app).await;
    listed.sort();
    assert_eq!(
        listed,
        vec![
            format!("media/{}/{id}", ann.id),
            format!("media/{}/{id}.thumb", ann.id)
        ]
    );
    let got = app
        .get_auth(kept["url"].as_str().unwrap(), &ann.token)
        .await;
    assert_eq!(got.status(), 200);
    let url = vanishing["url"].as_str().unwrap();
    assert_error(app.get_auth(url, &ann.token).await, 404, "NOT_FOUND").await;
}

/// Settings of a store in `s3`'s bucket, plus `extra`, as the server takes them.
async fn spawn_on_s3(s3: &S3Server, extra: &[(&'static str, &str)]) -> TestApp {
    let mut vars = s3.vars("companion");
    vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_with_vars(&vars).await
}

/// A sound of `len` bytes whose every stretch is different, so a range shows where it came
/// from.
fn long_mp3(len: usize) -> Vec<u8> {
    let mut out = mp3();
    let mut n = 0u32;
    while out.len() < len {
        out.extend_from_slice(&n.to_le_bytes());
        n += 1;
    }
    out.truncate(len);
    out
}

#[tokio::test]
async fn an_s3_store_serves_downloads_through_presigned_urls_that_expire() {
    let s3 = S3Server::start().await;
    let app = spawn_on_s3(
        &s3,
        &[
            ("COMPANION__STORAGE__PRESIGN_SECS", "3"),
            ("COMPANION__MEDIA__AUDIO_MAX_BYTES", "8000000"),
        ],
    )
    .await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    // A client of no one's: it holds no token and no store credentials.
    let stranger = reqwest::Client::new();

    // 6 MiB of sound goes up as an S3 multipart upload of two parts, streamed.
    let sound = long_mp3(6 * 1024 * 1024);
    let media = uploaded(
        &app,
        &ann,
        form("audio", sound.clone(), "song.mp3", "audio/mpeg"),
    )
    .await;
    let id = media["id"].as_str().unwrap().to_owned();
    let url = app.url(media["url"].as_str().unwrap());

    // The owner is sent to the bucket; the redirect is not kept, since its URL expires.
    let answer = app
        .get_auth(media["url"].as_str().unwrap(), &ann.token)
        .await;
    assert_eq!(answer.status(), 307);
    assert_eq!(answer.headers()["cache-control"], "private, no-store");
    let location = answer.headers()["location"].to_str().unwrap().to_owned();
    let object = format!("{}/{}/companion/media/", s3.endpoint, s3.bucket);
    assert!(location.starts_with(&object), "{location}");
    assert!(location.contains("X-Amz-Expires=3"), "{location}");
    assert!(!location.contains(support::s3::SECRET_KEY), "{location}");

    // The bucket answers the URL with the file, typed and named as the server would.
    let fetched = stranger.get(&location).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert_eq!(fetched.headers()["content-type"], "audio/mpeg");
    assert_eq!(
        fetched.headers()["content-disposition"],
        format!("inline; filename=\"{id}.mp3\"").as_str()
    );
    assert!(fetched.bytes().await.unwrap().as_ref() == sound.as_slice());
    // Seeking works at the bucket too, across the parts' boundary.
    let boundary = 5 * 1024 * 1024;
    let part = stranger
        .get(&location)
        .header("range", format!("bytes={}-{}", boundary - 10, boundary + 9))
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.bytes().await.unwrap().as_ref(),
        &sound[boundary - 10..boundary + 10]
    );

    // An image's file and thumbnail are redirected alike.
    let image = uploaded(&app, &ann, form("image", png(8, 50), "a.png", "image/png")).await;
    let thumbnail = app
        .get_auth(image["thumbnailUrl"].as_str().unwrap(), &ann.token)
        .await;
    assert_eq!(thumbnail.status(), 307);
    let thumbnail_at = thumbnail.headers()["location"].to_str().unwrap().to_owned();
    let small = stranger.get(&thumbnail_at).send().await.unwrap();
    assert_eq!(small.status(), 200);
    assert_eq!(small.headers()["content-type"], "image/jpeg");

    // HEAD is answered here (a presigned URL is for one method); others get no redirect.
    let head = app
        .client
        .head(&url)
        .bearer_auth(&ann.token)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(
        head.headers()["content-length"],
        sound.len().to_string().as_str()
    );
    assert_error(
        app.get_auth(media["url"].as_str().unwrap(), &bob.token)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_error(
        app.get(media["url"].as_str().unwrap()).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // A URL changed by its holder (another object, a longer life) is refused by the bucket.
    let other_object = location.replace(&id, image["id"].as_str().unwrap());
    let longer = location.replace("X-Amz-Expires=3", "X-Amz-Expires=3600");
    for forged in [other_object, longer] {
        let refused = stranger.get(&forged).send().await.unwrap();
        assert_eq!(refused.status(), 403, "{forged}");
    }

    // Once its time is over the URL opens nothing; asking the server again signs a new one.
    tokio::time::sleep(std::time::Duration::from_millis(4500)).await;
    let expired = stranger.get(&location).send().await.unwrap();
    assert_eq!(expired.status(), 403);
    let again = app
        .get_auth(media["url"].as_str().unwrap(), &ann.token)
        .await;
    let renewed = again.headers()["location"].to_str().unwrap().to_owned();
    assert_ne!(renewed, location);
    let fetched = stranger.get(&renewed).send().await.unwrap();
    assert_eq!(fetched.status(), 200);
}

#[tokio::test]
async fn an_s3_store_keeps_nothing_of_a_refused_or_deleted_upload() {
    let s3 = S3Server::start().await;
    let app = spawn_on_s3(&s3, &[("COMPANION__MEDIA__AUDIO_MAX_BYTES", "7000000")]).await;
    let ann = app.register("ann@example.com").await;

    // Over the limit after two parts were sent: the multipart upload is aborted. The body is
    // chunked and still arriving when the answer is due; the answer must come at once, every
    // time (it once stalled, about one time in two, until the client gave up).
    let file = long_mp3(12 * 1024 * 1024);
    for _ in 0..5 {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> =
            file.chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(pieces));
        let streamed = Form::new()
            .text("type", "audio")
            .part("file", Part::stream(body).file_name("long.mp3"));
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            app.upload(&ann, streamed),
        )
        .await
        .expect("a refused upload is answered at once");
        let error = assert_error(answer, 413, "PAYLOAD_TOO_LARGE").await;
        assert_eq!(error["details"]["limitBytes"], 7_000_000);
        assert!(objects(&app).await.is_empty(), "{:?}", objects(&app).await);
        assert!(s3.files().is_empty(), "{:?}", s3.files());
        assert!(s3.staged_parts().is_empty(), "{:?}", s3.staged_parts());
        assert_eq!(rows(&app), "0");
    }

    // Without presign_secs the server passes the bytes through itself.
    let image = uploaded(&app, &ann, form("image", png(8, 50), "a.png", "image/png")).await;
    let got = app
        .get_auth(image["url"].as_str().unwrap(), &ann.token)
        .await;
    assert_eq!(got.status(), 200);
    assert_eq!(got.bytes().await.unwrap().as_ref(), png(8, 0).as_slice());
    assert_eq!(s3.files().len(), 2, "{:?}", s3.files());

    // Deleting removes the file and its thumbnail from the bucket.
    let deleted = delete(&app, &ann, image["url"].as_str().unwrap()).await;
    assert_eq!(deleted.status(), 204);
    assert!(s3.files().is_empty(), "{:?}", s3.files());
}

#[tokio::test]
async fn owners_list_their_own_media_newest_first() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let first = uploaded(&app, &ann, form("image", png(4, 0), "a.png", "image/png")).await;
    let second = uploaded(&app, &ann, form("audio", mp3(), "b.mp3", "audio/mpeg")).await;
    let third = uploaded(&app, &ann, form("image", png(6, 0), "c.png", "image/png")).await;
    let bobs = uploaded(&app, &bob, form("image", png(5, 0), "d.png", "image/png")).await;
    let ids = |page: &Value| -> Vec<String> {
        page["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let list = |query: &'static str, user: &TestUser| {
        let token = user.token.clone();
        let app = &app;
        async move {
            let response = app.get_auth(&format!("/api/v1/media{query}"), &token).await;
            assert_eq!(response.status(), 200, "{query}");
            response.json::<Value>().await.unwrap()
        }
    };

    let all = list("", &ann).await;
    let newest_first: Vec<String> = [&third, &second, &first]
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["totalElements"], 3);
    // Each as the upload described it.
    assert_eq!(all["content"][1], second);

    let sounds = list("?type=audio", &ann).await;
    assert_eq!(ids(&sounds), [second["id"].as_str().unwrap()]);
    let second_page = list("?size=2&page=1", &ann).await;
    assert_eq!(ids(&second_page), [first["id"].as_str().unwrap()]);
    assert_eq!(second_page["totalPages"], 2);
    // Nobody sees another's.
    assert_eq!(ids(&list("", &bob).await), [bobs["id"].as_str().unwrap()]);

    for bad in ["?type=document", "?size=0", "?size=101", "?page=-1"] {
        let response = app
            .get_auth(&format!("/api/v1/media{bad}"), &ann.token)
            .await;
        assert_error(response, 422, "VALIDATION_ERROR").await;
    }
    assert_error(app.get("/api/v1/media").await, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn media_exports_and_erases_its_share_of_a_person() {
    let app = TestApp::spawn().await;
    let ann = app.register("ann@example.com").await;
    let bob = app.register("bob@example.com").await;
    let picture = uploaded(&app, &ann, form("image", png(6, 40), "a.png", "image/png")).await;
    let sound = uploaded(&app, &ann, form("audio", mp3(), "b.mp3", "audio/mpeg")).await;
    let bobs = uploaded(&app, &bob, form("image", png(5, 0), "c.png", "image/png")).await;
    let media = app
        .personal_data
        .iter()
        .find(|share| share.name() == "media")
        .unwrap();
    assert_eq!(media.coverage().tables, ["media.objects"]);
    assert_eq!(media.coverage().prefixes, ["media/{user}/"]);
    let ann_id: uuid::Uuid = ann.id.parse().unwrap();

    // The export: every file as served, and a list describing them.
    let mut archive = Kept {
        takes_files: true,
        ..Kept::default()
    };
    media.export(ann_id, &mut archive).await.unwrap();
    let listed = archive.json["media.json"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    let picture_file = format!("media/{}.png", picture["id"].as_str().unwrap());
    let sound_file = format!("media/{}.mp3", sound["id"].as_str().unwrap());
    let mut files: Vec<&str> = listed.iter().map(|m| m["file"].as_str().unwrap()).collect();
    files.sort_unstable();
    let mut expected = [picture_file.as_str(), sound_file.as_str()];
    expected.sort_unstable();
    assert_eq!(files, expected);
    assert!(
        archive.files[&picture_file] == png(6, 0),
        "stripped, as served"
    );
    assert!(archive.files[&sound_file] == mp3());
    assert_eq!(archive.files.len(), 2, "no thumbnails, nobody else's");
    // An archive that takes no files gets the list alone.
    let mut listing = Kept::default();
    media.export(ann_id, &mut listing).await.unwrap();
    assert_eq!(listing.json["media.json"], Value::Array(listed));
    assert!(listing.files.is_empty());

    // Erasure: rows, files, thumbnails and a stray object under the prefix, and only Ann's.
    let stray = Path::from(format!("media/{ann_id}/left-by-a-cut-upload"));
    app.platform
        .storage
        .store()
        .put(&stray, b"partial".to_vec().into())
        .await
        .unwrap();
    media.erase(ann_id, uuid::Uuid::new_v4()).await.unwrap();
    let ann_rows = format!("SELECT count(*) FROM media.objects WHERE owner_id = '{ann_id}'");
    assert_eq!(app.query_one(&ann_rows).unwrap(), "0");
    let left: Vec<String> = objects(&app).await;
    assert!(left.iter().all(|key| !key.contains(&ann.id)), "{left:?}");
    assert_eq!(left.len(), 2, "Bob's file and thumbnail stay: {left:?}");
    let bobs_file = app
        .get_auth(bobs["url"].as_str().unwrap(), &bob.token)
        .await;
    assert_eq!(bobs_file.status(), 200);
    assert_error(
        app.get_auth(picture["url"].as_str().unwrap(), &ann.token)
            .await,
        404,
        "NOT_FOUND",
    )
    .await;
    // Run again (a resumed erasure): nothing left to do, no error.
    media.erase(ann_id, uuid::Uuid::new_v4()).await.unwrap();
    assert_eq!(objects(&app).await.len(), 2);
}
