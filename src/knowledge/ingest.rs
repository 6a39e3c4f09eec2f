//! Ingestion: compare the sources (the document store's listing with its
//! ETags/versions, the catalog's product documents with their content
//! hashes) against `kb_documents`, and process only what is new, changed,
//! deleted or embedded in another vector space. Each document commits on
//! its own (its passages and vectors replace the old ones in one
//! transaction), so an interrupted run keeps what it finished and the next
//! run picks up the rest; running twice changes nothing.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;
use serde::Serialize;
use time::OffsetDateTime;

use super::chunk::{ChunkSize, chunk};
use super::extract::{DocMeta, ExtractError, Extracted, extract};
use super::products;
use super::repo::{self, DocumentRow, NewChunk};
use super::retrieve::indexed_text;
use super::{Knowledge, SECTION_SEPARATOR};
use crate::platform::vectors::{PassageMeta, VectorRecord};

/// A progress bar for the command line; background runs pass none.
pub type Progress = indicatif::ProgressBar;

/// What a sync looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole document store and the catalog.
    All,
    /// Store keys (or `product:` keys) starting with this prefix.
    Prefix(String),
    /// Exactly one key (an upload or a delete).
    Exact(String),
    /// The catalog's products only: the document store is not listed.
    Products,
}

impl Scope {
    fn covers(&self, key: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Prefix(prefix) => key.starts_with(prefix.as_str()),
            Scope::Exact(exact) => key == exact,
            Scope::Products => key.starts_with(products::KEY_PREFIX),
        }
    }
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestReport {
    pub added: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
    /// Documents that could not be indexed: (key, status, reason).
    pub failed: Vec<(String, String, String)>,
    /// Passages written.
    pub passages: usize,
    pub seconds: f64,
}

impl IngestReport {
    pub fn changed(&self) -> bool {
        self.added + self.updated + self.deleted > 0 || !self.failed.is_empty()
    }
}

/// A document as its source has it now.
struct Source {
    key: String,
    origin: &'static str,
    fingerprint: String,
    /// Catalog documents carry their text; store documents are fetched.
    product: Option<products::ProductDocument>,
}

/// Passages embedded per call to the embedder.
const EMBED_BATCH: usize = 64;

#[derive(rust_embed::Embed)]
#[folder = "demo/kb/"]
struct DemoDocuments;

/// The keys of the demo knowledge base shipped in the binary.
pub fn demo_document_keys() -> Vec<String> {
    DemoDocuments::iter().map(|k| k.into_owned()).collect()
}

impl Knowledge {
    /// Writes the demo knowledge base into an empty document store;
    /// returns how many documents it wrote.
    ///
    /// Holds the ingest lock, so a sync in this process never lists the
    /// store half-written (it would ingest part of the demo and leave the
    /// rest for the next sync), and a second seeder waits and finds the
    /// store full.
    pub async fn seed_demo_documents(&self) -> anyhow::Result<usize> {
        let _one_at_a_time = self.inner.ingesting.lock().await;
        if !self.inner.store.list().await?.is_empty() {
            return Ok(0);
        }
        let mut written = 0;
        for key in DemoDocuments::iter() {
            let Some(file) = DemoDocuments::get(&key) else {
                continue;
            };
            self.inner
                .store
                .put(&key, Bytes::from(file.data.into_owned()))
                .await?;
            written += 1;
        }
        Ok(written)
    }

