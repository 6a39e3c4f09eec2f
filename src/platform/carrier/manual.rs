//! The embedded carrier: booking records the shipment as awaiting dispatch;
//! staff move it along by hand (admin, `kedai shipments mark`).

use super::{BookedShipment, Carrier, CarrierError, ShipmentRequest};

#[derive(Debug, Default)]
pub struct ManualCarrier;

#[async_trait::async_trait]
impl Carrier for ManualCarrier {
    fn name(&self) -> &'static str {
        "manual"
    }

    async fn book(&self, _request: &ShipmentRequest) -> Result<BookedShipment, CarrierError> {
        Ok(BookedShipment::default())
    }
}
