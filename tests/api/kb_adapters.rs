//! The knowledge base's AWS adapters against wiremock fakes that check what
//! goes on the wire and answer in the services' own formats: Bedrock Titan
//! embeddings (`InvokeModel`, SigV4 service `bedrock`, throttling and
//! validation errors) and OpenSearch Serverless (SigV4 service `aoss` with
//! the body hash, index creation, bulk NDJSON, filtered k-NN search).
//! No database, no network beyond loopback.

use std::time::{Duration, Instant};

use kedai::platform::embed::{BedrockEmbedder, BedrockEmbedderConfig, EmbedError, Embedder};
use kedai::platform::vectors::{
    OpenSearchConfig, OpenSearchVectors, PassageMeta, VectorError, VectorFilter, VectorRecord,
    VectorStore,
};
use serde_json::{Value, json};
use sha2::Digest;
use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const REGION: &str = "ap-southeast-1";

// ---------------------------------------------------------------- Titan

/// Answers like Titan: the vector of `text-<n>` is `[n, 1, 0, …]` (not
/// normalised, as v1 answers), so order and scaling can be checked.
struct TitanFake {
    dimensions: usize,
}

impl Respond for TitanFake {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        let text = body["inputText"].as_str().expect("inputText");
        let n: f32 = text
            .strip_prefix("text-")
            .and_then(|n| n.parse().ok())
            .unwrap_or(1.0);
        let mut embedding = vec![0.0_f32; self.dimensions];
        embedding[0] = n;
        embedding[1] = 1.0;
        let answer = json!({ "embedding": embedding, "inputTextTokenCount": 3 });
        ResponseTemplate::new(200)
            .set_body_raw(answer.to_string(), "application/json")
            .set_delay(Duration::from_millis(60))
    }
}

fn titan_config(server: &MockServer, model_id: &str, dimensions: usize) -> BedrockEmbedderConfig {
    BedrockEmbedderConfig {
        model_id: model_id.into(),
        dimensions,
        region: REGION.into(),
        endpoint_url: Some(server.uri()),
        concurrency: 4,
        max_attempts: 3,
        initial_backoff: Duration::from_millis(5),
        static_credentials: Some(("test".into(), "test-secret".into())),
        attempt_timeout: Duration::from_secs(5),
    }
}

async fn titan(server: &MockServer, model_id: &str, dimensions: usize) -> BedrockEmbedder {
    BedrockEmbedder::new(titan_config(server, model_id, dimensions))
        .await
        .expect("embedder builds")
}

/// A Bedrock error in the restJson1 format the SDK reads.
fn bedrock_error(status: u16, error_type: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-amzn-errortype", error_type)
        .set_body_raw(
            json!({ "message": message }).to_string(),
            "application/json",
        )
}

fn titan_success(dimensions: usize) -> ResponseTemplate {
    let answer = json!({ "embedding": vec![0.5_f32; dimensions], "inputTextTokenCount": 2 });
    ResponseTemplate::new(200).set_body_raw(answer.to_string(), "application/json")
}

fn assert_signed_for(request: &Request, service: &str) {
    let authorization = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("an Authorization header");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=test/"),
        "{authorization}"
    );
    assert!(
        authorization.contains(&format!("/{REGION}/{service}/aws4_request")),
        "{authorization}"
    );
    assert!(authorization.contains("SignedHeaders="), "{authorization}");
    assert!(authorization.contains("Signature="), "{authorization}");
    assert!(request.headers.get("x-amz-date").is_some(), "no x-amz-date");
}

fn is_unit(vector: &[f32]) -> bool {
    let norm: f32 = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm - 1.0).abs() < 1e-5
}

