//! Seeds the demo shop: the hand-written catalog in `demo_data`, expanded
//! deterministically into variants, prices, stock levels, dates and images.
//!
//! "Deterministic" matters: two fresh installs (or two test runs) get the
//! same SKUs, the same sold-out products and the same "newest" order, so
//! screenshots, benchmarks and tests can name them.

use time::{Duration, OffsetDateTime, macros::datetime};

use super::demo_data::{CATEGORIES, DemoProduct};
use super::model::slugify;
use super::repo::{NewCategory, NewProduct, NewVariant};

/// The day the demo shop "opened"; product dates spread over the 150 days after it.
const OPENED: OffsetDateTime = datetime!(2026-06-01 09:00 UTC);

/// A tiny deterministic generator (SplitMix64); the demo needs repeatable
/// variety, not statistical quality.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

/// How stocked a demo product is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stocking {
    SoldOut,
    Low,
    Normal,
}

/// The whole demo catalog, ready for `repo::insert_catalog`.
pub fn demo_catalog() -> Vec<NewCategory> {
    let mut global_index = 0u64;
    CATEGORIES
        .iter()
        .enumerate()
        .map(|(category_index, category)| {
            let prefix = sku_prefix(category.slug);
            let products = category
                .products
                .iter()
                .enumerate()
                .map(|(product_index, demo)| {
                    global_index += 1;
                    let mut rng = SplitMix64(global_index * 7919);
                    let stocking = match rng.between(0, 99) {
                        0..=7 => Stocking::SoldOut,
                        8..=19 => Stocking::Low,
                        _ => Stocking::Normal,
                    };
                    let slug = slugify(demo.name);
                    NewProduct {
                        image_url: format!("/media/products/{slug}.svg"),
                        slug,
                        name: demo.name.to_string(),
                        description: demo.description.to_string(),
                        tags: demo.tags.join(","),
                        // One featured product in every category, plus a few more.
                        featured: product_index == 3
                            || (product_index == 11 && category_index % 2 == 0),
                        created_at: OPENED
                            + Duration::days(rng.between(0, 150) as i64)
                            + Duration::minutes(global_index as i64),
                        variants: variants(
                            demo,
                            &format!("{prefix}-{:03}", product_index + 1),
                            stocking,
                            &mut rng,
                        ),
                    }
                })
                .collect();
            NewCategory {
                slug: category.slug.to_string(),
                name: category.name.to_string(),
                description: category.description.to_string(),
                position: category_index as i32,
                products,
            }
        })
        .collect()
}

/// The demo catalog as a read model without any database, for benchmarks
/// and view tests. Ids are assigned in insertion order, as a fresh database would.
pub fn demo_snapshot(low_stock_threshold: i32) -> super::CatalogSnapshot {
    use super::model::{Category, Currency, Image, Money, Product, StockState, Variant};

    let mut categories = Vec::new();
    let mut products = Vec::new();
    let mut variant_id = 0;
    for (category_index, new_category) in demo_catalog().into_iter().enumerate() {
        let category_id = category_index as i64 + 1;
        for new_product in new_category.products {
            let variants: Vec<Variant> = new_product
                .variants
                .into_iter()
                .map(|v| {
                    variant_id += 1;
                    Variant {
                        id: variant_id,
                        sku: v.sku,
                        title: v.title,
                        size: v.size,
                        colour: v.colour,
                        price: Money::new(v.price_minor, Currency::Myr),
                        available: v.stock_on_hand,
                        stock: StockState::from_available(v.stock_on_hand, low_stock_threshold),
                    }
                })
                .collect();
            let min_price = variants
                .iter()
                .map(|v| v.price)
                .min()
                .unwrap_or(Money::new(0, Currency::Myr));
            let max_price = variants.iter().map(|v| v.price).max().unwrap_or(min_price);
            let stock = StockState::of_variants(&variants, low_stock_threshold);
            products.push(Product {
                id: products.len() as i64 + 1,
                slug: new_product.slug,
                name: new_product.name.clone(),
                description: new_product.description,
                tags: new_product.tags.split(',').map(str::to_string).collect(),
                featured: new_product.featured,
                category_id,
                category_slug: new_category.slug.clone(),
                category_name: new_category.name.clone(),
                created_at: new_product.created_at,
                variants,
                images: vec![Image {
                    url: new_product.image_url,
                    alt: new_product.name,
                }],
                min_price,
                max_price,
                stock,
            });
        }
        categories.push(Category {
            id: category_id,
            slug: new_category.slug,
            name: new_category.name,
            description: new_category.description,
            product_count: 0,
        });
    }
    super::CatalogSnapshot::build(1, categories, products)
}

