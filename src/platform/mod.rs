//! Platform adapters: each external concern behind a trait in our own
//! vocabulary, one file per backend, chosen once at startup in `app.rs`.
//! Only this tree knows a vendor's wire format.

pub mod cache;
pub mod carrier;
pub mod db;
pub mod messaging;
pub mod payments;
