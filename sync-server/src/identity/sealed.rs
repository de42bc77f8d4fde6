//! TOTP secrets at rest (ADR 0013). A database dump must not be enough to mint second factors,
//! so `users.totp_secret` and `users.totp_pending_secret` hold `v1:` + hex(nonce || ciphertext
//! || tag): AES-256-GCM under a key derived from `FITEDGE_SECRET_KEY` (its own domain, not the
//! idempotency key), with the user id as associated data so a sealed secret copied to another
//! account does not open. `users.totp_key_id` names the key that sealed the row's values.
//!
//! Values without the prefix are plain hex written before migration 0002; they keep working and
//! are sealed on their next successful use ([`upgrade_in_tx`]) or by [`seal_stored_secrets`].

use std::fmt;

use crate::crypto;
use crate::db::{col, Tx};
use crate::error::{ApiError, Error, Result};
use crate::state::AppState;

/// Marks a sealed value; plain values from earlier versions are bare hex.
pub const SEALED_PREFIX: &str = "v1:";
/// `totp_key_id` of values sealed under the public development key.
pub const DEV_KEY_ID: &str = "dev";
const KEY_DOMAIN: &str = "fitedge-totp-secret-key-v1";
const AAD_DOMAIN: &str = "fitedge-totp-secret-v1:";
/// Public on purpose. `--dev` without `FITEDGE_SECRET_KEY` seals under a key derived from this,
/// so that local trials keep their enrolments across restarts; such values are as readable as
/// plain text to anyone with this source, and are re-sealed under a real key once one is set.
const DEV_KEY_MATERIAL: &[u8] =
    b"FitEdge --dev without FITEDGE_SECRET_KEY: public, protects nothing";

#[derive(Clone)]
struct SealKey {
    key: [u8; 32],
    id: String,
}

impl SealKey {
    fn derive(material: &[u8], id: Option<&str>) -> Self {
        let key = crypto::hmac_parts(material, KEY_DOMAIN, &[]);
        // The id is public (stored in every row): a hash of the derived key, never the key.
        let id = id.map_or_else(
            || crypto::sha256_hex(&key)[..16].to_string(),
            str::to_string,
        );
        Self { key, id }
    }
}

/// The keys TOTP secrets are sealed and opened with.
#[derive(Clone)]
pub struct TotpKeys {
    /// What new values are sealed under: the configured key, the development key in `--dev`
    /// without one, or none (enrolment refused: a per-process key would not survive a restart).
    current: Option<SealKey>,
    /// Always available for opening: it is public anyway.
    dev: SealKey,
}

impl fmt::Debug for TotpKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpKeys")
            .field("current_id", &self.current.as_ref().map(|k| k.id.as_str()))
            .finish_non_exhaustive()
    }
}

/// A sealed value and the id of the key that sealed it.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub value: String,
    pub key_id: String,
}

fn aad(user_id: &str) -> Vec<u8> {
    format!("{AAD_DOMAIN}{user_id}").into_bytes()
}

/// 503 `mfa_unavailable`: the server cannot seal or open TOTP secrets (no durable key, or the
/// key changed). Not the client's fault, and not something a retry fixes by itself.
pub fn mfa_unavailable(message: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "mfa_unavailable",
        message,
    )
}

impl TotpKeys {
    /// `configured`: the decoded `FITEDGE_SECRET_KEY`, if set.
    pub fn new(configured: Option<&[u8]>, dev_mode: bool) -> Self {
        let dev = SealKey::derive(DEV_KEY_MATERIAL, Some(DEV_KEY_ID));
        let current = match configured {
            Some(material) => Some(SealKey::derive(material, None)),
            None if dev_mode => Some(dev.clone()),
            None => None,
        };
        Self { current, dev }
    }

    /// The id new values get; `None` when enrolment is refused.
    pub fn current_id(&self) -> Option<&str> {
        self.current.as_ref().map(|k| k.id.as_str())
    }

    /// Seals `secret` for `user_id`; `None` when there is no key that survives a restart.
    pub fn seal(&self, user_id: &str, secret: &[u8]) -> Result<Option<Sealed>> {
        let Some(k) = &self.current else {
            return Ok(None);
        };
        let sealed = crypto::seal_with_aad(&k.key, secret, &aad(user_id))?;
        Ok(Some(Sealed {
            value: format!("{SEALED_PREFIX}{}", hex::encode(sealed)),
            key_id: k.id.clone(),
        }))
    }

