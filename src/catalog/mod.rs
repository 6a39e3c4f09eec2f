//! The catalog a shopper browses: categories, products, variants, prices,
//! stock states and search.
//!
//! Reads come from an in-memory [`CatalogSnapshot`] that every replica
//! refreshes when the database's catalog version changes; search runs on the
//! database's full-text index and its results are cached per version. Writes
//! go through `repo` and bump the version in the same transaction.

pub mod demo;
pub mod demo_data;
pub mod edit;
pub mod entity;
pub mod media;
pub mod model;
pub mod read_model;
pub mod repo;
pub mod routes;
pub mod views;

use std::sync::{Arc, RwLock};

use anyhow::Context;
use sea_orm::{DatabaseConnection, DbErr};
use tokio_util::sync::CancellationToken;

use crate::config::CatalogSettings;
pub use model::{Category, Money, Product, SortOrder, StockState, Variant};
pub use read_model::{CatalogSnapshot, SearchTerms};

/// Stock operations other modules run inside their own transactions (the
/// order module reserves, sells and restocks through these). Each returns
/// whether its condition held and stamps the variant's `updated_at`, which
/// the replicas' refresh loops watch (see [`Catalog::refresh_if_changed`]);
/// they deliberately do not bump `catalog_state.version`, whose single row
/// would serialise every concurrent checkout on PostgreSQL. Selling and
/// restocking change the units on hand, so they also append a row to the
/// stock ledger under the order's id (reserving does not: the units stay
/// on the shelf).
pub mod stock {
    pub use super::repo::{
        VariantForSale, release_stock, reserve_stock, restock, take_reserved_stock,
        take_unreserved_stock, variant_categories, variants_for_sale,
    };
}

/// The back-office's catalog: every product (archived ones too) with its
/// stock totals, the low-stock list, one product with its variants, and
/// the changes admins make: create, edit, archive and bring back products,
/// add and edit variants, adjust stock with a reason. Each write is one
/// transaction through the `Writer` that bumps `catalog_state.version`
/// (edits) or stamps `variants.updated_at` (stock), so every replica's
/// snapshot, and through it the knowledge base's product documents,
/// follows within `catalog.refresh_interval`; each adjustment writes its
/// stock-ledger row in that same transaction.
pub use edit::{
    Adjustment, EditError, LedgerEntry, LowStockVariant, ProductDraft, ProductFilter,
    ProductRecord, ProductStatus, ProductSummary, StockAdjusted, StockReason, VariantDraft,
    VariantRecord,
};
pub use repo::{
    add_variant, adjust_stock, category_choices, create_product, list_products, low_stock,
    product_record, set_product_status, stock_ledger, update_product, update_variant,
    variant_record_by_id,
};

/// The search results for one normalised query, best first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchHits {
    /// What was searched for, after normalisation.
    pub query: String,
    /// Set when no product matched the words as typed and the words were
    /// corrected: what was searched for instead.
    pub corrected: Option<String>,
    pub product_ids: Vec<i64>,
}

/// Shared handle to the catalog; cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    inner: Arc<Inner>,
}

struct Inner {
    db: DatabaseConnection,
    settings: CatalogSettings,
    snapshot: RwLock<Arc<CatalogSnapshot>>,
    search_cache: quick_cache::sync::Cache<(i64, String), Arc<SearchHits>>,
}

impl Catalog {
    /// Loads the snapshot from the database.
    pub async fn load(db: DatabaseConnection, settings: CatalogSettings) -> anyhow::Result<Self> {
        let snapshot = Self::read_snapshot(&db, &settings)
            .await
            .context("could not load the catalog")?;
        Ok(Catalog {
            inner: Arc::new(Inner {
                search_cache: quick_cache::sync::Cache::new(settings.search_cache_entries.max(16)),
                db,
                settings,
                snapshot: RwLock::new(Arc::new(snapshot)),
            }),
        })
    }

    async fn read_snapshot(
        db: &DatabaseConnection,
        settings: &CatalogSettings,
    ) -> Result<CatalogSnapshot, DbErr> {
        let (stamp, categories, products) =
            repo::load_catalog(db, settings.low_stock_threshold).await?;
        let mut snapshot = CatalogSnapshot::build(stamp.version, categories, products);
        snapshot.stamp = stamp;
        Ok(snapshot)
    }

