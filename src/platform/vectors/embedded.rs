//! The embedded vector index: every vector in one contiguous `Vec<f32>`,
//! top-k by dot product of unit vectors, filters checked inside the search
//! (never after it, so `k` matching passages come back when better
//! non-matching ones exist). Three ways to search, by size and options:
//!
//! - exact f32: a scan of every row with the SIMD kernels of `simd.rs`,
//!   chosen at run time;
//! - exact int8 (`IndexOptions::quantize`, the default): a scan of an int8
//!   copy (`quant.rs`, a quarter of the bytes), whose best `4k` (at least
//!   40) candidates are re-scored in f32, so returned scores are exact;
//! - HNSW (`hnsw.rs`) from `IndexOptions::hnsw_threshold` passages on,
//!   built and walked with int8 scores when quantised, re-scored in f32. A
//!   filter that few passages pass falls back to the exact scan of those
//!   passages.
//!
//! Rows are never renumbered while a graph exists: deleting marks rows as
//! tombstones (skipped by every search, still walked through by the
//! graph), and replacing a passage's vector tombstones the old row and
//! appends a new one. `prepare_search` does the heavy work, so that
//! `search` can take `&self`: it builds the graph the first time the index
//! is over the threshold, and compacts the rows and rebuilds the graph
//! once tombstones pass a quarter of the rows. Between two calls upserts
//! extend the graph themselves, and without any call searches are exact.
//!
//! Saved as one file: a JSON header (vector space, dimension, ids,
//! metadata, tombstones, graph shape) followed by the little-endian floats
//! and the graph's links, written to a temporary file and renamed, so a
//! crash never leaves half an index; the graph is saved, so loading does
//! not rebuild it. The int8 copy is recomputed at load. An index made by
//! another embedder (a different space name or dimension) is refused at
//! load: re-embed instead of mixing vectors.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use super::hnsw::{GraphHeader, Hnsw, Scored, TopK};
use super::quant::{Quantized, quantize};
use super::simd;
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

/// How the index searches (config `vectors.quantize`, `vectors.hnsw_threshold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    /// Keep an int8 copy of the vectors, scan it and re-score the best
    /// candidates exactly in f32.
    pub quantize: bool,
    /// From this many passages on, `prepare_search` builds an HNSW graph
    /// and searches walk it instead of scanning every row.
    pub hnsw_threshold: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            quantize: true,
            hnsw_threshold: 20_000,
        }
    }
}

/// Candidates the int8 scan passes to the f32 re-scoring: this many times
/// `k`, and at least `RESCORE_MIN`.
const RESCORE_FACTOR: usize = 4;
const RESCORE_MIN: usize = 40;
/// Nodes a graph search keeps while walking (HNSW's `ef`): this many, or
/// twice `k` when that is more. 64 already finds 99.99% of the exact top
/// 10 on the benchmark's 1536-dimension clusters; 128 leaves room for
/// harder data (64 finds only 93% on the 64-dimension clusters of the
/// tests) at about 0.3 ms a query.
const EF_SEARCH: usize = 128;
/// A filtered search scans the passing rows exactly instead of walking
/// the graph while that scan reads at most this many bytes (about a
/// millisecond here: 16,000 int8 rows or 4,000 f32 rows of 1536
/// dimensions; exact, and no slower than a walk that must step over the
/// rejected nodes), and whenever fewer than one passage in
/// `GRAPH_FILTER_MIN_SHARE` passes (a walk would visit mostly rejected
/// nodes).
const EXACT_FILTER_BYTES: usize = 24 << 20;
const GRAPH_FILTER_MIN_SHARE: usize = 20;
/// A filtered walk keeps more nodes: `ef` times the inverse of the share
/// of passages that pass, up to this factor.
const FILTERED_EF_FACTOR: usize = 8;
/// Rows drawn to estimate how many pass a filter.
const FILTER_SAMPLE: usize = 2048;
/// Tombstones are cleared once they pass one row in this many.
const TOMBSTONE_SHARE: usize = 4;

