//! Platform adapters: each external concern behind a trait in our own
//! vocabulary, one file per backend, chosen once at startup in `app.rs`.
//! Only this tree knows a vendor's wire format.

pub mod cache;
pub mod carrier;
pub mod db;
pub mod embed;
pub mod messaging;
pub mod objects;
pub mod payments;
pub mod vectors;

/// An HTTP answer's `Retry-After` in seconds, if it has one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::events::retry::parse_retry_after)
}
