//! Notifications: WhatsApp messages to buyers who asked for them, when an
//! order is paid and at every shipment status change.
//!
//! The [`Notifications`] handler's rule selects only events whose payload
//! says `whatsapp_opt_in: true`, so other orders never get a delivery. For
//! the rest: one message per (order, status), ever — the message's
//! idempotency key is `order:<id>:<status>` in the `messages` table, so a
//! redelivered or replayed event finds it and sends nothing. A number that
//! opted out gets nothing. In the shop's quiet hours, proactive messages
//! wait (the delivery is deferred to the end of the quiet hours, without
//! spending a retry); an order confirmation sent while the shopper has just
//! paid is not proactive and goes at once. Template or free text is decided
//! by the messaging service from the 24-hour window.

pub mod routes;

use std::time::Duration;

use serde_json::json;
use time::{OffsetDateTime, Time, UtcOffset};

use crate::events::{Event, Handler, HandlerError, types};
use crate::platform::messaging::{Messaging, Outgoing, SendError, TransportError};
use crate::web::visitor::OrderLinks;

/// An order confirmation this fresh is expected by a shopper at the screen,
/// not an unprompted message: quiet hours do not hold it back.
const FRESH_CONFIRMATION: Duration = Duration::from_secs(15 * 60);

pub struct Notifications {
    messaging: Messaging,
    links: OrderLinks,
    public_url: String,
    quiet_hours: Option<(Time, Time)>,
    offset: UtcOffset,
}

impl Notifications {
    pub fn new(
        messaging: Messaging,
        links: OrderLinks,
        public_url: &str,
        quiet_hours: Option<(Time, Time)>,
        offset: UtcOffset,
    ) -> Self {
        Notifications {
            messaging,
            links,
            public_url: public_url.trim_end_matches('/').to_string(),
            quiet_hours,
            offset,
        }
    }
}

/// The end of the quiet hours that `now` falls in, if it falls in them.
pub fn quiet_until(
    now: OffsetDateTime,
    quiet: Option<(Time, Time)>,
    offset: UtcOffset,
) -> Option<OffsetDateTime> {
    let (start, end) = quiet?;
    let local = now.to_offset(offset);
    let t = local.time();
    let inside = if start < end {
        t >= start && t < end
    } else {
        t >= start || t < end
    };
    if !inside {
        return None;
    }
    let mut until = local.replace_time(end);
    if until <= local {
        until += time::Duration::DAY;
    }
    Some(until.to_offset(UtcOffset::UTC))
}

/// What to say, as free text and as template variables
/// (1 = name, 2 = order number, 3 = detail).
struct Message {
    kind: String,
    key_status: String,
    text: String,
    variables: Vec<String>,
}

/// The order number the order page shows: the id's first eight characters.
fn short_order_number(public_id: &str) -> String {
    public_id.chars().take(8).collect()
}

fn money(currency: &str, minor: i64) -> String {
    format!("{currency} {}.{:02}", minor / 100, (minor % 100).abs())
}

impl Notifications {
    fn compose(&self, event: &Event, public_id: &str) -> Option<Message> {
        let name = event
            .text("name")
            .map(|n| n.split_whitespace().next().unwrap_or(n).to_string())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "there".into());
        let number = short_order_number(public_id);
        let link = format!("{}{}", self.public_url, self.links.url(public_id));
        match event.event_type.as_str() {
            types::ORDER_PAID => {
                let currency = event.text("currency").unwrap_or("MYR");
                let total = event.payload["total_minor"].as_i64().unwrap_or(0);
                let total = money(currency, total);
                Some(Message {
                    kind: "order_paid".into(),
                    key_status: "paid".into(),
                    text: format!(
                        "Hi {name}, thank you for your order {number} at Kedai! We received your payment of {total}. We'll message you here when it ships. Your order: {link}"
                    ),
                    variables: vec![name, number, total],
                })
            }
            types::SHIPMENT_STATUS_CHANGED => {
                let status = event.text("status")?;
                let tracking = event
                    .text("tracking_number")
                    .map(|t| format!(" Tracking number: {t}."))
                    .unwrap_or_default();
                let detail = event.text("detail").unwrap_or("").to_string();
                let (text, variable) = match status {
                    "in_transit" => (
                        format!(
                            "Good news, {name}: your Kedai order {number} is on its way.{tracking} Follow it here: {link}"
                        ),
                        event.text("tracking_number").unwrap_or("").to_string(),
                    ),
                    "out_for_delivery" => (
                        format!(
                            "{name}, your Kedai order {number} is out for delivery today.{tracking}"
                        ),
                        event.text("tracking_number").unwrap_or("").to_string(),
                    ),
                    "delivered" => (
                        format!(
                            "Your Kedai order {number} has been delivered. Enjoy, {name}! If anything is wrong, just reply to this message."
                        ),
                        String::new(),
                    ),
                    "exception" => (
                        format!(
                            "{name}, there is a problem delivering your Kedai order {number}{}. We are on it and will update you here.",
                            if detail.is_empty() {
                                String::new()
                            } else {
                                format!(": {detail}")
                            }
                        ),
                        detail.clone(),
                    ),
                    _ => return None,
                };
                Some(Message {
                    kind: format!("shipment_{status}"),
                    key_status: status.to_string(),
                    text,
                    variables: vec![name, number, variable],
                })
            }
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl Handler for Notifications {
    fn name(&self) -> &'static str {
        "notify"
    }

    fn rule(&self) -> serde_json::Value {
        json!({
            "type": [types::ORDER_PAID, types::SHIPMENT_STATUS_CHANGED],
            "payload": {
                "whatsapp_opt_in": [true],
                "phone": [{ "prefix": "+" }],
            }
        })
    }

    /// One order's messages go out in the order their events happened.
    fn ordering_key(&self, event: &Event) -> Option<String> {
        event.text("order_id").map(str::to_string)
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let (Some(public_id), Some(phone)) = (event.text("order_id"), event.text("phone")) else {
            return Err(HandlerError::Permanent(
                "the event has no order_id or phone".into(),
            ));
        };
        let Some(message) = self.compose(event, public_id) else {
            // A status with nothing to tell the shopper (e.g. pending).
            return Ok(());
        };
        let now = OffsetDateTime::now_utc();
        let fresh_confirmation = event.event_type == types::ORDER_PAID
            && (now - event.occurred_at)
                < time::Duration::try_from(FRESH_CONFIRMATION).unwrap_or(time::Duration::ZERO);
        if !fresh_confirmation && let Some(until) = quiet_until(now, self.quiet_hours, self.offset)
        {
            return Err(HandlerError::Defer {
                until,
                reason: "quiet hours".into(),
            });
        }
        // One message per (order, status); a status reached again after a
        // delivery problem (out for delivery a second time) is news again,
        // keyed by its event so a redelivery still sends it once.
        let key = if event.text("previous_status") == Some("exception") {
            format!("order:{public_id}:{}:{}", message.key_status, event.id)
        } else {
            format!("order:{public_id}:{}", message.key_status)
        };
        let outgoing = Outgoing {
            idempotency_key: Some(key),
            kind: message.kind,
            recipient: phone.to_string(),
            text: message.text,
            variables: message.variables,
        };
        send_result(self.messaging.send(outgoing).await)
    }
}

/// Messages a shopper asked for themselves (a password-reset link): sent
/// at once, whatever the hour, one per request.
pub struct AccountMessages {
    messaging: Messaging,
}

impl AccountMessages {
    pub fn new(messaging: Messaging) -> Self {
        AccountMessages { messaging }
    }
}

#[async_trait::async_trait]
impl Handler for AccountMessages {
    fn name(&self) -> &'static str {
        "account_messages"
    }

