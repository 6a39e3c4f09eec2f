//! The embedded vector index: every vector in one contiguous `Vec<f32>`
//! (a tight loop the compiler vectorises), exact top-k by dot product of
//! unit vectors, filters checked before the dot product. Saved as one file:
//! a JSON header (vector space, dimension, ids and metadata) followed by
//! the little-endian floats, written to a temporary file and renamed, so a
//! crash never leaves half an index. An index made by another embedder (a
//! different space name or dimension) is refused at load: re-embed instead
//! of mixing vectors.

use std::collections::{BinaryHeap, HashMap};
use std::io::Write;
use std::path::Path;

use super::{PassageMeta, VectorFilter, VectorHit};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the vector has {got} dimensions, the index {expected}")]
    Dimensions { expected: usize, got: usize },
    #[error("the index on disk was made by {found:?}, not {expected:?}: re-embed")]
    OtherSpace { expected: String, found: String },
    #[error("the index file is damaged: {0}")]
    Damaged(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    space: String,
    dimensions: usize,
    ids: Vec<String>,
    metas: Vec<PassageMeta>,
}

/// An exact, in-memory vector index.
#[derive(Debug, Clone)]
pub struct EmbeddedIndex {
    space: String,
    dimensions: usize,
    ids: Vec<String>,
    metas: Vec<PassageMeta>,
    vectors: Vec<f32>,
    positions: HashMap<String, usize>,
}

/// Dot product with eight independent accumulators: a plain `zip().sum()`
/// must add in order (floats are not associative), which keeps the
/// compiler from using SIMD lanes; this form it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let (a8, a_rest) = a.split_at(a.len() - a.len() % 8);
    let (b8, b_rest) = b.split_at(a8.len());
    for (x, y) in a8.chunks_exact(8).zip(b8.chunks_exact(8)) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    let rest: f32 = a_rest.iter().zip(b_rest).map(|(x, y)| x * y).sum();
    lanes.iter().sum::<f32>() + rest
}

/// A candidate in the top-k heap, ordered so the heap's top is the worst.
struct Candidate(f32, usize);

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.0.total_cmp(&self.0)
    }
}

