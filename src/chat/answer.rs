//! Composing the bot's reply to one turn: order facts, the evidence gate,
//! the offline responder's answer from passages, the model's prompt, the
//! fixed phrases in the shopper's language, and splitting long replies.
//! Everything here is pure or read-only; `worker.rs` decides and stores.

use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde::Serialize;

use super::intent::Language;
use crate::config::ChatSettings;
use crate::knowledge::Passage;
use crate::orders::entity::{order, order_line, shipment};

/// What the shopper is told about one of their orders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderFacts {
    /// The short order number the shop prints (first 8 characters).
    pub number: String,
    pub public_id: String,
    pub status: String,
    pub placed: String,
    pub total: String,
    pub items: Vec<String>,
    pub carrier: Option<String>,
    pub shipment_status: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
}

pub fn short_number(public_id: &str) -> String {
    public_id.chars().take(8).collect()
}

/// `RM 12.50` for MYR, else the currency code.
pub fn money(minor: i64, currency: &str) -> String {
    let symbol = if currency.eq_ignore_ascii_case("MYR") {
        "RM".to_string()
    } else {
        currency.to_uppercase()
    };
    format!("{symbol} {}.{:02}", minor / 100, (minor % 100).abs())
}

/// The shopper's recent orders: those placed with this WhatsApp number,
/// and those of the customer account the conversation is linked to.
pub async fn recent_orders(
    db: &DatabaseConnection,
    phone: Option<&str>,
    customer_id: Option<i64>,
    limit: u64,
) -> Result<Vec<OrderFacts>, DbErr> {
    let mut condition = Condition::any();
    if let Some(phone) = phone {
        condition = condition.add(order::Column::Phone.eq(phone));
    }
    if let Some(customer_id) = customer_id {
        condition = condition.add(order::Column::CustomerId.eq(customer_id));
    }
    if phone.is_none() && customer_id.is_none() {
        return Ok(Vec::new());
    }
    let orders = order::Entity::find()
        .filter(condition)
        .order_by_desc(order::Column::CreatedAt)
        .order_by_desc(order::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    let mut facts = Vec::with_capacity(orders.len());
    for order in orders {
        let lines = order_line::Entity::find()
            .filter(order_line::Column::OrderId.eq(order.id))
            .order_by_asc(order_line::Column::Id)
            .all(db)
            .await?;
        let shipment = shipment::Entity::find()
            .filter(shipment::Column::OrderId.eq(order.id))
            .one(db)
            .await?;
        facts.push(OrderFacts {
            number: short_number(&order.public_id),
            public_id: order.public_id.clone(),
            status: order.status.replace('_', " "),
            placed: order
                .created_at
                .date()
                .format(time::macros::format_description!(
                    "[day] [month repr:short] [year]"
                ))
                .unwrap_or_default(),
            total: money(order.total_minor, &order.currency),
            items: lines
                .iter()
                .map(|l| format!("{} × {} ({})", l.quantity, l.product_name, l.variant_title))
                .collect(),
            carrier: shipment.as_ref().map(|s| s.carrier.clone()),
            shipment_status: shipment.as_ref().map(|s| s.status.replace('_', " ")),
            tracking_number: shipment.as_ref().and_then(|s| s.tracking_number.clone()),
            tracking_url: shipment.as_ref().and_then(|s| s.tracking_url.clone()),
        });
    }
    Ok(facts)
}

/// Which of the shopper's orders a turn is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderPick<'a> {
    /// The one whose number was given, else the latest.
    Found(&'a OrderFacts),
    /// No number given and no orders for this shopper.
    NoOrders,
    /// A number that is not among the shopper's orders (someone else's,
    /// or a typo): never looked up further.
    NotTheirs,
}

pub fn pick_order<'a>(orders: &'a [OrderFacts], reference: Option<&str>) -> OrderPick<'a> {
    let Some(reference) = reference else {
        return orders.first().map_or(OrderPick::NoOrders, OrderPick::Found);
    };
    let reference = reference.to_ascii_lowercase();
    orders
        .iter()
        .find(|o| {
            let id = o.public_id.to_ascii_lowercase();
            id == reference
                || id.replace('-', "") == reference.replace('-', "")
                || o.number.to_ascii_lowercase() == reference
        })
        .map_or(OrderPick::NotTheirs, OrderPick::Found)
}

