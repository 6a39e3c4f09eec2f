//! What the back-office may write into the catalog, checked before it
//! reaches the database: a product's fields, a variant's fields (a price
//! typed as `49.90` becomes 4990 minor units), a stock adjustment's delta
//! and reason, and the slug a new product's name gives.
//!
//! Every check returns [`EditError::Invalid`] with a sentence an admin can
//! act on; the forms show it next to the values they typed.

use serde::Serialize;
use time::OffsetDateTime;

use super::model::{Currency, Money, slugify};

/// Longest product name, variant title, SKU and option value (the columns'
/// widths).
pub const MAX_NAME: usize = 200;
pub const MAX_SKU: usize = 64;
pub const MAX_OPTION: usize = 40;
pub const MAX_TAGS: usize = 500;
pub const MAX_DESCRIPTION: usize = 20_000;
pub const MAX_NOTE: usize = 500;
/// The dearest price the form takes, in minor units (RM 1,000,000.00).
pub const MAX_PRICE_MINOR: i64 = 100_000_000;
/// The most units one adjustment (or an opening stock) may move.
pub const MAX_UNITS: i32 = 1_000_000;
/// Slugs are at most this long (the column holds 160; room for `-NN`).
const MAX_SLUG: usize = 150;

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// A field is missing or malformed; the message says which and how.
    #[error("{0}")]
    Invalid(String),
    #[error("the SKU {0} is already used by another variant")]
    SkuTaken(String),
    /// Taking the units away would leave fewer on hand than unpaid orders
    /// have reserved.
    #[error(
        "only {on_hand} on hand and {reserved} reserved by unpaid orders: stock cannot go below {reserved}"
    )]
    BelowReserved { on_hand: i32, reserved: i32 },
    #[error("no such product or variant")]
    NotFound,
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
}

impl EditError {
    /// True for the errors an admin can correct in the form (422), false
    /// for a missing record or a database failure.
    pub fn is_correctable(&self) -> bool {
        matches!(
            self,
            EditError::Invalid(_) | EditError::SkuTaken(_) | EditError::BelowReserved { .. }
        )
    }
}

fn invalid(message: impl Into<String>) -> EditError {
    EditError::Invalid(message.into())
}

/// Whether shoppers can find a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    Active,
    /// Hidden from the storefront and search; orders keep showing it.
    Archived,
}

impl ProductStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::Active => "active",
            ProductStatus::Archived => "archived",
        }
    }

    pub fn parse(raw: &str) -> Option<ProductStatus> {
        match raw {
            "active" => Some(ProductStatus::Active),
            "archived" => Some(ProductStatus::Archived),
            _ => None,
        }
    }
}

/// A product's own fields, checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductDraft {
    pub name: String,
    pub category_id: i64,
    pub description: String,
    /// Lower-case, comma-separated, without duplicates.
    pub tags: String,
    pub featured: bool,
}

impl ProductDraft {
    pub fn parse(
        name: &str,
        category_id: &str,
        description: &str,
        tags: &str,
        featured: bool,
    ) -> Result<ProductDraft, EditError> {
        let name = one_line(name);
        if name.is_empty() {
            return Err(invalid("Enter the product's name."));
        }
        if name.chars().count() > MAX_NAME {
            return Err(invalid(format!(
                "A product name has at most {MAX_NAME} characters."
            )));
        }
        let category_id = category_id
            .trim()
            .parse::<i64>()
            .map_err(|_| invalid("Choose a category."))?;
        let description = description.trim().replace("\r\n", "\n");
        if description.chars().count() > MAX_DESCRIPTION {
            return Err(invalid(format!(
                "A description has at most {MAX_DESCRIPTION} characters."
            )));
        }
        let tags = normalise_tags(tags);
        if tags.len() > MAX_TAGS {
            return Err(invalid(format!(
                "The tags take at most {MAX_TAGS} characters together."
            )));
        }
        Ok(ProductDraft {
            name,
            category_id,
            description,
            tags,
            featured,
        })
    }
}

/// A variant's fields, checked; the SKU is upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariantDraft {
    pub sku: String,
    pub title: String,
    pub size: Option<String>,
    pub colour: Option<String>,
    pub price_minor: i64,
}

