//! Benchmark of the embedded vector index: build N passages of D dimensions
//! (random unit vectors), save, load, and time exact top-10 searches.
//!
//! ```sh
//! cargo run --release --example bench_vectors -- [PASSAGES] [DIMENSIONS] [QUERIES]
//! ```

use std::time::Instant;

use kedai::platform::vectors::{EmbeddedIndex, PassageMeta, VectorFilter};

fn unit_vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v: Vec<f32> = (0..dimensions).map(|_| rng.f32() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let passages: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let dimensions: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1536);
    let queries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(200);

    let mut index = EmbeddedIndex::new("bench", dimensions);
    for i in 0..passages {
        let meta = PassageMeta {
            document: format!("doc-{}", i / 10),
            kind: if i % 4 == 0 { "product" } else { "policy" }.into(),
            product_id: (i % 4 == 0).then_some(i as i64),
            language: "en".into(),
            tags: Vec::new(),
        };
        index.upsert(
            &format!("chunk-{i}"),
            &unit_vector(i as u64, dimensions),
            meta,
        )?;
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vectors.idx");
    let started = Instant::now();
    index.save(&path)?;
    let saved = started.elapsed();
    let size = std::fs::metadata(&path)?.len();
    let started = Instant::now();
    let loaded = EmbeddedIndex::load(&path, "bench", dimensions)?.expect("just saved");
    let load = started.elapsed();

    let products = VectorFilter {
        kind: Some("product".into()),
        ..VectorFilter::default()
    };
    let mut plain = Vec::with_capacity(queries);
    let mut filtered = Vec::with_capacity(queries);
    for q in 0..queries {
        let query = unit_vector(1_000_000 + q as u64, dimensions);
        let started = Instant::now();
        let hits = loaded.search(&query, &VectorFilter::default(), 10)?;
        plain.push(started.elapsed());
        assert_eq!(hits.len(), 10.min(passages));
        let started = Instant::now();
        loaded.search(&query, &products, 10)?;
        filtered.push(started.elapsed());
    }
    plain.sort();
    filtered.sort();
    let at = |v: &[std::time::Duration], p: f64| {
        v[((v.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
    };
    println!("embedded vector index: {passages} passages x {dimensions} dimensions, exact top-10");
    println!(
        "  save {:.0} ms ({:.1} MB), load {:.0} ms",
        saved.as_secs_f64() * 1000.0,
        size as f64 / 1e6,
        load.as_secs_f64() * 1000.0
    );
    println!(
        "  search p50 {:.2} ms, p99 {:.2} ms ({:.0} queries/s on one core); with a kind filter p50 {:.2} ms",
        at(&plain, 0.5),
        at(&plain, 0.99),
        1000.0 / at(&plain, 0.5),
        at(&filtered, 0.5)
    );
    Ok(())
}