    fn rule(&self) -> serde_json::Value {
        json!({ "type": [types::CUSTOMER_PASSWORD_RESET_REQUESTED] })
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let (Some(phone), Some(text), Some(link)) =
            (event.text("phone"), event.text("text"), event.text("link"))
        else {
            return Err(HandlerError::Permanent(
                "the event has no phone, text or link".into(),
            ));
        };
        let outgoing = Outgoing {
            idempotency_key: Some(format!("reset:{}", event.id)),
            kind: "password_reset".into(),
            recipient: phone.to_string(),
            text: text.to_string(),
            variables: vec![link.to_string()],
        };
        send_result(self.messaging.send(outgoing).await)
    }
}

/// What a send's outcome means for the delivery.
fn send_result(
    result: Result<crate::platform::messaging::Sent, SendError>,
) -> Result<(), HandlerError> {
    match result {
        Ok(_) => Ok(()),
        Err(SendError::OptedOut) => {
            tracing::info!("no message: the number opted out");
            Ok(())
        }
        Err(SendError::NoTemplate(kind)) => Err(HandlerError::Permanent(format!(
            "no approved template for {kind} (set notify.template_{kind}) and the session window is closed"
        ))),
        Err(SendError::Transport(TransportError::Throttled { retry_after })) => {
            Err(HandlerError::Retry {
                reason: "Twilio throttled the message".into(),
                retry_after,
            })
        }
        Err(SendError::Transport(TransportError::Unavailable(reason))) => {
            Err(HandlerError::retry(reason))
        }
        Err(SendError::Transport(error)) => Err(HandlerError::Permanent(error.to_string())),
        Err(SendError::Database(error)) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{datetime, offset, time};

    const QUIET: Option<(Time, Time)> = Some((time!(22:00), time!(08:00)));

    #[test]
    fn quiet_hours_wrap_midnight_in_shop_time() {
        let myt = offset!(+8);
        // 23:30 in Kuala Lumpur: quiet until 08:00 the next morning.
        let late = datetime!(2026-11-24 15:30 UTC);
        assert_eq!(
            quiet_until(late, QUIET, myt),
            Some(datetime!(2026-11-25 00:00 UTC))
        );
        // 06:00 local: quiet until 08:00 the same morning.
        let early = datetime!(2026-11-24 22:00 UTC);
        assert_eq!(
            quiet_until(early, QUIET, myt),
            Some(datetime!(2026-11-25 00:00 UTC))
        );
        // 12:00 local: not quiet.
        assert_eq!(
            quiet_until(datetime!(2026-11-24 04:00 UTC), QUIET, myt),
            None
        );
        // The end is exclusive, the start inclusive.
        assert_eq!(
            quiet_until(datetime!(2026-11-24 00:00 UTC), QUIET, myt),
            None
        );
        assert!(quiet_until(datetime!(2026-11-24 14:00 UTC), QUIET, myt).is_some());
        assert_eq!(quiet_until(late, None, myt), None);
    }

    #[test]
    fn quiet_hours_within_one_day() {
        let window = Some((time!(13:00), time!(14:00)));
        assert_eq!(
            quiet_until(datetime!(2026-11-24 13:15 UTC), window, UtcOffset::UTC),
            Some(datetime!(2026-11-24 14:00 UTC))
        );
        assert_eq!(
            quiet_until(datetime!(2026-11-24 14:00 UTC), window, UtcOffset::UTC),
            None
        );
    }

    #[test]
    fn order_numbers_are_short_and_readable() {
        assert_eq!(short_order_number("0193a1b2-c3d4-7e5f"), "0193a1b2");
        assert_eq!(money("MYR", 12_345), "MYR 123.45");
        assert_eq!(money("MYR", 5), "MYR 0.05");
    }
}
