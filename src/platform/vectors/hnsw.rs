//! A compact HNSW graph (Malkov & Yashunin, "Efficient and robust
//! approximate nearest neighbor search using Hierarchical Navigable Small
//! World graphs", 2016) over the embedded index's rows. Nodes are row
//! numbers; the graph stores links only, and every similarity comes from a
//! closure, so the index decides whether the graph is walked with f32 or
//! int8 scores and which rows may be returned.
//!
//! The one idea to keep in mind: filters and deletions never change the
//! walk. A node the filter rejects (or a tombstoned row) is still visited
//! and its links followed; it is only kept out of the results, so a search
//! still finds `ef` matching nodes when the best vectors do not match.
//!
//! Levels come from a hash of the node number, not a random generator, so
//! building the same rows twice gives the same graph.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::io::Write;

/// Links per node on the layers above the bottom one.
pub(super) const LINKS: usize = 16;
/// Links per node on the bottom layer.
pub(super) const BOTTOM_LINKS: usize = 2 * LINKS;
/// Candidates kept while choosing a new node's links.
const EF_CONSTRUCTION: usize = 128;
const MAX_LEVEL: usize = 16;

/// A node and its similarity to the query; orders by similarity, then by
/// lower node number first, so ties resolve the same way every time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Scored {
    pub(super) score: f32,
    pub(super) node: u32,
}

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.node.cmp(&self.node))
    }
}

/// The `k` best of what is pushed.
pub(super) struct TopK {
    k: usize,
    heap: BinaryHeap<Reverse<Scored>>,
}

impl TopK {
    pub(super) fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    pub(super) fn push(&mut self, score: f32, node: u32) {
        let item = Scored { score, node };
        if self.heap.len() < self.k {
            self.heap.push(Reverse(item));
        } else if let Some(mut worst) = self.heap.peek_mut()
            && item > worst.0
        {
            *worst = Reverse(item);
        }
    }

    /// Best first.
    pub(super) fn into_sorted(self) -> Vec<Scored> {
        let mut all: Vec<Scored> = self.heap.into_iter().map(|r| r.0).collect();
        all.sort_by(|a, b| b.cmp(a));
        all
    }
}

/// Nodes seen during one search.
struct Visited(Vec<u64>);

impl Visited {
    fn new(nodes: usize) -> Self {
        Visited(vec![0; nodes.div_ceil(64)])
    }

    /// True when `node` had not been seen.
    #[inline]
    fn insert(&mut self, node: u32) -> bool {
        let (word, bit) = (node as usize / 64, node % 64);
        let fresh = self.0[word] & (1 << bit) == 0;
        self.0[word] |= 1 << bit;
        fresh
    }

    fn clear(&mut self) {
        self.0.iter_mut().for_each(|w| *w = 0);
    }
}

/// The graph: per node its top level, its bottom-layer links in a flat
/// array (a count, then up to `BOTTOM_LINKS` node numbers), and the links
/// of its upper layers (a count and `LINKS` slots per layer).
#[derive(Debug, Clone, Default)]
pub(super) struct Hnsw {
    levels: Vec<u8>,
    bottom: Vec<u32>,
    upper: Vec<Vec<u32>>,
    entry: Option<u32>,
    top: usize,
}

/// What the file header records about a saved graph.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct GraphHeader {
    pub(super) links: usize,
    pub(super) bottom_links: usize,
    pub(super) nodes: usize,
    pub(super) entry: Option<u32>,
    pub(super) top: usize,
    /// u32 words that follow the vectors.
    pub(super) words: usize,
}

fn level_for(node: u32) -> usize {
    // splitmix64 of the node number: a uniform draw in (0, 1].
    let mut x = u64::from(node).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    let uniform = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = -uniform.ln() / (LINKS as f64).ln();
    (level as usize).min(MAX_LEVEL)
}

fn capacity(layer: usize) -> usize {
    if layer == 0 { BOTTOM_LINKS } else { LINKS }
}

impl Hnsw {
    pub(super) fn new() -> Self {
        Hnsw::default()
    }

