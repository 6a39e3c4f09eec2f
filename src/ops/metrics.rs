//! Prometheus metrics. The `metrics` facade has one recorder per process,
//! installed on first use; several apps in one test process share it, so
//! tests compare before/after values instead of absolute ones.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets in seconds, from 0.25 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's recorder handle, installing the recorder on first call.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_string()), LATENCY_BUCKETS)
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness);
            // then ours still renders what was recorded through it.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "http_requests_total",
        "HTTP requests by route, method and status."
    );
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "HTTP request latency by route and method."
    );
    metrics::describe_gauge!(
        "db_pool_connections",
        "Open database connections in the pool."
    );
    metrics::describe_gauge!(
        "db_pool_idle_connections",
        "Idle database connections in the pool."
    );
    metrics::describe_gauge!("db_pool_max_connections", "Configured pool size.");
    metrics::describe_gauge!(
        "kedai_catalog_version",
        "Catalog version of this replica's snapshot."
    );
    metrics::describe_gauge!(
        "kedai_catalog_products",
        "Products in this replica's snapshot."
    );
    metrics::describe_counter!("kedai_search_total", "Searches, by cache hit or miss.");
    metrics::describe_gauge!(
        "kedai_queue_depth",
        "Chat queue messages waiting or in flight (approximate on SQS)."
    );
    metrics::describe_gauge!(
        "kedai_queue_in_flight",
        "Chat queue messages received and not yet deleted."
    );
    metrics::describe_gauge!("kedai_queue_dead", "Chat queue dead letters.");
    metrics::describe_gauge!(
        "kedai_queue_oldest_age_seconds",
        metrics::Unit::Seconds,
        "Age of the oldest chat queue message (database queue only)."
    );
    metrics::describe_histogram!(
        "kedai_kb_search_seconds",
        metrics::Unit::Seconds,
        "Knowledge-base search latency."
    );
    metrics::describe_gauge!(
        "kedai_kb_passages",
        "Knowledge-base passages this replica searches."
    );
    metrics::describe_histogram!(
        "kedai_chat_stage_seconds",
        metrics::Unit::Seconds,
        "WhatsApp assistant latency by stage: queue_wait, retrieval, model, send."
    );
    metrics::describe_counter!(
        "kedai_chat_turns_total",
        "Assistant turns by outcome (answered, an escalation reason, deferred, error)."
    );
    metrics::describe_counter!(
        "kedai_chat_jobs_total",
        "Chat jobs that found their conversation busy (outcome=busy)."
    );
    metrics::describe_counter!(
        "kedai_chat_rate_limited_total",
        "Inbound WhatsApp messages stored but not answered (over a rate limit)."
    );
    metrics::describe_counter!(
        "kedai_chat_relayed_total",
        "Conversations whose queue job the relay sent after SQS failed."
    );
    metrics::describe_histogram!(
        "kedai_chat_intake_batch_size",
        "Inbound messages written per intake transaction."
    );
    metrics::describe_histogram!(
        "kedai_chat_intake_commit_seconds",
        metrics::Unit::Seconds,
        "Time to write and commit one intake batch."
    );
    metrics::describe_counter!(
        "kedai_webhook_accepted_total",
        "Signed webhooks accepted, by source and outcome."
    );
    metrics::describe_counter!(
        "kedai_webhook_rejected_total",
        "Webhooks refused, by source and reason (bad signature, malformed)."
    );
    metrics::describe_counter!("kedai_llm_calls_total", "Chat model calls by outcome.");
    metrics::describe_counter!("kedai_llm_retries_total", "Chat model retries by reason.");
    metrics::describe_counter!(
        "kedai_llm_tokens_total",
        "Chat model tokens, by direction (input, output)."
    );
    metrics::describe_histogram!(
        "kedai_llm_seconds",
        metrics::Unit::Seconds,
        "Chat model call time, retries included."
    );
    metrics::describe_counter!("kedai_alerts_sent_total", "Alerts delivered, by sink.");
    metrics::describe_counter!(
        "kedai_alerts_failed_total",
        "Failed alert deliveries (attempts), by sink and reason."
    );
    metrics::describe_counter!(
        "kedai_alerts_dropped_total",
        "Alerts given up on after retries or a permanent error, by sink."
    );
    metrics::describe_counter!(
        "kedai_alerts_coalesced_total",
        "Alerts folded into a summary line because the sink's queue was full."
    );
    metrics::describe_gauge!("kedai_build_info", "Always 1; labels carry the version.");
}
