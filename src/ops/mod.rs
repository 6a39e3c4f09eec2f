//! Operations: health checks for the load balancer, Prometheus metrics,
//! logging and the per-request middleware.

pub mod api;
pub mod metrics;
pub mod middleware;
pub mod telemetry;
pub mod window;

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

pub use window::{RollingWindow, Signals, WindowSnapshot};

use crate::app::AppContext;
use crate::platform::cache::Cache;
use crate::platform::db;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(show_health))
        .route("/readyz", web::get().to(show_readiness))
        .route("/metrics", web::get().to(show_metrics));
}

/// Liveness: the process is up and serving HTTP. Checks nothing else, so a
/// slow database never gets a healthy replica restarted.
pub async fn show_health() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("cache-control", "no-store"))
        .json(json!({ "status": "ok" }))
}

/// What readiness checks: the database and the cache, each "ok",
/// "unavailable" or "timeout".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub database: String,
    pub cache: String,
}

impl Readiness {
    pub fn ready(&self) -> bool {
        self.database == "ok" && self.cache == "ok"
    }
}

/// The checks behind `/readyz` (shared with the alert rules): the database
/// answers a ping and the cache answers a ping, each within 2 seconds.
pub async fn check_readiness(db: &sea_orm::DatabaseConnection, cache: &dyn Cache) -> Readiness {
    let database = match tokio::time::timeout(Duration::from_secs(2), db::ping(db)).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(error)) => {
            tracing::warn!(
                error = format!("{error:#}"),
                "readiness: database check failed"
            );
            "unavailable".to_string()
        }
        Err(_) => "timeout".to_string(),
    };
    let cache = match tokio::time::timeout(Duration::from_secs(2), cache.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness: cache check failed");
            "unavailable".to_string()
        }
        Err(_) => "timeout".to_string(),
    };
    Readiness { database, cache }
}

/// Readiness: this replica should get traffic. Fails while shutting down
/// (so the balancer drains it) and when the database or the cache does
/// not answer.
pub async fn show_readiness(ctx: web::Data<AppContext>) -> HttpResponse {
    if ctx.shutdown.is_cancelled() {
        return HttpResponse::ServiceUnavailable()
            .insert_header(("cache-control", "no-store"))
            .json(json!({ "status": "draining" }));
    }
    let checks = check_readiness(&ctx.db, ctx.cache.as_ref()).await;
    let ready = checks.ready();
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": { "database": checks.database, "cache": checks.cache, "cache_kind": ctx.cache.kind() },
        "catalog_version": ctx.catalog.snapshot().version,
    });
    let mut response = if ready {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    response
        .insert_header(("cache-control", "no-store"))
        .json(body)
}

/// Prometheus text format. Pool gauges are sampled at scrape time.
pub async fn show_metrics(ctx: web::Data<AppContext>) -> HttpResponse {
    let stats = db::pool_stats(&ctx.db, ctx.settings.database.max_connections);
    ::metrics::gauge!("db_pool_connections").set(stats.size as f64);
    ::metrics::gauge!("db_pool_idle_connections").set(stats.idle as f64);
    ::metrics::gauge!("db_pool_max_connections").set(stats.max as f64);
    // The queue's figures at scrape time; a slow queue service must not
    // hold the scrape up.
    let queue = ctx.settings.queue.name.clone();
    match tokio::time::timeout(std::time::Duration::from_secs(2), ctx.queue.stats()).await {
        Ok(Ok(stats)) => {
            ::metrics::gauge!("kedai_queue_depth", "queue" => queue.clone())
                .set(stats.depth as f64);
            ::metrics::gauge!("kedai_queue_in_flight", "queue" => queue.clone())
                .set(stats.in_flight as f64);
            ::metrics::gauge!("kedai_queue_dead", "queue" => queue.clone()).set(stats.dead as f64);
            if let Some(age) = stats.oldest_age {
                ::metrics::gauge!("kedai_queue_oldest_age_seconds", "queue" => queue)
                    .set(age.as_secs_f64());
            }
        }
        Ok(Err(error)) => tracing::warn!(%error, "could not read the queue's figures"),
        Err(_) => tracing::warn!("the queue's figures took longer than 2s; skipped"),
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .insert_header(("cache-control", "no-store"))
        .body(ctx.metrics.render())
}
