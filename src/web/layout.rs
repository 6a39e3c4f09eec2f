//! What every storefront page shares: title, navigation, search box, assets.

use crate::catalog::Category;

pub struct Layout<'a> {
    pub title: String,
    pub meta_description: String,
    /// Categories for the navigation bar; empty on error pages.
    pub categories: &'a [Category],
    /// The search box keeps what the shopper typed.
    pub search_query: &'a str,
    /// Slug of the category being browsed, highlighted in the navigation.
    pub active_category: Option<&'a str>,
}

impl<'a> Layout<'a> {
    pub fn new(title: impl Into<String>, categories: &'a [Category]) -> Self {
        Layout {
            title: title.into(),
            meta_description: "Kedai: batik, kopi, home goods and more, delivered across Malaysia. Ask us anything on WhatsApp.".to_string(),
            categories,
            search_query: "",
            active_category: None,
        }
    }

    pub fn describe(mut self, description: impl Into<String>) -> Self {
        self.meta_description = description.into();
        self
    }

    /// URL of a file under `static/`, fingerprinted so it can be cached forever.
    pub fn asset(&self, path: &str) -> std::borrow::Cow<'static, str> {
        super::assets::url(path)
    }

    pub fn is_active(&self, slug: &str) -> bool {
        self.active_category == Some(slug)
    }
}
