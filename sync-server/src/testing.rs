//! Test helpers (feature `testing`): a throwaway database per test on either backend, and an
//! app on a manual clock with captured mail, called in memory (`oneshot`).
//!
//! PostgreSQL: `FITEDGE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`)
//! names a maintenance database; each [`TestDb`] creates `fitedge_test_<random>` there and drops
//! it when dropped (also when the test panics). When PostgreSQL cannot be reached, creating the
//! database fails with a message saying what is missing: the suite fails, it never skips.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use fitedge_core::time::{ManualClock, Timestamp};
use sqlx::{Connection, Executor};
use tower::ServiceExt;

use crate::config::{Config, HashCost, Rate};
use crate::db::{Backend, Db};
use crate::mail::{CapturingMailSender, MailKind};
use crate::outbox::Handlers;
use crate::state::AppState;

pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// A password that satisfies the policy.
pub const PASSWORD: &str = "correct horse battery!";
/// 2025-06-15T12:00:00Z: where every test clock starts.
pub const T0: Timestamp = Timestamp(1_749_988_800_000);

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    pub url: String,
    pub backend: Backend,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Result<Self, String> {
        sqlx::any::install_default_drivers();
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
                let url = format!("sqlite://{}", dir.path().join("test.db").display());
                Ok(Self {
                    url,
                    backend,
                    _dir: Some(dir),
                    pg: None,
                })
            }
            Backend::Postgres => {
                let maint =
                    std::env::var("FITEDGE_TEST_PG_URL").unwrap_or_else(|_| DEFAULT_PG_URL.into());
                let mut conn = sqlx::AnyConnection::connect(&maint).await.map_err(|e| {
                    format!(
                        "PostgreSQL is required for the conformance suite and is not reachable at \
                         {} ({e}). Start PostgreSQL (trust auth for user postgres on \
                         127.0.0.1:5432) or set FITEDGE_TEST_PG_URL to a maintenance database URL.",
                        crate::db::redact_url(&maint)
                    )
                })?;
                let name = format!(
                    "fitedge_test_{}",
                    hex::encode(crate::crypto::random_bytes(8).map_err(|e| e.to_string())?)
                );
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .await
                    .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
                let _ = conn.close().await;
                let base = maint.split('?').next().unwrap_or(&maint);
                let url = match base.rfind('/') {
                    Some(i) if i > "postgres://".len() => format!("{}/{name}", &base[..i]),
                    _ => format!("{base}/{name}"),
                };
                Ok(Self {
                    url,
                    backend,
                    _dir: None,
                    pg: Some((maint, name)),
                })
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some((maint, name)) = self.pg.take() else {
            return;
        };
        // Drop runs outside any runtime we may block: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut c) = sqlx::AnyConnection::connect(&maint).await {
                    let _ = c
                        .execute(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .await;
                    let _ = c.close().await;
                }
            });
        })
        .join();
    }
}

/// The configuration tests start from: cheap hashing, limits out of the way.
pub fn test_config(url: &str) -> Config {
    let mut c = Config::with_database(url);
    c.hash_cost = HashCost::InsecureFast;
    c.rate_limit_address = Rate {
        requests: 1_000_000,
        per_secs: 1,
    };
    c.rate_limit_account = Rate {
        requests: 1_000_000,
        per_secs: 1,
    };
    c.sync_rate_limit = Rate {
        requests: 1_000_000,
        per_secs: 1,
    };
    c
}

/// An app on a fresh database, a manual clock and captured mail.
#[derive(Debug)]
pub struct TestApp {
    pub router: Router,
    pub state: AppState,
    pub clock: Arc<ManualClock>,
    pub mail: Arc<CapturingMailSender>,
    // Last: dropped after the pool's users.
    pub db: TestDb,
}

impl TestApp {
    pub async fn new(backend: Backend) -> Result<Self, String> {
        Self::build(backend, |_| {}, Handlers::new()).await
    }