    /// The raw secret of a stored value. A value sealed under a key this server does not hold
    /// is 503 `mfa_unavailable` (logged); one that does not open is corrupt or was moved from
    /// another account (500, logged).
    pub fn open(&self, user_id: &str, stored: &str, key_id: Option<&str>) -> Result<Vec<u8>> {
        let Some(sealed_hex) = stored.strip_prefix(SEALED_PREFIX) else {
            if self.current.is_none() {
                tracing::warn!(
                    user_id,
                    "TOTP secret stored in plain text; set FITEDGE_SECRET_KEY so it is sealed"
                );
            }
            return hex::decode(stored).map_err(|_| Error::Corrupt("plain totp secret".into()));
        };
        let key = match (key_id, &self.current) {
            (Some(id), _) if id == DEV_KEY_ID => &self.dev,
            (Some(id), Some(current)) if current.id == id => current,
            (other, _) => {
                tracing::error!(
                    user_id,
                    sealed_under = other.unwrap_or("none"),
                    server_key = self.current_id().unwrap_or("none"),
                    "TOTP secret sealed under a key this server does not have \
                     (FITEDGE_SECRET_KEY changed or missing): the account cannot pass MFA"
                );
                return Err(mfa_unavailable(
                    "this account's second factor cannot be checked right now; \
                     contact the operator",
                )
                .into());
            }
        };
        let bytes =
            hex::decode(sealed_hex).map_err(|_| Error::Corrupt("sealed totp secret".into()))?;
        crypto::open_with_aad(&key.key, &bytes, &aad(user_id)).ok_or_else(|| {
            Error::Corrupt(format!(
                "sealed TOTP secret of user {user_id} does not open: altered, or copied from \
                 another account"
            ))
        })
    }

    /// Whether a stored value should be sealed again under the current key: plain text, or
    /// under the public development key once a real key is configured.
    pub fn needs_reseal(&self, stored: &str, key_id: Option<&str>) -> bool {
        let Some(current) = self.current_id() else {
            return false;
        };
        !stored.starts_with(SEALED_PREFIX) || key_id != Some(current)
    }
}

/// Seals the row's TOTP values under the current key when they are plain (or under the
/// development key and a real one is set), inside the caller's transaction. Reads the row again
/// there, so a retried or concurrent transaction cannot seal a stale value. Returns whether it
/// wrote; values under a key this server lacks are left alone.
pub async fn upgrade_in_tx(tx: &mut Tx, keys: &TotpKeys, user_id: &str) -> Result<bool> {
    let row = sqlx::query(
        "SELECT totp_secret, totp_pending_secret, totp_key_id FROM users WHERE id = $1",
    )
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(false) };
    let secret: Option<String> = col(&row, "totp_secret")?;
    let pending: Option<String> = col(&row, "totp_pending_secret")?;
    let key_id: Option<String> = col(&row, "totp_key_id")?;
    let kid = key_id.as_deref();
    let stale = [&secret, &pending]
        .into_iter()
        .flatten()
        .any(|v| keys.needs_reseal(v, kid));
    if !stale {
        return Ok(false);
    }
    let readable = |v: &str| {
        !v.starts_with(SEALED_PREFIX) || kid == Some(DEV_KEY_ID) || kid == keys.current_id()
    };
    if ![&secret, &pending]
        .into_iter()
        .flatten()
        .all(|v| readable(v))
    {
        return Ok(false);
    }
    let reseal = |v: &Option<String>| -> Result<Option<Sealed>> {
        match v {
            None => Ok(None),
            Some(v) => {
                let raw = keys.open(user_id, v, kid)?;
                keys.seal(user_id, &raw)
            }
        }
    };
    let (new_secret, new_pending) = (reseal(&secret)?, reseal(&pending)?);
    let Some(new_key_id) = new_secret
        .as_ref()
        .or(new_pending.as_ref())
        .map(|s| s.key_id.clone())
    else {
        return Ok(false);
    };
    sqlx::query(
        "UPDATE users SET totp_secret = $1, totp_pending_secret = $2, totp_key_id = $3
         WHERE id = $4",
    )
    .bind(new_secret.map(|s| s.value))
    .bind(new_pending.map(|s| s.value))
    .bind(new_key_id)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// What [`seal_stored_secrets`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SealReport {
    /// Accounts whose plain (or development-key) values are now sealed under the current key.
    pub sealed: u64,
    /// Accounts sealed under a key this server does not have: they cannot pass MFA until the
    /// old key is back or their TOTP is reset by an operator.
    pub unreadable: u64,
}