#[tokio::test]
async fn titan_v1_calls_are_signed_limited_and_answered_in_order_at_unit_length() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/amazon\.titan-embed-text-v1/invoke$"))
        .respond_with(TitanFake { dimensions: 1536 })
        .expect(20)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    assert_eq!(embedder.name(), "bedrock:amazon.titan-embed-text-v1:1536");
    assert_eq!(embedder.dimensions(), 1536);

    let texts: Vec<String> = (1..=20).map(|n| format!("text-{n}")).collect();
    let started = Instant::now();
    let vectors = embedder.embed(&texts).await.expect("embeds");
    let elapsed = started.elapsed();

    assert_eq!(vectors.len(), 20);
    for (i, vector) in vectors.iter().enumerate() {
        assert_eq!(vector.len(), 1536);
        assert!(is_unit(vector), "vector {i} is not unit length");
        // [n, 1] scaled: the ratio gives n back, so order is checked.
        let n = (vector[0] / vector[1]).round() as usize;
        assert_eq!(n, i + 1, "vector {i} belongs to another text");
    }
    // 20 calls of 60 ms, at most 4 at once: at least 5 rounds.
    assert!(
        elapsed >= Duration::from_millis(290),
        "20 calls finished in {elapsed:?}: more than 4 ran at once"
    );

    let requests = server.received_requests().await.expect("recorded");
    for request in &requests {
        assert_signed_for(request, "bedrock");
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert!(body["inputText"].is_string(), "{body}");
        assert!(
            body.get("dimensions").is_none(),
            "v1 takes no dimensions: {body}"
        );
        assert!(
            body.get("normalize").is_none(),
            "v1 takes no normalize: {body}"
        );
    }
}

#[tokio::test]
async fn titan_v2_gets_the_dimension_and_normalize() {
    let server = MockServer::start().await;
    // The `:` of the model id travels percent-encoded.
    Mock::given(method("POST"))
        .and(path_regex(
            r"^/model/amazon\.titan-embed-text-v2(%3A|:)0/invoke$",
        ))
        .respond_with(titan_success(256))
        .expect(2)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v2:0", 256).await;
    assert_eq!(embedder.name(), "bedrock:amazon.titan-embed-text-v2:0:256");
    let vectors = embedder
        .embed(&["refund policy".to_string(), "pengembalian wang".to_string()])
        .await
        .expect("embeds");
    assert!(vectors.iter().all(|v| v.len() == 256 && is_unit(v)));

    for request in server.received_requests().await.expect("recorded") {
        assert_signed_for(&request, "bedrock");
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert_eq!(body["dimensions"], 256, "{body}");
        assert_eq!(body["normalize"], true, "{body}");
        assert!(body["inputText"].is_string(), "{body}");
    }
}

#[tokio::test]
async fn titan_throttling_is_retried_until_it_passes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests",
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(titan_success(1536))
        .expect(1)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    let vectors = embedder
        .embed(&["how long is delivery".to_string()])
        .await
        .expect("the third attempt passes");
    assert!(is_unit(&vectors[0]));
}

#[tokio::test]
async fn titan_unavailable_and_model_not_ready_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(bedrock_error(
            503,
            "ServiceUnavailableException",
            "try later",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(bedrock_error(429, "ModelNotReadyException", "warming up"))
        .up_to_n_times(1)
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(titan_success(1536))
        .with_priority(3)
        .expect(1)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    embedder
        .embed(&["stock check".to_string()])
        .await
        .expect("the third attempt passes");
}

#[tokio::test]
async fn titan_always_throttling_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests",
        ))
        .expect(3)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    let started = Instant::now();
    let outcome = embedder.embed(&["hello".to_string()]).await;
    assert!(
        matches!(outcome, Err(EmbedError::Throttled)),
        "expected Throttled, got {outcome:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(server.received_requests().await.expect("recorded").len(), 3);
}

