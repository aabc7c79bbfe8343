//! Raw argon2id verify rate on one core, with the parameters identity uses (m=19456 KiB,
//! t=2, p=1): the ceiling a login endpoint is measured against in `bench/identity.sh`.
//! Usage: `cargo run --release --example argon2_rate [seconds]` — prints verifies per second.

use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let params = Params::new(19_456, 2, 1, None).map_err(|e| e.to_string())?;
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    let stored = argon
        .hash_password(b"a long and unusual passphrase", &salt)
        .map_err(|e| e.to_string())?
        .to_string();
    let parsed = PasswordHash::new(&stored).map_err(|e| e.to_string())?;
    let deadline = Duration::from_secs(seconds);
    let start = Instant::now();
    let mut verified = 0u64;
    while start.elapsed() < deadline {
        argon
            .verify_password(b"a long and unusual passphrase", &parsed)
            .map_err(|e| e.to_string())?;
        verified += 1;
    }
    println!("{:.1}", verified as f64 / start.elapsed().as_secs_f64());
    Ok(())
}
