//! Benchmark of the embedded vector index (`platform::vectors::EmbeddedIndex`):
//! exact f32 search, exact int8 search with f32 re-scoring, and HNSW, each
//! timed query by query on one thread, with recall@10 against exact f32;
//! index build, save and load times; resident memory; and ingestion
//! throughput with the embedded hashing embedder.
//!
//! ```sh
//! cargo run --release --example bench_vectors -- [PASSAGES] [DIMENSIONS] [QUERIES] [--clusters N] [--dump DIR]
//! scripts/faiss-reference DIR   # FAISS IndexFlatIP on the same vectors
//! ```
//!
//! The vectors are synthetic and clustered, as embeddings of a shop's
//! documents are: N centres (100 unless `--clusters`) drawn from a standard
//! normal distribution in D dimensions and scaled to unit length; each
//! passage is its centre (the passage number modulo N) plus gaussian noise
//! of norm about 0.8
//! (standard deviation 0.8/√D per coordinate), scaled to unit length, so a
//! passage has cosine ≈ 0.78 with its centre and ≈ 0.61 with another
//! passage of its cluster. Queries are drawn the same way (fresh noise,
//! random cluster). Seeds are fixed: every run measures the same vectors.
//! A quarter of the passages are `product`s, the filter the filtered
//! figures use. `--dump DIR` writes `vectors.npy`, `queries.npy` and the
//! exact top-10 rows (`exact_top10.npy`) for `scripts/faiss-reference`.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use kedai::platform::embed::HashingEmbedder;
use kedai::platform::vectors::{EmbeddedIndex, IndexOptions, PassageMeta, VectorFilter, VectorHit};

const NOISE: f32 = 0.8;

