//! Identity rows: reading profiles, writing audit events, ending sessions.

use fitedge_core::time::Timestamp;
use serde::Serialize;
use sqlx::any::AnyRow;
use utoipa::ToSchema;

use crate::auth::{Role, Tier};
use crate::db::{col, parse_col, Tx};
use crate::error::Result;

/// A user's account as the API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Profile {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub display_name: String,
    /// `YYYY-MM-DD`.
    #[schema(format = Date)]
    pub birth_date: String,
    pub role: Role,
    pub tier: Tier,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Optimistic-locking version: send it back with a change.
    pub version: i64,
}

pub const PROFILE_COLUMNS: &str = "id, email, display_name, birth_date, role, tier, \
     email_verified_at, totp_secret, created_at, version";

pub fn profile_from_row(row: &AnyRow) -> Result<Profile> {
    let verified: Option<i64> = col(row, "email_verified_at")?;
    let totp: Option<String> = col(row, "totp_secret")?;
    Ok(Profile {
        id: col(row, "id")?,
        email: col(row, "email")?,
        display_name: col(row, "display_name")?,
        birth_date: col(row, "birth_date")?,
        role: parse_col::<Role>(row, "role")?,
        tier: parse_col::<Tier>(row, "tier")?,
        email_verified: verified.is_some(),
        mfa_enabled: totp.is_some(),
        created_at: Timestamp(col(row, "created_at")?).to_rfc3339(),
        version: col(row, "version")?,
    })
}

pub async fn load_profile<'e, E>(ex: E, user_id: &str) -> Result<Option<Profile>>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    let sql = format!("SELECT {PROFILE_COLUMNS} FROM users WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(ex)
        .await?;
    row.as_ref().map(profile_from_row).transpose()
}

/// Records a security event inside the caller's transaction. `detail` must hold no secret.
pub async fn audit(
    tx: &mut Tx,
    now: Timestamp,
    user_id: Option<&str>,
    kind: &str,
    address: Option<&str>,
    detail: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_events (id, user_id, kind, address, detail, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(user_id)
    .bind(kind)
    .bind(address)
    .bind(detail.to_string())
    .bind(now.as_millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Counts a failed credential check; locks the account when the count reaches `threshold`.
/// Returns whether this failure locked it.
pub async fn record_failure(
    tx: &mut Tx,
    now: Timestamp,
    user_id: &str,
    threshold: u32,
    lockout_secs: u64,
    address: &str,
    what: &str,
) -> Result<bool> {
    let failed: i64 = sqlx::query_scalar(
        "UPDATE users SET failed_logins = failed_logins + 1 WHERE id = $1 RETURNING failed_logins",
    )
    .bind(user_id)
    .fetch_one(&mut **tx)
    .await?;
    audit(
        tx,
        now,
        Some(user_id),
        what,
        Some(address),
        serde_json::json!({ "consecutive_failures": failed }),
    )
    .await?;
    if failed >= i64::from(threshold) {
        let until = now.as_millis() + (lockout_secs as i64).saturating_mul(1000);
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = $1 WHERE id = $2")
            .bind(until)
            .bind(user_id)
            .execute(&mut **tx)
            .await?;
        audit(
            tx,
            now,
            Some(user_id),
            "account.locked",
            Some(address),
            serde_json::json!({ "until": Timestamp(until).to_rfc3339() }),
        )
        .await?;
        return Ok(true);
    }
    Ok(false)
}

/// How long the failure count of an address without an account is kept after its last failure.
/// An account's count has no such limit; this one bounds a table anyone can add rows to. The
/// difference is only observable by someone who fails, waits this long, and fails again.
pub const UNKNOWN_FAILURES_KEPT_MS: i64 = 30 * 24 * 3_600_000;

/// [`record_failure`] for an address without an account: the same count, threshold and lock,
/// so the answers match; no audit event (there is no account to attach it to). Returns whether
/// this failure locked it.
pub async fn record_unknown_failure(
    tx: &mut Tx,
    now: Timestamp,
    email_hmac: &str,
    threshold: u32,
    lockout_secs: u64,
) -> Result<bool> {
    sqlx::query("DELETE FROM login_failures WHERE updated_at < $1")
        .bind(now.as_millis() - UNKNOWN_FAILURES_KEPT_MS)
        .execute(&mut **tx)
        .await?;
    let failed: i64 = sqlx::query_scalar(
        "INSERT INTO login_failures (email_hmac, failed, updated_at) VALUES ($1, 1, $2)
         ON CONFLICT (email_hmac) DO UPDATE
           SET failed = login_failures.failed + 1, updated_at = $2
         RETURNING failed",
    )
    .bind(email_hmac)
    .bind(now.as_millis())
    .fetch_one(&mut **tx)
    .await?;
    if failed >= i64::from(threshold) {
        let until = now.as_millis() + (lockout_secs as i64).saturating_mul(1000);
        sqlx::query(
            "UPDATE login_failures SET failed = 0, locked_until = $1 WHERE email_hmac = $2",
        )
        .bind(until)
        .bind(email_hmac)
        .execute(&mut **tx)
        .await?;
        return Ok(true);
    }
    Ok(false)
}
