//! The catalog as an immutable in-memory snapshot.
//!
//! Storefront pages are read thousands of times for every write, and a
//! sea-orm query on SQLite costs more CPU than rendering the page. So each
//! replica holds the whole active catalog in memory, with every listing
//! pre-sorted, and swaps in a new snapshot when the `catalog_state.version`
//! row changes (see `Catalog::refresh_if_changed`). Search keeps using the
//! database's full-text index; only its results are cached per version.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::model::{Category, Product, SortOrder, Variant};

#[derive(Debug, Default)]
pub struct CatalogSnapshot {
    pub version: i64,
    /// What the database looked like when this snapshot was read.
    pub stamp: CatalogStamp,
    pub categories: Vec<Category>,
    products: Vec<Arc<Product>>,
    by_slug: HashMap<String, usize>,
    by_id: HashMap<i64, usize>,
    /// Variant id → (product index, variant index).
    variants: HashMap<i64, (usize, usize)>,
    category_by_slug: HashMap<String, usize>,
    /// Product indexes of each category (and of the whole catalog under
    /// `None`) in every sort order.
    listings: HashMap<(Option<i64>, SortOrder), Vec<usize>>,
    /// Lower-case words of product names and tags, for typo correction.
    vocabulary: Vec<String>,
}

impl CatalogSnapshot {
    /// Builds the snapshot from active products (already carrying their
    /// category names) and the categories.
    pub fn build(version: i64, mut categories: Vec<Category>, products: Vec<Product>) -> Self {
        let products: Vec<Arc<Product>> = products.into_iter().map(Arc::new).collect();
        let mut by_slug = HashMap::with_capacity(products.len());
        let mut by_id = HashMap::with_capacity(products.len());
        let mut variants = HashMap::new();
        for (index, product) in products.iter().enumerate() {
            by_slug.insert(product.slug.clone(), index);
            by_id.insert(product.id, index);
            for (position, variant) in product.variants.iter().enumerate() {
                variants.insert(variant.id, (index, position));
            }
        }
        for category in &mut categories {
            category.product_count = products
                .iter()
                .filter(|p| p.category_id == category.id)
                .count();
        }
        let category_by_slug = categories
            .iter()
            .enumerate()
            .map(|(index, c)| (c.slug.clone(), index))
            .collect();

        let mut listings = HashMap::new();
        let scopes = std::iter::once(None).chain(categories.iter().map(|c| Some(c.id)));
        for scope in scopes {
            let members: Vec<usize> = (0..products.len())
                .filter(|&i| scope.is_none_or(|id| products[i].category_id == id))
                .collect();
            for order in SortOrder::ALL {
                let mut sorted = members.clone();
                sorted.sort_by(|&a, &b| order.compare(&products[a], &products[b]));
                listings.insert((scope, order), sorted);
            }
        }

        let mut words = HashSet::new();
        for product in &products {
            for word in product
                .name
                .split(|c: char| !c.is_alphanumeric())
                .chain(product.tags.iter().map(String::as_str))
            {
                if word.chars().count() >= 3 {
                    words.insert(word.to_lowercase());
                }
            }
        }
        let mut vocabulary: Vec<String> = words.into_iter().collect();
        vocabulary.sort();

        CatalogSnapshot {
            version,
            stamp: CatalogStamp {
                version,
                stock_changed_at: None,
            },
            categories,
            products,
            by_slug,
            by_id,
            variants,
            category_by_slug,
            listings,
            vocabulary,
        }
    }

    pub fn product_count(&self) -> usize {
        self.products.len()
    }

    pub fn product_by_slug(&self, slug: &str) -> Option<&Arc<Product>> {
        self.by_slug.get(slug).map(|&i| &self.products[i])
    }

    pub fn product_by_id(&self, id: i64) -> Option<&Arc<Product>> {
        self.by_id.get(&id).map(|&i| &self.products[i])
    }

