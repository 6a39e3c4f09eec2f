//! Domain events: the outbox written in the same transaction as each change,
//! and the idempotency keys of provider events already processed.
//!
//! Delivery of outbox events to handlers (the dispatcher) arrives with the
//! events issue; writing them is already transactional.

pub mod entity;
mod repo;
pub mod rules;

pub use repo::{append, claim};
pub use rules::{Pattern, PatternError};

/// Event type names, as written to the outbox and matched by rules.
pub mod types {
    pub const ORDER_PAID: &str = "order.paid";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_REFUNDED: &str = "order.refunded";
    pub const ORDER_NEEDS_ATTENTION: &str = "order.needs_attention";
}
