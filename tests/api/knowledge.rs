//! The knowledge base end to end, on SQLite and PostgreSQL: ingestion of
//! every format and of the catalog (incremental, idempotent, failures
//! reported), hybrid search through the module API and the operations
//! endpoint, uploads, a change of embedder, a second replica, background
//! ingestion at startup, and retrieval quality on the shipped labelled set.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kedai::knowledge::{Knowledge, Mode, Scope};
use kedai::platform::db::Writer;
use kedai::platform::embed::{Embedder, HashingEmbedder};
use kedai::platform::objects::DocumentStore;
use kedai::platform::vectors::{EmbeddedVectors, VectorFilter, VectorStore};
use serde_json::Value;

use crate::helpers::{Backend, TestApp, TestDatabase, spawn_app_with, spawn_on};

const TOKEN: &str = "kb-ops-token";

const RETURNS_MD: &str = "---\ntitle: Returns and refunds\nkind: policy\nlang: en\ntags: returns, refund\nurl: /help/returns\n---\n# Returns and refunds\n\n## How long you have\n\nYou may send an unworn item back within 14 days of delivery.\n\n## Getting your money back\n\nWe refund to the original card within 5 working days of receiving the parcel.\n";
const CARE_HTML: &str = "<!doctype html><html lang=\"en\"><head><title>Batik care</title><meta name=\"kind\" content=\"guide\"></head><body><h1>Batik care</h1><h2>Washing</h2><p>Hand wash batik in cold water with a mild soap and dry it in the shade.</p></body></html>";
const HOURS_TXT: &str =
    "Store hours\n\nOur Penang studio opens from 10am to 7pm, Tuesday to Sunday.";

fn demo_file(path: &str) -> Bytes {
    Bytes::from(
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}")),
    )
}

async fn app(backend: Backend, extra: &[(&str, &str)]) -> Option<TestApp> {
    let mut settings = vec![("server.ops_api_token", TOKEN)];
    settings.extend_from_slice(extra);
    spawn_app_with(backend, &settings).await
}

/// Writes the small test corpus: one of each format plus two bad PDFs.
async fn write_corpus(store: &DocumentStore) {
    store
        .put("policies/returns.md", Bytes::from(RETURNS_MD))
        .await
        .unwrap();
    store
        .put("guides/batik-care.html", Bytes::from(CARE_HTML))
        .await
        .unwrap();
    store
        .put("store/hours.txt", Bytes::from(HOURS_TXT))
        .await
        .unwrap();
    store
        .put(
            "pdf/warranty-card.pdf",
            demo_file("demo/kb/pdf/warranty-card.pdf"),
        )
        .await
        .unwrap();
    store
        .put(
            "pdf/scanned.pdf",
            demo_file("tests/fixtures/kb/scanned.pdf"),
        )
        .await
        .unwrap();
    store
        .put("pdf/broken.pdf", demo_file("tests/fixtures/kb/broken.pdf"))
        .await
        .unwrap();
    store
        .put("notes/readme.docx", Bytes::from("PK.."))
        .await
        .unwrap();
}

/// Clears the demo documents the app may have written, so a test sees
/// only its own corpus.
async fn empty_store(store: &DocumentStore) {
    for object in store.list().await.unwrap() {
        store.delete(&object.key).await.unwrap();
    }
}

