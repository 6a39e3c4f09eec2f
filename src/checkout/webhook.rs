//! `POST /webhooks/stripe`: verify the signature on the raw body, then let
//! `orders` apply the event exactly once. Answers JSON; never echoes the
//! body. Stripe retries anything that is not a 2xx, so a database failure
//! answers 500 and the delivery comes again.

use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::app::AppContext;
use crate::orders::{self, EventKey, FulfilOutcome, PaymentConfirmation, Transition};
use crate::platform::payments::signature::{self, DEFAULT_TOLERANCE};
use crate::platform::payments::stripe_event::PaymentEvent;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/webhooks/stripe", web::post().to(receive_stripe_event));
}

fn rejected(reason: &'static str, status: actix_web::http::StatusCode) -> HttpResponse {
    metrics::counter!("kedai_webhook_rejected_total", "source" => "stripe", "reason" => reason)
        .increment(1);
    HttpResponse::build(status).json(json!({ "error": reason }))
}

pub async fn receive_stripe_event(
    req: HttpRequest,
    body: web::Bytes,
    ctx: web::Data<AppContext>,
) -> HttpResponse {
    let header = req
        .headers()
        .get("Stripe-Signature")
        .and_then(|value| value.to_str().ok());
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if let Err(error) = signature::verify(
        header,
        &body,
        &ctx.payments.webhook_secrets(),
        now,
        DEFAULT_TOLERANCE,
    ) {
        tracing::warn!(error = %error, "rejected a Stripe webhook");
        return rejected(
            "invalid_signature",
            actix_web::http::StatusCode::BAD_REQUEST,
        );
    }
    let event = match PaymentEvent::parse(&body) {
        Ok(event) => event,
        Err(error) => {
            tracing::warn!(error = %error, "a signed Stripe webhook did not parse");
            return rejected("malformed_event", actix_web::http::StatusCode::BAD_REQUEST);
        }
    };
    match apply(&ctx, &event).await {
        Ok(outcome) => {
            metrics::counter!("kedai_webhook_accepted_total", "source" => "stripe").increment(1);
            tracing::info!(event_id = event.event_id(), outcome, "Stripe event handled");
            HttpResponse::Ok().json(json!({ "received": true, "outcome": outcome }))
        }
        Err(error) => {
            tracing::error!(event_id = event.event_id(), error = %error, "Stripe event failed; Stripe will retry");
            HttpResponse::InternalServerError().json(json!({ "error": "temporarily_unavailable" }))
        }
    }
}

/// Applies one verified event; returns a short word for logs and the response.
async fn apply(ctx: &AppContext, event: &PaymentEvent) -> Result<&'static str, sea_orm::DbErr> {
    let key = |event_id: &str| EventKey {
        source: "stripe".into(),
        event_id: event_id.into(),
    };
    let transition = |t: Transition| match t {
        Transition::Applied => "applied",
        Transition::DuplicateEvent => "duplicate",
        Transition::NotApplicable => "not_applicable",
    };
    Ok(match event {
        PaymentEvent::SessionCompleted { paid: false, .. } => "awaiting_async_payment",
        PaymentEvent::SessionCompleted {
            event_id,
            session,
            paid: true,
        }
        | PaymentEvent::AsyncPaymentSucceeded { event_id, session } => {
            let payment = PaymentConfirmation {
                source: "stripe".into(),
                event_id: Some(event_id.clone()),
                session_id: session.id.clone(),
                payment_intent_id: session.payment_intent.clone(),
            };
            match orders::fulfil(&ctx.writer, &payment).await? {
                FulfilOutcome::Paid {
                    needs_attention: false,
                    ..
                } => "paid",
                FulfilOutcome::Paid {
                    needs_attention: true,
                    ..
                } => "paid_needs_attention",
                FulfilOutcome::DuplicateEvent => "duplicate",
                FulfilOutcome::AlreadyPaid { .. } => "already_paid",
                FulfilOutcome::UnknownSession => {
                    tracing::warn!(session_id = %session.id, "payment for an unknown checkout session");
                    "unknown_session"
                }
                FulfilOutcome::Ignored { .. } => "ignored",
            }
        }
        PaymentEvent::AsyncPaymentFailed { event_id, session } => transition(
            orders::mark_payment_failed(&ctx.writer, Some(&key(event_id)), &session.id).await?,
        ),
        PaymentEvent::SessionExpired { event_id, session } => transition(
            orders::cancel_unpaid(
                &ctx.writer,
                Some(&key(event_id)),
                &session.id,
                "checkout session expired",
            )
            .await?,
        ),
        PaymentEvent::ChargeRefunded { fully: false, .. } => "partial_refund_ignored",
        PaymentEvent::ChargeRefunded {
            event_id,
            payment_intent,
            fully: true,
        } => transition(
            orders::refund(
                &ctx.writer,
                Some(&key(event_id)),
                payment_intent,
                ctx.payments.restock_on_refund(),
            )
            .await?,
        ),
        PaymentEvent::Other { .. } => "ignored",
    })
}
