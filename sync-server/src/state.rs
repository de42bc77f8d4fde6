//! The application state every handler receives: database, clock, configuration, mail, limits.

use std::ops::Deref;
use std::sync::Arc;

use fitedge_core::time::{Clock, Timestamp};
use tokio::sync::Notify;

use crate::config::Config;
use crate::crypto;
use crate::db::Db;
use crate::error::{Error, Result};
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
    /// Key for HMAC and encryption of stored idempotent responses.
    pub secret: [u8; 32],
    /// Short public id of `secret`, stored with each record so a key change is recognised.
    pub secret_id: String,
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
        let secret: [u8; 32] = match &config.secret_key {
            Some(hex_key) => {
                let bytes = hex::decode(hex_key.trim())
                    .map_err(|_| Error::Config("FITEDGE_SECRET_KEY must be hexadecimal".into()))?;
                if bytes.len() < 32 {
                    return Err(Error::Config(
                        "FITEDGE_SECRET_KEY must be at least 32 bytes (64 hex digits)".into(),
                    ));
                }
                crypto::hmac_parts(&bytes, "fitedge-secret-key", &[])
            }
            None => {
                let r = crypto::random_bytes(32)?;
                crypto::hmac_parts(&r, "fitedge-secret-key", &[])
            }
        };
        let secret_id = crypto::sha256_hex(&secret)[..16].to_string();
        Ok(Self(Arc::new(Inner {
            address_limiter: RateLimiter::new(config.rate_limit_address),
            account_limiter: RateLimiter::new(config.rate_limit_account),
            db,
            clock,
            config,
            mail,
            metrics: Metrics::default(),
            secret,
            secret_id,
            outbox_notify: Notify::new(),
            outbox_handlers,
            sync: crate::sync::Hub::new(hex::encode(crypto::random_bytes(6)?)),
        })))
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
