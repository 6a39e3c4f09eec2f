//! Text embeddings for the knowledge base: the embedded default
//! (`local.rs`: hashed word and character n-gram features, deterministic,
//! no download, no network) and, next, Bedrock Titan. The embedder's name
//! and dimension are stored with an index, so a change of embedder means a
//! re-embed, never a mix of vectors from two spaces.

mod bedrock;
pub mod lexicon;
mod local;

pub use bedrock::{BedrockEmbedder, BedrockEmbedderConfig};
pub use local::HashingEmbedder;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("the embedding service is throttling us")]
    Throttled,
    #[error("the embedding service failed: {0}")]
    Failed(String),
}

/// Turns texts into unit-length vectors of a fixed dimension.
#[async_trait::async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// Identifies the vector space, e.g. `local-hash-v1-512`.
    fn name(&self) -> String;
    fn dimensions(&self) -> usize;
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Cosine similarity of two unit vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
