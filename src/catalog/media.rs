//! Product pictures for the demo shop, drawn as SVG from the product itself:
//! a colour per category, a pattern per product, and the product's name.
//! Real shops upload photos; the image URL in `product_images` is all the
//! storefront depends on.

use super::model::Product;
use super::views::ProductImage;

/// Splits a name into at most three lines of at most about 20 characters,
/// breaking between words.
fn name_lines(name: &str) -> Vec<&str> {
    const WIDTH: usize = 20;
    let mut lines = Vec::new();
    let mut line_start: Option<usize> = None;
    let mut line_end = 0;
    for (start, word) in name.split(' ').scan(0, |offset, word| {
        let start = *offset;
        *offset += word.len() + 1;
        Some((start, word))
    }) {
        if word.is_empty() {
            continue;
        }
        let end = start + word.len();
        match line_start {
            Some(first) if end - first > WIDTH => {
                lines.push(&name[first..line_end]);
                line_start = Some(start);
            }
            None => line_start = Some(start),
            Some(_) => {}
        }
        line_end = end;
    }
    if let Some(first) = line_start {
        lines.push(&name[first..line_end]);
    }
    lines.truncate(3);
    lines
}

/// A small stable hash (FNV-1a) so the same product always gets the same picture.
fn fnv1a(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ byte as u32).wrapping_mul(0x0100_0193)
    })
}

pub fn product_image(product: &Product) -> ProductImage<'_> {
    let category_hash = fnv1a(&product.category_slug);
    let product_hash = fnv1a(&product.slug);
    let hue = category_hash % 360;
    ProductImage {
        name_lines: name_lines(&product.name),
        category_name: &product.category_name,
        hue,
        accent_hue: (hue + 150 + product_hash % 60) % 360,
        pattern: product_hash % 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_wrap_into_at_most_three_lines() {
        assert_eq!(name_lines("Kopi O"), ["Kopi O"]);
        assert_eq!(
            name_lines("Kelantan Hand-Drawn Batik Shirt"),
            ["Kelantan Hand-Drawn", "Batik Shirt"]
        );
        assert!(name_lines("A very long product name that keeps going and going on").len() <= 3);
    }

    #[test]
    fn the_same_text_hashes_the_same() {
        assert_eq!(fnv1a("batik"), fnv1a("batik"));
        assert_ne!(fnv1a("batik"), fnv1a("kopi"));
    }
}