/// Seals every plain TOTP value still in the database, one account per transaction; meant to
/// run once at start (after migrations) so that dormant accounts are not left in plain text
/// until their next sign-in. Without a durable key it does nothing.
pub async fn seal_stored_secrets(state: &AppState) -> Result<SealReport> {
    let mut report = SealReport::default();
    let Some(current) = state.totp_keys.current_id().map(str::to_string) else {
        return Ok(report);
    };
    let rows = sqlx::query(
        "SELECT id, totp_secret, totp_pending_secret, totp_key_id FROM users
         WHERE totp_secret IS NOT NULL OR totp_pending_secret IS NOT NULL",
    )
    .fetch_all(state.db.pool())
    .await?;
    for row in &rows {
        let id: String = col(row, "id")?;
        let key_id: Option<String> = col(row, "totp_key_id")?;
        let values: Vec<String> = [
            col::<Option<String>>(row, "totp_secret")?,
            col::<Option<String>>(row, "totp_pending_secret")?,
        ]
        .into_iter()
        .flatten()
        .collect();
        let foreign = key_id
            .as_deref()
            .is_some_and(|k| k != current && k != DEV_KEY_ID)
            && values.iter().any(|v| v.starts_with(SEALED_PREFIX));
        if foreign {
            report.unreadable += 1;
            continue;
        }
        if !values
            .iter()
            .any(|v| state.totp_keys.needs_reseal(v, key_id.as_deref()))
        {
            continue;
        }
        let keys = state.totp_keys.clone();
        let wrote = state
            .db
            .write(|tx| {
                let (keys, id) = (keys.clone(), id.clone());
                Box::pin(async move { upgrade_in_tx(tx, &keys, &id).await })
            })
            .await?;
        if wrote {
            report.sealed += 1;
        }
    }
    if report.unreadable > 0 {
        tracing::error!(
            accounts = report.unreadable,
            "TOTP secrets sealed under another FITEDGE_SECRET_KEY: those accounts cannot pass MFA"
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_is_bound_to_the_user_and_the_key() {
        let keys = TotpKeys::new(Some(&[1u8; 32]), false);
        let s = keys
            .seal("user-a", b"0123456789abcdefghij")
            .unwrap()
            .unwrap();
        assert!(s.value.starts_with(SEALED_PREFIX));
        assert!(!s.value.contains(&hex::encode(b"0123456789abcdefghij")));
        let kid = Some(s.key_id.as_str());
        assert_eq!(
            keys.open("user-a", &s.value, kid).unwrap(),
            b"0123456789abcdefghij"
        );
        assert!(matches!(
            keys.open("user-b", &s.value, kid),
            Err(Error::Corrupt(_))
        ));
        let other = TotpKeys::new(Some(&[2u8; 32]), false);
        assert_ne!(other.current_id(), keys.current_id());
        assert!(matches!(
            other.open("user-a", &s.value, kid),
            Err(Error::Api(e)) if e.error == "mfa_unavailable"
        ));
    }

    #[test]
    fn no_key_refuses_to_seal_but_reads_plain_values() {
        let keys = TotpKeys::new(None, false);
        assert!(keys.seal("u", b"x").unwrap().is_none());
        assert_eq!(keys.open("u", "6869", None).unwrap(), b"hi");
        assert!(!keys.needs_reseal("6869", None), "nothing to seal with");
    }

    #[test]
    fn dev_values_open_anywhere_and_are_resealed_under_a_real_key() {
        let dev = TotpKeys::new(None, true);
        assert_eq!(dev.current_id(), Some(DEV_KEY_ID));
        let s = dev.seal("u", b"secret").unwrap().unwrap();
        assert!(!dev.needs_reseal(&s.value, Some(DEV_KEY_ID)));
        let real = TotpKeys::new(Some(&[3u8; 32]), true);
        assert_eq!(
            real.open("u", &s.value, Some(DEV_KEY_ID)).unwrap(),
            b"secret"
        );
        assert!(real.needs_reseal(&s.value, Some(DEV_KEY_ID)));
        assert!(real.needs_reseal("6869", None), "plain text");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let keys = TotpKeys::new(Some(&[9u8; 32]), false);
        let d = format!("{keys:?}");
        assert!(!d.contains("key: ["), "{d}");
        assert!(d.contains(keys.current_id().unwrap()));
    }
}
