//! Passage vectors in an OpenSearch Serverless (`aoss`) vector collection,
//! over plain HTTPS signed with SigV4 (service `aoss`, the body's SHA-256 in
//! `x-amz-content-sha256`, which aoss requires).
//!
//! One index per vector space: `{prefix}-{space}`, lower-cased and reduced
//! to `[a-z0-9-]`, so a new embedder writes to a new index and vectors of
//! two spaces never meet. `prepare` creates the index (HNSW on the faiss
//! engine, inner product, which is cosine for our unit vectors) when it is
//! missing.
//!
//! Two things aoss vector collections do not do shape this file:
//! - **No custom document ids**: a bulk `index` with `_id` is refused
//!   ("Document ID is not supported in create/index operation request"), so
//!   documents get server ids and our passage id is a keyword field,
//!   `passage_id`. Replacing a passage therefore means finding its old
//!   documents first: `upsert` looks the ids up and sends, in one bulk
//!   request, deletes of the old documents and the new ones.
//! - **No `_delete_by_query`**: `delete_documents` pages through the
//!   matching documents (`search_after` on `passage_id`) and bulk-deletes
//!   them by their server ids.
//!
//! Writes to a vector collection become searchable after a short delay, so
//! a passage re-upserted within that delay may be found twice; `search`
//! keeps only the best hit per passage id.
//!
//! Scores: with `innerproduct`, faiss scores a hit `1 + ip` when the inner
//! product `ip` is positive and `1 / (1 - ip)` otherwise; `search` converts
//! back, so `VectorHit::score` is the dot product (the cosine for unit
//! vectors), as in the embedded index.
//!
//! Nothing here retries: a 429 becomes `VectorError::Throttled` and the
//! caller (the ingest job) decides when to come back.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::{Mutex, RwLock};

use super::{PassageMeta, VectorError, VectorFilter, VectorHit, VectorRecord, VectorStore};

/// The SigV4 service name of OpenSearch Serverless.
const SERVICE: &str = "aoss";
/// Records per bulk request.
const BULK_CHUNK: usize = 500;
/// Hits per page when listing a document's passages for deletion.
const LIST_PAGE: usize = 1000;
/// OpenSearch's default `index.max_result_window`, and the largest `k`.
const MAX_WINDOW: usize = 10_000;
/// How much of an error answer is quoted in an error message.
const EXCERPT_CHARS: usize = 300;
/// Credentials closer than this to their expiry are fetched again.
const CREDENTIALS_MARGIN: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
pub struct OpenSearchConfig {
    /// The collection endpoint, e.g. `https://<id>.<region>.aoss.amazonaws.com`.
    pub endpoint: String,
    /// Index name prefix; the vector space is appended.
    pub index: String,
    pub region: String,
    /// Access key id and secret. `None` uses the default AWS chain.
    pub static_credentials: Option<(String, String)>,
    /// Longest one HTTP request may take.
    pub timeout: Duration,
}

/// The vector store on OpenSearch Serverless. Call [`VectorStore::prepare`]
/// before anything else: it picks (and if needed creates) the index.
pub struct OpenSearchVectors {
    http: reqwest::Client,
    endpoint: String,
    prefix: String,
    region: String,
    credentials: CredentialSource,
    /// The index `prepare` chose and its vector length.
    index: RwLock<Option<(String, usize)>>,
}

