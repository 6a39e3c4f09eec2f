//! The back-office's knowledge base: the documents with their ingest status
//! and passage counts; upload (markdown, HTML, PDF, text), delete and
//! reindex; a search box that shows exactly what the assistant would get
//! for a question (the same search, the same number of passages, and the
//! evidence gate's verdict); and the assistant's missing-knowledge list.
//! Uploads and deletes go to the document store and are ingested at once,
//! like `kedai kb upload` and the ops API.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::json;

use super::Permission;
use super::routes::{AdminLayout, admin, layout, page, require, when};
use crate::app::AppContext;
use crate::knowledge::Scope;
use crate::knowledge::extract::Format;
use crate::platform::objects::ObjectsError;
use crate::platform::vectors::VectorFilter;
use crate::web::error::AppError;
use crate::web::http::see_other;
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/knowledge", web::get().to(show_knowledge))
        .route("/admin/knowledge/upload", web::post().to(upload_document))
        .route("/admin/knowledge/delete", web::post().to(delete_document))
        .route("/admin/knowledge/reindex", web::post().to(reindex));
}

/// The largest document the form takes.
const MAX_UPLOAD: usize = 10 * 1024 * 1024;

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}

struct DocumentRow {
    key: String,
    title: String,
    kind: String,
    language: String,
    status: String,
    chunks: i32,
    ingested: String,
    error: String,
    /// Product documents come from the catalog, not the store.
    from_store: bool,
}

struct PassageRow {
    citation: String,
    title: String,
    section: String,
    score: String,
    keyword: String,
    vector: String,
    text: String,
}

struct MissingRow {
    question: String,
    best: String,
    at: String,
    conversation: i64,
}

#[derive(Template)]
#[template(path = "admin/knowledge.html")]
struct KnowledgePage<'a> {
    layout: AdminLayout<'a>,
    documents: Vec<DocumentRow>,
    embedder: String,
    passages_loaded: usize,
    can_manage: bool,
    query: String,
    results: Vec<PassageRow>,
    /// The evidence gate's verdict on `query`, once searched.
    verdict: Option<&'static str>,
    missing: Vec<MissingRow>,
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
struct KnowledgeQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    notice: Option<String>,
    #[serde(default)]
    key: Option<String>,
}

fn notice_text(code: &str, key: Option<&str>) -> Option<String> {
    let key = key.unwrap_or("the document");
    Some(match code {
        "uploaded" => format!("Uploaded and ingested {key}."),
        "failed" => format!("Uploaded {key}, but it could not be read (see its status below)."),
        "deleted" => format!("Deleted {key} and its passages."),
        "reindexed" => "Every changed document was ingested again.".to_string(),
        "empty" => "Choose a file to upload.".to_string(),
        "too_large" => "That file is larger than 10 MB.".to_string(),
        "format" => "Documents are .md, .markdown, .txt, .html, .htm or .pdf files.".to_string(),
        "bad_key" => "That name cannot be used for a document.".to_string(),
        "missing" => format!("There is no document {key}."),
        _ => return None,
    })
}

fn score(value: Option<f32>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_default()
}

