//! What a shopper's turn asks for, decided before any retrieval: a person,
//! their order, or (the default) a question for the knowledge base. Also
//! the shopper's language and complaints. Word lists cover English, Malay
//! and Indonesian as shoppers write them on WhatsApp (short forms too).
//! Both responders use these: the model is told about the orders, the
//! offline responder answers from them directly.

/// The language the reply should be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    English,
    /// Malay and Indonesian share the fixed phrases we send.
    Malay,
}

/// What the turn is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intent {
    /// Asks for a person.
    Human,
    /// Asks about an order; with the order number when one was given.
    OrderStatus { reference: Option<String> },
    /// Hello / thanks with no question.
    Smalltalk,
    /// Anything else: answered from the knowledge base.
    Question,
}

/// Lower-cased words, punctuation dropped.
fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

fn has_any(words: &[String], list: &[&str]) -> bool {
    words.iter().any(|w| list.contains(&w.as_str()))
}

fn has_phrase(text: &str, list: &[&str]) -> bool {
    list.iter().any(|p| text.contains(p))
}

const MALAY_WORDS: &[&str] = &[
    "saya",
    "aku",
    "nak",
    "mau",
    "boleh",
    "berapa",
    "bila",
    "apa",
    "tak",
    "tidak",
    "nggak",
    "gak",
    "bagaimana",
    "macam",
    "mana",
    "pesanan",
    "barang",
    "kapan",
    "gimana",
    "sudah",
    "dah",
    "belum",
    "terima",
    "kasih",
    "tolong",
    "ada",
    "tak",
    "ke",
    "dengan",
    "untuk",
    "harga",
    "saiz",
    "ukuran",
    "hantar",
    "kirim",
    "pulangan",
    "bayar",
    "bisa",
    "sampai",
];

/// English unless the turn reads Malay or Indonesian.
pub fn language(text: &str) -> Language {
    let words = words(text);
    if words.is_empty() {
        return Language::English;
    }
    let malay = words
        .iter()
        .filter(|w| MALAY_WORDS.contains(&w.as_str()))
        .count();
    if malay * 4 >= words.len() || (malay >= 1 && words.len() <= 3) {
        Language::Malay
    } else {
        Language::English
    }
}

const HUMAN_PHRASES: &[&str] = &[
    "talk to a human",
    "talk to human",
    "speak to a human",
    "real person",
    "customer service",
    "customer support",
    "live agent",
    "talk to someone",
    "speak to someone",
    "cakap dengan orang",
    "bercakap dengan",
    "nak cakap dengan",
    "orang sebenar",
    "khidmat pelanggan",
    "layanan pelanggan",
    "bicara dengan",
    "mau ngobrol dengan",
];
const HUMAN_WORDS: &[&str] = &[
    "human",
    "agent",
    "operator",
    "staff",
    "manusia",
    "admin",
    "cs",
    "representative",
];

const ORDER_WORDS: &[&str] = &[
    "order",
    "orders",
    "ordered",
    "pesanan",
    "tempahan",
    "oder",
    "parcel",
    "package",
    "bungkusan",
    "paket",
    "tracking",
    "track",
    "resi",
    "shipment",
    "delivery",
    "delivered",
    "shipped",
    "penghantaran",
    "pengiriman",
    "sampai",
    "tiba",
];
const STATUS_WORDS: &[&str] = &[
    "where",
    "status",
    "when",
    "track",
    "tracking",
    "arrive",
    "arrived",
    "yet",
    "mana",
    "bila",
    "kapan",
    "sudah",
    "dah",
    "belum",
    "sampai",
    "tiba",
    "shipped",
    "delivered",
    "received",
    "resi",
    "wheres",
    "update",
];

const PERSONAL: &[&str] = &[
    "my", "i", "me", "mine", "we", "our", "saya", "aku", "ku", "sy", "gue", "kami",
];
const TRACKING: &[&str] = &["track", "tracking", "resi"];

const COMPLAINTS: &[&str] = &[
    "not helpful",
    "unhelpful",
    "useless",
    "that's wrong",
    "thats wrong",
    "not what i asked",
    "doesn't help",
    "doesnt help",
    "didn't help",
    "didnt help",
    "you don't understand",
    "you dont understand",
    "stupid bot",
    "tak membantu",
    "tidak membantu",
    "bukan itu",
    "tak faham",
    "tidak paham",
    "gak nyambung",
    "bodoh",
    "not answering",
    "wrong answer",
];

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "hai",
    "helo",
    "halo",
    "assalamualaikum",
    "salam",
    "thanks",
    "thank",
    "you",
    "terima",
    "kasih",
    "tq",
    "ty",
    "ok",
    "okay",
    "ok.",
    "morning",
    "good",
    "selamat",
    "pagi",
    "petang",
    "malam",
    "there",
    "makasih",
];

