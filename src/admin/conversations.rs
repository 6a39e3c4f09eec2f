//! The conversations inbox (all, needs a person, taken over by me,
//! unanswered) and a conversation's page: the history with the passages
//! each answer used, kept live by server-sent events, and the actions:
//! take over, reply as a person (through the messaging adapter), private
//! notes, release to the assistant.

use std::time::{Duration, Instant};

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;

use super::Permission;
use super::routes::{AdminLayout, CsrfForm, admin, layout, page, require, when};
use crate::app::AppContext;
use crate::chat::handover::HandoverError;
use crate::chat::store::{self as chat_store, Inbox, State};
use crate::web::error::AppError;
use crate::web::http::see_other;
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/conversations", web::get().to(conversations))
        .route("/admin/conversations/{id}", web::get().to(conversation))
        .route("/admin/conversations/{id}/live", web::get().to(live))
        .route(
            "/admin/conversations/{id}/{action}",
            web::post().to(conversation_action),
        );
}

struct ConversationRow {
    id: i64,
    who: String,
    state: String,
    state_label: &'static str,
    last: String,
    handled_by: String,
}

#[derive(Template)]
#[template(path = "admin/conversations.html")]
struct ConversationsPage<'a> {
    layout: AdminLayout<'a>,
    filters: Vec<(&'static str, &'static str)>,
    filter: &'static str,
    rows: Vec<ConversationRow>,
}

fn state_label(state: &str) -> &'static str {
    match state {
        "needs_human" => "needs a person",
        "human" => "taken over",
        _ => "assistant",
    }
}

fn who(conv: &chat_store::conversation::Model) -> String {
    match &conv.profile_name {
        Some(name) => format!("{name} ({})", conv.identity),
        None => conv.identity.clone(),
    }
}

#[derive(Deserialize)]
struct FilterQuery {
    filter: Option<String>,
}

async fn conversations(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<FilterQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::Converse);
    let (filter, inbox) = match query.filter.as_deref() {
        Some("needs_human") => ("needs_human", Inbox::In(State::NeedsHuman)),
        Some("mine") => ("mine", Inbox::HeldBy(admin.email.clone())),
        Some("unanswered") => ("unanswered", Inbox::Unanswered),
        _ => ("all", Inbox::All),
    };
    let rows = chat_store::list(&ctx.db, &inbox, 200)
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .into_iter()
        .map(|c| ConversationRow {
            id: c.id,
            who: who(&c),
            state_label: state_label(&c.state),
            last: when(c.last_message_at),
            handled_by: c.handled_by.clone().unwrap_or_default(),
            state: c.state,
        })
        .collect();
    let visitor = Visitor::of(&req);
    let template = ConversationsPage {
        layout: layout(
            &ctx,
            &visitor,
            "Conversations",
            Some(&admin),
            "conversations",
        ),
        filters: vec![
            ("all", "All"),
            ("needs_human", "Needs a person"),
            ("mine", "Taken over by me"),
            ("unanswered", "Unanswered"),
        ],
        filter,
        rows,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

struct MessageView {
    role: String,
    kind: String,
    who: String,
    at: String,
    status: String,
    delivery: Option<String>,
    body: String,
    passages: Vec<String>,
}

/// What changes while an admin watches: the state line and the messages
/// (new ones, their statuses, delivery ticks). The page includes it, and
/// the live stream sends it again whenever it renders differently.
struct ConversationLog {
    state_label: &'static str,
    handled_by: Option<String>,
    messages: Vec<MessageView>,
}

#[derive(Template)]
#[template(path = "admin/conversation_log.html")]
struct LiveFragment {
    log: ConversationLog,
}

#[derive(Template)]
#[template(path = "admin/conversation.html")]
struct ConversationPage<'a> {
    layout: AdminLayout<'a>,
    id: i64,
    who: String,
    mine: bool,
    admin_name: &'a str,
    notice: Option<&'static str>,
    log: ConversationLog,
}

/// How many of a conversation's newest messages the page shows.
const SHOWN_MESSAGES: u64 = 500;

