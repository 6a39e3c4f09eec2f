//! Benchmark of the payment webhook: signed `checkout.session.completed`
//! deliveries for distinct pending orders, sent by 32 concurrent clients.
//! Prints orders committed per second and p50/p99 latency.
//!
//! ```sh
//! cargo run --release --example bench_webhook -- [ORDERS] [CONCURRENCY]
//! KEDAI_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release --example bench_webhook
//! ```
//!
//! Without `KEDAI_BENCH_DATABASE_URL` it runs on a temporary SQLite file;
//! with it, it creates (and drops) a PostgreSQL database next to that URL.
//! The app runs in this process on a loopback port with access logs off;
//! the clients share the machine's cores with it.

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kedai::app::Application;
use kedai::config::{ConfigSources, Settings};
use kedai::orders::{self, NewOrder, ShippingAddress};
use kedai::platform::payments::{signature, stripe_event};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let orders_total: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(32);

    let database = support::BenchDatabase::create().await?;
    let (kind, url) = (database.kind, database.url.clone());
    let mut overrides: Vec<(String, String)> = vec![
        ("server.bind".into(), "127.0.0.1:0".into()),
        ("server.access_log".into(), "false".into()),
        ("log.level".into(), "warn".into()),
        ("database.kind".into(), kind.into()),
        ("database.url".into(), url),
    ];
    // KEDAI_BENCH_POOL overrides database.max_connections for the run.
    if let Ok(pool) = std::env::var("KEDAI_BENCH_POOL") {
        overrides.push(("database.max_connections".into(), pool));
    }
    let settings = Settings::load(&ConfigSources {
        overrides,
        ..ConfigSources::default()
    })?;
    let app = Application::build(settings).await?;
    let address = format!("http://127.0.0.1:{}/webhooks/stripe", app.port());
    let context = app.context().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));

    // Distinct pending orders, each for one unit of a well-stocked variant.
    let variants: Vec<i64> = {
        let snapshot = context.catalog.snapshot();
        snapshot
            .listing(None, kedai::catalog::SortOrder::Name)
            .iter()
            .flat_map(|p| p.variants.iter())
            .filter(|v| v.available >= 40)
            .map(|v| v.id)
            .collect()
    };
    let mut sessions = Vec::with_capacity(orders_total);
    for i in 0..orders_total {
        let placed = orders::place(
            &context.writer,
            NewOrder {
                customer_id: None,
                email: format!("bench{i}@example.com"),
                phone: None,
                whatsapp_opt_in: false,
                address: ShippingAddress {
                    name: "Bench".into(),
                    country: "MY".into(),
                    ..Default::default()
                },
                lines: vec![(variants[i % variants.len()], 1)],
                shipping_minor: 0,
                payment_provider: "stripe".into(),
                reservation_ttl: Duration::from_secs(3600),
            },
        )
        .await?;
        let session = format!("cs_bench_{i}");
        orders::attach_payment_session(&context.writer, placed.id, &session).await?;
        sessions.push((session, placed.public_id, placed.total_minor));
    }

    let secret = context
        .payments
        .signing_secret()
        .expect("test mode has a secret")
        .clone();
    let client = reqwest::Client::new();
    let queue = Arc::new(tokio::sync::Mutex::new(sessions.into_iter().enumerate()));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let queue = queue.clone();
        let client = client.clone();
        let address = address.clone();
        let secret = secret.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            loop {
                let Some((i, (session, reference, total))) = queue.lock().await.next() else {
                    break;
                };
                let body = stripe_event::session_completed_body(
                    &format!("evt_bench_{i}"),
                    &session,
                    &reference,
                    total,
                    "MYR",
                );
                let header = signature::sign(
                    &secret,
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                    body.as_bytes(),
                );
                let sent = Instant::now();
                let response = client
                    .post(&address)
                    .header("Stripe-Signature", header)
                    .body(body)
                    .send()
                    .await;
                let ok = match response {
                    Ok(response) => {
                        response.status().is_success()
                            && response.text().await.is_ok_and(|t| t.contains("\"paid\""))
                    }
                    Err(_) => false,
                };
                latencies.push(sent.elapsed());
                if !ok {
                    failures += 1;
                }
            }
            (latencies, failures)
        }));
    }
    let mut latencies = Vec::new();
    let mut failures = 0;
    for worker in workers {
        let (mut l, f) = worker.await?;
        latencies.append(&mut l);
        failures += f;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let percentile = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("webhook benchmark: {kind}, {orders_total} orders, {concurrency} concurrent clients");
    println!(
        "  orders committed/s: {:.0}   p50: {:.2} ms   p99: {:.2} ms   max: {:.2} ms   failures: {failures}",
        orders_total as f64 / elapsed.as_secs_f64(),
        percentile(0.50).as_secs_f64() * 1000.0,
        percentile(0.99).as_secs_f64() * 1000.0,
        latencies.last().unwrap().as_secs_f64() * 1000.0,
    );

    context.shutdown.cancel();
    let _ = context.db.clone().close().await;
    database.drop().await?;
    anyhow::ensure!(
        failures == 0,
        "{failures} deliveries did not make a paid order"
    );
    Ok(())
}
