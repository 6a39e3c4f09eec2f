//! The parts of Stripe's webhook events Kedai acts on, parsed from the raw
//! body after its signature was verified. Unknown event types parse to
//! [`PaymentEvent::Other`] so they can be acknowledged and ignored.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentEvent {
    /// `checkout.session.completed`; `paid` is false for delayed methods
    /// (FPX, bank transfers), which confirm later.
    SessionCompleted {
        event_id: String,
        session: Session,
        paid: bool,
    },
    /// `checkout.session.async_payment_succeeded`
    AsyncPaymentSucceeded { event_id: String, session: Session },
    /// `checkout.session.async_payment_failed`
    AsyncPaymentFailed { event_id: String, session: Session },
    /// `checkout.session.expired`
    SessionExpired { event_id: String, session: Session },
    /// `charge.refunded`; `fully` when the whole amount went back.
    ChargeRefunded {
        event_id: String,
        payment_intent: String,
        fully: bool,
    },
    Other {
        event_id: String,
        event_type: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Session {
    pub id: String,
    #[serde(default)]
    pub client_reference_id: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub payment_status: Option<String>,
}

#[derive(Deserialize)]
struct RawEvent {
    id: String,
    #[serde(rename = "type")]
    event_type: String,
    data: RawData,
}

#[derive(Deserialize)]
struct RawData {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct Charge {
    payment_intent: Option<String>,
    #[serde(default)]
    refunded: bool,
}

impl PaymentEvent {
    pub fn event_id(&self) -> &str {
        match self {
            PaymentEvent::SessionCompleted { event_id, .. }
            | PaymentEvent::AsyncPaymentSucceeded { event_id, .. }
            | PaymentEvent::AsyncPaymentFailed { event_id, .. }
            | PaymentEvent::SessionExpired { event_id, .. }
            | PaymentEvent::ChargeRefunded { event_id, .. }
            | PaymentEvent::Other { event_id, .. } => event_id,
        }
    }

    /// Parses an event body. Fails on JSON that is not a Stripe event, or on
    /// a known event type whose object lacks the fields Kedai needs.
    pub fn parse(body: &[u8]) -> Result<PaymentEvent, serde_json::Error> {
        let raw: RawEvent = serde_json::from_slice(body)?;
        let session = |object: serde_json::Value| serde_json::from_value::<Session>(object);
        Ok(match raw.event_type.as_str() {
            "checkout.session.completed" => {
                let session = session(raw.data.object)?;
                let paid = session.payment_status.as_deref() == Some("paid");
                PaymentEvent::SessionCompleted {
                    event_id: raw.id,
                    session,
                    paid,
                }
            }
            "checkout.session.async_payment_succeeded" => PaymentEvent::AsyncPaymentSucceeded {
                event_id: raw.id,
                session: session(raw.data.object)?,
            },
            "checkout.session.async_payment_failed" => PaymentEvent::AsyncPaymentFailed {
                event_id: raw.id,
                session: session(raw.data.object)?,
            },
            "checkout.session.expired" => PaymentEvent::SessionExpired {
                event_id: raw.id,
                session: session(raw.data.object)?,
            },
            "charge.refunded" => {
                let charge: Charge = serde_json::from_value(raw.data.object)?;
                match charge.payment_intent {
                    Some(payment_intent) => PaymentEvent::ChargeRefunded {
                        event_id: raw.id,
                        payment_intent,
                        fully: charge.refunded,
                    },
                    None => PaymentEvent::Other {
                        event_id: raw.id,
                        event_type: raw.event_type,
                    },
                }
            }
            _ => PaymentEvent::Other {
                event_id: raw.id,
                event_type: raw.event_type,
            },
        })
    }
}

/// A `checkout.session.completed` event body as Stripe sends it, for the
/// test-mode provider and tests.
pub fn session_completed_body(
    event_id: &str,
    session_id: &str,
    order_reference: &str,
    amount_total: i64,
    currency: &str,
) -> String {
    serde_json::json!({
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": time::OffsetDateTime::now_utc().unix_timestamp(),
        "type": "checkout.session.completed",
        "livemode": false,
        "data": { "object": {
            "id": session_id,
            "object": "checkout.session",
            "client_reference_id": order_reference,
            "payment_intent": format!("pi_test_{}", session_id.trim_start_matches("cs_test_")),
            "payment_status": "paid",
            "status": "complete",
            "amount_total": amount_total,
            "currency": currency.to_lowercase(),
        }}
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_session_parses_with_its_payment_status() {
        let body = session_completed_body("evt_1", "cs_test_abc", "order-1", 1000, "MYR");
        match PaymentEvent::parse(body.as_bytes()).unwrap() {
            PaymentEvent::SessionCompleted {
                event_id,
                session,
                paid,
            } => {
                assert_eq!(event_id, "evt_1");
                assert_eq!(session.id, "cs_test_abc");
                assert_eq!(session.client_reference_id.as_deref(), Some("order-1"));
                assert_eq!(session.payment_intent.as_deref(), Some("pi_test_abc"));
                assert!(paid);
            }
            other => panic!("{other:?}"),
        }
        let unpaid = body.replace("\"paid\"", "\"unpaid\"");
        assert!(matches!(
            PaymentEvent::parse(unpaid.as_bytes()).unwrap(),
            PaymentEvent::SessionCompleted { paid: false, .. }
        ));
    }

    #[test]
    fn refunds_expiries_and_unknown_types_parse() {
        let refund = br#"{"id":"evt_2","type":"charge.refunded","data":{"object":{"id":"ch_1","payment_intent":"pi_1","refunded":true}}}"#;
        assert_eq!(
            PaymentEvent::parse(refund).unwrap(),
            PaymentEvent::ChargeRefunded {
                event_id: "evt_2".into(),
                payment_intent: "pi_1".into(),
                fully: true
            }
        );
        let expired =
            br#"{"id":"evt_3","type":"checkout.session.expired","data":{"object":{"id":"cs_1"}}}"#;
        assert!(matches!(
            PaymentEvent::parse(expired).unwrap(),
            PaymentEvent::SessionExpired { .. }
        ));
        let other = br#"{"id":"evt_4","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
        assert_eq!(
            PaymentEvent::parse(other).unwrap(),
            PaymentEvent::Other {
                event_id: "evt_4".into(),
                event_type: "customer.created".into()
            }
        );
    }

    #[test]
    fn malformed_bodies_fail() {
        assert!(PaymentEvent::parse(b"not json").is_err());
        assert!(PaymentEvent::parse(br#"{"id":"evt_5"}"#).is_err());
        assert!(
            PaymentEvent::parse(
                br#"{"id":"evt_6","type":"checkout.session.completed","data":{"object":{}}}"#
            )
            .is_err()
        );
    }
}
