//! Catalog domain types as shoppers see them: products with their variants,
//! prices and stock states, sort orders and pages.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

/// An amount in minor units (sen, cents) of an ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

/// The currencies the shop prices in. Stored as the ISO code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Currency {
    Myr,
    Sgd,
    Usd,
}

impl Currency {
    pub fn parse(code: &str) -> Option<Currency> {
        match code {
            "MYR" => Some(Currency::Myr),
            "SGD" => Some(Currency::Sgd),
            "USD" => Some(Currency::Usd),
            _ => None,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Currency::Myr => "MYR",
            Currency::Sgd => "SGD",
            Currency::Usd => "USD",
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Currency::Myr => "RM",
            Currency::Sgd => "S$",
            Currency::Usd => "US$",
        }
    }
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Self {
        Money { minor, currency }
    }
}

impl fmt::Display for Money {
    /// `RM 1,249.90`: symbol, thousands separators, two decimals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.minor < 0 { "-" } else { "" };
        let abs = self.minor.unsigned_abs();
        let whole = (abs / 100).to_string();
        let mut grouped = String::with_capacity(whole.len() + whole.len() / 3);
        for (i, digit) in whole.chars().enumerate() {
            if i > 0 && (whole.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        write!(
            f,
            "{sign}{} {grouped}.{:02}",
            self.currency.symbol(),
            abs % 100
        )
    }
}

/// How much of something a shopper can still buy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "available", rename_all = "snake_case")]
pub enum StockState {
    InStock,
    Low(i32),
    SoldOut,
}

impl StockState {
    pub fn from_available(available: i32, low_threshold: i32) -> Self {
        if available <= 0 {
            StockState::SoldOut
        } else if available <= low_threshold {
            StockState::Low(available)
        } else {
            StockState::InStock
        }
    }

    pub fn label(&self) -> String {
        match self {
            StockState::InStock => "In stock".to_string(),
            StockState::Low(n) => format!("Only {n} left"),
            StockState::SoldOut => "Sold out".to_string(),
        }
    }

    /// CSS modifier for the stock badge.
    pub fn css(&self) -> &'static str {
        match self {
            StockState::InStock => "in-stock",
            StockState::Low(_) => "low-stock",
            StockState::SoldOut => "sold-out",
        }
    }

    pub fn is_sold_out(&self) -> bool {
        matches!(self, StockState::SoldOut)
    }

    /// A product's state from its variants: sold out only when every
    /// variant is, otherwise judged on the units available across them.
    pub fn of_variants(variants: &[Variant], low_threshold: i32) -> Self {
        if variants.iter().all(|v| v.stock.is_sold_out()) {
            return StockState::SoldOut;
        }
        let total: i32 = variants.iter().map(|v| v.available.max(0)).sum();
        StockState::from_available(total, low_threshold)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Category {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub product_count: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Variant {
    pub id: i64,
    pub sku: String,
    pub title: String,
    pub size: Option<String>,
    pub colour: Option<String>,
    pub price: Money,
    /// Units on hand minus units reserved by unpaid orders.
    pub available: i32,
    pub stock: StockState,
}

#[derive(Debug, Clone, Serialize)]
pub struct Image {
    pub url: String,
    pub alt: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Product {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub description: String,
    pub tags: Vec<String>,
    pub featured: bool,
    pub category_id: i64,
    pub category_slug: String,
    pub category_name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub variants: Vec<Variant>,
    pub images: Vec<Image>,
    /// Cheapest and dearest variant.
    pub min_price: Money,
    pub max_price: Money,
    /// The product's state: sold out only when every variant is.
    pub stock: StockState,
}

impl Product {
    /// `RM 89.00` or `From RM 89.00` when variants differ in price.
    pub fn price_label(&self) -> String {
        if self.min_price == self.max_price {
            self.min_price.to_string()
        } else {
            format!("From {}", self.min_price)
        }
    }

    pub fn url(&self) -> String {
        format!("/products/{}", self.slug)
    }

    pub fn image(&self) -> Option<&Image> {
        self.images.first()
    }

    pub fn has_options(&self) -> bool {
        self.variants.len() > 1
    }

    pub fn has_sizes(&self) -> bool {
        self.variants.iter().any(|v| v.size.is_some())
    }

    pub fn has_colours(&self) -> bool {
        self.variants.iter().any(|v| v.colour.is_some())
    }

    /// The distinct colours, in variant order.
    pub fn colours(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for colour in self.variants.iter().filter_map(|v| v.colour.as_deref()) {
            if !seen.contains(&colour) {
                seen.push(colour);
            }
        }
        seen
    }
}

/// The orders a listing can be sorted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SortOrder {
    /// Featured first, then by name.
    #[default]
    Featured,
    PriceAsc,
    PriceDesc,
    Name,
    Newest,
}

impl SortOrder {
    pub const ALL: [SortOrder; 5] = [
        SortOrder::Featured,
        SortOrder::PriceAsc,
        SortOrder::PriceDesc,
        SortOrder::Name,
        SortOrder::Newest,
    ];

    /// Parses the `sort` query parameter; anything unknown is the default.
    pub fn parse(value: Option<&str>) -> SortOrder {
        match value {
            Some("price_asc") => SortOrder::PriceAsc,
            Some("price_desc") => SortOrder::PriceDesc,
            Some("name") => SortOrder::Name,
            Some("newest") => SortOrder::Newest,
            _ => SortOrder::Featured,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SortOrder::Featured => "featured",
            SortOrder::PriceAsc => "price_asc",
            SortOrder::PriceDesc => "price_desc",
            SortOrder::Name => "name",
            SortOrder::Newest => "newest",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SortOrder::Featured => "Featured",
            SortOrder::PriceAsc => "Price: low to high",
            SortOrder::PriceDesc => "Price: high to low",
            SortOrder::Name => "Name: A to Z",
            SortOrder::Newest => "Newest",
        }
    }

    /// Compares two products in this order; ties break by name, then id,
    /// so every listing is stable across reloads and replicas.
    pub fn compare(self, a: &Product, b: &Product) -> std::cmp::Ordering {
        let primary = match self {
            SortOrder::Featured => b.featured.cmp(&a.featured),
            SortOrder::PriceAsc => a.min_price.minor.cmp(&b.min_price.minor),
            SortOrder::PriceDesc => b.min_price.minor.cmp(&a.min_price.minor),
            SortOrder::Name => std::cmp::Ordering::Equal,
            SortOrder::Newest => b.created_at.cmp(&a.created_at),
        };
        primary
            .then_with(|| a.name.to_lowercase().cmp(&b.name.to_lowercase()))
            .then_with(|| a.id.cmp(&b.id))
    }
}

/// A 1-based page request, clamped to sane bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub page: u64,
    pub per_page: u64,
}

impl PageRequest {
    pub fn new(page: Option<u64>, per_page: u64) -> Self {
        PageRequest {
            page: page.unwrap_or(1).clamp(1, 10_000),
            per_page: per_page.max(1),
        }
    }

    pub fn offset(&self) -> usize {
        ((self.page - 1) * self.per_page) as usize
    }
}

/// One page of a longer list.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub page: u64,
    pub per_page: u64,
    pub total: usize,
}

impl<T> Page<T> {
    /// Cuts the page out of `all`. A page past the end is empty.
    pub fn slice<S: Clone + Into<T>>(all: &[S], request: PageRequest) -> Page<T> {
        let items = all
            .iter()
            .skip(request.offset())
            .take(request.per_page as usize)
            .cloned()
            .map(Into::into)
            .collect();
        Page {
            items,
            page: request.page,
            per_page: request.per_page,
            total: all.len(),
        }
    }

