//! The knowledge base that grounds the WhatsApp assistant's answers.
//!
//! Sources: the document store (`platform::objects`: a folder or S3;
//! markdown, text, HTML, PDF) and the catalog (every product a document,
//! `products.rs`). Ingestion (`ingest.rs`) extracts (`extract.rs`), chunks
//! (`chunk.rs`), embeds (`platform::embed`) and stores passages with their
//! vectors in the database (`repo.rs`), processing only new, changed and
//! deleted documents. Every replica holds the passages in memory for BM25
//! (`keyword.rs`) and, with the embedded vector store, the vectors in its
//! own index, reloaded when `kb_state.generation` moves. Retrieval
//! (`retrieve.rs`) fuses keyword and vector ranks. `eval.rs` scores it on
//! a labelled set in the BEIR layout.
//!
//! The one API the chat module uses: [`Knowledge::search`].

pub mod chunk;
pub mod eval;
pub mod extract;
mod ingest;
pub mod keyword;
pub mod products;
pub mod repo;
pub mod retrieve;
pub mod routes;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::config::{EmbeddingsKind, KnowledgeSettings, Settings, VectorsKind};
use crate::platform::db::Writer;
use crate::platform::embed::{Embedder, HashingEmbedder};
use crate::platform::objects::DocumentStore;
use crate::platform::upstream::UpstreamSignals;
use crate::platform::vectors::{
    EmbeddedVectors, IndexOptions, VectorFilter, VectorRecord, VectorStore,
};

pub use ingest::{IngestReport, Progress, Scope, demo_document_keys};
pub use retrieve::{Corpus, Mode, Passage, PassageInfo, SearchError, SearchParams};

/// The knowledge base of one process.
#[derive(Clone)]
pub struct Knowledge {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    writer: Writer,
    store: DocumentStore,
    catalog: Option<Catalog>,
    embedder: Arc<dyn Embedder>,
    vectors: Arc<dyn VectorStore>,
    /// The same store as `vectors` when it is the embedded one: it is
    /// rebuilt from the database here, where OpenSearch is shared.
    local: Option<Arc<EmbeddedVectors>>,
    settings: KnowledgeSettings,
    corpus: RwLock<Arc<Corpus>>,
    /// The `kb_state.generation` the in-memory corpus reflects (-1: none).
    loaded: AtomicI64,
    /// One ingestion at a time in this process.
    ingesting: tokio::sync::Mutex<()>,
    /// One reload at a time in this process.
    refreshing: tokio::sync::Mutex<()>,
    /// Set when a sync should run soon (an upload, a catalog change).
    wake: Notify,
}

/// The embedder the settings name; a vendor's embedder reports its
/// throttling and outcomes to `upstreams`.
pub async fn embedder(
    settings: &Settings,
    upstreams: &UpstreamSignals,
) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(match settings.embeddings.kind {
        EmbeddingsKind::Local => Arc::new(HashingEmbedder::new(
            settings.embeddings.local_dimensions as usize,
        )),
        EmbeddingsKind::Bedrock => Arc::new(
            crate::platform::embed::BedrockEmbedder::from_settings(settings)
                .await
                .context("could not set up Bedrock embeddings (embeddings.*, aws.*)")?
                .reporting_to(upstreams.clone()),
        ),
    })
}

fn index_options(settings: &Settings) -> IndexOptions {
    IndexOptions {
        quantize: settings.vectors.quantize,
        hnsw_threshold: settings.vectors.hnsw_threshold,
    }
}

