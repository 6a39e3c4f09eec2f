//! `POST /webhooks/carrier`: the HTTP carrier's status notices. Verified on
//! the raw body (HMAC-SHA256 with a timestamp, `carrier.webhook_secret`),
//! deduplicated by the notice id, applied forward only.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::{MarkOutcome, ShipmentRef, ShipmentStatus, mark};
use crate::app::AppContext;
use crate::orders::EventKey;
use crate::platform::carrier::{SIGNATURE_HEADER, parse_status_notice};
use crate::platform::payments::signature::{self, DEFAULT_TOLERANCE};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/carrier", web::post().to(receive_carrier_notice));
}

fn rejected(reason: &'static str, status: StatusCode) -> HttpResponse {
    metrics::counter!("kedai_webhook_rejected_total", "source" => "carrier", "reason" => reason)
        .increment(1);
    HttpResponse::build(status).json(json!({ "error": reason }))
}

pub async fn receive_carrier_notice(
    req: HttpRequest,
    body: web::Bytes,
    ctx: web::Data<AppContext>,
) -> HttpResponse {
    let secret = &ctx.settings.carrier.webhook_secret;
    if !crate::config::is_set(secret) {
        return rejected("carrier_webhook_disabled", StatusCode::UNAUTHORIZED);
    }
    let header = req
        .headers()
        .get(SIGNATURE_HEADER)
        .and_then(|value| value.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(error) = signature::verify(header, &body, &[secret], now, DEFAULT_TOLERANCE) {
        tracing::warn!(error = %error, "rejected a carrier webhook");
        return rejected("invalid_signature", StatusCode::UNAUTHORIZED);
    }
    let notice = match parse_status_notice(&body) {
        Ok(notice) => notice,
        Err(reason) => {
            tracing::warn!(reason = %reason, "a signed carrier webhook did not parse");
            return rejected("malformed_notice", StatusCode::BAD_REQUEST);
        }
    };
    let Some(status) = ShipmentStatus::parse(&notice.status) else {
        return rejected("unknown_status", StatusCode::BAD_REQUEST);
    };
    let which = match (&notice.reference, &notice.tracking_number) {
        (Some(reference), _) => ShipmentRef::Order(reference),
        (None, Some(number)) => ShipmentRef::Tracking(number),
        (None, None) => return rejected("malformed_notice", StatusCode::BAD_REQUEST),
    };
    let key = EventKey {
        source: "carrier".into(),
        event_id: notice.id.clone(),
    };
    match mark(
        &ctx.writer,
        which,
        status,
        notice.tracking_number.as_deref(),
        notice.detail.as_deref(),
        Some(&key),
    )
    .await
    {
        Ok(MarkOutcome::NoShipment) => {
            // Booking may still be in flight; a non-2xx makes the carrier retry.
            tracing::info!(notice_id = %notice.id, "carrier notice for a shipment we do not have (yet)");
            rejected("unknown_shipment", StatusCode::NOT_FOUND)
        }
        Ok(outcome) => {
            metrics::counter!("kedai_webhook_accepted_total", "source" => "carrier").increment(1);
            let word = match outcome {
                MarkOutcome::Changed { .. } => "applied",
                MarkOutcome::Unchanged { .. } => "stale",
                MarkOutcome::Duplicate => "duplicate",
                MarkOutcome::NoShipment => "unknown_shipment",
            };
            HttpResponse::Ok().json(json!({ "received": true, "outcome": word }))
        }
        Err(error) => {
            tracing::error!(notice_id = %notice.id, error = %error, "carrier notice failed; the carrier will retry");
            HttpResponse::InternalServerError().json(json!({ "error": "temporarily_unavailable" }))
        }
    }
}