fn variants(
    demo: &DemoProduct,
    sku_stem: &str,
    stocking: Stocking,
    rng: &mut SplitMix64,
) -> Vec<NewVariant> {
    let sizes: Vec<Option<&str>> = if demo.sizes.is_empty() {
        vec![None]
    } else {
        demo.sizes.iter().copied().map(Some).collect()
    };
    let colours: Vec<Option<&str>> = if demo.colours.is_empty() {
        vec![None]
    } else {
        demo.colours.iter().copied().map(Some).collect()
    };
    let first_size = demo.sizes.first().copied();
    let mut out = Vec::with_capacity(sizes.len() * colours.len());
    for colour in &colours {
        for size in &sizes {
            let title = match (size, colour) {
                (Some(size), Some(colour)) => format!("{size} / {colour}"),
                (Some(size), None) => size.to_string(),
                (None, Some(colour)) => colour.to_string(),
                (None, None) => "Standard".to_string(),
            };
            let stock_on_hand = match stocking {
                Stocking::SoldOut => 0,
                Stocking::Low => rng.between(0, 3) as i32,
                // Now and then a single size or colour has sold out.
                Stocking::Normal if rng.between(0, 9) == 0 && sizes.len() * colours.len() > 1 => 0,
                Stocking::Normal => rng.between(6, 80) as i32,
            };
            let index = out.len() + 1;
            out.push(NewVariant {
                sku: format!("{sku_stem}-{index:02}"),
                title,
                size: size.map(str::to_string),
                colour: colour.map(str::to_string),
                price_minor: price_for(demo.price, first_size, *size),
                currency: "MYR",
                stock_on_hand,
            });
        }
    }
    // A low-stock product keeps at least one unit somewhere, or it would be sold out.
    if stocking == Stocking::Low && out.iter().all(|v| v.stock_on_hand == 0) {
        out[0].stock_on_hand = 2;
    }
    out
}

/// Clothing sizes cost the same; bigger packs and beds cost more, with a
/// bulk discount, rounded to 10 sen.
fn price_for(base: i64, first_size: Option<&str>, size: Option<&str>) -> i64 {
    let factor = match (first_size.and_then(quantity), size.and_then(quantity)) {
        (Some(first), Some(this)) if this > first => (this / first).powf(0.85),
        _ => match size {
            Some("Queen") => 1.35,
            Some("King") => 1.6,
            _ => 1.0,
        },
    };
    ((base as f64 * factor / 10.0).round() as i64) * 10
}

/// `250 g` → 250, `1 kg` → 1000, `750 ml` → 750, `1 L` → 1000.
fn quantity(size: &str) -> Option<f64> {
    let (number, unit) = size.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "g" | "ml" => 1.0,
        "kg" | "L" => 1000.0,
        _ => return None,
    };
    Some(number * scale)
}

/// `batik-apparel` → `BAT`.
fn sku_prefix(slug: &str) -> String {
    format!(
        "KD-{}",
        slug.chars()
            .filter(char::is_ascii_alphabetic)
            .take(3)
            .collect::<String>()
            .to_ascii_uppercase()
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_demo_catalog_is_large_varied_and_deterministic() {
        let first = demo_catalog();
        let second = demo_catalog();
        assert!(first.len() >= 8);
        let products: Vec<&NewProduct> = first.iter().flat_map(|c| &c.products).collect();
        assert!(products.len() >= 200, "{} products", products.len());

        let slugs: HashSet<&str> = products.iter().map(|p| p.slug.as_str()).collect();
        assert_eq!(slugs.len(), products.len(), "slugs are unique");
        let skus: HashSet<&str> = products
            .iter()
            .flat_map(|p| p.variants.iter().map(|v| v.sku.as_str()))
            .collect();
        let variant_count: usize = products.iter().map(|p| p.variants.len()).sum();
        assert_eq!(skus.len(), variant_count, "SKUs are unique");

        let sold_out = products
            .iter()
            .filter(|p| p.variants.iter().all(|v| v.stock_on_hand == 0))
            .count();
        let low = products
            .iter()
            .filter(|p| {
                let total: i32 = p.variants.iter().map(|v| v.stock_on_hand).sum();
                total > 0 && total <= 5
            })
            .count();
        assert!(sold_out >= 5, "{sold_out} sold out");
        assert!(low >= 5, "{low} low");
        assert!(products.iter().filter(|p| p.featured).count() >= first.len());
        assert!(products.iter().any(|p| p.variants.len() > 1));

        let again: Vec<(String, i32, i64)> = second
            .iter()
            .flat_map(|c| &c.products)
            .flat_map(|p| {
                p.variants
                    .iter()
                    .map(|v| (v.sku.clone(), v.stock_on_hand, v.price_minor))
            })
            .collect();
        let now: Vec<(String, i32, i64)> = products
            .iter()
            .flat_map(|p| {
                p.variants
                    .iter()
                    .map(|v| (v.sku.clone(), v.stock_on_hand, v.price_minor))
            })
            .collect();
        assert_eq!(now, again);
    }

    #[test]
    fn pack_sizes_cost_more_and_clothing_sizes_do_not() {
        assert_eq!(price_for(2000, Some("250 g"), Some("250 g")), 2000);
        let half_kilo = price_for(2000, Some("250 g"), Some("500 g"));
        assert!(half_kilo > 2000 && half_kilo < 4000, "{half_kilo}");
        assert_eq!(price_for(8900, Some("S"), Some("XL")), 8900);
        assert_eq!(price_for(10000, Some("Single"), Some("King")), 16000);
        assert_eq!(quantity("1 L"), Some(1000.0));
        assert_eq!(quantity("UK 9"), None);
    }
}
