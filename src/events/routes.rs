//! The operations JSON API for events, deliveries, dead letters and
//! replays, plus analytics, shipments and the message outbox (what the
//! admin UI and scripts use). Every endpoint is behind `ops::api::authorize`.
//!
//! | method | path | what |
//! |---|---|---|
//! | GET | `/api/ops/events?type=&from=&to=&limit=` | newest events with their deliveries |
//! | GET | `/api/ops/events/{event_id}` | one event |
//! | GET | `/api/ops/deliveries?handler=&status=&limit=` | deliveries (`status=dead`: dead letters) |
//! | GET | `/api/ops/handlers` | per-handler counts and lag |
//! | POST | `/api/ops/deliveries/{id}/replay` | replay one dead letter |
//! | POST | `/api/ops/handlers/{handler}/replay-dead` | replay a handler's dead letters |
//! | POST | `/api/ops/handlers/{handler}/replay` `{"from","to"}` | replay archived events to a handler |
//! | GET | `/api/ops/analytics/daily?from=&to=` | daily figures (shop-local dates) |
//! | POST | `/api/ops/shipments/{order_id}/status` `{"status","tracking_number"?,"detail"?}` | move a shipment (manual carrier) |
//! | GET | `/api/ops/messages?to=&limit=` | WhatsApp messages with delivery status |

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;
use serde_json::json;

use super::{DeliveryFilter, DeliveryStatus, EventFilter, ReplayError};
use crate::app::AppContext;
use crate::logistics::{self, MarkOutcome, ShipmentRef, ShipmentStatus};
use crate::ops::api::{authorize, parse_date, parse_time, problem};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::scope("/api/ops")
            .route("/events", web::get().to(list_events))
            .route("/events/{event_id}", web::get().to(show_event))
            .route("/deliveries", web::get().to(list_deliveries))
            .route("/deliveries/{id}/replay", web::post().to(replay_delivery))
            .route("/handlers", web::get().to(list_handlers))
            .route(
                "/handlers/{handler}/replay-dead",
                web::post().to(replay_dead_letters),
            )
            .route("/handlers/{handler}/replay", web::post().to(replay_range))
            .route("/analytics/daily", web::get().to(analytics_daily))
            .route(
                "/shipments/{order_id}/status",
                web::post().to(mark_shipment),
            )
            .route("/messages", web::get().to(list_messages)),
    );
}

fn internal(error: impl std::fmt::Display) -> HttpResponse {
    tracing::error!(error = %error, "operations API failed");
    problem(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
}

macro_rules! guard {
    ($req:expr, $ctx:expr) => {
        if let Err(response) = authorize(&$req, &$ctx) {
            return *response;
        }
    };
}

macro_rules! attempt {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(response) => return *response,
        }
    };
}

#[derive(Deserialize)]
pub struct EventsQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<u64>,
}

pub async fn list_events(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<EventsQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    let filter = EventFilter {
        event_type: query.event_type.clone(),
        from: match &query.from {
            Some(raw) => Some(attempt!(parse_time("from", raw))),
            None => None,
        },
        to: match &query.to {
            Some(raw) => Some(attempt!(parse_time("to", raw))),
            None => None,
        },
        limit: query.limit.unwrap_or(50),
    };
    match super::list_events(&ctx.db, &filter).await {
        Ok(events) => HttpResponse::Ok().json(json!({ "events": events })),
        Err(error) => internal(error),
    }
}