impl EmbeddedIndex {
    /// An empty index for vectors of `space` (the embedder's name).
    pub fn new(space: &str, dimensions: usize) -> Self {
        EmbeddedIndex {
            space: space.to_string(),
            dimensions,
            ids: Vec::new(),
            metas: Vec::new(),
            vectors: Vec::new(),
            positions: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn space(&self) -> &str {
        &self.space
    }

    /// Adds or replaces a passage.
    pub fn upsert(
        &mut self,
        id: &str,
        vector: &[f32],
        meta: PassageMeta,
    ) -> Result<(), IndexError> {
        if vector.len() != self.dimensions {
            return Err(IndexError::Dimensions {
                expected: self.dimensions,
                got: vector.len(),
            });
        }
        match self.positions.get(id) {
            Some(&at) => {
                self.vectors[at * self.dimensions..(at + 1) * self.dimensions]
                    .copy_from_slice(vector);
                self.metas[at] = meta;
            }
            None => {
                self.positions.insert(id.to_string(), self.ids.len());
                self.ids.push(id.to_string());
                self.metas.push(meta);
                self.vectors.extend_from_slice(vector);
            }
        }
        Ok(())
    }

    /// Removes every passage of a document; returns how many.
    pub fn delete_document(&mut self, document: &str) -> usize {
        let keep: Vec<bool> = self.metas.iter().map(|m| m.document != document).collect();
        let removed = keep.iter().filter(|k| !**k).count();
        if removed == 0 {
            return 0;
        }
        let dims = self.dimensions;
        let mut index = 0;
        self.ids.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        let mut index = 0;
        self.metas.retain(|_| {
            index += 1;
            keep[index - 1]
        });
        let mut vectors = Vec::with_capacity(self.ids.len() * dims);
        for (i, chunk) in self.vectors.chunks_exact(dims).enumerate() {
            if keep[i] {
                vectors.extend_from_slice(chunk);
            }
        }
        self.vectors = vectors;
        self.positions = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        removed
    }

    /// The `k` passages most similar to `query` among those the filter allows.
    pub fn search(
        &self,
        query: &[f32],
        filter: &VectorFilter,
        k: usize,
    ) -> Result<Vec<VectorHit>, IndexError> {
        if query.len() != self.dimensions {
            return Err(IndexError::Dimensions {
                expected: self.dimensions,
                got: query.len(),
            });
        }
        let mut heap: BinaryHeap<Candidate> = BinaryHeap::with_capacity(k + 1);
        if k == 0 {
            return Ok(Vec::new());
        }
        for (i, vector) in self.vectors.chunks_exact(self.dimensions).enumerate() {
            if !filter.allows(&self.metas[i]) {
                continue;
            }
            let score = dot(vector, query);
            if heap.len() < k {
                heap.push(Candidate(score, i));
            } else if heap.peek().is_some_and(|worst| score > worst.0) {
                heap.pop();
                heap.push(Candidate(score, i));
            }
        }
        let mut hits: Vec<VectorHit> = heap
            .into_iter()
            .map(|Candidate(score, i)| VectorHit {
                id: self.ids[i].clone(),
                score,
                meta: self.metas[i].clone(),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(hits)
    }

    /// Writes the index to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), IndexError> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let header = serde_json::to_vec(&Header {
            space: self.space.clone(),
            dimensions: self.dimensions,
            ids: self.ids.clone(),
            metas: self.metas.clone(),
        })
        .map_err(|e| IndexError::Damaged(e.to_string()))?;
        let temporary = path.with_extension("tmp");
        {
            let mut file = std::io::BufWriter::new(std::fs::File::create(&temporary)?);
            file.write_all(&(header.len() as u64).to_le_bytes())?;
            file.write_all(&header)?;
            for value in &self.vectors {
                file.write_all(&value.to_le_bytes())?;
            }
            file.into_inner()
                .map_err(|e| IndexError::Io(e.into_error()))?
                .sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    /// Reads an index saved for `space`; `Ok(None)` when there is no file.
    pub fn load(path: &Path, space: &str, dimensions: usize) -> Result<Option<Self>, IndexError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let damaged = |what: &str| IndexError::Damaged(what.to_string());
        let length = bytes
            .get(..8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
            .ok_or_else(|| damaged("no header"))? as usize;
        let header: Header = serde_json::from_slice(
            bytes
                .get(8..8 + length)
                .ok_or_else(|| damaged("short header"))?,
        )
        .map_err(|e| IndexError::Damaged(e.to_string()))?;
        if header.space != space || header.dimensions != dimensions {
            return Err(IndexError::OtherSpace {
                expected: format!("{space} ({dimensions})"),
                found: format!("{} ({})", header.space, header.dimensions),
            });
        }
        let floats = &bytes[8 + length..];
        if floats.len() != header.ids.len() * dimensions * 4
            || header.metas.len() != header.ids.len()
        {
            return Err(damaged("the vectors do not match the header"));
        }
        let vectors: Vec<f32> = floats
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let positions = header
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i))
            .collect();
        Ok(Some(EmbeddedIndex {
            space: header.space,
            dimensions,
            ids: header.ids,
            metas: header.metas,
            vectors,
            positions,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::embed::HashingEmbedder;

    fn meta(document: &str, kind: &str, product: Option<i64>) -> PassageMeta {
        PassageMeta {
            document: document.into(),
            kind: kind.into(),
            product_id: product,
            language: "en".into(),
            tags: vec![kind.to_string()],
        }
    }

    fn sample() -> (HashingEmbedder, EmbeddedIndex) {
        let embedder = HashingEmbedder::new(256);
        let mut index = EmbeddedIndex::new("local-hash-v1-256", 256);
        for (id, text, m) in [
            (
                "r1",
                "Refunds reach your card within 10 working days.",
                meta("returns.md", "policy", None),
            ),
            (
                "s1",
                "We ship everywhere in Malaysia; free above RM 150.",
                meta("shipping.md", "policy", None),
            ),
            (
                "p1",
                "Batik Sarong Wrap Skirt, hand-drawn batik, RM 89.",
                meta("product/1", "product", Some(1)),
            ),
            (
                "p2",
                "Kopi Tongkat Ali, strong Malaysian coffee, RM 25.",
                meta("product/2", "product", Some(2)),
            ),
        ] {
            index.upsert(id, &embedder.vector(text), m).unwrap();
        }
        (embedder, index)
    }

    #[test]
    fn the_lane_dot_product_matches_the_plain_one() {
        for len in [0, 1, 7, 8, 9, 31, 256, 1536] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.11).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-3, "{len}");
        }
    }

    #[test]
    fn the_closest_passage_comes_first() {
        let (embedder, index) = sample();
        let hits = index
            .search(
                &embedder.vector("how many days for my refund"),
                &VectorFilter::default(),
                2,
            )
            .unwrap();
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].id, "r1");
        assert!(hits[0].score > hits[1].score);
    }

