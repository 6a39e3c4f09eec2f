//! The operations JSON API's guard: `Authorization: Bearer
//! <server.ops_api_token>`, compared in constant time. While the token is
//! unset the API answers 403 and says how to turn it on. Bearer tokens are
//! not sent by browsers on their own, so these endpoints need no CSRF token.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use serde_json::json;

use crate::app::AppContext;

/// `Err` carries the response to send instead.
pub fn authorize(req: &HttpRequest, ctx: &AppContext) -> Result<(), Box<HttpResponse>> {
    let token = ctx.settings.server.ops_api_token.expose_secret();
    if token.is_empty() {
        return Err(Box::new(HttpResponse::build(StatusCode::FORBIDDEN).json(json!({
            "error": "the operations API is off; set server.ops_api_token (KEDAI__SERVER__OPS_API_TOKEN)"
        }))));
    }
    let presented = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if crate::web::constant_time_eq(presented.as_bytes(), token.as_bytes()) {
        Ok(())
    } else {
        metrics::counter!("kedai_ops_api_rejected_total").increment(1);
        Err(Box::new(
            HttpResponse::build(StatusCode::UNAUTHORIZED)
                .insert_header(("WWW-Authenticate", "Bearer"))
                .json(json!({ "error": "missing or wrong bearer token" })),
        ))
    }
}

/// A JSON error with a status.
pub fn problem(status: StatusCode, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({ "error": message.into() }))
}

/// Parses an RFC 3339 time from a query or body field.
pub fn parse_time(field: &str, raw: &str) -> Result<time::OffsetDateTime, Box<HttpResponse>> {
    time::OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339).map_err(|_| {
        Box::new(problem(
            StatusCode::BAD_REQUEST,
            format!("{field} must be an RFC 3339 time such as 2026-11-24T00:00:00Z"),
        ))
    })
}

/// Parses a `YYYY-MM-DD` date.
pub fn parse_date(field: &str, raw: &str) -> Result<time::Date, Box<HttpResponse>> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw, &format).map_err(|_| {
        Box::new(problem(
            StatusCode::BAD_REQUEST,
            format!("{field} must be a date such as 2026-11-24"),
        ))
    })
}