    pub async fn with_config(
        backend: Backend,
        f: impl FnOnce(&mut Config),
    ) -> Result<Self, String> {
        Self::build(backend, f, Handlers::new()).await
    }

    pub async fn build(
        backend: Backend,
        f: impl FnOnce(&mut Config),
        handlers: Handlers,
    ) -> Result<Self, String> {
        let db = TestDb::new(backend).await?;
        let mut config = test_config(&db.url);
        f(&mut config);
        let clock = Arc::new(ManualClock::new(T0));
        let mail = Arc::new(CapturingMailSender::default());
        let pool = Db::connect(&db.url).await.map_err(|e| e.to_string())?;
        pool.migrate().await.map_err(|e| e.to_string())?;
        let state = AppState::new(pool, config, clock.clone(), mail.clone(), handlers)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            router: crate::app(state.clone()),
            state,
            clock,
            mail,
            db,
        })
    }

    /// Sends a request through the whole app (all layers) in memory.
    pub async fn call(&self, r: TestRequest) -> TestResponse {
        let mut b = Request::builder().method(r.method).uri(&r.path);
        if let Some(t) = &r.token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in &r.headers {
            b = b.header(k.as_str(), v.as_str());
        }
        let body = match &r.body {
            Some(v) => {
                b = b.header("content-type", "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let Ok(mut req) = b.body(body) else {
            return TestResponse::broken("request could not be built");
        };
        req.extensions_mut().insert(ConnectInfo(r.addr));
        let Ok(resp) = self.router.clone().oneshot(req).await;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap_or_default();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&bytes).into())
            })
        };
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub async fn register(&self, email: &str, password: &str, birth_date: &str) -> TestResponse {
        self.call(TestRequest::post("/api/v1/auth/register").json(serde_json::json!({
            "email": email, "password": password, "birth_date": birth_date, "display_name": "Test"
        })))
        .await
    }

    /// Registers and verifies `email` (password [`PASSWORD`]); returns the user id.
    pub async fn register_verified(&self, email: &str) -> Result<String, String> {
        let r = self.register(email, PASSWORD, "1990-01-01").await;
        if r.status != StatusCode::CREATED {
            return Err(format!("register {email}: {} {}", r.status, r.body));
        }
        let token = self
            .mail
            .last_token(email, MailKind::VerifyEmail)
            .ok_or("no verification mail")?;
        let v = self
            .call(
                TestRequest::post("/api/v1/auth/verify-email")
                    .json(serde_json::json!({ "token": token })),
            )
            .await;
        if v.status != StatusCode::OK {
            return Err(format!("verify {email}: {} {}", v.status, v.body));
        }
        Ok(r.body["user_id"].as_str().unwrap_or_default().to_string())
    }

    /// Deletes the account of `token`, confirming with [`PASSWORD`].
    pub async fn delete_account(&self, token: &str) -> TestResponse {
        self.call(
            TestRequest::post("/api/v1/me/delete")
                .token(token)
                .json(serde_json::json!({ "password": PASSWORD })),
        )
        .await
    }

    pub async fn login(&self, email: &str, password: &str) -> TestResponse {
        self.call(
            TestRequest::post("/api/v1/auth/login")
                .json(serde_json::json!({ "email": email, "password": password })),
        )
        .await
    }

    /// Registers and verifies `email`, gives it `role` and `tier` (`user`/`partner`/...,
    /// `free`/`premium`/`pro`) and signs in: (user id, bearer token).
    pub async fn user_with(
        &self,
        email: &str,
        role: &str,
        tier: &str,
    ) -> Result<(String, String), String> {
        let id = self.register_verified(email).await?;
        sqlx::query("UPDATE users SET role = $1, tier = $2 WHERE id = $3")
            .bind(role)
            .bind(tier)
            .bind(&id)
            .execute(self.state.db.pool())
            .await
            .map_err(|e| format!("set role of {email}: {e}"))?;
        Ok((id, self.token(email).await?))
    }

    /// Serves the app on a real local socket (WebSocket and HTTP clients), until the process
    /// ends; its address.
    pub async fn listen(&self) -> Result<SocketAddr, String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let state = self.state.clone();
        tokio::spawn(async move {
            let _ = crate::serve_on(state, listener, std::future::pending()).await;
        });
        Ok(addr)
    }

    /// Signs in with [`PASSWORD`]; the bearer token.
    pub async fn token(&self, email: &str) -> Result<String, String> {
        let r = self.login(email, PASSWORD).await;
        r.body["access_token"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("login {email}: {} {}", r.status, r.body))
    }

    /// Enrols (confirming with [`PASSWORD`]) and confirms TOTP for the token's account; returns
    /// the raw secret.
    pub async fn enable_totp(&self, token: &str) -> Result<Vec<u8>, String> {
        let e = self
            .call(
                TestRequest::post("/api/v1/auth/mfa/totp/enroll")
                    .token(token)
                    .json(serde_json::json!({ "password": PASSWORD })),
            )
            .await;
        if e.status != StatusCode::OK {
            return Err(format!("enroll: {} {}", e.status, e.body));
        }
        let secret = base32_decode(e.body["secret"].as_str().unwrap_or_default())
            .ok_or("bad base32 secret")?;
        let code = crate::identity::totp::code_at(&secret, self.clock.now_ts());
        let c = self
            .call(
                TestRequest::post("/api/v1/auth/mfa/totp/confirm")
                    .token(token)
                    .json(serde_json::json!({ "code": code })),
            )
            .await;
        if c.status != StatusCode::OK {
            return Err(format!("confirm: {} {}", c.status, c.body));
        }
        Ok(secret)
    }
}

