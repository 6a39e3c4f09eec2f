//! Retrieval quality on a labelled set in the BEIR layout: `corpus.jsonl`
//! (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
//! `qrels/test.tsv` or `qrels.tsv` (`query-id corpus-id score`, a header
//! line allowed). The corpus is chunked and embedded into a temporary
//! in-memory index exactly as ingestion would; passages are ranked per
//! query and collapsed to documents (a document ranks where its best
//! passage does). Prints recall@1/5/10 and MRR@10 for keyword-only,
//! vector-only and hybrid, and can write a TREC run file.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::chunk::{ChunkSize, chunk, parse_markdown};
use super::retrieve::{self, Corpus, Mode, PassageInfo, SearchParams, indexed_text};
use crate::config::KnowledgeSettings;
use crate::platform::embed::Embedder;
use crate::platform::vectors::{
    EmbeddedVectors, IndexOptions, PassageMeta, VectorFilter, VectorRecord, VectorStore,
};

#[derive(Debug, Deserialize)]
struct CorpusLine {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    text: String,
}

#[derive(Debug, Deserialize)]
struct QueryLine {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// A labelled retrieval set.
#[derive(Debug, Default)]
pub struct BeirSet {
    pub corpus: Vec<(String, String, String)>,
    pub queries: Vec<(String, String)>,
    /// query id → relevant document ids (score > 0).
    pub qrels: HashMap<String, HashSet<String>>,
}

fn jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("could not open {}", path.display()))?;
    let mut out = Vec::new();
    for (number, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{} line {}", path.display(), number + 1))?,
        );
    }
    Ok(out)
}

impl BeirSet {
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let corpus: Vec<CorpusLine> = jsonl(&dir.join("corpus.jsonl"))?;
        let queries: Vec<QueryLine> = jsonl(&dir.join("queries.jsonl"))?;
        let qrels_path = [dir.join("qrels").join("test.tsv"), dir.join("qrels.tsv")]
            .into_iter()
            .find(|p| p.exists())
            .context("no qrels/test.tsv or qrels.tsv")?;
        let mut qrels: HashMap<String, HashSet<String>> = HashMap::new();
        for (number, line) in std::fs::read_to_string(&qrels_path)?.lines().enumerate() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() || (number == 0 && fields[0] == "query-id") {
                continue;
            }
            // BEIR has three columns; TREC qrels have four (query 0 doc score).
            let (query, document, score) = match fields.as_slice() {
                [q, d, s] => (*q, *d, *s),
                [q, _, d, s] => (*q, *d, *s),
                _ => bail!(
                    "{} line {}: expected `query-id corpus-id score`",
                    qrels_path.display(),
                    number + 1
                ),
            };
            if score.parse::<f32>().unwrap_or(0.0) > 0.0 {
                qrels
                    .entry(query.to_string())
                    .or_default()
                    .insert(document.to_string());
            }
        }
        Ok(BeirSet {
            corpus: corpus
                .into_iter()
                .map(|c| (c.id, c.title, c.text))
                .collect(),
            queries: queries.into_iter().map(|q| (q.id, q.text)).collect(),
            qrels,
        })
    }
}

/// Which labelled queries count: all, or one half for tuning (`dev`, the
/// 1st, 3rd, 5th… query) and the other held out (`test`, the 2nd, 4th…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    #[default]
    All,
    Dev,
    Test,
}

impl Split {
    fn takes(self, position: usize) -> bool {
        match self {
            Split::All => true,
            Split::Dev => position.is_multiple_of(2),
            Split::Test => !position.is_multiple_of(2),
        }
    }
}

/// Scores of one mode.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scores {
    pub mode: Option<Mode>,
    pub queries: usize,
    pub recall_1: f64,
    pub recall_5: f64,
    pub recall_10: f64,
    pub mrr_10: f64,
    /// Queries whose relevant documents all missed the top 5.
    pub misses_at_5: Vec<String>,
}

/// Recall@k: the share of a query's relevant documents in its top k.
pub fn recall(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|d| relevant.contains(*d))
        .count();
    found as f64 / relevant.len() as f64
}

