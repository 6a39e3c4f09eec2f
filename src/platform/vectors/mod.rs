//! Vector indexes for the knowledge base: the embedded index (`embedded.rs`:
//! in-process, exact search, persisted to a file) and, next, OpenSearch
//! Serverless. Metadata filters are applied inside the search, so `k`
//! results that match are returned even when better non-matching ones exist.

mod embedded;

pub use embedded::{EmbeddedIndex, IndexError};

/// What a passage is about, for filtering.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PassageMeta {
    /// The source document's key (deletes and re-ingests go by it).
    pub document: String,
    /// `policy`, `faq`, `product`, …
    pub kind: String,
    pub product_id: Option<i64>,
    pub language: String,
    pub tags: Vec<String>,
}

/// Restricts a search; `None` fields do not restrict.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VectorFilter {
    pub kind: Option<String>,
    pub product_id: Option<i64>,
    pub language: Option<String>,
    pub tag: Option<String>,
}

impl VectorFilter {
    pub fn allows(&self, meta: &PassageMeta) -> bool {
        self.kind.as_ref().is_none_or(|k| *k == meta.kind)
            && self.product_id.is_none_or(|p| meta.product_id == Some(p))
            && self.language.as_ref().is_none_or(|l| *l == meta.language)
            && self.tag.as_ref().is_none_or(|t| meta.tags.contains(t))
    }
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorHit {
    pub id: String,
    pub score: f32,
    pub meta: PassageMeta,
}