/// One order in a sentence or three.
pub fn describe_order(order: &OrderFacts, language: Language) -> String {
    let mut text = match language {
        Language::English => format!(
            "Order {} (placed {}, {}): {}.",
            order.number, order.placed, order.total, order.status
        ),
        Language::Malay => format!(
            "Pesanan {} (dibuat {}, {}): {}.",
            order.number, order.placed, order.total, order.status
        ),
    };
    if let (Some(carrier), Some(status)) = (&order.carrier, &order.shipment_status) {
        text.push_str(&match language {
            Language::English => format!(" Shipment with {carrier}: {status}."),
            Language::Malay => format!(" Penghantaran melalui {carrier}: {status}."),
        });
    }
    if let Some(number) = &order.tracking_number {
        text.push_str(&match language {
            Language::English => format!(" Tracking number {number}."),
            Language::Malay => format!(" Nombor penjejakan {number}."),
        });
    }
    if let Some(url) = &order.tracking_url {
        text.push_str(&format!(" {url}"));
    }
    text
}

/// The evidence gate: some passage is close enough to the question to
/// answer from. Returns the best scores seen, for the missing-knowledge list.
pub fn evidence(passages: &[Passage], settings: &ChatSettings) -> (bool, f32) {
    let best_vector = passages
        .iter()
        .filter_map(|p| p.vector_score)
        .fold(0.0f32, f32::max);
    let best_keyword = passages
        .iter()
        .filter_map(|p| p.keyword_score)
        .fold(0.0f32, f32::max);
    let pass = best_vector >= settings.evidence_vector || best_keyword >= settings.evidence_keyword;
    (pass, best_vector)
}

/// A word's comparable stem: lower case, at most 5 letters.
fn stem(word: &str) -> String {
    word.to_lowercase().chars().take(5).collect()
}

const STOP: &[&str] = &[
    "the", "a", "an", "is", "are", "do", "does", "you", "your", "i", "my", "me", "can", "to", "of",
    "for", "in", "on", "and", "or", "it", "this", "that", "what", "how", "with", "be", "will",
    "saya", "nak", "boleh", "ke", "di", "yang", "dan", "ini", "itu", "ada", "apa", "pls", "please",
    "hi", "hello",
];

fn content_stems(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.len() >= 2 && !STOP.contains(&w.to_lowercase().as_str()))
        .map(stem)
        .collect()
}

/// Sentences of a passage: lines and sentence ends, markdown list and
/// table punctuation dropped.
fn sentences(text: &str) -> Vec<String> {
    // Table rows come as `a | b` (the chunker's rendering) or markdown
    // `| a | b |`; the first row of a table is its header, dropped.
    let is_separator = |line: &str| {
        line.contains('-')
            && line.contains('|')
            && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
    };
    let is_row =
        |line: &str| !is_separator(line) && (line.starts_with('|') || line.contains(" | "));
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !is_separator(l))
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (index, raw) in lines.iter().enumerate() {
        let row = is_row(raw);
        let header = row && (index == 0 || !is_row(lines[index - 1]));
        if header && lines.get(index + 1).is_some_and(|next| is_row(next)) {
            continue;
        }
        let line = raw.trim_start_matches(['#', '-', '*', '>']).trim();
        if line.is_empty() {
            continue;
        }
        if row {
            let cells: Vec<&str> = line
                .trim_matches('|')
                .split('|')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            let mut sentence = cells.join(": ");
            if !sentence.ends_with(['.', '!', '?']) {
                sentence.push('.');
            }
            out.push(sentence);
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let mut current = String::new();
        for (i, c) in chars.iter().enumerate() {
            current.push(*c);
            let end =
                matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace());
            if end {
                out.push(current.trim().to_string());
                current.clear();
            }
        }
        if !current.trim().is_empty() {
            out.push(current.trim().to_string());
        }
    }
    out
}

