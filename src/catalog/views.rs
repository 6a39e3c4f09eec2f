//! askama templates of the storefront's catalog pages.

use std::sync::Arc;

use askama::Template;

use super::model::{Category, Page, Product, SortOrder};
use crate::web::layout::Layout;

#[derive(Template)]
#[template(path = "catalog/home.html")]
pub struct HomePage<'a> {
    pub layout: Layout<'a>,
    pub featured: Vec<&'a Arc<Product>>,
    pub new_arrivals: Vec<&'a Arc<Product>>,
    pub categories: &'a [Category],
}

#[derive(Template)]
#[template(path = "catalog/category.html")]
pub struct CategoryPage<'a> {
    pub layout: Layout<'a>,
    pub category: &'a Category,
    pub page: Page<&'a Arc<Product>>,
    pub sort: SortOrder,
    pub sort_options: &'static [SortOrder],
    pub pagination: Pagination,
}

#[derive(Template)]
#[template(path = "catalog/search.html")]
pub struct SearchPage<'a> {
    pub layout: Layout<'a>,
    pub query: &'a str,
    pub corrected: Option<&'a str>,
    pub page: Page<&'a Arc<Product>>,
    pub pagination: Pagination,
}

#[derive(Template)]
#[template(path = "catalog/product.html")]
pub struct ProductPage<'a> {
    pub layout: Layout<'a>,
    pub product: &'a Product,
    pub related: Vec<&'a Arc<Product>>,
    pub csrf_token: &'a str,
    pub max_quantity: i32,
}

#[derive(Template)]
#[template(path = "media/product.svg")]
pub struct ProductImage<'a> {
    pub name_lines: Vec<&'a str>,
    pub category_name: &'a str,
    pub hue: u32,
    pub accent_hue: u32,
    pub pattern: u32,
}

/// Links to the pages of a listing: first, last, and two either side of
/// the current one, with gaps between.
pub struct Pagination {
    pub links: Vec<PageLink>,
    pub previous: Option<String>,
    pub next: Option<String>,
}

pub struct PageLink {
    pub number: u64,
    pub url: String,
    pub current: bool,
    /// A "…" placeholder instead of a link.
    pub gap: bool,
}

impl Pagination {
    /// `url_for(n)` builds the URL of page `n`.
    pub fn new(current: u64, total_pages: u64, url_for: impl Fn(u64) -> String) -> Pagination {
        let mut links = Vec::new();
        let mut last_shown = 0;
        for number in 1..=total_pages {
            let near = number.abs_diff(current) <= 2;
            if number == 1 || number == total_pages || near {
                if last_shown + 1 < number {
                    links.push(PageLink {
                        number: 0,
                        url: String::new(),
                        current: false,
                        gap: true,
                    });
                }
                links.push(PageLink {
                    number,
                    url: url_for(number),
                    current: number == current,
                    gap: false,
                });
                last_shown = number;
            }
        }
        Pagination {
            previous: (current > 1 && current <= total_pages).then(|| url_for(current - 1)),
            next: (current < total_pages).then(|| url_for(current + 1)),
            links: if total_pages > 1 { links } else { Vec::new() },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pagination_shows_ends_neighbours_and_gaps() {
        let pagination = Pagination::new(6, 10, |n| format!("?page={n}"));
        let shown: Vec<String> = pagination
            .links
            .iter()
            .map(|l| {
                if l.gap {
                    "…".to_string()
                } else {
                    l.number.to_string()
                }
            })
            .collect();
        assert_eq!(shown, ["1", "…", "4", "5", "6", "7", "8", "…", "10"]);
        assert_eq!(pagination.previous.as_deref(), Some("?page=5"));
        assert_eq!(pagination.next.as_deref(), Some("?page=7"));
        assert!(pagination.links.iter().any(|l| l.current && l.number == 6));
    }

    #[test]
    fn one_page_needs_no_links() {
        let pagination = Pagination::new(1, 1, |n| format!("?page={n}"));
        assert!(pagination.links.is_empty());
        assert!(pagination.previous.is_none() && pagination.next.is_none());
    }
}
