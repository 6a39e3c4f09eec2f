//! The carrier that ships paid orders: `manual` (the embedded default: an
//! admin or `kedai shipments mark` moves the shipment along) or `http` (a
//! carrier's REST API; see `http.rs` for the wire contract).

mod http;
mod manual;

use std::time::Duration;

pub use http::{HttpCarrier, SIGNATURE_HEADER, StatusNotice, parse_status_notice};
pub use manual::ManualCarrier;

/// What the carrier needs to pick up and deliver a parcel.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShipmentRequest {
    /// Our order's public id: the carrier's reference and idempotency key,
    /// so asking twice (after a crash) never books two parcels.
    pub reference: String,
    pub recipient: Recipient,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipient {
    pub name: String,
    pub phone: Option<String>,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postcode: String,
    pub state: String,
    pub country: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    pub sku: String,
    pub description: String,
    pub quantity: i32,
}

/// A booked shipment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookedShipment {
    pub carrier_ref: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub label_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    #[error("the carrier is throttling us")]
    Throttled { retry_after: Option<Duration> },
    #[error("the carrier is unavailable: {0}")]
    Unavailable(String),
    #[error("the carrier refused the shipment: {0}")]
    Rejected(String),
}

#[async_trait::async_trait]
pub trait Carrier: Send + Sync + 'static {
    /// Stored with each shipment (`manual`, or the configured carrier).
    fn name(&self) -> &'static str;
    /// Books a shipment; idempotent per `request.reference`.
    async fn book(&self, request: &ShipmentRequest) -> Result<BookedShipment, CarrierError>;
}