/// `now()` without importing the trait.
pub trait NowExt {
    fn now_ts(&self) -> Timestamp;
}
impl NowExt for ManualClock {
    fn now_ts(&self) -> Timestamp {
        fitedge_core::time::Clock::now(self)
    }
}

/// RFC 4648 base32 (no padding) decoding, for authenticator secrets.
pub fn base32_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        buf = (buf << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push(((buf >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

/// A request for [`TestApp::call`].
#[derive(Debug, Clone)]
pub struct TestRequest {
    pub method: Method,
    pub path: String,
    pub token: Option<String>,
    pub body: Option<serde_json::Value>,
    pub headers: Vec<(String, String)>,
    pub addr: SocketAddr,
}

impl TestRequest {
    pub fn new(method: Method, path: &str) -> Self {
        Self {
            method,
            path: path.into(),
            token: None,
            body: None,
            headers: vec![],
            addr: SocketAddr::from(([192, 0, 2, 1], 40000)),
        }
    }
    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }
    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path)
    }
    pub fn patch(path: &str) -> Self {
        Self::new(Method::PATCH, path)
    }
    pub fn delete(path: &str) -> Self {
        Self::new(Method::DELETE, path)
    }
    pub fn token(mut self, t: &str) -> Self {
        self.token = Some(t.into());
        self
    }
    pub fn json(mut self, v: serde_json::Value) -> Self {
        self.body = Some(v);
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn idempotency_key(self, k: &str) -> Self {
        self.header("x-idempotency-key", k)
    }
    /// The client address the request comes from.
    pub fn from_ip(mut self, ip: [u8; 4]) -> Self {
        self.addr = SocketAddr::from((ip, 40000));
        self
    }
}

/// What came back.
#[derive(Debug, Clone)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// JSON body; `Null` when empty; a string when not JSON.
    pub body: serde_json::Value,
}

impl TestResponse {
    fn broken(why: &str) -> Self {
        Self {
            status: StatusCode::IM_A_TEAPOT,
            headers: HeaderMap::new(),
            body: serde_json::Value::String(why.into()),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}