#[derive(serde::Serialize, serde::Deserialize)]
struct Header {
    space: String,
    dimensions: usize,
    /// Every row's id, tombstones included (files before the graph had none).
    ids: Vec<String>,
    metas: Vec<PassageMeta>,
    /// Rows that are tombstones.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deleted: Vec<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    graph: Option<GraphHeader>,
}

/// An in-memory vector index with optional int8 scan and HNSW graph.
#[derive(Clone)]
pub struct EmbeddedIndex {
    space: String,
    dimensions: usize,
    /// Per row, tombstones included.
    ids: Vec<String>,
    metas: Vec<PassageMeta>,
    vectors: Vec<f32>,
    live: Vec<bool>,
    tombstones: usize,
    /// Live rows by id.
    positions: HashMap<String, usize>,
    options: IndexOptions,
    quantized: Option<Quantized>,
    /// Covers every row when present.
    graph: Option<Hnsw>,
    /// `EXACT_FILTER_BYTES`, lowered by tests to walk small graphs.
    exact_filter_bytes: usize,
}

impl std::fmt::Debug for EmbeddedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedIndex")
            .field("space", &self.space)
            .field("dimensions", &self.dimensions)
            .field("passages", &self.len())
            .field("tombstones", &self.tombstones)
            .field("options", &self.options)
            .field("quantized", &self.quantized.is_some())
            .field("graph", &self.graph.is_some())
            .finish()
    }
}

impl EmbeddedIndex {
    /// An empty index for vectors of `space` (the embedder's name), with
    /// the default options.
    pub fn new(space: &str, dimensions: usize) -> Self {
        EmbeddedIndex::from_parts(
            space.to_string(),
            dimensions,
            Vec::new(),
            Vec::new(),
            Vec::new(),
            Vec::new(),
        )
    }

    fn from_parts(
        space: String,
        dimensions: usize,
        ids: Vec<String>,
        metas: Vec<PassageMeta>,
        vectors: Vec<f32>,
        deleted: Vec<usize>,
    ) -> Self {
        let mut live = vec![true; ids.len()];
        for row in deleted {
            live[row] = false;
        }
        let positions = ids
            .iter()
            .enumerate()
            .filter(|(row, _)| live[*row])
            .map(|(row, id)| (id.clone(), row))
            .collect();
        let options = IndexOptions::default();
        let quantized = options
            .quantize
            .then(|| Quantized::from_rows(&vectors, dimensions));
        EmbeddedIndex {
            space,
            dimensions,
            tombstones: live.iter().filter(|l| !**l).count(),
            ids,
            metas,
            vectors,
            live,
            positions,
            options,
            quantized,
            graph: None,
            exact_filter_bytes: EXACT_FILTER_BYTES,
        }
    }

    /// Live passages.
    pub fn len(&self) -> usize {
        self.ids.len() - self.tombstones
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn space(&self) -> &str {
        &self.space
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// The ids of the live passages, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.ids
            .iter()
            .zip(&self.live)
            .filter(|(_, live)| **live)
            .map(|(id, _)| id.as_str())
    }

    pub fn contains(&self, id: &str) -> bool {
        self.positions.contains_key(id)
    }

    pub fn options(&self) -> IndexOptions {
        self.options
    }

    /// Whether searches walk an HNSW graph (see `prepare_search`).
    pub fn has_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// The SIMD kernels this CPU runs, e.g. `avx2+fma` or `portable`.
    pub fn simd_kernel() -> &'static str {
        simd::kernel_name()
    }