async fn knowledge_of(app: &TestApp) -> Knowledge {
    let knowledge = app.context.knowledge.clone();
    // The background loop writes the demo documents; wait until it has
    // written them all.
    let demo = kedai::knowledge::demo_document_keys().len();
    for _ in 0..250 {
        if knowledge.store().list().await.unwrap().len() >= demo {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    empty_store(knowledge.store()).await;
    knowledge
}

async fn ingestion_is_incremental_and_reports_bad_documents(backend: Backend) {
    let Some(app) = app(backend, &[]).await else {
        return;
    };
    let knowledge = knowledge_of(&app).await;
    write_corpus(knowledge.store()).await;
    let products = app.context.catalog.snapshot().product_count();

    let first = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!(first.added, 4 + products, "{first:?}");
    let mut failed: Vec<(String, String)> = first
        .failed
        .iter()
        .map(|(key, status, _)| (key.clone(), status.clone()))
        .collect();
    failed.sort();
    assert_eq!(
        failed,
        vec![
            ("notes/readme.docx".into(), "unsupported".into()),
            ("pdf/broken.pdf".into(), "failed".into()),
            ("pdf/scanned.pdf".into(), "no_text".into()),
        ]
    );
    let scanned = first
        .failed
        .iter()
        .find(|f| f.0 == "pdf/scanned.pdf")
        .unwrap();
    assert!(scanned.2.contains("no text layer"), "{scanned:?}");
    assert!(first.passages >= 4 + products);

    // Every document's metadata made it through.
    let documents = kedai::knowledge::repo::documents(&app.context.db)
        .await
        .unwrap();
    let returns = documents
        .iter()
        .find(|d| d.key == "policies/returns.md")
        .unwrap();
    assert_eq!(
        (
            returns.title.as_str(),
            returns.kind.as_str(),
            returns.language.as_str(),
            returns.url.as_str()
        ),
        ("Returns and refunds", "policy", "en", "/help/returns")
    );
    assert_eq!(returns.chunks, 2, "one passage per section");
    let care = documents
        .iter()
        .find(|d| d.key == "guides/batik-care.html")
        .unwrap();
    assert_eq!(
        (care.title.as_str(), care.kind.as_str()),
        ("Batik care", "guide")
    );
    let hours = documents
        .iter()
        .find(|d| d.key == "store/hours.txt")
        .unwrap();
    assert_eq!(
        (hours.title.as_str(), hours.kind.as_str()),
        ("Store hours", "store")
    );
    let warranty = documents
        .iter()
        .find(|d| d.key == "pdf/warranty-card.pdf")
        .unwrap();
    assert_eq!(warranty.status, "indexed");
    assert!(warranty.chunks >= 2, "{warranty:?}");
    assert_eq!(
        documents.iter().filter(|d| d.source == "catalog").count(),
        products
    );

    // Nothing changed: nothing is processed.
    let again = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!(
        (again.added, again.updated, again.deleted, again.passages),
        (0, 0, 0, 0),
        "{again:?}"
    );
    assert_eq!(again.unchanged, 4 + products + 3);

    // One edit, one deletion, one product sold out: exactly those.
    knowledge
        .store()
        .put(
            "policies/returns.md",
            Bytes::from(RETURNS_MD.replace("14 days", "30 days")),
        )
        .await
        .unwrap();
    knowledge.store().delete("store/hours.txt").await.unwrap();
    let snapshot = app.context.catalog.snapshot();
    let product = snapshot
        .product_by_slug("kelantan-hand-drawn-batik-shirt")
        .unwrap()
        .clone();
    for variant in &product.variants {
        app.context
            .catalog
            .set_stock(&variant.sku, 0)
            .await
            .unwrap();
    }
    app.context.catalog.reload().await.unwrap();
    let third = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!(
        (third.added, third.updated, third.deleted),
        (0, 2, 1),
        "{third:?}"
    );

    let filter = VectorFilter::default();
    let hits = knowledge
        .search("how many days to send back", &filter, 3)
        .await
        .unwrap();
    assert_eq!(hits[0].document, "policies/returns.md");
    assert!(
        hits.iter().all(|h| !h.text.contains("14 days")),
        "the old text is gone"
    );
    let shirt = knowledge
        .search(
            "Kelantan batik shirt",
            &VectorFilter {
                kind: Some("product".into()),
                ..Default::default()
            },
            1,
        )
        .await
        .unwrap();
    assert_eq!(shirt[0].document, "product:kelantan-hand-drawn-batik-shirt");
    assert!(shirt[0].text.contains("sold out"), "{}", shirt[0].text);
    assert_eq!(shirt[0].product_id, Some(product.id));
    assert!(
        knowledge
            .search("Penang studio opening hours", &filter, 5)
            .await
            .unwrap()
            .iter()
            .all(|h| h.document != "store/hours.txt")
    );
}

#[tokio::test]
async fn ingestion_is_incremental_and_reports_bad_documents_sqlite() {
    ingestion_is_incremental_and_reports_bad_documents(Backend::Sqlite).await;
}

#[tokio::test]
async fn ingestion_is_incremental_and_reports_bad_documents_postgres() {
    ingestion_is_incremental_and_reports_bad_documents(Backend::Postgres).await;
}

async fn the_operations_api_searches_uploads_and_deletes(backend: Backend) {
    let Some(app) = app(backend, &[]).await else {
        return;
    };
    let knowledge = knowledge_of(&app).await;
    let url = |path: &str| format!("{}/api/ops/kb{path}", app.address);

    let anonymous = app
        .client
        .get(url("/search?q=refund"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    let uploaded = app
        .client
        .put(url("/documents/policies/returns.md"))
        .bearer_auth(TOKEN)
        .body(RETURNS_MD)
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 200);
    let body: Value = uploaded.json().await.unwrap();
    assert_eq!(body["report"]["added"], 1, "{body}");
    assert_eq!(body["report"]["passages"], 2, "{body}");

    let scanned = app
        .client
        .put(url("/documents/scans/scanned.pdf"))
        .bearer_auth(TOKEN)
        .body(demo_file("tests/fixtures/kb/scanned.pdf"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        scanned.status(),
        422,
        "a PDF without text is refused loudly"
    );
    let unsupported = app
        .client
        .put(url("/documents/a.exe"))
        .bearer_auth(TOKEN)
        .body("MZ")
        .send()
        .await
        .unwrap();
    assert_eq!(unsupported.status(), 415);
    let escaping = app
        .client
        .put(url("/documents/..%2F..%2Fetc%2Fpasswd.md"))
        .bearer_auth(TOKEN)
        .body("x")
        .send()
        .await
        .unwrap();
    assert!(
        escaping.status() == 400 || escaping.status() == 404,
        "{}",
        escaping.status()
    );

    let search = app
        .client
        .get(url(
            "/search?q=money%20back%20to%20my%20card&k=2&kind=policy",
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), 200);
    let body: Value = search.json().await.unwrap();
    let first = &body["passages"][0];
    assert_eq!(first["document"], "policies/returns.md", "{body}");
    assert_eq!(first["title"], "Returns and refunds");
    assert_eq!(first["url"], "/help/returns");
    assert_eq!(first["section"][1], "Getting your money back");
    assert!(first["citation"].as_str().unwrap().starts_with("kb:"));
    assert!(first["score"].as_f64().unwrap() > 0.0);
    assert_eq!(body["mode"], "hybrid");

    let guides = app
        .client
        .get(url("/search?q=refund&kind=guide"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let body: Value = guides.json().await.unwrap();
    assert_eq!(body["passages"].as_array().unwrap().len(), 0, "{body}");
    let bad = app
        .client
        .get(url("/search?q=x&mode=magic"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let listed: Value = app
        .client
        .get(url("/documents"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["embedder"], "local-hash-v3-1024");
    assert_eq!(listed["vector_store"], "embedded");
    let statuses: Vec<(String, String)> = listed["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(statuses.contains(&("policies/returns.md".into(), "indexed".into())));
    assert!(statuses.contains(&("scans/scanned.pdf".into(), "no_text".into())));

    let deleted = app
        .client
        .delete(url("/documents/policies/returns.md"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    let again = app
        .client
        .delete(url("/documents/policies/returns.md"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    let hits = knowledge
        .search("money back", &VectorFilter::default(), 5)
        .await
        .unwrap();
    assert!(hits.iter().all(|h| h.document != "policies/returns.md"));
}

#[tokio::test]
async fn the_operations_api_searches_uploads_and_deletes_sqlite() {
    the_operations_api_searches_uploads_and_deletes(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_operations_api_searches_uploads_and_deletes_postgres() {
    the_operations_api_searches_uploads_and_deletes(Backend::Postgres).await;
}

/// A knowledge base on `database` with its own embedder and index folder.
fn knowledge_with(
    app: &TestApp,
    embedder: Arc<dyn Embedder>,
    index: &std::path::Path,
) -> (Knowledge, Arc<EmbeddedVectors>) {
    let local = Arc::new(EmbeddedVectors::persisted(
        index.to_path_buf(),
        Default::default(),
    ));
    let knowledge = Knowledge::new(
        app.context.db.clone(),
        Writer::new(app.context.db.clone()),
        app.context.knowledge.store().clone(),
        None,
        embedder,
        local.clone(),
        Some(local.clone()),
        app.context.settings.knowledge.clone(),
    );
    (knowledge, local)
}

async fn a_new_embedder_re_embeds_instead_of_mixing(backend: Backend) {
    let Some(app) = app(backend, &[]).await else {
        return;
    };
    let knowledge = knowledge_of(&app).await;
    knowledge
        .store()
        .put("policies/returns.md", Bytes::from(RETURNS_MD))
        .await
        .unwrap();
    knowledge
        .store()
        .put("guides/batik-care.html", Bytes::from(CARE_HTML))
        .await
        .unwrap();
    let first = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!(
        first.added,
        2 + app.context.catalog.snapshot().product_count()
    );

    let index = tempfile::tempdir().unwrap();
    let (other, local) = knowledge_with(&app, Arc::new(HashingEmbedder::new(256)), index.path());
    let report = other.sync(Scope::All, None).await.unwrap();
    // No catalog here: products are left alone; both documents re-embedded.
    assert_eq!(
        (report.added, report.updated, report.unchanged),
        (0, 2, 0),
        "{report:?}"
    );
    let spaces = kedai::knowledge::repo::spaces(&app.context.db)
        .await
        .unwrap();
    assert!(
        spaces.iter().any(|(space, _)| space == "local-hash-v3-256"),
        "{spaces:?}"
    );
    assert_eq!(
        local.count().await.unwrap(),
        3,
        "only this space's vectors are indexed"
    );
    let hits = other
        .search_with("cold water wash", &VectorFilter::default(), 1, Mode::Vector)
        .await
        .unwrap();
    assert_eq!(hits[0].document, "guides/batik-care.html");
    // The index file on disk is of the new space, and loads back.
    let reloaded = kedai::platform::vectors::EmbeddedIndex::load(
        &index.path().join("knowledge.index"),
        "local-hash-v3-256",
        256,
    )
    .unwrap()
    .expect("saved");
    assert_eq!(reloaded.len(), 3);
}

#[tokio::test]
async fn a_new_embedder_re_embeds_instead_of_mixing_sqlite() {
    a_new_embedder_re_embeds_instead_of_mixing(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_new_embedder_re_embeds_instead_of_mixing_postgres() {
    a_new_embedder_re_embeds_instead_of_mixing(Backend::Postgres).await;
}

/// A second replica never ingests: it loads passages and stored vectors
/// when the generation moves, and answers the same.
async fn a_replica_follows_without_embedding(backend: Backend) {
    let Some(first) = app(backend, &[("knowledge.refresh_interval", "100ms")]).await else {
        return;
    };
    let knowledge = knowledge_of(&first).await;
    knowledge
        .store()
        .put("policies/returns.md", Bytes::from(RETURNS_MD))
        .await
        .unwrap();
    knowledge.sync(Scope::All, None).await.unwrap();

    let database: Arc<TestDatabase> = first.database.clone();
    let second = spawn_on(
        database,
        &[
            ("server.ops_api_token", TOKEN),
            ("knowledge.refresh_interval", "100ms"),
        ],
    )
    .await;
    let mut found = Vec::new();
    for _ in 0..100 {
        found = second
            .context
            .knowledge
            .search("money back card", &VectorFilter::default(), 1)
            .await
            .unwrap();
        if !found.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let here = knowledge
        .search("money back card", &VectorFilter::default(), 1)
        .await
        .unwrap();
    assert_eq!(found.first().map(|p| &p.id), here.first().map(|p| &p.id));
    assert_eq!(found[0].vector_score, here[0].vector_score);
}

#[tokio::test]
async fn a_replica_follows_without_embedding_sqlite() {
    a_replica_follows_without_embedding(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_replica_follows_without_embedding_postgres() {
    a_replica_follows_without_embedding(Backend::Postgres).await;
}

/// A fresh install: the shop is ready at once; the demo knowledge base is
/// written and ingested in the background and becomes searchable.
#[tokio::test]
async fn a_fresh_install_ingests_the_demo_knowledge_base_in_the_background() {
    let Some(app) = app(Backend::Sqlite, &[("knowledge.ingest_on_start", "true")]).await else {
        return;
    };
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let mut documents = 0;
    for _ in 0..300 {
        documents = app.context.knowledge.corpus().documents();
        if documents > 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let products = app.context.catalog.snapshot().product_count();
    assert!(
        documents >= products + 30,
        "{documents} documents searchable"
    );
    let hits = app
        .context
        .knowledge
        .search(
            "berapa lama penghantaran ke sabah",
            &VectorFilter::default(),
            5,
        )
        .await
        .unwrap();
    assert!(!hits.is_empty());
}

/// The retrieval-quality floor on the shipped labelled sets: hybrid search
/// with the embedded embedder beats keyword-only search and keeps the
/// recall@5 it had when this was written (0.700 on `demo/kb-eval`, 0.651 on
/// the held-out `demo/kb-eval-holdout`; the target of 0.90 is not
/// reached, see docs/PERFORMANCE.md), so a change that makes retrieval
/// worse fails here.
#[tokio::test]
async fn hybrid_retrieval_meets_the_quality_target_on_the_demo_set() {
    hybrid_retrieval_keeps_its_level("demo/kb-eval", 210, 0.69).await;
}

#[tokio::test]
async fn hybrid_retrieval_keeps_its_level_on_the_held_out_questions() {
    hybrid_retrieval_keeps_its_level("demo/kb-eval-holdout", 120, 0.64).await;
}

async fn hybrid_retrieval_keeps_its_level(folder: &str, questions: usize, floor: f64) {
    use kedai::knowledge::eval::{BeirSet, Evaluation, Split};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(folder);
    let set = BeirSet::load(&dir).unwrap();
    assert_eq!(set.queries.len(), questions);
    let settings = kedai::config::Settings::load(&kedai::config::ConfigSources::default()).unwrap();
    let embedder: Arc<dyn Embedder> = Arc::new(HashingEmbedder::new(
        settings.embeddings.local_dimensions as usize,
    ));
    let evaluation = Evaluation::ingest(&set, embedder, &settings.knowledge)
        .await
        .unwrap();
    let keyword = evaluation
        .score(&set, Mode::Keyword, Split::All, None)
        .await
        .unwrap();
    let hybrid = evaluation
        .score(&set, Mode::Hybrid, Split::All, None)
        .await
        .unwrap();
    println!(
        "{folder}: keyword recall@5 {:.3}, hybrid recall@5 {:.3}, hybrid MRR@10 {:.3}",
        keyword.recall_5, hybrid.recall_5, hybrid.mrr_10
    );
    assert!(
        hybrid.recall_5 >= floor,
        "{folder}: hybrid recall@5 {:.3}",
        hybrid.recall_5
    );
    assert!(hybrid.recall_5 > keyword.recall_5 + 0.1);
    assert!(hybrid.mrr_10 > keyword.mrr_10);
}

/// Ingestion from S3 (the emulator): change detection by ETag/version,
/// deletions, and a PDF read from the bucket.
#[tokio::test]
async fn ingestion_follows_an_s3_bucket() {
    let bucket = crate::objects::bucket_name();
    let Some(store) = crate::objects::s3_store(&bucket, "kb").await else {
        return;
    };
    let Some(app) = app(Backend::Sqlite, &[]).await else {
        return;
    };
    let index = tempfile::tempdir().unwrap();
    let local = Arc::new(EmbeddedVectors::persisted(
        index.path().to_path_buf(),
        Default::default(),
    ));
    let knowledge = Knowledge::new(
        app.context.db.clone(),
        Writer::new(app.context.db.clone()),
        store.clone(),
        None,
        Arc::new(HashingEmbedder::new(1024)),
        local.clone(),
        Some(local),
        app.context.settings.knowledge.clone(),
    );
    store
        .put("policies/returns.md", Bytes::from(RETURNS_MD))
        .await
        .unwrap();
    store
        .put(
            "pdf/warranty-card.pdf",
            demo_file("demo/kb/pdf/warranty-card.pdf"),
        )
        .await
        .unwrap();
    let first = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!((first.added, first.failed.len()), (2, 0), "{first:?}");
    let unchanged = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!(
        (unchanged.added, unchanged.updated, unchanged.unchanged),
        (0, 0, 2)
    );

    store
        .put(
            "policies/returns.md",
            Bytes::from(RETURNS_MD.replace("14 days", "21 days")),
        )
        .await
        .unwrap();
    store.delete("pdf/warranty-card.pdf").await.unwrap();
    let changed = knowledge.sync(Scope::All, None).await.unwrap();
    assert_eq!((changed.updated, changed.deleted), (1, 1), "{changed:?}");
    let hits = knowledge
        .search("how many days to send it back", &VectorFilter::default(), 1)
        .await
        .unwrap();
    assert!(hits[0].text.contains("21 days"), "{:?}", hits[0].text);
}

/// A product that sells out is re-rendered in the knowledge base by the
/// background loop within moments, without a full sync.
#[tokio::test]
async fn a_product_change_reaches_the_knowledge_base_on_its_own() {
    let Some(app) = app(Backend::Sqlite, &[("knowledge.refresh_interval", "100ms")]).await else {
        return;
    };
    let knowledge = knowledge_of(&app).await;
    knowledge.sync(Scope::All, None).await.unwrap();
    let product = app
        .context
        .catalog
        .snapshot()
        .product_by_slug("cast-iron-kuali")
        .unwrap()
        .clone();
    for variant in &product.variants {
        app.context
            .catalog
            .set_stock(&variant.sku, 0)
            .await
            .unwrap();
    }
    let products = VectorFilter {
        product_id: Some(product.id),
        ..VectorFilter::default()
    };
    let mut text = String::new();
    for _ in 0..100 {
        let hits = knowledge
            .search("cast iron kuali availability", &products, 1)
            .await
            .unwrap();
        text = hits.first().map(|h| h.text.clone()).unwrap_or_default();
        if text.contains("sold out") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(text.contains("sold out"), "{text}");
}

/// The background loop writes the demo documents at start. A sync that
/// starts while they are being written waits for them instead of
/// ingesting part of the demo (the rest would wait for the next sync, and
/// the assistant would not know about delivery to Sabah meanwhile).
#[tokio::test]
async fn a_sync_while_the_demo_is_written_ingests_all_of_it() {
    let Some(app) = app(Backend::Sqlite, &[]).await else {
        return;
    };
    let knowledge = app.context.knowledge.clone();
    // The app's own loop may be seeding already; one more seeder makes
    // sure somebody is.
    let seeding = tokio::spawn({
        let knowledge = knowledge.clone();
        async move { knowledge.seed_demo_documents().await.unwrap() }
    });
    for _ in 0..2000 {
        if !knowledge.store().list().await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let first = knowledge.sync(Scope::All, None).await.unwrap();
    seeding.await.unwrap();
    assert_eq!(
        knowledge.store().list().await.unwrap().len(),
        kedai::knowledge::demo_document_keys().len()
    );
    let second = knowledge.sync(Scope::All, None).await.unwrap();
    assert!(first.added > 0, "{first:?}");
    assert_eq!(
        (second.added, second.updated, second.deleted),
        (0, 0, 0),
        "the first sync saw the whole demo: {first:?} then {second:?}"
    );
}
