//! Logs and request tracing: JSON lines with timestamp, level, service, trace_id,
//! correlation_id and span_id; a span per request; the request metrics.

use std::io::Write;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::field::{Field, Visit};
use tracing::{Instrument, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::state::AppState;

pub const SERVICE: &str = "fitedge-server";
pub const CORRELATION_HEADER: &str = "x-correlation-id";
pub const TRACE_HEADER: &str = "x-trace-id";

/// Installs the global subscriber (JSON lines to stdout, or text). `RUST_LOG` filters, default
/// `info`. Safe to call more than once (later calls do nothing).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        LogFormat::Json => registry.with(JsonLines).try_init(),
        LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .try_init(),
    };
}

/// The ids a request span carries, kept in the span's extensions for the log layer.
#[derive(Debug, Clone, Default)]
struct RequestIds {
    fields: serde_json::Map<String, serde_json::Value>,
}

#[derive(Default)]
struct JsonVisitor(serde_json::Map<String, serde_json::Value>);

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

/// Writes one JSON object per event; request ids come from the enclosing spans.
#[derive(Debug)]
struct JsonLines;

impl<S> Layer<S> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        let mut v = JsonVisitor::default();
        attrs.record(&mut v);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(RequestIds { fields: v.0 });
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut v = JsonVisitor::default();
            values.record(&mut v);
            let mut ext = span.extensions_mut();
            if let Some(ids) = ext.get_mut::<RequestIds>() {
                ids.fields.extend(v.0);
            }
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut obj = serde_json::Map::new();
        obj.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
                .into(),
        );
        obj.insert(
            "level".into(),
            event.metadata().level().as_str().to_lowercase().into(),
        );
        obj.insert("service".into(), SERVICE.into());
        obj.insert("target".into(), event.metadata().target().into());
        if let Some(scope) = ctx.event_scope(event) {
            // Outermost first, so inner spans override.
            for span in scope.from_root() {
                if let Some(ids) = span.extensions().get::<RequestIds>() {
                    for (k, v) in &ids.fields {
                        obj.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut v = JsonVisitor::default();
        event.record(&mut v);
        obj.extend(v.0);
        let line = serde_json::Value::Object(obj).to_string();
        let stdout = std::io::stdout();
        let mut lock = stdout.lock();
        let _ = writeln!(lock, "{line}");
    }
}

fn valid_id(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

fn random_hex(n: usize) -> String {
    crate::crypto::random_bytes(n)
        .map(hex::encode)
        .unwrap_or_else(|_| "0".repeat(n * 2))
}

/// The trace id from a W3C `traceparent` header, if well formed.
fn trace_from_traceparent(h: &HeaderMap) -> Option<String> {
    let tp = h.get("traceparent")?.to_str().ok()?;
    let parts: Vec<&str> = tp.split('-').collect();
    (parts.len() == 4
        && parts[1].len() == 32
        && parts[1].bytes().all(|b| b.is_ascii_hexdigit())
        && parts[1] != "00000000000000000000000000000000")
        .then(|| parts[1].to_ascii_lowercase())
}

/// The route template a request matched, carried out on the response for the outer layer.
#[derive(Debug, Clone)]
pub struct RouteTemplate(pub String);

/// Inner layer (`route_layer`): copies the matched route template onto the response.
pub async fn record_route(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let mut resp = next.run(req).await;
    if let Some(r) = route {
        resp.extensions_mut().insert(RouteTemplate(r));
    }
    resp
}

/// Outer layer: a span with the request ids around everything, the ids echoed in response
/// headers, and the request counted and timed.
pub async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let headers = req.headers();
    let correlation_id = headers
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| valid_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let trace_id = trace_from_traceparent(headers).unwrap_or_else(|| random_hex(16));
    let span_id = random_hex(8);
    let method = req.method().as_str().to_string();
    let span = tracing::info_span!(
        "request",
        trace_id = %trace_id,
        correlation_id = %correlation_id,
        span_id = %span_id,
        method = %method,
    );
    let mut resp = next.run(req).instrument(span.clone()).await;
    let elapsed = start.elapsed().as_secs_f64();
    let route = resp
        .extensions()
        .get::<RouteTemplate>()
        .map(|r| r.0.clone())
        .unwrap_or_else(|| "unmatched".to_string());
    let status = resp.status().as_u16();
    state.metrics.observe(&method, &route, status, elapsed);
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(route = %route, status, elapsed_ms = elapsed * 1000.0, "request failed");
        } else {
            tracing::debug!(route = %route, status, elapsed_ms = elapsed * 1000.0, "request");
        }
    });
    if let Ok(v) = HeaderValue::from_str(&correlation_id) {
        resp.headers_mut().insert(CORRELATION_HEADER, v);
    }
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        resp.headers_mut().insert(TRACE_HEADER, v);
    }
    resp
}
