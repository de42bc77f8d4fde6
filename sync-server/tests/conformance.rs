//! The conformance suite: every test runs against SQLite and against PostgreSQL, each on its own
//! throwaway database, with a manual clock (expiry is tested by moving the clock, never by
//! sleeping). PostgreSQL unreachable: the PostgreSQL half fails, saying what is missing.
// Tests assert with unwrap/expect: a failure should stop the test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use fitedge_server::db::Backend;
use fitedge_server::idempotency;
use fitedge_server::identity::totp;
use fitedge_server::mail::MailKind;
use fitedge_server::outbox::{self, Event, Handler, Handlers};
use fitedge_server::testing::{test_config, NowExt, TestApp, TestRequest, PASSWORD};
use fitedge_server::{auth::Role, identity, AppState, Config, Db};
use futures::future::BoxFuture;
use serde_json::json;

const DAY: f64 = 86_400.0;

async fn app(b: Backend) -> TestApp {
    TestApp::new(b).await.expect("test app")
}

/// A `FITEDGE_SECRET_KEY` (64 hex digits): TOTP enrolment needs one outside dev mode.
const KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OTHER_KEY: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

async fn app_with_key(b: Backend) -> TestApp {
    TestApp::with_config(b, |c| c.secret_key = Some(KEY.into()))
        .await
        .expect("test app")
}

/// The same database, clock and mailbox served by a new process configured by `f` (a new state:
/// per-process keys are new, as after a restart).
async fn restart(a: TestApp, f: impl FnOnce(&mut Config)) -> TestApp {
    let TestApp {
        db, clock, mail, ..
    } = a;
    let mut config = test_config(&db.url);
    f(&mut config);
    let pool = Db::connect(&db.url).await.unwrap();
    pool.migrate().await.unwrap();
    let state = AppState::new(pool, config, clock.clone(), mail.clone(), Handlers::new()).unwrap();
    TestApp {
        router: fitedge_server::app(state.clone()),
        state,
        clock,
        mail,
        db,
    }
}

/// The stored TOTP columns of an account: (secret, pending, key id).
async fn totp_columns(
    a: &TestApp,
    email: &str,
) -> (Option<String>, Option<String>, Option<String>) {
    let row: (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT totp_secret, totp_pending_secret, totp_key_id FROM users WHERE email = $1",
    )
    .bind(email)
    .fetch_one(a.state.db.pool())
    .await
    .unwrap();
    row
}

/// Half a minute later (a new code), signs in with the code.
async fn next_code_login(
    a: &TestApp,
    email: &str,
    secret: &[u8],
) -> fitedge_server::testing::TestResponse {
    a.clock.advance_secs(30.0);
    a.call(login_with_code(
        email,
        &totp::code_at(secret, a.clock.now_ts()),
    ))
    .await
}

fn login_with_code(email: &str, code: &str) -> TestRequest {
    TestRequest::post("/api/v1/auth/login")
        .json(json!({"email": email, "password": PASSWORD, "totp_code": code}))
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Declares each test once per backend.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

conformance!(
    password_11_characters_refused_12_accepted,
    age_12_refused_13_accepted,
    validation_errors_name_every_field,
    email_must_be_verified_before_sign_in,
    verification_token_single_use_and_expires,
    an_unconfirmed_address_is_held_only_while_its_code_is_valid,
    lockout_on_5th_failure_not_4th_and_cools_down,
    sixth_session_ends_the_oldest,
    sessions_expire_after_7_days,
    logout_ends_the_token,
    password_reset_flow_tokens_and_expiry,
    mfa_required_for_health_data_then_satisfied,
    mfa_login_needs_code_and_codes_are_single_use,
    one_totp_code_signs_in_once_even_when_raced,
    admin_needs_role_and_mfa,
    ownership_on_every_route_with_an_id,
    optimistic_locking_on_profile,
    idempotency_replays_same_request,
    idempotency_422_on_different_body,
    idempotency_409_while_in_flight,
    idempotency_expires_after_24_hours,
    idempotency_key_must_be_uuid_v4,
    idempotency_keys_are_scoped_per_caller,
    rate_limit_per_address,
    rate_limit_per_account,
    gdpr_export_and_delete,
    outbox_at_least_once_with_idempotent_handlers,
    transactions_are_serializable_under_contention,
    healthcheck_metrics_and_correlation_ids,
    errors_are_json_and_unknown_routes_404,
    dev_mode_returns_tokens_only_in_dev,
    operator_commands_set_role_and_tier,
    migrations_are_idempotent,
    registration_answers_the_same_for_an_existing_address,
    registration_of_an_existing_address_spends_the_hash_cost,
    login_answers_and_lockout_the_same_without_an_account,
    password_reset_request_answers_the_same_for_every_address,
    totp_secrets_are_sealed_and_bound_to_the_account,
    totp_enrolment_needs_a_key_that_survives_a_restart,
    dev_mode_totp_survives_a_restart_and_is_resealed_under_a_real_key,
    plain_totp_secrets_from_earlier_versions_verify_and_are_sealed,
    parallel_wrong_passwords_are_checked_at_most_threshold_times,
    parallel_wrong_codes_are_checked_at_most_threshold_times,
    sign_ins_without_a_code_do_not_reset_the_failure_count,
    totp_enrolment_needs_the_password_and_totp_can_be_disabled,
    a_password_reset_voids_the_accounts_other_reset_tokens,
    wrong_passwords_at_account_deletion_count_towards_the_lockout,
);

async fn password_11_characters_refused_12_accepted(b: Backend) {
    let a = app(b).await;
    let r = a
        .register("p@example.com", "abcdefghij!", "1990-01-01")
        .await; // 11
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["error"], "validation_failed");
    assert!(
        r.body["details"]["fields"]["password"].is_array(),
        "{}",
        r.body
    );
    let r = a
        .register("p@example.com", "abcdefghijk!", "1990-01-01")
        .await; // 12
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let r = a
        .register("q@example.com", "abcdefghijkl", "1990-01-01")
        .await; // 12, no special
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["details"]["fields"]["password"].is_array());
}

