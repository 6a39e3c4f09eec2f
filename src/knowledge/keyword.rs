//! BM25 keyword search over the passages, in memory: the same ranking on
//! SQLite and PostgreSQL, rebuilt from `kb_chunks` whenever they change
//! (10,000 passages index in tens of milliseconds).
//!
//! Terms are lower-cased words (chat shorthand expanded, `lexicon::words`)
//! with a light suffix folding ("refunds", "refunded" → "refund";
//! "deliveries" → "delivery"), without English, Malay and Indonesian
//! function words. Keyword search knows no synonyms: that is the
//! embedder's part. Filters are
//! checked while scoring, so `k` matching passages come back even when
//! better non-matching ones exist.

use std::collections::HashMap;

use crate::platform::embed::lexicon;
use crate::platform::vectors::{PassageMeta, VectorFilter};

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// The words of a text, folded for matching.
pub fn terms(text: &str) -> Vec<String> {
    lexicon::words(text)
        .into_iter()
        .filter(|w| !lexicon::is_stopword(w))
        .map(|w| fold(&w))
        .collect()
}

/// A light, conservative suffix folding for English plurals and verb
/// forms; words of four letters or fewer are left alone.
fn fold(word: &str) -> String {
    let chars = word.chars().count();
    if chars <= 4 || !word.is_ascii() {
        return word.to_string();
    }
    if let Some(stem) = word.strip_suffix("ies") {
        return format!("{stem}y");
    }
    for suffix in ["ing", "ed"] {
        if let Some(stem) = word.strip_suffix(suffix)
            && stem.len() >= 4
        {
            return stem.trim_end_matches('e').to_string();
        }
    }
    if let Some(stem) = word.strip_suffix("es")
        && (stem.ends_with("ss")
            || stem.ends_with("sh")
            || stem.ends_with("ch")
            || stem.ends_with('x'))
    {
        return stem.to_string();
    }
    if let Some(stem) = word.strip_suffix('s')
        && !stem.ends_with('s')
        && !stem.ends_with('u')
    {
        return stem.trim_end_matches('e').to_string();
    }
    word.trim_end_matches('e').to_string()
}

/// A BM25 index.
#[derive(Debug, Default)]
pub struct KeywordIndex {
    lengths: Vec<f32>,
    metas: Vec<PassageMeta>,
    postings: HashMap<String, Vec<(u32, f32)>>,
    average_length: f32,
}

impl KeywordIndex {
    /// Indexes `(text, meta)` pairs; a passage's position is its number.
    pub fn build<'a>(passages: impl IntoIterator<Item = (&'a str, PassageMeta)>) -> Self {
        let mut index = KeywordIndex::default();
        for (position, (text, meta)) in passages.into_iter().enumerate() {
            let words = terms(text);
            let mut counts: HashMap<String, f32> = HashMap::new();
            for word in &words {
                *counts.entry(word.clone()).or_default() += 1.0;
            }
            for (word, tf) in counts {
                index
                    .postings
                    .entry(word)
                    .or_default()
                    .push((position as u32, tf));
            }
            index.lengths.push(words.len() as f32);
            index.metas.push(meta);
        }
        let total: f32 = index.lengths.iter().sum();
        index.average_length = if index.lengths.is_empty() {
            1.0
        } else {
            (total / index.lengths.len() as f32).max(1.0)
        };
        index
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The best `k` passages for `query` that pass `filter`, as
    /// (position, score), best first; passages sharing no term are left out.
    pub fn search(&self, query: &str, filter: &VectorFilter, k: usize) -> Vec<(usize, f32)> {
        let n = self.lengths.len() as f32;
        let mut query_terms = terms(query);
        query_terms.sort();
        query_terms.dedup();
        let mut scores: HashMap<u32, f32> = HashMap::new();
        let mut allowed: HashMap<u32, bool> = HashMap::new();
        for term in &query_terms {
            let Some(postings) = self.postings.get(term) else {
                continue;
            };
            let df = postings.len() as f32;
            let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
            for &(position, tf) in postings {
                let ok = *allowed
                    .entry(position)
                    .or_insert_with(|| filter.allows(&self.metas[position as usize]));
                if !ok {
                    continue;
                }
                let length = self.lengths[position as usize];
                let norm =
                    tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / self.average_length));
                *scores.entry(position).or_default() += idf * norm;
            }
        }
        let mut ranked: Vec<(usize, f32)> = scores
            .into_iter()
            .map(|(position, score)| (position as usize, score))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.truncate(k);
        ranked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(kind: &str) -> PassageMeta {
        PassageMeta {
            kind: kind.into(),
            ..PassageMeta::default()
        }
    }

    #[test]
    fn folding_joins_word_forms_and_leaves_short_words() {
        assert_eq!(terms("Refunds refunded REFUND"), vec!["refund"; 3]);
        assert_eq!(terms("deliveries delivery"), vec!["delivery"; 2]);
        assert_eq!(terms("boxes box"), vec!["box", "box"]);
        assert_eq!(terms("the bus is here"), vec!["bus"]);
        assert_eq!(
            terms("berapa lama penghantaran"),
            vec!["berapa", "lama", "penghantaran"]
        );
    }

    #[test]
    fn rarer_terms_count_more_and_filters_apply_inside() {
        let index = KeywordIndex::build([
            ("shipping to Sabah takes five days", meta("policy")),
            ("shipping is free above RM 150", meta("policy")),
            ("wash batik cold, shipping", meta("guide")),
            ("nothing relevant here", meta("guide")),
        ]);
        let hits = index.search("shipping sabah", &VectorFilter::default(), 10);
        assert_eq!(hits[0].0, 0);
        assert_eq!(
            hits.len(),
            3,
            "the passage without a query term is left out"
        );
        let guides = VectorFilter {
            kind: Some("guide".into()),
            ..VectorFilter::default()
        };
        let hits = index.search("shipping sabah", &guides, 10);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2]);
        assert!(index.search("", &VectorFilter::default(), 5).is_empty());
    }

    #[test]
    fn shorter_passages_win_a_tie_in_term_frequency() {
        let index = KeywordIndex::build([
            (
                "warranty covers the frame and every joint of the chair for a year",
                meta("a"),
            ),
            ("warranty one year", meta("a")),
        ]);
        let hits = index.search("warranty", &VectorFilter::default(), 2);
        assert_eq!(hits[0].0, 1);
        assert!(hits[0].1 > hits[1].1);
    }
}
