//! The assistant's operations API (bearer `server.ops_api_token`): the
//! conversation inbox and the hand-over actions the admin UI builds on.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/ops/chat/conversations?state=bot\|needs_human\|human&limit=` | conversations, latest first |
//! | GET | `/api/ops/chat/conversations/{id}` | one conversation with its messages (delivery status, passages used) |
//! | POST | `/api/ops/chat/conversations/{id}/takeover` `{"admin"}` | take over: the bot stays silent |
//! | POST | `/api/ops/chat/conversations/{id}/reply` `{"admin","text"}` | reply as a human (must hold the takeover) |
//! | POST | `/api/ops/chat/conversations/{id}/release` `{"admin"}` | hand back to the bot |
//! | GET | `/api/ops/chat/missing-knowledge?limit=` | questions the bot could not answer from sources |

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::handover::HandoverError;
use super::store::{self, State};
use crate::app::AppContext;
use crate::ops::api::{authorize, problem};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/ops/chat")
            .route("/conversations", web::get().to(list))
            .route("/conversations/{id}", web::get().to(detail))
            .route("/conversations/{id}/{action}", web::post().to(act))
            .route("/missing-knowledge", web::get().to(missing)),
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
    tracing::error!(error = %error, "chat API failed");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

fn handover_problem(error: HandoverError) -> HttpResponse {
    match error {
        HandoverError::NotFound => problem(StatusCode::NOT_FOUND, error.to_string()),
        HandoverError::HeldBy(_) | HandoverError::NotTakenOver => {
            problem(StatusCode::CONFLICT, error.to_string())
        }
        HandoverError::Empty | HandoverError::TooLong(_) => {
            problem(StatusCode::UNPROCESSABLE_ENTITY, error.to_string())
        }
        other => internal(other),
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<u64>,
}

async fn list(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    let state = match query.state.as_deref() {
        None | Some("") | Some("all") => None,
        Some(raw) => match State::parse(raw) {
            Some(state) => Some(state),
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "state must be bot, needs_human or human",
                );
            }
        },
    };
    let limit = query.limit.unwrap_or(50).clamp(1, 500);
    let inbox = state.map_or(store::Inbox::All, store::Inbox::In);
    match store::list(&ctx.db, &inbox, limit).await {
        Ok(conversations) => HttpResponse::Ok().json(json!({ "conversations": conversations })),
        Err(error) => internal(error),
    }
}

async fn detail(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
) -> HttpResponse {
    guard!(req, ctx);
    let id = path.into_inner();
    let conversation = match store::conversation(&ctx.db, id).await {
        Ok(Some(conversation)) => conversation,
        Ok(None) => return problem(StatusCode::NOT_FOUND, "no such conversation"),
        Err(error) => return internal(error),
    };
    let messages = match store::messages(&ctx.db, id, 500).await {
        Ok(messages) => messages,
        Err(error) => return internal(error),
    };
    let statuses = match store::delivery_statuses(&ctx.db, &messages).await {
        Ok(statuses) => statuses,
        Err(error) => return internal(error),
    };
    let messages: Vec<_> = messages
        .into_iter()
        .map(|m| {
            let delivery = m
                .outbound_id
                .as_ref()
                .and_then(|id| statuses.get(id))
                .cloned();
            let passages: serde_json::Value = m
                .passages
                .as_deref()
                .and_then(|p| serde_json::from_str(p).ok())
                .unwrap_or(serde_json::Value::Null);
            json!({
                "id": m.id, "role": m.role, "kind": m.kind, "body": m.body,
                "status": m.status, "delivery": delivery, "author": m.author,
                "reply_to": m.reply_to, "model": m.model, "input_tokens": m.input_tokens,
                "output_tokens": m.output_tokens, "latency_ms": m.latency_ms,
                "passages": passages, "created_at": m.created_at, "sent_at": m.sent_at,
            })
        })
        .collect();
    HttpResponse::Ok().json(json!({ "conversation": conversation, "messages": messages }))
}

#[derive(Deserialize)]
pub struct AdminBody {
    admin: String,
    #[serde(default)]
    text: String,
}

/// The acting admin's name, when it is 1 to 128 characters.
fn admin_name(body: &AdminBody) -> Option<&str> {
    let admin = body.admin.trim();
    (!admin.is_empty() && admin.len() <= 128).then_some(admin)
}

fn bad_admin() -> HttpResponse {
    problem(
        StatusCode::UNPROCESSABLE_ENTITY,
        "admin must be 1 to 128 characters",
    )
}

/// `POST /conversations/{id}/{action}`: `takeover` and `release` answer
/// with the conversation, `reply` with the message sent.
async fn act(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<(i64, String)>,
    body: web::Json<AdminBody>,
) -> HttpResponse {
    guard!(req, ctx);
    let (id, action) = path.into_inner();
    let Some(admin) = admin_name(&body) else {
        return bad_admin();
    };
    let done = match action.as_str() {
        "takeover" => ctx
            .chat
            .take_over(id, admin)
            .await
            .map(|conversation| json!({ "conversation": conversation })),
        "release" => ctx
            .chat
            .release(id, admin)
            .await
            .map(|conversation| json!({ "conversation": conversation })),
        "reply" => ctx
            .chat
            .reply_as_human(id, admin, &body.text)
            .await
            .map(|message| json!({ "message": message })),
        _ => return problem(StatusCode::NOT_FOUND, "no such action"),
    };
    match done {
        Ok(answer) => HttpResponse::Ok().json(answer),
        Err(error) => handover_problem(error),
    }
}

#[derive(Deserialize)]
pub struct MissingQuery {
    limit: Option<u64>,
}

async fn missing(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<MissingQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    match store::missing_knowledge(&ctx.db, query.limit.unwrap_or(100).clamp(1, 1000)).await {
        Ok(items) => HttpResponse::Ok().json(json!({ "missing_knowledge": items })),
        Err(error) => internal(error),
    }
}
