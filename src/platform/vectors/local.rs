//! The embedded index as a [`VectorStore`]: one [`EmbeddedIndex`] per
//! process behind a read-write lock (searches share it), saved to
//! `vectors.path` so a restart loads instead of rebuilding. Each replica
//! keeps its own; the knowledge module reconciles it with the passages and
//! vectors stored in the database.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use super::{
    EmbeddedIndex, IndexOptions, VectorError, VectorFilter, VectorHit, VectorRecord, VectorStore,
};

pub struct EmbeddedVectors {
    index: RwLock<Arc<EmbeddedIndex>>,
    /// Where the index is saved; `None` keeps it in memory only.
    file: Option<PathBuf>,
    options: IndexOptions,
    /// One save at a time (they share the temporary file).
    saving: tokio::sync::Mutex<()>,
    /// One change at a time (each works on a copy).
    writing: tokio::sync::Mutex<()>,
}

impl EmbeddedVectors {
    /// An index kept only in memory (tests, evaluation runs).
    pub fn in_memory(options: IndexOptions) -> Self {
        EmbeddedVectors {
            index: RwLock::new(Arc::new(EmbeddedIndex::new("", 0))),
            file: None,
            options,
            saving: tokio::sync::Mutex::new(()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    /// An index saved under `folder`.
    pub fn persisted(folder: PathBuf, options: IndexOptions) -> Self {
        EmbeddedVectors {
            file: Some(folder.join("knowledge.index")),
            ..EmbeddedVectors::in_memory(options)
        }
    }

    /// The current index (a cheap snapshot; writers copy on write).
    pub fn snapshot(&self) -> Arc<EmbeddedIndex> {
        self.index.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes a copy of the index off the async workers (building the
    /// HNSW graph when it is due takes seconds at 10,000 rows), then swaps
    /// it in: searches keep using the old index meanwhile.
    async fn update<T: Send + 'static>(
        &self,
        change: impl FnOnce(&mut EmbeddedIndex) -> T + Send + 'static,
    ) -> Result<T, VectorError> {
        let _one_writer = self.writing.lock().await;
        let mut index = (*self.snapshot()).clone();
        let (index, result) = tokio::task::spawn_blocking(move || {
            let result = change(&mut index);
            index.prepare_search();
            (index, result)
        })
        .await
        .map_err(|e| VectorError::Failed(e.to_string()))?;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        Ok(result)
    }

    /// Saves the index to its file, if it has one.
    pub async fn save(&self) -> Result<(), VectorError> {
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        let _one_at_a_time = self.saving.lock().await;
        let index = self.snapshot();
        tokio::task::spawn_blocking(move || {
            if let Some(folder) = file.parent() {
                std::fs::create_dir_all(folder)?;
            }
            index.save(&file)
        })
        .await
        .map_err(|e| VectorError::Failed(e.to_string()))??;
        Ok(())
    }

    /// The ids held for each document.
    pub fn documents(&self) -> std::collections::HashMap<String, Vec<String>> {
        let index = self.snapshot();
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for id in index.ids() {
            let document = id.rsplit_once('#').map_or(id, |(d, _)| d);
            out.entry(document.to_string())
                .or_default()
                .push(id.to_string());
        }
        out
    }
}

#[async_trait::async_trait]
impl VectorStore for EmbeddedVectors {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn prepare(&self, space: &str, dimensions: usize) -> Result<(), VectorError> {
        let _one_writer = self.writing.lock().await;
        let current = self.snapshot();
        if current.space() == space && current.dimensions() == dimensions {
            return Ok(());
        }
        let loaded = match self.file.clone() {
            Some(file) => {
                let space = space.to_string();
                tokio::task::spawn_blocking(move || EmbeddedIndex::load(&file, &space, dimensions))
                    .await
                    .map_err(|e| VectorError::Failed(e.to_string()))?
            }
            None => Ok(None),
        };
        let mut index = match loaded {
            Ok(Some(index)) => index,
            Ok(None) => EmbeddedIndex::new(space, dimensions),
            Err(error) => {
                // Another embedder's (or a damaged) file: start empty and let
                // the vectors come back from the database.
                tracing::warn!(%error, "the saved vector index is not usable; rebuilding it");
                EmbeddedIndex::new(space, dimensions)
            }
        };
        let options = self.options;
        let index = tokio::task::spawn_blocking(move || {
            index.set_options(options);
            index.prepare_search();
            index
        })
        .await
        .map_err(|e| VectorError::Failed(e.to_string()))?;
        *self.index.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(index);
        Ok(())
    }

    async fn upsert(&self, records: Vec<VectorRecord>) -> Result<(), VectorError> {
        self.update(|index| {
            for record in records {
                index.upsert(&record.id, &record.vector, record.meta)?;
            }
            Ok::<_, VectorError>(())
        })
        .await?
    }

    async fn delete_documents(&self, documents: &[String]) -> Result<(), VectorError> {
        let documents = documents.to_vec();
        self.update(move |index| {
            for document in &documents {
                index.delete_document(document);
            }
        })
        .await
    }

    async fn search(
        &self,
        vector: &[f32],
        filter: &VectorFilter,
        k: usize,
    ) -> Result<Vec<VectorHit>, VectorError> {
        Ok(self.snapshot().search(vector, filter, k)?)
    }

    async fn count(&self) -> Result<usize, VectorError> {
        Ok(self.snapshot().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::vectors::PassageMeta;

    fn record(i: usize, dimensions: usize) -> VectorRecord {
        let mut vector: Vec<f32> = (0..dimensions)
            .map(|d| (((i * 31 + d * 17) % 101) as f32 - 50.0) / 50.0)
            .collect();
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        vector.iter_mut().for_each(|x| *x /= norm);
        VectorRecord {
            id: format!("doc{}#{i}", i % 10),
            vector,
            meta: PassageMeta {
                document: format!("doc{}", i % 10),
                ..PassageMeta::default()
            },
        }
    }

    #[tokio::test]
    async fn the_graph_is_built_above_the_threshold_and_saved_with_the_index() {
        let folder = tempfile::tempdir().unwrap();
        let options = IndexOptions {
            quantize: true,
            hnsw_threshold: 50,
        };
        let store = EmbeddedVectors::persisted(folder.path().to_path_buf(), options);
        store.prepare("space", 32).await.unwrap();
        store
            .upsert((0..40).map(|i| record(i, 32)).collect())
            .await
            .unwrap();
        assert!(
            !store.snapshot().has_graph(),
            "below the threshold: exact only"
        );
        store
            .upsert((40..120).map(|i| record(i, 32)).collect())
            .await
            .unwrap();
        assert!(store.snapshot().has_graph());
        let query = record(7, 32).vector;
        let hits = store
            .search(&query, &VectorFilter::default(), 3)
            .await
            .unwrap();
        assert_eq!(hits[0].id, "doc7#7");
        store.delete_documents(&["doc7".to_string()]).await.unwrap();
        let hits = store
            .search(&query, &VectorFilter::default(), 3)
            .await
            .unwrap();
        assert!(hits.iter().all(|h| h.meta.document != "doc7"));
        assert_eq!(store.count().await.unwrap(), 108);
        assert_eq!(store.documents().len(), 9);

        store.save().await.unwrap();
        let reopened = EmbeddedVectors::persisted(folder.path().to_path_buf(), options);
        reopened.prepare("space", 32).await.unwrap();
        assert_eq!(reopened.count().await.unwrap(), 108);
        assert_eq!(
            reopened
                .search(&query, &VectorFilter::default(), 3)
                .await
                .unwrap(),
            hits
        );
        // Another vector space is never loaded into this one.
        let other = EmbeddedVectors::persisted(folder.path().to_path_buf(), options);
        other.prepare("another-space", 32).await.unwrap();
        assert_eq!(other.count().await.unwrap(), 0);
    }
}
