//! What operators and the load balancer see: health, readiness, metrics,
//! request ids, security headers, static assets.

use crate::helpers::{TestApp, between};

crate::on_both_databases!(
    health_and_readiness_answer,
    metrics_count_requests_by_route_and_report_the_pool,
    request_ids_are_taken_or_made_and_returned,
    security_headers_are_on_every_response,
    static_assets_are_fingerprinted_and_cached_forever,
    readiness_fails_while_draining,
);

/// With Redis configured, readiness checks it and fails when it is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_checks_redis_when_configured() {
    let Some(url) = crate::helpers::service_url("KEDAI_TEST_REDIS_URL") else {
        return;
    };
    let prefix = format!("kedai-test-{}:", uuid::Uuid::now_v7().simple());
    let app = crate::helpers::spawn_app_with(
        crate::helpers::Backend::Sqlite,
        &[
            ("redis.kind", "redis"),
            ("redis.url", url.as_str()),
            ("redis.key_prefix", prefix.as_str()),
        ],
    )
    .await
    .unwrap();
    let body: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(body["checks"]["cache"], "ok");
    assert_eq!(body["checks"]["cache_kind"], "redis");

    let broken = crate::helpers::spawn_app_with(
        crate::helpers::Backend::Sqlite,
        &[
            ("redis.kind", "redis"),
            ("redis.url", "redis://127.0.0.1:1"),
        ],
    )
    .await
    .unwrap();
    let response = broken.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["cache"], "unavailable");
}

async fn health_and_readiness_answer(app: TestApp) {
    let health = app.get("/healthz").await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.headers()["cache-control"], "no-store");
    let body: serde_json::Value = health.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["cache"], "ok");
    assert_eq!(body["checks"]["cache_kind"], "memory");
    assert!(body["catalog_version"].as_i64().unwrap() >= 1);
}

fn counter(metrics: &str, line_start: &str) -> f64 {
    metrics
        .lines()
        .filter(|line| line.starts_with(line_start))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn metrics_count_requests_by_route_and_report_the_pool(app: TestApp) {
    // The recorder is shared by every app in this test process, so compare
    // before and after.
    let before = app.get("/metrics").await.text().await.unwrap();
    let key = "http_requests_total{route=\"/categories/{slug}\",method=\"GET\",status=\"200\"}";
    let start = counter(&before, key);
    for _ in 0..3 {
        assert_eq!(app.get("/categories/footwear").await.status(), 200);
    }
    app.get("/categories/footwear?page=abc").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let after = response.text().await.unwrap();
    assert!(counter(&after, key) >= start + 3.0, "{after}");
    assert!(after.contains("status=\"400\""));
    assert!(after.contains("http_request_duration_seconds_bucket{route=\"/categories/{slug}\""));
    assert!(after.contains("db_pool_connections "));
    assert!(after.contains("db_pool_max_connections 5"));
    assert!(after.contains("kedai_catalog_products") || after.contains("kedai_build_info"));
}

async fn request_ids_are_taken_or_made_and_returned(app: TestApp) {
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "lb-1234-abcd")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "lb-1234-abcd");

    let made = app.get("/").await;
    let id = made.headers()["x-request-id"].to_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id}");

    // A hostile id is replaced, not echoed.
    let response = app
        .client
        .get(format!("{}/healthz", app.address))
        .header("X-Request-Id", "<script>")
        .send()
        .await
        .unwrap();
    let id = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

async fn security_headers_are_on_every_response(app: TestApp) {
    for path in ["/", "/nope", "/healthz"] {
        let response = app.get(path).await;
        let headers = response.headers();
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["x-frame-options"], "DENY");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert!(headers.contains_key("referrer-policy"));
        // The demo runs on http: no HSTS.
        assert!(!headers.contains_key("strict-transport-security"));
    }
}

async fn static_assets_are_fingerprinted_and_cached_forever(app: TestApp) {
    let (_, html) = app.page("/").await;
    let css = between(&html, "<link rel=\"stylesheet\" href=\"", "\"")[0].to_string();
    assert!(
        css.starts_with("/static/css/kedai.")
            && css.ends_with(".css")
            && css.len() > "/static/css/kedai.css".len()
    );
    let response = app.get(&css).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/css");
    assert_eq!(
        response.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    let again = app
        .client
        .get(format!("{}{}", app.address, css))
        .header("If-None-Match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // Every file under static/ is served under its fingerprinted URL.
    for asset in kedai::web::assets::all() {
        let url = kedai::web::assets::url(&asset);
        assert_eq!(app.get(&url).await.status(), 200, "{asset} at {url}");
    }
    // The plain name works too, briefly cached.
    let plain = app.get("/static/css/kedai.css").await;
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["cache-control"], "public, max-age=300");
    assert_eq!(app.get("/static/css/nope.css").await.status(), 404);
    assert_eq!(app.get("/static/../Cargo.toml").await.status(), 404);
}

async fn readiness_fails_while_draining(app: TestApp) {
    assert_eq!(app.get("/readyz").await.status(), 200);
    app.context.shutdown.cancel();
    let response = app.get("/readyz").await;
    assert_eq!(response.status(), 503);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["status"], "draining");
    // Liveness is unaffected.
    assert_eq!(app.get("/healthz").await.status(), 200);
}

/// `/metrics` reports the chat queue's depth, in-flight count and oldest
/// age, labelled with the queue's name.
#[tokio::test]
async fn metrics_report_the_chat_queue() {
    let name = format!("metrics-{}", uuid::Uuid::now_v7().simple());
    let Some(app) = crate::helpers::spawn_app_with(
        crate::helpers::Backend::Sqlite,
        &[("queue.name", name.as_str())],
    )
    .await
    else {
        return;
    };
    let queue = app.context.queue.clone();
    queue
        .send("{\"turn\":1}", Some("+60123456789"))
        .await
        .unwrap();
    queue
        .send("{\"turn\":2}", Some("+60123456789"))
        .await
        .unwrap();
    let received = queue
        .receive(
            1,
            std::time::Duration::from_secs(30),
            std::time::Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(received.len(), 1);
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let label = format!("{{queue=\"{name}\"}}");
    assert!(
        metrics.contains(&format!("kedai_queue_depth{label} 2")),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("kedai_queue_in_flight{label} 1")));
    assert!(metrics.contains(&format!("kedai_queue_dead{label} 0")));
    assert!(metrics.contains(&format!("kedai_queue_oldest_age_seconds{label} ")));
}
