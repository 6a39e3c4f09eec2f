//! Customer accounts: validated input and password hashing.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};

/// `+60 12-345 6789` → `+60123456789` (E.164), or `None`.
pub fn normalise_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')'))
        .collect();
    let digits = compact.strip_prefix('+')?;
    let valid = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then_some(compact)
}

/// A plausible email address, trimmed and lower-cased; `None` otherwise.
pub fn normalise_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let valid = email.len() <= 320
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.ends_with('.')
        });
    valid.then_some(email)
}

/// What to say when a WhatsApp number does not parse.
pub const PHONE_HINT: &str = "Enter the WhatsApp number with its country code, like +60123456789.";

pub const MIN_PASSWORD: usize = 10;
pub const MAX_PASSWORD: usize = 128;

/// Hashes with argon2id (default parameters, random salt). CPU-heavy: call
/// it from `web::block` / `spawn_blocking`, never on an async worker.
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("password hashing failed: {error}"))
}

/// Checks a password against a stored PHC string. CPU-heavy, like hashing.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalised_to_e164() {
        assert_eq!(
            normalise_phone("+60 12-345 6789").as_deref(),
            Some("+60123456789")
        );
        assert_eq!(
            normalise_phone("+6281234567890").as_deref(),
            Some("+6281234567890")
        );
        assert_eq!(
            normalise_phone("0123456789"),
            None,
            "a country code is required"
        );
        assert_eq!(normalise_phone("+0123456789"), None);
        assert_eq!(normalise_phone("+60abc"), None);
        assert_eq!(normalise_phone("+1234567"), None, "too short");
    }

    #[test]
    fn emails_are_trimmed_lowercased_and_checked() {
        assert_eq!(
            normalise_email(" Siti@Example.COM ").as_deref(),
            Some("siti@example.com")
        );
        assert_eq!(normalise_email("siti@"), None);
        assert_eq!(normalise_email("a b@example.com"), None);
    }

    #[test]
    fn passwords_hash_with_argon2id_and_verify() {
        let hash = hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash));
        assert!(!verify_password("wrong horse battery", &hash));
        assert!(!verify_password("anything", "not a hash"));
    }
}