    /// Nodes in the graph: rows `0..len()`.
    pub(super) fn len(&self) -> usize {
        self.levels.len()
    }

    fn slots(&self, node: u32, layer: usize) -> &[u32] {
        if layer == 0 {
            &self.bottom[node as usize * (BOTTOM_LINKS + 1)..][..BOTTOM_LINKS + 1]
        } else {
            &self.upper[node as usize][(layer - 1) * (LINKS + 1)..][..LINKS + 1]
        }
    }

    fn links(&self, node: u32, layer: usize) -> &[u32] {
        let slots = self.slots(node, layer);
        &slots[1..1 + slots[0] as usize]
    }

    fn set_links(&mut self, node: u32, layer: usize, links: impl ExactSizeIterator<Item = u32>) {
        let slots = if layer == 0 {
            &mut self.bottom[node as usize * (BOTTOM_LINKS + 1)..][..BOTTOM_LINKS + 1]
        } else {
            &mut self.upper[node as usize][(layer - 1) * (LINKS + 1)..][..LINKS + 1]
        };
        slots[0] = links.len() as u32;
        for (slot, link) in slots[1..].iter_mut().zip(links) {
            *slot = link;
        }
    }

    /// Adds the next row (node `len()`); `pair(a, b)` is the similarity
    /// of two rows.
    pub(super) fn insert<P: Fn(u32, u32) -> f32>(&mut self, pair: P) {
        let node = self.len() as u32;
        let level = level_for(node);
        self.levels.push(level as u8);
        self.bottom.resize(self.bottom.len() + BOTTOM_LINKS + 1, 0);
        self.upper.push(vec![0; level * (LINKS + 1)]);
        let Some(entry) = self.entry else {
            self.entry = Some(node);
            self.top = level;
            return;
        };
        let score = |other: u32| pair(node, other);
        let mut nearest = Scored {
            score: score(entry),
            node: entry,
        };
        for layer in (level + 1..=self.top).rev() {
            nearest = self.greedy(&score, nearest, layer);
        }
        let mut visited = Visited::new(self.len());
        for layer in (0..=level.min(self.top)).rev() {
            visited.clear();
            let found = self.search_layer(
                &score,
                nearest,
                EF_CONSTRUCTION,
                layer,
                &|_| true,
                &mut visited,
            );
            let chosen = select(&found, LINKS, &pair);
            self.set_links(node, layer, chosen.iter().map(|c| c.node));
            for neighbour in &chosen {
                self.link_back(neighbour.node, node, neighbour.score, layer, &pair);
            }
            nearest = found[0];
        }
        if level > self.top {
            self.top = level;
            self.entry = Some(node);
        }
    }

    /// Adds `to` to `from`'s links, re-choosing them when they are full.
    fn link_back<P: Fn(u32, u32) -> f32>(
        &mut self,
        from: u32,
        to: u32,
        score: f32,
        layer: usize,
        pair: &P,
    ) {
        let links = self.links(from, layer);
        if links.len() < capacity(layer) {
            let more: Vec<u32> = links.iter().copied().chain([to]).collect();
            self.set_links(from, layer, more.into_iter());
            return;
        }
        let mut candidates: Vec<Scored> = links
            .iter()
            .map(|&link| Scored {
                score: pair(from, link),
                node: link,
            })
            .chain([Scored { score, node: to }])
            .collect();
        candidates.sort_by(|a, b| b.cmp(a));
        let kept = select(&candidates, capacity(layer), pair);
        self.set_links(from, layer, kept.iter().map(|c| c.node));
    }

    /// Moves to a better neighbour while there is one.
    fn greedy<S: Fn(u32) -> f32>(&self, score: &S, start: Scored, layer: usize) -> Scored {
        let mut best = start;
        loop {
            let mut moved = false;
            for &next in self.links(best.node, layer) {
                let s = score(next);
                if s > best.score {
                    best = Scored {
                        score: s,
                        node: next,
                    };
                    moved = true;
                }
            }
            if !moved {
                return best;
            }
        }
    }

