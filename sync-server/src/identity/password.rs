//! Password policy (RULES.md: at least 12 characters including special characters) and argon2id.

use std::sync::OnceLock;

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::HashCost;
use crate::error::{Error, Result};

pub const MIN_CHARS: usize = 12;
pub const MAX_CHARS: usize = 256;

/// Problems with a proposed password; empty when acceptable.
pub fn policy_problems(password: &str) -> Vec<String> {
    let mut p = Vec::new();
    let n = password.chars().count();
    if n < MIN_CHARS {
        p.push(format!("must be at least {MIN_CHARS} characters"));
    }
    if n > MAX_CHARS {
        p.push(format!("must be at most {MAX_CHARS} characters"));
    }
    if !password
        .chars()
        .any(|c| !c.is_alphanumeric() && !c.is_whitespace())
    {
        p.push("must contain a special character (not a letter, digit or space)".into());
    }
    p
}

fn hasher(cost: HashCost) -> Result<Argon2<'static>> {
    let params = match cost {
        // OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1.
        HashCost::Standard => Params::new(19 * 1024, 2, 1, None),
        HashCost::InsecureFast => Params::new(Params::MIN_M_COST, 1, 1, None),
    }
    .map_err(|e| Error::Hash(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes on the blocking pool (argon2 is deliberately slow).
pub async fn hash(cost: HashCost, password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        hasher(cost)?
            .hash_password(password.as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| Error::Hash(e.to_string()))
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// Checks a password against a stored PHC string (its own parameters apply).
pub async fn verify(stored: String, password: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| Error::Hash(e.to_string()))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|e| Error::Task(e.to_string()))?
}

/// A hash to verify against when the account does not exist, so that the answer takes as long.
/// One per cost: verifying takes the stored hash's cost, so a dummy made at another cost (a test
/// process runs both) would answer faster or slower than a real account.
pub async fn dummy_hash(cost: HashCost) -> Result<String> {
    static STANDARD: OnceLock<String> = OnceLock::new();
    static FAST: OnceLock<String> = OnceLock::new();
    let cell = match cost {
        HashCost::Standard => &STANDARD,
        HashCost::InsecureFast => &FAST,
    };
    if let Some(h) = cell.get() {
        return Ok(h.clone());
    }
    let h = hash(cost, "dummy password for timing!".into()).await?;
    Ok(cell.get_or_init(|| h).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eleven_characters_fail_twelve_pass() {
        assert!(!policy_problems("abcdefghij!").is_empty()); // 11
        assert!(policy_problems("abcdefghijk!").is_empty()); // 12
        assert!(!policy_problems("abcdefghijkl").is_empty()); // no special
        assert!(policy_problems("ééééééééééé!").is_empty()); // characters, not bytes
    }

    #[tokio::test]
    async fn hash_and_verify() {
        let h = hash(HashCost::InsecureFast, "correct horse!".into())
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify(h.clone(), "correct horse!".into()).await.unwrap());
        assert!(!verify(h, "wrong horse!!".into()).await.unwrap());
    }
}
