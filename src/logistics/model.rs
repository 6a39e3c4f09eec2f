//! A shipment's status and the moves it may make.
//!
//! ```text
//! pending ──► in_transit ──► out_for_delivery ──► delivered
//!    │            │                 │
//!    └────────────┴─────────────────┴──► exception ──► (back on the road, or delivered)
//! ```
//!
//! Statuses only move forward, so a carrier's late or repeated notice never
//! drags a delivered parcel back "in transit".

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Booked, waiting for the carrier to pick it up.
    Pending,
    InTransit,
    OutForDelivery,
    Delivered,
    /// Held up: failed delivery attempt, damaged, address problem.
    Exception,
}

impl ShipmentStatus {
    pub const ALL: [ShipmentStatus; 5] = [
        ShipmentStatus::Pending,
        ShipmentStatus::InTransit,
        ShipmentStatus::OutForDelivery,
        ShipmentStatus::Delivered,
        ShipmentStatus::Exception,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShipmentStatus::Pending => "pending",
            ShipmentStatus::InTransit => "in_transit",
            ShipmentStatus::OutForDelivery => "out_for_delivery",
            ShipmentStatus::Delivered => "delivered",
            ShipmentStatus::Exception => "exception",
        }
    }

    /// Parses our names and the words staff type (`shipped`, `out-for-delivery`).
    pub fn parse(raw: &str) -> Option<ShipmentStatus> {
        let normal = raw.trim().to_ascii_lowercase().replace('-', "_");
        Some(match normal.as_str() {
            "pending" => ShipmentStatus::Pending,
            "in_transit" | "shipped" => ShipmentStatus::InTransit,
            "out_for_delivery" => ShipmentStatus::OutForDelivery,
            "delivered" => ShipmentStatus::Delivered,
            "exception" => ShipmentStatus::Exception,
            _ => return None,
        })
    }

    /// Position on the road; `Exception` sits beside it.
    fn progress(self) -> u8 {
        match self {
            ShipmentStatus::Pending => 0,
            ShipmentStatus::InTransit => 1,
            ShipmentStatus::OutForDelivery => 2,
            ShipmentStatus::Delivered => 3,
            ShipmentStatus::Exception => 0,
        }
    }

    pub fn can_become(self, to: ShipmentStatus) -> bool {
        match (self, to) {
            (ShipmentStatus::Delivered, _) => false,
            (_, ShipmentStatus::Exception) => self != ShipmentStatus::Exception,
            (ShipmentStatus::Exception, to) => to != ShipmentStatus::Pending,
            (from, to) => to.progress() > from.progress(),
        }
    }

    /// The order status that matches, if the order should move.
    pub fn order_status(self) -> Option<crate::orders::OrderStatus> {
        use crate::orders::OrderStatus;
        match self {
            ShipmentStatus::Pending => Some(OrderStatus::Fulfilling),
            ShipmentStatus::InTransit | ShipmentStatus::OutForDelivery => {
                Some(OrderStatus::Shipped)
            }
            ShipmentStatus::Delivered => Some(OrderStatus::Delivered),
            ShipmentStatus::Exception => None,
        }
    }
}

impl std::fmt::Display for ShipmentStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ShipmentStatus::*;
    use super::*;

    #[test]
    fn statuses_only_move_forward() {
        assert!(Pending.can_become(InTransit));
        assert!(Pending.can_become(Delivered));
        assert!(InTransit.can_become(OutForDelivery));
        assert!(!OutForDelivery.can_become(InTransit));
        assert!(!Delivered.can_become(InTransit));
        assert!(!Delivered.can_become(Exception));
        assert!(!InTransit.can_become(InTransit));
        assert!(!InTransit.can_become(Pending));
    }

    #[test]
    fn exceptions_come_from_the_road_and_return_to_it() {
        assert!(InTransit.can_become(Exception));
        assert!(Pending.can_become(Exception));
        assert!(!Exception.can_become(Exception));
        assert!(Exception.can_become(InTransit));
        assert!(Exception.can_become(Delivered));
        assert!(!Exception.can_become(Pending));
    }

    #[test]
    fn names_round_trip_and_staff_words_parse() {
        for status in ShipmentStatus::ALL {
            assert_eq!(ShipmentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ShipmentStatus::parse("shipped"), Some(InTransit));
        assert_eq!(
            ShipmentStatus::parse("Out-For-Delivery"),
            Some(OutForDelivery)
        );
        assert_eq!(ShipmentStatus::parse("lost"), None);
    }
}