/// Reciprocal rank of the first relevant document within the top k.
pub fn reciprocal_rank(ranked: &[String], relevant: &HashSet<String>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| relevant.contains(d))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

/// An evaluation: the set ingested into a temporary index.
pub struct Evaluation {
    corpus: Corpus,
    vectors: EmbeddedVectors,
    embedder: Arc<dyn Embedder>,
    params: SearchParams,
    pub passages: usize,
    pub ingest_seconds: f64,
}

impl Evaluation {
    pub async fn ingest(
        set: &BeirSet,
        embedder: Arc<dyn Embedder>,
        settings: &KnowledgeSettings,
    ) -> anyhow::Result<Self> {
        let started = std::time::Instant::now();
        let vectors = EmbeddedVectors::in_memory(IndexOptions::default());
        vectors
            .prepare(&embedder.name(), embedder.dimensions())
            .await?;
        let size = ChunkSize {
            target: settings.chunk_tokens,
            overlap: settings.chunk_overlap,
        };
        let mut passages = Vec::new();
        let mut texts = Vec::new();
        for (id, title, text) in &set.corpus {
            let parsed = parse_markdown(text);
            let title = if title.is_empty() {
                parsed.title.clone().unwrap_or_default()
            } else {
                title.clone()
            };
            for piece in chunk(&parsed, size) {
                texts.push(indexed_text(&title, &piece.section, &piece.text));
                passages.push(PassageInfo {
                    id: format!("{id}#{}", piece.ordinal),
                    title: title.clone(),
                    section: piece.section,
                    text: piece.text,
                    url: String::new(),
                    meta: PassageMeta {
                        document: id.clone(),
                        ..PassageMeta::default()
                    },
                });
            }
        }
        let mut records = Vec::with_capacity(passages.len());
        for (batch_texts, batch) in texts.chunks(64).zip(passages.chunks(64)) {
            let embedded = embedder.embed(batch_texts).await?;
            for (vector, passage) in embedded.into_iter().zip(batch) {
                records.push(VectorRecord {
                    id: passage.id.clone(),
                    vector,
                    meta: passage.meta.clone(),
                });
            }
        }
        vectors.upsert(records).await?;
        let count = passages.len();
        Ok(Evaluation {
            corpus: Corpus::build(passages),
            vectors,
            embedder,
            params: SearchParams {
                mode: Mode::Hybrid,
                candidates: settings.candidates,
                rrf_k: settings.rrf_k,
                keyword_weight: settings.keyword_weight,
            },
            passages: count,
            ingest_seconds: started.elapsed().as_secs_f64(),
        })
    }

    /// Documents ranked for one query, with their scores.
    pub async fn rank(
        &self,
        query: &str,
        mode: Mode,
        depth: usize,
    ) -> anyhow::Result<Vec<(String, f32)>> {
        let passages = retrieve::search(
            &self.corpus,
            &self.vectors,
            self.embedder.as_ref(),
            query,
            &VectorFilter::default(),
            depth * 4,
            SearchParams {
                mode,
                ..self.params
            },
        )
        .await?;
        let mut documents = retrieve::documents_in_order(&passages);
        documents.truncate(depth);
        Ok(documents)
    }