    pub fn settings(&self) -> &CatalogSettings {
        &self.inner.settings
    }

    /// The current snapshot. Holders keep a consistent view even while a
    /// newer one is swapped in.
    pub fn snapshot(&self) -> Arc<CatalogSnapshot> {
        self.inner
            .snapshot
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reloads the snapshot unconditionally.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let snapshot = Self::read_snapshot(&self.inner.db, &self.inner.settings).await?;
        let products = snapshot.product_count();
        let version = snapshot.version;
        *self
            .inner
            .snapshot
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
        metrics::gauge!("kedai_catalog_version").set(version as f64);
        metrics::gauge!("kedai_catalog_products").set(products as f64);
        tracing::info!(version, products, "catalog snapshot loaded");
        Ok(())
    }

    /// One step of the refresh loop: reloads when another writer (this or
    /// another replica) has bumped the catalog version or changed any
    /// variant's stock since the snapshot was read. Returns whether it
    /// reloaded.
    pub async fn refresh_if_changed(&self) -> anyhow::Result<bool> {
        let stamp = repo::current_stamp(&self.inner.db).await?;
        if stamp == self.snapshot().stamp {
            return Ok(false);
        }
        self.reload().await?;
        Ok(true)
    }

    /// Polls the catalog version until shutdown.
    pub async fn run_refresh_loop(self, shutdown: CancellationToken) {
        let mut interval = tokio::time::interval(self.inner.settings.refresh_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {
                    if let Err(error) = self.refresh_if_changed().await {
                        tracing::warn!(error = format!("{error:#}"), "catalog refresh failed");
                    }
                }
            }
        }
    }

    /// Full-text search over product names, tags and descriptions: every
    /// word first, then any word, then with typos corrected.
    pub async fn search(&self, terms: &SearchTerms) -> Result<Arc<SearchHits>, DbErr> {
        let snapshot = self.snapshot();
        let query = terms.joined();
        let key = (snapshot.version, query.clone());
        if let Some(hits) = self.inner.search_cache.get(&key) {
            metrics::counter!("kedai_search_total", "cache" => "hit").increment(1);
            return Ok(hits);
        }
        metrics::counter!("kedai_search_total", "cache" => "miss").increment(1);
        let db = &self.inner.db;
        let mut corrected = None;
        let mut ids = repo::search_product_ids(db, terms.terms(), repo::Match::All).await?;
        if ids.is_empty() && terms.terms().len() > 1 {
            ids = repo::search_product_ids(db, terms.terms(), repo::Match::Any).await?;
        }
        if ids.is_empty()
            && let Some(fixed) = snapshot.correct_terms(terms.terms())
        {
            ids = repo::search_product_ids(db, &fixed, repo::Match::All).await?;
            if ids.is_empty() && fixed.len() > 1 {
                ids = repo::search_product_ids(db, &fixed, repo::Match::Any).await?;
            }
            if !ids.is_empty() {
                corrected = Some(fixed.join(" "));
            }
        }
        // Products hidden from the snapshot (archived, no variants) never show.
        ids.retain(|id| snapshot.product_by_id(*id).is_some());
        let hits = Arc::new(SearchHits {
            query,
            corrected,
            product_ids: ids,
        });
        self.inner.search_cache.insert(key, hits.clone());
        Ok(hits)
    }

    /// Seeds the demo catalog when the database has no products yet.
    /// Returns how many products were inserted (0 when not empty).
    pub async fn seed_demo_if_empty(db: &DatabaseConnection) -> anyhow::Result<usize> {
        if repo::product_count(db).await? > 0 {
            return Ok(0);
        }
        match repo::insert_catalog(db, demo::demo_catalog()).await {
            Ok(inserted) => Ok(inserted),
            // Another replica seeding at the same moment wins the unique
            // slugs; its catalog is the same one.
            Err(_) if repo::product_count(db).await? > 0 => Ok(0),
            Err(error) => Err(anyhow::Error::new(error).context("could not seed the demo catalog")),
        }
    }

    /// Sets one variant's stock on hand; the snapshot follows on the next refresh.
    pub async fn set_stock(&self, sku: &str, stock_on_hand: i32) -> anyhow::Result<bool> {
        Ok(repo::set_stock(&self.inner.db, sku, stock_on_hand).await?)
    }
}