/// The offline responder: the sentences of the best passage that share the
/// most words with the question (up to three, in their order), with the
/// document's title and citation. `None` without passages.
pub fn offline_answer(question: &str, passages: &[Passage], language: Language) -> Option<String> {
    let top = passages.first()?;
    let wanted = content_stems(question);
    let all = sentences(&top.text);
    if all.is_empty() {
        return None;
    }
    let mut scored: Vec<(usize, usize)> = all
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let stems = content_stems(s);
            let hits = wanted.iter().filter(|w| stems.contains(w)).count();
            (i, hits)
        })
        .collect();
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut chosen: Vec<usize> = if scored[0].1 == 0 {
        (0..all.len().min(2)).collect()
    } else {
        scored
            .iter()
            .take(3)
            .filter(|(_, hits)| *hits > 0)
            .map(|(i, _)| *i)
            .collect()
    };
    chosen.sort_unstable();
    let body = chosen
        .iter()
        .map(|&i| all[i].as_str())
        .collect::<Vec<_>>()
        .join(" ");
    let mut source = top.title.clone();
    if let Some(section) = top.section.last().filter(|s| **s != top.title) {
        source.push_str(" › ");
        source.push_str(section);
    }
    let label = match language {
        Language::English => "Source",
        Language::Malay => "Sumber",
    };
    let mut answer = format!("{body}\n\n{label}: {source} [{}]", top.citation);
    if !top.url.is_empty() {
        answer.push(' ');
        answer.push_str(&top.url);
    }
    Some(answer)
}

/// The model's instructions with the sources and order data.
pub fn system_prompt(
    shop: &str,
    passages: &[Passage],
    orders: &[OrderFacts],
    language: Language,
) -> String {
    let mut out = format!(
        "You are the WhatsApp shopping assistant of {shop}, an online shop. Write short, warm, plain \
WhatsApp messages (no markdown headings or tables).\n\
Rules:\n\
- Answer only from the SOURCES and ORDERS below. Never invent prices, stock, delivery dates, \
order details or policies.\n\
- Cite each source you use by its id in square brackets, e.g. [kb:1a2b3c4d].\n\
- If the sources and orders do not answer the question, reply with exactly HANDOFF and nothing else; \
a person will take over.\n\
- Answer in the shopper's language ({}).\n\nSOURCES:\n",
        match language {
            Language::English => "English",
            Language::Malay => "Malay or Indonesian, as they write",
        }
    );
    if passages.is_empty() {
        out.push_str("(none)\n");
    }
    for passage in passages {
        out.push_str(&format!("[{}] {}", passage.citation, passage.title));
        if !passage.section.is_empty() {
            out.push_str(" › ");
            out.push_str(&passage.section.join(" › "));
        }
        if !passage.url.is_empty() {
            out.push_str(&format!(" ({})", passage.url));
        }
        out.push('\n');
        out.push_str(passage.text.trim());
        out.push_str("\n\n");
    }
    out.push_str("ORDERS (this shopper's, newest first):\n");
    if orders.is_empty() {
        out.push_str("(none found for this WhatsApp number)\n");
    }
    for order in orders {
        out.push_str(&describe_order(order, Language::English));
        if !order.items.is_empty() {
            out.push_str(" Items: ");
            out.push_str(&order.items.join("; "));
            out.push('.');
        }
        out.push('\n');
    }
    out
}

/// The fixed phrases, in the shopper's language.
pub struct Phrases;