    /// Changes the options. Cheap: the int8 copy is made or dropped here
    /// (about 25 ms for 10,000 passages of 1536 dimensions), and a graph is
    /// dropped when the index is under the new threshold; a graph is built
    /// by `prepare_search`.
    pub fn set_options(&mut self, options: IndexOptions) {
        match (options.quantize, self.quantized.is_some()) {
            (true, false) => {
                self.quantized = Some(Quantized::from_rows(&self.vectors, self.dimensions));
            }
            (false, true) => self.quantized = None,
            _ => {}
        }
        if self.len() < options.hnsw_threshold {
            self.graph = None;
        }
        self.options = options;
    }

    /// Does the work that `search` (with `&self`) cannot: builds the HNSW
    /// graph when the index has reached the threshold and has none,
    /// compacts tombstones and rebuilds the graph once tombstones pass a
    /// quarter of the rows, and drops the graph under the threshold. Call
    /// it after a batch of upserts or deletes and after `set_options`;
    /// until then searches are still right, only slower. Building takes
    /// seconds (2 s for 10,000 passages of 1536 dimensions, 10 s for
    /// 50,000), so a caller that serves searches meanwhile can run it on a
    /// clone and swap the clone in.
    pub fn prepare_search(&mut self) {
        if self.len() < self.options.hnsw_threshold {
            self.graph = None;
            self.compact();
            return;
        }
        if self.graph.is_none() || self.tombstones * TOMBSTONE_SHARE > self.ids.len() {
            self.compact();
            self.build_graph();
        }
    }

    fn row(&self, row: usize) -> &[f32] {
        &self.vectors[row * self.dimensions..][..self.dimensions]
    }

    fn build_graph(&mut self) {
        let mut graph = Hnsw::new();
        for _ in 0..self.ids.len() {
            extend_graph(
                &mut graph,
                &self.vectors,
                self.dimensions,
                self.quantized.as_ref(),
            );
        }
        self.graph = Some(graph);
    }

    /// Drops the tombstones, renumbering the rows (and so the graph).
    fn compact(&mut self) {
        if self.tombstones == 0 {
            return;
        }
        let keep = std::mem::take(&mut self.live);
        let dims = self.dimensions;
        let mut to = 0;
        for (from, &kept) in keep.iter().enumerate() {
            if kept {
                if to != from {
                    self.vectors
                        .copy_within(from * dims..(from + 1) * dims, to * dims);
                    self.ids.swap(to, from);
                    self.metas.swap(to, from);
                }
                to += 1;
            }
        }
        self.vectors.truncate(to * dims);
        self.ids.truncate(to);
        self.metas.truncate(to);
        if let Some(quantized) = &mut self.quantized {
            quantized.retain(&keep);
        }
        self.live = vec![true; to];
        self.tombstones = 0;
        self.positions = self
            .ids
            .iter()
            .enumerate()
            .map(|(row, id)| (id.clone(), row))
            .collect();
        self.graph = None;
    }

    fn tombstone(&mut self, row: usize) {
        if self.live[row] {
            self.live[row] = false;
            self.tombstones += 1;
            self.positions.remove(&self.ids[row]);
        }
    }

