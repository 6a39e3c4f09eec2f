//! The embedded embedder: a feature-hashing model. Each text becomes
//! lower-cased word unigrams and bigrams plus character 3- to 5-grams of
//! each word (so "refund", "refunds" and "refunded" share most features,
//! and a typo costs one or two grams, not the word). Every feature is
//! hashed (xxh3, seeded) to a bucket with a hashed sign, weighted by kind
//! (words count more than grams) and by `1 + ln(tf)`.
//!
//! Version 3 (the default) adds a second channel: the shop-vocabulary
//! concepts the text touches (`lexicon.rs`: "parcel", "penghantaran" and
//! "ongkir" all touch *delivery*), one dimension each, not hashed. Each
//! channel is scaled to unit length and the two are mixed so that the
//! concepts make up `CONCEPT_SHARE` of a cosine similarity whatever the
//! text's length: in version 2 the concepts were a few hashed features
//! among hundreds of n-grams, so a long passage drowned them. Measured on
//! the held-out questions (`demo/kb-eval-holdout`, docs/PERFORMANCE.md).
//! Deterministic across runs and machines, ~microseconds per passage,
//! nothing to download.
//!
//! It understands shared word forms and the lexicon's groups, not meaning:
//! what the lexicon does not know ("ip14" for a phone) stays apart.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{EmbedError, Embedder};

const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.7;
const GRAM_WEIGHT: f32 = 0.35;
const SEED: u64 = 0x6b65_6461_6965_6d62;
/// The concepts' share of a cosine similarity between two texts that both
/// touch concepts. Chosen on `demo/kb-eval` (0.2 / 0.35 / 0.5 / 0.65 / 0.8:
/// hybrid recall@5 0.694 / 0.684 / 0.688 / 0.689 / 0.694, MRR@10 0.628 /
/// 0.642 / 0.657 / 0.641 / 0.638), then measured on the held-out set.
const CONCEPT_SHARE: f32 = 0.5;

#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimensions: usize,
    /// Adds the shop-vocabulary concept channel (`lexicon.rs`): version 3.
    concepts: bool,
}

impl HashingEmbedder {
    /// The default: n-gram features plus the shop-vocabulary concepts,
    /// which take the last `lexicon::concept_count()` dimensions.
    pub fn new(dimensions: usize) -> Self {
        HashingEmbedder {
            dimensions: dimensions.max(super::lexicon::concept_count() + 16),
            concepts: true,
        }
    }

    /// Version 1, n-gram features only (kept to measure against).
    pub fn without_concepts(dimensions: usize) -> Self {
        HashingEmbedder {
            concepts: false,
            ..HashingEmbedder::new(dimensions)
        }
    }

    /// One text's vector.
    pub fn vector(&self, text: &str) -> Vec<f32> {
        let mut counts: std::collections::HashMap<(u8, String), f32> =
            std::collections::HashMap::new();
        let words: Vec<String> = if self.concepts {
            super::lexicon::words(text)
        } else {
            text.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect()
        };
        // Function words stay out of the word and gram features (they still
        // form concept phrases such as "how long").
        let content: Vec<&String> = words
            .iter()
            .filter(|w| !self.concepts || !super::lexicon::is_stopword(w))
            .collect();
        for word in &content {
            *counts.entry((0, (*word).clone())).or_default() += 1.0;
            let padded: Vec<char> = format!("<{word}>").chars().collect();
            for n in 3..=5 {
                if padded.len() < n {
                    break;
                }
                for gram in padded.windows(n) {
                    *counts.entry((2, gram.iter().collect())).or_default() += 1.0;
                }
            }
        }
        for pair in content.windows(2) {
            *counts
                .entry((1, format!("{} {}", pair[0], pair[1])))
                .or_default() += 1.0;
        }
        let channel = if self.concepts {
            super::lexicon::concept_count()
        } else {
            0
        };
        let hashed = self.dimensions - channel;
        // Added in the order of their hashes, not the map's (which differs
        // between runs): float sums in one bucket must not depend on it.
        let mut features: Vec<(u64, f32)> = counts
            .into_iter()
            .map(|((kind, feature), tf)| {
                let weight = match kind {
                    0 => WORD_WEIGHT,
                    1 => BIGRAM_WEIGHT,
                    _ => GRAM_WEIGHT,
                };
                let hash = xxh3_64_with_seed(feature.as_bytes(), SEED ^ u64::from(kind));
                (hash, weight * (1.0 + tf.ln()))
            })
            .collect();
        features.sort_unstable_by_key(|(hash, _)| *hash);
        let mut vector = vec![0.0_f32; self.dimensions];
        for (hash, value) in features {
            let bucket = (hash % hashed as u64) as usize;
            let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
            vector[bucket] += sign * value;
        }
        if self.concepts {
            let (grams, concepts) = vector.split_at_mut(hashed);
            for concept in super::lexicon::concept_ids(&words) {
                concepts[concept] += 1.0;
            }
            for x in concepts.iter_mut().filter(|x| **x > 0.0) {
                *x = 1.0 + x.ln();
            }
            scale_to(grams, (1.0 - CONCEPT_SHARE).sqrt());
            scale_to(concepts, CONCEPT_SHARE.sqrt());
        }
        // A text without concepts (or without grams) ends up unit length too.
        scale_to(&mut vector, 1.0);
        vector
    }
}

