//! Booking settings (RULES.md defaults), read once from the environment.

use std::sync::OnceLock;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Unpaid holds are cancelled after this long (`FITEDGE_BOOKING_HOLD_SECS`, default 1800).
    pub hold_ttl_ms: i64,
    /// Default premium priority window before public opening
    /// (`FITEDGE_BOOKING_PRIORITY_WINDOW_SECS`, default 86400); an event may set its own.
    pub priority_window_ms: i64,
    /// Events per user per (UTC) day (`FITEDGE_BOOKING_DAILY_LIMIT`, default 2).
    pub daily_limit: i64,
    /// How long a charge may take before it counts as timed out
    /// (`FITEDGE_BOOKING_PAYMENT_TIMEOUT_SECS`, default 10).
    pub payment_timeout: Duration,
    /// How often the sweeper looks for expired holds (`FITEDGE_BOOKING_SWEEP_SECS`, default 5).
    pub sweep_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hold_ttl_ms: 30 * 60 * 1000,
            priority_window_ms: 24 * 3_600_000,
            daily_limit: 2,
            payment_timeout: Duration::from_secs(10),
            sweep_every: Duration::from_secs(5),
        }
    }
}

impl Settings {
    /// Defaults overridden by the variables that are set and valid (invalid ones are logged).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let mut s = Self::default();
        let num = |name: &str| -> Option<i64> {
            let v = get(name)?;
            match v.trim().parse::<i64>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    tracing::error!(variable = name, value = %v, "ignored: not a positive integer");
                    None
                }
            }
        };
        if let Some(n) = num("FITEDGE_BOOKING_HOLD_SECS") {
            s.hold_ttl_ms = n.saturating_mul(1000);
        }
        if let Some(n) = num("FITEDGE_BOOKING_PRIORITY_WINDOW_SECS") {
            s.priority_window_ms = n.saturating_mul(1000);
        }
        if let Some(n) = num("FITEDGE_BOOKING_DAILY_LIMIT") {
            s.daily_limit = n;
        }
        if let Some(n) = num("FITEDGE_BOOKING_PAYMENT_TIMEOUT_SECS") {
            s.payment_timeout = Duration::from_secs(n as u64);
        }
        if let Some(n) = num("FITEDGE_BOOKING_SWEEP_SECS") {
            s.sweep_every = Duration::from_secs(n as u64);
        }
        s
    }
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The process's settings (environment read on first use).
pub fn get() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings::from_lookup(|k| std::env::var(k).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        let s = Settings::from_lookup(|k| match k {
            "FITEDGE_BOOKING_HOLD_SECS" => Some("900".into()),
            "FITEDGE_BOOKING_DAILY_LIMIT" => Some("x".into()),
            _ => None,
        });
        assert_eq!(s.hold_ttl_ms, 900_000);
        assert_eq!(s.daily_limit, 2);
        assert_eq!(Settings::from_lookup(|_| None), Settings::default());
    }
}
