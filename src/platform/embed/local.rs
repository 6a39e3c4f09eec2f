//! The embedded embedder: a feature-hashing model. Each text becomes
//! lower-cased word unigrams and bigrams plus character 3- to 5-grams of
//! each word (so "refund", "refunds" and "refunded" share most features,
//! and a typo costs one or two grams, not the word). Every feature is
//! hashed (xxh3, seeded) to one of `dimensions` buckets with a hashed sign,
//! weighted by kind (words count more than grams) and by `1 + ln(tf)`, and
//! the vector is scaled to unit length. Deterministic across runs and
//! machines, ~microseconds per passage, nothing to download.
//!
//! It understands shared word forms, not meaning: synonyms with no common
//! letters ("parcel" / "package") stay apart. Whether it beats keyword
//! search on paraphrased questions is for the retrieval benchmark to show.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{EmbedError, Embedder};

const WORD_WEIGHT: f32 = 1.0;
const BIGRAM_WEIGHT: f32 = 0.7;
const GRAM_WEIGHT: f32 = 0.35;
const SEED: u64 = 0x6b65_6461_6965_6d62;

#[derive(Debug, Clone)]
pub struct HashingEmbedder {
    dimensions: usize,
    /// Adds the shop-vocabulary concept features (`lexicon.rs`): version 2.
    concepts: bool,
}

impl HashingEmbedder {
    /// The default: n-gram features plus shop-vocabulary concepts.
    pub fn new(dimensions: usize) -> Self {
        HashingEmbedder {
            dimensions: dimensions.max(16),
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
        // Version 2 leaves function words out of the word and gram features
        // (they still form concept phrases such as "how long").
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
        if self.concepts {
            for concept in super::lexicon::concepts(&words) {
                *counts.entry((3, concept.to_string())).or_default() += 1.0;
            }
        }
        let mut vector = vec![0.0_f32; self.dimensions];
        for ((kind, feature), tf) in counts {
            let hash = xxh3_64_with_seed(feature.as_bytes(), SEED ^ u64::from(kind));
            let bucket = (hash % self.dimensions as u64) as usize;
            let sign = if hash >> 63 == 0 { 1.0 } else { -1.0 };
            let weight = match kind {
                0 => WORD_WEIGHT,
                1 => BIGRAM_WEIGHT,
                2 => GRAM_WEIGHT,
                _ => super::lexicon::CONCEPT_WEIGHT,
            };
            vector[bucket] += sign * weight * (1.0 + tf.ln());
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            for x in &mut vector {
                *x /= norm;
            }
        }
        vector
    }
}

#[async_trait::async_trait]
impl Embedder for HashingEmbedder {
    fn name(&self) -> String {
        let version = if self.concepts { 2 } else { 1 };
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
        assert_eq!(a.len(), 512);
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(a, embedder.vector("How long do refunds take?"));
        assert_eq!(embedder.name(), "local-hash-v2-512");
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

    #[tokio::test]
    async fn the_trait_embeds_each_text() {
        let embedder = HashingEmbedder::new(64);
        let texts = vec!["kopi".to_string(), "teh tarik".to_string()];
        let vectors = embedder.embed(&texts).await.unwrap();
        assert_eq!(vectors.len(), 2);
        assert_eq!(vectors[1], embedder.vector("teh tarik"));
    }
}
