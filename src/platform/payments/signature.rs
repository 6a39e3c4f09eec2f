//! Stripe webhook signatures (`Stripe-Signature: t=<unix>,v1=<hex>,v1=<hex>`).
//!
//! The signature is HMAC-SHA256, keyed with the endpoint secret (`whsec_…`,
//! used as raw bytes), over `"{t}.{raw body}"`. Verification works on the
//! raw request bytes, never on a re-serialised body; compares in constant
//! time; accepts any of several `v1` values and several secrets, so secrets
//! can rotate; and rejects timestamps outside the tolerance in either
//! direction (replays of old deliveries, and clocks far ahead).
//!
//! The embedded test-mode provider signs with [`sign`], exactly as Stripe does.

use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Stripe's default and our configured tolerance: five minutes.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature header is missing")]
    Missing,
    #[error("the signature header is malformed")]
    Malformed,
    #[error("the signature timestamp is outside the tolerance ({age_secs} s from now)")]
    OutsideTolerance { age_secs: i64 },
    #[error("no signature matches the payload")]
    NoMatch,
}

fn mac(secret: &[u8], timestamp: i64, payload: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The `Stripe-Signature` header value Stripe would send for this payload.
pub fn sign(secret: &SecretString, timestamp: i64, payload: &[u8]) -> String {
    let signature = mac(secret.expose_secret().as_bytes(), timestamp, payload)
        .finalize()
        .into_bytes();
    format!("t={timestamp},v1={}", hex::encode(signature))
}

/// Checks a `Stripe-Signature` header against the raw payload. Returns the
/// signed timestamp on success.
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[&SecretString],
    now_unix: i64,
    tolerance: Duration,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            return Err(SignatureError::Malformed);
        };
        match key {
            "t" => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                )
            }
            // A v1 that is not hex can never match; skip it rather than fail,
            // as Stripe's own libraries do.
            "v1" => {
                if let Ok(bytes) = hex::decode(value) {
                    signatures.push(bytes);
                }
            }
            // v0 and future schemes are ignored.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoMatch);
    }
    let age = now_unix - timestamp;
    if age.unsigned_abs() > tolerance.as_secs() {
        return Err(SignatureError::OutsideTolerance { age_secs: age });
    }
    for secret in secrets {
        let expected = mac(secret.expose_secret().as_bytes(), timestamp, payload);
        for signature in &signatures {
            // `verify_slice` compares in constant time.
            if expected.clone().verify_slice(signature).is_ok() {
                return Ok(timestamp);
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000;
    const BODY: &[u8] = br#"{"id":"evt_1","type":"checkout.session.completed"}"#;

    fn secret(value: &str) -> SecretString {
        SecretString::from(value.to_string())
    }

    fn check(
        header: Option<&str>,
        body: &[u8],
        secrets: &[&SecretString],
    ) -> Result<i64, SignatureError> {
        verify(header, body, secrets, NOW, DEFAULT_TOLERANCE)
    }

    #[test]
    fn matches_an_independently_computed_signature() {
        // Computed outside this code, with Python's hmac module:
        // hmac.new(b"whsec_test", b'1764000000.{"id":"evt_1",...}', hashlib.sha256).hexdigest()
        let expected =
            "t=1764000000,v1=928be00b03a47fe2ee1010408207998999555fc6bfe8a5a2dd3cffdf106b48a2";
        assert_eq!(sign(&secret("whsec_test"), NOW, BODY), expected);
        assert_eq!(
            check(Some(expected), BODY, &[&secret("whsec_test")]),
            Ok(NOW)
        );
    }

    #[test]
    fn a_tampered_body_fails() {
        let key = secret("whsec_test");
        let header = sign(&key, NOW, BODY);
        let tampered = br#"{"id":"evt_1","type":"checkout.session.completed "}"#;
        assert_eq!(
            check(Some(&header), tampered, &[&key]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn a_wrong_secret_fails() {
        let header = sign(&secret("whsec_other"), NOW, BODY);
        assert_eq!(
            check(Some(&header), BODY, &[&secret("whsec_test")]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn stale_and_future_timestamps_fail() {
        let key = secret("whsec_test");
        let stale = sign(&key, NOW - 301, BODY);
        assert_eq!(
            check(Some(&stale), BODY, &[&key]),
            Err(SignatureError::OutsideTolerance { age_secs: 301 })
        );
        let future = sign(&key, NOW + 301, BODY);
        assert_eq!(
            check(Some(&future), BODY, &[&key]),
            Err(SignatureError::OutsideTolerance { age_secs: -301 })
        );
        // Just inside the window either way.
        assert!(check(Some(&sign(&key, NOW - 300, BODY)), BODY, &[&key]).is_ok());
        assert!(check(Some(&sign(&key, NOW + 300, BODY)), BODY, &[&key]).is_ok());
    }

    #[test]
    fn a_missing_or_malformed_header_fails() {
        let key = secret("whsec_test");
        assert_eq!(check(None, BODY, &[&key]), Err(SignatureError::Missing));
        assert_eq!(
            check(Some("garbage"), BODY, &[&key]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some("t=abc,v1=00"), BODY, &[&key]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some("v1=00ff"), BODY, &[&key]),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            check(Some(&format!("t={NOW}")), BODY, &[&key]),
            Err(SignatureError::NoMatch)
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let key = secret("whsec_test");
        let good = sign(&key, NOW, BODY);
        let good_v1 = good.split_once(",v1=").unwrap().1;
        let header = format!(
            "t={NOW},v1={},v0=deadbeef,v1=zz-not-hex,v1={good_v1}",
            "0".repeat(64)
        );
        assert_eq!(check(Some(&header), BODY, &[&key]), Ok(NOW));
    }

    #[test]
    fn rotated_secrets_are_all_accepted() {
        let old = secret("whsec_old");
        let new = secret("whsec_new");
        let signed_with_old = sign(&old, NOW, BODY);
        assert_eq!(check(Some(&signed_with_old), BODY, &[&new, &old]), Ok(NOW));
        assert_eq!(
            check(Some(&signed_with_old), BODY, &[&new]),
            Err(SignatureError::NoMatch)
        );
    }
}