impl VariantDraft {
    /// `currency` is the one the price is typed in (for the messages).
    pub fn parse(
        sku: &str,
        title: &str,
        size: &str,
        colour: &str,
        price: &str,
        currency: Currency,
    ) -> Result<VariantDraft, EditError> {
        let sku = parse_sku(sku)?;
        let size = option(size, "size")?;
        let colour = option(colour, "colour")?;
        let title = match one_line(title) {
            title if title.is_empty() => default_title(size.as_deref(), colour.as_deref()),
            title if title.chars().count() > MAX_NAME => {
                return Err(invalid(format!(
                    "A variant title has at most {MAX_NAME} characters."
                )));
            }
            title => title,
        };
        let price_minor = parse_price(price, currency)?;
        Ok(VariantDraft {
            sku,
            title,
            size,
            colour,
            price_minor,
        })
    }
}

/// The title the demo shop gives variants: `M / Indigo`, `M`, `Indigo`, or
/// `Standard`.
pub fn default_title(size: Option<&str>, colour: Option<&str>) -> String {
    match (size, colour) {
        (Some(size), Some(colour)) => format!("{size} / {colour}"),
        (Some(size), None) => size.to_string(),
        (None, Some(colour)) => colour.to_string(),
        (None, None) => "Standard".to_string(),
    }
}

fn one_line(raw: &str) -> String {
    raw.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn option(raw: &str, what: &str) -> Result<Option<String>, EditError> {
    let value = one_line(raw);
    if value.chars().count() > MAX_OPTION {
        return Err(invalid(format!(
            "A {what} has at most {MAX_OPTION} characters."
        )));
    }
    Ok((!value.is_empty()).then_some(value))
}

/// A SKU: letters, digits, `-`, `_` and `.`, upper-cased.
pub fn parse_sku(raw: &str) -> Result<String, EditError> {
    let sku = raw.trim().to_ascii_uppercase();
    if sku.is_empty() {
        return Err(invalid("Enter a SKU."));
    }
    if sku.len() > MAX_SKU
        || !sku
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(format!(
            "A SKU is at most {MAX_SKU} letters, digits, dashes, dots or underscores."
        )));
    }
    Ok(sku)
}

/// Lower-cased, trimmed, de-duplicated tags joined with `, `.
pub fn normalise_tags(raw: &str) -> String {
    let mut tags: Vec<String> = Vec::new();
    for tag in raw.split(',').map(one_line).filter(|t| !t.is_empty()) {
        let tag = tag.to_lowercase();
        if !tags.contains(&tag) {
            tags.push(tag);
        }
    }
    tags.join(", ")
}

/// A price typed in the shop's currency, in minor units: `49.90`, `49.9`,
/// `49`, `1,249.90` and `RM 49.90` are accepted; a comma is only a
/// thousands separator (`49,90` is refused rather than read as 4,990), and
/// more than two decimals, a negative or a zero price are refused.
pub fn parse_price(raw: &str, currency: Currency) -> Result<i64, EditError> {
    let example = Money::new(4990, currency);
    let refuse = || {
        invalid(format!(
            "Enter the price in {} like 49.90 (it shows as {example}).",
            currency.code()
        ))
    };
    let mut text = raw.trim();
    for prefix in [currency.symbol(), currency.code()] {
        if let Some(rest) = text.strip_prefix(prefix) {
            text = rest.trim_start();
        }
    }
    if text.is_empty() {
        return Err(invalid("Enter a price."));
    }
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let groups: Vec<&str> = whole.split(',').collect();
    let grouped_well = groups.iter().enumerate().all(|(index, group)| {
        !group.is_empty()
            && group.chars().all(|c| c.is_ascii_digit())
            && (groups.len() == 1
                || if index == 0 {
                    group.len() <= 3
                } else {
                    group.len() == 3
                })
    });
    if !grouped_well {
        return Err(refuse());
    }
    let digits: String = groups.concat();
    let cents = match fraction {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 2 || !f.chars().all(|c| c.is_ascii_digit()) => {
            return Err(refuse());
        }
        Some(f) if f.len() == 1 => f.parse::<i64>().map_err(|_| refuse())? * 10,
        Some(f) => f.parse::<i64>().map_err(|_| refuse())?,
    };
    let minor = digits
        .parse::<i64>()
        .ok()
        .and_then(|units| units.checked_mul(100))
        .and_then(|minor| minor.checked_add(cents))
        .filter(|minor| *minor <= MAX_PRICE_MINOR)
        .ok_or_else(|| {
            invalid(format!(
                "A price is at most {}.",
                Money::new(MAX_PRICE_MINOR, currency)
            ))
        })?;
    if minor == 0 {
        return Err(invalid("A price must be more than zero."));
    }
    Ok(minor)
}

