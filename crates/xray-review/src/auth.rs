//! Passwords (Argon2id, PHC strings), session tokens and CSRF tokens.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use sha2::{Digest, Sha256};

use crate::ReviewError;

/// Shortest password accepted for a new account.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// How long a session lasts, in seconds (one working day).
pub const SESSION_SECONDS: i64 = 12 * 3600;

/// Hashes a password with Argon2id and a random salt (the default OWASP parameters).
pub fn hash_password(name: &str, password: &str) -> Result<String, ReviewError> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(ReviewError::Account {
            name: name.to_string(),
            reason: format!("the password needs at least {MIN_PASSWORD_CHARS} characters"),
        });
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| ReviewError::Account {
            name: name.to_string(),
            reason: format!("hashing failed: {e}"),
        })
}

/// Whether `password` matches a stored PHC hash (in constant time; a malformed hash never
/// matches).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|hash| {
            Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A fresh random token: 32 bytes from the operating system's generator, as hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    xray_infer::hex(&bytes)
}

/// What the database keeps of a session token: its SHA-256, so a copy of the database
/// cannot be replayed as a login.
pub fn token_digest(token: &str) -> String {
    xray_infer::hex(&Sha256::digest(token.as_bytes()))
}

/// Compares two tokens in time independent of where they differ.
pub fn tokens_match(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Checks a new account's name: 1-64 letters, digits, dots, dashes or underscores.
pub fn check_user_name(name: &str) -> Result<(), ReviewError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ReviewError::Account {
            name: name.to_string(),
            reason: "use 1-64 letters, digits, '.', '_' or '-'".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_only_itself() {
        let hash = hash_password("alice", "correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("correct horse batterz", &hash));
        assert!(!verify_password("correct horse battery", "not a hash"));
    }

    #[test]
    fn short_passwords_and_odd_names_are_refused() {
        assert!(hash_password("bob", "short").is_err());
        assert!(check_user_name("../etc").is_err());
        assert!(check_user_name("").is_err());
        assert!(check_user_name("dr.smith-2").is_ok());
    }

    #[test]
    fn tokens_are_distinct_and_compared_whole() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(tokens_match(&a, &a.clone()));
        assert!(!tokens_match(&a, &b));
        assert!(!tokens_match(&a, &a[..63]));
        assert_ne!(token_digest(&a), a);
    }
}