/// The conversation and its log as it stands now (`None`: no such
/// conversation).
async fn current_log(
    ctx: &AppContext,
    id: i64,
) -> Result<Option<(chat_store::conversation::Model, ConversationLog)>, sea_orm::DbErr> {
    let Some(conv) = chat_store::conversation(&ctx.db, id).await? else {
        return Ok(None);
    };
    let messages = chat_store::messages(&ctx.db, id, SHOWN_MESSAGES).await?;
    let statuses = chat_store::delivery_statuses(&ctx.db, &messages).await?;
    let shopper = who(&conv);
    let messages = messages
        .into_iter()
        .map(|m| {
            let passages = m
                .passages
                .as_deref()
                .and_then(|p| serde_json::from_str::<Vec<serde_json::Value>>(p).ok())
                .unwrap_or_default()
                .iter()
                .map(|p| {
                    format!(
                        "{} [{}] score {:.3}",
                        p["title"].as_str().unwrap_or(""),
                        p["citation"].as_str().unwrap_or(""),
                        p["score"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            MessageView {
                who: match m.role.as_str() {
                    "user" => shopper.clone(),
                    "assistant" => format!(
                        "assistant{}",
                        m.model
                            .as_deref()
                            .map(|m| format!(" ({m})"))
                            .unwrap_or_default()
                    ),
                    _ => m.author.clone().unwrap_or_else(|| m.role.clone()),
                },
                delivery: m
                    .outbound_id
                    .as_ref()
                    .and_then(|o| statuses.get(o))
                    .cloned(),
                at: when(m.created_at),
                status: m.status.replace('_', " "),
                passages,
                role: m.role,
                kind: m.kind,
                body: m.body,
            }
        })
        .collect();
    let log = ConversationLog {
        state_label: state_label(&conv.state),
        handled_by: conv.handled_by.clone(),
        messages,
    };
    Ok(Some((conv, log)))
}

#[derive(Deserialize)]
struct NoticeQuery {
    notice: Option<String>,
}

async fn conversation(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
    query: web::Query<NoticeQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::Converse);
    let id = path.into_inner();
    let (conv, log) = current_log(&ctx, id)
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .ok_or(AppError::NotFound)?;
    let mine = conv.state == "human" && conv.handled_by.as_deref() == Some(admin.email.as_str());
    let notice = match query.notice.as_deref() {
        Some("held") => Some("Another admin holds this conversation."),
        Some("not_taken") => Some("Take the conversation over before replying."),
        Some("empty") => Some("The message was empty."),
        _ => None,
    };
    let shopper = who(&conv);
    let visitor = Visitor::of(&req);
    let template = ConversationPage {
        layout: layout(&ctx, &visitor, &shopper, Some(&admin), "conversations"),
        id,
        who: shopper,
        mine,
        admin_name: &admin.name,
        notice,
        log,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

/// How often the live view looks for changes.
const LIVE_POLL: Duration = Duration::from_secs(1);
/// A comment line this often keeps proxies from closing a quiet stream.
const LIVE_KEEPALIVE: Duration = Duration::from_secs(15);
/// A stream ends after this long; the browser reconnects at once, which
/// checks the admin's session and role again.
const LIVE_LIFETIME: Duration = Duration::from_secs(300);

/// `GET /admin/conversations/{id}/live`: server-sent events for the
/// conversation page. An `update` event carries the rendered log (state
/// line and messages, escaped like the page) whenever it changes: a new
/// inbound message, the assistant's reply, a status or a delivery tick,
/// a takeover. Polling the database (once a second, per open page) sees
/// what every replica wrote, so the page stays live whichever replica
/// took the message. `gone` says the conversation was deleted.
async fn live(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
) -> Result<HttpResponse, AppError> {
    admin!(req, ctx, Permission::Converse);
    let id = path.into_inner();
    // 404 before the stream starts, so EventSource stops retrying.
    chat_store::conversation(&ctx.db, id)
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .ok_or(AppError::NotFound)?;
    let stream = LiveStream {
        ctx: ctx.into_inner(),
        id,
        last: None,
        started: Instant::now(),
        last_sent: Instant::now(),
        first: true,
        done: false,
    };
    let body = futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((
            Ok::<_, std::convert::Infallible>(web::Bytes::from(chunk)),
            stream,
        ))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-store"))
        // Compressing would hold events back in the encoder's buffer.
        .insert_header(header::ContentEncoding::Identity)
        // nginx and friends: pass each event on as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

struct LiveStream {
    ctx: std::sync::Arc<AppContext>,
    id: i64,
    /// Hash of the last log sent.
    last: Option<u64>,
    started: Instant,
    last_sent: Instant,
    first: bool,
    done: bool,
}

impl LiveStream {
    /// The next bytes to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<String> {
        if self.done {
            return None;
        }
        loop {
            if self.first {
                self.first = false;
            } else {
                if self.started.elapsed() >= LIVE_LIFETIME {
                    return None;
                }
                tokio::select! {
                    _ = self.ctx.shutdown.cancelled() => return None,
                    _ = tokio::time::sleep(LIVE_POLL) => {}
                }
            }
            let rendered = match current_log(&self.ctx, self.id).await {
                Ok(Some((_, log))) => LiveFragment { log }.render(),
                Ok(None) => {
                    self.done = true;
                    return Some("event: gone\ndata: \n\n".to_string());
                }
                Err(error) => {
                    tracing::warn!(conversation = self.id, error = %error, "the live conversation view could not read the conversation");
                    return None;
                }
            };
            let html = match rendered {
                Ok(html) => html,
                Err(error) => {
                    tracing::error!(error = %error, "the live conversation log did not render");
                    return None;
                }
            };
            let hash = xxhash_rust::xxh3::xxh3_64(html.as_bytes());
            if self.last != Some(hash) {
                self.last = Some(hash);
                self.last_sent = Instant::now();
                return Some(sse_event("update", &html));
            }
            if self.last_sent.elapsed() >= LIVE_KEEPALIVE {
                self.last_sent = Instant::now();
                return Some(": keepalive\n\n".to_string());
            }
        }
    }
}

/// One server-sent event; every line of `data` gets its own `data:` field
/// (the browser joins them with newlines again). Carriage returns are
/// dropped: the rendered log is HTML, where they mean nothing.
fn sse_event(event: &str, data: &str) -> String {
    let mut out = format!("retry: 2000\nevent: {event}\n");
    // A lone carriage return also ends a line for the browser; a shopper's
    // message must not be able to start a field of its own.
    for line in data.replace('\r', "").lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

async fn conversation_action(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<(i64, String)>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Converse);
    let (id, action) = path.into_inner();
    let internal = |e: sea_orm::DbErr| AppError::Internal(e.into());
    let before = chat_store::conversation(&ctx.db, id)
        .await
        .map_err(internal)?
        .ok_or(AppError::NotFound)?;
    let back = format!("/admin/conversations/{id}");
    let result = match action.as_str() {
        "takeover" => ctx.chat.take_over(id, &admin.email).await.map(|_| ()),
        "release" => ctx.chat.release(id, &admin.email).await.map(|_| ()),
        "reply" => ctx
            .chat
            .reply_as_human(id, &admin.email, &form.text)
            .await
            .map(|_| ()),
        "note" => ctx
            .chat
            .add_note(id, &admin.email, &form.text)
            .await
            .map(|_| ()),
        _ => return Err(AppError::NotFound),
    };
    match result {
        Ok(()) => {
            let after = chat_store::conversation(&ctx.db, id)
                .await
                .map_err(internal)?;
            let state = |c: &chat_store::conversation::Model| json!({"state": c.state, "handled_by": c.handled_by});
            let detail = match action.as_str() {
                "reply" | "note" => Some(json!({"text": form.text.trim()})),
                _ => after.as_ref().map(state),
            };
            super::record(
                &ctx.writer,
                &admin,
                &format!("conversation_{action}"),
                &format!("conversation:{id}"),
                Some(state(&before)),
                detail,
            )
            .await
            .map_err(internal)?;
            Ok(see_other(back))
        }
        Err(HandoverError::HeldBy(_)) => Ok(see_other(format!("{back}?notice=held"))),
        Err(HandoverError::NotTakenOver) => Ok(see_other(format!("{back}?notice=not_taken"))),
        Err(HandoverError::Empty) | Err(HandoverError::TooLong(_)) => {
            Ok(see_other(format!("{back}?notice=empty")))
        }
        Err(HandoverError::NotFound) => Err(AppError::NotFound),
        Err(error) => Err(AppError::Internal(error.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_an_event_gets_its_own_data_field() {
        assert_eq!(
            sse_event("update", "<p>a</p>\n<ol>\n</ol>"),
            "retry: 2000\nevent: update\ndata: <p>a</p>\ndata: <ol>\ndata: </ol>\n\n"
        );
        // A carriage return cannot start a field of its own.
        assert_eq!(
            sse_event("update", "a\r\nb\revent: gone"),
            "retry: 2000\nevent: update\ndata: a\ndata: bevent: gone\n\n"
        );
    }
}
