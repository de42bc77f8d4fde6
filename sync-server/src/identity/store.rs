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

/// One credential check taken against the lockout, before the check runs (see [`take_attempt`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Refused unchecked: locked until this instant (milliseconds).
    Locked(i64),
    /// Counted; the credential may be checked. `count` is this attempt's place in the run of
    /// failures (1-based). `armed`: it reached the threshold, so the lock is already set (until
    /// `until`) and every later attempt is refused while it lasts; this one is still checked.
    Taken { count: i64, armed: bool, until: i64 },
}

fn lock_end(now: Timestamp, lockout_secs: u64) -> i64 {
    now.as_millis() + (lockout_secs as i64).saturating_mul(1000)
}

fn attempt_from(
    row: Option<(i64, Option<i64>)>,
    now: Timestamp,
    until: i64,
    threshold: u32,
) -> Option<Attempt> {
    let (failed, locked_until) = row?;
    let armed = locked_until.is_some_and(|u| u > now.as_millis());
    Some(Attempt::Taken {
        count: if armed { i64::from(threshold) } else { failed },
        armed,
        until,
    })
}

/// Counts one credential check of an account BEFORE it is made, in one conditional write: the
/// attempt that reaches `threshold` arms the lock at once (the count starts over), and an
/// account already locked is refused without counting. Checking first and counting afterwards
/// let any number of parallel guesses through before the lock; here each takes its place in
/// the count (the write is serializable), so at most `threshold` are ever checked per lock.
/// `None`: the account does not exist (any more).
pub async fn take_attempt(
    tx: &mut Tx,
    now: Timestamp,
    user_id: &str,
    threshold: u32,
    lockout_secs: u64,
) -> Result<Option<Attempt>> {
    let until = lock_end(now, lockout_secs);
    let row: Option<(i64, Option<i64>)> = sqlx::query_as(
        "UPDATE users SET
            failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0 ELSE failed_logins + 1 END,
            locked_until = CASE WHEN failed_logins + 1 >= $2 THEN $3 ELSE locked_until END
         WHERE id = $1 AND (locked_until IS NULL OR locked_until <= $4)
         RETURNING failed_logins, locked_until",
    )
    .bind(user_id)
    .bind(i64::from(threshold))
    .bind(until)
    .bind(now.as_millis())
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(a) = attempt_from(row, now, until, threshold) {
        return Ok(Some(a));
    }
    let locked: Option<Option<i64>> =
        sqlx::query_scalar("SELECT locked_until FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(&mut **tx)
            .await?;
    Ok(locked.map(|u| Attempt::Locked(u.unwrap_or(until))))
}

/// [`take_attempt`] for an address without an account (`login_failures`): the same count,
/// threshold and lock, so the answers match. A row untouched for [`UNKNOWN_FAILURES_KEPT_MS`]
/// counts from zero again (as if the cleanup had removed it already).
pub async fn take_unknown_attempt(
    tx: &mut Tx,
    now: Timestamp,
    email_hmac: &str,
    threshold: u32,
    lockout_secs: u64,
) -> Result<Attempt> {
    let until = lock_end(now, lockout_secs);
    let row: Option<(i64, Option<i64>)> = sqlx::query_as(
        "INSERT INTO login_failures (email_hmac, failed, locked_until, updated_at)
         VALUES ($1, CASE WHEN 1 >= $2 THEN 0 ELSE 1 END,
                 CASE WHEN 1 >= $2 THEN $3 ELSE NULL END, $4)
         ON CONFLICT (email_hmac) DO UPDATE SET
            failed = CASE
                WHEN (CASE WHEN login_failures.updated_at < $5 THEN 0
                           ELSE login_failures.failed END) + 1 >= $2 THEN 0
                ELSE (CASE WHEN login_failures.updated_at < $5 THEN 0
                           ELSE login_failures.failed END) + 1 END,
            locked_until = CASE
                WHEN (CASE WHEN login_failures.updated_at < $5 THEN 0
                           ELSE login_failures.failed END) + 1 >= $2 THEN $3
                ELSE login_failures.locked_until END,
            updated_at = $4
         WHERE login_failures.locked_until IS NULL OR login_failures.locked_until <= $4
         RETURNING failed, locked_until",
    )
    .bind(email_hmac)
    .bind(i64::from(threshold))
    .bind(until)
    .bind(now.as_millis())
    .bind(now.as_millis() - UNKNOWN_FAILURES_KEPT_MS)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(a) = attempt_from(row, now, until, threshold) {
        return Ok(a);
    }
    let locked: Option<i64> =
        sqlx::query_scalar("SELECT locked_until FROM login_failures WHERE email_hmac = $1")
            .bind(email_hmac)
            .fetch_one(&mut **tx)
            .await?;
    Ok(Attempt::Locked(locked.unwrap_or(until)))
}

/// The second write for an address without an account, where an account's failure writes its
/// audit events: forgets the counts of addresses that have not failed for
/// [`UNKNOWN_FAILURES_KEPT_MS`] (never the one just counted).
pub async fn forget_old_unknown_failures(tx: &mut Tx, now: Timestamp) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE updated_at < $1")
        .bind(now.as_millis() - UNKNOWN_FAILURES_KEPT_MS)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A taken attempt whose credential was wrong: the count is already in place, so this only
/// records it (`what` with the count, and `account.locked` when this attempt armed the lock).
pub async fn record_failure(
    tx: &mut Tx,
    now: Timestamp,
    user_id: &str,
    attempt: Attempt,
    address: &str,
    what: &str,
) -> Result<()> {
    let Attempt::Taken {
        count,
        armed,
        until,
    } = attempt
    else {
        return Ok(());
    };
    audit(
        tx,
        now,
        Some(user_id),
        what,
        Some(address),
        serde_json::json!({ "consecutive_failures": count }),
    )
    .await?;
    if armed {
        audit(
            tx,
            now,
            Some(user_id),
            "account.locked",
            Some(address),
            serde_json::json!({ "until": Timestamp(until).to_rfc3339() }),
        )
        .await?;
    }
    Ok(())
}

/// A taken attempt whose credential was right: the run of failures is over. The lock is lifted
/// only when this very attempt armed it (it was the last one let through, and it passed); a lock
/// armed meanwhile by a parallel attempt stays.
pub async fn record_success(tx: &mut Tx, user_id: &str, attempt: Attempt) -> Result<()> {
    sqlx::query("UPDATE users SET failed_logins = 0 WHERE id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?;
    if let Attempt::Taken {
        armed: true, until, ..
    } = attempt
    {
        sqlx::query("UPDATE users SET locked_until = NULL WHERE id = $1 AND locked_until = $2")
            .bind(user_id)
            .bind(until)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// A taken attempt that ended neither way (the right password, but the email is not verified,
/// the TOTP code is missing, or the secret cannot be opened): gives the count back. Never lifts
/// a lock, not even one this attempt armed: otherwise whoever knows the password could
/// interleave such requests with wrong codes and never reach the lock.
pub async fn give_back_attempt(tx: &mut Tx, user_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE users SET failed_logins = failed_logins - 1 WHERE id = $1 AND failed_logins > 0",
    )
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// How long the failure count of an address without an account is kept after its last failure.
/// An account's count has no such limit; this one bounds a table anyone can add rows to. The
/// difference is only observable by someone who fails, waits this long, and fails again.
pub const UNKNOWN_FAILURES_KEPT_MS: i64 = 30 * 24 * 3_600_000;
