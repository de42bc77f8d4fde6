//! Identity and access (RULES.md): registration with email verification and the age rule,
//! password policy and argon2id, sign-in with opaque bearer tokens (hashed, 7 days, at most 5
//! sessions), lockout, sign-out, password reset, TOTP, roles, audit log, GDPR export and delete.

pub mod password;
pub mod sealed;
pub mod store;
pub mod totp;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use fitedge_core::time::Timestamp;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{too_many, Caller, ClientAddr, Permission, Role, Tier};
use crate::crypto;
use crate::db::{col, Tx};
use crate::error::{ApiError, Error, FieldErrors, Result};
use crate::http::ValidJson;
use crate::idempotency::ResponseOwner;
use crate::mail::{Mail, MailKind};
use crate::outbox;
use crate::state::AppState;
use sealed::{mfa_unavailable, upgrade_in_tx};
use store::{
    audit, forget_old_unknown_failures, give_back_attempt, load_profile, profile_from_row,
    record_failure, record_success, take_attempt, take_unknown_attempt, Attempt, Profile,
    PROFILE_COLUMNS,
};

pub const MIN_AGE_YEARS: i32 = 13;
pub const VERIFY_TOKEN_TTL_MS: i64 = 48 * 3_600_000;
pub const RESET_TOKEN_TTL_MS: i64 = 3_600_000;
pub const MAX_DISPLAY_NAME: usize = 64;
pub const MAX_EMAIL: usize = 254;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(verify_email))
        .routes(routes!(login))
        .routes(routes!(logout))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
        .routes(routes!(totp_enroll))
        .routes(routes!(totp_confirm))
        .routes(routes!(totp_disable))
        .routes(routes!(mfa_verify))
        .routes(routes!(me))
        .routes(routes!(get_user, update_user))
        .routes(routes!(list_sessions))
        .routes(routes!(end_session))
        .routes(routes!(my_audit_log))
        .routes(routes!(export_me))
        .routes(routes!(delete_me))
        .routes(routes!(admin_get_user))
        .routes(routes!(health_data_summary))
}

// ---------------------------------------------------------------------------------------------
// Validation

fn normalize_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn email_problems(email: &str) -> Vec<String> {
    let mut p = Vec::new();
    let parts: Vec<&str> = email.split('@').collect();
    let ok = parts.len() == 2
        && !parts[0].is_empty()
        && parts[1].contains('.')
        && !parts[1].starts_with('.')
        && !parts[1].ends_with('.')
        && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        p.push("must be an email address".into());
    }
    if email.len() > MAX_EMAIL {
        p.push(format!("must be at most {MAX_EMAIL} characters"));
    }
    p
}

/// Whole years between `birth` and `today`.
pub fn age_on(birth: NaiveDate, today: NaiveDate) -> i32 {
    let mut years = today.year() - birth.year();
    if (today.month(), today.day()) < (birth.month(), birth.day()) {
        years -= 1;
    }
    years
}

fn today(now: Timestamp) -> NaiveDate {
    chrono::DateTime::<chrono::Utc>::from_timestamp_millis(now.as_millis())
        .map(|d| d.date_naive())
        .unwrap_or_default()
}

fn push(f: &mut FieldErrors, field: &str, problems: Vec<String>) {
    if !problems.is_empty() {
        f.entry(field.into()).or_default().extend(problems);
    }
}

fn check(f: FieldErrors) -> Result<(), ApiError> {
    if f.is_empty() {
        Ok(())
    } else {
        Err(ApiError::validation(f))
    }
}

fn totp_code_problems(code: &str) -> Vec<String> {
    if code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()) {
        vec![]
    } else {
        vec!["must be 6 digits".into()]
    }
}

fn dev_token(state: &AppState, token: &str) -> Option<String> {
    state.config.dev.then(|| token.to_string())
}

async fn store_email_token(
    tx: &mut Tx,
    now: Timestamp,
    user_id: &str,
    purpose: &str,
    token: &str,
    ttl_ms: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, created_at, expires_at)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(crypto::sha256_hex(token.as_bytes()))
    .bind(user_id)
    .bind(purpose)
    .bind(now.as_millis())
    .bind(now.as_millis() + ttl_ms)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Consumes an email token: the user it belongs to, or 400.
async fn use_email_token(
    tx: &mut Tx,
    now: Timestamp,
    token: &str,
    purpose: &str,
) -> Result<String> {
    let row = sqlx::query(
        "SELECT user_id, expires_at, used_at FROM email_tokens
         WHERE token_hash = $1 AND purpose = $2",
    )
    .bind(crypto::sha256_hex(token.trim().as_bytes()))
    .bind(purpose)
    .fetch_optional(&mut **tx)
    .await?;
    let invalid =
        || ApiError::bad_request("invalid_token", "the token is unknown or was already used");
    let Some(row) = row else {
        return Err(invalid().into());
    };
    let used: Option<i64> = col(&row, "used_at")?;
    if used.is_some() {
        return Err(invalid().into());
    }
    let expires: i64 = col(&row, "expires_at")?;
    if now.as_millis() >= expires {
        return Err(ApiError::bad_request(
            "token_expired",
            "the token has expired; ask for a new one",
        )
        .into());
    }
    sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2")
        .bind(now.as_millis())
        .bind(crypto::sha256_hex(token.trim().as_bytes()))
        .execute(&mut **tx)
        .await?;
    col(&row, "user_id")
}

async fn send_mail(state: &AppState, mail: Mail) {
    // The change is committed; a mail that fails can be asked for again.
    if let Err(e) = state.mail.send(&mail).await {
        tracing::error!(error = %e, kind = ?mail.kind, "mail could not be sent");
    }
}

// ---------------------------------------------------------------------------------------------
// Registration and verification

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    #[schema(format = Email, max_length = 254)]
    pub email: String,
    /// At least 12 characters, including a special character.
    #[schema(min_length = 12, max_length = 256)]
    pub password: String,
    /// `YYYY-MM-DD`; the user must be at least 13.
    #[schema(format = Date)]
    pub birth_date: String,
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: String,
}

/// The same for a new address and for one that already has an account, so that registration
/// does not tell which addresses are registered.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    /// The new account's id. For an address that already has an account, a random id that
    /// names no account (the owner is mailed instead).
    #[schema(format = Uuid)]
    pub user_id: String,
    pub email: String,
    /// Always `pending_verification`: the account is active once the email is verified.
    pub status: String,
    /// DEV MODE ONLY (`--dev`): the verification token that was mailed. For an address that
    /// already has an account, a token of the same form that verifies nothing (dev mode reveals
    /// this much: `verify-email` refuses it). Never present in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_token: Option<String>,
}

