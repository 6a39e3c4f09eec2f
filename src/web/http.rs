//! Rendering templates into responses with `Cache-Control`, `ETag` and `304`.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use super::error::AppError;

pub const HTML: &str = "text/html; charset=utf-8";

/// How long browsers and CDNs may keep a response.
#[derive(Debug, Clone, Copy)]
pub enum CachePolicy {
    /// Anyone may cache it for this long (storefront pages: a CDN absorbs peaks).
    Public(Duration),
    /// Personal content (it carries a CSRF token or the shopper's cart):
    /// only the browser keeps it, and revalidates it every time.
    Private,
    /// Never stored at all.
    NoStore,
}

impl CachePolicy {
    fn header_value(self) -> String {
        match self {
            CachePolicy::Public(max_age) => format!("public, max-age={}", max_age.as_secs()),
            CachePolicy::Private => "private, no-cache".to_string(),
            CachePolicy::NoStore => "no-store".to_string(),
        }
    }
}

/// Renders an HTML template.
pub fn render(
    req: &HttpRequest,
    template: &impl Template,
    policy: CachePolicy,
) -> Result<HttpResponse, AppError> {
    render_as(req, template, HTML, policy)
}

/// Renders a template as `content_type`. Cacheable responses carry a weak
/// `ETag` over the body and answer `304 Not Modified` when it matches.
pub fn render_as(
    req: &HttpRequest,
    template: &impl Template,
    content_type: &'static str,
    policy: CachePolicy,
) -> Result<HttpResponse, AppError> {
    let body = template.render().map_err(|error| {
        AppError::Internal(anyhow::Error::new(error).context("template rendering failed"))
    })?;
    Ok(respond(req, body.into_bytes(), content_type, policy))
}

/// Builds the response for a body, answering `304` to a matching `If-None-Match`.
pub fn respond(
    req: &HttpRequest,
    body: Vec<u8>,
    content_type: &'static str,
    policy: CachePolicy,
) -> HttpResponse {
    let cache_control = policy.header_value();
    if matches!(policy, CachePolicy::NoStore) {
        return HttpResponse::Ok()
            .content_type(content_type)
            .insert_header((header::CACHE_CONTROL, cache_control))
            .body(body);
    }
    let etag = format!("W/\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(&body));
    if if_none_match(req, &etag) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, etag))
            .insert_header((header::CACHE_CONTROL, cache_control))
            .finish();
    }
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, cache_control))
        .body(body)
}

/// True when the request's `If-None-Match` lists this entity tag (weak
/// comparison, as RFC 9110 asks for `GET`) or is `*`.
pub fn if_none_match(req: &HttpRequest, etag: &str) -> bool {
    let Some(value) = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag);
    value
        .split(',')
        .any(|candidate| candidate.trim() == "*" || opaque(candidate) == ours)
}

/// `303 See Other` to `location`: the answer to a successful form post.
/// The client's address for throttling: what the load balancer reports
/// (`Forwarded` / `X-Forwarded-For`), else the peer.
pub fn client_address(req: &actix_web::HttpRequest) -> String {
    req.connection_info()
        .realip_remote_addr()
        .unwrap_or("unknown")
        .to_string()
}

pub fn see_other(location: impl Into<String>) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location.into()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// A header value known to be valid at compile time.
pub fn static_header(value: &'static str) -> HeaderValue {
    HeaderValue::from_static(value)
}

#[cfg(test)]
mod tests {
    use actix_web::test::TestRequest;

    use super::*;

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, "\"abc\", W/\"def\""))
            .to_http_request();
        assert!(if_none_match(&req, "W/\"def\""));
        assert!(if_none_match(&req, "W/\"abc\""));
        assert!(!if_none_match(&req, "W/\"xyz\""));
        let star = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, "*"))
            .to_http_request();
        assert!(if_none_match(&star, "W/\"anything\""));
        assert!(!if_none_match(
            &TestRequest::default().to_http_request(),
            "W/\"abc\""
        ));
    }

    #[test]
    fn matching_etag_gets_304_without_a_body() {
        let first = respond(
            &TestRequest::default().to_http_request(),
            b"hello".to_vec(),
            HTML,
            CachePolicy::Public(Duration::from_secs(30)),
        );
        assert_eq!(first.status(), 200);
        let etag = first
            .headers()
            .get(header::ETAG)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            first.headers().get(header::CACHE_CONTROL).unwrap(),
            "public, max-age=30"
        );
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, etag))
            .to_http_request();
        let second = respond(
            &req,
            b"hello".to_vec(),
            HTML,
            CachePolicy::Public(Duration::from_secs(30)),
        );
        assert_eq!(second.status(), 304);
    }
}