impl Knowledge {
    /// Sets up the knowledge base from settings; nothing is loaded yet
    /// (see [`Knowledge::refresh`] and [`Knowledge::run`]).
    pub async fn from_settings(
        settings: &Settings,
        db: DatabaseConnection,
        writer: Writer,
        catalog: Option<Catalog>,
        upstreams: &UpstreamSignals,
    ) -> anyhow::Result<Self> {
        let store = DocumentStore::from_settings(settings)?;
        let embedder = embedder(settings, upstreams).await?;
        let (vectors, local): (Arc<dyn VectorStore>, Option<Arc<EmbeddedVectors>>) =
            match settings.vectors.kind {
                VectorsKind::Embedded => {
                    let local = Arc::new(EmbeddedVectors::persisted(
                        settings.vectors.path.clone(),
                        index_options(settings),
                    ));
                    (local.clone(), Some(local))
                }
                VectorsKind::OpenSearch => (
                    Arc::new(
                        crate::platform::vectors::OpenSearchVectors::from_settings(settings)
                            .await
                            .context("could not set up OpenSearch (vectors.*, aws.*)")?,
                    ),
                    None,
                ),
            };
        Ok(Knowledge::new(
            db,
            writer,
            store,
            catalog,
            embedder,
            vectors,
            local,
            settings.knowledge.clone(),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: DatabaseConnection,
        writer: Writer,
        store: DocumentStore,
        catalog: Option<Catalog>,
        embedder: Arc<dyn Embedder>,
        vectors: Arc<dyn VectorStore>,
        local: Option<Arc<EmbeddedVectors>>,
        settings: KnowledgeSettings,
    ) -> Self {
        Knowledge {
            inner: Arc::new(Inner {
                db,
                writer,
                store,
                catalog,
                embedder,
                vectors,
                local,
                settings,
                corpus: RwLock::new(Arc::new(Corpus::default())),
                loaded: AtomicI64::new(-1),
                ingesting: tokio::sync::Mutex::new(()),
                refreshing: tokio::sync::Mutex::new(()),
                wake: Notify::new(),
            }),
        }
    }

    pub fn store(&self) -> &DocumentStore {
        &self.inner.store
    }

    pub fn embedder(&self) -> &dyn Embedder {
        self.inner.embedder.as_ref()
    }

    pub fn vectors(&self) -> &dyn VectorStore {
        self.inner.vectors.as_ref()
    }

    pub fn settings(&self) -> &KnowledgeSettings {
        &self.inner.settings
    }

    /// The passages this process searches.
    pub fn corpus(&self) -> Arc<Corpus> {
        self.inner
            .corpus
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the background loop to sync soon.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The `k` best passages for `query` (hybrid keyword + vector search).
    pub async fn search(
        &self,
        query: &str,
        filter: &VectorFilter,
        k: usize,
    ) -> Result<Vec<Passage>, SearchError> {
        self.search_with(query, filter, k, Mode::Hybrid).await
    }

    /// [`Knowledge::search`] with a choice of keyword, vector or hybrid.
    pub async fn search_with(
        &self,
        query: &str,
        filter: &VectorFilter,
        k: usize,
        mode: Mode,
    ) -> Result<Vec<Passage>, SearchError> {
        let started = std::time::Instant::now();
        let corpus = self.corpus();
        let passages = retrieve::search(
            &corpus,
            self.inner.vectors.as_ref(),
            self.inner.embedder.as_ref(),
            query,
            filter,
            k,
            SearchParams {
                mode,
                candidates: self.inner.settings.candidates,
                rrf_k: self.inner.settings.rrf_k,
                keyword_weight: self.inner.settings.keyword_weight,
            },
        )
        .await;
        metrics::histogram!("kedai_kb_search_seconds").record(started.elapsed().as_secs_f64());
        passages
    }

    /// Reloads passages (and the embedded index) when the database holds a
    /// newer generation than this process; returns whether it did.
    pub async fn refresh(&self) -> anyhow::Result<bool> {
        let _one_at_a_time = self.inner.refreshing.lock().await;
        let generation = repo::generation(&self.inner.db).await?;
        if generation == self.inner.loaded.load(Ordering::Acquire) {
            return Ok(false);
        }
        let space = self.inner.embedder.name();
        let dimensions = self.inner.embedder.dimensions();
        self.inner.vectors.prepare(&space, dimensions).await?;
        let rows = repo::chunks(&self.inner.db).await?;
        if let Some(local) = &self.inner.local {
            self.reconcile(local, &rows, &space).await?;
        }
        let passages: Vec<PassageInfo> = rows.into_iter().map(passage_info).collect();
        let corpus = Arc::new(Corpus::build(passages));
        metrics::gauge!("kedai_kb_passages").set(corpus.len() as f64);
        *self.inner.corpus.write().unwrap_or_else(|e| e.into_inner()) = corpus;
        self.inner.loaded.store(generation, Ordering::Release);
        Ok(true)
    }

    /// Brings the embedded index in line with the database: documents whose
    /// passage ids differ are replaced with the stored vectors, documents
    /// that are gone are dropped; the index is saved when it changed.
    async fn reconcile(
        &self,
        local: &EmbeddedVectors,
        rows: &[repo::ChunkRow],
        space: &str,
    ) -> anyhow::Result<()> {
        let mut wanted: std::collections::HashMap<&str, Vec<&str>> = Default::default();
        for row in rows {
            wanted
                .entry(row.document.as_str())
                .or_default()
                .push(row.id.as_str());
        }
        let mut held = local.documents();
        let mut gone: Vec<String> = held
            .keys()
            .filter(|d| !wanted.contains_key(d.as_str()))
            .cloned()
            .collect();
        let mut load: Vec<String> = Vec::new();
        for (document, ids) in &wanted {
            let same = held.remove(*document).is_some_and(|mut have| {
                let mut want: Vec<&str> = ids.clone();
                have.sort();
                want.sort();
                have.iter().map(String::as_str).eq(want.iter().copied())
            });
            if !same {
                load.push((*document).to_string());
            }
        }
        if gone.is_empty() && load.is_empty() {
            return Ok(());
        }
        gone.extend(load.iter().cloned());
        local.delete_documents(&gone).await?;
        let metas: std::collections::HashMap<&str, &repo::ChunkRow> =
            rows.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut records = Vec::new();
        for row in repo::embeddings(&self.inner.db, space, &load).await? {
            let (Some(bytes), Some(chunk)) = (row.embedding, metas.get(row.id.as_str())) else {
                continue;
            };
            records.push(VectorRecord {
                id: row.id.clone(),
                vector: repo::decode(&bytes),
                meta: passage_info((*chunk).clone()).meta,
            });
        }
        local.upsert(records).await?;
        local.save().await?;
        Ok(())
    }

    /// Keeps the knowledge base current until shutdown: loads it, ingests
    /// at startup (when configured), syncs on every `sync_interval` and on
    /// wake-ups, and reloads when another replica changed it.
    pub async fn run(self, seed_demo: bool, shutdown: CancellationToken) {
        if let Err(error) = self.refresh().await {
            tracing::warn!(error = %format!("{error:#}"), "could not load the knowledge base");
        }
        if seed_demo {
            match self.seed_demo_documents().await {
                Ok(0) => {}
                Ok(written) => tracing::info!(documents = written, "wrote the demo knowledge base"),
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "could not write the demo knowledge base")
                }
            }
        }
        let mut next_sync = if self.inner.settings.ingest_on_start {
            tokio::time::Instant::now()
        } else {
            tokio::time::Instant::now() + self.inner.settings.sync_interval
        };
        let mut refresh = tokio::time::interval(self.inner.settings.refresh_interval);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let catalog_version = |k: &Knowledge| k.inner.catalog.as_ref().map(|c| c.snapshot().stamp);
        let mut seen_catalog = catalog_version(&self);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_sync) => {}
                _ = self.inner.wake.notified() => {}
                _ = refresh.tick() => {
                    if let Err(error) = self.refresh().await {
                        tracing::warn!(error = %format!("{error:#}"), "could not reload the knowledge base");
                    }
                    // A product changed: re-render the products now rather
                    // than at the next full sync (only changed ones re-embed).
                    let version = catalog_version(&self);
                    if version != seen_catalog {
                        seen_catalog = version;
                        if let Err(error) = self.sync(Scope::Products, None).await {
                            tracing::warn!(error = %format!("{error:#}"), "could not sync the catalog into the knowledge base");
                        }
                    }
                    continue;
                }
            }
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.sync(Scope::All, None) => outcome,
            };
            match outcome {
                Ok(report) if report.changed() => tracing::info!(
                    added = report.added,
                    updated = report.updated,
                    deleted = report.deleted,
                    failed = report.failed.len(),
                    passages = report.passages,
                    "knowledge base synced"
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "knowledge base sync failed")
                }
            }
            next_sync = tokio::time::Instant::now() + self.inner.settings.sync_interval;
        }
    }
}

fn passage_info(row: repo::ChunkRow) -> PassageInfo {
    let section: Vec<String> = row
        .section
        .split(SECTION_SEPARATOR)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    PassageInfo {
        id: row.id,
        title: row.title,
        section,
        text: row.text,
        url: row.url,
        meta: crate::platform::vectors::PassageMeta {
            document: row.document,
            kind: row.kind,
            product_id: row.product_id,
            language: row.language,
            tags: split_tags(&row.tags),
        },
    }
}

/// Joins a section path for storage.
pub const SECTION_SEPARATOR: &str = " › ";

fn split_tags(tags: &str) -> Vec<String> {
    tags.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect()
}
