//! The application state every handler receives: database, clock, configuration, mail, limits.

use std::ops::Deref;
use std::sync::Arc;

use fitedge_core::time::{Clock, Timestamp};
use tokio::sync::Notify;

use crate::config::Config;
use crate::crypto;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::identity::sealed::TotpKeys;
use crate::mail::MailSender;
use crate::metrics::Metrics;
use crate::outbox::Handlers;
use crate::ratelimit::RateLimiter;

/// Cheap to clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

pub struct Inner {
    pub db: Db,
    pub clock: Arc<dyn Clock>,
    pub config: Config,
    pub mail: Arc<dyn MailSender>,
    pub metrics: Metrics,
    pub address_limiter: RateLimiter,
    pub account_limiter: RateLimiter,
    /// Sync messages per account (`--sync-rate-limit`).
    pub sync_limiter: RateLimiter,
    /// Key for HMAC and encryption of stored idempotent responses.
    pub secret: [u8; 32],
    /// Short public id of `secret`, stored with each record so a key change is recognised.
    pub secret_id: String,
    /// Seals TOTP secrets at rest (ADR 0013); derived from the same configured key in its own
    /// domain. Unlike `secret` it is never per-process random: a sealed secret must outlive it.
    pub totp_keys: TotpKeys,
    /// Woken after a transaction that wrote to the outbox commits.
    pub outbox_notify: Notify,
    pub outbox_handlers: Handlers,
    /// Sync: documents loaded on this node and the connections listening to them.
    pub sync: crate::sync::Hub,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The server key never appears in logs or panics.
        f.debug_struct("Inner")
            .field("db", &self.db)
            .field("clock", &self.clock)
            .field("config", &self.config)
            .field("secret", &"<redacted>")
            .field("secret_id", &self.secret_id)
            .field("totp_keys", &self.totp_keys)
            .finish_non_exhaustive()
    }
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub fn new(
        db: Db,
        config: Config,
        clock: Arc<dyn Clock>,
        mail: Arc<dyn MailSender>,
        outbox_handlers: Handlers,
    ) -> Result<Self> {
        let configured = match &config.secret_key {
            Some(hex_key) => {
                let bytes = hex::decode(hex_key.trim())
                    .map_err(|_| Error::Config("FITEDGE_SECRET_KEY must be hexadecimal".into()))?;
                if bytes.len() < 32 {
                    return Err(Error::Config(
                        "FITEDGE_SECRET_KEY must be at least 32 bytes (64 hex digits)".into(),
                    ));
                }
                Some(bytes)
            }
            None => None,
        };
        let secret = match &configured {
            Some(bytes) => crypto::hmac_parts(bytes, "fitedge-secret-key", &[]),
            None => crypto::hmac_parts(&crypto::random_bytes(32)?, "fitedge-secret-key", &[]),
        };
        let totp_keys = TotpKeys::new(configured.as_deref(), config.dev);
        match (&configured, config.dev) {
            (Some(_), _) => tracing::info!(
                totp_key_id = totp_keys.current_id().unwrap_or_default(),
                "TOTP secrets are sealed under this key id (users.totp_key_id)"
            ),
            (None, true) => tracing::warn!(
                "DEV MODE without FITEDGE_SECRET_KEY: TOTP secrets are sealed under a public \
                 development key, which protects nothing"
            ),
            (None, false) => tracing::warn!(
                "FITEDGE_SECRET_KEY not set: TOTP enrolment is refused (503 mfa_unavailable), \
                 and plain TOTP secrets from earlier versions stay unsealed"
            ),
        }
        let secret_id = crypto::sha256_hex(&secret)[..16].to_string();
        Ok(Self(Arc::new(Inner {
            address_limiter: RateLimiter::new(config.rate_limit_address),
            account_limiter: RateLimiter::new(config.rate_limit_account),
            sync_limiter: RateLimiter::new(config.sync_rate_limit),
            db,
            clock,
            config,
            mail,
            metrics: Metrics::default(),
            secret,
            secret_id,
            totp_keys,
            outbox_notify: Notify::new(),
            outbox_handlers,
            sync: crate::sync::Hub::new(hex::encode(crypto::random_bytes(6)?)),
        })))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
