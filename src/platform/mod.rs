//! Platform adapters: each external concern behind a trait in our own
//! vocabulary, one file per backend, chosen once at startup in `app.rs`.
//! Only this tree knows a vendor's wire format.

pub mod alerts;
pub mod aws;
pub mod cache;
pub mod carrier;
pub mod db;
pub mod embed;
pub mod llm;
pub mod messaging;
pub mod objects;
pub mod payments;
pub mod queue;
pub mod upstream;
pub mod vectors;

/// An HTTP answer's `Retry-After` in seconds, if it has one.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// Parses a `Retry-After` value given in seconds (the form Twilio and most
/// APIs use); an HTTP date is not worth the parser here and is ignored.
pub fn parse_retry_after(value: &str) -> Option<std::time::Duration> {
    value
        .trim()
        .parse::<u64>()
        .ok()
        .map(|secs| std::time::Duration::from_secs(secs.min(24 * 3600)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::parse_retry_after;

    #[test]
    fn retry_after_in_seconds_parses() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-3"), None);
    }
}