    pub fn total_pages(&self) -> u64 {
        (self.total as u64).div_ceil(self.per_page).max(1)
    }

    /// 1-based index of the first item on the page, for "Showing 25–48 of 220".
    pub fn first_index(&self) -> usize {
        if self.items.is_empty() {
            0
        } else {
            ((self.page - 1) * self.per_page) as usize + 1
        }
    }

    pub fn last_index(&self) -> usize {
        if self.items.is_empty() {
            0
        } else {
            self.first_index() + self.items.len() - 1
        }
    }
}

/// Lower-cases a name into a URL slug: `Batik Shirt (Indigo)` → `batik-shirt-indigo`.
pub fn slugify(name: &str) -> String {
    let mut slug = String::with_capacity(name.len());
    let mut dash = false;
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
            dash = false;
        } else if !dash && !slug.is_empty() {
            slug.push('-');
            dash = true;
        }
    }
    while slug.ends_with('-') {
        slug.pop();
    }
    slug
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_formatted_with_symbol_grouping_and_two_decimals() {
        assert_eq!(Money::new(8900, Currency::Myr).to_string(), "RM 89.00");
        assert_eq!(
            Money::new(124_990, Currency::Myr).to_string(),
            "RM 1,249.90"
        );
        assert_eq!(Money::new(5, Currency::Usd).to_string(), "US$ 0.05");
        assert_eq!(Money::new(-150, Currency::Sgd).to_string(), "-S$ 1.50");
        assert_eq!(
            Money::new(123_456_789, Currency::Myr).to_string(),
            "RM 1,234,567.89"
        );
    }

    #[test]
    fn stock_state_follows_the_threshold() {
        assert_eq!(StockState::from_available(0, 5), StockState::SoldOut);
        assert_eq!(StockState::from_available(-2, 5), StockState::SoldOut);
        assert_eq!(StockState::from_available(5, 5), StockState::Low(5));
        assert_eq!(StockState::from_available(6, 5), StockState::InStock);
        assert_eq!(StockState::Low(3).label(), "Only 3 left");
    }

    #[test]
    fn sort_order_parses_known_values_only() {
        for order in SortOrder::ALL {
            assert_eq!(SortOrder::parse(Some(order.as_str())), order);
        }
        assert_eq!(
            SortOrder::parse(Some("price; DROP TABLE")),
            SortOrder::Featured
        );
        assert_eq!(SortOrder::parse(None), SortOrder::Featured);
    }

    #[test]
    fn pages_are_clamped_and_sliced() {
        let all: Vec<u32> = (1..=50).collect();
        let page: Page<u32> = Page::slice(&all, PageRequest::new(Some(3), 24));
        assert_eq!(page.items, vec![49, 50]);
        assert_eq!(page.total_pages(), 3);
        assert_eq!((page.first_index(), page.last_index()), (49, 50));
        let past: Page<u32> = Page::slice(&all, PageRequest::new(Some(9), 24));
        assert!(past.items.is_empty());
        assert_eq!(PageRequest::new(Some(0), 24).page, 1);
    }

    #[test]
    fn slugs_are_lowercase_ascii_with_single_dashes() {
        assert_eq!(slugify("Batik Shirt (Indigo)"), "batik-shirt-indigo");
        assert_eq!(slugify("  Kopi -- O  "), "kopi-o");
        assert_eq!(slugify("Teh Tarik 3-in-1"), "teh-tarik-3-in-1");
    }
}
