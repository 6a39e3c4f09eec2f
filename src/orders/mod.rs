//! Orders: what a shopper bought, its lifecycle and its shipment.
//!
//! The module's API is the set of transactions in `repo`: placing a
//! pending order with stock reservations, fulfilling a payment exactly once,
//! cancelling an unpaid order, and sweeping expired reservations. Each one
//! writes its status history and outbox event in the same transaction.

pub mod entity;
pub mod model;
mod repo;

pub use model::{OrderStatus, OrderStatusError};
pub use repo::{
    EventKey, FulfilOutcome, NewOrder, OrderFilter, OrderView, PaymentConfirmation,
    PlaceOrderError, PlacedOrder, Sales, ShippingAddress, Transition, advance_fulfilment,
    attach_payment_session, cancel_unpaid, count_needing_attention, find_by_id, find_by_public_id,
    find_by_session, fulfil, list, list_for_customer, mark_payment_failed, place, public_ids,
    refund, sales_since, sweep_expired,
};