    /// Brings the passages in line with the sources within `scope`.
    pub async fn sync(
        &self,
        scope: Scope,
        progress: Option<&Progress>,
    ) -> anyhow::Result<IngestReport> {
        let _one_at_a_time = self.inner.ingesting.lock().await;
        let started = Instant::now();
        let space = self.inner.embedder.name();
        self.inner
            .vectors
            .prepare(&space, self.inner.embedder.dimensions())
            .await
            .context("could not prepare the vector store")?;

        let listed = match &scope {
            Scope::Products => Vec::new(),
            // One document: ask for it rather than list the store.
            Scope::Exact(key) => self
                .inner
                .store
                .head(key)
                .await
                .context("could not read the document store")?
                .into_iter()
                .collect(),
            _ => self
                .inner
                .store
                .list()
                .await
                .context("could not list the document store")?,
        };
        let mut sources: Vec<Source> = listed
            .into_iter()
            .filter(|o| scope.covers(&o.key))
            .map(|o| Source {
                key: o.key,
                origin: "store",
                fingerprint: o.version,
                product: None,
            })
            .collect();
        if let Some(catalog) = &self.inner.catalog {
            for document in products::documents(&catalog.snapshot()) {
                if scope.covers(&document.key) {
                    sources.push(Source {
                        key: document.key.clone(),
                        origin: "catalog",
                        fingerprint: format!(
                            "{:016x}",
                            xxhash_rust::xxh3::xxh3_64(document.markdown.as_bytes())
                        ),
                        product: Some(document),
                    });
                }
            }
        }

        let existing: HashMap<String, DocumentRow> = repo::documents(&self.inner.db)
            .await?
            .into_iter()
            .filter(|d| scope.covers(&d.key))
            .map(|d| (d.key.clone(), d))
            .collect();
        let stale = repo::stale_documents(&self.inner.db, &space).await?;
        let mut report = IngestReport::default();
        let present: std::collections::HashSet<&str> =
            sources.iter().map(|s| s.key.as_str()).collect();
        let gone: Vec<String> = existing
            .keys()
            .filter(|k| !present.contains(k.as_str()))
            // Without a catalog (a command-line run) products are not judged.
            .filter(|k| self.inner.catalog.is_some() || !k.starts_with(products::KEY_PREFIX))
            .cloned()
            .collect();
        let todo: Vec<&Source> = sources
            .iter()
            .filter(|s| {
                existing
                    .get(&s.key)
                    .is_none_or(|d| d.fingerprint != s.fingerprint)
                    || stale.contains(&s.key)
            })
            .collect();
        report.unchanged = sources.len() - todo.len();
        if let Some(bar) = progress {
            bar.set_length(todo.len() as u64);
        }

        for source in todo {
            if let Some(bar) = progress {
                bar.set_message(source.key.clone());
            }
            let outcome = self.process(source, &space).await;
            match outcome {
                Ok(Some(passages)) => {
                    report.passages += passages;
                    if existing.contains_key(&source.key) {
                        report.updated += 1;
                    } else {
                        report.added += 1;
                    }
                }
                Ok(None) => report.deleted += 1,
                Err(Failure::Document(error)) => {
                    tracing::warn!(document = %source.key, %error, "document not indexed");
                    report.failed.push((
                        source.key.clone(),
                        error.status().to_string(),
                        error.to_string(),
                    ));
                }
                Err(Failure::Other(error)) => {
                    return Err(error.context(format!("while ingesting {}", source.key)));
                }
            }
            if let Some(bar) = progress {
                bar.inc(1);
            }
        }

        if !gone.is_empty() {
            self.forget(&gone).await?;
            report.deleted += gone.len();
        }
        self.refresh().await?;
        report.seconds = started.elapsed().as_secs_f64();
        metrics::counter!("kedai_kb_documents_ingested_total")
            .increment((report.added + report.updated) as u64);
        Ok(report)
    }

    /// Ingests one document; `Ok(None)` when it vanished meanwhile.
    async fn process(&self, source: &Source, space: &str) -> Result<Option<usize>, Failure> {
        let extracted = match &source.product {
            Some(product) => Ok(Extracted {
                parsed: super::chunk::parse_markdown(&product.markdown),
                meta: DocMeta {
                    title: Some(product.title.clone()),
                    kind: Some("product".into()),
                    language: None,
                    tags: product.tags.clone(),
                    url: Some(product.url.clone()),
                },
            }),
            None => {
                let Some(bytes) = self
                    .inner
                    .store
                    .get(&source.key)
                    .await
                    .map_err(|e| Failure::Other(e.into()))?
                else {
                    self.forget(std::slice::from_ref(&source.key))
                        .await
                        .map_err(Failure::Other)?;
                    return Ok(None);
                };
                extract(&source.key, &bytes).await
            }
        };
        let settings = &self.inner.settings;
        let mut document = DocumentRow {
            key: source.key.clone(),
            source: source.origin.to_string(),
            fingerprint: source.fingerprint.clone(),
            title: title_from_key(&source.key),
            url: String::new(),
            kind: kind_from_key(&source.key),
            language: settings.default_language.clone(),
            tags: String::new(),
            product_id: source.product.as_ref().map(|p| p.product_id),
            status: "indexed".into(),
            error: None,
            chunks: 0,
            ingested_at: OffsetDateTime::now_utc(),
        };
        let extracted = match extracted {
            Ok(extracted) => extracted,
            Err(error) => {
                document.status = error.status().to_string();
                document.error = Some(error.to_string());
                self.replace(&document, space, Vec::new())
                    .await
                    .map_err(Failure::Other)?;
                return Err(Failure::Document(error));
            }
        };
        let meta = extracted.meta;
        if let Some(title) = meta.title.or(extracted.parsed.title.clone()) {
            document.title = title;
        }
        document.url = meta.url.unwrap_or_default();
        if let Some(kind) = meta.kind {
            document.kind = kind;
        }
        if let Some(language) = meta.language {
            document.language = language;
        }
        document.tags = meta.tags.join(", ");

        let pieces = chunk(
            &extracted.parsed,
            ChunkSize {
                target: settings.chunk_tokens,
                overlap: settings.chunk_overlap,
            },
        );
        let texts: Vec<String> = pieces
            .iter()
            .map(|c| indexed_text(&document.title, &c.section, &c.text))
            .collect();
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in texts.chunks(EMBED_BATCH) {
            vectors.extend(
                self.inner
                    .embedder
                    .embed(batch)
                    .await
                    .map_err(|e| Failure::Other(e.into()))?,
            );
        }
        let chunks: Vec<NewChunk> = pieces
            .into_iter()
            .zip(texts.iter())
            .zip(vectors)
            .map(|((piece, text), embedding)| NewChunk {
                id: format!(
                    "{}#{}-{:08x}",
                    source.key,
                    piece.ordinal,
                    xxhash_rust::xxh3::xxh3_64(text.as_bytes()) as u32
                ),
                ordinal: piece.ordinal as i32,
                section: piece.section.join(SECTION_SEPARATOR),
                text: piece.text,
                tokens: piece.tokens as i32,
                embedding,
            })
            .collect();
        document.chunks = chunks.len() as i32;
        let count = chunks.len();
        self.replace(&document, space, chunks)
            .await
            .map_err(Failure::Other)?;
        Ok(Some(count))
    }

