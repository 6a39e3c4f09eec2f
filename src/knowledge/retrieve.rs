//! Hybrid retrieval: BM25 over the passages' words and nearest neighbours
//! over their vectors, fused by reciprocal rank (each list contributes
//! `1 / (rrf_k + rank)`), so neither score scale has to be calibrated
//! against the other. Both searches apply the filters inside.

use std::collections::HashMap;

use serde::Serialize;

use super::keyword::KeywordIndex;
use crate::platform::embed::{EmbedError, Embedder};
use crate::platform::vectors::{PassageMeta, VectorError, VectorFilter, VectorStore};

/// A passage held in memory for keyword search and for answers.
#[derive(Debug, Clone)]
pub struct PassageInfo {
    pub id: String,
    pub title: String,
    pub section: Vec<String>,
    pub text: String,
    pub url: String,
    pub meta: PassageMeta,
}

/// The text that is embedded and keyword-indexed: title and section path
/// give a passage the context its own words lack.
pub fn indexed_text(title: &str, section: &[String], text: &str) -> String {
    let mut out = String::with_capacity(title.len() + text.len() + 64);
    out.push_str(title);
    for heading in section {
        if heading != title {
            out.push_str(" — ");
            out.push_str(heading);
        }
    }
    out.push('\n');
    out.push_str(text);
    out
}

/// The passages of one generation with their keyword index.
#[derive(Debug, Default)]
pub struct Corpus {
    passages: Vec<PassageInfo>,
    by_id: HashMap<String, usize>,
    keyword: KeywordIndex,
}

impl Corpus {
    pub fn build(passages: Vec<PassageInfo>) -> Self {
        let texts: Vec<String> = passages
            .iter()
            .map(|p| indexed_text(&p.title, &p.section, &p.text))
            .collect();
        let keyword = KeywordIndex::build(
            texts
                .iter()
                .zip(&passages)
                .map(|(text, p)| (text.as_str(), p.meta.clone())),
        );
        let by_id = passages
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.clone(), i))
            .collect();
        Corpus {
            passages,
            by_id,
            keyword,
        }
    }

    pub fn len(&self) -> usize {
        self.passages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&PassageInfo> {
        self.by_id.get(id).map(|&i| &self.passages[i])
    }

    pub fn documents(&self) -> usize {
        let mut documents: Vec<&str> = self
            .passages
            .iter()
            .map(|p| p.meta.document.as_str())
            .collect();
        documents.dedup();
        documents.len()
    }
}

/// Which searches to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Keyword,
    Vector,
    #[default]
    Hybrid,
}

/// A retrieved passage, ready to show or to put in a prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Passage {
    /// Short and stable while the passage is unchanged: cite it as `[kb:…]`.
    pub citation: String,
    pub id: String,
    pub document: String,
    pub title: String,
    /// Headings above the passage, outermost first.
    pub section: Vec<String>,
    pub text: String,
    pub url: String,
    pub kind: String,
    pub language: String,
    pub product_id: Option<i64>,
    /// The fused score (reciprocal rank fusion in hybrid mode; the BM25 or
    /// cosine score otherwise).
    pub score: f32,
    /// BM25 score, when keyword search found it.
    pub keyword_score: Option<f32>,
    /// Cosine similarity, when vector search found it.
    pub vector_score: Option<f32>,
}