    /// A variant with its product.
    pub fn variant(&self, variant_id: i64) -> Option<(&Arc<Product>, &Variant)> {
        let &(product, position) = self.variants.get(&variant_id)?;
        let product = &self.products[product];
        Some((product, &product.variants[position]))
    }

    pub fn category_by_slug(&self, slug: &str) -> Option<&Category> {
        self.category_by_slug
            .get(slug)
            .map(|&i| &self.categories[i])
    }

    /// Products of a category (or of the whole shop) in the given order.
    pub fn listing(&self, category_id: Option<i64>, order: SortOrder) -> Vec<&Arc<Product>> {
        self.listings
            .get(&(category_id, order))
            .map(|indexes| indexes.iter().map(|&i| &self.products[i]).collect())
            .unwrap_or_default()
    }

    /// Featured products that can be bought, up to `limit`.
    pub fn featured(&self, limit: usize) -> Vec<&Arc<Product>> {
        self.listing(None, SortOrder::Featured)
            .into_iter()
            .filter(|p| p.featured && !p.stock.is_sold_out())
            .take(limit)
            .collect()
    }

    /// Other products of the same category, for "You may also like".
    pub fn related(&self, product: &Product, limit: usize) -> Vec<&Arc<Product>> {
        self.listing(Some(product.category_id), SortOrder::Featured)
            .into_iter()
            .filter(|p| p.id != product.id && !p.stock.is_sold_out())
            .take(limit)
            .collect()
    }

    /// Replaces each search term that is not a known word by the closest
    /// known word within a small edit distance ("jakcet" → "jacket").
    /// Returns `None` when nothing was corrected.
    pub fn correct_terms(&self, terms: &[String]) -> Option<Vec<String>> {
        let mut changed = false;
        let corrected = terms
            .iter()
            .map(|term| {
                let length = term.chars().count();
                if length < 4 || self.vocabulary.binary_search(term).is_ok() {
                    return term.clone();
                }
                let allowed = if length <= 5 { 1 } else { 2 };
                let best = self
                    .vocabulary
                    .iter()
                    .filter(|word| word.chars().count().abs_diff(length) <= allowed)
                    .map(|word| (strsim::damerau_levenshtein(term, word), word))
                    .filter(|(distance, _)| *distance <= allowed)
                    .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
                match best {
                    Some((_, word)) => {
                        changed = true;
                        word.clone()
                    }
                    None => term.clone(),
                }
            })
            .collect();
        changed.then_some(corrected)
    }
}

/// Identifies a state of the catalog: the version that catalog edits bump,
/// and the latest stock change (any variant's `updated_at`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatalogStamp {
    pub version: i64,
    pub stock_changed_at: Option<time::OffsetDateTime>,
}

/// A shopper's search, normalised to at most eight lower-case words of
/// letters and digits. Everything else is dropped, so the terms are safe to
/// place in a full-text query of either database.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchTerms(Vec<String>);

impl SearchTerms {
    pub const MAX_TERMS: usize = 8;
    pub const MAX_TERM_CHARS: usize = 40;

    pub fn parse(raw: &str) -> SearchTerms {
        let terms = raw
            .split(|c: char| !c.is_alphanumeric())
            .filter(|t| !t.is_empty())
            .map(|t| {
                t.chars()
                    .take(Self::MAX_TERM_CHARS)
                    .flat_map(char::to_lowercase)
                    .collect::<String>()
            })
            .take(Self::MAX_TERMS)
            .collect();
        SearchTerms(terms)
    }

