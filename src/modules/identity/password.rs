//! Password policy and hashing.
//!
//! Policy (NIST SP 800-63B style): 8 to 128 characters, not one of the 10,000 most common
//! passwords (`common-passwords.txt`, from zxcvbn's frequency list, compared
//! case-insensitively), and no composition rules. Hashes are argon2id with m=19456 KiB, t=2,
//! p=1 in PHC string form.
//!
//! Hashing and verifying never run on an async worker. They run on a small pool of dedicated
//! threads, one per core, each owning its 19 MiB of argon2 memory for the life of the
//! process: a run reuses memory that is already mapped and warm instead of allocating and
//! faulting in 19 MiB every time, and at most one run per core is in flight (sixteen logins at
//! once on two cores would otherwise thrash the caches and hold 300 MiB). Extra requests wait
//! in the pool's queue, not on a thread.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, LazyLock, Mutex};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, PasswordHash, PasswordHasher, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

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

const M_COST: u32 = 19_456;

fn argon2() -> Argon2<'static> {
    // The parameters are constants known to be valid; `Params::new` only fails outside range.
    let params = Params::new(M_COST, 2, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Hashes `password` (blocking, ~tens of milliseconds: call through [`hash_blocking`]).
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon2()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Checks `password` against a stored PHC hash (blocking), allocating the memory the hash's
/// parameters call for.
#[cfg(test)]
fn verify(password: &str, stored: &str) -> bool {
    let mut blocks = Vec::new();
    verify_in(password, stored, &mut blocks)
}

/// Checks `password` against a stored PHC hash using `blocks` as argon2's memory, growing it
/// when the hash asks for more. The comparison is constant-time ([`Output`]'s equality).
fn verify_in(password: &str, stored: &str, blocks: &mut Vec<Block>) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::V0x13,
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    if blocks.len() < params.block_count() {
        blocks.resize(params.block_count(), Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut blocks[..])
        .is_ok()
        && Output::new(&out).is_ok_and(|computed| computed == expected)
}

/// A valid hash of a password nobody knows, verified against when the account does not exist
/// so a login for an unknown email costs the same time as one for a known email.
pub static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("no account has this password, ever").unwrap_or_default());

type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The hashing threads' queue: one thread per core, each with its own argon2 memory.
static POOL: LazyLock<mpsc::Sender<Job>> = LazyLock::new(|| {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for index in 0..cores {
        let receiver = receiver.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("argon2-{index}"))
            .spawn(move || {
                let mut blocks = vec![Block::default(); M_COST as usize];
                loop {
                    // The lock is held only while waiting for the next job, never while
                    // hashing. A poisoned lock still guards a valid receiver.
                    let next = receiver
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .recv();
                    let Ok(job) = next else { return };
                    // A job that panics loses its answer (its caller sees an error), not the
                    // thread.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut blocks)));
                }
            });
        if let Err(error) = spawned {
            tracing::error!(%error, "could not start a password hashing thread");
        }
    }
    sender
});

/// Runs `work` on a hashing thread and waits for its answer without holding an async worker.
async fn on_a_core<T: Send + 'static>(
    work: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
) -> anyhow::Result<T> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move |blocks| {
        let _ = answer.send(work(blocks));
    });
    POOL.send(job)
        .map_err(|_| anyhow::anyhow!("the password hashing threads are gone"))?;
    answered
        .await
        .map_err(|_| anyhow::anyhow!("a password hashing job failed"))
}

/// Hashes on a hashing thread.
pub async fn hash_blocking(password: String) -> anyhow::Result<String> {
    Ok(on_a_core(move |_| hash(&password)).await??)
}

/// Verifies on a hashing thread; `None` as the stored hash verifies against [`DUMMY_HASH`]
/// and answers false.
pub async fn verify_blocking(password: String, stored: Option<String>) -> anyhow::Result<bool> {
    on_a_core(move |blocks| match stored {
        Some(stored) => verify_in(&password, &stored, blocks),
        None => {
            let _ = verify_in(&password, &DUMMY_HASH, blocks);
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

    #[test]
    fn reused_memory_verifies_exactly_like_the_argon2_crate() {
        use argon2::password_hash::PasswordVerifier;
        // A hash with other parameters (more memory, a longer output) than ours: the
        // memory grows to fit and the answer matches the reference implementation's.
        let params = Params::new(32_768, 1, 1, Some(40)).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(
                b"another fine passphrase",
                &SaltString::generate(&mut OsRng),
            )
            .unwrap()
            .to_string();
        let mut blocks = vec![Block::default(); 8];
        for (password, stored) in [
            ("another fine passphrase", other.as_str()),
            ("another fine passphrasf", other.as_str()),
            ("a fine passphrase", DUMMY_HASH.as_str()),
        ] {
            let reference = PasswordHash::new(stored)
                .map(|parsed| {
                    argon2()
                        .verify_password(password.as_bytes(), &parsed)
                        .is_ok()
                })
                .unwrap();
            assert_eq!(
                verify_in(password, stored, &mut blocks),
                reference,
                "{stored}"
            );
        }
        assert!(verify_in("another fine passphrase", &other, &mut blocks));
        assert!(blocks.len() >= 32_768);
    }

    #[tokio::test]
    async fn the_hashing_threads_hash_and_verify() {
        let hashed = hash_blocking("a fine passphrase".into()).await.unwrap();
        assert!(
            verify_blocking("a fine passphrase".into(), Some(hashed.clone()))
                .await
                .unwrap()
        );
        assert!(
            !verify_blocking("a wrong passphrase".into(), Some(hashed))
                .await
                .unwrap()
        );
        assert!(
            !verify_blocking("a fine passphrase".into(), None)
                .await
                .unwrap()
        );
    }
}
