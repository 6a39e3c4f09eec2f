//! The order lifecycle as a state machine.
//!
//! ```text
//! pending_payment ──► paid ──► fulfilling ──► shipped ──► delivered
//!       │   ▲          │            │            │            │
//!       │   │          └────────────┴────────────┴────────────┴──► refunded
//!       ▼   │
//! payment_failed ──► cancelled ◄── pending_payment
//!                        │
//!                        └──► paid   (a late payment is honoured, never dropped)
//! ```
//!
//! A paid order is never "cancelled": taking the money back is a refund.
//! A payment that completes after its checkout was cancelled (the stock
//! reservation expired a moment before) still makes the order paid; the
//! order is flagged for the admin when the stock is gone by then.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    PendingPayment,
    Paid,
    Fulfilling,
    Shipped,
    Delivered,
    Cancelled,
    Refunded,
    PaymentFailed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OrderStatusError {
    #[error("unknown order status {0:?}")]
    Unknown(String),
    #[error("an order cannot go from {from} to {to}")]
    InvalidTransition { from: OrderStatus, to: OrderStatus },
}

impl OrderStatus {
    pub const ALL: [OrderStatus; 8] = [
        OrderStatus::PendingPayment,
        OrderStatus::Paid,
        OrderStatus::Fulfilling,
        OrderStatus::Shipped,
        OrderStatus::Delivered,
        OrderStatus::Cancelled,
        OrderStatus::Refunded,
        OrderStatus::PaymentFailed,
    ];

    /// The value stored in the database and used in events.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "pending_payment",
            OrderStatus::Paid => "paid",
            OrderStatus::Fulfilling => "fulfilling",
            OrderStatus::Shipped => "shipped",
            OrderStatus::Delivered => "delivered",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Refunded => "refunded",
            OrderStatus::PaymentFailed => "payment_failed",
        }
    }

    /// What a shopper reads.
    pub fn label(self) -> &'static str {
        match self {
            OrderStatus::PendingPayment => "Awaiting payment",
            OrderStatus::Paid => "Paid",
            OrderStatus::Fulfilling => "Being packed",
            OrderStatus::Shipped => "Shipped",
            OrderStatus::Delivered => "Delivered",
            OrderStatus::Cancelled => "Cancelled",
            OrderStatus::Refunded => "Refunded",
            OrderStatus::PaymentFailed => "Payment failed",
        }
    }

    /// The statuses this one may move to.
    pub fn next(self) -> &'static [OrderStatus] {
        use OrderStatus::*;
        match self {
            PendingPayment => &[Paid, PaymentFailed, Cancelled],
            PaymentFailed => &[Paid, Cancelled],
            Paid => &[Fulfilling, Shipped, Refunded],
            Fulfilling => &[Shipped, Refunded],
            Shipped => &[Delivered, Refunded],
            Delivered => &[Refunded],
            Cancelled => &[Paid],
            Refunded => &[],
        }
    }

    pub fn can_become(self, to: OrderStatus) -> bool {
        self.next().contains(&to)
    }

    /// Checks a transition; the caller writes the new status and its history row.
    pub fn transition(self, to: OrderStatus) -> Result<OrderStatus, OrderStatusError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(OrderStatusError::InvalidTransition { from: self, to })
        }
    }

    /// True once money has been taken for the order (and not given back).
    pub fn is_paid(self) -> bool {
        matches!(
            self,
            OrderStatus::Paid
                | OrderStatus::Fulfilling
                | OrderStatus::Shipped
                | OrderStatus::Delivered
        )
    }

    pub fn is_terminal(self) -> bool {
        self.next().is_empty()
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = OrderStatusError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        OrderStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == value)
            .ok_or_else(|| OrderStatusError::Unknown(value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::OrderStatus::*;
    use super::*;

    #[test]
    fn happy_path_is_allowed() {
        let mut status = PendingPayment;
        for next in [Paid, Fulfilling, Shipped, Delivered, Refunded] {
            status = status.transition(next).expect("allowed");
        }
        assert_eq!(status, Refunded);
        assert!(status.is_terminal());
    }

    #[test]
    fn paid_orders_are_refunded_not_cancelled() {
        for status in [Paid, Fulfilling, Shipped, Delivered] {
            assert_eq!(
                status.transition(Cancelled),
                Err(OrderStatusError::InvalidTransition {
                    from: status,
                    to: Cancelled
                })
            );
            assert!(status.can_become(Refunded));
        }
    }

    #[test]
    fn refunded_is_terminal_and_cancelled_only_accepts_a_late_payment() {
        for to in OrderStatus::ALL {
            assert!(!Refunded.can_become(to), "refunded -> {to}");
            assert_eq!(Cancelled.can_become(to), to == Paid, "cancelled -> {to}");
        }
        assert!(Refunded.is_terminal());
        assert!(!Cancelled.is_terminal());
    }

    #[test]
    fn no_status_moves_back_to_pending_or_to_itself() {
        for from in OrderStatus::ALL {
            assert!(!from.can_become(PendingPayment));
            assert!(!from.can_become(from));
        }
    }

    #[test]
    fn a_failed_payment_can_still_succeed() {
        assert_eq!(PaymentFailed.transition(Paid), Ok(Paid));
        assert!(!PaymentFailed.is_paid());
    }

    #[test]
    fn strings_round_trip() {
        for status in OrderStatus::ALL {
            assert_eq!(status.as_str().parse::<OrderStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
        assert!("shipping".parse::<OrderStatus>().is_err());
    }
}