/// Scales `v` to length `length` (a zero vector stays zero).
fn scale_to(v: &mut [f32], length: f32) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for x in v {
            *x *= length / norm;
        }
    }
}

#[async_trait::async_trait]
impl Embedder for HashingEmbedder {
    fn name(&self) -> String {
        let version = if self.concepts { 3 } else { 1 };
        format!("local-hash-v{version}-{}", self.dimensions)
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|t| self.vector(t)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::super::cosine;
    use super::*;

    #[test]
    fn vectors_are_unit_length_deterministic_and_sized() {
        let embedder = HashingEmbedder::new(512);
        let a = embedder.vector("How long do refunds take?");
        // Few buckets, so that many features share one: the sums must not
        // depend on the order a hash map hands them out.
        let small = HashingEmbedder::new(64);
        let long = "Refunds go back to the card you paid with within 5 to 10 working days";
        assert_eq!(small.vector(long), small.vector(long));
        assert_eq!(a.len(), 512);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(a, embedder.vector("How long do refunds take?"));
        assert_eq!(embedder.name(), "local-hash-v3-512");
        assert_eq!(
            HashingEmbedder::without_concepts(512).name(),
            "local-hash-v1-512"
        );
        assert!(embedder.vector("  ...  ").iter().all(|x| *x == 0.0));
    }

    #[test]
    fn word_forms_and_typos_stay_close_and_other_topics_far() {
        let embedder = HashingEmbedder::new(512);
        let question = embedder.vector("when will my refund arrive");
        let answer = embedder.vector("Refunds arrive on your card within 5 to 10 working days.");
        let typo = embedder.vector("when will my refnud arrive");
        let unrelated = embedder.vector("Our batik shirts are hand-drawn in Kelantan.");
        assert!(cosine(&question, &answer) > cosine(&question, &unrelated) + 0.1);
        assert!(
            cosine(&question, &typo) > 0.6,
            "{}",
            cosine(&question, &typo)
        );
        assert!(cosine(&question, &unrelated) < 0.2);
    }

    #[test]
    fn shared_concepts_bring_paraphrases_closer() {
        let with = HashingEmbedder::new(1024);
        let without = HashingEmbedder::without_concepts(1024);
        let question = "berapa lama penghantaran";
        let answer = "Delivery takes 2 to 4 working days.";
        let close = cosine(&with.vector(question), &with.vector(answer));
        let before = cosine(&without.vector(question), &without.vector(answer));
        assert!(close > before + 0.15, "{before} -> {close}");
    }

    /// Version 2 hashed the concepts among the n-grams, so a long passage
    /// drowned them; the concept channel keeps their share.
    #[test]
    fn a_long_passage_keeps_the_concepts_it_shares() {
        let embedder = HashingEmbedder::new(1024);
        let filler = "Our studio team checks every order by hand, folds each \
            piece in tissue and writes a note; orders placed before noon leave \
            the same afternoon, and the team answers messages from nine to six.";
        let question = embedder.vector("ongkir ke sabah berapa");
        let answer = embedder.vector(&format!(
            "{filler} Postage to Sabah and Sarawak is charged per order. {filler}"
        ));
        let unrelated = embedder.vector(&format!(
            "{filler} Batik is hand-drawn with wax in Kelantan. {filler}"
        ));
        let close = cosine(&question, &answer);
        let far = cosine(&question, &unrelated);
        assert!(close > far + 0.2, "{far} -> {close}");
    }

    #[tokio::test]
    async fn the_trait_embeds_each_text() {
        let embedder = HashingEmbedder::new(64);
        let texts = vec!["kopi".to_string(), "teh tarik".to_string()];
        let vectors = embedder.embed(&texts).await.unwrap();
        assert_eq!(vectors.len(), 2);
        assert_eq!(vectors[1], embedder.vector("teh tarik"));
    }
}
