//! `POST /webhooks/twilio/status`: Twilio's delivery status callbacks for
//! messages we sent. Signed like every Twilio webhook (see
//! `platform::messaging::twilio`); applied forward only, so callbacks that
//! arrive out of order never move a message backwards.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use crate::app::AppContext;
use crate::platform::messaging::{self, StatusUpdate, twilio};

/// Where Twilio posts delivery statuses.
pub const STATUS_PATH: &str = "/webhooks/twilio/status";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(STATUS_PATH, web::post().to(receive_status_callback));
}

/// The `StatusCallback` URL given to Twilio with every message.
pub fn status_callback_url(public_url: &url::Url) -> String {
    format!("{}{STATUS_PATH}", public_url.as_str().trim_end_matches('/'))
}

fn rejected(reason: &'static str, status: StatusCode) -> HttpResponse {
    metrics::counter!("kedai_webhook_rejected_total", "source" => "twilio_status", "reason" => reason)
        .increment(1);
    HttpResponse::build(status).json(json!({ "error": reason }))
}

/// The URL Twilio signed: our public URL with the path and query we got.
pub fn signed_url(ctx: &AppContext, req: &HttpRequest) -> String {
    let base = ctx
        .settings
        .server
        .public_url
        .as_str()
        .trim_end_matches('/');
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    format!("{base}{path_and_query}")
}

pub async fn receive_status_callback(
    req: HttpRequest,
    body: web::Bytes,
    ctx: web::Data<AppContext>,
) -> HttpResponse {
    let params: Vec<(String, String)> = url::form_urlencoded::parse(&body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let signature = req
        .headers()
        .get("X-Twilio-Signature")
        .and_then(|v| v.to_str().ok());
    let Some(signature) = signature else {
        return rejected("missing_signature", StatusCode::FORBIDDEN);
    };
    if !twilio::verify(
        &ctx.twilio_tokens,
        &signed_url(&ctx, &req),
        &params,
        signature,
    ) {
        tracing::warn!("rejected a Twilio status callback with a bad signature");
        return rejected("invalid_signature", StatusCode::FORBIDDEN);
    }
    let field = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    };
    let (Some(sid), Some(status)) = (
        field("MessageSid"),
        field("MessageStatus").or(field("SmsStatus")),
    ) else {
        return rejected("missing_fields", StatusCode::BAD_REQUEST);
    };
    let error_code = field("ErrorCode");
    let error_message = field("ErrorMessage");
    match messaging::apply_status(&ctx.writer, sid, status, error_code, error_message).await {
        Ok(update) => {
            metrics::counter!("kedai_webhook_accepted_total", "source" => "twilio_status")
                .increment(1);
            if update == StatusUpdate::UnknownMessage {
                tracing::info!(status, "status callback for a message we do not know");
            }
            HttpResponse::Ok()
                .content_type("text/xml")
                .body("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response></Response>")
        }
        Err(error) => {
            tracing::error!(error = %error, "status callback failed; Twilio will retry");
            HttpResponse::InternalServerError().finish()
        }
    }
}
