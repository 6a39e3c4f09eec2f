//! The back-office's operations pages: the event bus (recent events,
//! deliveries per handler, dead letters and their replay) and the WhatsApp
//! message outbox. They are clients of `events` and `platform::messaging`
//! exactly like the `kedai events …` and `kedai messages list` commands.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::Permission;
use super::routes::{AdminLayout, admin, layout, page, require, when};
use crate::app::AppContext;
use crate::events::{DeliveryFilter, DeliveryStatus, EventFilter, ReplayError};
use crate::web::error::AppError;
use crate::web::http::see_other;
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/events", web::get().to(show_events))
        .route("/admin/events/replay", web::post().to(replay_events))
        .route("/admin/messages", web::get().to(show_messages));
}

/// Rows per listing.
const LISTED: u64 = 100;

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}

// ---------------------------------------------------------------------------
// Events, deliveries, dead letters.

struct HandlerRow {
    handler: String,
    pending: i64,
    running: i64,
    done: i64,
    dead: i64,
    oldest_pending: String,
}

struct EventRow {
    id: String,
    event_type: String,
    occurred: String,
    /// "handler: status" per delivery.
    deliveries: String,
}

struct DeadRow {
    id: i64,
    handler: String,
    event_type: String,
    event_id: String,
    attempts: i32,
    error: String,
    updated: String,
}

#[derive(Template)]
#[template(path = "admin/events.html")]
struct EventsPage<'a> {
    layout: AdminLayout<'a>,
    handlers: Vec<HandlerRow>,
    events: Vec<EventRow>,
    dead: Vec<DeadRow>,
    event_type: String,
    can_manage: bool,
    notice: Option<String>,
    /// Defaults for the range form: the last 24 hours, UTC.
    range_from: String,
    range_to: String,
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    notice: Option<String>,
}

/// The form value of a `datetime-local` input, in UTC.
fn local_input(at: OffsetDateTime) -> String {
    at.to_offset(time::UtcOffset::UTC)
        .format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]"
        ))
        .unwrap_or_default()
}

/// Reads a `datetime-local` value (taken as UTC) or an RFC 3339 time.
fn parse_time(raw: &str) -> Option<OffsetDateTime> {
    let raw = raw.trim();
    if let Ok(at) = OffsetDateTime::parse(raw, &Rfc3339) {
        return Some(at);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(raw, format)
        .ok()
        .map(|at| at.assume_utc())
}

/// What a replay did, as the page says it.
fn notice_text(code: &str) -> Option<String> {
    let (kind, count) = code.split_once(':').unwrap_or((code, ""));
    Some(match kind {
        "replayed" => format!("Replayed {count} deliver{}.", plural(count)),
        "none" => "Nothing to replay: no such dead letter.".into(),
        "bad_range" => "The time range is empty, reversed or not a time.".into(),
        "unknown_handler" => "There is no handler of that name.".into(),
        _ => return None,
    })
}

fn plural(count: &str) -> &'static str {
    if count == "1" { "y" } else { "ies" }
}

