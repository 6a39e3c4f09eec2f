//! The catalog as knowledge-base documents: every product becomes a
//! markdown document (name, category, description, options with prices,
//! stock state) keyed `product:<slug>`, fingerprinted by its text, so a
//! sync re-embeds only products whose text changed. Stock appears as a
//! state ("in stock", "only 3 left", "sold out"), not a count, so orders
//! do not churn the index; the assistant reads live stock from the catalog.

use crate::catalog::{CatalogSnapshot, Product, SortOrder};

/// A product rendered for the knowledge base.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductDocument {
    pub key: String,
    pub product_id: i64,
    pub title: String,
    pub url: String,
    pub tags: Vec<String>,
    pub markdown: String,
}

/// Every product document's key starts with this.
pub const KEY_PREFIX: &str = "product:";

pub fn key_of(slug: &str) -> String {
    format!("{KEY_PREFIX}{slug}")
}

pub fn documents(snapshot: &CatalogSnapshot) -> Vec<ProductDocument> {
    snapshot
        .listing(None, SortOrder::Name)
        .into_iter()
        .map(|p| document(p))
        .collect()
}

pub fn document(product: &Product) -> ProductDocument {
    let mut md = format!("# {}\n\n", product.name);
    md.push_str(&format!(
        "{} is in our {} range. Price: {}. Availability: {}.\n\n",
        product.name,
        product.category_name,
        product.price_label(),
        product.stock.label().to_lowercase()
    ));
    md.push_str("## Description\n\n");
    md.push_str(product.description.trim());
    md.push_str("\n\n");
    if product.has_options() {
        md.push_str("## Options and prices\n\n");
        for variant in &product.variants {
            md.push_str(&format!(
                "- {}: {} ({})\n",
                variant.title,
                variant.price,
                variant.stock.label().to_lowercase()
            ));
        }
        md.push('\n');
        if product.has_sizes() {
            let sizes: Vec<&str> = {
                let mut sizes: Vec<&str> = Vec::new();
                for size in product.variants.iter().filter_map(|v| v.size.as_deref()) {
                    if !sizes.contains(&size) {
                        sizes.push(size);
                    }
                }
                sizes
            };
            md.push_str(&format!("Sizes: {}.\n", sizes.join(", ")));
        }
        if product.has_colours() {
            md.push_str(&format!("Colours: {}.\n", product.colours().join(", ")));
        }
        md.push('\n');
    }
    if !product.tags.is_empty() {
        md.push_str(&format!("Keywords: {}.\n", product.tags.join(", ")));
    }
    ProductDocument {
        key: key_of(&product.slug),
        product_id: product.id,
        title: product.name.clone(),
        url: product.url(),
        tags: product.tags.clone(),
        markdown: md,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_demo_product_becomes_a_document_with_its_facts() {
        let snapshot = crate::catalog::demo::demo_snapshot(5);
        let docs = documents(&snapshot);
        assert_eq!(docs.len(), snapshot.product_count());
        let shirt = docs
            .iter()
            .find(|d| d.title == "Kelantan Hand-Drawn Batik Shirt")
            .expect("the batik shirt");
        assert_eq!(shirt.key, "product:kelantan-hand-drawn-batik-shirt");
        assert_eq!(shirt.url, "/products/kelantan-hand-drawn-batik-shirt");
        for fact in [
            "RM 189.00",
            "Batik & Apparel",
            "Sizes: S, M, L, XL, XXL",
            "Indigo",
            "Wash cold",
        ] {
            assert!(
                shirt.markdown.contains(fact),
                "{fact} missing from\n{}",
                shirt.markdown
            );
        }
        let keys: std::collections::HashSet<&str> = docs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(keys.len(), docs.len(), "keys are unique");
    }
}
