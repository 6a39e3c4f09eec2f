//! The document store's contract, run on every backend that runs here: a
//! local folder, and S3 through the `moto` emulator when
//! `KEDAI_TEST_S3_URL` is set (`.ci/run` starts it).

use bytes::Bytes;
use kedai::platform::objects::{DocumentStore, ObjectsError, S3Location};

use crate::helpers::service_url;

/// A bucket of its own on the emulator, and a store on it under `prefix`.
pub async fn s3_store(bucket: &str, prefix: &str) -> Option<DocumentStore> {
    let endpoint = service_url("KEDAI_TEST_S3_URL")?;
    // The emulator takes unsigned bucket creation; object_store cannot create buckets.
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await
        .expect("KEDAI_TEST_S3_URL must reach the S3 emulator");
    assert!(created.status().is_success(), "{created:?}");
    Some(
        DocumentStore::s3(&S3Location {
            bucket: bucket.into(),
            prefix: prefix.into(),
            region: "us-east-1".into(),
            endpoint,
            static_credentials: Some(("test".into(), "test".into())),
        })
        .unwrap(),
    )
}

pub fn bucket_name() -> String {
    format!("kedai-test-{}", uuid::Uuid::now_v7().simple())
}

async fn contract(store: DocumentStore) {
    assert!(store.list().await.unwrap().is_empty());

    let first = store
        .put(
            "policies/returns.md",
            Bytes::from_static(b"# Returns\n\n30 days."),
        )
        .await
        .unwrap();
    assert_eq!(first.key, "policies/returns.md");
    assert_eq!(first.size, 19);
    assert!(!first.version.is_empty());
    store
        .put("faq.html", Bytes::from_static(b"<h1>FAQ</h1>"))
        .await
        .unwrap();

    let listed = store.list().await.unwrap();
    let keys: Vec<&str> = listed.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, ["faq.html", "policies/returns.md"]);
    assert_eq!(listed[1].version, first.version, "listing and put agree");
    let head = store.head("policies/returns.md").await.unwrap().unwrap();
    assert_eq!(head, listed[1], "a HEAD and the listing agree");
    assert!(store.head("missing.md").await.unwrap().is_none());

    assert_eq!(
        store.get("policies/returns.md").await.unwrap().unwrap(),
        Bytes::from_static(b"# Returns\n\n30 days.")
    );
    assert!(store.get("missing.md").await.unwrap().is_none());

    // A change of content is a change of version: that is what ingestion
    // compares.
    let changed = store
        .put(
            "policies/returns.md",
            Bytes::from_static(b"# Returns\n\n14 days, unworn."),
        )
        .await
        .unwrap();
    assert_ne!(changed.version, first.version);
    let listed = store.list().await.unwrap();
    assert_eq!(listed[1].version, changed.version);

    store.delete("faq.html").await.unwrap();
    store.delete("faq.html").await.unwrap();
    let keys: Vec<String> = store
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["policies/returns.md"]);

    for bad in ["", "/etc/passwd", "../secrets", "a//b", "a/./b", "dir/"] {
        assert!(
            matches!(
                store.put(bad, Bytes::new()).await,
                Err(ObjectsError::BadKey(_))
            ),
            "{bad:?} must be refused"
        );
    }
}

#[tokio::test]
async fn a_local_folder_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("kb");
    contract(DocumentStore::local(&root).unwrap()).await;
    // The files are plain files in the folder, for editors and backups.
    let text = std::fs::read_to_string(root.join("policies/returns.md")).unwrap();
    assert!(text.contains("14 days"));
}

#[tokio::test]
async fn s3_keeps_the_contract() {
    let Some(store) = s3_store(&bucket_name(), "kb").await else {
        return;
    };
    assert_eq!(store.backend(), "s3");
    contract(store).await;
}

#[tokio::test]
async fn s3_prefixes_keep_shops_apart() {
    let bucket = bucket_name();
    let Some(ours) = s3_store(&bucket, "shop-a/kb").await else {
        return;
    };
    let theirs = s3_store(&bucket, "shop-b/kb").await.unwrap();
    ours.put("a.md", Bytes::from_static(b"a")).await.unwrap();
    theirs.put("b.md", Bytes::from_static(b"b")).await.unwrap();
    let keys: Vec<String> = ours
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(keys, ["a.md"]);
    assert!(ours.get("b.md").await.unwrap().is_none());
}