async fn show_events(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let handlers = crate::events::delivery_stats(&ctx.db, &ctx.bus.handler_names())
        .await
        .map_err(internal)?
        .into_iter()
        .map(|h| HandlerRow {
            handler: h.handler,
            pending: h.pending,
            running: h.running,
            done: h.done,
            dead: h.dead,
            oldest_pending: h.oldest_pending_at.map(when).unwrap_or_default(),
        })
        .collect();
    let event_type = query.event_type.trim().to_string();
    let events = crate::events::list_events(
        &ctx.db,
        &EventFilter {
            event_type: (!event_type.is_empty()).then(|| event_type.clone()),
            limit: LISTED,
            ..Default::default()
        },
    )
    .await
    .map_err(internal)?
    .into_iter()
    .map(|view| EventRow {
        deliveries: view
            .deliveries
            .iter()
            .map(|d| format!("{}: {}", d.handler, d.status))
            .collect::<Vec<_>>()
            .join(", "),
        id: view.event.id,
        event_type: view.event.event_type,
        occurred: when(view.event.occurred_at),
    })
    .collect();
    let dead = crate::events::list_deliveries(
        &ctx.db,
        &DeliveryFilter {
            handler: None,
            status: Some(DeliveryStatus::Dead),
            limit: LISTED,
        },
    )
    .await
    .map_err(internal)?
    .into_iter()
    .map(|d| DeadRow {
        id: d.id,
        handler: d.handler,
        event_type: d.event_type.unwrap_or_default(),
        event_id: d.event_id,
        attempts: d.attempts,
        error: d.last_error.unwrap_or_default(),
        updated: when(d.updated_at),
    })
    .collect();
    let visitor = Visitor::of(&req);
    let now = OffsetDateTime::now_utc();
    let template = EventsPage {
        layout: layout(&ctx, &visitor, "Events", Some(&admin), "events"),
        handlers,
        events,
        dead,
        event_type,
        can_manage: admin.role.allows(Permission::Manage),
        notice: query.notice.as_deref().and_then(notice_text),
        range_from: local_input(now - time::Duration::days(1)),
        range_to: local_input(now),
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct ReplayForm {
    #[serde(default)]
    csrf_token: String,
    /// `one` (a dead letter by id), `handler` (all of a handler's dead
    /// letters) or `range` (archived events in a time range, to a handler).
    #[serde(default)]
    what: String,
    #[serde(default)]
    id: Option<i64>,
    #[serde(default)]
    handler: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
}

async fn replay_events(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<ReplayForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let handler = form.handler.trim();
    let (replayed, target) = match form.what.as_str() {
        "one" => {
            let id = form.id.ok_or(AppError::NotFound)?;
            let done = crate::events::replay_delivery(&ctx.writer, id)
                .await
                .map_err(internal)?;
            (u64::from(done), format!("delivery:{id}"))
        }
        "handler" => {
            if ctx.bus.handler(handler).is_none() {
                return Ok(see_other("/admin/events?notice=unknown_handler"));
            }
            let count = crate::events::replay_dead(&ctx.writer, handler)
                .await
                .map_err(internal)?;
            (count, format!("handler:{handler}"))
        }
        "range" => {
            let (Some(from), Some(to)) = (parse_time(&form.from), parse_time(&form.to)) else {
                return Ok(see_other("/admin/events?notice=bad_range"));
            };
            match crate::events::replay_range(&ctx.writer, &ctx.bus, handler, from, to).await {
                Ok(count) => (
                    count,
                    format!(
                        "handler:{handler}:{}..{}",
                        from.format(&Rfc3339).unwrap_or_default(),
                        to.format(&Rfc3339).unwrap_or_default()
                    ),
                ),
                Err(ReplayError::BadRange) => {
                    return Ok(see_other("/admin/events?notice=bad_range"));
                }
                Err(ReplayError::UnknownHandler(_)) => {
                    return Ok(see_other("/admin/events?notice=unknown_handler"));
                }
                Err(ReplayError::Database(error)) => return Err(internal(error)),
            }
        }
        _ => return Err(AppError::NotFound),
    };
    if replayed == 0 && form.what == "one" {
        return Ok(see_other("/admin/events?notice=none"));
    }
    super::record(
        &ctx.writer,
        &admin,
        &format!("events_replay_{}", form.what),
        &target,
        None,
        Some(json!({ "replayed": replayed })),
    )
    .await
    .map_err(internal)?;
    Ok(see_other(format!(
        "/admin/events?notice=replayed:{replayed}"
    )))
}

// ---------------------------------------------------------------------------
// The WhatsApp message outbox.

struct MessageRow {
    at: String,
    recipient: String,
    kind: String,
    status: String,
    body: String,
    problem: String,
}

#[derive(Template)]
#[template(path = "admin/messages.html")]
struct MessagesPage<'a> {
    layout: AdminLayout<'a>,
    rows: Vec<MessageRow>,
    to: String,
}

#[derive(Debug, Deserialize)]
struct MessagesQuery {
    #[serde(default)]
    to: String,
}

async fn show_messages(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<MessagesQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let to = query.to.trim();
    // A number as a shopper types it ("+60 12-345 6789") finds its messages.
    let recipient = (!to.is_empty())
        .then(|| crate::customers::normalise_phone(to).unwrap_or_else(|| to.to_string()));
    let rows = crate::platform::messaging::list(&ctx.db, recipient.as_deref(), LISTED)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|m| MessageRow {
            at: when(m.created_at),
            recipient: m.recipient,
            kind: m.kind,
            status: m.status,
            body: m.body,
            problem: match (m.error_code, m.error_message) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code,
                (None, Some(message)) => message,
                (None, None) => String::new(),
            },
        })
        .collect();
    let visitor = Visitor::of(&req);
    let template = MessagesPage {
        layout: layout(&ctx, &visitor, "Messages", Some(&admin), "messages"),
        rows,
        to: to.to_string(),
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_times_are_read_as_utc_or_rfc3339() {
        let at = parse_time("2026-12-01T08:30").unwrap();
        assert_eq!(at, time::macros::datetime!(2026-12-01 08:30 UTC));
        let at = parse_time("2026-12-01T08:30:00+08:00").unwrap();
        assert_eq!(at, time::macros::datetime!(2026-12-01 00:30 UTC));
        assert_eq!(parse_time("yesterday"), None);
        assert_eq!(local_input(at), "2026-12-01T00:30");
    }

    #[test]
    fn notices_say_what_a_replay_did() {
        assert_eq!(notice_text("replayed:1").unwrap(), "Replayed 1 delivery.");
        assert_eq!(notice_text("replayed:3").unwrap(), "Replayed 3 deliveries.");
        assert!(notice_text("<script>").is_none());
    }
}