    /// Best-first search of one layer from `start`: up to `ef` accepted
    /// nodes, best first. Rejected nodes are walked through but not kept.
    fn search_layer<S, A>(
        &self,
        score: &S,
        start: Scored,
        ef: usize,
        layer: usize,
        accept: &A,
        visited: &mut Visited,
    ) -> Vec<Scored>
    where
        S: Fn(u32) -> f32,
        A: Fn(u32) -> bool,
    {
        let mut candidates: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 2);
        let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
        visited.insert(start.node);
        candidates.push(start);
        if accept(start.node) {
            results.push(Reverse(start));
        }
        while let Some(current) = candidates.pop() {
            let worst = results.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
            if results.len() >= ef && current.score < worst {
                break;
            }
            for &next in self.links(current.node, layer) {
                if !visited.insert(next) {
                    continue;
                }
                let s = score(next);
                let worst = results.peek().map_or(f32::NEG_INFINITY, |w| w.0.score);
                if results.len() < ef || s > worst {
                    let item = Scored {
                        score: s,
                        node: next,
                    };
                    candidates.push(item);
                    if accept(next) {
                        results.push(Reverse(item));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
        }
        let mut found: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
        found.sort_by(|a, b| b.cmp(a));
        found
    }

    /// Up to `ef` accepted nodes nearest the query, best first.
    pub(super) fn search<S, A>(&self, score: S, ef: usize, accept: A) -> Vec<Scored>
    where
        S: Fn(u32) -> f32,
        A: Fn(u32) -> bool,
    {
        let Some(entry) = self.entry else {
            return Vec::new();
        };
        let mut nearest = Scored {
            score: score(entry),
            node: entry,
        };
        for layer in (1..=self.top).rev() {
            nearest = self.greedy(&score, nearest, layer);
        }
        let mut visited = Visited::new(self.len());
        self.search_layer(&score, nearest, ef, 0, &accept, &mut visited)
    }

    pub(super) fn header(&self) -> GraphHeader {
        GraphHeader {
            links: LINKS,
            bottom_links: BOTTOM_LINKS,
            nodes: self.len(),
            entry: self.entry,
            top: self.top,
            words: self.len() + self.bottom.len() + self.upper.iter().map(Vec::len).sum::<usize>(),
        }
    }

    /// Writes the levels, the bottom layer and the upper layers as
    /// little-endian u32 words (`header().words` of them).
    pub(super) fn write_to(&self, out: &mut impl Write) -> std::io::Result<()> {
        let levels = self.levels.iter().map(|&l| u32::from(l));
        let words = levels
            .chain(self.bottom.iter().copied())
            .chain(self.upper.iter().flatten().copied());
        let mut buffer = Vec::with_capacity(1 << 16);
        for word in words {
            buffer.extend_from_slice(&word.to_le_bytes());
            if buffer.len() >= 1 << 16 {
                out.write_all(&buffer)?;
                buffer.clear();
            }
        }
        out.write_all(&buffer)
    }

    /// Rebuilds a graph from `write_to`'s words; `None` when they were
    /// made with other parameters (the caller then rebuilds the graph);
    /// an error when they do not hold together.
    pub(super) fn from_words(header: &GraphHeader, words: &[u32]) -> Result<Option<Self>, String> {
        if header.links != LINKS || header.bottom_links != BOTTOM_LINKS {
            return Ok(None);
        }
        let nodes = header.nodes;
        let damaged = |what: &str| format!("the graph is damaged: {what}");
        if words.len() != header.words || words.len() < nodes * (BOTTOM_LINKS + 2) {
            return Err(damaged("wrong length"));
        }
        let (levels, rest) = words.split_at(nodes);
        let (bottom, mut rest) = rest.split_at(nodes * (BOTTOM_LINKS + 1));
        let mut upper = Vec::with_capacity(nodes);
        for &level in levels {
            let length = level as usize * (LINKS + 1);
            if level as usize > MAX_LEVEL || length > rest.len() {
                return Err(damaged("bad level"));
            }
            let (mine, others) = rest.split_at(length);
            upper.push(mine.to_vec());
            rest = others;
        }
        if !rest.is_empty() {
            return Err(damaged("trailing words"));
        }
        let graph = Hnsw {
            levels: levels.iter().map(|&l| l as u8).collect(),
            bottom: bottom.to_vec(),
            upper,
            entry: header.entry,
            top: header.top,
        };
        let top_ok = match graph.entry {
            Some(entry) => {
                (entry as usize) < nodes && graph.levels[entry as usize] as usize == graph.top
            }
            None => nodes == 0,
        };
        if !top_ok {
            return Err(damaged("bad entry point"));
        }
        for node in 0..nodes as u32 {
            for layer in 0..=graph.levels[node as usize] as usize {
                let slots = graph.slots(node, layer);
                if slots[0] as usize > capacity(layer)
                    || graph
                        .links(node, layer)
                        .iter()
                        .any(|&l| l as usize >= nodes)
                {
                    return Err(damaged("bad link"));
                }
            }
        }
        Ok(Some(graph))
    }
}

/// The HNSW neighbour heuristic: walking `candidates` best first, keep one
/// only when it is closer to the new node than to every one already kept,
/// so links spread in different directions instead of all pointing into
/// the same cluster.
fn select<P: Fn(u32, u32) -> f32>(candidates: &[Scored], m: usize, pair: &P) -> Vec<Scored> {
    let mut chosen: Vec<Scored> = Vec::with_capacity(m);
    for candidate in candidates {
        if chosen.len() >= m {
            break;
        }
        if chosen
            .iter()
            .all(|kept| pair(candidate.node, kept.node) <= candidate.score)
        {
            chosen.push(*candidate);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a circle: node i at angle i degrees.
    fn circle(n: usize) -> Vec<[f32; 2]> {
        (0..n)
            .map(|i| {
                let a = (i as f32).to_radians() * 360.0 / n as f32;
                [a.cos(), a.sin()]
            })
            .collect()
    }

    fn build(points: &[[f32; 2]]) -> Hnsw {
        let mut graph = Hnsw::new();
        let pair = |a: u32, b: u32| {
            let (p, q) = (points[a as usize], points[b as usize]);
            p[0] * q[0] + p[1] * q[1]
        };
        for _ in points {
            graph.insert(pair);
        }
        graph
    }

    #[test]
    fn the_graph_finds_the_nearest_points_and_honours_the_filter() {
        let points = circle(2000);
        let graph = build(&points);
        let query = [1.0_f32, 0.0];
        let score = |n: u32| {
            let p = points[n as usize];
            p[0] * query[0] + p[1] * query[1]
        };
        let found = graph.search(score, 9, |_| true);
        let mut nodes: Vec<u32> = found.iter().map(|s| s.node).collect();
        nodes.sort();
        assert_eq!(nodes, [0, 1, 2, 3, 4, 1996, 1997, 1998, 1999]);
        // Only odd nodes may come back: the even ones are walked, not kept.
        let odd = graph.search(score, 4, |n| n % 2 == 1);
        let mut nodes: Vec<u32> = odd.iter().map(|s| s.node).collect();
        nodes.sort();
        assert_eq!(nodes, [1, 3, 1997, 1999]);
    }

    #[test]
    fn a_saved_graph_reads_back_the_same() {
        let points = circle(300);
        let graph = build(&points);
        let mut bytes = Vec::new();
        graph.write_to(&mut bytes).unwrap();
        let header = graph.header();
        assert_eq!(bytes.len(), header.words * 4);
        let words: Vec<u32> = bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let back = Hnsw::from_words(&header, &words).unwrap().unwrap();
        assert_eq!(back.levels, graph.levels);
        assert_eq!(back.bottom, graph.bottom);
        assert_eq!(back.upper, graph.upper);
        assert!(Hnsw::from_words(&header, &words[1..]).is_err());
        let other = GraphHeader { links: 8, ..header };
        assert!(Hnsw::from_words(&other, &words).unwrap().is_none());
    }
}
