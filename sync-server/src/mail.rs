//! Outgoing mail through a trait. Production transports plug in here; `--dev` uses
//! [`DevLogMailSender`], tests use [`CapturingMailSender`].

use std::fmt;
use std::sync::Mutex;

use futures::future::BoxFuture;

use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    VerifyEmail,
    PasswordReset,
    /// Someone registered with an address that already has an account: its owner is told, the
    /// registrant gets the same answer as for a new address. Carries no token.
    RegistrationAttempt,
}

/// A message. `token` is a secret: only the mail body may carry it. Empty for notices.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    pub to: String,
    pub kind: MailKind,
    pub token: String,
}

impl fmt::Debug for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mail")
            .field("to", &self.to)
            .field("kind", &self.kind)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Mail {
    pub fn subject(&self) -> &'static str {
        match self.kind {
            MailKind::VerifyEmail => "Confirm your FitEdge email address",
            MailKind::PasswordReset => "Reset your FitEdge password",
            MailKind::RegistrationAttempt => "Someone tried to register with your address",
        }
    }

    pub fn body(&self) -> String {
        match self.kind {
            MailKind::VerifyEmail => format!(
                "Welcome to FitEdge. Confirm your address with this code (valid 48 hours):\n\n{}\n",
                self.token
            ),
            MailKind::PasswordReset => format!(
                "Someone asked to reset your FitEdge password. If it was you, use this code \
                 (valid 1 hour):\n\n{}\n\nIf not, ignore this message.\n",
                self.token
            ),
            MailKind::RegistrationAttempt => "Someone tried to create a FitEdge account with \
                 this address, which already has one. If it was you, sign in, or reset your \
                 password if you no longer know it. If you never confirmed the address, use the \
                 confirmation mail sent when the account was created.\n\nIf it was not you, \
                 ignore this message: nothing was changed.\n"
                .to_string(),
        }
    }
}

/// Implementations should hand the message over (queue it) rather than deliver it before
/// returning: identity routes send a mail for some addresses and not for others (a password
/// reset for an unknown address sends none), and their response time must not tell which.
pub trait MailSender: Send + Sync + fmt::Debug {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, Result<()>>;
}

/// `--dev` only: logs the whole message, token included, instead of sending it.
#[derive(Debug, Default)]
pub struct DevLogMailSender;

impl MailSender for DevLogMailSender {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            tracing::info!(
                dev_mode = true,
                to = %mail.to,
                subject = mail.subject(),
                body = %mail.body(),
                "DEV MODE: mail not sent, logged instead"
            );
            Ok(())
        })
    }
}

/// The default outside dev mode until a mail transport is configured: says that a mail was not
/// sent, without its token.
#[derive(Debug, Default)]
pub struct UnconfiguredMailSender;

impl MailSender for UnconfiguredMailSender {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            tracing::warn!(
                to = %mail.to,
                subject = mail.subject(),
                "no mail transport configured: message not sent"
            );
            Ok(())
        })
    }
}

/// Keeps every message in memory; for tests.
#[derive(Debug, Default)]
pub struct CapturingMailSender {
    sent: Mutex<Vec<Mail>>,
}

impl CapturingMailSender {
    pub fn sent(&self) -> Vec<Mail> {
        self.sent.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The token of the last message of `kind` sent to `to`.
    pub fn last_token(&self, to: &str, kind: MailKind) -> Option<String> {
        self.sent()
            .into_iter()
            .rev()
            .find(|m| m.to == to && m.kind == kind)
            .map(|m| m.token)
    }
}

impl MailSender for CapturingMailSender {
    fn send<'a>(&'a self, mail: &'a Mail) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if let Ok(mut v) = self.sent.lock() {
                v.push(mail.clone());
            }
            Ok(())
        })
    }
}
