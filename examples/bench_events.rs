//! Benchmark of the event bus: `order.paid` events (each written by the
//! real payment transaction) delivered to the three handlers —
//! notifications (recorded WhatsApp outbox), logistics (manual carrier) and
//! analytics.
//!
//! Two phases on one database:
//! 1. **Burst:** EVENTS orders are paid with the dispatcher stopped, then it
//!    starts: events/s until every delivery is done.
//! 2. **Paced:** EVENTS more orders are paid at RATE per second while the
//!    dispatcher runs: p50/p99/max commit-to-handled latency (from the
//!    event's time to the delivery's completion) per handler.
//!
//! ```sh
//! cargo run --release --example bench_events -- [EVENTS] [RATE]
//! KEDAI_BENCH_DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run --release --example bench_events
//! ```

#[path = "support/mod.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kedai::app::Application;
use kedai::config::{ConfigSources, Settings};
use kedai::events::entity::{delivery, outbox};
use kedai::orders::{self, NewOrder, PaymentConfirmation, ShippingAddress};
use kedai::platform::db::Writer;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(5000);
    let rate: u64 = args.next().map(|a| a.parse()).transpose()?.unwrap_or(250);

    let database = support::BenchDatabase::create().await?;
    let (kind, url) = (database.kind, database.url.clone());
    let settings = Settings::load(&ConfigSources {
        overrides: vec![
            ("server.bind".into(), "127.0.0.1:0".into()),
            ("server.access_log".into(), "false".into()),
            ("log.level".into(), "warn".into()),
            ("database.kind".into(), kind.into()),
            ("database.url".into(), url),
            // The benchmark starts the dispatcher itself, after the burst is written.
            ("events.enabled".into(), "false".into()),
            ("notify.quiet_hours".into(), "".into()),
        ],
        ..ConfigSources::default()
    })?;
    let app = Application::build(settings).await?;
    let context = app.context().clone();
    tokio::spawn(app.run_until_stopped(std::future::pending()));
    let writer = context.writer.clone();

    print!("preparing {} pending orders… ", 2 * events);
    let sessions = pending_orders(&writer, &context, 2 * events).await?;
    println!("done");
    let (burst, paced) = sessions.split_at(events);

    // Phase 1: the burst.
    for session in burst {
        pay(&writer, session).await?;
    }
    let stop = CancellationToken::new();
    let started = Instant::now();
    tokio::spawn(context.dispatcher.clone().run(stop.clone()));
    let burst_ids = wait_for(&context.db, 0, events).await?;
    let elapsed = started.elapsed();
    println!(
        "event bus benchmark: {kind}, {events} order.paid events x 3 handlers (+ shipment.created -> analytics)"
    );
    println!(
        "  burst:  {:.0} events/s ({:.0} deliveries/s), all handled in {:.2} s",
        events as f64 / elapsed.as_secs_f64(),
        (4 * events) as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );

    // Phase 2: paced payments while the dispatcher runs.
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let paced_started = Instant::now();
    for session in paced {
        ticker.tick().await;
        pay(&writer, session).await?;
    }
    let offered = events as f64 / paced_started.elapsed().as_secs_f64();
    wait_for(&context.db, burst_ids.len(), events).await?;
    let latencies = latencies(&context.db, &burst_ids).await?;
    println!(
        "  paced:  {offered:.0} events/s offered (target {rate}/s); commit-to-handled latency:"
    );
    let mut all: Vec<Duration> = Vec::new();
    let mut handlers: Vec<_> = latencies.into_iter().collect();
    handlers.sort_by(|a, b| a.0.cmp(&b.0));
    for (handler, mut values) in handlers {
        values.sort();
        println!("    {handler:<10} {}", summary(&values));
        all.extend(values);
    }
    all.sort();
    println!("    {:<10} {}", "all", summary(&all));

    stop.cancel();
    context.shutdown.cancel();
    let _ = context.db.clone().close().await;
    database.drop().await?;
    Ok(())
}

