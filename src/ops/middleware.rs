//! Per-request observation: request id, tracing span, access log, metrics
//! (Prometheus, and this replica's rolling window for the alert rules).

use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, HttpMessage};
use tracing::Instrument;

use super::window::RollingWindow;

pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the current request, available to handlers as an extension.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

/// Takes `X-Request-Id` when it is a sane token (so ids follow a request
/// through the load balancer), otherwise makes a UUIDv7.
fn request_id(req: &ServiceRequest) -> String {
    req.headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 128
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
}

/// The `from_fn` middleware. `access_log` comes from `server.access_log`;
/// `window` is the application's HTTP rolling window.
pub async fn observe(
    access_log: bool,
    window: Arc<RollingWindow>,
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let id = request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().to_string();
    let route = req
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let span = tracing::info_span!("request", request_id = %id, method = %method, route = %route);

    let result = next.call(req).instrument(span.clone()).await;
    let mut response = match result {
        Ok(response) => response,
        Err(error) => {
            // Errors that escaped the handlers still get counted and an id.
            let status = error.as_response_error().status_code();
            record(&window, &method, &route, status.as_u16(), started);
            return Err(error);
        }
    };
    let status = response.status().as_u16();
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
    }
    let elapsed = record(&window, &method, &route, status, started);
    if access_log {
        span.in_scope(|| {
            tracing::info!(
                status,
                latency_ms = (elapsed * 1000.0 * 1000.0).round() / 1000.0,
                path = %response.request().path(),
                "request completed"
            )
        });
    }
    Ok(response)
}

fn record(window: &RollingWindow, method: &str, route: &str, status: u16, started: Instant) -> f64 {
    let took = started.elapsed();
    window.record(took, status >= 500);
    let elapsed = took.as_secs_f64();
    metrics::counter!(
        "http_requests_total",
        "route" => route.to_string(),
        "method" => method.to_string(),
        "status" => status.to_string()
    )
    .increment(1);
    metrics::histogram!(
        "http_request_duration_seconds",
        "route" => route.to_string(),
        "method" => method.to_string()
    )
    .record(elapsed);
    elapsed
}