    /// Removes documents that are gone from their source: from a shared
    /// vector store first, then their rows (the embedded store follows the
    /// rows on refresh).
    async fn forget(&self, keys: &[String]) -> anyhow::Result<()> {
        if self.inner.local.is_none() {
            self.inner.vectors.delete_documents(keys).await?;
        }
        repo::delete_documents(&self.inner.writer, keys).await?;
        Ok(())
    }

    /// Writes a document's vectors to a shared store, then its rows; the
    /// embedded store catches up from the rows on refresh.
    async fn replace(
        &self,
        document: &DocumentRow,
        space: &str,
        chunks: Vec<NewChunk>,
    ) -> anyhow::Result<()> {
        if self.inner.local.is_none() {
            let key = vec![document.key.clone()];
            self.inner.vectors.delete_documents(&key).await?;
            let meta = PassageMeta {
                document: document.key.clone(),
                kind: document.kind.clone(),
                product_id: document.product_id,
                language: document.language.clone(),
                tags: super::split_tags(&document.tags),
            };
            let records: Vec<VectorRecord> = chunks
                .iter()
                .map(|c| VectorRecord {
                    id: c.id.clone(),
                    vector: c.embedding.clone(),
                    meta: meta.clone(),
                })
                .collect();
            if !records.is_empty() {
                self.inner.vectors.upsert(records).await?;
            }
        }
        repo::replace_document(&self.inner.writer, document, space, &chunks).await?;
        Ok(())
    }
}

enum Failure {
    /// The document itself is the problem: recorded, the run goes on.
    Document(ExtractError),
    /// The store, the embedder or the database: the run stops.
    Other(anyhow::Error),
}

/// `policies/returns-and-refunds.md` → `Returns and refunds`.
fn title_from_key(key: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    let words = stem.replace(['-', '_'], " ");
    let mut chars = words.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_uppercase().collect::<String>() + chars.as_str()
    })
}

/// A kind from the first folder of the key, for documents that name none.
fn kind_from_key(key: &str) -> String {
    if key.starts_with(products::KEY_PREFIX) {
        return "product".into();
    }
    let folder = key
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match folder.as_str() {
        "policies" | "policy" => "policy",
        "faq" | "faqs" => "faq",
        "guides" | "guide" => "guide",
        "store" => "store",
        _ => "doc",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_and_kinds_come_from_keys_when_documents_name_none() {
        assert_eq!(
            title_from_key("policies/returns-and-refunds.md"),
            "Returns and refunds"
        );
        assert_eq!(kind_from_key("policies/returns-and-refunds.md"), "policy");
        assert_eq!(kind_from_key("FAQ/x.html"), "faq");
        assert_eq!(kind_from_key("notes.txt"), "doc");
        assert_eq!(kind_from_key("product:batik"), "product");
    }

    #[test]
    fn a_prefix_scope_covers_only_its_keys() {
        assert!(Scope::All.covers("anything"));
        let scope = Scope::Prefix("policies/".into());
        assert!(scope.covers("policies/returns.md"));
        assert!(!scope.covers("faq/x.md"));
        assert!(Scope::Products.covers("product:cast-iron-kuali"));
        assert!(!Scope::Products.covers("policies/returns.md"));
    }
}
