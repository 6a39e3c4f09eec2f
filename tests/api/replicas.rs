//! Two replicas on one database: a catalog change made through one shows on
//! the other after its refresh interval, with no restart.

use std::time::Duration;

use kedai::catalog::demo::demo_catalog;

use crate::helpers::{Backend, TestDatabase, spawn_on};

async fn a_change_on_one_replica_reaches_the_other(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let database = std::sync::Arc::new(database);
    let first = spawn_on(database.clone(), &[]).await;
    let second = spawn_on(database.clone(), &[]).await;

    let catalog = demo_catalog();
    let product = catalog
        .iter()
        .flat_map(|c| &c.products)
        .find(|p| p.variants.len() == 1 && p.variants[0].stock_on_hand > 10)
        .unwrap();
    let path = format!("/products/{}", product.slug);
    assert!(second.page(&path).await.1.contains("In stock"));

    first
        .context
        .catalog
        .set_stock(&product.variants[0].sku, 0)
        .await
        .unwrap();
    // The second replica polls every 100 ms in tests; allow it a few seconds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        if second
            .page(&path)
            .await
            .1
            .contains("stock-badge sold-out\">Sold out")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the second replica never saw the change"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Both seeded from one database: the demo was inserted once.
    assert_eq!(first.context.catalog.snapshot().product_count(), 220);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_replicas_share_catalog_changes() {
    a_change_on_one_replica_reaches_the_other(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_share_catalog_changes() {
    a_change_on_one_replica_reaches_the_other(Backend::Postgres).await;
}

/// Two replicas starting at the same moment on an empty PostgreSQL database
/// both come up: migrations are serialised and the demo is seeded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replicas_starting_together_migrate_and_seed_once() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let database = std::sync::Arc::new(database);
    let (a, b) = tokio::join!(
        spawn_on(database.clone(), &[]),
        spawn_on(database.clone(), &[])
    );
    assert_eq!(a.context.catalog.snapshot().product_count(), 220);
    assert_eq!(b.context.catalog.snapshot().product_count(), 220);
}
