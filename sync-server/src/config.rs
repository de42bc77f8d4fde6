//! Configuration from flags and environment (clap). Every limit of RULES.md that an operator may
//! change is here, with its default.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// A rate: at most `requests` in `per_secs` seconds (a token bucket: bursts up to `requests`,
/// refilled evenly). Written `N/SECS`, e.g. `300/60`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub requests: u32,
    pub per_secs: u32,
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (n, secs) = s
            .split_once('/')
            .ok_or_else(|| format!("expected N/SECONDS, got {s:?}"))?;
        let requests: u32 = n
            .trim()
            .parse()
            .map_err(|_| format!("bad count in {s:?}"))?;
        let per_secs: u32 = secs
            .trim()
            .parse()
            .map_err(|_| format!("bad seconds in {s:?}"))?;
        if requests == 0 || per_secs == 0 {
            return Err(format!("both numbers must be positive in {s:?}"));
        }
        Ok(Rate { requests, per_secs })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.requests, self.per_secs)
    }
}

/// How expensive the argon2id password hash is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashCost {
    /// argon2id with the OWASP-recommended parameters (19 MiB, 2 passes): the production cost.
    Standard,
    /// argon2id at its minimum cost; for test suites only, never for real accounts.
    InsecureFast,
}

/// Server configuration. `fitedge-server` and `fitedge serve` both take exactly these flags.
/// Its `Debug` hides the secret key and the database password.
#[derive(Clone, clap::Args)]
pub struct Config {
    /// Database URL: `sqlite://PATH` (created and migrated on start) or `postgres://...`.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://fitedge-server.db"
    )]
    pub database_url: String,

    /// Address to listen on.
    #[arg(long, env = "FITEDGE_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// Development mode: mail is logged instead of sent, and verification and reset tokens are
    /// also returned in API responses (field `dev_token`). Never use in production.
    #[arg(long, env = "FITEDGE_DEV")]
    pub dev: bool,

    /// Requests allowed per client address (all /api/v1 routes), as N/SECONDS.
    #[arg(long, env = "FITEDGE_RATE_LIMIT_ADDRESS", default_value = "600/60")]
    pub rate_limit_address: Rate,

    /// Requests allowed per account (signed-in calls, and sign-in attempts per email), as
    /// N/SECONDS.
    #[arg(long, env = "FITEDGE_RATE_LIMIT_ACCOUNT", default_value = "300/60")]
    pub rate_limit_account: Rate,

    /// Failed sign-ins in a row that lock an account.
    #[arg(long, env = "FITEDGE_LOCKOUT_THRESHOLD", default_value_t = 5)]
    pub lockout_threshold: u32,

    /// How long a locked account stays locked, in seconds.
    #[arg(long, env = "FITEDGE_LOCKOUT_SECS", default_value_t = 15 * 60)]
    pub lockout_secs: u64,

    /// Active sessions per user; starting one more ends the oldest.
    #[arg(long, env = "FITEDGE_MAX_SESSIONS", default_value_t = 5)]
    pub max_sessions: u32,

    /// Session lifetime in seconds (default 7 days).
    #[arg(long, env = "FITEDGE_SESSION_TTL_SECS", default_value_t = 7 * 24 * 3600)]
    pub session_ttl_secs: u64,

    /// How long an idempotency key's response is kept and replayed, in seconds (default 24 h).
    #[arg(long, env = "FITEDGE_IDEMPOTENCY_TTL_SECS", default_value_t = 24 * 3600)]
    pub idempotency_ttl_secs: u64,

    /// Hex key (at least 32 bytes) for the HMAC and encryption of stored idempotent responses
    /// and for sealing TOTP secrets (ADR 0013). Every node of a deployment needs the same one.
    /// Unset: a random key per process (stored responses are then not replayed after a restart)
    /// and TOTP enrolment is refused outside --dev.
    #[arg(long, env = "FITEDGE_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Password hash cost.
    #[arg(
        long,
        env = "FITEDGE_HASH_COST",
        value_enum,
        default_value = "standard"
    )]
    pub hash_cost: HashCost,

    /// Log format: JSON lines (default) or human-readable text.
    #[arg(long, env = "FITEDGE_LOG_FORMAT", default_value = "json")]
    pub log_format: LogFormat,

    /// Sync: largest stored size of an untyped (non-FitEdge) document, in bytes.
    #[arg(long, env = "FITEDGE_SYNC_MAX_UNTYPED_BYTES", default_value_t = 1 << 20)]
    pub sync_max_untyped_bytes: u64,

    /// Sync: largest WebSocket message accepted, in bytes (bigger: `error` and close).
    #[arg(long, env = "FITEDGE_SYNC_MAX_FRAME_BYTES", default_value_t = 8 << 20)]
    pub sync_max_frame_bytes: usize,

    /// Sync: incremental chunks a document collects before they are compacted into a snapshot.
    #[arg(long, env = "FITEDGE_SYNC_COMPACT_AFTER", default_value_t = 64)]
    pub sync_compact_after: u32,

    /// Sync: a loaded document with no subscriber for this many seconds leaves memory.
    #[arg(long, env = "FITEDGE_SYNC_IDLE_SECS", default_value_t = 300)]
    pub sync_idle_secs: u64,

    /// Sync: how often (real seconds) idle documents are looked for and evicted; at least 1.
    #[arg(long, env = "FITEDGE_SYNC_EVICT_EVERY_SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_evict_every_secs: u64,

    /// Sync: how often (real seconds) an open sync connection checks that its session is still
    /// valid; a signed-out, revoked or expired session's connection is closed with an `error`.
    /// At least 1.
    #[arg(long, env = "FITEDGE_SYNC_SESSION_CHECK_SECS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_session_check_secs: u64,

    /// Sync: messages one account may send over its sync connections, as N/SECONDS (a bucket
    /// of N that refills over SECONDS). Past it the server reads that account's next message
    /// only when the bucket has refilled, so a flood slows down instead of being cut off (a
    /// cut-off device would reconnect and resend everything).
    #[arg(long, env = "FITEDGE_SYNC_RATE_LIMIT", default_value = "6000/60")]
    pub sync_rate_limit: Rate,

    /// Blobs (sample chunks): largest upload, in bytes.
    #[arg(long, env = "FITEDGE_BLOB_MAX_BYTES", default_value_t = 16 << 20)]
    pub blob_max_bytes: usize,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("database_url", &crate::db::redact_url(&self.database_url))
            .field("bind", &self.bind)
            .field("dev", &self.dev)
            .field("rate_limit_address", &self.rate_limit_address)
            .field("rate_limit_account", &self.rate_limit_account)
            .field("lockout_threshold", &self.lockout_threshold)
            .field("lockout_secs", &self.lockout_secs)
            .field("max_sessions", &self.max_sessions)
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("idempotency_ttl_secs", &self.idempotency_ttl_secs)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("hash_cost", &self.hash_cost)
            .field("log_format", &self.log_format)
            .field("sync_max_untyped_bytes", &self.sync_max_untyped_bytes)
            .field("sync_max_frame_bytes", &self.sync_max_frame_bytes)
            .field("sync_compact_after", &self.sync_compact_after)
            .field("sync_idle_secs", &self.sync_idle_secs)
            .field("sync_evict_every_secs", &self.sync_evict_every_secs)
            .field("sync_session_check_secs", &self.sync_session_check_secs)
            .field("sync_rate_limit", &self.sync_rate_limit)
            .field("blob_max_bytes", &self.blob_max_bytes)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