/// An order number as the shop prints it: the first 8 hex characters of
/// the order's id, or the whole id.
pub fn order_reference(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-'))
        .map(|w| w.trim_matches('-').to_ascii_lowercase())
        .find(|w| {
            let hex = w.chars().filter(|c| *c != '-').count();
            (hex == 8 || hex == 32)
                && w.chars().any(|c| c.is_ascii_digit())
                && w.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
        })
}

/// The intent of a whole turn (its messages joined).
/// The code of an account-linking message (`LINK 123456`, also "verify",
/// Malay "sahkan" / "pautkan"), sent from WhatsApp to prove the account's
/// number: the whole message is the command word and six digits.
pub fn link_code(text: &str) -> Option<String> {
    let lowered = text.trim().to_lowercase();
    let rest = ["link", "verify", "sahkan", "pautkan"]
        .iter()
        .find_map(|word| lowered.strip_prefix(word))?;
    let digits: String = rest
        .chars()
        .filter(|c| !matches!(c, ' ' | ':' | '#' | '-'))
        .collect();
    (digits.len() == 6 && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

pub fn classify(text: &str) -> Intent {
    let lower = text.to_lowercase();
    let words = words(text);
    if has_phrase(&lower, HUMAN_PHRASES) || has_any(&words, HUMAN_WORDS) {
        return Intent::Human;
    }
    let reference = order_reference(text);
    let about_order = has_any(&words, ORDER_WORDS);
    let asks_status = has_any(&words, STATUS_WORDS) && has_any(&words, PERSONAL);
    if (about_order && (asks_status || reference.is_some() || has_any(&words, TRACKING)))
        || (reference.is_some() && words.len() <= 4)
    {
        return Intent::OrderStatus { reference };
    }
    if !words.is_empty() && words.iter().all(|w| GREETINGS.contains(&w.as_str())) {
        return Intent::Smalltalk;
    }
    Intent::Question
}

/// True when the shopper says the bot's last answer did not help.
pub fn is_complaint(text: &str) -> bool {
    has_phrase(&text.to_lowercase(), COMPLAINTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asks_for_a_person_in_three_languages() {
        for text in [
            "can I talk to a human",
            "HUMAN pls",
            "nak cakap dengan orang",
            "saya mau bicara dengan admin",
            "customer service?",
        ] {
            assert_eq!(classify(text), Intent::Human, "{text}");
        }
    }

    #[test]
    fn order_status_with_and_without_a_number() {
        assert_eq!(
            classify("where is my order"),
            Intent::OrderStatus { reference: None }
        );
        assert_eq!(
            classify("pesanan saya dah sampai ke belum"),
            Intent::OrderStatus { reference: None }
        );
        assert_eq!(
            classify("status order 0193a1b2?"),
            Intent::OrderStatus {
                reference: Some("0193a1b2".into())
            }
        );
        assert_eq!(
            classify("0193a1b2"),
            Intent::OrderStatus {
                reference: Some("0193a1b2".into())
            }
        );
    }

    #[test]
    fn policy_questions_are_questions() {
        for text in [
            "how long does shipping to sabah take",
            "can i return a shirt i wore once",
            "berapa kos penghantaran ke sarawak",
            "do you ship to singapore",
            "when will delivery to sabah arrive",
            "is this shirt good for a person who runs",
        ] {
            assert_eq!(classify(text), Intent::Question, "{text}");
        }
    }

    #[test]
    fn greetings_are_smalltalk() {
        assert_eq!(classify("hi there"), Intent::Smalltalk);
        assert_eq!(classify("terima kasih"), Intent::Smalltalk);
        assert_eq!(classify("hi, do you sell socks"), Intent::Question);
    }

    #[test]
    fn language_follows_the_shopper() {
        assert_eq!(language("berapa harga baju ini"), Language::Malay);
        assert_eq!(language("kapan paket saya sampai"), Language::Malay);
        assert_eq!(language("how much is this shirt"), Language::English);
    }

    #[test]
    fn complaints_are_recognised() {
        assert!(is_complaint("that's not what I asked"));
        assert!(is_complaint("jawapan ni tak membantu"));
        assert!(!is_complaint("thanks, that helps"));
    }

    #[test]
    fn words_that_look_hex_are_not_order_numbers() {
        assert_eq!(order_reference("deadbeef"), None);
        assert_eq!(
            order_reference("my order 0a1b2c3d pls"),
            Some("0a1b2c3d".into())
        );
    }

    #[test]
    fn link_codes_are_the_command_word_and_six_digits() {
        assert_eq!(link_code("LINK 123456").as_deref(), Some("123456"));
        assert_eq!(link_code(" link: 123 456 ").as_deref(), Some("123456"));
        assert_eq!(link_code("Sahkan 000042").as_deref(), Some("000042"));
        assert_eq!(link_code("verify #987654").as_deref(), Some("987654"));
        assert_eq!(link_code("link 12345"), None);
        assert_eq!(link_code("link 1234567"), None);
        assert_eq!(link_code("please link my order 123456"), None);
        assert_eq!(link_code("where is my order 123456"), None);
        assert_eq!(link_code("linkage 123456"), None);
    }
}