/// The citation id of a passage.
pub fn citation(id: &str) -> String {
    format!(
        "kb:{:08x}",
        xxhash_rust::xxh3::xxh3_64(id.as_bytes()) as u32
    )
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Vectors(#[from] VectorError),
}

/// How a search is run.
#[derive(Debug, Clone, Copy)]
pub struct SearchParams {
    pub mode: Mode,
    /// Candidates taken from each list before fusion.
    pub candidates: usize,
    pub rrf_k: f32,
    /// Weight of the keyword list (the vector list weighs 1).
    pub keyword_weight: f32,
}

/// Searches `corpus` (keywords) and `vectors` (nearest neighbours).
pub async fn search(
    corpus: &Corpus,
    vectors: &dyn VectorStore,
    embedder: &dyn Embedder,
    query: &str,
    filter: &VectorFilter,
    k: usize,
    params: SearchParams,
) -> Result<Vec<Passage>, SearchError> {
    let query = query.trim();
    if query.is_empty() || k == 0 || corpus.is_empty() {
        return Ok(Vec::new());
    }
    let depth = params.candidates.max(k);
    let keyword: Vec<(usize, f32)> = if params.mode == Mode::Vector {
        Vec::new()
    } else {
        corpus.keyword.search(query, filter, depth)
    };
    let semantic: Vec<(usize, f32)> = if params.mode == Mode::Keyword {
        Vec::new()
    } else {
        let vector = embedder
            .embed(&[query.to_string()])
            .await?
            .pop()
            .unwrap_or_default();
        vectors
            .search(&vector, filter, depth)
            .await?
            .into_iter()
            .filter_map(|hit| corpus.by_id.get(&hit.id).map(|&i| (i, hit.score)))
            .collect()
    };
    // position → (fused, keyword score, vector score)
    let mut fused: HashMap<usize, Fused> = HashMap::new();
    for (rank, &(position, score)) in keyword.iter().enumerate() {
        let entry = fused.entry(position).or_default();
        entry.0 += params.keyword_weight * contribution(params, rank, score);
        entry.1 = Some(score);
    }
    for (rank, &(position, score)) in semantic.iter().enumerate() {
        let entry = fused.entry(position).or_default();
        entry.0 += contribution(params, rank, score);
        entry.2 = Some(score);
    }
    let mut ranked: Vec<(usize, Fused)> = fused.into_iter().collect();
    ranked.sort_by(|a, b| b.1.0.total_cmp(&a.1.0).then(a.0.cmp(&b.0)));
    ranked.truncate(k);
    Ok(ranked
        .into_iter()
        .map(|(position, (score, keyword_score, vector_score))| {
            let p = &corpus.passages[position];
            Passage {
                citation: citation(&p.id),
                id: p.id.clone(),
                document: p.meta.document.clone(),
                title: p.title.clone(),
                section: p.section.clone(),
                text: p.text.clone(),
                url: p.url.clone(),
                kind: p.meta.kind.clone(),
                language: p.meta.language.clone(),
                product_id: p.meta.product_id,
                score,
                keyword_score,
                vector_score,
            }
        })
        .collect())
}

/// A passage's fused score with its keyword and vector scores.
type Fused = (f32, Option<f32>, Option<f32>);

fn contribution(params: SearchParams, rank: usize, score: f32) -> f32 {
    match params.mode {
        Mode::Hybrid => 1.0 / (params.rrf_k + rank as f32 + 1.0),
        Mode::Keyword | Mode::Vector => score,
    }
}

/// Documents in the order their best passage ranks (for document-level
/// evaluation and for listing sources).
pub fn documents_in_order(passages: &[Passage]) -> Vec<(String, f32)> {
    let mut seen = std::collections::HashSet::new();
    passages
        .iter()
        .filter(|p| seen.insert(p.document.clone()))
        .map(|p| (p.document.clone(), p.score))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::embed::HashingEmbedder;
    use crate::platform::vectors::{EmbeddedVectors, VectorRecord};

    fn info(id: &str, document: &str, kind: &str, text: &str) -> PassageInfo {
        PassageInfo {
            id: id.into(),
            title: document.into(),
            section: Vec::new(),
            text: text.into(),
            url: String::new(),
            meta: PassageMeta {
                document: document.into(),
                kind: kind.into(),
                language: "en".into(),
                ..PassageMeta::default()
            },
        }
    }

    async fn fixture() -> (Corpus, EmbeddedVectors, HashingEmbedder) {
        let passages = vec![
            info(
                "ship#0",
                "ship",
                "policy",
                "Parcels to Sabah and Sarawak arrive in 5 to 7 working days.",
            ),
            info(
                "refund#0",
                "refund",
                "policy",
                "We refund to the original card within 5 working days of receiving the return.",
            ),
            info(
                "care#0",
                "care",
                "guide",
                "Wash batik by hand in cold water and dry it in the shade.",
            ),
        ];
        let embedder = HashingEmbedder::new(1024);
        let store = EmbeddedVectors::in_memory(Default::default());
        store.prepare(&embedder.name(), 1024).await.unwrap();
        let records = passages
            .iter()
            .map(|p| VectorRecord {
                id: p.id.clone(),
                vector: embedder.vector(&indexed_text(&p.title, &p.section, &p.text)),
                meta: p.meta.clone(),
            })
            .collect();
        store.upsert(records).await.unwrap();
        (Corpus::build(passages), store, embedder)
    }

    fn params(mode: Mode) -> SearchParams {
        SearchParams {
            mode,
            candidates: 10,
            rrf_k: 60.0,
            keyword_weight: 1.0,
        }
    }

    #[tokio::test]
    async fn hybrid_fuses_both_lists_and_keeps_component_scores() {
        let (corpus, store, embedder) = fixture().await;
        let filter = VectorFilter::default();
        let hits = search(
            &corpus,
            &store,
            &embedder,
            "refunded to my card?",
            &filter,
            3,
            params(Mode::Hybrid),
        )
        .await
        .unwrap();
        assert_eq!(hits[0].document, "refund");
        assert!(hits[0].keyword_score.is_some() && hits[0].vector_score.is_some());
        assert!(
            (hits[0].score - 2.0 / 61.0).abs() < 1e-6,
            "first in both lists"
        );
        assert_eq!(hits[0].citation, citation("refund#0"));
        // A typo the keyword list cannot match still finds the passage by its grams.
        let hits = search(
            &corpus,
            &store,
            &embedder,
            "batek washng shadde",
            &filter,
            1,
            params(Mode::Vector),
        )
        .await
        .unwrap();
        assert_eq!(hits[0].document, "care");
        assert!(
            search(
                &corpus,
                &store,
                &embedder,
                "batek washng shadde",
                &filter,
                1,
                params(Mode::Keyword)
            )
            .await
            .unwrap()
            .is_empty()
        );
    }

    #[tokio::test]
    async fn filters_hold_in_every_mode() {
        let (corpus, store, embedder) = fixture().await;
        let guides = VectorFilter {
            kind: Some("guide".into()),
            ..VectorFilter::default()
        };
        for mode in [Mode::Keyword, Mode::Vector, Mode::Hybrid] {
            let hits = search(
                &corpus,
                &store,
                &embedder,
                "refund card wash",
                &guides,
                3,
                params(mode),
            )
            .await
            .unwrap();
            assert!(!hits.is_empty(), "{mode:?}");
            assert!(hits.iter().all(|h| h.kind == "guide"), "{mode:?}");
        }
        assert!(
            search(
                &corpus,
                &store,
                &embedder,
                "  ",
                &VectorFilter::default(),
                3,
                params(Mode::Hybrid)
            )
            .await
            .unwrap()
            .is_empty()
        );
    }

    #[test]
    fn documents_keep_the_rank_of_their_best_passage() {
        let passage = |document: &str, score: f32| Passage {
            citation: String::new(),
            id: String::new(),
            document: document.into(),
            title: String::new(),
            section: Vec::new(),
            text: String::new(),
            url: String::new(),
            kind: String::new(),
            language: String::new(),
            product_id: None,
            score,
            keyword_score: None,
            vector_score: None,
        };
        let ranked = documents_in_order(&[passage("a", 3.0), passage("b", 2.0), passage("a", 1.0)]);
        assert_eq!(ranked, vec![("a".to_string(), 3.0), ("b".to_string(), 2.0)]);
    }
}
