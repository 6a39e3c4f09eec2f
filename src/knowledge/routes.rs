//! The knowledge base's operations API (bearer `server.ops_api_token`, like
//! the rest of `/api/ops`).
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/ops/kb/search?q=&k=&mode=&kind=&language=&product_id=&tag=` | ranked passages with scores and citations |
//! | GET | `/api/ops/kb/documents` | every document with its status, passages and error |
//! | PUT | `/api/ops/kb/documents/{key}` (body: the file) | upload or replace a document, then ingest it |
//! | DELETE | `/api/ops/kb/documents/{key}` | delete a document and its passages |
//! | POST | `/api/ops/kb/sync` | ingest every new, changed and deleted document now |

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{Mode, Scope, repo};
use crate::app::AppContext;
use crate::ops::api::{authorize, problem};
use crate::platform::objects::ObjectsError;
use crate::platform::vectors::VectorFilter;

/// The largest document an upload may carry.
pub const MAX_UPLOAD_BYTES: usize = 25 * 1024 * 1024;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/ops/kb")
            .route("/search", web::get().to(search))
            .route("/documents", web::get().to(documents))
            .service(
                web::resource("/documents/{key:.+}")
                    .app_data(web::PayloadConfig::new(MAX_UPLOAD_BYTES))
                    .route(web::put().to(upload))
                    .route(web::delete().to(remove)),
            )
            .route("/sync", web::post().to(sync)),
    );
}

macro_rules! guard {
    ($req:expr, $ctx:expr) => {
        if let Err(response) = authorize(&$req, &$ctx) {
            return *response;
        }
    };
}

fn internal(error: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %error, "knowledge API failed");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

#[derive(Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
    k: Option<usize>,
    mode: Option<String>,
    kind: Option<String>,
    language: Option<String>,
    product_id: Option<i64>,
    tag: Option<String>,
}

async fn search(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<SearchQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    let query = query.into_inner();
    let Some(text) = query.q.filter(|q| !q.trim().is_empty()) else {
        return problem(StatusCode::BAD_REQUEST, "q is required");
    };
    if text.len() > 2000 {
        return problem(StatusCode::BAD_REQUEST, "q is longer than 2000 bytes");
    }
    let mode = match query.mode.as_deref() {
        None | Some("hybrid") => Mode::Hybrid,
        Some("keyword") => Mode::Keyword,
        Some("vector") => Mode::Vector,
        Some(_) => return problem(StatusCode::BAD_REQUEST, "mode is keyword, vector or hybrid"),
    };
    let k = query.k.unwrap_or(5).clamp(1, 50);
    let filter = VectorFilter {
        kind: query.kind,
        product_id: query.product_id,
        language: query.language,
        tag: query.tag,
    };
    let started = std::time::Instant::now();
    match ctx.knowledge.search_with(&text, &filter, k, mode).await {
        Ok(passages) => HttpResponse::Ok().json(json!({
            "query": text,
            "mode": mode,
            "took_ms": started.elapsed().as_secs_f64() * 1000.0,
            "passages": passages,
        })),
        Err(error) => internal(error),
    }
}

async fn documents(req: HttpRequest, ctx: web::Data<AppContext>) -> HttpResponse {
    guard!(req, ctx);
    match repo::documents(&ctx.db).await {
        Ok(documents) => {
            let corpus = ctx.knowledge.corpus();
            HttpResponse::Ok().json(json!({
                "embedder": ctx.knowledge.embedder().name(),
                "vector_store": ctx.knowledge.vectors().backend(),
                "passages_loaded": corpus.len(),
                "documents": documents,
            }))
        }
        Err(error) => internal(error),
    }
}

fn bad_key(error: ObjectsError) -> HttpResponse {
    match error {
        ObjectsError::BadKey(_) => problem(StatusCode::BAD_REQUEST, error.to_string()),
        other => internal(other),
    }
}

async fn upload(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    key: web::Path<String>,
    body: web::Bytes,
) -> HttpResponse {
    guard!(req, ctx);
    let key = key.into_inner();
    if body.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "the body is empty");
    }
    if super::extract::Format::of_key(&key).is_none() {
        return problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "documents are .md, .markdown, .txt, .html, .htm or .pdf",
        );
    }
    if let Err(error) = ctx.knowledge.store().put(&key, body).await {
        return bad_key(error);
    }
    ingest_one(&ctx, key).await
}

async fn remove(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    key: web::Path<String>,
) -> HttpResponse {
    guard!(req, ctx);
    let key = key.into_inner();
    match ctx.knowledge.store().head(&key).await {
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such document"),
        Ok(Some(_)) => {}
        Err(error) => return bad_key(error),
    }
    if let Err(error) = ctx.knowledge.store().delete(&key).await {
        return bad_key(error);
    }
    ingest_one(&ctx, key).await
}

/// Ingests the document under `key` (exactly that key, not its prefix).
async fn ingest_one(ctx: &AppContext, key: String) -> HttpResponse {
    match ctx.knowledge.sync(Scope::Exact(key.clone()), None).await {
        Ok(report) => {
            let status = if report.failed.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::UNPROCESSABLE_ENTITY
            };
            HttpResponse::build(status).json(json!({ "key": key, "report": report }))
        }
        Err(error) => internal(format!("{error:#}")),
    }
}

async fn sync(req: HttpRequest, ctx: web::Data<AppContext>) -> HttpResponse {
    guard!(req, ctx);
    match ctx.knowledge.sync(Scope::All, None).await {
        Ok(report) => HttpResponse::Ok().json(json!({ "report": report })),
        Err(error) => internal(format!("{error:#}")),
    }
}