impl Phrases {
    pub fn escalated(language: Language) -> &'static str {
        match language {
            Language::English => {
                "I'm passing this to a person on our team; they'll reply here as soon as they can."
            }
            Language::Malay => {
                "Saya serahkan perkara ini kepada seorang kakitangan kami; mereka akan membalas di sini secepat mungkin."
            }
        }
    }

    pub fn not_sure(language: Language) -> &'static str {
        match language {
            Language::English => {
                "I'm not sure about that and I don't want to guess. I'm passing your question to a person on our team; they'll reply here soon."
            }
            Language::Malay => {
                "Saya tidak pasti tentang itu dan tidak mahu meneka. Soalan anda saya serahkan kepada kakitangan kami; mereka akan membalas di sini."
            }
        }
    }

    pub fn holding(language: Language) -> &'static str {
        match language {
            Language::English => {
                "Thanks for your message! I'm a little slow right now; I'll answer you here in a moment."
            }
            Language::Malay => {
                "Terima kasih atas mesej anda! Saya agak perlahan sekarang; saya akan menjawab di sini sebentar lagi."
            }
        }
    }

    pub fn greeting(language: Language, shop: &str) -> String {
        match language {
            Language::English => format!(
                "Hi! This is {shop}'s assistant. Ask me about products, delivery, returns or your order, or type \"human\" to talk to our team."
            ),
            Language::Malay => format!(
                "Hai! Ini pembantu {shop}. Tanya saya tentang produk, penghantaran, pulangan atau pesanan anda, atau taip \"manusia\" untuk bercakap dengan pasukan kami."
            ),
        }
    }

    pub fn no_orders(language: Language) -> &'static str {
        match language {
            Language::English => {
                "I can't find an order placed with this WhatsApp number. If you ordered with another number, please send the order number from your confirmation (8 characters), or type \"human\" to talk to our team."
            }
            Language::Malay => {
                "Saya tidak menjumpai pesanan dengan nombor WhatsApp ini. Jika anda memesan dengan nombor lain, sila hantar nombor pesanan (8 aksara), atau taip \"manusia\" untuk bercakap dengan pasukan kami."
            }
        }
    }

    pub fn linked(language: Language, name: &str) -> String {
        match language {
            Language::English => format!(
                "Thanks, {name}: this WhatsApp number is now linked to your account. Ask me about your orders any time."
            ),
            Language::Malay => format!(
                "Terima kasih, {name}: nombor WhatsApp ini kini dipautkan kepada akaun anda. Tanya saya tentang pesanan anda bila-bila masa."
            ),
        }
    }

    pub fn link_wrong(language: Language) -> &'static str {
        match language {
            Language::English => {
                "That code doesn't match. Please check it on your account page and send it again, exactly as shown."
            }
            Language::Malay => {
                "Kod itu tidak sepadan. Sila semak di halaman akaun anda dan hantar sekali lagi, tepat seperti yang ditunjukkan."
            }
        }
    }

    pub fn link_unknown(language: Language) -> &'static str {
        match language {
            Language::English => {
                "There's no code waiting for this WhatsApp number (codes work for 30 minutes). Make a new one on your account page, with this number saved in your details."
            }
            Language::Malay => {
                "Tiada kod menunggu untuk nombor WhatsApp ini (kod sah selama 30 minit). Buat kod baharu di halaman akaun anda, dengan nombor ini disimpan dalam butiran anda."
            }
        }
    }

    pub fn unknown_order(language: Language) -> &'static str {
        match language {
            Language::English => {
                "I can't find that order number for this WhatsApp number. Please check it against your confirmation; for an order placed with another number, our team can help (type \"human\")."
            }
            Language::Malay => {
                "Saya tidak menjumpai nombor pesanan itu untuk nombor WhatsApp ini. Sila semak pengesahan anda; untuk pesanan dengan nombor lain, pasukan kami boleh membantu (taip \"manusia\")."
            }
        }
    }
}

