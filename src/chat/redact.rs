//! Keeping shoppers' phone numbers and email addresses out of logs: log
//! conversation ids, and pass any free text through [`redact`] first.

use std::sync::LazyLock;

use regex::Regex;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9.\-]+\.[A-Za-z]{2,}").expect("valid email pattern")
});

/// Seven or more digits, allowing the separators people type in numbers.
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+?\d[\d\s\-().]{5,}\d").expect("valid phone pattern"));

/// `text` with emails and phone-like numbers replaced by placeholders.
pub fn redact(text: &str) -> String {
    let text = EMAIL.replace_all(text, "[email]");
    PHONE
        .replace_all(&text, |caps: &regex::Captures| {
            let digits = caps[0].chars().filter(char::is_ascii_digit).count();
            if digits >= 7 {
                "[phone]".to_string()
            } else {
                caps[0].to_string()
            }
        })
        .into_owned()
}

/// A WhatsApp identity for logs: the last three characters only.
pub fn identity(identity: &str) -> String {
    let tail: String = identity
        .chars()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_and_emails_are_hidden() {
        let out = redact("call me at +60 12-345 6789 or mail siti.aminah@example.com.my");
        assert_eq!(out, "call me at [phone] or mail [email]");
        assert!(!out.contains("6789"));
    }

    #[test]
    fn short_numbers_stay() {
        assert_eq!(redact("order 1234, size 42"), "order 1234, size 42");
        assert_eq!(redact("RM 150.00 for 2"), "RM 150.00 for 2");
    }

    #[test]
    fn identities_keep_only_a_tail() {
        assert_eq!(identity("+60123456789"), "…789");
    }
}
