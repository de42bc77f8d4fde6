//! Who is calling, and what they may do. Roles, MFA and ownership are decided here and only
//! here: handlers ask [`Caller::require`] and [`Caller::can_read_user`].

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::crypto;
use crate::db::col;
use crate::error::ApiError;
use crate::state::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Administrator,
    Partner,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Premium,
    Pro,
}

macro_rules! text_enum {
    ($t:ty { $($v:ident => $s:literal),* }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),* }
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)*
                    other => Err(format!(
                        "unknown value {other:?}; expected one of: {}",
                        [$($s),*].join(", ")
                    )),
                }
            }
        }
    };
}
text_enum!(Role { User => "user", Administrator => "administrator", Partner => "partner" });
text_enum!(Tier { Free => "free", Premium => "premium", Pro => "pro" });

/// What a caller may ask for beyond their own account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Administrative reads of other accounts: administrator role and an MFA-verified session.
    AdministerUsers,
    /// Health (medical) data: an MFA-verified session.
    HealthData,
}

/// The authenticated caller (a live session).
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub session_id: String,
    pub token_hash: String,
    pub role: Role,
    pub tier: Tier,
    pub mfa_enrolled: bool,
    /// This session passed a TOTP check.
    pub mfa: bool,
    /// The account as read with the session (one query serves both).
    pub profile: crate::identity::store::Profile,
}

impl Caller {
    /// The one place roles and MFA are checked.
    pub fn require(&self, p: Permission) -> Result<(), ApiError> {
        let mfa = || {
            if self.mfa {
                Ok(())
            } else if !self.mfa_enrolled {
                Err(ApiError::forbidden(
                    "mfa_enrollment_required",
                    "this needs multi-factor authentication: enrol a TOTP authenticator first",
                ))
            } else {
                Err(ApiError::forbidden(
                    "mfa_required",
                    "this needs multi-factor authentication: verify a TOTP code for this session",
                ))
            }
        };
        match p {
            Permission::AdministerUsers => {
                if self.role != Role::Administrator {
                    return Err(ApiError::forbidden(
                        "forbidden",
                        "this needs the administrator role",
                    ));
                }
                mfa()
            }
            Permission::HealthData => mfa(),
        }
    }

    /// Owner, or an administrator who passes [`Permission::AdministerUsers`].
    pub fn can_read_user(&self, user_id: &str) -> bool {
        self.user_id == user_id || self.require(Permission::AdministerUsers).is_ok()
    }

    /// Only the owner changes an account.
    pub fn can_change_user(&self, user_id: &str) -> bool {
        self.user_id == user_id
    }
}

/// The bearer token of a request, if any.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let v = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(parts).ok_or_else(|| ApiError::unauthorized("a bearer token is required"))?;
        let token_hash = crypto::sha256_hex(token.as_bytes());
        let now = state.now();
        let row = sqlx::query(
            "SELECT s.id AS session_id, s.mfa_at, u.id, u.email, u.display_name, u.birth_date,
                    u.role, u.tier, u.email_verified_at, u.totp_secret, u.created_at, u.version
             FROM sessions s JOIN users u ON u.id = s.user_id
             WHERE s.token_hash = $1 AND s.ended_at IS NULL AND s.expires_at > $2",
        )
        .bind(&token_hash)
        .bind(now.as_millis())
        .fetch_optional(state.db.pool())
        .await
        .map_err(|e| ApiError::from(crate::error::Error::from(e)))?
        .ok_or_else(|| ApiError::unauthorized("the token is invalid, ended or expired"))?;
        let get = || -> crate::error::Result<Caller> {
            let mfa_at: Option<i64> = col(&row, "mfa_at")?;
            let profile = crate::identity::store::profile_from_row(&row)?;
            Ok(Caller {
                user_id: profile.id.clone(),
                session_id: col(&row, "session_id")?,
                token_hash: token_hash.clone(),
                role: profile.role,
                tier: profile.tier,
                mfa_enrolled: profile.mfa_enabled,
                mfa: mfa_at.is_some(),
                profile,
            })
        };
        let caller = get().map_err(ApiError::from)?;
        if let Err(secs) = state
            .account_limiter
            .check(&format!("user:{}", caller.user_id), now)
        {
            return Err(too_many(secs));
        }
        Ok(caller)
    }
}

pub fn too_many(secs: u64) -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many requests; slow down",
    )
    .with_retry_after(secs)
}

/// The client's address (the TCP peer). Behind a proxy this is the proxy: per-address limits
/// then need the proxy to limit too.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

pub fn client_addr(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(client_addr(parts)))
    }
}
