//! Payments: Stripe Checkout in production, a built-in test-mode provider
//! by default. Both deliver the same signed webhook, so the path that turns
//! a payment into an order is the same everywhere.

pub mod signature;
pub mod stripe_api;
pub mod stripe_event;