impl std::fmt::Debug for OpenSearchVectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSearchVectors")
            .field("endpoint", &self.endpoint)
            .field("prefix", &self.prefix)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl OpenSearchVectors {
    /// Builds the client. With `static_credentials` nothing outside the
    /// config is read; without them the default AWS chain is set up here
    /// and asked for credentials on the first request.
    pub async fn new(config: OpenSearchConfig) -> anyhow::Result<Self> {
        let endpoint = config.endpoint.trim().trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&endpoint)
            .with_context(|| format!("vectors.endpoint `{endpoint}` is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            bail!("vectors.endpoint `{endpoint}` must be an http(s) URL with a host");
        }
        if sanitise(&config.index).is_empty() {
            bail!("vectors.index must contain letters or digits");
        }
        if config.region.trim().is_empty() {
            bail!("aws.region is empty");
        }
        let provider = match &config.static_credentials {
            Some((access_key, secret)) => SharedCredentialsProvider::new(Credentials::new(
                access_key,
                secret,
                None,
                None,
                "kedai-static",
            )),
            None => aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new(config.region.clone()))
                .load()
                .await
                .credentials_provider()
                .context("the default AWS configuration has no credentials provider")?,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(5).min(config.timeout))
            .build()
            .context("could not build the OpenSearch HTTP client")?;
        Ok(OpenSearchVectors {
            http,
            endpoint,
            prefix: config.index,
            region: config.region,
            credentials: CredentialSource {
                provider,
                cached: Mutex::new(None),
            },
            index: RwLock::new(None),
        })
    }

    /// The store `[vectors]` and `[aws]` describe, with credentials from
    /// the default AWS chain and a 30-second request timeout.
    pub async fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        OpenSearchVectors::new(OpenSearchConfig {
            endpoint: settings.vectors.endpoint.clone(),
            index: settings.vectors.index.clone(),
            region: settings.aws.region.clone(),
            static_credentials: None,
            timeout: Duration::from_secs(30),
        })
        .await
    }

    /// The index name for a vector space (see [`index_name`]).
    pub fn index_for(&self, space: &str) -> String {
        index_name(&self.prefix, space)
    }

    /// The prepared index and its dimension.
    async fn prepared(&self) -> Result<(String, usize), VectorError> {
        self.index.read().await.clone().ok_or_else(|| {
            VectorError::Failed("the OpenSearch store was used before prepare()".into())
        })
    }

    /// Sends one signed request and returns its status and body. Only
    /// transport failures and 429 are errors here; callers judge the rest.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<(StatusCode, Vec<u8>), VectorError> {
        let url = format!("{}{path}", self.endpoint);
        let credentials = self.credentials.current().await?;
        let (content_type, payload) = match &body {
            Some((content_type, payload)) => (Some(*content_type), payload.as_slice()),
            None => (None, &[][..]),
        };
        let headers = sign_request(
            method.as_str(),
            &url,
            content_type,
            payload,
            &credentials,
            &self.region,
            SystemTime::now(),
        )
        .map_err(|e| VectorError::Failed(format!("could not sign the OpenSearch request: {e}")))?;
        let mut request = self.http.request(method.clone(), &url);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if let Some((_, payload)) = body {
            request = request.body(payload);
        }
        let response = request.send().await.map_err(|e| {
            VectorError::Failed(format!(
                "OpenSearch {method} {path}: {}",
                if e.is_timeout() {
                    "timed out".to_string()
                } else {
                    e.without_url().to_string()
                }
            ))
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| VectorError::Failed(format!("OpenSearch {method} {path}: {e}")))?;
        if status == StatusCode::TOO_MANY_REQUESTS {
            tracing::warn!(%method, path, "OpenSearch is throttling us");
            return Err(VectorError::Throttled);
        }
        Ok((status, bytes.to_vec()))
    }

    /// Sends a JSON request; anything but 2xx is an error naming the status.
    async fn send_json(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, VectorError> {
        let payload = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let (status, bytes) = self.send(method.clone(), path, payload).await?;
        if !status.is_success() {
            return Err(status_error(&method, path, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| {
            VectorError::Failed(format!(
                "OpenSearch {method} {path}: unreadable answer: {e}"
            ))
        })
    }

    /// Sends one `_bulk` request and reports its failed items.
    async fn bulk(&self, ndjson: String) -> Result<(), VectorError> {
        let (status, bytes) = self
            .send(
                Method::POST,
                "/_bulk",
                Some(("application/x-ndjson", ndjson.into_bytes())),
            )
            .await?;
        if !status.is_success() {
            return Err(status_error(&Method::POST, "/_bulk", status, &bytes));
        }
        let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
            VectorError::Failed(format!("OpenSearch POST /_bulk: unreadable answer: {e}"))
        })?;
        bulk_outcome(&answer)
    }

    /// Server ids of the documents matching `query`, every page of them.
    async fn ids_matching(&self, index: &str, query: Value) -> Result<Vec<String>, VectorError> {
        let path = format!("/{index}/_search");
        let mut ids = Vec::new();
        let mut after: Option<Value> = None;
        loop {
            let mut body = json!({
                "size": LIST_PAGE,
                "_source": false,
                "query": query,
                "sort": [{ "passage_id": "asc" }],
            });
            if let Some(after) = &after {
                body["search_after"] = after.clone();
            }
            let answer = self.send_json(Method::POST, &path, Some(&body)).await?;
            let hits = answer["hits"]["hits"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for hit in &hits {
                if let Some(id) = hit["_id"].as_str() {
                    ids.push(id.to_string());
                }
            }
            match hits.last() {
                Some(last) if hits.len() == LIST_PAGE => after = Some(last["sort"].clone()),
                _ => return Ok(ids),
            }
        }
    }
}

#[async_trait::async_trait]
impl VectorStore for OpenSearchVectors {
    fn backend(&self) -> &'static str {
        "opensearch"
    }

    async fn prepare(&self, space: &str, dimensions: usize) -> Result<(), VectorError> {
        let index = self.index_for(space);
        let path = format!("/{index}");
        let (status, bytes) = self.send(Method::HEAD, &path, None).await?;
        match status {
            StatusCode::OK => {}
            StatusCode::NOT_FOUND => {
                let body = index_definition(dimensions).to_string().into_bytes();
                let (status, bytes) = self
                    .send(Method::PUT, &path, Some(("application/json", body)))
                    .await?;
                let raced = status == StatusCode::BAD_REQUEST
                    && String::from_utf8_lossy(&bytes)
                        .contains("resource_already_exists_exception");
                if !status.is_success() && !raced {
                    return Err(status_error(&Method::PUT, &path, status, &bytes));
                }
                tracing::info!(index, dimensions, "created the OpenSearch vector index");
            }
            other => return Err(status_error(&Method::HEAD, &path, other, &bytes)),
        }
        *self.index.write().await = Some((index, dimensions));
        Ok(())
    }

    async fn upsert(&self, records: Vec<VectorRecord>) -> Result<(), VectorError> {
        let (index, dimensions) = self.prepared().await?;
        if let Some(bad) = records.iter().find(|r| r.vector.len() != dimensions) {
            return Err(VectorError::Failed(format!(
                "passage {} has {} dimensions, the index takes {dimensions}",
                bad.id,
                bad.vector.len()
            )));
        }
        for chunk in records.chunks(BULK_CHUNK) {
            // The documents these passages replace (aoss assigns ids itself).
            let ids: Vec<&str> = chunk.iter().map(|r| r.id.as_str()).collect();
            let old = self
                .ids_matching(&index, json!({ "terms": { "passage_id": ids } }))
                .await?;
            self.bulk(bulk_body(&index, &old, chunk)).await?;
        }
        Ok(())
    }

    async fn delete_documents(&self, documents: &[String]) -> Result<(), VectorError> {
        if documents.is_empty() {
            return Ok(());
        }
        let (index, _) = self.prepared().await?;
        let ids = self
            .ids_matching(&index, json!({ "terms": { "document": documents } }))
            .await?;
        for chunk in ids.chunks(BULK_CHUNK) {
            self.bulk(bulk_body(&index, chunk, &[])).await?;
        }
        Ok(())
    }

    async fn search(
        &self,
        vector: &[f32],
        filter: &VectorFilter,
        k: usize,
    ) -> Result<Vec<VectorHit>, VectorError> {
        let (index, dimensions) = self.prepared().await?;
        if k == 0 {
            return Ok(Vec::new());
        }
        if vector.len() != dimensions {
            return Err(VectorError::Failed(format!(
                "query vector has {} dimensions, the index takes {dimensions}",
                vector.len()
            )));
        }
        let body = search_body(vector, filter, k.min(MAX_WINDOW));
        let answer = self
            .send_json(Method::POST, &format!("/{index}/_search"), Some(&body))
            .await?;
        parse_hits(&answer)
    }

    async fn count(&self) -> Result<usize, VectorError> {
        let (index, _) = self.prepared().await?;
        let answer = self
            .send_json(Method::GET, &format!("/{index}/_count"), None)
            .await?;
        answer["count"]
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| VectorError::Failed("OpenSearch _count answered no count".into()))
    }
}