/// A standard normal draw (Box–Muller).
fn gaussian(rng: &mut fastrand::Rng) -> f32 {
    let (u, v) = (rng.f32().max(f32::MIN_POSITIVE), rng.f32());
    (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
}

fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

struct Clusters {
    centres: Vec<Vec<f32>>,
}

impl Clusters {
    fn new(count: usize, dimensions: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(42);
        Clusters {
            centres: (0..count)
                .map(|_| unit((0..dimensions).map(|_| gaussian(&mut rng)).collect()))
                .collect(),
        }
    }

    fn point(&self, cluster: usize, rng: &mut fastrand::Rng) -> Vec<f32> {
        let centre = &self.centres[cluster % self.centres.len()];
        let spread = NOISE / (centre.len() as f32).sqrt();
        unit(centre.iter().map(|c| c + spread * gaussian(rng)).collect())
    }
}

fn meta(i: usize) -> PassageMeta {
    PassageMeta {
        document: format!("doc-{}", i / 10),
        kind: if i.is_multiple_of(4) {
            "product"
        } else {
            "policy"
        }
        .into(),
        product_id: i.is_multiple_of(4).then_some(i as i64),
        language: if i.is_multiple_of(3) { "ms" } else { "en" }.into(),
        tags: Vec::new(),
    }
}

fn resident_mb() -> f64 {
    status_kb("VmRSS:") / 1024.0
}

fn peak_mb() -> f64 {
    status_kb("VmHWM:") / 1024.0
}

fn status_kb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// p50 and p99 in milliseconds.
fn percentiles(mut times: Vec<Duration>) -> (f64, f64) {
    times.sort();
    let at = |p: f64| ms(times[((times.len() as f64 - 1.0) * p).round() as usize]);
    (at(0.5), at(0.99))
}

struct Run {
    p50: f64,
    p99: f64,
    results: Vec<Vec<VectorHit>>,
}

/// Times every query once, after a warm-up pass over the first ten.
fn run(index: &EmbeddedIndex, queries: &[Vec<f32>], filter: &VectorFilter) -> Run {
    for query in queries.iter().take(10) {
        index.search(query, filter, 10).expect("search");
    }
    let mut times = Vec::with_capacity(queries.len());
    let mut results = Vec::with_capacity(queries.len());
    for query in queries {
        let started = Instant::now();
        let hits = index.search(query, filter, 10).expect("search");
        times.push(started.elapsed());
        results.push(hits);
    }
    let (p50, p99) = percentiles(times);
    Run { p50, p99, results }
}

/// Mean share of the exact top-10 found.
fn recall(truth: &[Vec<VectorHit>], found: &[Vec<VectorHit>]) -> f64 {
    let (mut hit, mut total) = (0, 0);
    for (t, f) in truth.iter().zip(found) {
        total += t.len();
        hit += t.iter().filter(|h| f.iter().any(|o| o.id == h.id)).count();
    }
    hit as f64 / total.max(1) as f64
}

/// Writes a C-order `.npy` array (format version 1.0).
fn write_npy(
    path: &Path,
    descr: &str,
    shape: (usize, usize),
    bytes: impl Iterator<Item = u8>,
) -> anyhow::Result<()> {
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape.0, shape.1
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut file = std::io::BufWriter::new(std::fs::File::create(path)?);
    file.write_all(b"\x93NUMPY\x01\x00")?;
    file.write_all(&(header.len() as u16).to_le_bytes())?;
    file.write_all(header.as_bytes())?;
    let bytes: Vec<u8> = bytes.collect();
    file.write_all(&bytes)?;
    file.flush()?;
    Ok(())
}

/// Synthetic paragraphs for the ingestion figure: words of two to four
/// syllables from a 3,000-word vocabulary, picked with a skew towards
/// common words, 120 to 240 words each (about a 300-token passage).
fn paragraphs(count: usize) -> Vec<String> {
    const SYLLABLES: [&str; 40] = [
        "ka", "ma", "ri", "to", "se", "lu", "ba", "ne", "di", "po", "ran", "kel", "sun", "tik",
        "mor", "pan", "ling", "gu", "ha", "je", "wa", "yo", "ter", "bin", "cha", "dam", "fer",
        "gon", "hul", "ip", "jal", "kop", "lem", "nus", "ob", "pri", "qua", "ros", "sap", "tum",
    ];
    let mut rng = fastrand::Rng::with_seed(9);
    let vocabulary: Vec<String> = (0..3000)
        .map(|_| {
            (0..rng.usize(2..=4))
                .map(|_| SYLLABLES[rng.usize(..SYLLABLES.len())])
                .collect()
        })
        .collect();
    (0..count)
        .map(|_| {
            let words = rng.usize(120..=240);
            let mut text = String::new();
            for w in 0..words {
                let skewed = (rng.f64() * rng.f64() * vocabulary.len() as f64) as usize;
                text.push_str(&vocabulary[skewed]);
                text.push_str(if w % 15 == 14 { ". " } else { " " });
            }
            text
        })
        .collect()
}

/// Loads an index file in this fresh process and prints the resident
/// memory it added (MB) and the load time (ms): measured in the parent,
/// memory freed by earlier phases would be reused and hide the cost.
fn measure_load(path: &str, dimensions: &str) -> anyhow::Result<()> {
    let before = resident_mb();
    let started = Instant::now();
    let index =
        EmbeddedIndex::load(Path::new(path), "bench", dimensions.parse()?)?.expect("a saved index");
    let load = started.elapsed();
    println!("{:.1} {:.1}", resident_mb() - before, ms(load));
    drop(index);
    Ok(())
}

/// Resident MB and load ms of `path`, measured by a child process.
fn load_in_child(path: &Path, dimensions: usize) -> anyhow::Result<(f64, f64)> {
    let output = std::process::Command::new(std::env::current_exe()?)
        .arg("--measure-load")
        .arg(path)
        .arg(dimensions.to_string())
        .output()?;
    anyhow::ensure!(output.status.success(), "the child failed: {output:?}");
    let text = String::from_utf8(output.stdout)?;
    let mut numbers = text.split_whitespace().map(str::parse::<f64>);
    match (numbers.next(), numbers.next()) {
        (Some(Ok(resident)), Some(Ok(load))) => Ok((resident, load)),
        _ => anyhow::bail!("unexpected child output {text:?}"),
    }
}

fn main() -> anyhow::Result<()> {
    let raw: Vec<String> = std::env::args().collect();
    if raw.len() == 4 && raw[1] == "--measure-load" {
        return measure_load(&raw[2], &raw[3]);
    }
    let mut numbers = Vec::new();
    let mut dump = None;
    let mut clusters = 100;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--dump" {
            dump = args.next();
        } else if arg == "--clusters" {
            clusters = args.next().unwrap_or_default().parse()?;
        } else {
            numbers.push(arg.parse::<usize>()?);
        }
    }
    let passages = numbers.first().copied().unwrap_or(10_000);
    let dimensions = numbers.get(1).copied().unwrap_or(1536);
    let query_count = numbers.get(2).copied().unwrap_or(1000);

    let centres = Clusters::new(clusters, dimensions);
    let mut rng = fastrand::Rng::with_seed(1);
    let vectors: Vec<Vec<f32>> = (0..passages).map(|i| centres.point(i, &mut rng)).collect();
    let mut rng = fastrand::Rng::with_seed(2);
    let queries: Vec<Vec<f32>> = (0..query_count)
        .map(|_| {
            let cluster = rng.usize(..clusters);
            centres.point(cluster, &mut rng)
        })
        .collect();
    // No filter; one that passes 1 in 4 (the graph index scans those
    // exactly: too few for a walk); one that passes 2 in 3 (walked).
    let filters = [
        ("all", VectorFilter::default()),
        (
            "kind=product (1/4)",
            VectorFilter {
                kind: Some("product".into()),
                ..VectorFilter::default()
            },
        ),
        (
            "language=en (2/3)",
            VectorFilter {
                language: Some("en".into()),
                ..VectorFilter::default()
            },
        ),
    ];
    let open = &filters[0].1;

    println!(
        "embedded vector index: {passages} passages x {dimensions} dimensions, {query_count} queries, top-10, one thread, kernels: {}",
        EmbeddedIndex::simd_kernel()
    );
    println!("  data: {clusters} gaussian clusters, noise norm {NOISE}, unit vectors");

    // Exact index: upserts, save, load.
    let exact_options = IndexOptions {
        quantize: false,
        hnsw_threshold: usize::MAX,
    };
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vectors.idx");
    {
        let started = Instant::now();
        let mut index = EmbeddedIndex::new("bench", dimensions);
        index.set_options(exact_options);
        for (i, vector) in vectors.iter().enumerate() {
            index.upsert(&format!("chunk-{i}"), vector, meta(i))?;
        }
        let filled = started.elapsed();
        let started = Instant::now();
        index.save(&path)?;
        println!(
            "  exact index: {passages} upserts {:.0} ms; save {:.0} ms ({:.1} MB)",
            ms(filled),
            ms(started.elapsed()),
            std::fs::metadata(&path)?.len() as f64 / 1e6
        );
    }
    let (resident, load) = load_in_child(&path, dimensions)?;
    println!(
        "  load {load:.0} ms (read the file, parse the header, make the int8 copy); index resident {resident:.0} MB (f32 + int8), in a fresh process"
    );
    let mut index = EmbeddedIndex::load(&path, "bench", dimensions)?.expect("just saved");

    // Each mode: p50 / p99 in ms and recall@10 against exact f32, per filter.
    let measure = |name: &str, index: &EmbeddedIndex, truth: Option<&[Run]>| -> Vec<Run> {
        let runs: Vec<Run> = filters
            .iter()
            .map(|(_, filter)| run(index, &queries, filter))
            .collect();
        let mut line = format!("  {name:<19}");
        for (i, ((label, _), r)) in filters.iter().zip(&runs).enumerate() {
            line.push_str(&format!(
                "{}{label}: p50 {:.2} p99 {:.2}",
                if i == 0 { "" } else { " | " },
                r.p50,
                r.p99
            ));
            if let Some(truth) = truth {
                line.push_str(&format!(
                    " r@10 {:.4}",
                    recall(&truth[i].results, &r.results)
                ));
            }
        }
        println!("{line}");
        runs
    };

    index.set_options(exact_options);
    let exact = measure("exact f32", &index, None);
    index.set_options(IndexOptions {
        quantize: true,
        hnsw_threshold: usize::MAX,
    });
    measure("exact int8+rescore", &index, Some(&exact));

    // HNSW, walked with int8 scores and re-scored in f32.
    let graph_options = IndexOptions {
        quantize: true,
        hnsw_threshold: passages / 2,
    };
    index.set_options(graph_options);
    let started = Instant::now();
    index.prepare_search();
    let build = started.elapsed();
    assert!(index.has_graph());
    println!(
        "  HNSW build {:.2} s ({passages} rows, compared by int8 codes)",
        build.as_secs_f64()
    );
    let graph = measure("HNSW int8 walk", &index, Some(&exact));
    index.set_options(IndexOptions {
        quantize: false,
        ..graph_options
    });
    measure("HNSW f32 walk", &index, Some(&exact));
    let f32_open = &exact[0];
    let graph_open = &graph[0];

    // The graph is saved with the index and read back, not rebuilt.
    index.set_options(graph_options);
    let started = Instant::now();
    index.save(&path)?;
    let saved = started.elapsed();
    let size = std::fs::metadata(&path)?.len();
    drop(index);
    let (resident, load) = load_in_child(&path, dimensions)?;
    let mut loaded = EmbeddedIndex::load(&path, "bench", dimensions)?.expect("just saved");
    loaded.set_options(graph_options);
    assert!(loaded.has_graph());
    let again = run(&loaded, &queries[..50.min(query_count)], open);
    assert!(
        again
            .results
            .iter()
            .zip(&graph_open.results)
            .all(|(a, b)| a == b)
    );
    println!(
        "  with graph: save {:.0} ms ({:.1} MB), load {load:.0} ms (graph read, not rebuilt), index resident {resident:.0} MB (f32 + int8 + graph)",
        ms(saved),
        size as f64 / 1e6,
    );
    drop(loaded);

    if let Some(dump) = dump {
        let dump = Path::new(&dump);
        std::fs::create_dir_all(dump)?;
        let floats = |rows: &[Vec<f32>]| -> Vec<u8> {
            rows.iter()
                .flatten()
                .flat_map(|x| x.to_le_bytes())
                .collect()
        };
        write_npy(
            &dump.join("vectors.npy"),
            "<f4",
            (passages, dimensions),
            floats(&vectors).into_iter(),
        )?;
        write_npy(
            &dump.join("queries.npy"),
            "<f4",
            (query_count, dimensions),
            floats(&queries).into_iter(),
        )?;
        let rows: Vec<u8> = f32_open
            .results
            .iter()
            .flat_map(|hits| {
                (0..10).map(|i| {
                    hits.get(i)
                        .and_then(|h| h.id.strip_prefix("chunk-")?.parse::<i64>().ok())
                        .unwrap_or(-1)
                })
            })
            .flat_map(i64::to_le_bytes)
            .collect();
        write_npy(
            &dump.join("exact_top10.npy"),
            "<i8",
            (query_count, 10),
            rows.into_iter(),
        )?;
        println!(
            "  wrote vectors.npy, queries.npy, exact_top10.npy to {}",
            dump.display()
        );
    }
    drop(vectors);

    // Ingestion: embed synthetic paragraphs and upsert them.
    let texts = paragraphs(passages);
    let embedder = HashingEmbedder::new(1024);
    let mut ingest = EmbeddedIndex::new("local-hash-v1-1024", 1024);
    let started = Instant::now();
    let mut embedding = Duration::ZERO;
    for (i, text) in texts.iter().enumerate() {
        let embed_started = Instant::now();
        let vector = embedder.vector(text);
        embedding += embed_started.elapsed();
        ingest.upsert(&format!("p{i}"), &vector, meta(i))?;
    }
    let total = started.elapsed();
    println!(
        "  ingestion (HashingEmbedder 1024 dims, 120-240 word paragraphs, embed + upsert): {:.0} chunks/s ({:.0} chunks/s embedding alone)",
        passages as f64 / total.as_secs_f64(),
        passages as f64 / embedding.as_secs_f64()
    );
    println!(
        "  process resident {:.0} MB now, peak {:.0} MB",
        resident_mb(),
        peak_mb()
    );
    Ok(())
}
