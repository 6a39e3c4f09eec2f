//! Vector indexes for the knowledge base: the embedded index (`embedded.rs`:
//! in-process, exact search, persisted to a file) and, next, OpenSearch
//! Serverless. Metadata filters are applied inside the search, so `k`
//! results that match are returned even when better non-matching ones exist.

mod embedded;
mod hnsw;
mod local;
mod opensearch;
mod quant;
mod simd;

pub use embedded::{EmbeddedIndex, IndexError, IndexOptions};
pub use local::EmbeddedVectors;
pub use opensearch::{OpenSearchConfig, OpenSearchVectors};

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

/// A passage's vector, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct VectorRecord {
    /// Unique per passage; changes when the passage text changes.
    pub id: String,
    pub vector: Vec<f32>,
    pub meta: PassageMeta,
}

#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("the vector service is throttling us")]
    Throttled,
    #[error("the vector service failed: {0}")]
    Failed(String),
}

/// Where passage vectors live: the embedded index (each replica keeps its
/// own, rebuilt from the database's stored vectors) or a shared service.
#[async_trait::async_trait]
pub trait VectorStore: Send + Sync + 'static {
    /// `embedded` or `opensearch`.
    fn backend(&self) -> &'static str;
    /// Makes the store ready for vectors of `space` (the embedder's name)
    /// with `dimensions`; vectors of another space are never mixed in
    /// (the embedded index starts empty, OpenSearch uses an index per space).
    async fn prepare(&self, space: &str, dimensions: usize) -> Result<(), VectorError>;
    /// Adds or replaces passages.
    async fn upsert(&self, records: Vec<VectorRecord>) -> Result<(), VectorError>;
    /// Removes every passage of these documents.
    async fn delete_documents(&self, documents: &[String]) -> Result<(), VectorError>;
    /// The `k` nearest passages that pass `filter`, best first.
    async fn search(
        &self,
        vector: &[f32],
        filter: &VectorFilter,
        k: usize,
    ) -> Result<Vec<VectorHit>, VectorError>;
    /// Passages stored.
    async fn count(&self) -> Result<usize, VectorError>;
}