    pub fn from_terms(terms: Vec<String>) -> SearchTerms {
        SearchTerms(terms)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn terms(&self) -> &[String] {
        &self.0
    }

    /// The normalised query, as shown back to the shopper and used as cache key.
    pub fn joined(&self) -> String {
        self.0.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::model::{Currency, Money, StockState};

    fn product(id: i64, name: &str, category_id: i64, price: i64, featured: bool) -> Product {
        let money = Money::new(price, Currency::Myr);
        Product {
            id,
            slug: crate::catalog::model::slugify(name),
            name: name.to_string(),
            description: String::new(),
            tags: vec!["outdoor".to_string()],
            featured,
            category_id,
            category_slug: format!("c{category_id}"),
            category_name: format!("C{category_id}"),
            created_at: time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(id),
            variants: Vec::new(),
            images: Vec::new(),
            min_price: money,
            max_price: money,
            stock: StockState::InStock,
        }
    }

    fn category(id: i64) -> Category {
        Category {
            id,
            slug: format!("c{id}"),
            name: format!("C{id}"),
            description: String::new(),
            product_count: 0,
        }
    }

    fn snapshot() -> CatalogSnapshot {
        CatalogSnapshot::build(
            7,
            vec![category(1), category(2)],
            vec![
                product(1, "Rain Jacket", 1, 15900, false),
                product(2, "Batik Shirt", 1, 8900, true),
                product(3, "Trail Backpack", 2, 19900, false),
                product(4, "Anorak Jacket", 1, 25900, false),
            ],
        )
    }

    #[test]
    fn listings_are_sorted_and_scoped_to_the_category() {
        let snapshot = snapshot();
        let names = |order| {
            snapshot
                .listing(Some(1), order)
                .iter()
                .map(|p| p.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(SortOrder::PriceAsc),
            ["Batik Shirt", "Rain Jacket", "Anorak Jacket"]
        );
        assert_eq!(
            names(SortOrder::PriceDesc),
            ["Anorak Jacket", "Rain Jacket", "Batik Shirt"]
        );
        assert_eq!(
            names(SortOrder::Name),
            ["Anorak Jacket", "Batik Shirt", "Rain Jacket"]
        );
        assert_eq!(
            names(SortOrder::Newest),
            ["Anorak Jacket", "Batik Shirt", "Rain Jacket"]
        );
        assert_eq!(names(SortOrder::Featured)[0], "Batik Shirt");
        assert_eq!(snapshot.listing(None, SortOrder::Name).len(), 4);
        assert_eq!(snapshot.categories[0].product_count, 3);
        assert_eq!(snapshot.categories[1].product_count, 1);
    }

    #[test]
    fn lookups_by_slug_and_id() {
        let snapshot = snapshot();
        assert_eq!(
            snapshot.product_by_slug("trail-backpack").map(|p| p.id),
            Some(3)
        );
        assert_eq!(
            snapshot.product_by_id(2).map(|p| p.slug.as_str()),
            Some("batik-shirt")
        );
        assert!(snapshot.product_by_slug("nope").is_none());
        assert_eq!(snapshot.category_by_slug("c2").map(|c| c.id), Some(2));
    }

    #[test]
    fn typos_are_corrected_to_known_words() {
        let snapshot = snapshot();
        let terms = |s: &str| SearchTerms::parse(s).terms().to_vec();
        assert_eq!(
            snapshot.correct_terms(&terms("jakcet")),
            Some(terms("jacket"))
        );
        assert_eq!(
            snapshot.correct_terms(&terms("backpak")),
            Some(terms("backpack"))
        );
        assert_eq!(snapshot.correct_terms(&terms("jacket")), None);
        // Short words are left alone: too many near neighbours.
        assert_eq!(snapshot.correct_terms(&terms("bag")), None);
        // Too far from anything known.
        assert_eq!(snapshot.correct_terms(&terms("xylophone")), None);
    }

    #[test]
    fn search_terms_are_normalised_and_bounded() {
        let terms = SearchTerms::parse("  Batik\"* OR shirt; -- DROP  ");
        assert_eq!(terms.terms(), ["batik", "or", "shirt", "drop"]);
        assert!(SearchTerms::parse("\"*()").is_empty());
        assert_eq!(SearchTerms::parse("a b c d e f g h i j").terms().len(), 8);
        assert_eq!(SearchTerms::parse(&"x".repeat(100)).terms()[0].len(), 40);
        assert_eq!(SearchTerms::parse("KOPI Ō").joined(), "kopi ō");
    }
}