/// Minor units as the price form shows them: `4990` → `49.90`.
pub fn price_input(minor: i64) -> String {
    format!("{}.{:02}", minor / 100, (minor % 100).abs())
}

/// Units on hand a new variant starts with: a whole number, 0 when empty.
pub fn parse_opening_stock(raw: &str) -> Result<i32, EditError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(0);
    }
    raw.parse::<i32>()
        .ok()
        .filter(|units| (0..=MAX_UNITS).contains(units))
        .ok_or_else(|| {
            invalid(format!(
                "The opening stock is a whole number from 0 to {MAX_UNITS}."
            ))
        })
}

/// The change an adjustment makes: `+12`, `12` or `-3`, never 0.
pub fn parse_delta(raw: &str) -> Result<i32, EditError> {
    let raw = raw.trim();
    let unsigned = raw.strip_prefix('+').unwrap_or(raw);
    match unsigned.parse::<i32>() {
        Ok(0) => Err(invalid(
            "Enter how many units to add (12) or take away (-3).",
        )),
        Ok(delta) if delta.abs() <= MAX_UNITS => Ok(delta),
        Ok(_) => Err(invalid(format!(
            "One adjustment moves at most {MAX_UNITS} units."
        ))),
        Err(_) => Err(invalid(
            "Enter how many units to add (12) or take away (-3), as a whole number.",
        )),
    }
}

/// The first free slug for `name` among `taken`: the name's slug, then
/// `-2`, `-3`… A name without letters or digits becomes `product`.
pub fn unique_slug(name: &str, taken: &[String]) -> String {
    let mut base = slugify(name);
    if base.len() > MAX_SLUG {
        base.truncate(MAX_SLUG);
        while base.ends_with('-') {
            base.pop();
        }
    }
    if base.is_empty() {
        base = "product".to_string();
    }
    if !taken.contains(&base) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|candidate| !taken.contains(candidate))
        .unwrap_or(base)
}

/// Why units on hand changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StockReason {
    /// A new variant's first units.
    Opening,
    Received,
    CountCorrection,
    Damaged,
    Returned,
    Other,
    /// A paid order took the units (written by the orders' transaction).
    Sale,
    /// A refund put the units back (written by the orders' transaction).
    Restock,
}

impl StockReason {
    /// The reasons an admin may give an adjustment.
    pub const ADJUSTMENTS: [StockReason; 5] = [
        StockReason::Received,
        StockReason::CountCorrection,
        StockReason::Damaged,
        StockReason::Returned,
        StockReason::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StockReason::Opening => "opening",
            StockReason::Received => "received",
            StockReason::CountCorrection => "count_correction",
            StockReason::Damaged => "damaged",
            StockReason::Returned => "returned",
            StockReason::Other => "other",
            StockReason::Sale => "sale",
            StockReason::Restock => "restock",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            StockReason::Opening => "Opening stock",
            StockReason::Received => "Received from a supplier",
            StockReason::CountCorrection => "Count correction",
            StockReason::Damaged => "Damaged or lost",
            StockReason::Returned => "Returned by a customer",
            StockReason::Other => "Other (say what in the note)",
            StockReason::Sale => "Sold",
            StockReason::Restock => "Restocked after a refund",
        }
    }

    /// Any stored reason (for the ledger's labels).
    pub fn parse(raw: &str) -> Option<StockReason> {
        [
            StockReason::Opening,
            StockReason::Sale,
            StockReason::Restock,
        ]
        .into_iter()
        .chain(StockReason::ADJUSTMENTS)
        .find(|r| r.as_str() == raw)
    }

    /// A reason an admin may choose in the adjustment form.
    pub fn parse_adjustment(raw: &str) -> Result<StockReason, EditError> {
        StockReason::ADJUSTMENTS
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| invalid("Choose a reason for the adjustment."))
    }
}