/// Credentials for signing, fetched from the provider when the cached ones
/// are missing or about to expire.
struct CredentialSource {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<Credentials>>,
}

impl CredentialSource {
    async fn current(&self) -> Result<Credentials, VectorError> {
        let mut cached = self.cached.lock().await;
        if let Some(credentials) = cached.as_ref() {
            let fresh = credentials
                .expiry()
                .is_none_or(|expiry| expiry > SystemTime::now() + CREDENTIALS_MARGIN);
            if fresh {
                return Ok(credentials.clone());
            }
        }
        let credentials =
            self.provider.provide_credentials().await.map_err(|e| {
                VectorError::Failed(format!("no AWS credentials for OpenSearch: {e}"))
            })?;
        *cached = Some(credentials.clone());
        Ok(credentials)
    }
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-content-sha256`
/// and, with temporary credentials, `x-amz-security-token`) for a request.
/// `url` must already be percent-encoded; `host` is taken from it.
pub(crate) fn sign_request(
    method: &str,
    url: &str,
    content_type: Option<&str>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    time: SystemTime,
) -> Result<Vec<(String, String)>, Box<dyn std::error::Error + Send + Sync>> {
    let identity: Identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    let params = SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(SERVICE)
        .time(time)
        .settings(settings)
        .build()?
        .into();
    let headers: Vec<(&str, &str)> = content_type
        .map(|value| ("content-type", value))
        .into_iter()
        .collect();
    let request =
        SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(body))?;
    let (instructions, _signature) = sign(request, &params)?.into_parts();
    Ok(instructions
        .headers()
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect())
}

/// `{prefix}-{space}` lower-cased, every run of characters outside
/// `[a-z0-9]` turned into one `-`, no `-` at either end, at most 200 bytes
/// (OpenSearch allows 255).
pub fn index_name(prefix: &str, space: &str) -> String {
    let mut name = sanitise(&format!("{prefix}-{space}"));
    name.truncate(200);
    name.trim_end_matches('-').to_string()
}

fn sanitise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// Settings and mappings of a new index: HNSW on faiss with inner product
/// (cosine for unit vectors) and keyword metadata for filtering.
pub fn index_definition(dimensions: usize) -> Value {
    json!({
        "settings": { "index": { "knn": true } },
        "mappings": {
            "properties": {
                "vector": {
                    "type": "knn_vector",
                    "dimension": dimensions,
                    "method": {
                        "name": "hnsw",
                        "engine": "faiss",
                        "space_type": "innerproduct"
                    }
                },
                "passage_id": { "type": "keyword" },
                "document": { "type": "keyword" },
                "kind": { "type": "keyword" },
                "product_id": { "type": "long" },
                "language": { "type": "keyword" },
                "tags": { "type": "keyword" }
            }
        }
    })
}

/// The `bool` filter for a `VectorFilter`, or `None` when it allows all.
pub fn filter_clause(filter: &VectorFilter) -> Option<Value> {
    let mut terms = Vec::new();
    if let Some(kind) = &filter.kind {
        terms.push(json!({ "term": { "kind": kind } }));
    }
    if let Some(product_id) = filter.product_id {
        terms.push(json!({ "term": { "product_id": product_id } }));
    }
    if let Some(language) = &filter.language {
        terms.push(json!({ "term": { "language": language } }));
    }
    if let Some(tag) = &filter.tag {
        terms.push(json!({ "term": { "tags": tag } }));
    }
    (!terms.is_empty()).then(|| json!({ "bool": { "filter": terms } }))
}

/// A k-NN query with the filter inside it (faiss filters while it searches,
/// so `k` matching hits come back even when better non-matching ones exist).
pub fn search_body(vector: &[f32], filter: &VectorFilter, k: usize) -> Value {
    let mut knn = json!({ "vector": vector, "k": k });
    if let Some(clause) = filter_clause(filter) {
        knn["filter"] = clause;
    }
    json!({
        "size": k,
        "_source": { "excludes": ["vector"] },
        "query": { "knn": { "vector": knn } }
    })
}

/// The dot product behind a faiss `innerproduct` score: the score is
/// `1 + ip` for `ip >= 0` and `1 / (1 - ip)` below.
pub fn dot_product_from_score(score: f32) -> f32 {
    if score >= 1.0 {
        score - 1.0
    } else {
        1.0 - 1.0 / score.max(f32::MIN_POSITIVE)
    }
}

/// NDJSON for one `_bulk` request: deletes of `delete_ids` (server ids),
/// then one `index` action per record, without `_id` (aoss assigns it).
fn bulk_body(index: &str, delete_ids: &[String], records: &[VectorRecord]) -> String {
    let mut out = String::new();
    for id in delete_ids {
        out.push_str(&json!({ "delete": { "_index": index, "_id": id } }).to_string());
        out.push('\n');
    }
    for record in records {
        out.push_str(&json!({ "index": { "_index": index } }).to_string());
        out.push('\n');
        let meta = &record.meta;
        let document = json!({
            "passage_id": record.id,
            "vector": record.vector,
            "document": meta.document,
            "kind": meta.kind,
            "product_id": meta.product_id,
            "language": meta.language,
            "tags": meta.tags,
        });
        out.push_str(&document.to_string());
        out.push('\n');
    }
    out
}

/// Ok when every item of a `_bulk` answer succeeded (a delete of a document
/// already gone counts as success); otherwise the failures, summarised.
/// `Throttled` when every failure is a 429.
fn bulk_outcome(answer: &Value) -> Result<(), VectorError> {
    if answer["errors"].as_bool() == Some(false) {
        return Ok(());
    }
    let items = answer["items"].as_array().cloned().unwrap_or_default();
    let mut failures = Vec::new();
    let mut throttled = 0;
    for item in &items {
        let Some((action, result)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let status = result["status"].as_u64().unwrap_or(0);
        let gone = action == "delete" && status == 404;
        if (200..300).contains(&status) || gone {
            continue;
        }
        if status == 429 {
            throttled += 1;
        }
        let error = &result["error"];
        failures.push(format!(
            "{action} {status} {}: {}",
            error["type"].as_str().unwrap_or("error"),
            excerpt(error["reason"].as_str().unwrap_or(""))
        ));
    }
    if failures.is_empty() {
        if items.is_empty() {
            return Err(VectorError::Failed(
                "OpenSearch _bulk reported errors but listed no items".into(),
            ));
        }
        return Ok(());
    }
    if throttled == failures.len() {
        return Err(VectorError::Throttled);
    }
    let total = failures.len();
    failures.truncate(3);
    Err(VectorError::Failed(format!(
        "{total} of {} OpenSearch bulk items failed, e.g. {}",
        items.len(),
        failures.join("; ")
    )))
}

#[derive(serde::Deserialize)]
struct HitSource {
    passage_id: String,
    #[serde(default)]
    document: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    product_id: Option<i64>,
    #[serde(default)]
    language: String,
    #[serde(default)]
    tags: Vec<String>,
}

/// The hits of a `_search` answer, best first, one per passage id.
fn parse_hits(answer: &Value) -> Result<Vec<VectorHit>, VectorError> {
    let hits = answer["hits"]["hits"]
        .as_array()
        .ok_or_else(|| VectorError::Failed("OpenSearch _search answered no hits".into()))?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(hits.len());
    for hit in hits {
        let source: HitSource = serde_json::from_value(hit["_source"].clone())
            .map_err(|e| VectorError::Failed(format!("OpenSearch hit without our fields: {e}")))?;
        if !seen.insert(source.passage_id.clone()) {
            continue;
        }
        let score = hit["_score"].as_f64().unwrap_or(0.0) as f32;
        out.push(VectorHit {
            id: source.passage_id,
            score: dot_product_from_score(score),
            meta: PassageMeta {
                document: source.document,
                kind: source.kind,
                product_id: source.product_id,
                language: source.language,
                tags: source.tags,
            },
        });
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

fn status_error(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> VectorError {
    VectorError::Failed(format!(
        "OpenSearch {method} {path} answered {status}: {}",
        excerpt(&String::from_utf8_lossy(body))
    ))
}

/// The start of a text, for error messages.
fn excerpt(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_are_lowercase_letters_digits_and_dashes() {
        assert_eq!(
            index_name("kedai-knowledge", "bedrock:amazon.titan-embed-text-v1:1536"),
            "kedai-knowledge-bedrock-amazon-titan-embed-text-v1-1536"
        );
        assert_eq!(
            index_name("Kedai_KB", "local-hash-v1-512"),
            "kedai-kb-local-hash-v1-512"
        );
        assert_eq!(index_name("kb", "--Weird  Space!!"), "kb-weird-space");
        assert!(index_name("kb", &"x".repeat(400)).len() <= 200);
        assert_ne!(
            index_name("kb", "bedrock:amazon.titan-embed-text-v2:0:1024"),
            index_name("kb", "bedrock:amazon.titan-embed-text-v2:0:512")
        );
    }

    #[test]
    fn scores_convert_back_to_dot_products() {
        for ip in [0.9_f32, 0.5, 0.0, -0.3, -0.9] {
            let score = if ip >= 0.0 {
                1.0 + ip
            } else {
                1.0 / (1.0 - ip)
            };
            assert!((dot_product_from_score(score) - ip).abs() < 1e-6, "{ip}");
        }
    }

    #[test]
    fn filters_become_term_clauses_inside_the_knn_query() {
        assert_eq!(filter_clause(&VectorFilter::default()), None);
        let filter = VectorFilter {
            kind: Some("faq".into()),
            product_id: Some(42),
            language: Some("ms".into()),
            tag: Some("shipping".into()),
        };
        assert_eq!(
            filter_clause(&filter),
            Some(json!({ "bool": { "filter": [
                { "term": { "kind": "faq" } },
                { "term": { "product_id": 42 } },
                { "term": { "language": "ms" } },
                { "term": { "tags": "shipping" } },
            ] } }))
        );
        let body = search_body(&[0.6, 0.8], &filter, 5);
        assert_eq!(body["size"], 5);
        assert_eq!(body["query"]["knn"]["vector"]["k"], 5);
        assert_eq!(
            body["query"]["knn"]["vector"]["vector"],
            json!([0.6_f32, 0.8_f32])
        );
        assert_eq!(
            body["query"]["knn"]["vector"]["filter"]["bool"]["filter"][0]["term"]["kind"],
            "faq"
        );
        let unfiltered = search_body(&[1.0], &VectorFilter::default(), 3);
        assert!(unfiltered["query"]["knn"]["vector"].get("filter").is_none());
    }

    #[test]
    fn bulk_items_that_failed_are_reported() {
        assert!(bulk_outcome(&json!({ "errors": false, "items": [] })).is_ok());
        let gone = json!({ "errors": true, "items": [
            { "delete": { "status": 404, "result": "not_found" } },
            { "index": { "status": 201 } },
        ] });
        assert!(bulk_outcome(&gone).is_ok());
        let failed = json!({ "errors": true, "items": [
            { "index": { "status": 201 } },
            { "index": { "status": 400, "error": { "type": "mapper_parsing_exception", "reason": "bad vector" } } },
        ] });
        match bulk_outcome(&failed) {
            Err(VectorError::Failed(message)) => {
                assert!(message.contains("1 of 2"), "{message}");
                assert!(message.contains("mapper_parsing_exception"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let throttled = json!({ "errors": true, "items": [
            { "index": { "status": 429, "error": { "type": "too_many_requests", "reason": "slow down" } } },
        ] });
        assert!(matches!(
            bulk_outcome(&throttled),
            Err(VectorError::Throttled)
        ));
    }

    #[test]
    fn signatures_cover_the_body_hash_for_aoss() {
        let credentials = Credentials::new("AKID", "secret", None, None, "test");
        let headers = sign_request(
            "POST",
            "https://abc.us-east-1.aoss.amazonaws.com/_bulk",
            Some("application/x-ndjson"),
            b"{}\n",
            &credentials,
            "us-east-1",
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        )
        .expect("signs");
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name} header"))
        };
        let authorization = get("authorization");
        assert!(
            authorization.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKID/20231114/us-east-1/aoss/aws4_request"
            ),
            "{authorization}"
        );
        assert!(
            authorization.contains("x-amz-content-sha256"),
            "{authorization}"
        );
        use sha2::Digest;
        assert_eq!(
            get("x-amz-content-sha256"),
            hex::encode(sha2::Sha256::digest(b"{}\n"))
        );
        assert_eq!(get("x-amz-date"), "20231114T221320Z");
    }
}
