//! fitedge-server: the FitEdge server (axum + sqlx, on SQLite or PostgreSQL).
//!
//! [`app`] builds the HTTP application from one router per bounded context; [`serve`] runs it
//! with migrations, the outbox dispatcher and graceful shutdown; [`run`] does the same from a
//! blocking `main` (the `fitedge-server` binary and `fitedge serve`). See README.md.

pub mod auth;
pub mod booking;
pub mod config;
pub mod crypto;
pub mod db;
pub mod error;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod mail;
pub mod metrics;
pub mod observability;
pub mod openapi;
pub mod outbox;
pub mod ratelimit;
pub mod state;
pub mod sync;
#[cfg(feature = "testing")]
pub mod testing;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::Router;
use fitedge_core::time::{Clock, SystemClock};
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::Config;
pub use db::{Backend, Db};
pub use error::{ApiError, Error};
pub use state::AppState;

/// The HTTP application: every context's router under `/api/v1`, the conventions as layers
/// (outermost first: request span and metrics, per-address limit, idempotency), the operational
/// routes, and the OpenAPI document built from the same routers.
pub fn app(state: AppState) -> Router {
    let (router, _) = app_and_openapi(state);
    router
}

/// [`app`] and its OpenAPI document (as served).
pub fn app_and_openapi(state: AppState) -> (Router, serde_json::Value) {
    let api = OpenApiRouter::new()
        .merge(identity::router())
        .merge(booking::router())
        .merge(sync::router())
        .routes(routes!(openapi::openapi_json))
        .route_layer(from_fn(observability::record_route))
        .layer(from_fn_with_state(state.clone(), idempotency::layer))
        .layer(from_fn_with_state(state.clone(), http::limit_per_address));
    let ops = http::ops_router().route_layer(from_fn(observability::record_route));
    let (router, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(api)
        .merge(ops)
        .split_for_parts();
    let mut doc = serde_json::to_value(&doc).unwrap_or_default();
    openapi::add_convention_responses(&mut doc);
    let json = doc.to_string();
    let router = router
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::Extension(Arc::new(json)))
        .layer(from_fn_with_state(state.clone(), observability::observe))
        .with_state(state);
    (router, doc)
}

/// Connects, migrates and builds the state with the given clock and mail sender.
pub async fn build_state(
    config: Config,
    clock: Arc<dyn Clock>,
    mail: Arc<dyn mail::MailSender>,
) -> Result<AppState, Error> {
    let db = Db::connect(&config.database_url).await?;
    db.migrate().await?;
    let reserved = sync::store::reserve_missing_profile_ids(&db).await?;
    if reserved.reserved > 0 {
        tracing::info!(
            accounts = reserved.reserved,
            "profile document ids reserved for accounts made before the reservation"
        );
    }
    if !reserved.squatted.is_empty() {
        tracing::warn!(
            documents = ?reserved.squatted,
            "documents sit at a user's profile id as something other than that user's profile \
             (made before ids were reserved); that user's devices cannot sync their profile \
             until the operator removes them"
        );
    }
    AppState::new(
        db,
        config,
        clock,
        mail,
        booking::register(outbox::Handlers::new()),
    )
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Serves `state` on `listener` until `shutdown` resolves; in-flight requests finish, the
/// outbox dispatcher makes a last pass, the pool closes.
pub async fn serve_on(
    state: AppState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let dispatcher = tokio::spawn(outbox::run_dispatcher(state.clone(), stop_rx.clone()));
    let sweeper = tokio::spawn(booking::run_sweeper(state.clone(), stop_rx.clone()));
    let sync_tasks = tokio::spawn(sync::run_background(state.clone(), stop_rx.clone()));
    let janitor = tokio::spawn(janitor(state.clone(), stop_rx));
    let app = app(state.clone());
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await?;
    let _ = stop_tx.send(true);
    let _ = dispatcher.await;
    let _ = janitor.await;
    let _ = sweeper.await;
    let _ = sync_tasks.await;
    state.db.pool().close().await;
    tracing::info!("stopped");
    Ok(())
}

/// Hourly: drop expired idempotency records.
async fn janitor(state: AppState, mut stop: watch::Receiver<bool>) {
    loop {
        match idempotency::purge(&state).await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "expired idempotency records removed"),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "idempotency purge failed"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Builds the production state from `config` (system clock; mail logged in `--dev`).
pub async fn state_from_config(config: Config) -> Result<AppState, Error> {
    let mail: Arc<dyn mail::MailSender> = if config.dev {
        Arc::new(mail::DevLogMailSender)
    } else {
        Arc::new(mail::UnconfiguredMailSender)
    };
    build_state(config, Arc::new(SystemClock), mail).await
}

/// Runs the server until SIGINT/SIGTERM (async).
pub async fn serve(config: Config) -> Result<(), Error> {
    if config.dev {
        tracing::warn!(
            "DEV MODE: mail is logged, and verification/reset tokens are returned in responses"
        );
    }
    if config.secret_key.is_none() {
        tracing::warn!("FITEDGE_SECRET_KEY not set: idempotent responses are not replayed across restarts or nodes");
    }
    let bind = config.bind;
    tracing::info!(
        database = %db::redact_url(&config.database_url),
        bind = %bind,
        "starting"
    );
    let state = state_from_config(config).await?;
    // Dormant accounts' TOTP secrets from before sealing (or sealed under the development key)
    // are sealed now rather than at their owner's next sign-in (ADR 0013).
    let sealed = identity::sealed::seal_stored_secrets(&state).await?;
    if sealed.sealed > 0 {
        tracing::info!(
            accounts = sealed.sealed,
            "TOTP secrets sealed under the server key"
        );
    }
    let listener = tokio::net::TcpListener::bind(bind).await?;
    tracing::info!(address = %listener.local_addr()?, backend = state.db.backend().name(), "listening");
    serve_on(state, listener, shutdown_signal()).await
}

/// Blocking entry point for a binary: logging, a multi-threaded runtime, [`serve`].
pub fn run(config: Config) -> anyhow::Result<()> {
    observability::init_logging(config.log_format);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(serve(config))?;
    Ok(())
}