/// Register an account; a verification token is mailed. An address that already has an account
/// gets the same answer (and takes as long); its owner is mailed that someone tried. An account
/// never confirmed within its code's 48 hours does not hold the address: it is erased and the
/// new registration takes the address.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "identity",
    params(crate::openapi::IdempotencyKey),
    request_body = RegisterRequest,
    responses(
        (status = 201, body = RegisterResponse,
            description = "registered, or the address already has an account (not revealed)"),
        (status = 400, body = ApiError, description = "validation failed (details.fields)"),
        (status = 409, body = ApiError, description = "idempotency_in_flight"),
        (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ValidJson(req): ValidJson<RegisterRequest>,
) -> Result<Response, ApiError> {
    let now = state.now();
    let email = normalize_email(&req.email);
    let display_name = req.display_name.trim().to_string();
    let mut f = FieldErrors::new();
    push(&mut f, "email", email_problems(&email));
    push(&mut f, "password", password::policy_problems(&req.password));
    match NaiveDate::parse_from_str(req.birth_date.trim(), "%Y-%m-%d") {
        Err(_) => push(
            &mut f,
            "birth_date",
            vec!["must be a date YYYY-MM-DD".into()],
        ),
        Ok(b) if b > today(now) => push(&mut f, "birth_date", vec!["must be in the past".into()]),
        Ok(b) if age_on(b, today(now)) < MIN_AGE_YEARS => push(
            &mut f,
            "birth_date",
            vec![format!("you must be at least {MIN_AGE_YEARS} years old")],
        ),
        Ok(b) if age_on(b, today(now)) > 150 => {
            push(&mut f, "birth_date", vec!["is not plausible".into()])
        }
        Ok(_) => {}
    }
    let name_len = display_name.chars().count();
    if name_len == 0 || name_len > MAX_DISPLAY_NAME || display_name.chars().any(char::is_control) {
        push(
            &mut f,
            "display_name",
            vec![format!(
                "must be 1 to {MAX_DISPLAY_NAME} printable characters"
            )],
        );
    }
    check(f)?;
    // Hashed before the address is looked up: both outcomes spend the argon2 cost.
    let hash = password::hash(state.config.hash_cost, req.password).await?;
    // For an existing address these are never stored: the answer carries a random id and, in
    // dev mode, a token that verifies nothing.
    let user_id = uuid::Uuid::new_v4().to_string();
    let token = crypto::new_token()?;
    let birth = req.birth_date.trim().to_string();
    let existing: Option<String> = state
        .db
        .write(|tx| {
            let (user_id, email, hash, name, birth, token, addr) = (
                user_id.clone(),
                email.clone(),
                hash.clone(),
                display_name.clone(),
                birth.clone(),
                token.clone(),
                addr.clone(),
            );
            Box::pin(async move {
                // An account nobody confirmed while its verification code was valid does not
                // hold the address: otherwise anyone could lock an owner out of it for good (a
                // password reset needs a verified address). It never signed in, so it has
                // nothing but the registration; it is erased and this one takes over. One an
                // operator gave a role or a tier is kept: that grant was a decision.
                let stale: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM users WHERE email = $1 AND email_verified_at IS NULL
                       AND created_at <= $2 AND role = 'user' AND tier = 'free'",
                )
                .bind(&email)
                .bind(now.as_millis() - VERIFY_TOKEN_TTL_MS)
                .fetch_optional(&mut **tx)
                .await?;
                if let Some(stale) = stale {
                    erase_account(tx, now, &stale, "account.unverified_replaced").await?;
                }
                // DO NOTHING keeps the transaction usable (a unique violation would abort it on
                // PostgreSQL), so the existing account can be found and its owner's log written.
                let inserted: Option<String> = sqlx::query_scalar(
                    "INSERT INTO users (id, email, password_hash, display_name, birth_date,
                        created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $6)
                     ON CONFLICT (email) DO NOTHING
                     RETURNING id",
                )
                .bind(&user_id)
                .bind(&email)
                .bind(&hash)
                .bind(&name)
                .bind(&birth)
                .bind(now.as_millis())
                .fetch_optional(&mut **tx)
                .await?;
                if inserted.is_none() {
                    let owner: String = sqlx::query_scalar("SELECT id FROM users WHERE email = $1")
                        .bind(&email)
                        .fetch_one(&mut **tx)
                        .await?;
                    audit(
                        tx,
                        now,
                        Some(&owner),
                        "registration.attempted",
                        Some(&addr),
                        serde_json::json!({}),
                    )
                    .await?;
                    return Ok(Some(owner));
                }
                crate::sync::store::reserve_profile_id(tx, &user_id).await?;
                store_email_token(
                    tx,
                    now,
                    &user_id,
                    "verify_email",
                    &token,
                    VERIFY_TOKEN_TTL_MS,
                )
                .await?;
                audit(
                    tx,
                    now,
                    Some(&user_id),
                    "user.registered",
                    Some(&addr),
                    serde_json::json!({}),
                )
                .await?;
                outbox::enqueue(
                    tx,
                    now,
                    "identity.user_registered",
                    &user_id,
                    serde_json::json!({ "user_id": user_id }),
                )
                .await?;
                Ok(None)
            })
        })
        .await?;
    let owner = match &existing {
        Some(owner) => {
            send_mail(
                &state,
                Mail {
                    to: email.clone(),
                    kind: MailKind::RegistrationAttempt,
                    token: String::new(),
                },
            )
            .await;
            owner.clone()
        }
        None => {
            state.outbox_notify.notify_one();
            send_mail(
                &state,
                Mail {
                    to: email.clone(),
                    kind: MailKind::VerifyEmail,
                    token: token.clone(),
                },
            )
            .await;
            user_id.clone()
        }
    };
    let mut resp = (
        StatusCode::CREATED,
        axum::Json(RegisterResponse {
            user_id,
            email,
            status: "pending_verification".into(),
            dev_token: dev_token(&state, &token),
        }),
    )
        .into_response();
    // The stored replay holds the owner's address: it goes with the owner's account deletion.
    resp.extensions_mut().insert(ResponseOwner(owner));
    Ok(resp)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenRequest {
    pub token: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VerifiedResponse {
    pub verified: bool,
}

/// Verify an email address with the mailed token (single use, 48 hours).
#[utoipa::path(post, path = "/api/v1/auth/verify-email", tag = "identity",
    params(crate::openapi::IdempotencyKey),
    request_body = TokenRequest,
    responses((status = 200, body = VerifiedResponse),
        (status = 400, body = ApiError, description = "invalid, used or expired token"),
        (status = 409, body = ApiError), (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn verify_email(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ValidJson(req): ValidJson<TokenRequest>,
) -> Result<axum::Json<VerifiedResponse>, ApiError> {
    let now = state.now();
    state
        .db
        .write(|tx| {
            let (token, addr) = (req.token.clone(), addr.clone());
            Box::pin(async move {
                let user_id = use_email_token(tx, now, &token, "verify_email").await?;
                sqlx::query(
                    "UPDATE users SET email_verified_at = $1, updated_at = $1
                     WHERE id = $2 AND email_verified_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(&user_id)
                .execute(&mut **tx)
                .await?;
                audit(
                    tx,
                    now,
                    Some(&user_id),
                    "email.verified",
                    Some(&addr),
                    serde_json::json!({}),
                )
                .await
            })
        })
        .await?;
    Ok(axum::Json(VerifiedResponse { verified: true }))
}

// ---------------------------------------------------------------------------------------------
// Sign-in and sessions

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[schema(format = Email)]
    pub email: String,
    pub password: String,
    /// The current TOTP code; required when the account has MFA enabled.
    #[serde(default)]
    #[schema(pattern = "^[0-9]{6}$")]
    pub totp_code: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LoginResponse {
    /// Opaque bearer token; send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    #[schema(format = Uuid)]
    pub session_id: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    /// Whether this session passed multi-factor authentication.
    pub mfa: bool,
}

fn invalid_credentials() -> ApiError {
    ApiError::unauthorized("the email or password is wrong")
        .with_details(serde_json::json!({}))
        .retag("invalid_credentials")
}

trait Retag {
    fn retag(self, error: &'static str) -> Self;
}
impl Retag for ApiError {
    fn retag(mut self, error: &'static str) -> Self {
        self.error = error;
        self
    }
}

/// Also the answer for an address without an account after as many failures: the wording
/// speaks of the address, not of an account.
fn locked(until: i64, now: Timestamp) -> ApiError {
    let secs = ((until - now.as_millis()) as f64 / 1000.0).ceil().max(1.0) as u64;
    ApiError::new(
        StatusCode::LOCKED,
        "account_locked",
        "too many failed sign-ins for this address; try again later",
    )
    .with_retry_after(secs)
}

/// Sign in with email and password (and a TOTP code when MFA is on); returns a bearer token
/// valid 7 days. A sixth session ends the oldest; 5 failures in a row lock the account. An
/// address without an account is answered exactly like a wrong password, lock included.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "identity",
    params(crate::openapi::IdempotencyKey),
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "invalid_credentials (wrong password, wrong code, or no such account: not told apart), or mfa_required (after the right password)"),
        (status = 403, body = ApiError, description = "email_not_verified (after the right password)"),
        (status = 409, body = ApiError), (status = 422, body = ApiError),
        (status = 423, body = ApiError, description = "account_locked (Retry-After): 5 failures in a row for this address, whether or not it has an account"),
        (status = 429, body = ApiError),
        (status = 503, body = ApiError, description = "mfa_unavailable: the account's TOTP secret was sealed under a key this server does not have")))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ValidJson(req): ValidJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let now = state.now();
    let email = normalize_email(&req.email);
    if let Some(code) = &req.totp_code {
        let mut f = FieldErrors::new();
        push(&mut f, "totp_code", totp_code_problems(code));
        check(f)?;
    }
    if let Err(secs) = state.account_limiter.check(&format!("email:{email}"), now) {
        return Err(too_many(secs));
    }
    let email_hmac = hex::encode(crypto::hmac_parts(
        &state.secret,
        "fitedge-login-failures",
        &[email.as_bytes()],
    ));
    let (threshold, lockout) = (state.config.lockout_threshold, state.config.lockout_secs);
    // One query whether or not the address has an account, so the two cost the same.
    let row = sqlx::query(
        "SELECT u.id, u.password_hash, u.email_verified_at, u.totp_secret, u.totp_key_id,
                u.totp_last_step
         FROM (SELECT 1 AS one) k
         LEFT JOIN users u ON u.email = $1",
    )
    .bind(&email)
    .fetch_one(state.db.pool())
    .await
    .map_err(Error::from)?;
    let user_id: Option<String> = col(&row, "id")?;
    let Some(user_id) = user_id else {
        // The same steps as for an account with a wrong password: the attempt taken (or refused
        // by the lock), a hash check of the same cost, a second write.
        let attempt = state
            .db
            .write(|tx| {
                let h = email_hmac.clone();
                Box::pin(async move { take_unknown_attempt(tx, now, &h, threshold, lockout).await })
            })
            .await?;
        if let Attempt::Locked(until) = attempt {
            return Err(locked(until, now));
        }
        let dummy = password::dummy_hash(state.config.hash_cost).await?;
        let _ = password::verify(dummy, req.password).await?;
        state
            .db
            .write(|tx| Box::pin(async move { forget_old_unknown_failures(tx, now).await }))
            .await?;
        return Err(invalid_credentials());
    };
    // Counted before the password is checked: see `take_attempt`.
    let attempt = match take(&state, &user_id, now).await? {
        Some(Attempt::Locked(until)) => return Err(locked(until, now)),
        Some(a) => a,
        // Deleted since the query above.
        None => return Err(invalid_credentials()),
    };
    let stored: String = col(&row, "password_hash")?;
    let good = password::verify(stored, req.password).await?;
    if !good {
        refuse(&state, &user_id, attempt, &addr, "login.failed").await?;
        return Err(invalid_credentials());
    }
    let verified: Option<i64> = col(&row, "email_verified_at")?;
    if verified.is_none() {
        give_back(&state, &user_id).await?;
        return Err(ApiError::forbidden(
            "email_not_verified",
            "verify your email address before signing in",
        ));
    }
    let totp_secret: Option<String> = col(&row, "totp_secret")?;
    let totp_key_id: Option<String> = col(&row, "totp_key_id")?;
    let last_step: Option<i64> = col(&row, "totp_last_step")?;
    let mut mfa_step = None;
    let mut reseal = false;
    if let Some(stored) = &totp_secret {
        let Some(code) = &req.totp_code else {
            give_back(&state, &user_id).await?;
            return Err(ApiError::unauthorized(
                "this account uses multi-factor authentication: send totp_code",
            )
            .retag("mfa_required"));
        };
        let secret = match state
            .totp_keys
            .open(&user_id, stored, totp_key_id.as_deref())
        {
            Ok(secret) => secret,
            Err(e) => {
                // The server's fault, not a wrong code: not counted.
                give_back(&state, &user_id).await?;
                return Err(e.into());
            }
        };
        reseal = state.totp_keys.needs_reseal(stored, totp_key_id.as_deref());
        match totp::verify(&secret, code, now, last_step) {
            Some(step) => mfa_step = Some(step),
            None => {
                refuse(&state, &user_id, attempt, &addr, "mfa.failed").await?;
                return Err(invalid_credentials());
            }
        }
    }
    let token = crypto::new_token()?;
    let token_hash = crypto::sha256_hex(token.as_bytes());
    let session_id = uuid::Uuid::new_v4().to_string();
    let expires = now.as_millis() + (state.config.session_ttl_secs as i64).saturating_mul(1000);
    let max_sessions = i64::from(state.config.max_sessions.max(1));
    let signed_in = state
        .db
        .write(|tx| {
            let (user_id, session_id, token_hash, addr, keys) = (
                user_id.clone(),
                session_id.clone(),
                token_hash.clone(),
                addr.clone(),
                state.totp_keys.clone(),
            );
            Box::pin(async move {
                if let Some(step) = mfa_step {
                    if !claim_totp_step(tx, &user_id, step).await? {
                        // Another request signed in with this same code meanwhile: a replay.
                        record_failure(tx, now, &user_id, attempt, &addr, "mfa.failed").await?;
                        return Ok(false);
                    }
                }
                if reseal {
                    upgrade_in_tx(tx, &keys, &user_id).await?;
                }
                let active: Vec<String> = sqlx::query_scalar(
                    "SELECT id FROM sessions
                     WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2
                     ORDER BY created_at, id",
                )
                .bind(&user_id)
                .bind(now.as_millis())
                .fetch_all(&mut **tx)
                .await?;
                let excess = (active.len() as i64 - max_sessions + 1).max(0) as usize;
                for old in active.iter().take(excess) {
                    sqlx::query(
                        "UPDATE sessions SET ended_at = $1, ended_reason = 'session_limit'
                         WHERE id = $2",
                    )
                    .bind(now.as_millis())
                    .bind(old)
                    .execute(&mut **tx)
                    .await?;
                    audit(
                        tx,
                        now,
                        Some(&user_id),
                        "session.ended_by_limit",
                        Some(&addr),
                        serde_json::json!({ "session_id": old }),
                    )
                    .await?;
                }
                sqlx::query(
                    "INSERT INTO sessions (id, user_id, token_hash, created_at, expires_at, mfa_at)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(&session_id)
                .bind(&user_id)
                .bind(&token_hash)
                .bind(now.as_millis())
                .bind(expires)
                .bind(mfa_step.map(|_| now.as_millis()))
                .execute(&mut **tx)
                .await?;
                record_success(tx, &user_id, attempt).await?;
                audit(
                    tx,
                    now,
                    Some(&user_id),
                    "login.succeeded",
                    Some(&addr),
                    serde_json::json!({ "session_id": session_id, "mfa": mfa_step.is_some() }),
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
    if !signed_in {
        return Err(invalid_credentials());
    }
    let mut resp = axum::Json(LoginResponse {
        access_token: token,
        token_type: "Bearer".into(),
        session_id,
        expires_at: Timestamp(expires).to_rfc3339(),
        mfa: mfa_step.is_some(),
    })
    .into_response();
    resp.extensions_mut().insert(ResponseOwner(user_id));
    Ok(resp)
}

/// Takes one attempt against the account's lockout in its own transaction, before a password
/// or code is checked ([`take_attempt`]). `None`: the account is gone.
async fn take(state: &AppState, user_id: &str, now: Timestamp) -> Result<Option<Attempt>> {
    let (threshold, lockout) = (state.config.lockout_threshold, state.config.lockout_secs);
    state
        .db
        .write(|tx| {
            let uid = user_id.to_string();
            Box::pin(async move { take_attempt(tx, now, &uid, threshold, lockout).await })
        })
        .await
}

/// [`take`] for a signed-in caller: a locked account is 423.
async fn take_for(state: &AppState, caller: &Caller) -> Result<Attempt, ApiError> {
    let now = state.now();
    match take(state, &caller.user_id, now).await? {
        Some(Attempt::Locked(until)) => Err(locked(until, now)),
        Some(a) => Ok(a),
        None => Err(ApiError::unauthorized("the account no longer exists")),
    }
}

/// The second write after a wrong password or code: its audit events ([`record_failure`]).
async fn refuse(
    state: &AppState,
    user_id: &str,
    attempt: Attempt,
    addr: &str,
    what: &'static str,
) -> Result<()> {
    let now = state.now();
    state
        .db
        .write(|tx| {
            let (uid, addr) = (user_id.to_string(), addr.to_string());
            Box::pin(async move { record_failure(tx, now, &uid, attempt, &addr, what).await })
        })
        .await
}

/// The second write after an attempt that ended neither way ([`give_back_attempt`]).
async fn give_back(state: &AppState, user_id: &str) -> Result<()> {
    state
        .db
        .write(|tx| {
            let uid = user_id.to_string();
            Box::pin(async move { give_back_attempt(tx, &uid).await })
        })
        .await
}

async fn end_session_row(
    state: &AppState,
    caller: &Caller,
    session_id: &str,
    reason: &str,
    addr: &str,
) -> Result<bool> {
    let now = state.now();
    state
        .db
        .write(|tx| {
            let (uid, sid, reason, addr) = (
                caller.user_id.clone(),
                session_id.to_string(),
                reason.to_string(),
                addr.to_string(),
            );
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE sessions SET ended_at = $1, ended_reason = $2
                     WHERE id = $3 AND user_id = $4 AND ended_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(&reason)
                .bind(&sid)
                .bind(&uid)
                .execute(&mut **tx)
                .await?;
                if r.rows_affected() == 0 {
                    return Ok(false);
                }
                audit(
                    tx,
                    now,
                    Some(&uid),
                    "session.ended",
                    Some(&addr),
                    serde_json::json!({ "session_id": sid, "reason": reason }),
                )
                .await?;
                Ok(true)
            })
        })
        .await
}

/// Sign out: ends the calling session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "identity",
    params(crate::openapi::IdempotencyKey),
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = ApiError), (status = 409, body = ApiError),
        (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn logout(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    end_session_row(&state, &caller, &caller.session_id, "logout", &addr).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    #[schema(format = Uuid)]
    pub id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub expires_at: String,
    pub mfa: bool,
    /// The session making this call.
    pub current: bool,
}

/// The caller's active sessions, oldest first.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Vec<SessionInfo>), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn list_sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<SessionInfo>>, ApiError> {
    let rows = sqlx::query(
        "SELECT id, created_at, expires_at, mfa_at FROM sessions
         WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2 ORDER BY created_at, id",
    )
    .bind(&caller.user_id)
    .bind(state.now().as_millis())
    .fetch_all(state.db.pool())
    .await
    .map_err(Error::from)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let id: String = col(&r, "id")?;
        let mfa: Option<i64> = col(&r, "mfa_at")?;
        out.push(SessionInfo {
            current: id == caller.session_id,
            id,
            created_at: Timestamp(col(&r, "created_at")?).to_rfc3339(),
            expires_at: Timestamp(col(&r, "expires_at")?).to_rfc3339(),
            mfa: mfa.is_some(),
        });
    }
    Ok(axum::Json(out))
}

/// End one of the caller's own sessions (another device). 404 for anyone else's.
#[utoipa::path(delete, path = "/api/v1/sessions/{id}", tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path, description = "session id"), crate::openapi::IdempotencyKey),
    responses((status = 204), (status = 401, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn end_session(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if end_session_row(&state, &caller, &id, "ended_by_user", &addr).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found())
    }
}

// ---------------------------------------------------------------------------------------------
// Password reset

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetRequest {
    #[schema(format = Email)]
    pub email: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AcceptedResponse {
    /// Always `accepted`: whether the email exists is not revealed.
    pub status: String,
    /// DEV MODE ONLY (`--dev`): the reset token that was mailed. When none was (no account, or
    /// the address is not verified), a token of the same form that resets nothing (dev mode
    /// reveals this much: `password-reset/confirm` refuses it). Never present in production.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dev_token: Option<String>,
}

/// Ask for a password reset: a single-use token (1 hour) goes to the verified email. The answer
/// is the same whether or not the address has an account.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/request", tag = "identity",
    params(crate::openapi::IdempotencyKey),
    request_body = ResetRequest,
    responses((status = 202, body = AcceptedResponse,
            description = "accepted, whether or not a token was mailed (not revealed)"),
        (status = 400, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ValidJson(req): ValidJson<ResetRequest>,
) -> Result<Response, ApiError> {
    let now = state.now();
    let email = normalize_email(&req.email);
    if let Err(secs) = state.account_limiter.check(&format!("email:{email}"), now) {
        return Err(too_many(secs));
    }
    let row = sqlx::query("SELECT id, email_verified_at FROM users WHERE email = $1")
        .bind(&email)
        .fetch_optional(state.db.pool())
        .await
        .map_err(Error::from)?;
    let (user, verified) = match &row {
        Some(r) => (
            Some(col::<String>(r, "id")?),
            col::<Option<i64>>(r, "email_verified_at")?.is_some(),
        ),
        None => (None, false),
    };
    // Made either way: in dev mode a token of the same form is answered whether or not one was
    // stored and mailed.
    let token = crypto::new_token()?;
    let send = user.is_some() && verified;
    // Every outcome writes one transaction, so the time taken does not tell them apart; the
    // audit event without an account records the request, not the email address asked for.
    state
        .db
        .write(|tx| {
            let (uid, token, addr) = (user.clone(), token.clone(), addr.clone());
            Box::pin(async move {
                if let (Some(uid), true) = (&uid, send) {
                    store_email_token(tx, now, uid, "password_reset", &token, RESET_TOKEN_TTL_MS)
                        .await?;
                }
                audit(
                    tx,
                    now,
                    uid.as_deref(),
                    "password.reset_requested",
                    Some(&addr),
                    serde_json::json!({ "mailed": send }),
                )
                .await
            })
        })
        .await?;
    if send {
        send_mail(
            &state,
            Mail {
                to: email,
                kind: MailKind::PasswordReset,
                token: token.clone(),
            },
        )
        .await;
    }
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(AcceptedResponse {
            status: "accepted".into(),
            dev_token: dev_token(&state, &token),
        }),
    )
        .into_response())
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ResetConfirm {
    pub token: String,
    /// At least 12 characters, including a special character.
    #[schema(min_length = 12, max_length = 256)]
    pub new_password: String,
}

/// Set a new password with a reset token; ends every session of the account, lifts a lockout and
/// voids the account's other reset tokens.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "identity",
    params(crate::openapi::IdempotencyKey),
    request_body = ResetConfirm,
    responses((status = 204), (status = 400, body = ApiError, description = "validation, or invalid/expired token"),
        (status = 409, body = ApiError), (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn confirm_password_reset(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    ValidJson(req): ValidJson<ResetConfirm>,
) -> Result<StatusCode, ApiError> {
    let now = state.now();
    let mut f = FieldErrors::new();
    push(
        &mut f,
        "new_password",
        password::policy_problems(&req.new_password),
    );
    check(f)?;
    let hash = password::hash(state.config.hash_cost, req.new_password).await?;
    state
        .db
        .write(|tx| {
            let (token, hash, addr) = (req.token.clone(), hash.clone(), addr.clone());
            Box::pin(async move {
                let uid = use_email_token(tx, now, &token, "password_reset").await?;
                // Every other reset token of the account goes with this one: a token mailed
                // earlier (perhaps to someone who read that mail) must not set the password
                // again after the owner chose a new one.
                sqlx::query(
                    "UPDATE email_tokens SET used_at = $1
                     WHERE user_id = $2 AND purpose = 'password_reset' AND used_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(&uid)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL,
                        updated_at = $2 WHERE id = $3",
                )
                .bind(&hash)
                .bind(now.as_millis())
                .bind(&uid)
                .execute(&mut **tx)
                .await?;
                sqlx::query(
                    "UPDATE sessions SET ended_at = $1, ended_reason = 'password_reset'
                     WHERE user_id = $2 AND ended_at IS NULL",
                )
                .bind(now.as_millis())
                .bind(&uid)
                .execute(&mut **tx)
                .await?;
                audit(
                    tx,
                    now,
                    Some(&uid),
                    "password.reset",
                    Some(&addr),
                    serde_json::json!({}),
                )
                .await
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Multi-factor authentication (TOTP)

#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrollment {
    /// The shared secret, base32 (enter it in an authenticator app).
    pub secret: String,
    pub otpauth_uri: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TotpEnrollRequest {
    /// The current password, to confirm (a bearer token alone cannot turn MFA on).
    pub password: String,
}

fn wrong_password() -> ApiError {
    ApiError::forbidden("wrong_password", "the password is wrong")
}

/// The password hash of a signed-in caller's account.
async fn password_hash_of(state: &AppState, caller: &Caller) -> Result<String, ApiError> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(&caller.user_id)
            .fetch_optional(state.db.pool())
            .await
            .map_err(Error::from)?;
    stored.ok_or_else(|| ApiError::unauthorized("the account no longer exists"))
}

/// Start TOTP enrolment: needs the current password (a stolen bearer token alone could
/// otherwise turn MFA on with the thief's authenticator and lock the owner out); returns a new
/// secret; confirm it with a code to turn MFA on. The password check counts towards the
/// lockout like a sign-in: a wrong one is 403 `wrong_password`, and a locked account 423. The
/// secret is stored sealed (ADR 0013); a server without `FITEDGE_SECRET_KEY` (outside `--dev`)
/// has no key that survives a restart and refuses.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/enroll", tag = "identity", security(("bearer" = [])),
    params(crate::openapi::IdempotencyKey),
    request_body = TotpEnrollRequest,
    responses((status = 200, body = TotpEnrollment), (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "wrong_password (counted towards the lockout)"),
        (status = 409, body = ApiError, description = "MFA already enabled, or idempotency key in flight"),
        (status = 422, body = ApiError),
        (status = 423, body = ApiError, description = "account_locked (Retry-After): too many failed password or code checks"),
        (status = 429, body = ApiError),
        (status = 503, body = ApiError, description = "mfa_unavailable: the server has no FITEDGE_SECRET_KEY")))]
pub async fn totp_enroll(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ValidJson(req): ValidJson<TotpEnrollRequest>,
) -> Result<axum::Json<TotpEnrollment>, ApiError> {
    if caller.mfa_enrolled {
        return Err(ApiError::conflict(
            "mfa_already_enabled",
            "TOTP is already enabled",
        ));
    }
    // Everything that can fail without the password being checked fails before it is counted.
    let secret = crypto::random_bytes(totp::SECRET_LEN)?;
    let Some(sealed) = state.totp_keys.seal(&caller.user_id, &secret)? else {
        return Err(no_key_to_enrol());
    };
    let stored = password_hash_of(&state, &caller).await?;
    let attempt = take_for(&state, &caller).await?;
    if !password::verify(stored, req.password).await? {
        refuse(&state, &caller.user_id, attempt, &addr, "mfa.enroll_failed").await?;
        return Err(wrong_password());
    }
    // The row's key id covers both TOTP columns: only a row without an enabled secret (which
    // could be under another key) takes a new pending one.
    let email: Option<String> = state
        .db
        .write(|tx| {
            let (uid, sealed) = (caller.user_id.clone(), sealed.clone());
            Box::pin(async move {
                record_success(tx, &uid, attempt).await?;
                let email: Option<String> = sqlx::query_scalar(
                    "UPDATE users SET totp_pending_secret = $1, totp_key_id = $2
                     WHERE id = $3 AND totp_secret IS NULL RETURNING email",
                )
                .bind(&sealed.value)
                .bind(&sealed.key_id)
                .bind(&uid)
                .fetch_optional(&mut **tx)
                .await?;
                Ok(email)
            })
        })
        .await?;
    let Some(email) = email else {
        return Err(ApiError::conflict(
            "mfa_already_enabled",
            "TOTP is already enabled",
        ));
    };
    Ok(axum::Json(TotpEnrollment {
        secret: totp::base32(&secret),
        otpauth_uri: totp::otpauth_uri(&secret, &email),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct TotpDisableRequest {
    /// The current password.
    pub password: String,
    /// A current 6-digit TOTP code.
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

/// Turn TOTP off: needs the current password and a current code (both checked, one attempt
/// counted towards the lockout like a sign-in). Either wrong: 403 `wrong_password_or_code` (not
/// told apart); a locked account: 423. On success the secret is forgotten (enrol again to turn
/// MFA back on); the calling session stays as it is.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/disable", tag = "identity", security(("bearer" = [])),
    params(crate::openapi::IdempotencyKey),
    request_body = TotpDisableRequest,
    responses((status = 204, description = "TOTP is off"), (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "wrong_password_or_code (counted towards the lockout)"),
        (status = 409, body = ApiError, description = "mfa_not_enabled, or idempotency key in flight"),
        (status = 422, body = ApiError),
        (status = 423, body = ApiError, description = "account_locked (Retry-After): too many failed password or code checks"),
        (status = 429, body = ApiError),
        (status = 503, body = ApiError, description = "mfa_unavailable: no key to open the TOTP secret with")))]
pub async fn totp_disable(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ValidJson(req): ValidJson<TotpDisableRequest>,
) -> Result<StatusCode, ApiError> {
    let mut f = FieldErrors::new();
    push(&mut f, "code", totp_code_problems(&req.code));
    check(f)?;
    let row = sqlx::query(
        "SELECT password_hash, totp_secret, totp_key_id, totp_last_step FROM users WHERE id = $1",
    )
    .bind(&caller.user_id)
    .fetch_optional(state.db.pool())
    .await
    .map_err(Error::from)?
    .ok_or_else(|| ApiError::unauthorized("the account no longer exists"))?;
    let secret: Option<String> = col(&row, "totp_secret")?;
    let Some(secret) = secret else {
        return Err(ApiError::conflict(
            "mfa_not_enabled",
            "TOTP is not enabled for this account",
        ));
    };
    let key_id: Option<String> = col(&row, "totp_key_id")?;
    let secret_bytes = state
        .totp_keys
        .open(&caller.user_id, &secret, key_id.as_deref())?;
    let last: Option<i64> = col(&row, "totp_last_step")?;
    let stored: String = col(&row, "password_hash")?;
    let attempt = take_for(&state, &caller).await?;
    let now = state.now();
    let step = totp::verify(&secret_bytes, &req.code, now, last);
    // The hash is checked whatever the code: the time taken does not tell which was wrong.
    let good = password::verify(stored, req.password).await?;
    let wrong = || {
        ApiError::forbidden(
            "wrong_password_or_code",
            "the password or the code is wrong (or the code was already used)",
        )
    };
    let (Some(step), true) = (step, good) else {
        refuse(
            &state,
            &caller.user_id,
            attempt,
            &addr,
            "mfa.disable_failed",
        )
        .await?;
        return Err(wrong());
    };
    let disabled = state
        .db
        .write(|tx| {
            let (uid, sid, addr) = (
                caller.user_id.clone(),
                caller.session_id.clone(),
                addr.clone(),
            );
            Box::pin(async move {
                if !claim_totp_step(tx, &uid, step).await? {
                    record_failure(tx, now, &uid, attempt, &addr, "mfa.disable_failed").await?;
                    return Ok(false);
                }
                sqlx::query(
                    "UPDATE users SET totp_secret = NULL, totp_pending_secret = NULL,
                        totp_last_step = NULL, totp_key_id = NULL, updated_at = $1
                     WHERE id = $2",
                )
                .bind(now.as_millis())
                .bind(&uid)
                .execute(&mut **tx)
                .await?;
                record_success(tx, &uid, attempt).await?;
                audit(
                    tx,
                    now,
                    Some(&uid),
                    "mfa.disabled",
                    Some(&addr),
                    serde_json::json!({ "session_id": sid }),
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
    if !disabled {
        return Err(wrong());
    }
    Ok(StatusCode::NO_CONTENT)
}

fn no_key_to_enrol() -> ApiError {
    mfa_unavailable(
        "TOTP cannot be enabled on this server: it has no FITEDGE_SECRET_KEY to protect \
         authenticator secrets with; ask the operator",
    )
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeRequest {
    /// 6-digit TOTP code.
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MfaResponse {
    /// This session passed multi-factor authentication.
    pub mfa: bool,
}

async fn check_code(
    state: &AppState,
    caller: &Caller,
    addr: &str,
    code: &str,
    pending: bool,
) -> Result<(), ApiError> {
    let now = state.now();
    let mut f = FieldErrors::new();
    push(&mut f, "code", totp_code_problems(code));
    check(f)?;
    let row = sqlx::query(
        "SELECT totp_secret, totp_pending_secret, totp_key_id, totp_last_step
         FROM users WHERE id = $1",
    )
    .bind(&caller.user_id)
    .fetch_one(state.db.pool())
    .await
    .map_err(Error::from)?;
    let column = if pending {
        "totp_pending_secret"
    } else {
        "totp_secret"
    };
    let secret: Option<String> = col(&row, column)?;
    let Some(secret) = secret else {
        return Err(ApiError::conflict(
            if pending {
                "no_enrolment"
            } else {
                "mfa_not_enabled"
            },
            if pending {
                "start an enrolment first"
            } else {
                "TOTP is not enabled for this account"
            },
        ));
    };
    let key_id: Option<String> = col(&row, "totp_key_id")?;
    let secret_bytes = state
        .totp_keys
        .open(&caller.user_id, &secret, key_id.as_deref())?;
    // Enabling stores the secret again: it needs a key that survives a restart (a pending
    // secret can be plain text from an earlier version).
    let enabled = if pending {
        let sealed = state.totp_keys.seal(&caller.user_id, &secret_bytes)?;
        Some(sealed.ok_or_else(no_key_to_enrol)?)
    } else {
        None
    };
    let reseal = state.totp_keys.needs_reseal(&secret, key_id.as_deref());
    let last: Option<i64> = col(&row, "totp_last_step")?;
    // Counted before the code is checked (423 when locked): see `take_attempt`.
    let attempt = take_for(state, caller).await?;
    // A wrong code, or one already used (found here or, when raced, inside the transaction):
    // counted towards the lockout and answered the same way.
    let wrong_code =
        || ApiError::unauthorized("the code is wrong or was already used").retag("invalid_code");
    let Some(step) = totp::verify(&secret_bytes, code, now, last) else {
        refuse(state, &caller.user_id, attempt, addr, "mfa.failed").await?;
        return Err(wrong_code());
    };
    let fresh = state
        .db
        .write(|tx| {
            let (uid, sid, addr, enabled, keys) = (
                caller.user_id.clone(),
                caller.session_id.clone(),
                addr.to_string(),
                enabled.clone(),
                state.totp_keys.clone(),
            );
            Box::pin(async move {
                if !claim_totp_step(tx, &uid, step).await? {
                    record_failure(tx, now, &uid, attempt, &addr, "mfa.failed").await?;
                    return Ok(false);
                }
                if let Some(sealed) = enabled {
                    sqlx::query(
                        "UPDATE users SET totp_secret = $1, totp_pending_secret = NULL,
                            totp_key_id = $2, totp_last_step = $3
                         WHERE id = $4",
                    )
                    .bind(&sealed.value)
                    .bind(&sealed.key_id)
                    .bind(step)
                    .bind(&uid)
                    .execute(&mut **tx)
                    .await?;
                } else if reseal {
                    upgrade_in_tx(tx, &keys, &uid).await?;
                }
                record_success(tx, &uid, attempt).await?;
                sqlx::query("UPDATE sessions SET mfa_at = $1 WHERE id = $2")
                    .bind(now.as_millis())
                    .bind(&sid)
                    .execute(&mut **tx)
                    .await?;
                audit(
                    tx,
                    now,
                    Some(&uid),
                    if pending {
                        "mfa.enabled"
                    } else {
                        "mfa.verified"
                    },
                    Some(&addr),
                    serde_json::json!({ "session_id": sid }),
                )
                .await?;
                Ok(true)
            })
        })
        .await?;
    if !fresh {
        return Err(wrong_code());
    }
    Ok(())
}

/// Records `step` as the account's last used TOTP step unless that step or a later one is
/// already recorded. The step was checked against a value read before the transaction; this
/// conditional write inside it (serializable on both backends) is what stops two requests
/// racing with one code from both passing. `false`: the code was used meanwhile.
async fn claim_totp_step(tx: &mut Tx, user_id: &str, step: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE users SET totp_last_step = $1
         WHERE id = $2 AND (totp_last_step IS NULL OR totp_last_step < $1)",
    )
    .bind(step)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Confirm TOTP enrolment with a code: MFA is on, and this session counts as verified.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/confirm", tag = "identity", security(("bearer" = [])),
    params(crate::openapi::IdempotencyKey),
    request_body = CodeRequest,
    responses((status = 200, body = MfaResponse), (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "invalid_code"), (status = 409, body = ApiError),
        (status = 422, body = ApiError), (status = 423, body = ApiError), (status = 429, body = ApiError),
        (status = 503, body = ApiError, description = "mfa_unavailable: no key to seal or open the TOTP secret with")))]
pub async fn totp_confirm(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ValidJson(req): ValidJson<CodeRequest>,
) -> Result<axum::Json<MfaResponse>, ApiError> {
    check_code(&state, &caller, &addr, &req.code, true).await?;
    Ok(axum::Json(MfaResponse { mfa: true }))
}

/// Verify a TOTP code for the current session (step-up for administration and health data).
#[utoipa::path(post, path = "/api/v1/auth/mfa/verify", tag = "identity", security(("bearer" = [])),
    params(crate::openapi::IdempotencyKey),
    request_body = CodeRequest,
    responses((status = 200, body = MfaResponse), (status = 400, body = ApiError),
        (status = 401, body = ApiError, description = "invalid_code"), (status = 409, body = ApiError),
        (status = 422, body = ApiError), (status = 423, body = ApiError), (status = 429, body = ApiError),
        (status = 503, body = ApiError, description = "mfa_unavailable: no key to seal or open the TOTP secret with")))]
pub async fn mfa_verify(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ValidJson(req): ValidJson<CodeRequest>,
) -> Result<axum::Json<MfaResponse>, ApiError> {
    check_code(&state, &caller, &addr, &req.code, false).await?;
    Ok(axum::Json(MfaResponse { mfa: true }))
}

// ---------------------------------------------------------------------------------------------
// Profile

/// The caller's own account.
#[utoipa::path(get, path = "/api/v1/me", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Profile), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn me(caller: Caller) -> axum::Json<Profile> {
    axum::Json(caller.profile)
}

/// A user's account: the owner's own (profiles are private by default), or any for an
/// administrator with MFA. 404 otherwise.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = Profile), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Profile>, ApiError> {
    if !caller.can_read_user(&id) {
        return Err(ApiError::not_found());
    }
    load_profile(state.db.pool(), &id)
        .await?
        .map(axum::Json)
        .ok_or_else(ApiError::not_found)
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ProfileUpdate {
    #[schema(min_length = 1, max_length = 64)]
    pub display_name: Option<String>,
    /// The version last read; a stale one gives 409 `version_conflict`.
    pub version: i64,
}

/// Change the caller's own profile, with optimistic locking.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "identity", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id"), crate::openapi::IdempotencyKey),
    request_body = ProfileUpdate,
    responses((status = 200, body = Profile), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError, description = "version_conflict"),
        (status = 422, body = ApiError), (status = 429, body = ApiError)))]
pub async fn update_user(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    Path(id): Path<String>,
    ValidJson(req): ValidJson<ProfileUpdate>,
) -> Result<axum::Json<Profile>, ApiError> {
    if !caller.can_change_user(&id) {
        return Err(ApiError::not_found());
    }
    let name = req
        .display_name
        .as_deref()
        .map(str::trim)
        .map(str::to_string);
    if let Some(n) = &name {
        let len = n.chars().count();
        if len == 0 || len > MAX_DISPLAY_NAME || n.chars().any(char::is_control) {
            return Err(ApiError::field(
                "display_name",
                format!("must be 1 to {MAX_DISPLAY_NAME} printable characters"),
            ));
        }
    }
    let now = state.now();
    let profile = state
        .db
        .write(|tx| {
            let (id, name, addr) = (id.clone(), name.clone(), addr.clone());
            let version = req.version;
            Box::pin(async move {
                let r = sqlx::query(
                    "UPDATE users SET display_name = COALESCE($1, display_name),
                        version = version + 1, updated_at = $2
                     WHERE id = $3 AND version = $4",
                )
                .bind(name)
                .bind(now.as_millis())
                .bind(&id)
                .bind(version)
                .execute(&mut **tx)
                .await?;
                if r.rows_affected() == 0 {
                    return Err(ApiError::conflict(
                        "version_conflict",
                        "the profile changed since you read it; read it again",
                    )
                    .into());
                }
                audit(
                    tx,
                    now,
                    Some(&id),
                    "profile.updated",
                    Some(&addr),
                    serde_json::json!({}),
                )
                .await?;
                load_profile(&mut **tx, &id).await
            })
        })
        .await?;
    profile.map(axum::Json).ok_or_else(ApiError::not_found)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEvent {
    pub kind: String,
    pub address: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    #[schema(format = DateTime)]
    pub at: String,
}

async fn audit_events_of(state: &AppState, user_id: &str, limit: i64) -> Result<Vec<AuditEvent>> {
    let rows = sqlx::query(
        "SELECT kind, address, detail, created_at FROM audit_events
         WHERE user_id = $1 ORDER BY created_at DESC, id LIMIT $2",
    )
    .bind(user_id)
    .bind(limit)
    .fetch_all(state.db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            let detail: String = col(r, "detail")?;
            Ok(AuditEvent {
                kind: col(r, "kind")?,
                address: col(r, "address")?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                at: Timestamp(col(r, "created_at")?).to_rfc3339(),
            })
        })
        .collect()
}

/// The caller's security events, newest first (at most 200).
#[utoipa::path(get, path = "/api/v1/me/audit-log", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = Vec<AuditEvent>), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn my_audit_log(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<Vec<AuditEvent>>, ApiError> {
    Ok(axum::Json(
        audit_events_of(&state, &caller.user_id, 200).await?,
    ))
}

// ---------------------------------------------------------------------------------------------
// GDPR

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportDocument {
    #[schema(format = DateTime)]
    pub exported_at: String,
    pub profile: Profile,
    pub sessions: Vec<SessionInfo>,
    pub audit_events: Vec<AuditEvent>,
    /// Email tokens issued (purpose and times; the tokens themselves are not kept).
    #[schema(value_type = Vec<Object>)]
    pub email_tokens: Vec<serde_json::Value>,
    /// Bookings, waitlist entries, booking notifications and events organized.
    #[schema(value_type = Object)]
    pub booking: serde_json::Value,
    /// Sync: documents owned (automerge bytes in hex), shares granted and received, blobs
    /// uploaded.
    #[schema(value_type = Object)]
    pub sync: serde_json::Value,
}

/// Export all of the caller's data as one JSON document (GDPR).
#[utoipa::path(get, path = "/api/v1/me/export", tag = "identity", security(("bearer" = [])),
    responses((status = 200, body = ExportDocument), (status = 401, body = ApiError), (status = 429, body = ApiError)))]
pub async fn export_me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<ExportDocument>, ApiError> {
    let profile = load_profile(state.db.pool(), &caller.user_id)
        .await?
        .ok_or_else(ApiError::not_found)?;
    let srows = sqlx::query(
        "SELECT id, created_at, expires_at, mfa_at FROM sessions WHERE user_id = $1 ORDER BY created_at, id",
    )
    .bind(&caller.user_id)
    .fetch_all(state.db.pool())
    .await
    .map_err(Error::from)?;
    let mut sessions = Vec::new();
    for r in &srows {
        let id: String = col(r, "id")?;
        let mfa: Option<i64> = col(r, "mfa_at")?;
        sessions.push(SessionInfo {
            current: id == caller.session_id,
            id,
            created_at: Timestamp(col(r, "created_at")?).to_rfc3339(),
            expires_at: Timestamp(col(r, "expires_at")?).to_rfc3339(),
            mfa: mfa.is_some(),
        });
    }
    let trows = sqlx::query(
        "SELECT purpose, created_at, expires_at, used_at FROM email_tokens WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(&caller.user_id)
    .fetch_all(state.db.pool())
    .await
    .map_err(Error::from)?;
    let mut email_tokens = Vec::new();
    for r in &trows {
        let used: Option<i64> = col(r, "used_at")?;
        email_tokens.push(serde_json::json!({
            "purpose": col::<String>(r, "purpose")?,
            "created_at": Timestamp(col(r, "created_at")?).to_rfc3339(),
            "expires_at": Timestamp(col(r, "expires_at")?).to_rfc3339(),
            "used_at": used.map(|u| Timestamp(u).to_rfc3339()),
        }));
    }
    Ok(axum::Json(ExportDocument {
        exported_at: state.now().to_rfc3339(),
        profile,
        sessions,
        audit_events: audit_events_of(&state, &caller.user_id, i64::MAX).await?,
        email_tokens,
        booking: crate::booking::export_of(&state.db, &caller.user_id).await?,
        sync: crate::sync::store::export_user(&state, &caller.user_id).await?,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteRequest {
    /// The current password, to confirm.
    pub password: String,
}

/// Removes an account and everything identity and sync keep of it, inside `tx`, and tells the
/// other contexts (`identity.account_deleted`). The audit log keeps `action` without personal
/// data: that a deletion happened.
async fn erase_account(tx: &mut Tx, now: Timestamp, uid: &str, action: &str) -> Result<()> {
    crate::sync::store::delete_user(tx, uid).await?;
    for sql in [
        "DELETE FROM idempotency_records WHERE user_id = $1
           OR scope IN (SELECT token_hash FROM sessions WHERE user_id = $1)",
        "DELETE FROM outbox_processed WHERE event_id IN
           (SELECT id FROM outbox WHERE aggregate_id = $1)",
        "DELETE FROM outbox WHERE aggregate_id = $1",
        "DELETE FROM audit_events WHERE user_id = $1",
        "DELETE FROM email_tokens WHERE user_id = $1",
        "DELETE FROM sessions WHERE user_id = $1",
        "DELETE FROM users WHERE id = $1",
    ] {
        sqlx::query(sql).bind(uid).execute(&mut **tx).await?;
    }
    audit(tx, now, None, action, None, serde_json::json!({})).await?;
    outbox::enqueue(
        tx,
        now,
        "identity.account_deleted",
        uid,
        serde_json::json!({ "user_id": uid }),
    )
    .await?;
    Ok(())
}

/// Delete the caller's account and all of its data (GDPR). Other contexts delete theirs on the
/// `identity.account_deleted` event.
#[utoipa::path(post, path = "/api/v1/me/delete", tag = "identity", security(("bearer" = [])),
    params(crate::openapi::IdempotencyKey),
    request_body = DeleteRequest,
    responses((status = 204), (status = 400, body = ApiError), (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "wrong_password (counted towards the lockout)"),
        (status = 409, body = ApiError), (status = 422, body = ApiError),
        (status = 423, body = ApiError, description = "account_locked (Retry-After): too many failed password or code checks"),
        (status = 429, body = ApiError)))]
pub async fn delete_me(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    caller: Caller,
    ValidJson(req): ValidJson<DeleteRequest>,
) -> Result<StatusCode, ApiError> {
    let stored = password_hash_of(&state, &caller).await?;
    // Counted like a sign-in: a bearer token must not be a way round the lockout.
    let attempt = take_for(&state, &caller).await?;
    if !password::verify(stored, req.password).await? {
        refuse(
            &state,
            &caller.user_id,
            attempt,
            &addr,
            "account.delete_failed",
        )
        .await?;
        return Err(wrong_password());
    }
    let now = state.now();
    let owned_docs = crate::sync::store::owned_ids(&state, &caller.user_id).await?;
    state
        .db
        .write(|tx| {
            let uid = caller.user_id.clone();
            Box::pin(async move { erase_account(tx, now, &uid, "account.deleted").await })
        })
        .await?;
    state.outbox_notify.notify_one();
    let owned: Vec<_> = owned_docs.iter().filter_map(|d| d.parse().ok()).collect();
    state.sync.forget_user(&caller.user_id, &owned);
    state
        .account_limiter
        .forget(&format!("user:{}", caller.user_id));
    state.sync_limiter.forget(&caller.user_id);
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// Role- and MFA-gated reads

#[derive(Debug, Serialize, ToSchema)]
pub struct AdminUserView {
    pub profile: Profile,
    pub locked: bool,
    pub active_sessions: i64,
}

/// Administrators (with an MFA-verified session): any account.
#[utoipa::path(get, path = "/api/v1/admin/users/{id}", tag = "administration", security(("bearer" = [])),
    params(("id" = String, Path, description = "user id")),
    responses((status = 200, body = AdminUserView), (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "forbidden, mfa_required or mfa_enrollment_required"),
        (status = 404, body = ApiError), (status = 429, body = ApiError)))]
pub async fn admin_get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<AdminUserView>, ApiError> {
    caller.require(Permission::AdministerUsers)?;
    let now = state.now().as_millis();
    let sql = format!("SELECT {PROFILE_COLUMNS}, locked_until FROM users WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&id)
        .fetch_optional(state.db.pool())
        .await
        .map_err(Error::from)?
        .ok_or_else(ApiError::not_found)?;
    let locked_until: Option<i64> = col(&row, "locked_until")?;
    let active: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2",
    )
    .bind(&id)
    .bind(now)
    .fetch_one(state.db.pool())
    .await
    .map_err(Error::from)?;
    Ok(axum::Json(AdminUserView {
        profile: profile_from_row(&row)?,
        locked: locked_until.is_some_and(|u| u > now),
        active_sessions: active,
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthDataSummary {
    #[schema(format = Uuid)]
    pub user_id: String,
    /// Health records the server holds for the caller (samples arrive with the sync issue).
    pub records: i64,
}

/// Health-data scope: needs an MFA-verified session. The health records themselves arrive with
/// sync; the gate is in place for them.
#[utoipa::path(get, path = "/api/v1/health-data/summary", tag = "health", security(("bearer" = [])),
    responses((status = 200, body = HealthDataSummary), (status = 401, body = ApiError),
        (status = 403, body = ApiError, description = "mfa_required or mfa_enrollment_required"),
        (status = 429, body = ApiError)))]
pub async fn health_data_summary(
    caller: Caller,
) -> Result<axum::Json<HealthDataSummary>, ApiError> {
    caller.require(Permission::HealthData)?;
    Ok(axum::Json(HealthDataSummary {
        user_id: caller.user_id,
        records: 0,
    }))
}

// ---------------------------------------------------------------------------------------------
// Operator commands

/// `fitedge-server user set-role EMAIL ROLE`.
pub async fn set_role(state: &AppState, email: &str, role: Role) -> Result<bool> {
    operator_set(state, email, "role", role.as_str()).await
}

/// `fitedge-server user set-tier EMAIL TIER`.
pub async fn set_tier(state: &AppState, email: &str, tier: Tier) -> Result<bool> {
    operator_set(state, email, "tier", tier.as_str()).await
}

async fn operator_set(
    state: &AppState,
    email: &str,
    what: &'static str,
    value: &str,
) -> Result<bool> {
    let now = state.now();
    let email = normalize_email(email);
    state
        .db
        .write(|tx| {
            let (email, value) = (email.clone(), value.to_string());
            Box::pin(async move {
                let sql = match what {
                    "role" => {
                        "UPDATE users SET role = $1, updated_at = $2 WHERE email = $3 RETURNING id"
                    }
                    _ => {
                        "UPDATE users SET tier = $1, updated_at = $2 WHERE email = $3 RETURNING id"
                    }
                };
                let id: Option<String> = sqlx::query_scalar(sql)
                    .bind(&value)
                    .bind(now.as_millis())
                    .bind(&email)
                    .fetch_optional(&mut **tx)
                    .await?;
                let Some(id) = id else { return Ok(false) };
                audit(
                    tx,
                    now,
                    Some(&id),
                    &format!("{what}.changed_by_operator"),
                    None,
                    serde_json::json!({ what: value }),
                )
                .await?;
                Ok(true)
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn age_counts_whole_years() {
        let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        assert_eq!(age_on(d("2012-06-15"), d("2025-06-15")), 13);
        assert_eq!(age_on(d("2012-06-16"), d("2025-06-15")), 12);
        assert_eq!(age_on(d("2012-02-29"), d("2025-02-28")), 12);
        assert_eq!(age_on(d("2012-02-29"), d("2025-03-01")), 13);
    }

    #[test]
    fn emails() {
        assert!(email_problems("a@b.co").is_empty());
        assert!(!email_problems("a@b").is_empty());
        assert!(!email_problems("a b@c.de").is_empty());
        assert!(!email_problems("@c.de").is_empty());
    }
}
