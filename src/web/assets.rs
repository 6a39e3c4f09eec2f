//! Static files under `static/`, compiled into the binary and served under
//! fingerprinted names (`/static/css/kedai.3f9a1c2b7d.css`) so they can be
//! cached for a year: a changed file gets a new name.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::LazyLock;

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use rust_embed::Embed;

use super::http::if_none_match;

#[derive(Embed)]
#[folder = "static/"]
struct StaticFiles;

struct Asset {
    logical: String,
    etag: String,
    content_type: String,
}

struct AssetIndex {
    /// `css/kedai.css` → `/static/css/kedai.<hash>.css`
    urls: HashMap<String, &'static str>,
    /// `css/kedai.<hash>.css` → the file
    fingerprinted: HashMap<String, Asset>,
}

static INDEX: LazyLock<AssetIndex> = LazyLock::new(|| {
    let mut urls = HashMap::new();
    let mut fingerprinted = HashMap::new();
    for path in StaticFiles::iter() {
        let Some(file) = StaticFiles::get(&path) else {
            continue;
        };
        let hash = hex::encode(&file.metadata.sha256_hash()[..5]);
        let named = match path.rsplit_once('.') {
            Some((stem, ext)) if !stem.is_empty() && !stem.ends_with('/') => {
                format!("{stem}.{hash}.{ext}")
            }
            _ => format!("{path}.{hash}"),
        };
        let url: &'static str = Box::leak(format!("/static/{named}").into_boxed_str());
        urls.insert(path.to_string(), url);
        fingerprinted.insert(
            named,
            Asset {
                logical: path.to_string(),
                etag: format!("\"{hash}\""),
                content_type: mime_guess::from_path(path.as_ref())
                    .first_or_octet_stream()
                    .essence_str()
                    .to_string(),
            },
        );
    }
    AssetIndex {
        urls,
        fingerprinted,
    }
});

/// The URL to put in a page for `static/<path>`. Unknown paths are returned
/// unfingerprinted (and will 404), which a test catches.
pub fn url(path: &str) -> Cow<'static, str> {
    match INDEX.urls.get(path) {
        Some(url) => Cow::Borrowed(url),
        None => Cow::Owned(format!("/static/{path}")),
    }
}

/// Every asset's logical path; used by tests to check each one is served.
pub fn all() -> Vec<String> {
    INDEX.urls.keys().cloned().collect()
}

pub async fn serve_static(req: HttpRequest, path: web::Path<String>) -> HttpResponse {
    let path = path.into_inner();
    if let Some(asset) = INDEX.fingerprinted.get(&path) {
        return serve(&req, asset, "public, max-age=31536000, immutable");
    }
    // An unfingerprinted name still works, with a short lifetime.
    if let Some(url) = INDEX.urls.get(&path)
        && let Some(asset) = INDEX.fingerprinted.get(url.trim_start_matches("/static/"))
    {
        return serve(&req, asset, "public, max-age=300");
    }
    HttpResponse::NotFound()
        .content_type("text/plain; charset=utf-8")
        .body("not found")
}

fn serve(req: &HttpRequest, asset: &Asset, cache_control: &'static str) -> HttpResponse {
    if if_none_match(req, &asset.etag) {
        return HttpResponse::NotModified()
            .insert_header((header::ETAG, asset.etag.clone()))
            .insert_header((header::CACHE_CONTROL, cache_control))
            .finish();
    }
    match StaticFiles::get(&asset.logical) {
        Some(file) => HttpResponse::Ok()
            .content_type(asset.content_type.as_str())
            .insert_header((header::ETAG, asset.etag.clone()))
            .insert_header((header::CACHE_CONTROL, cache_control))
            .body(file.data.into_owned()),
        None => HttpResponse::NotFound().finish(),
    }
}