fn summary(values: &[Duration]) -> String {
    if values.is_empty() {
        return "no samples".into();
    }
    let at = |p: f64| values[((values.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   (n={})",
        at(0.50).as_secs_f64() * 1000.0,
        at(0.99).as_secs_f64() * 1000.0,
        values[values.len() - 1].as_secs_f64() * 1000.0,
        values.len()
    )
}

async fn pending_orders(
    writer: &Writer,
    context: &kedai::app::AppContext,
    count: usize,
) -> anyhow::Result<Vec<String>> {
    // Fifty variants with enough stock for every order.
    let chosen: Vec<(i64, String)> = {
        let snapshot = context.catalog.snapshot();
        snapshot
            .listing(None, kedai::catalog::SortOrder::Name)
            .iter()
            .flat_map(|p| p.variants.iter())
            .filter(|v| v.available > 0)
            .take(50)
            .map(|v| (v.id, v.sku.clone()))
            .collect()
    };
    for (_, sku) in &chosen {
        context.catalog.set_stock(sku, 1_000_000).await?;
    }
    let variants: Vec<i64> = chosen.iter().map(|(id, _)| *id).collect();
    let mut sessions = Vec::with_capacity(count);
    for i in 0..count {
        let placed = orders::place(
            writer,
            NewOrder {
                customer_id: None,
                email: format!("bench{i}@example.com"),
                phone: Some(format!("+6012{:07}", i)),
                whatsapp_opt_in: true,
                address: ShippingAddress {
                    name: "Bench Buyer".into(),
                    line1: "1 Jalan Ujian".into(),
                    city: "Kuala Lumpur".into(),
                    postcode: "50450".into(),
                    state: "WP Kuala Lumpur".into(),
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
        orders::attach_payment_session(writer, placed.id, &session).await?;
        sessions.push(session);
    }
    Ok(sessions)
}

async fn pay(writer: &Writer, session: &str) -> anyhow::Result<()> {
    orders::fulfil(
        writer,
        &PaymentConfirmation {
            source: "stripe".into(),
            event_id: Some(format!("evt_{session}")),
            session_id: session.to_string(),
            payment_intent_id: Some(format!("pi_{session}")),
        },
    )
    .await?;
    Ok(())
}

/// Waits until `skip + count` order.paid events exist and all their
/// deliveries (and shipment.created's) are done; returns the ids of every
/// order.paid event so far.
async fn wait_for(
    db: &DatabaseConnection,
    skip: usize,
    count: usize,
) -> anyhow::Result<HashSet<String>> {
    let want = skip + count;
    loop {
        let unrouted = outbox::Entity::find()
            .filter(outbox::Column::RoutedAt.is_null())
            .count(db)
            .await?;
        let open = delivery::Entity::find()
            .filter(delivery::Column::Status.ne("done"))
            .count(db)
            .await?;
        let total = delivery::Entity::find().count(db).await?;
        if unrouted == 0 && open == 0 && total as usize >= 4 * want {
            let ids: HashSet<String> = outbox::Entity::find()
                .filter(outbox::Column::EventType.eq("order.paid"))
                .all(db)
                .await?
                .into_iter()
                .map(|e| e.event_id)
                .collect();
            return Ok(ids);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Commit-to-handled latency of the order.paid deliveries not in `exclude`.
async fn latencies(
    db: &DatabaseConnection,
    exclude: &HashSet<String>,
) -> anyhow::Result<HashMap<String, Vec<Duration>>> {
    let occurred: HashMap<String, time::OffsetDateTime> = outbox::Entity::find()
        .filter(outbox::Column::EventType.eq("order.paid"))
        .all(db)
        .await?
        .into_iter()
        .filter(|e| !exclude.contains(&e.event_id))
        .map(|e| (e.event_id, e.occurred_at))
        .collect();
    let mut out: HashMap<String, Vec<Duration>> = HashMap::new();
    for d in delivery::Entity::find().all(db).await? {
        let (Some(at), Some(done)) = (occurred.get(&d.event_id), d.completed_at) else {
            continue;
        };
        let lag = (done - *at).max(time::Duration::ZERO);
        out.entry(d.handler)
            .or_default()
            .push(Duration::try_from(lag).unwrap_or_default());
    }
    Ok(out)
}