/// An adjustment, checked: the note is required when the reason is "other".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Adjustment {
    pub delta: i32,
    pub reason: StockReason,
    pub note: String,
}

impl Adjustment {
    pub fn parse(delta: &str, reason: &str, note: &str) -> Result<Adjustment, EditError> {
        let delta = parse_delta(delta)?;
        let reason = StockReason::parse_adjustment(reason)?;
        let note = one_line(note);
        if note.chars().count() > MAX_NOTE {
            return Err(invalid(format!(
                "A note has at most {MAX_NOTE} characters."
            )));
        }
        if reason == StockReason::Other && note.is_empty() {
            return Err(invalid("Say in the note why the stock changed."));
        }
        Ok(Adjustment {
            delta,
            reason,
            note,
        })
    }
}

/// A filter on the back-office's product list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductFilter {
    /// Part of a name or a SKU, any case.
    pub search: String,
    pub category_id: Option<i64>,
    pub status: Option<ProductStatus>,
}

/// A product in the back-office's list, with its stock totals and prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductSummary {
    pub id: i64,
    pub name: String,
    pub slug: String,
    pub status: ProductStatus,
    pub category_name: String,
    pub variants: usize,
    pub on_hand: i64,
    pub reserved: i64,
    /// Cheapest and dearest variant (none without variants).
    pub min_price: Option<Money>,
    pub max_price: Option<Money>,
}

impl ProductSummary {
    pub fn available(&self) -> i64 {
        self.on_hand - self.reserved
    }

    /// `RM 49.90` or `RM 49.90 – RM 59.90`; `—` without variants.
    pub fn price_range(&self) -> String {
        match (self.min_price, self.max_price) {
            (Some(min), Some(max)) if min == max => min.to_string(),
            (Some(min), Some(max)) => format!("{min} – {max}"),
            _ => "—".to_string(),
        }
    }
}

/// A product as the back-office edits it: every field, every variant with
/// its units on hand and reserved, archived or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProductRecord {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub category_id: i64,
    pub description: String,
    pub tags: String,
    pub featured: bool,
    pub status: ProductStatus,
    pub variants: Vec<VariantRecord>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VariantRecord {
    pub id: i64,
    pub product_id: i64,
    pub sku: String,
    pub title: String,
    pub size: Option<String>,
    pub colour: Option<String>,
    pub price: Money,
    pub stock_on_hand: i32,
    pub reserved: i32,
}

impl VariantRecord {
    pub fn available(&self) -> i32 {
        self.stock_on_hand - self.reserved
    }
}

/// A variant whose available units are at or under the threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LowStockVariant {
    pub product_id: i64,
    pub product_name: String,
    pub variant_id: i64,
    pub sku: String,
    pub title: String,
    pub stock_on_hand: i32,
    pub reserved: i32,
}

impl LowStockVariant {
    pub fn available(&self) -> i32 {
        self.stock_on_hand - self.reserved
    }
}

/// One row of a variant's stock ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    pub id: i64,
    pub variant_id: i64,
    pub sku: String,
    pub delta: i32,
    pub stock_after: i32,
    pub reason: String,
    pub note: String,
    pub admin_email: Option<String>,
    pub order_id: Option<i64>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl LedgerEntry {
    pub fn reason_label(&self) -> &str {
        match StockReason::parse(&self.reason) {
            Some(reason) => reason.label(),
            None => &self.reason,
        }
    }
}

