//! Opaque secrets (refresh tokens, email tokens): 256 random bits, URL-safe base64 for the
//! client, SHA-256 at rest. The values are random, so a fast hash is enough: a stolen
//! table reveals nothing usable.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// A new secret: `(what the client gets, what we store)`.
pub fn generate() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = digest(&token);
    (token, hash)
}

/// What we store for a presented token.
pub fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}