    #[test]
    fn filters_apply_inside_the_search() {
        let (embedder, index) = sample();
        let only_products = VectorFilter {
            kind: Some("product".into()),
            ..VectorFilter::default()
        };
        // The best match overall is a policy; with the filter, k products come back.
        let hits = index
            .search(&embedder.vector("refund days"), &only_products, 2)
            .unwrap();
        assert_eq!(hits.len(), 2);
        assert!(hits.iter().all(|h| h.meta.kind == "product"));
        let one = VectorFilter {
            product_id: Some(2),
            ..VectorFilter::default()
        };
        let hits = index.search(&embedder.vector("coffee"), &one, 5).unwrap();
        assert_eq!(
            hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
            ["p2"]
        );
    }

    #[test]
    fn upserts_replace_and_deletes_go_by_document() {
        let (embedder, mut index) = sample();
        index
            .upsert(
                "r1",
                &embedder.vector("Refunds take 3 days now."),
                meta("returns.md", "policy", None),
            )
            .unwrap();
        assert_eq!(index.len(), 4);
        assert_eq!(index.delete_document("returns.md"), 1);
        assert_eq!(index.delete_document("returns.md"), 0);
        assert_eq!(index.len(), 3);
        let hits = index
            .search(&embedder.vector("refund"), &VectorFilter::default(), 10)
            .unwrap();
        assert!(hits.iter().all(|h| h.id != "r1"));
        assert!(matches!(
            index.upsert("x", &[0.0; 3], PassageMeta::default()),
            Err(IndexError::Dimensions { .. })
        ));
    }

    #[test]
    fn a_saved_index_loads_the_same_and_refuses_another_space() {
        let (embedder, index) = sample();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kb/vectors.idx");
        index.save(&path).unwrap();
        let loaded = EmbeddedIndex::load(&path, "local-hash-v1-256", 256)
            .unwrap()
            .unwrap();
        let query = embedder.vector("batik skirt");
        assert_eq!(
            loaded.search(&query, &VectorFilter::default(), 4).unwrap(),
            index.search(&query, &VectorFilter::default(), 4).unwrap()
        );
        assert!(matches!(
            EmbeddedIndex::load(&path, "amazon.titan-embed-text-v1", 1536),
            Err(IndexError::OtherSpace { .. })
        ));
        assert!(
            EmbeddedIndex::load(&dir.path().join("none.idx"), "x", 1)
                .unwrap()
                .is_none()
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(matches!(
            EmbeddedIndex::load(&path, "local-hash-v1-256", 256),
            Err(IndexError::Damaged(_))
        ));
    }
}