    /// Adds or replaces a passage. With a graph, a new vector goes into it
    /// at once.
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
        if let Some(&row) = self.positions.get(id) {
            if self.row(row) == vector {
                self.metas[row] = meta;
                return Ok(());
            }
            if self.graph.is_none() {
                let dims = self.dimensions;
                self.vectors[row * dims..(row + 1) * dims].copy_from_slice(vector);
                if let Some(quantized) = &mut self.quantized {
                    quantized.set(row, vector);
                }
                self.metas[row] = meta;
                return Ok(());
            }
            // The graph's links were chosen for the old vector.
            self.tombstone(row);
        }
        let row = self.ids.len();
        self.positions.insert(id.to_string(), row);
        self.ids.push(id.to_string());
        self.metas.push(meta);
        self.vectors.extend_from_slice(vector);
        self.live.push(true);
        if let Some(quantized) = &mut self.quantized {
            quantized.push(vector);
        }
        if let Some(graph) = &mut self.graph {
            extend_graph(
                graph,
                &self.vectors,
                self.dimensions,
                self.quantized.as_ref(),
            );
        }
        Ok(())
    }

    /// Removes every passage of a document; returns how many.
    pub fn delete_document(&mut self, document: &str) -> usize {
        let rows: Vec<usize> = (0..self.ids.len())
            .filter(|&row| self.live[row] && self.metas[row].document == document)
            .collect();
        for &row in &rows {
            self.tombstone(row);
        }
        // Without a graph nothing refers to row numbers: compact now and then.
        if self.graph.is_none() && self.tombstones * TOMBSTONE_SHARE > self.ids.len() {
            self.compact();
        }
        rows.len()
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
        if k == 0 || self.is_empty() {
            return Ok(Vec::new());
        }
        let open = *filter == VectorFilter::default();
        let allowed = |row: usize| self.live[row] && (open || filter.allows(&self.metas[row]));
        let walk = match &self.graph {
            Some(graph) if graph.len() == self.ids.len() => self
                .walk_factor(open, &allowed)
                .map(|factor| (graph, factor)),
            _ => None,
        };
        let best = match walk {
            Some((graph, factor)) => {
                let ef = EF_SEARCH.max(2 * k) * factor;
                self.search_graph(graph, query, k, ef, |node| allowed(node as usize))
            }
            None => self.search_exact(query, (0..self.ids.len()).filter(|&row| allowed(row)), k),
        };
        let mut hits: Vec<VectorHit> = best
            .into_iter()
            .map(|Scored { score, node }| VectorHit {
                id: self.ids[node as usize].clone(),
                score,
                meta: self.metas[node as usize].clone(),
            })
            .collect();
        hits.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        Ok(hits)
    }

    /// Whether a search with this filter should walk the graph rather
    /// than scan the passing rows, and if so how many times the usual
    /// `ef` it should keep. How many rows pass is estimated from a sample,
    /// so the decision costs the same at any size.
    fn walk_factor(&self, open: bool, allowed: &impl Fn(usize) -> bool) -> Option<usize> {
        let live = self.len();
        if open {
            return Some(1);
        }
        let rows = self.ids.len();
        let matching = if rows <= FILTER_SAMPLE {
            (0..rows).filter(|&row| allowed(row)).count()
        } else {
            let mut rng = fastrand::Rng::with_seed(0x6b65_6461_6966);
            let passed = (0..FILTER_SAMPLE)
                .filter(|_| allowed(rng.usize(..rows)))
                .count();
            passed * rows / FILTER_SAMPLE
        };
        let row_bytes = match self.quantized {
            Some(_) => self.dimensions,
            None => self.dimensions * 4,
        };
        if matching * row_bytes <= self.exact_filter_bytes
            || matching * GRAPH_FILTER_MIN_SHARE < live
        {
            return None;
        }
        Some((live / matching).clamp(1, FILTERED_EF_FACTOR))
    }

    /// Exact top-k over `rows`: the int8 scan and f32 re-scoring when
    /// quantised, else the f32 scan.
    fn search_exact(
        &self,
        query: &[f32],
        rows: impl Iterator<Item = usize>,
        k: usize,
    ) -> Vec<Scored> {
        match &self.quantized {
            Some(quantized) => {
                let mut codes = vec![0; self.dimensions];
                quantize(query, &mut codes);
                let mut candidates = TopK::new((k * RESCORE_FACTOR).max(RESCORE_MIN));
                simd::scan_i8(quantized.codes(), &codes, rows, |row, dot| {
                    candidates.push(quantized.scale(row) * dot as f32, row as u32);
                });
                self.rescore(query, candidates.into_sorted(), k)
            }
            None => {
                let mut best = TopK::new(k);
                simd::scan_f32(&self.vectors, query, rows, |row, score| {
                    best.push(score, row as u32);
                });
                best.into_sorted()
            }
        }
    }

    /// The `k` best of `candidates` by exact f32 score.
    fn rescore(&self, query: &[f32], candidates: Vec<Scored>, k: usize) -> Vec<Scored> {
        let mut best = TopK::new(k);
        for candidate in candidates {
            best.push(
                simd::dot(self.row(candidate.node as usize), query),
                candidate.node,
            );
        }
        best.into_sorted()
    }

    fn search_graph(
        &self,
        graph: &Hnsw,
        query: &[f32],
        k: usize,
        ef: usize,
        accept: impl Fn(u32) -> bool,
    ) -> Vec<Scored> {
        match &self.quantized {
            Some(quantized) => {
                let mut codes = vec![0; self.dimensions];
                quantize(query, &mut codes);
                let score = |node: u32| {
                    let row = node as usize;
                    quantized.scale(row) * simd::dot_i8(quantized.row(row), &codes) as f32
                };
                let found = graph.search(score, ef, accept);
                self.rescore(query, found, k)
            }
            None => {
                let score = |node: u32| simd::dot(self.row(node as usize), query);
                let mut found = graph.search(score, ef, accept);
                found.truncate(k);
                found
            }
        }
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
            deleted: (0..self.ids.len()).filter(|&r| !self.live[r]).collect(),
            graph: self.graph.as_ref().map(Hnsw::header),
        })
        .map_err(|e| IndexError::Damaged(e.to_string()))?;
        let temporary = path.with_extension("tmp");
        {
            let mut file =
                std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&temporary)?);
            file.write_all(&(header.len() as u64).to_le_bytes())?;
            file.write_all(&header)?;
            let mut bytes = Vec::with_capacity(1 << 16);
            for chunk in self.vectors.chunks(1 << 14) {
                bytes.clear();
                bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                file.write_all(&bytes)?;
            }
            if let Some(graph) = &self.graph {
                graph.write_to(&mut file)?;
            }
            file.into_inner()
                .map_err(|e| IndexError::Io(e.into_error()))?
                .sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        Ok(())
    }

    /// Reads an index saved for `space`; `Ok(None)` when there is no file.
    /// The index has the default options (set yours with `set_options`);
    /// a saved graph is kept.
    pub fn load(path: &Path, space: &str, dimensions: usize) -> Result<Option<Self>, IndexError> {
        let mut file = match std::fs::File::open(path) {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        let size = file.metadata()?.len();
        let damaged = |what: &str| IndexError::Damaged(what.to_string());
        if size < 8 {
            return Err(damaged("no header"));
        }
        let mut length = [0; 8];
        file.read_exact(&mut length)?;
        let length = u64::from_le_bytes(length);
        if length > size - 8 {
            return Err(damaged("short header"));
        }
        let mut header = vec![0; length as usize];
        file.read_exact(&mut header)?;
        let header: Header =
            serde_json::from_slice(&header).map_err(|e| IndexError::Damaged(e.to_string()))?;
        if header.space != space || header.dimensions != dimensions {
            return Err(IndexError::OtherSpace {
                expected: format!("{space} ({dimensions})"),
                found: format!("{} ({})", header.space, header.dimensions),
            });
        }
        let rows = header.ids.len();
        let graph_words = header.graph.as_ref().map_or(0, |g| g.words);
        let expected = 8 + length + (rows * dimensions * 4 + graph_words * 4) as u64;
        if size != expected
            || header.metas.len() != rows
            || header.deleted.iter().any(|&row| row >= rows)
            || header.graph.as_ref().is_some_and(|g| g.nodes != rows)
        {
            return Err(damaged("the vectors do not match the header"));
        }
        let mut vectors = vec![0.0_f32; rows * dimensions];
        read_words(&mut file, &mut vectors, f32::from_le_bytes)?;
        let graph = match &header.graph {
            Some(graph_header) => {
                let mut words = vec![0_u32; graph_words];
                read_words(&mut file, &mut words, u32::from_le_bytes)?;
                Hnsw::from_words(graph_header, &words).map_err(IndexError::Damaged)?
            }
            None => None,
        };
        let mut index = EmbeddedIndex::from_parts(
            header.space,
            dimensions,
            header.ids,
            header.metas,
            vectors,
            header.deleted,
        );
        if index.positions.len() != index.len() {
            return Err(damaged("an id appears twice"));
        }
        index.graph = graph;
        Ok(Some(index))
    }
}