async fn show_knowledge(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<KnowledgeQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let documents = crate::knowledge::repo::documents(&ctx.db)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|d| DocumentRow {
            from_store: d.source == "store",
            key: d.key,
            title: d.title,
            kind: d.kind,
            language: d.language,
            status: d.status,
            chunks: d.chunks,
            ingested: when(d.ingested_at),
            error: d.error.unwrap_or_default(),
        })
        .collect();
    let text = query.q.trim().chars().take(2000).collect::<String>();
    let (results, verdict) = if text.is_empty() {
        (Vec::new(), None)
    } else {
        // Exactly the assistant's search: same filter, same number of passages.
        let chat = &ctx.settings.chat;
        let passages = ctx
            .knowledge
            .search(&text, &VectorFilter::default(), chat.passages)
            .await
            .map_err(internal)?;
        let (answers, _) = crate::chat::answer::evidence(&passages, chat);
        let rows = passages
            .iter()
            .map(|p| PassageRow {
                citation: p.citation.clone(),
                title: p.title.clone(),
                section: p.section.join(" › "),
                score: format!("{:.4}", p.score),
                keyword: score(p.keyword_score),
                vector: score(p.vector_score),
                text: p.text.clone(),
            })
            .collect();
        let verdict = if answers {
            "The assistant would answer from these passages."
        } else {
            "No passage is close enough: the assistant would hand this question to a person and list it under missing knowledge (unless it is about an order)."
        };
        (rows, Some(verdict))
    };
    let missing = crate::chat::store::missing_knowledge(&ctx.db, 100)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|m| MissingRow {
            question: m.question,
            best: m.best_score.map(|s| format!("{s:.3}")).unwrap_or_default(),
            at: when(m.created_at),
            conversation: m.conversation_id,
        })
        .collect();
    let visitor = Visitor::of(&req);
    let template = KnowledgePage {
        layout: layout(&ctx, &visitor, "Knowledge base", Some(&admin), "knowledge"),
        documents,
        embedder: ctx.knowledge.embedder().name().to_string(),
        passages_loaded: ctx.knowledge.corpus().len(),
        can_manage: admin.role.allows(Permission::Manage),
        query: text,
        results,
        verdict,
        missing,
        notice: query
            .notice
            .as_deref()
            .and_then(|code| notice_text(code, query.key.as_deref())),
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

fn back(notice: &str, key: Option<&str>) -> HttpResponse {
    let mut location = format!("/admin/knowledge?notice={notice}");
    if let Some(key) = key {
        location.push_str("&key=");
        location.extend(url::form_urlencoded::byte_serialize(key.as_bytes()));
    }
    see_other(location)
}

/// The fields of the upload form.
#[derive(Default)]
struct Upload {
    csrf_token: String,
    /// The name to store it under; the file's own name when empty.
    key: String,
    file_name: String,
    body: Vec<u8>,
    too_large: bool,
}

async fn read_upload(mut payload: Multipart) -> Result<Upload, AppError> {
    let mut upload = Upload::default();
    while let Some(field) = payload.next().await {
        let mut field = field.map_err(|_| AppError::BadRequest("a malformed upload".into()))?;
        let name = field.name().unwrap_or_default().to_string();
        if name == "file" {
            upload.file_name = field
                .content_disposition()
                .and_then(|cd| cd.get_filename())
                .unwrap_or_default()
                .to_string();
        }
        let limit = if name == "file" { MAX_UPLOAD } else { 1024 };
        let mut value = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|_| AppError::BadRequest("a malformed upload".into()))?;
            if value.len() + chunk.len() > limit {
                upload.too_large = true;
                // Keep reading to the end, so the client sees our answer.
                continue;
            }
            value.extend_from_slice(&chunk);
        }
        match name.as_str() {
            "csrf_token" => upload.csrf_token = String::from_utf8_lossy(&value).into_owned(),
            "key" => upload.key = String::from_utf8_lossy(&value).trim().to_string(),
            "file" => upload.body = value,
            _ => {}
        }
    }
    Ok(upload)
}

/// What a sync of one document says about it.
async fn ingest(ctx: &AppContext, key: &str) -> Result<bool, AppError> {
    let report = ctx
        .knowledge
        .sync(Scope::Exact(key.to_string()), None)
        .await
        .map_err(|error| AppError::Internal(error.context("ingesting an uploaded document")))?;
    Ok(report.failed.is_empty())
}

async fn upload_document(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    payload: Multipart,
) -> Result<HttpResponse, AppError> {
    let upload = read_upload(payload).await?;
    verified_visitor(&req, &ctx.csrf, &upload.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    if upload.too_large {
        return Ok(back("too_large", None));
    }
    if upload.body.is_empty() {
        return Ok(back("empty", None));
    }
    let key = if upload.key.is_empty() {
        upload.file_name.clone()
    } else {
        upload.key.clone()
    };
    if Format::of_key(&key).is_none() {
        return Ok(back("format", None));
    }
    let size = upload.body.len();
    match ctx.knowledge.store().put(&key, upload.body.into()).await {
        Ok(_) => {}
        Err(ObjectsError::BadKey(_)) => return Ok(back("bad_key", None)),
        Err(error) => return Err(internal(error)),
    }
    let readable = ingest(&ctx, &key).await?;
    super::record(
        &ctx.writer,
        &admin,
        "kb_upload",
        &format!("kb:{key}"),
        None,
        Some(json!({ "bytes": size, "readable": readable })),
    )
    .await
    .map_err(internal)?;
    Ok(back(
        if readable { "uploaded" } else { "failed" },
        Some(&key),
    ))
}

#[derive(Debug, Deserialize)]
struct KeyForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    key: String,
}

async fn delete_document(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<KeyForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let key = form.key.trim();
    let store = ctx.knowledge.store();
    match store.head(key).await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(back("missing", Some(key))),
        Err(ObjectsError::BadKey(_)) => return Ok(back("bad_key", None)),
        Err(error) => return Err(internal(error)),
    }
    store.delete(key).await.map_err(internal)?;
    ingest(&ctx, key).await?;
    super::record(
        &ctx.writer,
        &admin,
        "kb_delete",
        &format!("kb:{key}"),
        None,
        None,
    )
    .await
    .map_err(internal)?;
    Ok(back("deleted", Some(key)))
}

#[derive(Debug, Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf_token: String,
}

async fn reindex(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<CsrfOnly>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let report = ctx
        .knowledge
        .sync(Scope::All, None)
        .await
        .map_err(|error| AppError::Internal(error.context("reindexing the knowledge base")))?;
    super::record(
        &ctx.writer,
        &admin,
        "kb_reindex",
        "kb:*",
        None,
        Some(serde_json::to_value(&report).unwrap_or_default()),
    )
    .await
    .map_err(internal)?;
    Ok(back("reindexed", None))
}