/// Splits a reply into WhatsApp messages of at most `max` characters,
/// at paragraph, then sentence, then word boundaries.
pub fn split_reply(text: &str, max: usize) -> Vec<String> {
    let text = text.trim();
    if text.chars().count() <= max {
        return vec![text.to_string()];
    }
    // Pieces that each fit: sentences (with their trailing space), words
    // for a sentence longer than a message.
    let mut pieces: Vec<String> = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = text.chars().collect();
    for (i, c) in chars.iter().enumerate() {
        current.push(*c);
        let boundary = (matches!(c, '.' | '!' | '?')
            && chars.get(i + 1).is_none_or(|n| n.is_whitespace()))
            || (*c == '\n' && chars.get(i + 1) == Some(&'\n'));
        if boundary {
            pieces.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    let mut fitted = Vec::new();
    for piece in pieces {
        if piece.chars().count() <= max {
            fitted.push(piece);
            continue;
        }
        let mut part = String::new();
        for word in piece.split_inclusive(' ') {
            if part.chars().count() + word.chars().count() > max && !part.is_empty() {
                fitted.push(std::mem::take(&mut part));
            }
            if word.chars().count() > max {
                let w: Vec<char> = word.chars().collect();
                for chunk in w.chunks(max) {
                    fitted.push(chunk.iter().collect());
                }
            } else {
                part.push_str(word);
            }
        }
        if !part.is_empty() {
            fitted.push(part);
        }
    }
    let mut messages = Vec::new();
    let mut message = String::new();
    for piece in fitted {
        if message.chars().count() + piece.chars().count() > max && !message.is_empty() {
            messages.push(message.trim().to_string());
            message.clear();
        }
        message.push_str(&piece);
    }
    if !message.trim().is_empty() {
        messages.push(message.trim().to_string());
    }
    messages.retain(|m| !m.is_empty());
    messages
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passage(text: &str) -> Passage {
        Passage {
            citation: "kb:0000abcd".into(),
            id: "policies/shipping.md#1".into(),
            document: "policies/shipping.md".into(),
            title: "Shipping".into(),
            section: vec!["Shipping".into(), "East Malaysia".into()],
            text: text.into(),
            url: "/help/shipping".into(),
            kind: "policy".into(),
            language: "en".into(),
            product_id: None,
            score: 0.5,
            keyword_score: Some(8.0),
            vector_score: Some(0.5),
        }
    }

    #[test]
    fn short_replies_are_one_message() {
        assert_eq!(split_reply("Hello there.", 1600), vec!["Hello there."]);
    }

    #[test]
    fn long_replies_split_at_sentences_and_keep_everything_in_order() {
        let sentence = "This sentence is exactly fifty characters long ok. ";
        let text = sentence.repeat(70);
        let parts = split_reply(&text, 1600);
        assert!(parts.len() >= 3, "{}", parts.len());
        for part in &parts {
            assert!(part.chars().count() <= 1600);
            assert!(part.ends_with('.'), "split mid-sentence: {part:?}");
        }
        let joined: String = parts.join(" ");
        assert_eq!(
            joined.split_whitespace().count(),
            text.split_whitespace().count()
        );
    }

    #[test]
    fn a_sentence_longer_than_a_message_splits_at_words() {
        let text = "word ".repeat(500);
        let parts = split_reply(&text, 300);
        assert!(parts.iter().all(|p| p.chars().count() <= 300));
        assert_eq!(parts.join(" ").split_whitespace().count(), 500);
    }

    #[test]
    fn offline_answer_picks_the_sentences_that_match_and_cites() {
        let p = passage(
            "We ship across Malaysia. Delivery to Sabah and Sarawak takes 4 to 7 working days. \
             Orders are packed within one day. Gift wrapping is free.",
        );
        let answer = offline_answer("how long to sabah?", &[p], Language::English).unwrap();
        assert!(
            answer.starts_with("Delivery to Sabah and Sarawak takes 4 to 7 working days."),
            "{answer}"
        );
        assert!(!answer.contains("Gift wrapping"), "{answer}");
        assert!(
            answer.contains("Source: Shipping › East Malaysia [kb:0000abcd] /help/shipping"),
            "{answer}"
        );
    }

    #[test]
    fn table_rows_read_as_sentences() {
        let p = passage("| Zone | Days |\n|---|---|\n| Sabah | 4-7 working days |");
        let answer = offline_answer("sabah days", &[p], Language::English).unwrap();
        assert!(answer.starts_with("Sabah: 4-7 working days."), "{answer}");
        assert!(
            !answer.contains("Zone"),
            "the header row is dropped: {answer}"
        );
        // The chunker's rendering of the same table.
        let p = passage(
            "Where | After dispatch\nKlang Valley | 1 to 2 working days\nSabah, Sarawak and Labuan | 4 to 7 working days",
        );
        let answer =
            offline_answer("how long is delivery to sabah?", &[p], Language::English).unwrap();
        assert!(
            answer.starts_with("Sabah, Sarawak and Labuan: 4 to 7 working days.\n"),
            "{answer}"
        );
    }

    #[test]
    fn evidence_gate_uses_either_score() {
        let settings = crate::config::Settings::load(&crate::config::ConfigSources::default())
            .unwrap()
            .chat;
        let mut p = passage("x");
        p.vector_score = Some(0.05);
        p.keyword_score = Some(0.5);
        assert!(!evidence(&[p.clone()], &settings).0);
        p.keyword_score = Some(settings.evidence_keyword + 1.0);
        assert!(evidence(&[p.clone()], &settings).0);
        assert!(!evidence(&[], &settings).0);
    }

    #[test]
    fn another_shoppers_order_number_is_not_found() {
        let order = OrderFacts {
            number: "0193a1b2".into(),
            public_id: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b".into(),
            status: "paid".into(),
            placed: "1 Nov 2026".into(),
            total: "RM 10.00".into(),
            items: vec![],
            carrier: None,
            shipment_status: None,
            tracking_number: None,
            tracking_url: None,
        };
        let orders = [order];
        assert_eq!(
            pick_order(&orders, Some("0193A1B2")),
            OrderPick::Found(&orders[0])
        );
        assert_eq!(pick_order(&orders, Some("deadbee1")), OrderPick::NotTheirs);
        assert_eq!(pick_order(&orders, None), OrderPick::Found(&orders[0]));
        assert_eq!(pick_order(&[], None), OrderPick::NoOrders);
    }
}
