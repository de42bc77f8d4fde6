//! Payments go through [`PaymentProvider`]. The server ships [`SimulatedProvider`] (dev and
//! tests): the payment method decides the outcome, `sim_success`, `sim_decline` or
//! `sim_timeout`. A provider must be idempotent per booking id: charging the same booking twice
//! returns the first charge (nobody is charged twice when a client retries after a timeout), and
//! refunding the same booking twice refunds once.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use futures::future::BoxFuture;
use tokio::sync::Notify;

/// What to charge.
#[derive(Debug, Clone)]
pub struct Charge {
    /// Also the provider's idempotency key.
    pub booking_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    /// Opaque method from the client (a card token at a real provider).
    pub method: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    Approved {
        payment_ref: String,
    },
    Declined {
        reason: String,
    },
    /// The provider did not answer in time; the charge may or may not have happened, so the
    /// client retries (same booking id: at most one charge).
    Timeout,
}

pub trait PaymentProvider: Send + Sync + fmt::Debug {
    fn charge<'a>(&'a self, c: &'a Charge) -> BoxFuture<'a, ChargeOutcome>;
    /// Refunds `amount_cents` of the booking's charge; Ok with a refund reference.
    fn refund<'a>(
        &'a self,
        booking_id: &'a str,
        amount_cents: i64,
    ) -> BoxFuture<'a, Result<String, String>>;
}

/// Deterministic provider for development and tests; remembers what it charged and refunded.
#[derive(Debug, Default)]
pub struct SimulatedProvider {
    charges: Mutex<HashMap<String, i64>>,
    refunds: Mutex<HashMap<String, i64>>,
    gates: Mutex<HashMap<String, VecDeque<Arc<ChargeGate>>>>,
}

/// A charge stopped inside the provider until a test lets it go (see
/// [`SimulatedProvider::pause_next_charge`]): the way a test puts other requests between the two
/// transactions of a payment, as a slow provider would.
#[derive(Debug, Default)]
pub struct ChargeGate {
    arrived: Notify,
    release: Notify,
}

impl ChargeGate {
    /// Returns once the paused charge has reached the provider.
    pub async fn arrived(&self) {
        self.arrived.notified().await
    }
    /// Lets the paused charge go on.
    pub fn release(&self) {
        self.release.notify_one()
    }
}

impl SimulatedProvider {
    /// Amount charged for a booking (None: never charged).
    pub fn charged(&self, booking_id: &str) -> Option<i64> {
        self.charges.lock().ok()?.get(booking_id).copied()
    }
    /// Amount refunded for a booking (None: never refunded).
    pub fn refunded(&self, booking_id: &str) -> Option<i64> {
        self.refunds.lock().ok()?.get(booking_id).copied()
    }
    /// The next charge of `booking_id` (whatever its method) not already paused waits inside
    /// the provider, before anything is charged, until the returned gate is released. Called
    /// twice, it pauses the next two charges, each at its own gate (in the order they arrive).
    pub fn pause_next_charge(&self, booking_id: &str) -> Arc<ChargeGate> {
        let gate = Arc::new(ChargeGate::default());
        if let Ok(mut m) = self.gates.lock() {
            m.entry(booking_id.to_string())
                .or_default()
                .push_back(gate.clone());
        }
        gate
    }
}

impl PaymentProvider for SimulatedProvider {
    fn charge<'a>(&'a self, c: &'a Charge) -> BoxFuture<'a, ChargeOutcome> {
        Box::pin(async move {
            let gate = self.gates.lock().ok().and_then(|mut m| {
                let queue = m.get_mut(&c.booking_id)?;
                let gate = queue.pop_front();
                if queue.is_empty() {
                    m.remove(&c.booking_id);
                }
                gate
            });
            if let Some(gate) = gate {
                gate.arrived.notify_one();
                gate.release.notified().await;
            }
            match c.method.as_str() {
                "sim_success" => {
                    if let Ok(mut m) = self.charges.lock() {
                        m.entry(c.booking_id.clone()).or_insert(c.amount_cents);
                    }
                    ChargeOutcome::Approved {
                        payment_ref: format!("sim_{}", c.booking_id),
                    }
                }
                "sim_timeout" => ChargeOutcome::Timeout,
                _ => ChargeOutcome::Declined {
                    reason: "the card was declined".into(),
                },
            }
        })
    }

    fn refund<'a>(
        &'a self,
        booking_id: &'a str,
        amount_cents: i64,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let charged = self.charged(booking_id).unwrap_or(0);
            if amount_cents > charged {
                return Err(format!(
                    "refund of {amount_cents} exceeds the charge of {charged}"
                ));
            }
            if let Ok(mut m) = self.refunds.lock() {
                m.entry(booking_id.to_string()).or_insert(amount_cents);
            }
            Ok(format!("sim_refund_{booking_id}"))
        })
    }
}

static PROVIDER: OnceLock<Arc<dyn PaymentProvider>> = OnceLock::new();
static SIMULATED: OnceLock<Arc<SimulatedProvider>> = OnceLock::new();

/// The simulated provider used when none was installed.
pub fn simulated() -> Arc<SimulatedProvider> {
    SIMULATED.get_or_init(Default::default).clone()
}

/// Installs the process's provider (once, before serving); false if one was already in use.
pub fn install(p: Arc<dyn PaymentProvider>) -> bool {
    PROVIDER.set(p).is_ok()
}

/// The provider in use: the installed one, else the simulated one.
pub fn provider() -> Arc<dyn PaymentProvider> {
    PROVIDER
        .get_or_init(|| {
            let s: Arc<dyn PaymentProvider> = simulated();
            s
        })
        .clone()
}