/// Adds the next row to `graph`. Rows are compared by their int8 codes
/// when there are some: a quarter of the memory traffic, and the links
/// need only be about right, since searches re-score in f32.
fn extend_graph(graph: &mut Hnsw, vectors: &[f32], dims: usize, quantized: Option<&Quantized>) {
    match quantized {
        Some(quantized) => graph.insert(|a, b| {
            let (a, b) = (a as usize, b as usize);
            let dot = simd::dot_i8(quantized.row(a), quantized.row(b));
            quantized.scale(a) * quantized.scale(b) * dot as f32
        }),
        None => {
            let row = |r: u32| &vectors[r as usize * dims..][..dims];
            graph.insert(|a, b| simd::dot(row(a), row(b)));
        }
    }
}

/// Fills `out` with little-endian 4-byte words read from `file`, a
/// megabyte at a time.
fn read_words<T>(
    file: &mut impl Read,
    out: &mut [T],
    decode: impl Fn([u8; 4]) -> T,
) -> std::io::Result<()> {
    let mut bytes = vec![0_u8; 1 << 20];
    for chunk in out.chunks_mut(1 << 18) {
        let bytes = &mut bytes[..chunk.len() * 4];
        file.read_exact(bytes)?;
        for (value, word) in chunk.iter_mut().zip(bytes.chunks_exact(4)) {
            *value = decode([word[0], word[1], word[2], word[3]]);
        }
    }
    Ok(())
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

    /// `count` unit vectors of `dims` around `clusters` random centres.
    fn clustered(count: usize, dims: usize, clusters: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut gaussian = move || {
            let (u, v) = (rng.f32().max(1e-7), rng.f32());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        };
        let unit = |mut v: Vec<f32>| {
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        };
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| unit((0..dims).map(|_| gaussian()).collect()))
            .collect();
        let spread = 0.8 / (dims as f32).sqrt();
        (0..count)
            .map(|i| {
                let centre = &centres[i % clusters];
                unit(centre.iter().map(|c| c + spread * gaussian()).collect())
            })
            .collect()
    }

    /// Every tenth passage is a `faq`, the rest `policy`; ten per document.
    fn numbered_meta(i: usize) -> PassageMeta {
        PassageMeta {
            document: format!("doc-{}", i / 10),
            kind: if i % 10 == 3 { "faq" } else { "policy" }.into(),
            product_id: None,
            language: "en".into(),
            tags: Vec::new(),
        }
    }

    /// An index of `vectors`; with a graph, small test indexes walk it for
    /// every filter that any passage passes.
    fn filled(vectors: &[Vec<f32>], options: IndexOptions) -> EmbeddedIndex {
        let mut index = EmbeddedIndex::new("test", vectors[0].len());
        if options.hnsw_threshold == 0 {
            index.exact_filter_bytes = 0;
        }
        index.set_options(options);
        for (i, vector) in vectors.iter().enumerate() {
            index
                .upsert(&format!("c{i}"), vector, numbered_meta(i))
                .unwrap();
        }
        index.prepare_search();
        index
    }

    fn ids(hits: &[VectorHit]) -> Vec<String> {
        hits.iter().map(|h| h.id.clone()).collect()
    }

    fn overlap(a: &[VectorHit], b: &[VectorHit]) -> usize {
        a.iter().filter(|h| b.iter().any(|o| o.id == h.id)).count()
    }

    const EXACT: IndexOptions = IndexOptions {
        quantize: false,
        hnsw_threshold: usize::MAX,
    };
    const QUANTISED: IndexOptions = IndexOptions {
        quantize: true,
        hnsw_threshold: usize::MAX,
    };
    const GRAPH: IndexOptions = IndexOptions {
        quantize: true,
        hnsw_threshold: 0,
    };

    #[test]
    fn quantised_search_returns_the_exact_top_ten() {
        let mut rng = fastrand::Rng::with_seed(7);
        let random: Vec<Vec<f32>> = (0..3000)
            .map(|_| {
                let v: Vec<f32> = (0..384).map(|_| rng.f32() * 2.0 - 1.0).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                v.iter().map(|x| x / norm).collect()
            })
            .collect();
        let exact = filled(&random, EXACT);
        let quantised = filled(&random, QUANTISED);
        let (mut found, mut wanted) = (0, 0);
        for query in random.iter().step_by(60) {
            let open = VectorFilter::default();
            let truth = exact.search(query, &open, 10).unwrap();
            let hits = quantised.search(query, &open, 10).unwrap();
            found += overlap(&truth, &hits);
            wanted += truth.len();
            // Re-scored in f32: the shared hits carry the exact scores.
            for hit in &hits {
                if let Some(same) = truth.iter().find(|t| t.id == hit.id) {
                    assert!((same.score - hit.score).abs() < 1e-5);
                }
            }
        }
        assert!(found as f64 >= 0.99 * wanted as f64, "{found} of {wanted}");
    }

    #[test]
    fn graph_search_finds_the_exact_neighbours_of_clustered_vectors() {
        let vectors = clustered(4000, 64, 40, 1);
        let exact = filled(&vectors, EXACT);
        let graph = filled(&vectors, GRAPH);
        assert!(graph.has_graph() && !exact.has_graph());
        let queries = clustered(100, 64, 40, 2);
        let (mut found, mut wanted) = (0, 0);
        for query in &queries {
            let open = VectorFilter::default();
            let truth = exact.search(query, &open, 10).unwrap();
            found += overlap(&truth, &graph.search(query, &open, 10).unwrap());
            wanted += truth.len();
        }
        assert!(found as f64 >= 0.95 * wanted as f64, "{found} of {wanted}");
    }

    #[test]
    fn filters_inside_the_graph_and_the_quantised_scan_still_return_k_matches() {
        let vectors = clustered(4000, 64, 40, 3);
        let exact = filled(&vectors, EXACT);
        let quantised = filled(&vectors, QUANTISED);
        // One passage in ten passes: the graph is walked anyway.
        let mut graph = filled(&vectors, GRAPH);
        let faqs = VectorFilter {
            kind: Some("faq".into()),
            ..VectorFilter::default()
        };
        for i in [0, 1, 2, 4, 5] {
            // The query is a policy passage itself: the best vector fails the filter.
            let query = &vectors[i];
            let best = exact.search(query, &VectorFilter::default(), 1).unwrap();
            assert_eq!(best[0].meta.kind, "policy");
            let truth = exact.search(query, &faqs, 10).unwrap();
            for index in [&quantised, &graph] {
                let hits = index.search(query, &faqs, 10).unwrap();
                assert_eq!(hits.len(), 10);
                assert!(hits.iter().all(|h| h.meta.kind == "faq"));
                assert!(overlap(&truth, &hits) >= 9, "{:?}", ids(&hits));
            }
        }
        // Few matches: the graph index scans the matching rows exactly.
        graph.exact_filter_bytes = EXACT_FILTER_BYTES;
        let hits = graph.search(&vectors[0], &faqs, 10).unwrap();
        assert_eq!(
            ids(&hits),
            ids(&exact.search(&vectors[0], &faqs, 10).unwrap())
        );
    }

    #[test]
    fn deleted_and_replaced_passages_leave_the_graph_results() {
        let vectors = clustered(2000, 32, 20, 4);
        let mut index = filled(&vectors, GRAPH);
        let open = VectorFilter::default();
        let hits = index.search(&vectors[25], &open, 5).unwrap();
        assert_eq!(hits[0].id, "c25");
        assert_eq!(index.delete_document("doc-2"), 10);
        assert_eq!(index.len(), 1990);
        assert!(!index.contains("c25") && index.contains("c30"));
        assert!(index.has_graph(), "tombstones, not a rebuild");
        let hits = index.search(&vectors[25], &open, 10).unwrap();
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|h| !h.meta.document.ends_with("-2")));
        // A new vector for c30 replaces the old one in the graph.
        index
            .upsert("c30", &vectors[26], numbered_meta(30))
            .unwrap();
        let hits = index.search(&vectors[26], &open, 2).unwrap();
        assert_eq!(ids(&hits).iter().filter(|id| *id == "c30").count(), 1);
        assert!(index.search(&vectors[30], &open, 1).unwrap()[0].id != "c30");
        assert_eq!(index.len(), 1990);
        assert_eq!(index.ids().count(), 1990);
        // Past a quarter of tombstones, prepare_search compacts and rebuilds.
        for document in 0..60 {
            index.delete_document(&format!("doc-{document}"));
        }
        assert_eq!(index.len(), 1400);
        index.prepare_search();
        assert!(index.has_graph());
        assert_eq!(index.ids.len(), 1400);
        let hits = index.search(&vectors[1500], &open, 1).unwrap();
        assert_eq!(hits[0].id, "c1500");
        assert!(!index.contains("c30"));
    }

    #[test]
    fn without_a_graph_deletes_compact_as_they_go() {
        let vectors = clustered(100, 16, 5, 5);
        let mut index = filled(&vectors, QUANTISED);
        for document in 0..2 {
            index.delete_document(&format!("doc-{document}"));
        }
        assert_eq!(index.ids.len(), 100, "a few tombstones stay");
        index.delete_document("doc-2");
        assert_eq!(index.ids.len(), 70, "past a quarter, compacted");
        let hits = index
            .search(&vectors[77], &VectorFilter::default(), 1)
            .unwrap();
        assert_eq!(hits[0].id, "c77");
        assert_eq!(index.dimensions(), 16);
        // The placeholder index of no dimensions works, uselessly.
        let mut empty = EmbeddedIndex::new("", 0);
        empty.upsert("a", &[], PassageMeta::default()).unwrap();
        empty.prepare_search();
        assert_eq!(
            empty
                .search(&[], &VectorFilter::default(), 3)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_saved_graph_index_loads_with_identical_results() {
        let vectors = clustered(3000, 48, 30, 6);
        let mut index = filled(&vectors, GRAPH);
        index.delete_document("doc-7");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vectors.idx");
        index.save(&path).unwrap();
        let mut loaded = EmbeddedIndex::load(&path, "test", 48).unwrap().unwrap();
        assert!(loaded.has_graph());
        loaded.set_options(GRAPH);
        loaded.exact_filter_bytes = 0;
        assert_eq!(loaded.len(), index.len());
        assert!(!loaded.contains("c75"));
        let faqs = VectorFilter {
            kind: Some("faq".into()),
            ..VectorFilter::default()
        };
        for query in clustered(20, 48, 30, 7) {
            for filter in [&VectorFilter::default(), &faqs] {
                assert_eq!(
                    loaded.search(&query, filter, 10).unwrap(),
                    index.search(&query, filter, 10).unwrap()
                );
            }
        }
        // Under a higher threshold the loaded graph is dropped; results stay exact.
        loaded.set_options(QUANTISED);
        assert!(!loaded.has_graph());
        let exact = filled(&vectors, EXACT);
        let query = &vectors[100];
        assert_eq!(
            ids(&loaded.search(query, &VectorFilter::default(), 5).unwrap()),
            ids(&exact.search(query, &VectorFilter::default(), 5).unwrap())
        );
    }
}
