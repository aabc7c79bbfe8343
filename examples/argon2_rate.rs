//! Raw argon2id verify rate on one core, with the parameters identity uses (m=19456 KiB,
//! t=2, p=1): the ceiling a login endpoint is measured against in `bench/identity.sh`.
//! Each verify recomputes the hash into memory allocated once, the fastest form the argon2
//! crate offers (the server's hashing threads do the same), so the ceiling is not lowered by
//! allocation costs the server avoids.
//! Usage: `cargo run --release --example argon2_rate [seconds]` — prints verifies per second.

use std::time::{Duration, Instant};

use argon2::{Algorithm, Argon2, Block, Params, Version};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let params = Params::new(19_456, 2, 1, None).map_err(|e| e.to_string())?;
    let mut blocks = vec![Block::default(); params.block_count()];
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let password = b"a long and unusual passphrase";
    let salt = b"sixteen byte salt";
    let mut expected = [0u8; 32];
    argon
        .hash_password_into_with_memory(password, salt, &mut expected, &mut blocks)
        .map_err(|e| e.to_string())?;
    let deadline = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut verified = 0u64;
    while start.elapsed() < deadline {
        let mut out = [0u8; 32];
        argon
            .hash_password_into_with_memory(password, salt, &mut out, &mut blocks)
            .map_err(|e| e.to_string())?;
        if out != expected {
            return Err("argon2 gave two answers for one input".into());
        }
        verified += 1;
    }
    println!("{:.1}", verified as f64 / start.elapsed().as_secs_f64());
    Ok(())
}