    /// Scores every labelled query in `mode`; writes its TREC run lines.
    pub async fn score(
        &self,
        set: &BeirSet,
        mode: Mode,
        split: Split,
        mut run: Option<&mut dyn Write>,
    ) -> anyhow::Result<Scores> {
        let mut scores = Scores {
            mode: Some(mode),
            ..Scores::default()
        };
        let tag = format!(
            "kedai-{}",
            serde_json::to_value(mode)?.as_str().unwrap_or("run")
        );
        for (position, (id, text)) in set.queries.iter().enumerate() {
            let Some(relevant) = set.qrels.get(id).filter(|_| split.takes(position)) else {
                continue;
            };
            let ranked = self.rank(text, mode, 100).await?;
            if let Some(out) = run.as_deref_mut() {
                for (rank, (document, score)) in ranked.iter().enumerate() {
                    writeln!(out, "{id} Q0 {document} {} {score:.6} {tag}", rank + 1)?;
                }
            }
            let ranked: Vec<String> = ranked.into_iter().map(|(d, _)| d).collect();
            scores.queries += 1;
            scores.recall_1 += recall(&ranked, relevant, 1);
            scores.recall_5 += recall(&ranked, relevant, 5);
            scores.recall_10 += recall(&ranked, relevant, 10);
            scores.mrr_10 += reciprocal_rank(&ranked, relevant, 10);
            if recall(&ranked, relevant, 5) == 0.0 {
                scores.misses_at_5.push(id.clone());
            }
        }
        let n = scores.queries.max(1) as f64;
        scores.recall_1 /= n;
        scores.recall_5 /= n;
        scores.recall_10 /= n;
        scores.mrr_10 /= n;
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[&str]) -> HashSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn recall_and_reciprocal_rank_follow_their_definitions() {
        let ranked: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(recall(&ranked, &set(&["b", "z"]), 1), 0.0);
        assert_eq!(recall(&ranked, &set(&["b", "z"]), 5), 0.5);
        assert_eq!(recall(&ranked, &set(&["a", "d"]), 4), 1.0);
        assert_eq!(reciprocal_rank(&ranked, &set(&["c"]), 10), 1.0 / 3.0);
        assert_eq!(reciprocal_rank(&ranked, &set(&["d"]), 3), 0.0);
    }

    #[test]
    fn the_beir_layout_is_read_with_either_qrels_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("corpus.jsonl"),
            "{\"_id\":\"d1\",\"title\":\"Returns\",\"text\":\"Return within 14 days.\"}\n\n{\"_id\":\"d2\",\"text\":\"Free delivery.\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"_id\":\"q1\",\"text\":\"can return?\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("qrels.tsv"),
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n",
        )
        .unwrap();
        let set = BeirSet::load(dir.path()).unwrap();
        assert_eq!(set.corpus.len(), 2);
        assert_eq!(set.corpus[1].1, "");
        assert_eq!(
            set.qrels["q1"],
            super::tests::set(&["d1"]),
            "score 0 is not relevant"
        );
        std::fs::create_dir(dir.path().join("qrels")).unwrap();
        std::fs::write(dir.path().join("qrels/test.tsv"), "q1 0 d2 1\n").unwrap();
        assert_eq!(
            BeirSet::load(dir.path()).unwrap().qrels["q1"],
            super::tests::set(&["d2"])
        );
    }

    #[tokio::test]
    async fn a_small_set_scores_and_writes_a_run_file() {
        let set = BeirSet {
            corpus: vec![
                (
                    "ship".into(),
                    "Shipping".into(),
                    "Parcels to Sabah take 5 to 7 working days.".into(),
                ),
                (
                    "refund".into(),
                    "Refunds".into(),
                    "Money goes back to your card within 5 days.".into(),
                ),
            ],
            queries: vec![
                ("q1".into(), "how long to sabah".into()),
                ("q2".into(), "unlabelled".into()),
            ],
            qrels: HashMap::from([("q1".to_string(), set(&["ship"]))]),
        };
        let settings = crate::config::Settings::load(&crate::config::ConfigSources::default())
            .unwrap()
            .knowledge;
        let embedder: Arc<dyn Embedder> =
            Arc::new(crate::platform::embed::HashingEmbedder::new(256));
        let evaluation = Evaluation::ingest(&set, embedder, &settings).await.unwrap();
        assert_eq!(evaluation.passages, 2);
        let mut run = Vec::new();
        let scores = evaluation
            .score(&set, Mode::Hybrid, Split::All, Some(&mut run))
            .await
            .unwrap();
        assert_eq!(scores.queries, 1);
        assert_eq!(scores.recall_1, 1.0);
        let run = String::from_utf8(run).unwrap();
        assert!(run.starts_with("q1 Q0 ship 1 "), "{run}");
        assert!(run.lines().next().unwrap().ends_with(" kedai-hybrid"));
        assert_eq!(
            evaluation
                .score(&set, Mode::Hybrid, Split::Test, None)
                .await
                .unwrap()
                .queries,
            0,
            "the only labelled query is the first, in the dev half"
        );
    }
}