pub async fn show_event(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<String>,
) -> HttpResponse {
    guard!(req, ctx);
    match super::find_event(&ctx.db, &path).await {
        Ok(Some(event)) => HttpResponse::Ok().json(event),
        Ok(None) => problem(StatusCode::NOT_FOUND, "no such event"),
        Err(error) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct DeliveriesQuery {
    handler: Option<String>,
    status: Option<String>,
    limit: Option<u64>,
}

pub async fn list_deliveries(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<DeliveriesQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    let status = match query.status.as_deref() {
        None => None,
        Some(raw) => match DeliveryStatus::parse(raw) {
            Some(status) => Some(status),
            None => {
                return problem(
                    StatusCode::BAD_REQUEST,
                    "status must be pending, running, done or dead",
                );
            }
        },
    };
    let filter = DeliveryFilter {
        handler: query.handler.clone(),
        status,
        limit: query.limit.unwrap_or(50),
    };
    match super::list_deliveries(&ctx.db, &filter).await {
        Ok(deliveries) => HttpResponse::Ok().json(json!({ "deliveries": deliveries })),
        Err(error) => internal(error),
    }
}

pub async fn list_handlers(req: HttpRequest, ctx: web::Data<AppContext>) -> HttpResponse {
    guard!(req, ctx);
    match super::delivery_stats(&ctx.db, &ctx.bus.handler_names()).await {
        Ok(stats) => HttpResponse::Ok().json(json!({ "handlers": stats })),
        Err(error) => internal(error),
    }
}

pub async fn replay_delivery(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<i64>,
) -> HttpResponse {
    guard!(req, ctx);
    match super::replay_delivery(&ctx.writer, *path).await {
        Ok(true) => HttpResponse::Ok().json(json!({ "replayed": 1 })),
        Ok(false) => problem(StatusCode::NOT_FOUND, "no dead letter with that id"),
        Err(error) => internal(error),
    }
}

pub async fn replay_dead_letters(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<String>,
) -> HttpResponse {
    guard!(req, ctx);
    if ctx.bus.handler(&path).is_none() {
        return problem(StatusCode::NOT_FOUND, "no such handler");
    }
    match super::replay_dead(&ctx.writer, &path).await {
        Ok(count) => HttpResponse::Ok().json(json!({ "replayed": count })),
        Err(error) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct RangeBody {
    from: String,
    to: String,
}

pub async fn replay_range(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<String>,
    body: web::Json<RangeBody>,
) -> HttpResponse {
    guard!(req, ctx);
    let from = attempt!(parse_time("from", &body.from));
    let to = attempt!(parse_time("to", &body.to));
    match super::replay_range(&ctx.writer, &ctx.bus, &path, from, to).await {
        Ok(count) => HttpResponse::Ok().json(json!({ "scheduled": count })),
        Err(ReplayError::UnknownHandler(_)) => problem(StatusCode::NOT_FOUND, "no such handler"),
        Err(ReplayError::BadRange) => problem(StatusCode::BAD_REQUEST, "from must be before to"),
        Err(ReplayError::Database(error)) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct DaysQuery {
    from: Option<String>,
    to: Option<String>,
}

pub async fn analytics_daily(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<DaysQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    let today = crate::analytics::today(ctx.settings.shop.offset());
    let to = match &query.to {
        Some(raw) => attempt!(parse_date("to", raw)),
        None => today,
    };
    let from = match &query.from {
        Some(raw) => attempt!(parse_date("from", raw)),
        None => to - time::Duration::days(29),
    };
    if from > to || (to - from).whole_days() > 365 {
        return problem(
            StatusCode::BAD_REQUEST,
            "from must be on or before to, at most 366 days apart",
        );
    }
    match crate::analytics::daily(&ctx.db, from, to).await {
        Ok(days) => HttpResponse::Ok().json(json!({ "days": days })),
        Err(error) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct ShipmentBody {
    status: String,
    tracking_number: Option<String>,
    detail: Option<String>,
}

pub async fn mark_shipment(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<String>,
    body: web::Json<ShipmentBody>,
) -> HttpResponse {
    guard!(req, ctx);
    let Some(status) = ShipmentStatus::parse(&body.status) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "status must be in_transit (shipped), out_for_delivery, delivered or exception",
        );
    };
    match logistics::mark(
        &ctx.writer,
        ShipmentRef::Order(&path),
        status,
        body.tracking_number.as_deref(),
        body.detail.as_deref(),
        None,
    )
    .await
    {
        Ok(MarkOutcome::Changed { from, to }) => {
            HttpResponse::Ok().json(json!({ "changed": true, "from": from, "to": to }))
        }
        Ok(MarkOutcome::Unchanged { current }) => HttpResponse::Conflict().json(json!({
            "changed": false, "current": current,
            "error": format!("a shipment that is {current} cannot become {status}")
        })),
        Ok(MarkOutcome::NoShipment | MarkOutcome::Duplicate) => {
            problem(StatusCode::NOT_FOUND, "no shipment for that order")
        }
        Err(error) => internal(error),
    }
}

#[derive(Deserialize)]
pub struct MessagesQuery {
    to: Option<String>,
    limit: Option<u64>,
}

pub async fn list_messages(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<MessagesQuery>,
) -> HttpResponse {
    guard!(req, ctx);
    let to = query
        .to
        .as_deref()
        .map(|raw| crate::customers::normalise_phone(raw).unwrap_or_else(|| raw.to_string()));
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    match crate::platform::messaging::list(&ctx.db, to.as_deref(), limit).await {
        Ok(messages) => HttpResponse::Ok().json(json!({ "messages": messages })),
        Err(error) => internal(error),
    }
}
