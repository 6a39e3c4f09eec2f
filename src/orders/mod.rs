//! Orders: what a shopper bought, its lifecycle and its shipment.
//!
//! This scope is the schema and the lifecycle rules; checkout and
//! order history build on them.

pub mod entity;
pub mod model;

pub use model::{OrderStatus, OrderStatusError};
