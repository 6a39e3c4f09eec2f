//! Logistics: a shipment for every paid order, booked with the carrier, and
//! its progress to the door.
//!
//! The [`Logistics`] handler subscribes to `order.paid`. It books the
//! parcel with the configured carrier (idempotency key = the order id, so a
//! redelivery after a crash never books two), then stores the shipment once
//! per order (a unique key on `shipments.order_id`) together with
//! `shipment.created`. Status changes come from the carrier's signed
//! webhook (`routes.rs`) or from staff ([`mark`]); each writes
//! `shipment.status_changed`, which the notifications handler turns into a
//! WhatsApp message.

pub mod model;
mod repo;
pub mod routes;

use std::sync::Arc;

use serde_json::json;

pub use model::ShipmentStatus;
pub use repo::{MarkOutcome, ShipmentRef, mark};

use crate::events::{Event, Handler, HandlerError, types};
use crate::platform::carrier::{Carrier, CarrierError, Item, Recipient, ShipmentRequest};
use crate::platform::db::Writer;

pub struct Logistics {
    writer: Writer,
    carrier: Arc<dyn Carrier>,
}

impl Logistics {
    pub fn new(writer: Writer, carrier: Arc<dyn Carrier>) -> Self {
        Logistics { writer, carrier }
    }
}

#[async_trait::async_trait]
impl Handler for Logistics {
    fn name(&self) -> &'static str {
        "logistics"
    }

    fn rule(&self) -> serde_json::Value {
        json!({ "type": [types::ORDER_PAID] })
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let public_id = event
            .text("order_id")
            .ok_or_else(|| HandlerError::Permanent("the event has no order_id".into()))?;
        let Some((order, shipment)) = repo::shipment_for_order(&self.writer.db, public_id).await?
        else {
            return Err(HandlerError::Permanent(format!(
                "order {public_id} does not exist"
            )));
        };
        if shipment.is_some() {
            return Ok(());
        }
        let status: crate::orders::OrderStatus = order
            .status
            .parse()
            .map_err(|e| HandlerError::Permanent(format!("{e}")))?;
        if !status.is_paid() {
            // Refunded before it could ship: nothing to send.
            tracing::info!(order_id = %public_id, status = %order.status, "no shipment for an order that is no longer paid");
            return Ok(());
        }
        let items = event
            .payload
            .get("lines")
            .and_then(|l| l.as_array())
            .map(|lines| {
                lines
                    .iter()
                    .map(|line| Item {
                        sku: line["sku"].as_str().unwrap_or_default().to_string(),
                        description: format!(
                            "{} {}",
                            line["product_name"].as_str().unwrap_or_default(),
                            line["variant_title"].as_str().unwrap_or_default()
                        )
                        .trim()
                        .to_string(),
                        quantity: line["quantity"].as_i64().unwrap_or(1) as i32,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let request = ShipmentRequest {
            reference: order.public_id.clone(),
            recipient: Recipient {
                name: order.ship_name.clone(),
                phone: order.phone.clone(),
                line1: order.ship_line1.clone(),
                line2: order.ship_line2.clone(),
                city: order.ship_city.clone(),
                postcode: order.ship_postcode.clone(),
                state: order.ship_state.clone(),
                country: order.ship_country.clone(),
            },
            items,
        };
        let booked = self
            .carrier
            .book(&request)
            .await
            .map_err(|error| match error {
                CarrierError::Throttled { retry_after } => HandlerError::Retry {
                    reason: error.to_string(),
                    retry_after,
                },
                CarrierError::Unavailable(_) => HandlerError::retry(error.to_string()),
                CarrierError::Rejected(_) => HandlerError::Permanent(error.to_string()),
            })?;
        repo::create(&self.writer, order.id, self.carrier.name(), &booked).await?;
        Ok(())
    }
}