/// What an adjustment did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockAdjusted {
    pub sku: String,
    pub before: i32,
    pub after: i32,
    pub reserved: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MYR: Currency = Currency::Myr;

    #[test]
    fn prices_are_read_as_minor_units() {
        for (typed, minor) in [
            ("49.90", 4990),
            ("49.9", 4990),
            ("49", 4900),
            ("0.05", 5),
            (" 49.90 ", 4990),
            ("RM 49.90", 4990),
            ("RM49.90", 4990),
            ("MYR 1249.90", 124_990),
            ("1,249.90", 124_990),
            ("1,000,000", 100_000_000),
            ("007.50", 750),
        ] {
            assert_eq!(parse_price(typed, MYR).ok(), Some(minor), "{typed}");
        }
    }

    #[test]
    fn doubtful_prices_are_refused_not_guessed() {
        for typed in [
            "",
            "  ",
            "49,90",
            "49.999",
            "49.",
            ".90",
            "-5",
            "+5",
            "4 9",
            "49.9a",
            "1e3",
            "RM",
            "0",
            "0.00",
            "1,0000",
            ",100",
            "100,",
            "1,000,000.01",
            "99999999999999999999",
            "S$ 10",
        ] {
            assert!(parse_price(typed, MYR).is_err(), "{typed:?} was accepted");
        }
        let message = parse_price("49,90", MYR).unwrap_err().to_string();
        assert!(message.contains("49.90"), "{message}");
        assert_eq!(price_input(4990), "49.90");
        assert_eq!(price_input(5), "0.05");
        assert_eq!(parse_price(&price_input(123_456), MYR).ok(), Some(123_456));
    }

    #[test]
    fn slugs_come_from_the_name_and_stay_unique() {
        let taken = vec![
            "songket-scarf".to_string(),
            "songket-scarf-2".to_string(),
            "product".to_string(),
        ];
        assert_eq!(
            unique_slug("Batik Shirt (Indigo)", &taken),
            "batik-shirt-indigo"
        );
        assert_eq!(unique_slug("Songket Scarf", &taken), "songket-scarf-3");
        assert_eq!(unique_slug("Songket  scarf!", &[]), "songket-scarf");
        assert_eq!(unique_slug("咖啡", &taken), "product-2");
        let long = unique_slug(&"word ".repeat(60), &[]);
        assert!(long.len() <= 150 && !long.ends_with('-'), "{long}");
    }

    #[test]
    fn drafts_are_trimmed_and_checked() {
        let draft = ProductDraft::parse(
            "  Songket   Scarf ",
            "3",
            " Woven by hand.\r\nIn Terengganu. ",
            "Scarf, songket , SCARF,, gift",
            true,
        )
        .unwrap();
        assert_eq!(draft.name, "Songket Scarf");
        assert_eq!(draft.category_id, 3);
        assert_eq!(draft.description, "Woven by hand.\nIn Terengganu.");
        assert_eq!(draft.tags, "scarf, songket, gift");
        assert!(ProductDraft::parse("", "3", "", "", false).is_err());
        assert!(ProductDraft::parse("Scarf", "", "", "", false).is_err());

        let variant = VariantDraft::parse(" sk-1 ", "", "M", " Indigo ", "59.90", MYR).unwrap();
        assert_eq!(variant.sku, "SK-1");
        assert_eq!(variant.title, "M / Indigo");
        assert_eq!(variant.colour.as_deref(), Some("Indigo"));
        assert_eq!(variant.price_minor, 5990);
        assert!(VariantDraft::parse("SK 1", "", "", "", "1", MYR).is_err());
        assert!(VariantDraft::parse("SK-1", "", "", "", "", MYR).is_err());
    }

    #[test]
    fn adjustments_need_a_delta_and_a_known_reason() {
        let received = Adjustment::parse("+12", "received", " box 4 ").unwrap();
        assert_eq!(
            (received.delta, received.reason),
            (12, StockReason::Received)
        );
        assert_eq!(received.note, "box 4");
        assert_eq!(Adjustment::parse("-3", "damaged", "").unwrap().delta, -3);
        assert!(Adjustment::parse("0", "received", "").is_err());
        assert!(Adjustment::parse("2.5", "received", "").is_err());
        assert!(
            Adjustment::parse("5", "sale", "").is_err(),
            "sales come from orders"
        );
        assert!(
            Adjustment::parse("5", "other", " ").is_err(),
            "other needs a note"
        );
        assert!(Adjustment::parse("5000000", "received", "").is_err());
        assert_eq!(parse_opening_stock("").unwrap(), 0);
        assert!(parse_opening_stock("-1").is_err());
    }
}
