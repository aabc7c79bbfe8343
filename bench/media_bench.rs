//! The measuring half of `bench/media.sh` (built as the example `media_bench`).
//!
//! Alternates, `--rounds` times, writing `--size-mib` MiB straight to the object store
//! (`--store-url`, through object_store with the part size and parts in flight the server
//! uses) with uploading the same bytes as a video through a running server
//! (`POST /api/v1/media/upload`, streamed in 64 KiB pieces, with a `Content-Length` as
//! browsers send files). While each upload runs it reads
//! the server's RSS (`/proc/<pid>/status`) every 10 ms. Prints the throughputs, their ratio
//! and the largest RSS growth over the RSS before the upload.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use companion::platform::storage::Storage;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};

#[derive(Parser)]
struct Cli {
    /// `http://127.0.0.1:port`
    #[arg(long)]
    base: String,
    /// An access token of the uploading user.
    #[arg(long)]
    token: String,
    /// The server's object store (the same URL it was started with).
    #[arg(long)]
    store_url: String,
    /// The server's process id (for its RSS).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 100)]
    size_mib: usize,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

const PIECE: usize = 64 * 1024;

/// An MP4 as its first bytes show it (an `ftyp` box), then pseudo-random bytes.
fn video(size: usize) -> Vec<Bytes> {
    let mut data = b"\0\0\0\x18ftypisom\0\0\x02\0isomiso2".to_vec();
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    while data.len() < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        data.extend_from_slice(&state.to_le_bytes());
    }
    data.truncate(size);
    data.chunks(PIECE).map(Bytes::copy_from_slice).collect()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

async fn direct(storage: &Storage, pieces: &[Bytes]) -> Duration {
    let key = Path::from(format!("bench/direct-{}", uuid::Uuid::now_v7()));
    let start = Instant::now();
    let upload = storage.store().put_multipart(&key).await.unwrap();
    let mut writer = WriteMultipart::new_with_chunk_size(upload, storage.part_size());
    for piece in pieces {
        writer
            .wait_for_capacity(storage.parts_in_flight())
            .await
            .unwrap();
        // Without copying, as the server does: the fastest way to give the store bytes.
        writer.put(piece.clone());
    }
    writer.finish().await.unwrap();
    let took = start.elapsed();
    storage.store().delete(&key).await.unwrap();
    took
}

async fn through_server(cli: &Cli, client: &reqwest::Client, pieces: &[Bytes]) -> (Duration, u64) {
    let before = rss_kib(cli.pid);
    let sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = {
        let (sampling, pid) = (sampling.clone(), cli.pid);
        tokio::spawn(async move {
            let mut peak = 0;
            while sampling.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            peak
        })
    };
    // The request body must own its pieces (cloning `Bytes` shares them, copies nothing).
    let owned: Vec<Bytes> = pieces.iter().map(Bytes::clone).collect();
    let stream = futures_util::stream::iter(owned.into_iter().map(Ok::<_, std::io::Error>));
    // With its length, as a browser sends a file (so the body has a Content-Length and is
    // not chunked).
    let length = pieces.iter().map(|piece| piece.len() as u64).sum();
    let body = reqwest::Body::wrap_stream(stream);
    let form = reqwest::multipart::Form::new().text("type", "video").part(
        "file",
        reqwest::multipart::Part::stream_with_length(body, length).file_name("v.mp4"),
    );
    let start = Instant::now();
    let response = client
        .post(format!("{}/api/v1/media/upload", cli.base))
        .bearer_auth(&cli.token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    let took = start.elapsed();
    sampling.store(false, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.await.unwrap().max(rss_kib(cli.pid));
    assert_eq!(status, 201, "{body}");
    let deleted = client
        .delete(format!(
            "{}/api/v1/media/{}",
            cli.base,
            body["id"].as_str().unwrap()
        ))
        .bearer_auth(&cli.token)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    (took, peak.saturating_sub(before))
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let size = cli.size_mib * 1024 * 1024;
    let pieces = video(size);
    let storage = Storage::from_url(&cli.store_url).unwrap();
    let client = reqwest::Client::new();
    let mib = cli.size_mib as f64;
    let (mut direct_rates, mut server_rates, mut growths) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=cli.rounds {
        let d = direct(&storage, &pieces).await;
        let (s, growth) = through_server(&cli, &client, &pieces).await;
        let (d_rate, s_rate) = (mib / d.as_secs_f64(), mib / s.as_secs_f64());
        println!(
            "round {round}: direct {d_rate:.0} MiB/s ({d:.2?}), through the server {s_rate:.0} MiB/s ({s:.2?}), RSS growth {:.1} MiB",
            growth as f64 / 1024.0
        );
        direct_rates.push(d_rate);
        server_rates.push(s_rate);
        growths.push(growth);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (d, s) = (median(&mut direct_rates), median(&mut server_rates));
    let worst = growths.iter().max().copied().unwrap_or(0) as f64 / 1024.0;
    println!("direct (median)          {d:.0} MiB/s");
    println!("through the server       {s:.0} MiB/s");
    println!("ratio                    {:.2}× (goal ≥ 0.5×)", s / d);
    println!("largest RSS growth       {worst:.1} MiB (goal < 16 MiB)");
}