#[tokio::test]
async fn titan_validation_errors_fail_at_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(bedrock_error(
            400,
            "ValidationException",
            "Malformed input request",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    match embedder.embed(&["hello".to_string()]).await {
        Err(EmbedError::Failed(message)) => {
            assert!(message.contains("ValidationException"), "{message}");
            assert!(!message.contains("test-secret"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn titan_answering_another_dimension_is_an_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(r"^/model/.+/invoke$"))
        .respond_with(titan_success(1024))
        .expect(1)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    match embedder.embed(&["hello".to_string()]).await {
        Err(EmbedError::Failed(message)) => assert!(message.contains("1024"), "{message}"),
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn titan_is_not_called_with_empty_text_or_impossible_dimensions() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(titan_success(1536))
        .expect(0)
        .mount(&server)
        .await;
    let embedder = titan(&server, "amazon.titan-embed-text-v1", 1536).await;
    let outcome = embedder
        .embed(&["fine".to_string(), "   ".to_string()])
        .await;
    assert!(matches!(outcome, Err(EmbedError::Failed(_))), "{outcome:?}");
    assert!(embedder.embed(&[]).await.expect("nothing to do").is_empty());

    assert!(
        BedrockEmbedder::new(titan_config(&server, "amazon.titan-embed-text-v1", 1024))
            .await
            .is_err()
    );
    assert!(
        BedrockEmbedder::new(titan_config(&server, "amazon.titan-embed-text-v2:0", 1536))
            .await
            .is_err()
    );
}

// ----------------------------------------------------------- OpenSearch

const SPACE: &str = "local-hash-v1-8";
const INDEX: &str = "kb-local-hash-v1-8";

async fn opensearch(server: &MockServer) -> OpenSearchVectors {
    OpenSearchVectors::new(OpenSearchConfig {
        endpoint: server.uri(),
        index: "kb".into(),
        region: REGION.into(),
        static_credentials: Some(("test".into(), "test-secret".into())),
        timeout: Duration::from_secs(5),
    })
    .await
    .expect("store builds")
}

/// A store whose index already exists (`HEAD` answers 200).
async fn prepared_opensearch(server: &MockServer) -> OpenSearchVectors {
    Mock::given(method("HEAD"))
        .and(path(format!("/{INDEX}")))
        .respond_with(ResponseTemplate::new(200))
        .mount(server)
        .await;
    let store = opensearch(server).await;
    store.prepare(SPACE, 8).await.expect("prepares");
    store
}

/// Every request signed for `aoss`, with the body's SHA-256 in the header.
async fn assert_all_signed_for_aoss(server: &MockServer) {
    let requests = server.received_requests().await.expect("recorded");
    assert!(!requests.is_empty());
    for request in &requests {
        assert_signed_for(request, "aoss");
        let hash = request
            .headers
            .get("x-amz-content-sha256")
            .and_then(|v| v.to_str().ok())
            .expect("x-amz-content-sha256");
        assert_eq!(hash, hex::encode(sha2::Sha256::digest(&request.body)));
        let authorization = request.headers["authorization"].to_str().unwrap();
        assert!(
            authorization.contains("x-amz-content-sha256"),
            "{authorization}"
        );
    }
}

fn json_answer(status: u16, body: Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body.to_string(), "application/json")
}

fn record(id: &str, document: &str, first: f32) -> VectorRecord {
    let mut vector = vec![0.0_f32; 8];
    vector[0] = first;
    vector[1] = (1.0 - first * first).sqrt();
    VectorRecord {
        id: id.into(),
        vector,
        meta: PassageMeta {
            document: document.into(),
            kind: "faq".into(),
            product_id: Some(42),
            language: "en".into(),
            tags: vec!["shipping".into()],
        },
    }
}

fn search_answer(hits: Vec<Value>) -> Value {
    json!({
        "took": 4,
        "timed_out": false,
        "_shards": { "total": 0, "successful": 0, "skipped": 0, "failed": 0 },
        "hits": { "total": { "value": hits.len(), "relation": "eq" }, "max_score": null, "hits": hits }
    })
}

fn ndjson_lines(body: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(body).expect("UTF-8");
    assert!(text.ends_with('\n'), "NDJSON must end with a newline");
    text.lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect()
}

async fn requests_to(server: &MockServer, verb: &str, request_path: &str) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("recorded")
        .into_iter()
        .filter(|r| r.method.as_str() == verb && r.url.path() == request_path)
        .collect()
}

#[tokio::test]
async fn opensearch_prepare_creates_a_missing_index_with_the_knn_mapping() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path(format!("/{INDEX}")))
        .respond_with(ResponseTemplate::new(404))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(format!("/{INDEX}")))
        .respond_with(json_answer(
            200,
            json!({ "acknowledged": true, "shards_acknowledged": true, "index": INDEX }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let store = opensearch(&server).await;
    assert_eq!(store.backend(), "opensearch");
    store.prepare(SPACE, 8).await.expect("prepares");

    let put = &requests_to(&server, "PUT", &format!("/{INDEX}")).await[0];
    let body: Value = serde_json::from_slice(&put.body).expect("JSON");
    assert_eq!(body["settings"]["index"]["knn"], true);
    let properties = &body["mappings"]["properties"];
    assert_eq!(properties["vector"]["type"], "knn_vector");
    assert_eq!(properties["vector"]["dimension"], 8);
    assert_eq!(properties["vector"]["method"]["name"], "hnsw");
    assert_eq!(properties["vector"]["method"]["engine"], "faiss");
    assert_eq!(properties["vector"]["method"]["space_type"], "innerproduct");
    for field in ["passage_id", "document", "kind", "language", "tags"] {
        assert_eq!(properties[field]["type"], "keyword", "{field}");
    }
    assert_eq!(properties["product_id"]["type"], "long");
    assert_all_signed_for_aoss(&server).await;
}

#[tokio::test]
async fn opensearch_prepare_leaves_an_existing_index_alone() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(json_answer(200, json!({ "acknowledged": true })))
        .expect(0)
        .mount(&server)
        .await;
    let _store = prepared_opensearch(&server).await;
    assert_all_signed_for_aoss(&server).await;
}

#[tokio::test]
async fn opensearch_upsert_replaces_old_copies_in_one_ndjson_bulk() {
    let server = MockServer::start().await;
    let store = prepared_opensearch(&server).await;
    // The lookup of documents already holding these passage ids.
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_search")))
        .respond_with(json_answer(
            200,
            search_answer(vec![json!({
                "_index": INDEX, "_id": "1%3A0%3Aold", "_score": null,
                "sort": ["p1"]
            })]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(json_answer(
            200,
            json!({ "took": 12, "errors": false, "items": [
                { "delete": { "_index": INDEX, "_id": "1%3A0%3Aold", "status": 200, "result": "deleted" } },
                { "index": { "_index": INDEX, "_id": "1%3A0%3Anew1", "status": 201, "result": "created" } },
                { "index": { "_index": INDEX, "_id": "1%3A0%3Anew2", "status": 201, "result": "created" } }
            ] }),
        ))
        .expect(1)
        .mount(&server)
        .await;

    store
        .upsert(vec![
            record("p1", "faq/shipping.md", 0.6),
            record("p2", "faq/shipping.md", 0.8),
        ])
        .await
        .expect("upserts");

    let lookup = &requests_to(&server, "POST", &format!("/{INDEX}/_search")).await[0];
    let lookup: Value = serde_json::from_slice(&lookup.body).expect("JSON");
    assert_eq!(lookup["query"]["terms"]["passage_id"], json!(["p1", "p2"]));
    assert_eq!(lookup["_source"], false);

    let bulk = &requests_to(&server, "POST", "/_bulk").await[0];
    assert_eq!(
        bulk.headers["content-type"].to_str().unwrap(),
        "application/x-ndjson"
    );
    let lines = ndjson_lines(&bulk.body);
    assert_eq!(
        lines.len(),
        5,
        "one delete, then two action + document pairs"
    );
    assert_eq!(
        lines[0],
        json!({ "delete": { "_index": INDEX, "_id": "1%3A0%3Aold" } })
    );
    for (pair, (id, first)) in lines[1..].chunks(2).zip([("p1", 0.6_f32), ("p2", 0.8)]) {
        // aoss vector collections refuse client ids: none is sent.
        assert_eq!(pair[0], json!({ "index": { "_index": INDEX } }));
        let document = &pair[1];
        assert_eq!(document["passage_id"], id);
        assert_eq!(document["document"], "faq/shipping.md");
        assert_eq!(document["kind"], "faq");
        assert_eq!(document["product_id"], 42);
        assert_eq!(document["language"], "en");
        assert_eq!(document["tags"], json!(["shipping"]));
        let vector = document["vector"].as_array().expect("vector");
        assert_eq!(vector.len(), 8);
        assert!((vector[0].as_f64().unwrap() as f32 - first).abs() < 1e-6);
    }
    assert_all_signed_for_aoss(&server).await;
}

#[tokio::test]
async fn opensearch_bulk_item_failures_are_errors() {
    let server = MockServer::start().await;
    let store = prepared_opensearch(&server).await;
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_search")))
        .respond_with(json_answer(200, search_answer(vec![])))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(json_answer(
            200,
            json!({ "took": 3, "errors": true, "items": [
                { "index": { "_index": INDEX, "_id": "a", "status": 201, "result": "created" } },
                { "index": { "_index": INDEX, "status": 400, "error": {
                    "type": "mapper_parsing_exception",
                    "reason": "failed to parse field [vector] of type [knn_vector]"
                } } }
            ] }),
        ))
        .mount(&server)
        .await;
    let outcome = store
        .upsert(vec![
            record("p1", "faq/a.md", 0.6),
            record("p2", "faq/a.md", 0.8),
        ])
        .await;
    match outcome {
        Err(VectorError::Failed(message)) => {
            assert!(message.contains("mapper_parsing_exception"), "{message}");
            assert!(message.contains("1 of 2"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn opensearch_search_filters_inside_knn_and_reads_hits() {
    let server = MockServer::start().await;
    let store = prepared_opensearch(&server).await;
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_search")))
        .respond_with(json_answer(
            200,
            search_answer(vec![
                json!({ "_index": INDEX, "_id": "x1", "_score": 1.9, "_source": {
                    "passage_id": "p1", "document": "faq/shipping.md", "kind": "faq",
                    "product_id": 42, "language": "en", "tags": ["shipping"]
                } }),
                // A stale second copy of p1 (writes become visible late).
                json!({ "_index": INDEX, "_id": "x0", "_score": 1.85, "_source": {
                    "passage_id": "p1", "document": "faq/shipping.md", "kind": "faq",
                    "product_id": 42, "language": "en", "tags": ["shipping"]
                } }),
                json!({ "_index": INDEX, "_id": "x2", "_score": 0.8, "_source": {
                    "passage_id": "p2", "document": "faq/returns.md", "kind": "faq",
                    "product_id": null, "language": "en", "tags": []
                } }),
            ]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    let filter = VectorFilter {
        kind: Some("faq".into()),
        language: Some("en".into()),
        ..VectorFilter::default()
    };
    let query = record("q", "", 0.6).vector;
    let hits = store.search(&query, &filter, 3).await.expect("searches");

    assert_eq!(hits.len(), 2, "one hit per passage: {hits:?}");
    assert_eq!(hits[0].id, "p1");
    assert!((hits[0].score - 0.9).abs() < 1e-5, "{}", hits[0].score);
    assert_eq!(hits[0].meta.document, "faq/shipping.md");
    assert_eq!(hits[0].meta.product_id, Some(42));
    assert_eq!(hits[0].meta.tags, vec!["shipping".to_string()]);
    assert_eq!(hits[1].id, "p2");
    // 0.8 = 1 / (1 - ip), so ip = -0.25.
    assert!((hits[1].score + 0.25).abs() < 1e-5, "{}", hits[1].score);
    assert_eq!(hits[1].meta.product_id, None);

    let sent = &requests_to(&server, "POST", &format!("/{INDEX}/_search")).await[0];
    let body: Value = serde_json::from_slice(&sent.body).expect("JSON");
    assert_eq!(body["size"], 3);
    assert_eq!(body["_source"]["excludes"], json!(["vector"]));
    let knn = &body["query"]["knn"]["vector"];
    assert_eq!(knn["k"], 3);
    assert_eq!(knn["vector"].as_array().expect("vector").len(), 8);
    assert_eq!(
        knn["filter"],
        json!({ "bool": { "filter": [
            { "term": { "kind": "faq" } },
            { "term": { "language": "en" } }
        ] } })
    );
    assert_all_signed_for_aoss(&server).await;
}

#[tokio::test]
async fn opensearch_delete_documents_finds_ids_and_bulk_deletes_them() {
    let server = MockServer::start().await;
    let store = prepared_opensearch(&server).await;
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_search")))
        .respond_with(json_answer(
            200,
            search_answer(vec![
                json!({ "_index": INDEX, "_id": "d1", "_score": null, "sort": ["p1"] }),
                json!({ "_index": INDEX, "_id": "d2", "_score": null, "sort": ["p2"] }),
            ]),
        ))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/_bulk"))
        .respond_with(json_answer(
            200,
            json!({ "took": 2, "errors": false, "items": [
                { "delete": { "_index": INDEX, "_id": "d1", "status": 200, "result": "deleted" } },
                // Already gone: not a failure (OpenSearch does not count it as an error).
                { "delete": { "_index": INDEX, "_id": "d2", "status": 404, "result": "not_found" } }
            ] }),
        ))
        .expect(1)
        .mount(&server)
        .await;
    store
        .delete_documents(&["faq/shipping.md".to_string()])
        .await
        .expect("deletes");

    let search = &requests_to(&server, "POST", &format!("/{INDEX}/_search")).await[0];
    let search: Value = serde_json::from_slice(&search.body).expect("JSON");
    assert_eq!(
        search["query"]["terms"]["document"],
        json!(["faq/shipping.md"])
    );
    let bulk = &requests_to(&server, "POST", "/_bulk").await[0];
    assert_eq!(
        ndjson_lines(&bulk.body),
        vec![
            json!({ "delete": { "_index": INDEX, "_id": "d1" } }),
            json!({ "delete": { "_index": INDEX, "_id": "d2" } }),
        ]
    );
    assert_all_signed_for_aoss(&server).await;
}

#[tokio::test]
async fn opensearch_counts_and_maps_throttling() {
    let server = MockServer::start().await;
    let store = prepared_opensearch(&server).await;
    Mock::given(method("GET"))
        .and(path(format!("/{INDEX}/_count")))
        .respond_with(json_answer(
            200,
            json!({ "count": 7, "_shards": { "total": 0, "successful": 0, "skipped": 0, "failed": 0 } }),
        ))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/{INDEX}/_search")))
        .respond_with(json_answer(
            429,
            json!({ "error": { "type": "too_many_requests" }, "status": 429 }),
        ))
        .mount(&server)
        .await;
    assert_eq!(store.count().await.expect("counts"), 7);
    let outcome = store
        .search(&record("q", "", 0.6).vector, &VectorFilter::default(), 5)
        .await;
    assert!(
        matches!(outcome, Err(VectorError::Throttled)),
        "{outcome:?}"
    );
    assert_all_signed_for_aoss(&server).await;
}

#[tokio::test]
async fn opensearch_errors_name_the_status_and_never_the_secret() {
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    let store = opensearch(&server).await;
    match store.prepare(SPACE, 8).await {
        Err(VectorError::Failed(message)) => {
            assert!(message.contains("403"), "{message}");
            assert!(!message.contains("test-secret"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    // Nothing works before a successful prepare.
    assert!(matches!(store.count().await, Err(VectorError::Failed(_))));
}

// ------------------------------------------------------------- settings

#[tokio::test]
async fn both_adapters_are_built_from_settings_without_touching_aws() {
    use kedai::config::{ConfigSources, Settings};
    let overrides = [
        ("embeddings.kind", "bedrock"),
        ("embeddings.model_id", "amazon.titan-embed-text-v2:0"),
        ("embeddings.dimensions", "512"),
        ("embeddings.endpoint_url", "http://127.0.0.1:9"),
        ("vectors.kind", "opensearch"),
        ("vectors.endpoint", "http://127.0.0.1:9"),
        ("vectors.index", "kedai-knowledge"),
    ];
    let settings = Settings::load(&ConfigSources {
        overrides: overrides
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..ConfigSources::default()
    })
    .expect("valid settings");
    // Credentials come from the default chain lazily: building is quick.
    let started = Instant::now();
    let embedder = BedrockEmbedder::from_settings(&settings)
        .await
        .expect("embedder from settings");
    assert_eq!(embedder.name(), "bedrock:amazon.titan-embed-text-v2:0:512");
    assert_eq!(embedder.dimensions(), 512);
    let store = OpenSearchVectors::from_settings(&settings)
        .await
        .expect("store from settings");
    assert_eq!(
        store.index_for(&embedder.name()),
        "kedai-knowledge-bedrock-amazon-titan-embed-text-v2-0-512"
    );
    assert!(started.elapsed() < Duration::from_millis(900));
}
