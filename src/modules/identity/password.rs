//! Password policy and hashing.
//!
//! Policy (NIST SP 800-63B style): 8 to 128 characters, not one of the 10,000 most common
//! passwords (`common-passwords.txt`, from zxcvbn's frequency list, compared
//! case-insensitively), and no composition rules. Hashes are argon2id with m=19456 KiB, t=2,
//! p=1 in PHC string form; hashing and verifying run on the blocking pool, never on an async
//! worker, and at most one per core at a time: each run fills 19 MiB, so sixteen logins at
//! once on two cores would thrash the caches and hold 300 MiB where two runs do the same work
//! with 38 MiB. Extra requests wait their turn in async land.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MIN_LEN: usize = 8;
pub const MAX_LEN: usize = 128;

static COMMON: LazyLock<HashSet<&'static str>> =
    LazyLock::new(|| include_str!("common-passwords.txt").lines().collect());

/// Why a password is refused, worded for the person choosing it.
pub fn policy_violation(password: &str) -> Option<&'static str> {
    let len = password.chars().count();
    if len < MIN_LEN {
        Some("must be at least 8 characters")
    } else if len > MAX_LEN {
        Some("must be at most 128 characters")
    } else if COMMON.contains(password.to_lowercase().as_str()) {
        Some("is too common; choose one that is harder to guess")
    } else {
        None
    }
}

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid; `Params::new` only fails outside range.
    let params = Params::new(19_456, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` (blocking, ~tens of milliseconds: call from the blocking pool).
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks `password` against a stored PHC hash (blocking).
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|parsed| {
            argon2()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A valid hash of a password nobody knows, verified against when the account does not exist
/// so a login for an unknown email costs the same time as one for a known email.
pub static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("no account has this password, ever").unwrap_or_default());

/// One permit per core for the argon2 runs in flight.
static CORES: LazyLock<Arc<tokio::sync::Semaphore>> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Arc::new(tokio::sync::Semaphore::new(cores))
});

/// Runs `work` on the blocking pool once a core is free for it.
async fn on_a_core<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let _permit = CORES.clone().acquire_owned().await?;
    Ok(tokio::task::spawn_blocking(work).await?)
}

/// Hashes on the blocking pool.
pub async fn hash_blocking(password: String) -> anyhow::Result<String> {
    Ok(on_a_core(move || hash(&password)).await??)
}

/// Verifies on the blocking pool; `None` as the stored hash verifies against [`DUMMY_HASH`]
/// and answers false.
pub async fn verify_blocking(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    on_a_core(move || match stored {
        Some(stored) => verify(&password, &stored),
        None => {
            let _ = verify(&password, &DUMMY_HASH);
            false
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_refuses_short_long_and_common_passwords() {
        assert!(policy_violation("short").is_some());
        assert!(policy_violation(&"x".repeat(129)).is_some());
        assert!(policy_violation("password1").is_some());
        assert!(policy_violation("PassWord123").is_some());
        assert!(policy_violation("correct horse battery staple").is_none());
        // Characters, not bytes: eight accented letters are eight characters.
        assert!(policy_violation("éééééééé").is_none());
    }

    #[test]
    fn hashes_are_argon2id_with_the_required_parameters_and_verify() {
        let hashed = hash("a fine passphrase").unwrap();
        assert!(
            hashed.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hashed}"
        );
        assert!(verify("a fine passphrase", &hashed));
        assert!(!verify("another passphrase", &hashed));
        assert!(!verify("a fine passphrase", "not a hash"));
    }
}
