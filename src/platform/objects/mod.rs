//! The document store behind the knowledge base: a local folder (the
//! embedded default, `objects.path`) or an Amazon S3 bucket and prefix,
//! through one API — the `object_store` crate's `ObjectStore` trait, which
//! has both backends. Every object carries a *version* that changes when
//! its content does (its ETag; on a local folder an ETag made of inode,
//! size and modification time; the S3 version id only where no ETag is
//! given), so ingestion re-processes only what changed. The ETag comes
//! first because a listing and a HEAD both carry it, where a versioned
//! bucket's version id is missing from listings: the two must agree.

use std::path::Path as FsPath;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};
use time::OffsetDateTime;

use crate::config::{ObjectsKind, Settings};

/// One stored document.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ObjectInfo {
    /// The key below the store's prefix, e.g. `policies/returns.md`.
    pub key: String,
    /// Changes whenever the content changes.
    pub version: String,
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub modified: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("{0:?} is not a valid document key")]
    BadKey(String),
    #[error("the document store failed: {0}")]
    Store(#[from] object_store::Error),
}

/// Where an S3 store lives; credentials come from the environment (the AWS
/// variables, or the task role through `AWS_CONTAINER_CREDENTIALS_*`) unless
/// given here.
#[derive(Debug, Clone, Default)]
pub struct S3Location {
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    /// An emulator or a private endpoint; empty for AWS itself.
    pub endpoint: String,
    /// (access key id, secret access key), for emulators in tests.
    pub static_credentials: Option<(String, String)>,
}

#[derive(Clone)]
pub struct DocumentStore {
    store: Arc<dyn ObjectStore>,
    prefix: Option<Path>,
    backend: &'static str,
}

impl DocumentStore {
    /// The store `objects.kind` names.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        match settings.objects.kind {
            ObjectsKind::Local => Self::local(&crate::config::resolve(&settings.objects.path)),
            ObjectsKind::S3 => Self::s3(&S3Location {
                bucket: settings.objects.bucket.clone(),
                prefix: settings.objects.prefix.clone(),
                region: settings.aws.region.clone(),
                endpoint: settings.aws.endpoint_url.clone(),
                static_credentials: None,
            }),
        }
    }

    /// A folder on this machine (created when missing).
    pub fn local(root: &FsPath) -> anyhow::Result<Self> {
        std::fs::create_dir_all(root)
            .with_context(|| format!("could not create the folder {}", root.display()))?;
        let store = LocalFileSystem::new_with_prefix(root)
            .with_context(|| format!("could not open the folder {}", root.display()))?;
        Ok(DocumentStore {
            store: Arc::new(store),
            prefix: None,
            backend: "local",
        })
    }

    /// A bucket (and key prefix) on S3 or an S3-compatible endpoint.
    pub fn s3(location: &S3Location) -> anyhow::Result<Self> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&location.bucket)
            .with_region(&location.region);
        if !location.endpoint.is_empty() {
            builder = builder
                .with_endpoint(&location.endpoint)
                .with_allow_http(location.endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some((key, secret)) = &location.static_credentials {
            builder = builder
                .with_access_key_id(key)
                .with_secret_access_key(secret);
        }
        let store = builder
            .build()
            .context("could not set up the S3 document store (objects.*, aws.*)")?;
        let prefix = location.prefix.trim_matches('/');
        Ok(DocumentStore {
            store: Arc::new(store),
            prefix: (!prefix.is_empty())
                .then(|| Path::parse(prefix))
                .transpose()
                .context("objects.prefix is not a valid key prefix")?,
            backend: "s3",
        })
    }

    /// `local` or `s3`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    fn path(&self, key: &str) -> Result<Path, ObjectsError> {
        let bad = || ObjectsError::BadKey(key.to_string());
        if key.is_empty()
            || key.starts_with('/')
            || key.ends_with('/')
            || key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(bad());
        }
        let relative = Path::parse(key).map_err(|_| bad())?;
        Ok(match &self.prefix {
            Some(prefix) => prefix.parts().chain(relative.parts()).collect(),
            None => relative,
        })
    }

    fn info(&self, meta: ObjectMeta) -> ObjectInfo {
        let full = meta.location.as_ref();
        let key = match &self.prefix {
            Some(prefix) => full
                .strip_prefix(prefix.as_ref())
                .map(|rest| rest.trim_start_matches('/'))
                .unwrap_or(full),
            None => full,
        }
        .to_string();
        let modified = OffsetDateTime::from_unix_timestamp_nanos(
            meta.last_modified
                .timestamp_nanos_opt()
                .map(i128::from)
                .unwrap_or_default(),
        )
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let version = meta
            .e_tag
            .or(meta.version)
            .unwrap_or_else(|| format!("{}-{}", meta.size, modified.unix_timestamp_nanos()));
        ObjectInfo {
            key,
            version: version.trim_matches('"').to_string(),
            size: meta.size,
            modified,
        }
    }

    /// Every document, by key.
    pub async fn list(&self) -> Result<Vec<ObjectInfo>, ObjectsError> {
        let metas: Vec<ObjectMeta> = self.store.list(self.prefix.as_ref()).try_collect().await?;
        let mut infos: Vec<ObjectInfo> = metas.into_iter().map(|m| self.info(m)).collect();
        infos.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(infos)
    }

    /// A cheap reachability check for health lights: the first entry of a
    /// listing (one request on S3; an empty store is fine).
    pub async fn probe(&self) -> Result<(), ObjectsError> {
        let mut listing = self.store.list(self.prefix.as_ref());
        listing.try_next().await?;
        Ok(())
    }

    /// A document's metadata, or `None` when there is no such key.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, ObjectsError> {
        match self.store.head(&self.path(key)?).await {
            Ok(meta) => Ok(Some(self.info(meta))),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// A document's bytes, or `None` when there is no such key.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>, ObjectsError> {
        match self.store.get(&self.path(key)?).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Stores (or replaces) a document.
    pub async fn put(&self, key: &str, content: Bytes) -> Result<ObjectInfo, ObjectsError> {
        let path = self.path(key)?;
        self.store.put(&path, PutPayload::from(content)).await?;
        let meta = self.store.head(&path).await?;
        Ok(self.info(meta))
    }

    /// Removes a document; removing a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectsError> {
        match self.store.delete(&self.path(key)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(error.into()),
        }
    }
}