impl Config {
    /// The defaults, as if no flag and no environment variable were given, for a database URL.
    pub fn with_database(url: impl Into<String>) -> Self {
        Self {
            database_url: url.into(),
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dev: false,
            rate_limit_address: Rate {
                requests: 600,
                per_secs: 60,
            },
            rate_limit_account: Rate {
                requests: 300,
                per_secs: 60,
            },
            lockout_threshold: 5,
            lockout_secs: 15 * 60,
            max_sessions: 5,
            session_ttl_secs: 7 * 24 * 3600,
            idempotency_ttl_secs: 24 * 3600,
            secret_key: None,
            hash_cost: HashCost::Standard,
            log_format: LogFormat::Json,
            sync_max_untyped_bytes: 1 << 20,
            sync_max_frame_bytes: 8 << 20,
            sync_compact_after: 64,
            sync_idle_secs: 300,
            sync_evict_every_secs: 10,
            sync_session_check_secs: 30,
            sync_rate_limit: Rate {
                requests: 6000,
                per_secs: 60,
            },
            blob_max_bytes: 16 << 20,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        c: Config,
    }

    #[test]
    fn defaults_of_flags_equal_with_database() {
        let parsed = T::try_parse_from(["x", "--database-url", "sqlite://fitedge-server.db"])
            .unwrap()
            .c;
        let d = Config::with_database("sqlite://fitedge-server.db");
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
    }

    #[test]
    fn debug_hides_secrets() {
        let mut c = Config::with_database("postgres://u:hunter2@h/db");
        c.secret_key = Some("ab".repeat(32));
        let d = format!("{c:?}");
        assert!(!d.contains("hunter2") && !d.contains("abab"), "{d}");
    }

    #[test]
    fn eviction_sweep_is_at_least_every_second() {
        let parse = |v: &str| T::try_parse_from(["x", "--sync-evict-every-secs", v]);
        assert_eq!(parse("1").unwrap().c.sync_evict_every_secs, 1);
        assert!(parse("0").is_err(), "a zero interval would spin");
    }

    #[test]
    fn rates_parse() {
        assert_eq!(
            "10/1".parse::<Rate>().unwrap(),
            Rate {
                requests: 10,
                per_secs: 1
            }
        );
        assert!("0/1".parse::<Rate>().is_err());
        assert!("ten".parse::<Rate>().is_err());
    }
}
