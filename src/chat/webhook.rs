//! `POST /webhooks/twilio`: Twilio's inbound WhatsApp messages.
//!
//! 1. The signature (`X-Twilio-Signature`, see `platform::messaging::twilio`)
//!    is checked over our public URL and the form parameters. Missing or
//!    wrong: 403, nothing stored, `kedai_webhook_rejected_total`.
//! 2. The fields are parsed; a signed request without them is 400.
//! 3. Rate limits (per sender and for everyone, in the cache, so Redis
//!    when configured): over a limit the message is stored but not
//!    answered, and the first one over gets a polite notice.
//! 4. The message is stored and its job queued (`intake.rs`); only then
//!    does Twilio get 200 with empty TwiML. A replayed `MessageSid` is
//!    answered the same way and changes nothing.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::inbound::InboundMessage;
use super::intake::{Admission, Stored};
use crate::app::AppContext;
use crate::platform::messaging::twilio;

/// Where Twilio posts inbound messages.
pub const INBOUND_PATH: &str = "/webhooks/twilio";

pub const EMPTY_TWIML: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(INBOUND_PATH, web::post().to(receive));
}

fn rejected(reason: &'static str, status: StatusCode) -> HttpResponse {
    metrics::counter!("kedai_webhook_rejected_total", "source" => "twilio_inbound", "reason" => reason)
        .increment(1);
    HttpResponse::build(status).json(json!({ "error": reason }))
}

/// The admission of one message under the chat rate limits. A cache that
/// fails lets the message through: answering is better than dropping.
pub async fn admission(ctx: &AppContext, identity: &str) -> Admission {
    let chat = &ctx.settings.chat;
    let sender = ctx
        .cache
        .hit(
            &format!("chat:rate:{identity}"),
            chat.sender_limit,
            chat.rate_window,
        )
        .await;
    let global = ctx
        .cache
        .hit("chat:rate:*", chat.global_limit, chat.rate_window)
        .await;
    let limited = match (sender, global) {
        (Ok(s), Ok(g)) => !s.is_allowed() || !g.is_allowed(),
        (Err(error), _) | (_, Err(error)) => {
            tracing::warn!(error = %error, "rate limiting is unavailable; answering anyway");
            false
        }
    };
    if !limited {
        return Admission::Answer;
    }
    metrics::counter!("kedai_chat_rate_limited_total").increment(1);
    let notice = ctx
        .cache
        .set_if_absent(&format!("chat:notice:{identity}"), b"1", chat.rate_window)
        .await
        .unwrap_or(false);
    Admission::Limited { notice }
}

async fn receive(req: HttpRequest, body: web::Bytes, ctx: web::Data<AppContext>) -> HttpResponse {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let Some(signature) = req
        .headers()
        .get("X-Twilio-Signature")
        .and_then(|v| v.to_str().ok())
    else {
        return rejected("missing_signature", StatusCode::FORBIDDEN);
    };
    let url = crate::notify::routes::signed_url(&ctx, &req);
    if !twilio::verify(&ctx.twilio_tokens, &url, &params, signature) {
        tracing::warn!("rejected an inbound WhatsApp webhook with a bad signature");
        return rejected("invalid_signature", StatusCode::FORBIDDEN);
    }
    let message = match InboundMessage::from_params(&params) {
        Ok(message) => message,
        Err(error) => {
            metrics::counter!("kedai_webhook_rejected_total", "source" => "twilio_inbound", "reason" => "malformed")
                .increment(1);
            return HttpResponse::BadRequest().json(json!({ "error": error.to_string() }));
        }
    };
    let admission = admission(&ctx, message.from.key()).await;
    match ctx.chat.intake().submit(message, admission).await {
        Ok(stored) => {
            let outcome = match stored {
                Stored::New { .. } => "stored",
                Stored::Duplicate => "duplicate",
            };
            metrics::counter!("kedai_webhook_accepted_total", "source" => "twilio_inbound", "outcome" => outcome)
                .increment(1);
            HttpResponse::Ok()
                .content_type("text/xml")
                .body(EMPTY_TWIML)
        }
        Err(error) => {
            tracing::error!(error = %super::redact::redact(&error.to_string()), "an inbound message could not be stored; Twilio will retry");
            HttpResponse::ServiceUnavailable().json(json!({ "error": "temporarily unavailable" }))
        }
    }
}