async fn age_12_refused_13_accepted(b: Backend) {
    let a = app(b).await;
    // The clock says 2025-06-15.
    let r = a
        .register("young@example.com", PASSWORD, "2012-06-16")
        .await; // 12 until tomorrow
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert!(r.body["details"]["fields"]["birth_date"].is_array());
    let r = a
        .register("young@example.com", PASSWORD, "2012-06-15")
        .await; // 13 today
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

async fn validation_errors_name_every_field(b: Backend) {
    let a = app(b).await;
    let r = a
        .call(TestRequest::post("/api/v1/auth/register").json(json!({
            "email": "not-an-email", "password": "short", "birth_date": "yesterday", "display_name": ""
        })))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let f = &r.body["details"]["fields"];
    for field in ["email", "password", "birth_date", "display_name"] {
        assert!(f[field].is_array(), "{field} missing in {}", r.body);
    }
    assert_eq!(r.body["code"], 400);
    let dup = a.register_verified("d@example.com").await.unwrap();
    assert!(!dup.is_empty());
    // A registered address is not refused (that would reveal it): its owner is told instead.
    let r = a.register("D@Example.com", PASSWORD, "1990-01-01").await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_ne!(r.body["user_id"], dup.as_str());
    let notices = a
        .mail
        .sent()
        .into_iter()
        .filter(|m| m.kind == MailKind::RegistrationAttempt)
        .map(|m| m.to)
        .collect::<Vec<_>>();
    assert_eq!(
        notices,
        vec!["d@example.com".to_string()],
        "emails compare case-insensitively"
    );
}

async fn email_must_be_verified_before_sign_in(b: Backend) {
    let a = app(b).await;
    assert_eq!(
        a.register("v@example.com", PASSWORD, "1990-01-01")
            .await
            .status,
        StatusCode::CREATED
    );
    let r = a.login("v@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "email_not_verified");
    let t = a
        .mail
        .last_token("v@example.com", MailKind::VerifyEmail)
        .unwrap();
    let r = a
        .call(TestRequest::post("/api/v1/auth/verify-email").json(json!({"token": t})))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let tok = a.token("v@example.com").await.unwrap();
    let me = a.call(TestRequest::get("/api/v1/me").token(&tok)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["email"], "v@example.com");
    assert_eq!(me.body["email_verified"], true);
    assert_eq!(me.body["role"], "user");
    assert_eq!(me.body["tier"], "free");
}

/// An account nobody confirmed holds its address only while its verification code is valid
/// (48 h): otherwise anyone could register someone else's address and lock its owner out for
/// good, since a password reset needs a verified address. A confirmed account is never replaced.
async fn an_unconfirmed_address_is_held_only_while_its_code_is_valid(b: Backend) {
    let a = app(b).await;
    let squat = a
        .register(
            "owner@example.com",
            "not the owner's password",
            "1990-01-01",
        )
        .await;
    assert_eq!(squat.status, StatusCode::CREATED, "{}", squat.body);
    let squat_id = squat.body["user_id"].as_str().unwrap().to_string();
    let last_mail = |a: &TestApp| a.mail.sent().last().map(|m| (m.to.clone(), m.kind));

    // Just inside: a second before the code expires, the address is still held.
    a.clock.advance_secs(2.0 * DAY - 1.0);
    let r = a
        .register("owner@example.com", PASSWORD, "1990-01-01")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(
        last_mail(&a),
        Some(("owner@example.com".into(), MailKind::RegistrationAttempt))
    );

    // Just outside: the code has expired, so this registration takes the address.
    a.clock.advance_secs(1.0);
    let r = a
        .register("owner@example.com", PASSWORD, "1990-01-01")
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.body["status"], "pending_verification");
    let owner_id = r.body["user_id"].as_str().unwrap().to_string();
    assert_ne!(owner_id, squat_id);
    assert_eq!(
        last_mail(&a),
        Some(("owner@example.com".into(), MailKind::VerifyEmail))
    );
    let t = a
        .mail
        .last_token("owner@example.com", MailKind::VerifyEmail)
        .unwrap();
    let v = a
        .call(TestRequest::post("/api/v1/auth/verify-email").json(json!({"token": t})))
        .await;
    assert_eq!(v.status, StatusCode::OK, "{}", v.body);
    assert_eq!(
        a.login("owner@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    let r = a
        .login("owner@example.com", "not the owner's password")
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{}", r.body);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1")
        .bind(&squat_id)
        .fetch_one(a.state.db.pool())
        .await
        .unwrap();
    assert_eq!(left, 0, "the unconfirmed account was erased");

    // An unconfirmed account an operator gave a role keeps its address: that was a decision.
    a.register("granted@example.com", PASSWORD, "1990-01-01")
        .await;
    assert!(
        identity::set_role(&a.state, "granted@example.com", Role::Partner)
            .await
            .unwrap()
    );
    a.clock.advance_secs(3.0 * DAY);
    a.register(
        "granted@example.com",
        "not the owner's password",
        "1990-01-01",
    )
    .await;
    assert_eq!(
        last_mail(&a),
        Some(("granted@example.com".into(), MailKind::RegistrationAttempt))
    );

    // A confirmed account keeps its address however old it is.
    a.clock.advance_secs(30.0 * DAY);
    let r = a
        .register(
            "owner@example.com",
            "not the owner's password",
            "1990-01-01",
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        last_mail(&a),
        Some(("owner@example.com".into(), MailKind::RegistrationAttempt))
    );
    assert_eq!(
        a.login("owner@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

async fn verification_token_single_use_and_expires(b: Backend) {
    let a = app(b).await;
    a.register("t1@example.com", PASSWORD, "1990-01-01").await;
    let t = a
        .mail
        .last_token("t1@example.com", MailKind::VerifyEmail)
        .unwrap();
    let v = |t: String| {
        a.call(TestRequest::post("/api/v1/auth/verify-email").json(json!({"token": t})))
    };
    assert_eq!(v(t.clone()).await.status, StatusCode::OK);
    let r = v(t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "reused");
    assert_eq!(r.body["error"], "invalid_token");
    a.register("t2@example.com", PASSWORD, "1990-01-01").await;
    let t = a
        .mail
        .last_token("t2@example.com", MailKind::VerifyEmail)
        .unwrap();
    a.clock.advance_secs(2.0 * DAY);
    let r = v(t).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "expired after 48 h");
    assert_eq!(r.body["error"], "token_expired");
    let r = v("0".repeat(64)).await;
    assert_eq!(r.body["error"], "invalid_token");
}

async fn lockout_on_5th_failure_not_4th_and_cools_down(b: Backend) {
    let a = app(b).await;
    a.register_verified("l@example.com").await.unwrap();
    for _ in 0..4 {
        assert_eq!(
            a.login("l@example.com", "wrong password!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    // 4 failures: not locked; a success resets the count.
    assert_eq!(
        a.login("l@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    for i in 1..=5 {
        let r = a.login("l@example.com", "wrong password!").await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "failure {i}");
        assert_eq!(r.body["error"], "invalid_credentials");
    }
    // Locked after the 5th: even the right password is refused, with Retry-After.
    let r = a.login("l@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    assert_eq!(r.body["error"], "account_locked");
    assert_eq!(r.header("retry-after"), Some("900"));
    a.clock.advance_secs(899.0);
    assert_eq!(
        a.login("l@example.com", PASSWORD).await.status,
        StatusCode::LOCKED
    );
    a.clock.advance_secs(1.0);
    assert_eq!(
        a.login("l@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    // Unknown accounts look the same as wrong passwords.
    let r = a.login("nobody@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "invalid_credentials");
}

async fn sixth_session_ends_the_oldest(b: Backend) {
    let a = app(b).await;
    a.register_verified("s@example.com").await.unwrap();
    let mut tokens = vec![];
    for _ in 0..5 {
        tokens.push(a.token("s@example.com").await.unwrap());
        a.clock.advance_secs(1.0);
    }
    for t in &tokens {
        assert_eq!(
            a.call(TestRequest::get("/api/v1/me").token(t)).await.status,
            StatusCode::OK,
            "5 sessions live"
        );
    }
    let sixth = a.token("s@example.com").await.unwrap();
    let r = a
        .call(TestRequest::get("/api/v1/me").token(&tokens[0]))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the oldest was ended");
    for t in tokens[1..].iter().chain([&sixth]) {
        assert_eq!(
            a.call(TestRequest::get("/api/v1/me").token(t)).await.status,
            StatusCode::OK
        );
    }
    let list = a
        .call(TestRequest::get("/api/v1/sessions").token(&sixth))
        .await;
    assert_eq!(list.body.as_array().unwrap().len(), 5);
}

async fn sessions_expire_after_7_days(b: Backend) {
    let a = app(b).await;
    a.register_verified("e@example.com").await.unwrap();
    let t = a.token("e@example.com").await.unwrap();
    a.clock.advance_secs(7.0 * DAY - 1.0);
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&t))
            .await
            .status,
        StatusCode::OK
    );
    a.clock.advance_secs(1.0);
    let r = a.call(TestRequest::get("/api/v1/me").token(&t)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.header("www-authenticate").is_some());
}

async fn logout_ends_the_token(b: Backend) {
    let a = app(b).await;
    a.register_verified("o@example.com").await.unwrap();
    let t = a.token("o@example.com").await.unwrap();
    let other = a.token("o@example.com").await.unwrap();
    assert_eq!(
        a.call(TestRequest::post("/api/v1/auth/logout").token(&t))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&t))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call(TestRequest::post("/api/v1/auth/logout").token(&t))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&other))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token("garbage"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

async fn password_reset_flow_tokens_and_expiry(b: Backend) {
    let a = app(b).await;
    a.register_verified("r@example.com").await.unwrap();
    let old = a.token("r@example.com").await.unwrap();
    let req = |e: &str| {
        a.call(TestRequest::post("/api/v1/auth/password-reset/request").json(json!({"email": e})))
    };
    assert_eq!(req("r@example.com").await.status, StatusCode::ACCEPTED);
    assert_eq!(
        req("unknown@example.com").await.status,
        StatusCode::ACCEPTED,
        "no enumeration"
    );
    let t = a
        .mail
        .last_token("r@example.com", MailKind::PasswordReset)
        .unwrap();
    let confirm = |t: &str, p: &str| {
        a.call(
            TestRequest::post("/api/v1/auth/password-reset/confirm")
                .json(json!({"token": t, "new_password": p})),
        )
    };
    let r = confirm(&t, "short!").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.body["details"]["fields"]["new_password"].is_array());
    assert_eq!(
        confirm(&t, "a brand new secret!").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&old))
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "sessions ended"
    );
    assert_eq!(
        a.login("r@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.login("r@example.com", "a brand new secret!").await.status,
        StatusCode::OK
    );
    let r = confirm(&t, "another new secret!").await;
    assert_eq!(r.body["error"], "invalid_token", "reused");
    // Expiry after one hour.
    req("r@example.com").await;
    let t = a
        .mail
        .last_token("r@example.com", MailKind::PasswordReset)
        .unwrap();
    a.clock.advance_secs(3599.0);
    req("r@example.com").await;
    let t2 = a
        .mail
        .last_token("r@example.com", MailKind::PasswordReset)
        .unwrap();
    a.clock.advance_secs(1.0);
    assert_eq!(
        confirm(&t, "another new secret!").await.body["error"],
        "token_expired"
    );
    assert_eq!(
        confirm(&t2, "another new secret!").await.status,
        StatusCode::NO_CONTENT
    );
}

async fn mfa_required_for_health_data_then_satisfied(b: Backend) {
    let a = app_with_key(b).await;
    a.register_verified("h@example.com").await.unwrap();
    let t = a.token("h@example.com").await.unwrap();
    let health = |t: &str| a.call(TestRequest::get("/api/v1/health-data/summary").token(t));
    let r = health(&t).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "mfa_enrollment_required");
    let secret = a.enable_totp(&t).await.unwrap();
    assert_eq!(
        health(&t).await.status,
        StatusCode::OK,
        "the enrolling session is verified"
    );
    // A new sign-in needs the code; with it the session is verified.
    a.clock.advance_secs(30.0);
    let r = a.login("h@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"], "mfa_required");
    let code = totp::code_at(&secret, a.clock.now_ts());
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/login")
                .json(json!({"email": "h@example.com", "password": PASSWORD, "totp_code": code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["mfa"], true);
    let t2 = r.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(health(&t2).await.status, StatusCode::OK);
    let me = a.call(TestRequest::get("/api/v1/me").token(&t2)).await;
    assert_eq!(me.body["mfa_enabled"], true);
}

async fn mfa_login_needs_code_and_codes_are_single_use(b: Backend) {
    let a = app_with_key(b).await;
    a.register_verified("m@example.com").await.unwrap();
    let t = a.token("m@example.com").await.unwrap();
    let secret = a.enable_totp(&t).await.unwrap();
    a.clock.advance_secs(60.0);
    let code = totp::code_at(&secret, a.clock.now_ts());
    let login = |c: &str| {
        a.call(
            TestRequest::post("/api/v1/auth/login")
                .json(json!({"email": "m@example.com", "password": PASSWORD, "totp_code": c})),
        )
    };
    assert_eq!(login(&code).await.status, StatusCode::OK);
    let r = login(&code).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a code works once");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(login(wrong).await.status, StatusCode::UNAUTHORIZED);
    // Step-up on an existing unverified session? All new sessions need the code, so verify on
    // the enrolling session's sibling: a fresh code passes /mfa/verify.
    a.clock.advance_secs(30.0);
    let code = totp::code_at(&secret, a.clock.now_ts());
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/verify")
                .token(&t)
                .json(json!({"code": code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/verify")
                .token(&t)
                .json(json!({"code": code})),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "replayed code");
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/verify")
                .token(&t)
                .json(json!({"code": "12"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// Eight sign-ins with the same valid code at once: each checks the code against the last used
/// step it read before its transaction, so only the conditional claim inside the transaction
/// keeps all of them from passing.
async fn one_totp_code_signs_in_once_even_when_raced(b: Backend) {
    let a = app_with_key(b).await;
    a.register_verified("race@example.com").await.unwrap();
    let t = a.token("race@example.com").await.unwrap();
    let secret = a.enable_totp(&t).await.unwrap();
    a.clock.advance_secs(60.0);
    let code = totp::code_at(&secret, a.clock.now_ts());
    let attempts =
        (0..8).map(|_| {
            a.call(TestRequest::post("/api/v1/auth/login").json(
                json!({"email": "race@example.com", "password": PASSWORD, "totp_code": code}),
            ))
        });
    let answers = futures::future::join_all(attempts).await;
    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status).collect();
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(ok, 1, "{statuses:?}");
    // The others are refused: a replayed code is a failed sign-in, so once five have failed the
    // account may be locked (423) before the rest are checked, depending on the interleaving.
    assert!(
        statuses.iter().all(|s| *s == StatusCode::OK
            || *s == StatusCode::UNAUTHORIZED
            || *s == StatusCode::LOCKED),
        "{statuses:?}"
    );
}

async fn admin_needs_role_and_mfa(b: Backend) {
    let a = app_with_key(b).await;
    let target = a.register_verified("target@example.com").await.unwrap();
    a.register_verified("boss@example.com").await.unwrap();
    let t = a.token("boss@example.com").await.unwrap();
    let path = format!("/api/v1/admin/users/{target}");
    let r = a.call(TestRequest::get(&path).token(&t)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "forbidden");
    assert!(
        identity::set_role(&a.state, "boss@example.com", Role::Administrator)
            .await
            .unwrap()
    );
    let r = a.call(TestRequest::get(&path).token(&t)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(
        r.body["error"], "mfa_enrollment_required",
        "administrator without MFA"
    );
    let r = a
        .call(TestRequest::get(&format!("/api/v1/users/{target}")).token(&t))
        .await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "no admin reach without MFA"
    );
    a.enable_totp(&t).await.unwrap();
    let r = a.call(TestRequest::get(&path).token(&t)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["profile"]["email"], "target@example.com");
    let r = a
        .call(TestRequest::get(&format!("/api/v1/users/{target}")).token(&t))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = a
        .call(TestRequest::get("/api/v1/admin/users/nope").token(&t))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

async fn ownership_on_every_route_with_an_id(b: Backend) {
    // Routes taking an id: GET/PATCH /users/{id}, DELETE /sessions/{id}, GET /admin/users/{id}.
    let a = app(b).await;
    let alice = a.register_verified("alice@example.com").await.unwrap();
    let bob = a.register_verified("bob@example.com").await.unwrap();
    let ta = a.token("alice@example.com").await.unwrap();
    let tb = a.token("bob@example.com").await.unwrap();
    let sessions = a
        .call(TestRequest::get("/api/v1/sessions").token(&ta))
        .await;
    let alice_session = sessions.body[0]["id"].as_str().unwrap().to_string();

    let r = a
        .call(TestRequest::get(&format!("/api/v1/users/{alice}")).token(&tb))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.body.to_string().contains("alice"), "nothing leaks");
    let r = a
        .call(
            TestRequest::patch(&format!("/api/v1/users/{alice}"))
                .token(&tb)
                .json(json!({"display_name": "pwned", "version": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a
        .call(TestRequest::delete(&format!("/api/v1/sessions/{alice_session}")).token(&tb))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = a
        .call(TestRequest::get(&format!("/api/v1/admin/users/{alice}")).token(&tb))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);

    // Nothing changed for Alice.
    let me = a.call(TestRequest::get("/api/v1/me").token(&ta)).await;
    assert_eq!(me.status, StatusCode::OK, "Alice's session survived");
    assert_eq!(me.body["display_name"], "Test");
    assert_eq!(me.body["version"], 1);

    // The owner can.
    assert_eq!(
        a.call(TestRequest::get(&format!("/api/v1/users/{bob}")).token(&tb))
            .await
            .status,
        StatusCode::OK
    );
    let r = a
        .call(
            TestRequest::patch(&format!("/api/v1/users/{alice}"))
                .token(&ta)
                .json(json!({"display_name": "Alice", "version": 1})),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = a
        .call(TestRequest::delete(&format!("/api/v1/sessions/{alice_session}")).token(&ta))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&ta))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    // Unauthenticated: 401 everywhere.
    for path in [
        format!("/api/v1/users/{alice}"),
        format!("/api/v1/admin/users/{alice}"),
    ] {
        assert_eq!(
            a.call(TestRequest::get(&path)).await.status,
            StatusCode::UNAUTHORIZED
        );
    }
}

async fn optimistic_locking_on_profile(b: Backend) {
    let a = app(b).await;
    let id = a.register_verified("ol@example.com").await.unwrap();
    let t = a.token("ol@example.com").await.unwrap();
    let patch = |name: &str, v: i64| {
        a.call(
            TestRequest::patch(&format!("/api/v1/users/{id}"))
                .token(&t)
                .json(json!({"display_name": name, "version": v})),
        )
    };
    let r = patch("First", 1).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["version"], 2);
    let r = patch("Stale", 1).await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    assert_eq!(r.body["error"], "version_conflict");
    assert_eq!(patch("Second", 2).await.body["display_name"], "Second");
    assert_eq!(patch("", 3).await.status, StatusCode::BAD_REQUEST);
}

async fn idempotency_replays_same_request(b: Backend) {
    let a = app(b).await;
    let k = key();
    let body = json!({"email": "i@example.com", "password": PASSWORD, "birth_date": "1990-01-01", "display_name": "I"});
    let first = a
        .call(
            TestRequest::post("/api/v1/auth/register")
                .idempotency_key(&k)
                .json(body.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(first.header("idempotent-replayed").is_none());
    let again = a
        .call(
            TestRequest::post("/api/v1/auth/register")
                .idempotency_key(&k)
                .json(body.clone()),
        )
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(a.mail.sent().len(), 1, "the handler ran once");
    // Without the key the request really runs again: the address exists now, so the answer
    // looks the same but names no account, and the owner is mailed.
    let third = a
        .call(TestRequest::post("/api/v1/auth/register").json(body))
        .await;
    assert_eq!(third.status, StatusCode::CREATED);
    assert_ne!(third.body["user_id"], first.body["user_id"]);
    assert_eq!(a.mail.sent().len(), 2, "the handler ran again");
    assert_eq!(a.mail.sent()[1].kind, MailKind::RegistrationAttempt);
    // Sign-in replays the same token; the stored copy is not readable in the database.
    a.call(TestRequest::post("/api/v1/auth/verify-email").json(
        json!({"token": a.mail.last_token("i@example.com", MailKind::VerifyEmail).unwrap()}),
    ))
    .await;
    let k = key();
    let login = || {
        a.call(
            TestRequest::post("/api/v1/auth/login")
                .idempotency_key(&k)
                .json(json!({"email": "i@example.com", "password": PASSWORD})),
        )
    };
    let l1 = login().await;
    let l2 = login().await;
    assert_eq!(l1.body["access_token"], l2.body["access_token"]);
    let token = l1.body["access_token"].as_str().unwrap().to_string();
    let stored: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT response FROM idempotency_records WHERE response IS NOT NULL")
            .fetch_all(a.state.db.pool())
            .await
            .unwrap();
    assert!(!stored.is_empty());
    for s in stored {
        assert!(
            !String::from_utf8_lossy(&s).contains(&token),
            "stored encrypted"
        );
    }
}

async fn idempotency_422_on_different_body(b: Backend) {
    let a = app(b).await;
    let k = key();
    let body = |e: &str| json!({"email": e, "password": PASSWORD, "birth_date": "1990-01-01", "display_name": "I"});
    assert_eq!(
        a.call(
            TestRequest::post("/api/v1/auth/register")
                .idempotency_key(&k)
                .json(body("a@example.com"))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/register")
                .idempotency_key(&k)
                .json(body("b@example.com")),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["error"], "idempotency_key_reused");
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/password-reset/request")
                .idempotency_key(&k)
                .json(json!({"email": "a@example.com"})),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "another path is another request"
    );
}

async fn idempotency_409_while_in_flight(b: Backend) {
    let a = app(b).await;
    let k = key();
    let body = json!({"email": "f@example.com"});
    let path = "/api/v1/auth/password-reset/request";
    // Another request with this key is running (claimed, not finished).
    let claim = idempotency::claim(
        &a.state,
        "anonymous",
        &k,
        "POST",
        path,
        body.to_string().as_bytes(),
    )
    .await
    .unwrap();
    assert!(matches!(claim, idempotency::Claim::Proceed));
    let r = a
        .call(
            TestRequest::post(path)
                .idempotency_key(&k)
                .json(body.clone()),
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"], "idempotency_in_flight");
    assert!(r.header("retry-after").is_some());
    // A claim whose request died lapses after 30 s.
    a.clock.advance_secs(30.0);
    let r = a
        .call(TestRequest::post(path).idempotency_key(&k).json(body))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
}

async fn idempotency_expires_after_24_hours(b: Backend) {
    let a = app(b).await;
    a.register_verified("x@example.com").await.unwrap();
    let k = key();
    let login = || {
        a.call(
            TestRequest::post("/api/v1/auth/login")
                .idempotency_key(&k)
                .json(json!({"email": "x@example.com", "password": PASSWORD})),
        )
    };
    let first = login().await.body["access_token"].clone();
    a.clock.advance_secs(DAY - 1.0);
    let r = login().await;
    assert_eq!(r.body["access_token"], first, "replayed just inside 24 h");
    assert_eq!(r.header("idempotent-replayed"), Some("true"));
    a.clock.advance_secs(1.0);
    let r = login().await;
    assert_eq!(r.status, StatusCode::OK);
    assert_ne!(r.body["access_token"], first, "a new request after 24 h");
    assert!(r.header("idempotent-replayed").is_none());
    // The janitor removes what expired.
    a.clock.advance_secs(DAY);
    assert!(idempotency::purge(&a.state).await.unwrap() >= 1);
}

async fn idempotency_key_must_be_uuid_v4(b: Backend) {
    let a = app(b).await;
    for bad in ["abc", "6ba7b810-9dad-11d1-80b4-00c04fd430c8" /* v1 */] {
        let r = a
            .call(
                TestRequest::post("/api/v1/auth/password-reset/request")
                    .idempotency_key(bad)
                    .json(json!({"email": "z@example.com"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(r.body["details"]["fields"]["X-Idempotency-Key"].is_array());
    }
    // GET ignores the header.
    let r = a
        .call(TestRequest::get("/healthcheck").idempotency_key("abc"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

async fn idempotency_keys_are_scoped_per_caller(b: Backend) {
    let a = app(b).await;
    a.register_verified("k1@example.com").await.unwrap();
    a.register_verified("k2@example.com").await.unwrap();
    let t1 = a.token("k1@example.com").await.unwrap();
    let t2 = a.token("k2@example.com").await.unwrap();
    let k = key();
    assert_eq!(
        a.call(
            TestRequest::post("/api/v1/auth/logout")
                .token(&t1)
                .idempotency_key(&k)
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/logout")
                .token(&t2)
                .idempotency_key(&k),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        r.header("idempotent-replayed").is_none(),
        "not someone else's response"
    );
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&t2))
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "it really ran"
    );
}

async fn rate_limit_per_address(b: Backend) {
    let a = TestApp::with_config(b, |c| c.rate_limit_address = "3/60".parse().unwrap())
        .await
        .unwrap();
    let get = |ip: [u8; 4]| a.call(TestRequest::get("/api/v1/me").from_ip(ip));
    for _ in 0..3 {
        assert_eq!(get([10, 0, 0, 1]).await.status, StatusCode::UNAUTHORIZED);
    }
    let r = get([10, 0, 0, 1]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.body["error"], "rate_limited");
    assert_eq!(r.header("retry-after"), Some("20"));
    assert_eq!(
        get([10, 0, 0, 2]).await.status,
        StatusCode::UNAUTHORIZED,
        "another address"
    );
    assert_eq!(
        a.call(TestRequest::get("/healthcheck").from_ip([10, 0, 0, 1]))
            .await
            .status,
        StatusCode::OK,
        "operations are not limited"
    );
    a.clock.advance_secs(20.0);
    assert_eq!(get([10, 0, 0, 1]).await.status, StatusCode::UNAUTHORIZED);
}

async fn rate_limit_per_account(b: Backend) {
    let a = TestApp::with_config(b, |c| c.rate_limit_account = "4/60".parse().unwrap())
        .await
        .unwrap();
    a.register_verified("rl@example.com").await.unwrap();
    a.register_verified("rl2@example.com").await.unwrap();
    let t = a.token("rl@example.com").await.unwrap(); // 1 sign-in attempt for this email
    let t2 = a.token("rl2@example.com").await.unwrap();
    for i in 0..4 {
        let ip = [10, 1, 0, i as u8];
        assert_eq!(
            a.call(TestRequest::get("/api/v1/me").token(&t).from_ip(ip))
                .await
                .status,
            StatusCode::OK
        );
    }
    let r = a
        .call(
            TestRequest::get("/api/v1/me")
                .token(&t)
                .from_ip([10, 9, 9, 9]),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the account is limited whatever the address"
    );
    assert!(r.header("retry-after").is_some());
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&t2))
            .await
            .status,
        StatusCode::OK,
        "another account"
    );
    // Sign-in attempts count per email: 3 more allowed, then 429.
    for _ in 0..3 {
        assert_eq!(
            a.login("rl@example.com", "wrong password!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        a.login("rl@example.com", PASSWORD).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn gdpr_export_and_delete(b: Backend) {
    let a = app(b).await;
    let id = a.register_verified("g@example.com").await.unwrap();
    a.register_verified("keep@example.com").await.unwrap();
    let t = a.token("g@example.com").await.unwrap();
    a.clock.advance_secs(1.0);
    let k = key();
    a.call(
        TestRequest::patch(&format!("/api/v1/users/{id}"))
            .token(&t)
            .idempotency_key(&k)
            .json(json!({"display_name": "G", "version": 1})),
    )
    .await;
    let ex = a
        .call(TestRequest::get("/api/v1/me/export").token(&t))
        .await;
    assert_eq!(ex.status, StatusCode::OK);
    assert_eq!(ex.body["profile"]["email"], "g@example.com");
    assert_eq!(ex.body["sessions"].as_array().unwrap().len(), 1);
    let kinds: Vec<&str> = ex.body["audit_events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for k in [
        "user.registered",
        "email.verified",
        "login.succeeded",
        "profile.updated",
    ] {
        assert!(kinds.contains(&k), "{k} in {kinds:?}");
    }
    assert!(
        !ex.body.to_string().contains("argon2"),
        "no password hash in the export"
    );
    let log = a
        .call(TestRequest::get("/api/v1/me/audit-log").token(&t))
        .await;
    assert_eq!(log.body[0]["kind"], "profile.updated", "newest first");

    let r = a
        .call(
            TestRequest::post("/api/v1/me/delete")
                .token(&t)
                .json(json!({"password": "not my password"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = a.delete_account(&t).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(
        a.call(TestRequest::get("/api/v1/me").token(&t))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.login("g@example.com", PASSWORD).await.status,
        StatusCode::UNAUTHORIZED
    );
    let pool = a.state.db.pool();
    for (table, column) in [
        ("users", "id"),
        ("sessions", "user_id"),
        ("email_tokens", "user_id"),
        ("audit_events", "user_id"),
        ("idempotency_records", "user_id"),
    ] {
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM {table} WHERE {column} = $1"
        )))
        .bind(&id)
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(n, 0, "{table} still holds the user's rows");
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_records")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(n, 0, "the PATCH's stored response went too");
    let kinds: Vec<String> = sqlx::query_scalar("SELECT kind FROM outbox WHERE aggregate_id = $1")
        .bind(&id)
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(kinds, vec!["identity.account_deleted".to_string()]);
    // The other account is untouched.
    assert_eq!(
        a.login("keep@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    // The email can register again.
    assert_eq!(
        a.register("g@example.com", PASSWORD, "1990-01-01")
            .await
            .status,
        StatusCode::CREATED
    );
}

#[derive(Debug, Default)]
struct Flaky {
    calls: AtomicUsize,
}

impl Handler for Flaky {
    fn name(&self) -> &str {
        "test.flaky"
    }
    fn kinds(&self) -> Vec<String> {
        vec!["identity.user_registered".into()]
    }
    fn handle<'a>(
        &'a self,
        _db: &'a Db,
        _e: &'a Event,
    ) -> BoxFuture<'a, fitedge_server::error::Result<()>> {
        Box::pin(async move {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n == 0 {
                Err(fitedge_server::Error::Task("first attempt fails".into()))
            } else {
                Ok(())
            }
        })
    }
}

async fn outbox_at_least_once_with_idempotent_handlers(b: Backend) {
    let flaky = Arc::new(Flaky::default());
    let a = TestApp::build(b, |_| {}, Handlers::new().with(flaky.clone()))
        .await
        .unwrap();
    a.register("ob@example.com", PASSWORD, "1990-01-01").await;
    let (pending, _, _) = outbox::lag(&a.state).await.unwrap();
    assert_eq!(pending, 1, "written with the registration");
    assert_eq!(
        outbox::dispatch_once(&a.state).await.unwrap(),
        0,
        "first attempt failed"
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 1);
    let (_, _, failing) = outbox::lag(&a.state).await.unwrap();
    assert_eq!(failing, 1);
    assert_eq!(
        outbox::dispatch_once(&a.state).await.unwrap(),
        0,
        "backing off"
    );
    a.clock.advance_secs(1.0);
    assert_eq!(outbox::dispatch_once(&a.state).await.unwrap(), 1, "retried");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        outbox::dispatch_once(&a.state).await.unwrap(),
        0,
        "nothing left"
    );
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        2,
        "not handled twice once done"
    );
    // Redelivery (as after a crash before the dispatched mark): the processed record skips it.
    sqlx::query("UPDATE outbox SET dispatched_at = NULL")
        .execute(a.state.db.pool())
        .await
        .unwrap();
    assert_eq!(outbox::dispatch_once(&a.state).await.unwrap(), 1);
    assert_eq!(
        flaky.calls.load(Ordering::SeqCst),
        2,
        "the handler saw it once"
    );
    let (pending, _, _) = outbox::lag(&a.state).await.unwrap();
    assert_eq!(pending, 0);
}

async fn transactions_are_serializable_under_contention(b: Backend) {
    let a = app(b).await;
    let db = a.state.db.clone();
    sqlx::query(
        "INSERT INTO outbox_processed (handler, event_id, processed_at) VALUES ('counter', 'c', 0)",
    )
    .execute(db.pool())
    .await
    .unwrap();
    let mut tasks = vec![];
    for _ in 0..16 {
        let db = db.clone();
        tasks.push(tokio::spawn(async move {
            db.write(|tx| {
                Box::pin(async move {
                    // Read-modify-write: lost updates would show under weaker isolation.
                    let v: i64 = sqlx::query_scalar(
                        "SELECT processed_at FROM outbox_processed WHERE handler = 'counter'",
                    )
                    .fetch_one(&mut **tx)
                    .await?;
                    tokio::task::yield_now().await;
                    sqlx::query(
                        "UPDATE outbox_processed SET processed_at = $1 WHERE handler = 'counter'",
                    )
                    .bind(v + 1)
                    .execute(&mut **tx)
                    .await?;
                    Ok(())
                })
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let v: i64 =
        sqlx::query_scalar("SELECT processed_at FROM outbox_processed WHERE handler = 'counter'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    assert_eq!(v, 16);
}

async fn healthcheck_metrics_and_correlation_ids(b: Backend) {
    let a = app(b).await;
    let r = a.call(TestRequest::get("/healthcheck")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["database"], "ok");
    assert_eq!(r.body["backend"], b.name());
    let r = a
        .call(TestRequest::get("/api/v1/me").header("x-correlation-id", "abc-123"))
        .await;
    assert_eq!(r.header("x-correlation-id"), Some("abc-123"));
    assert_eq!(r.header("x-trace-id").map(str::len), Some(32));
    let r = a
        .call(TestRequest::get("/api/v1/me").header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ))
        .await;
    assert_eq!(
        r.header("x-trace-id"),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert!(r.header("x-correlation-id").is_some(), "made when absent");
    let m = a.call(TestRequest::get("/metrics")).await;
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains("http_requests_total{method=\"GET\",route=\"/api/v1/me\",status=\"401\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthcheck\"")
    );
    assert!(text.contains("db_pool_max_connections"));
    assert!(text.contains("outbox_lag_seconds"));
}

async fn errors_are_json_and_unknown_routes_404(b: Backend) {
    let a = app(b).await;
    let r = a.call(TestRequest::get("/api/v1/nothing-here")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.body["error"], "not_found");
    assert_eq!(r.body["code"], 404);
    assert!(r.body["details"].is_object());
    let r = a
        .call(TestRequest::new(axum::http::Method::PUT, "/api/v1/me"))
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(r.body["error"], "method_not_allowed");
    let r = a
        .call(TestRequest::post("/api/v1/auth/login").json(json!({"email": "x@example.com"})))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.body["error"], "validation_failed");
    assert!(
        r.body["details"]["fields"]["body"][0]
            .as_str()
            .unwrap()
            .contains("password"),
        "{}",
        r.body
    );
    let r = a
        .call(TestRequest::post("/api/v1/auth/login").header("content-type", "application/json"))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let doc = a.call(TestRequest::get("/api/v1/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.body["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc.body["paths"].as_object().unwrap();
    for p in [
        "/api/v1/auth/register",
        "/api/v1/auth/verify-email",
        "/api/v1/auth/login",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/users/{id}",
        "/api/v1/sessions/{id}",
        "/healthcheck",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
    // The TOTP routes that check the password describe their bodies and answers (schemathesis
    // generates requests from them).
    for (p, schema) in [
        ("/api/v1/auth/mfa/totp/enroll", "TotpEnrollRequest"),
        ("/api/v1/auth/mfa/totp/disable", "TotpDisableRequest"),
    ] {
        let op = &paths[p]["post"];
        assert_eq!(
            op["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            format!("#/components/schemas/{schema}"),
            "{p}"
        );
        assert!(
            doc.body["components"]["schemas"][schema]["properties"]["password"].is_object(),
            "{schema}"
        );
        for status in ["403", "423"] {
            assert!(op["responses"][status].is_object(), "{p} {status}");
        }
    }
}

async fn dev_mode_returns_tokens_only_in_dev(b: Backend) {
    let prod = app(b).await;
    let r = prod.register("n@example.com", PASSWORD, "1990-01-01").await;
    assert!(r.body.get("dev_token").is_none());
    let dev = TestApp::with_config(b, |c| c.dev = true).await.unwrap();
    let r = dev.register("n@example.com", PASSWORD, "1990-01-01").await;
    let t = r.body["dev_token"].as_str().unwrap().to_string();
    assert_eq!(
        Some(t.clone()),
        dev.mail.last_token("n@example.com", MailKind::VerifyEmail)
    );
    let v = dev
        .call(TestRequest::post("/api/v1/auth/verify-email").json(json!({"token": t})))
        .await;
    assert_eq!(v.status, StatusCode::OK);
    let r = dev
        .call(
            TestRequest::post("/api/v1/auth/password-reset/request")
                .json(json!({"email": "n@example.com"})),
        )
        .await;
    assert!(r.body["dev_token"].is_string());
    // An address that has an account gets a dev token of the same form, which verifies nothing:
    // what dev mode reveals (README, "Identity") and no more.
    let again = dev.register("n@example.com", PASSWORD, "1990-01-01").await;
    assert_eq!(again.status, StatusCode::CREATED);
    let fake = again.body["dev_token"].as_str().unwrap().to_string();
    assert_eq!(fake.len(), t.len());
    let v = dev
        .call(TestRequest::post("/api/v1/auth/verify-email").json(json!({"token": fake})))
        .await;
    assert_eq!(v.body["error"], "invalid_token");
}

async fn operator_commands_set_role_and_tier(b: Backend) {
    let a = app(b).await;
    a.register_verified("op@example.com").await.unwrap();
    assert!(
        identity::set_tier(&a.state, "OP@example.com", fitedge_server::auth::Tier::Pro)
            .await
            .unwrap()
    );
    assert!(
        identity::set_role(&a.state, "op@example.com", Role::Partner)
            .await
            .unwrap()
    );
    assert!(
        !identity::set_role(&a.state, "none@example.com", Role::Partner)
            .await
            .unwrap()
    );
    let t = a.token("op@example.com").await.unwrap();
    let me = a.call(TestRequest::get("/api/v1/me").token(&t)).await;
    assert_eq!(me.body["tier"], "pro");
    assert_eq!(me.body["role"], "partner");
}

async fn migrations_are_idempotent(b: Backend) {
    let a = app(b).await;
    a.state.db.migrate().await.unwrap();
    let again = Db::connect(&a.db.url).await.unwrap();
    again.migrate().await.unwrap();
    again.ping().await.unwrap();
    again.pool().close().await;
}

fn keys_of(v: &serde_json::Value) -> Vec<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

async fn count(a: &TestApp, sql: &'static str, arg: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(a.state.db.pool())
        .await
        .unwrap()
}

async fn registration_answers_the_same_for_an_existing_address(b: Backend) {
    let a = app(b).await;
    let owner = a.register_verified("own@example.com").await.unwrap();
    a.register("pending@example.com", PASSWORD, "1990-01-01")
        .await;
    let fresh = a
        .register("fresh@example.com", "another password!", "1985-05-05")
        .await;
    assert_eq!(fresh.status, StatusCode::CREATED);
    for email in ["own@example.com", "pending@example.com"] {
        let r = a.register(email, "another password!", "1985-05-05").await;
        assert_eq!(r.status, fresh.status, "{email}: {}", r.body);
        assert_eq!(keys_of(&r.body), keys_of(&fresh.body), "{email}");
        assert_eq!(r.body["status"], "pending_verification");
        assert_eq!(r.body["email"], email);
        let id = r.body["user_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
        assert_ne!(id, owner);
        assert_eq!(
            count(&a, "SELECT COUNT(*) FROM users WHERE id = $1", id).await,
            0,
            "the id names no account"
        );
        assert_eq!(
            count(&a, "SELECT COUNT(*) FROM users WHERE email = $1", email).await,
            1
        );
    }
    // The account is untouched: its password still signs in, the newcomer's does not.
    assert_eq!(
        a.login("own@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    assert_eq!(
        a.login("own@example.com", "another password!").await.status,
        StatusCode::UNAUTHORIZED
    );
    // The owners are told; no verification token goes out for an account that was not made.
    let sent = a.mail.sent();
    let of =
        |to: &str, kind: MailKind| sent.iter().filter(|m| m.to == to && m.kind == kind).count();
    for email in ["own@example.com", "pending@example.com"] {
        assert_eq!(of(email, MailKind::RegistrationAttempt), 1, "{email}");
        assert_eq!(
            of(email, MailKind::VerifyEmail),
            1,
            "{email}: only the first"
        );
    }
    let notice = sent
        .iter()
        .find(|m| m.kind == MailKind::RegistrationAttempt)
        .unwrap();
    assert!(notice.token.is_empty());
    assert!(notice.body().contains("reset your"), "{}", notice.body());
    assert_eq!(of("fresh@example.com", MailKind::RegistrationAttempt), 0);
    // The attempt is in the owner's security log, and no registration event was emitted for it.
    let t = a.token("own@example.com").await.unwrap();
    let log = a
        .call(TestRequest::get("/api/v1/me/audit-log").token(&t))
        .await;
    assert!(
        log.body
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "registration.attempted"),
        "{}",
        log.body
    );
    assert_eq!(
        count(
            &a,
            "SELECT COUNT(*) FROM outbox WHERE kind = $1",
            "identity.user_registered"
        )
        .await,
        3
    );
}

async fn registration_of_an_existing_address_spends_the_hash_cost(b: Backend) {
    use std::time::{Duration, Instant};
    // The production cost: with the test suite's minimal hash the two paths would be close
    // whether or not the hash ran.
    let a = TestApp::with_config(b, |c| {
        c.hash_cost = fitedge_server::config::HashCost::Standard
    })
    .await
    .unwrap();
    assert_eq!(
        a.register("taken@example.com", PASSWORD, "1990-01-01")
            .await
            .status,
        StatusCode::CREATED
    );
    let timed = |email: String| {
        let a = &a;
        async move {
            let start = Instant::now();
            let r = a.register(&email, PASSWORD, "1990-01-01").await;
            assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            start.elapsed()
        }
    };
    // The fastest of a few runs each: other work on the machine only ever adds time.
    let (mut new, mut existing) = (Duration::MAX, Duration::MAX);
    for i in 0..3 {
        new = new.min(timed(format!("new{i}@example.com")).await);
        existing = existing.min(timed("taken@example.com".into()).await);
    }
    assert!(
        existing * 2 >= new,
        "an existing address answered in {existing:?}, a new one in {new:?}: the hash was skipped"
    );
}

async fn login_answers_and_lockout_the_same_without_an_account(b: Backend) {
    let a = app(b).await;
    a.register_verified("real@example.com").await.unwrap();
    let wrong = "wrong password!";
    for i in 1..=5 {
        let real = a.login("real@example.com", wrong).await;
        let ghost = a.login("ghost@example.com", wrong).await;
        assert_eq!(real.status, StatusCode::UNAUTHORIZED, "failure {i}");
        assert_eq!(
            (ghost.status, &ghost.body),
            (real.status, &real.body),
            "failure {i}"
        );
    }
    // Both locked after the 5th, with the same answer, even for the right password.
    let real = a.login("real@example.com", PASSWORD).await;
    let ghost = a.login("ghost@example.com", PASSWORD).await;
    assert_eq!(real.status, StatusCode::LOCKED, "{}", real.body);
    assert_eq!((ghost.status, &ghost.body), (real.status, &real.body));
    assert_eq!(ghost.header("retry-after"), Some("900"));
    assert_eq!(ghost.header("retry-after"), real.header("retry-after"));
    // Both cool down alike, and count again from zero.
    a.clock.advance_secs(900.0);
    assert_eq!(
        a.login("real@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
    for i in 1..=4 {
        assert_eq!(
            a.login("ghost@example.com", wrong).await.status,
            StatusCode::UNAUTHORIZED,
            "failure {i} after the lock"
        );
    }
    assert_eq!(
        a.login("ghost@example.com", wrong).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        a.login("ghost@example.com", wrong).await.status,
        StatusCode::LOCKED
    );
    // The address itself is not stored.
    let stored: Vec<String> = sqlx::query_scalar("SELECT email_hmac FROM login_failures")
        .fetch_all(a.state.db.pool())
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains("ghost"), "{}", stored[0]);
}

async fn password_reset_request_answers_the_same_for_every_address(b: Backend) {
    for dev in [false, true] {
        let a = TestApp::with_config(b, |c| c.dev = dev).await.unwrap();
        a.register_verified("known@example.com").await.unwrap();
        a.register("unverified@example.com", PASSWORD, "1990-01-01")
            .await;
        let req = |e: &str| {
            a.call(
                TestRequest::post("/api/v1/auth/password-reset/request")
                    .json(json!({ "email": e })),
            )
        };
        let known = req("known@example.com").await;
        assert_eq!(known.status, StatusCode::ACCEPTED);
        let mailed = a.mail.sent();
        assert_eq!(mailed.last().unwrap().kind, MailKind::PasswordReset);
        for e in ["nobody@example.com", "unverified@example.com"] {
            let r = req(e).await;
            assert_eq!(r.status, known.status, "{e}");
            if dev {
                // A token of the same form, which resets nothing: what dev mode reveals.
                assert_eq!(keys_of(&r.body), keys_of(&known.body), "{e}: {}", r.body);
                let fake = r.body["dev_token"].as_str().unwrap();
                assert_eq!(fake.len(), known.body["dev_token"].as_str().unwrap().len());
                let c = a
                    .call(
                        TestRequest::post("/api/v1/auth/password-reset/confirm")
                            .json(json!({"token": fake, "new_password": "a brand new secret!"})),
                    )
                    .await;
                assert_eq!(c.body["error"], "invalid_token", "{e}");
            } else {
                assert_eq!(r.body, known.body, "{e}");
                assert_eq!(r.body, json!({"status": "accepted"}));
            }
        }
        assert_eq!(
            a.mail.sent(),
            mailed,
            "dev {dev}: only a verified address is mailed"
        );
        // Every request writes the same kind of record, so none is quicker than the others.
        assert_eq!(
            count(
                &a,
                "SELECT COUNT(*) FROM audit_events WHERE kind = $1",
                "password.reset_requested"
            )
            .await,
            3,
            "dev {dev}"
        );
    }
}

async fn totp_secrets_are_sealed_and_bound_to_the_account(b: Backend) {
    let a = app_with_key(b).await;
    a.register_verified("sa@example.com").await.unwrap();
    a.register_verified("sb@example.com").await.unwrap();
    let t = a.token("sa@example.com").await.unwrap();
    let e = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/totp/enroll")
                .token(&t)
                .json(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(e.status, StatusCode::OK, "{}", e.body);
    let raw = fitedge_server::testing::base32_decode(e.body["secret"].as_str().unwrap()).unwrap();
    let key_id = a.state.totp_keys.current_id().unwrap().to_string();
    let (secret, pending, kid) = totp_columns(&a, "sa@example.com").await;
    assert!(secret.is_none());
    let pending = pending.unwrap();
    assert!(pending.starts_with("v1:"), "{pending}");
    assert!(
        !pending.contains(&hex::encode(&raw)),
        "stored in plain text"
    );
    assert_eq!(kid.as_deref(), Some(key_id.as_str()));
    let code = totp::code_at(&raw, a.clock.now_ts());
    let c = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/totp/confirm")
                .token(&t)
                .json(json!({ "code": code })),
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    let (secret, pending, kid) = totp_columns(&a, "sa@example.com").await;
    let secret = secret.unwrap();
    assert!(secret.starts_with("v1:"), "{secret}");
    assert!(!secret.contains(&hex::encode(&raw)), "stored in plain text");
    assert!(pending.is_none());
    assert_eq!(kid.as_deref(), Some(key_id.as_str()));
    let me = a.call(TestRequest::get("/api/v1/me").token(&t)).await;
    assert_eq!(me.body["mfa_enabled"], true);
    a.clock.advance_secs(30.0);
    let code = totp::code_at(&raw, a.clock.now_ts());
    let r = a.call(login_with_code("sa@example.com", &code)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Copied to another account, the sealed secret does not open: its codes do not pass there.
    sqlx::query("UPDATE users SET totp_secret = $1, totp_key_id = $2 WHERE email = $3")
        .bind(&secret)
        .bind(&key_id)
        .bind("sb@example.com")
        .execute(a.state.db.pool())
        .await
        .unwrap();
    a.clock.advance_secs(30.0);
    let code = totp::code_at(&raw, a.clock.now_ts());
    let r = a.call(login_with_code("sb@example.com", &code)).await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", r.body);
    assert!(r.body.get("access_token").is_none());
}

async fn totp_enrolment_needs_a_key_that_survives_a_restart(b: Backend) {
    let a = app(b).await;
    a.register_verified("k@example.com").await.unwrap();
    let t = a.token("k@example.com").await.unwrap();
    // No FITEDGE_SECRET_KEY outside dev mode: a per-process key would lose the secret at the
    // next restart, so enrolment is refused and nothing is stored.
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/totp/enroll")
                .token(&t)
                .json(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.body);
    assert_eq!(r.body["error"], "mfa_unavailable");
    assert_eq!(totp_columns(&a, "k@example.com").await, (None, None, None));
    // With a key, an enrolment survives a restart with the same key.
    let a = restart(a, |c| c.secret_key = Some(KEY.into())).await;
    let secret = a.enable_totp(&t).await.unwrap();
    let mut a = restart(a, |c| c.secret_key = Some(KEY.into())).await;
    a.clock.advance_secs(30.0);
    let code = totp::code_at(&secret, a.clock.now_ts());
    let r = a.call(login_with_code("k@example.com", &code)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // Another key, or none: the secret cannot be opened. The account cannot pass MFA, and the
    // answer says so rather than "wrong code" (nor counts a failure).
    for key in [Some(OTHER_KEY), None] {
        a = restart(a, move |c| c.secret_key = key.map(str::to_string)).await;
        a.clock.advance_secs(30.0);
        let code = totp::code_at(&secret, a.clock.now_ts());
        let r = a.call(login_with_code("k@example.com", &code)).await;
        assert_eq!(
            r.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{key:?}: {}",
            r.body
        );
        assert_eq!(r.body["error"], "mfa_unavailable");
    }
    let a = restart(a, |c| c.secret_key = Some(KEY.into())).await;
    a.clock.advance_secs(30.0);
    let code = totp::code_at(&secret, a.clock.now_ts());
    let r = a.call(login_with_code("k@example.com", &code)).await;
    assert_eq!(r.status, StatusCode::OK, "the old key back: {}", r.body);
}

async fn dev_mode_totp_survives_a_restart_and_is_resealed_under_a_real_key(b: Backend) {
    let a = TestApp::with_config(b, |c| c.dev = true).await.unwrap();
    a.register_verified("dv@example.com").await.unwrap();
    let t = a.token("dv@example.com").await.unwrap();
    let secret = a.enable_totp(&t).await.unwrap();
    let (stored, _, kid) = totp_columns(&a, "dv@example.com").await;
    assert!(stored.unwrap().starts_with("v1:"));
    assert_eq!(kid.as_deref(), Some(identity::sealed::DEV_KEY_ID));
    let a = restart(a, |c| c.dev = true).await;
    assert_eq!(
        next_code_login(&a, "dv@example.com", &secret).await.status,
        StatusCode::OK,
        "dev restart"
    );
    // A real key later: the public development key still opens it, and it is sealed again.
    let a = restart(a, |c| c.secret_key = Some(KEY.into())).await;
    let r = next_code_login(&a, "dv@example.com", &secret).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let (stored, _, kid) = totp_columns(&a, "dv@example.com").await;
    assert!(stored.unwrap().starts_with("v1:"));
    assert_eq!(kid.as_deref(), a.state.totp_keys.current_id());
    assert_ne!(kid.as_deref(), Some(identity::sealed::DEV_KEY_ID));
    let a = restart(a, |c| c.secret_key = Some(KEY.into())).await;
    assert_eq!(
        next_code_login(&a, "dv@example.com", &secret).await.status,
        StatusCode::OK,
        "resealed value opens"
    );
}

async fn plain_totp_secrets_from_earlier_versions_verify_and_are_sealed(b: Backend) {
    // A server without a key first, as earlier versions ran.
    let a = app(b).await;
    for e in ["old", "dormant", "step", "pend"] {
        a.register_verified(&format!("{e}@example.com"))
            .await
            .unwrap();
    }
    let step_token = a.token("step@example.com").await.unwrap();
    let pend_token = a.token("pend@example.com").await.unwrap();
    // What versions before migration 0002 wrote: plain hex, no key id.
    let raw = b"12345678901234567890".to_vec();
    let plain = hex::encode(&raw);
    for (column, email) in [
        ("totp_secret", "old@example.com"),
        ("totp_secret", "dormant@example.com"),
        ("totp_secret", "step@example.com"),
        ("totp_pending_secret", "pend@example.com"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE users SET {column} = $1 WHERE email = $2"
        )))
        .bind(&plain)
        .bind(email)
        .execute(a.state.db.pool())
        .await
        .unwrap();
    }
    let code = |a: &TestApp| {
        a.clock.advance_secs(30.0);
        totp::code_at(&raw, a.clock.now_ts())
    };
    // Without a key they keep working, and stay as they are (nothing durable to seal with).
    let r = a.call(login_with_code("old@example.com", &code(&a))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(
        totp_columns(&a, "old@example.com").await,
        (Some(plain.clone()), None, None)
    );
    // With a key: the next successful use seals them.
    let a = restart(a, |c| c.secret_key = Some(KEY.into())).await;
    let key_id = a.state.totp_keys.current_id().map(str::to_string);
    let r = a.call(login_with_code("old@example.com", &code(&a))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["mfa"], true);
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/verify")
                .token(&step_token)
                .json(json!({ "code": code(&a) })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/totp/confirm")
                .token(&pend_token)
                .json(json!({ "code": code(&a) })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    for email in ["old@example.com", "step@example.com", "pend@example.com"] {
        let (secret, pending, kid) = totp_columns(&a, email).await;
        let secret = secret.unwrap();
        assert!(secret.starts_with("v1:"), "{email}: {secret}");
        assert!(!secret.contains(&plain), "{email}");
        assert!(pending.is_none(), "{email}");
        assert_eq!(kid, key_id, "{email}");
    }
    // An account that does not sign in is sealed by the pass meant for start-up.
    assert_eq!(
        totp_columns(&a, "dormant@example.com").await.0,
        Some(plain.clone())
    );
    let report = identity::sealed::seal_stored_secrets(&a.state)
        .await
        .unwrap();
    assert_eq!(
        report,
        identity::sealed::SealReport {
            sealed: 1,
            unreadable: 0
        }
    );
    let left: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM users WHERE totp_secret NOT LIKE 'v1:%'
            OR totp_pending_secret NOT LIKE 'v1:%' OR totp_secret = $1",
    )
    .bind(&plain)
    .fetch_one(a.state.db.pool())
    .await
    .unwrap();
    assert_eq!(left, 0, "only the sealed form is left");
    assert_eq!(
        identity::sealed::seal_stored_secrets(&a.state)
            .await
            .unwrap()
            .sealed,
        0
    );
    // The sealed forms verify.
    for email in ["old@example.com", "dormant@example.com", "pend@example.com"] {
        let r = a.call(login_with_code(email, &code(&a))).await;
        assert_eq!(r.status, StatusCode::OK, "{email}: {}", r.body);
    }
}

/// The statuses of `answers`, and how many were checked (401) and refused unchecked (423);
/// fails on anything else.
fn checked_and_refused(answers: &[fitedge_server::testing::TestResponse]) -> (usize, usize) {
    let statuses: Vec<StatusCode> = answers.iter().map(|r| r.status).collect();
    assert!(
        statuses
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED || *s == StatusCode::LOCKED),
        "{statuses:?}"
    );
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    (checked, statuses.len() - checked)
}

/// A 6-digit code that is none of the codes accepted around now.
fn wrong_code(a: &TestApp, secret: &[u8]) -> String {
    let now = a.clock.now_ts();
    let near: Vec<String> = [-30_000, 0, 30_000]
        .iter()
        .map(|d| totp::code_at(secret, fitedge_core::time::Timestamp(now.as_millis() + d)))
        .collect();
    ["000000", "111111", "222222", "333333"]
        .iter()
        .find(|c| !near.iter().any(|n| n == *c))
        .unwrap()
        .to_string()
}

/// Twenty wrong passwords at once, for an account and for an address without one. Each
/// attempt takes its place in the count before its password is checked, so exactly 5 (the
/// threshold) are checked and answered 401; the other 15 are refused unchecked (423), and the
/// right password is refused afterwards. (Checking first and counting afterwards let every one
/// of them be checked before the fifth failure locked the account.)
async fn parallel_wrong_passwords_are_checked_at_most_threshold_times(b: Backend) {
    let a = app(b).await;
    let id = a.register_verified("par@example.com").await.unwrap();
    for email in ["par@example.com", "nobody-par@example.com"] {
        let attempts = (0..20).map(|_| a.login(email, "wrong password!"));
        let answers = futures::future::join_all(attempts).await;
        let (checked, refused) = checked_and_refused(&answers);
        assert_eq!((checked, refused), (5, 15), "{email}");
        let r = a.login(email, PASSWORD).await;
        assert_eq!(r.status, StatusCode::LOCKED, "{email}: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("900"));
    }
    let failed = "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND kind = 'login.failed'";
    assert_eq!(count(&a, failed, &id).await, 5);
    let locks = "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND kind = 'account.locked'";
    assert_eq!(count(&a, locks, &id).await, 1);
    // The lock cools down as before, and the count starts from zero.
    a.clock.advance_secs(900.0);
    assert_eq!(
        a.login("par@example.com", PASSWORD).await.status,
        StatusCode::OK
    );
}

/// The same for TOTP codes: twenty wrong codes at once on /mfa/verify, and twenty sign-ins with
/// the right password and a wrong code: 5 checked, 15 refused unchecked, then even the right
/// code is refused.
async fn parallel_wrong_codes_are_checked_at_most_threshold_times(b: Backend) {
    let a = app_with_key(b).await;
    a.register_verified("pc@example.com").await.unwrap();
    let t = a.token("pc@example.com").await.unwrap();
    let secret = a.enable_totp(&t).await.unwrap();
    a.clock.advance_secs(60.0);
    let wrong = wrong_code(&a, &secret);
    let attempts = (0..20).map(|_| {
        a.call(
            TestRequest::post("/api/v1/auth/mfa/verify")
                .token(&t)
                .json(json!({ "code": wrong })),
        )
    });
    let answers = futures::future::join_all(attempts).await;
    assert_eq!(checked_and_refused(&answers), (5, 15));
    assert!(answers
        .iter()
        .filter(|r| r.status == StatusCode::UNAUTHORIZED)
        .all(|r| r.body["error"] == "invalid_code"));
    let right = totp::code_at(&secret, a.clock.now_ts());
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/verify")
                .token(&t)
                .json(json!({ "code": right })),
        )
        .await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    // Cooled down: the same at sign-in, with the right password and a wrong code.
    a.clock.advance_secs(900.0);
    let wrong = wrong_code(&a, &secret);
    let attempts = (0..20).map(|_| a.call(login_with_code("pc@example.com", &wrong)));
    let answers = futures::future::join_all(attempts).await;
    assert_eq!(checked_and_refused(&answers), (5, 15));
    let right = totp::code_at(&secret, a.clock.now_ts());
    let r = a.call(login_with_code("pc@example.com", &right)).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    a.clock.advance_secs(900.0);
    let right = totp::code_at(&secret, a.clock.now_ts());
    let r = a.call(login_with_code("pc@example.com", &right)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
}

/// A sign-in with the right password but no code (`mfa_required`) gives its counted attempt
/// back without resetting the count, so someone who knows the password cannot interleave such
/// requests with wrong codes to guess codes forever.
async fn sign_ins_without_a_code_do_not_reset_the_failure_count(b: Backend) {
    let a = app_with_key(b).await;
    a.register_verified("nc@example.com").await.unwrap();
    let t = a.token("nc@example.com").await.unwrap();
    let secret = a.enable_totp(&t).await.unwrap();
    a.clock.advance_secs(60.0);
    let wrong = wrong_code(&a, &secret);
    for i in 1..=4 {
        let r = a.login("nc@example.com", PASSWORD).await;
        assert_eq!(r.body["error"], "mfa_required", "{i}: {}", r.body);
        let r = a.call(login_with_code("nc@example.com", &wrong)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "wrong code {i}");
    }
    let r = a.call(login_with_code("nc@example.com", &wrong)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "the fifth failure");
    let right = totp::code_at(&secret, a.clock.now_ts());
    let r = a.call(login_with_code("nc@example.com", &right)).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    let r = a.login("nc@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
}

/// A bearer token alone cannot turn TOTP on (a thief could otherwise lock the owner out for
/// good): enrolment needs the password, counted like a sign-in. TOTP can be turned off with
/// the password and a code.
async fn totp_enrolment_needs_the_password_and_totp_can_be_disabled(b: Backend) {
    let a = app_with_key(b).await;
    let id = a.register_verified("en@example.com").await.unwrap();
    let t = a.token("en@example.com").await.unwrap();
    let enroll = |body: serde_json::Value| {
        a.call(
            TestRequest::post("/api/v1/auth/mfa/totp/enroll")
                .token(&t)
                .json(body),
        )
    };
    let r = enroll(json!({})).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    for i in 1..=5 {
        let r = enroll(json!({ "password": "wrong password!" })).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{i}: {}", r.body);
        assert_eq!(r.body["error"], "wrong_password");
    }
    assert_eq!(totp_columns(&a, "en@example.com").await, (None, None, None));
    let failed =
        "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND kind = 'mfa.enroll_failed'";
    assert_eq!(count(&a, failed, &id).await, 5);
    // Counted like sign-ins: the account is locked, for enrolment and for signing in.
    let r = enroll(json!({ "password": PASSWORD })).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    assert_eq!(
        a.login("en@example.com", PASSWORD).await.status,
        StatusCode::LOCKED
    );
    a.clock.advance_secs(900.0);
    let secret = a.enable_totp(&t).await.unwrap();
    // Turning it off needs both the password and a current code.
    a.clock.advance_secs(30.0);
    let code = totp::code_at(&secret, a.clock.now_ts());
    let wrong = wrong_code(&a, &secret);
    let disable = |password: &str, code: &str| {
        a.call(
            TestRequest::post("/api/v1/auth/mfa/totp/disable")
                .token(&t)
                .json(json!({ "password": password, "code": code })),
        )
    };
    let r = a
        .call(
            TestRequest::post("/api/v1/auth/mfa/totp/disable")
                .token(&t)
                .json(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    for (password, code) in [(PASSWORD, wrong.as_str()), ("wrong password!", &code)] {
        let r = disable(password, code).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.body);
        assert_eq!(r.body["error"], "wrong_password_or_code");
    }
    let failed =
        "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND kind = 'mfa.disable_failed'";
    assert_eq!(count(&a, failed, &id).await, 2);
    let r = disable(PASSWORD, &code).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    assert_eq!(totp_columns(&a, "en@example.com").await, (None, None, None));
    let me = a.call(TestRequest::get("/api/v1/me").token(&t)).await;
    assert_eq!(me.body["mfa_enabled"], false);
    let disabled = "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND kind = 'mfa.disabled'";
    assert_eq!(count(&a, disabled, &id).await, 1);
    let r = disable(PASSWORD, &code).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);
    assert_eq!(r.body["error"], "mfa_not_enabled");
    // Signing in needs no code any more; enrolling again gives a new secret.
    let r = a.login("en@example.com", PASSWORD).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body["mfa"], false);
    let again = a.enable_totp(&t).await.unwrap();
    assert_ne!(again, secret);
}

/// Setting a new password with one reset token voids the account's other unused reset tokens:
/// an earlier mail (perhaps read by someone else) cannot set the password again afterwards.
async fn a_password_reset_voids_the_accounts_other_reset_tokens(b: Backend) {
    let a = app(b).await;
    a.register_verified("rt@example.com").await.unwrap();
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let r = a
            .call(
                TestRequest::post("/api/v1/auth/password-reset/request")
                    .json(json!({"email": "rt@example.com"})),
            )
            .await;
        assert_eq!(r.status, StatusCode::ACCEPTED);
        tokens.push(
            a.mail
                .last_token("rt@example.com", MailKind::PasswordReset)
                .unwrap(),
        );
        a.clock.advance_secs(1.0);
    }
    assert_ne!(tokens[0], tokens[1]);
    let confirm = |t: &str, p: &str| {
        a.call(
            TestRequest::post("/api/v1/auth/password-reset/confirm")
                .json(json!({"token": t, "new_password": p})),
        )
    };
    let r = confirm(&tokens[1], "the owner's new secret!").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
    let r = confirm(&tokens[0], "an intruder's secret!!").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);
    assert_eq!(r.body["error"], "invalid_token");
    assert_eq!(
        a.login("rt@example.com", "the owner's new secret!")
            .await
            .status,
        StatusCode::OK
    );
}

/// Account deletion asks for the password: a wrong one counts towards the lockout like a
/// sign-in, so a bearer token is no way round it.
async fn wrong_passwords_at_account_deletion_count_towards_the_lockout(b: Backend) {
    let a = app(b).await;
    let id = a.register_verified("dl@example.com").await.unwrap();
    let t = a.token("dl@example.com").await.unwrap();
    let delete = |p: &str| {
        a.call(
            TestRequest::post("/api/v1/me/delete")
                .token(&t)
                .json(json!({ "password": p })),
        )
    };
    for i in 1..=5 {
        let r = delete("wrong password!").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{i}: {}", r.body);
        assert_eq!(r.body["error"], "wrong_password");
    }
    let r = delete(PASSWORD).await;
    assert_eq!(r.status, StatusCode::LOCKED, "{}", r.body);
    assert_eq!(r.body["error"], "account_locked");
    assert_eq!(r.header("retry-after"), Some("900"));
    assert_eq!(
        a.login("dl@example.com", PASSWORD).await.status,
        StatusCode::LOCKED
    );
    let failed =
        "SELECT COUNT(*) FROM audit_events WHERE user_id = $1 AND kind = 'account.delete_failed'";
    assert_eq!(count(&a, failed, &id).await, 5);
    a.clock.advance_secs(900.0);
    let r = a.delete_account(&t).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.body);
}
