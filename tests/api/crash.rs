//! Crash safety of the event bus, with the real binary: SIGKILL a server
//! while it dispatches a burst of `order.paid` events, start it again, and
//! count the effects — every event reached every matching handler exactly
//! once. On PostgreSQL, two servers compete for the same outbox (and one of
//! them is killed half-way) with the same result.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kedai::events::entity::{delivery, outbox};
use kedai::orders::entity::shipment;
use kedai::platform::db::Writer;
use kedai::platform::messaging::entity as message;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, PaginatorTrait, QueryFilter};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{Backend, TestDatabase};
use crate::shop::{Buyer, paid_order};

const KEDAI: &str = env!("CARGO_BIN_EXE_kedai");
const ORDERS: usize = 120;

/// A carrier that takes a while to book each parcel, so the burst lasts
/// long enough to be interrupted.
async fn slow_carrier() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/shipments"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_delay(Duration::from_millis(60))
                .set_body_raw(r#"{"id":"shp","tracking_number":null}"#, "application/json"),
        )
        .mount(&server)
        .await;
    server
}

fn server(database_url: &str, carrier: &str) -> Child {
    let mut command = Command::new(KEDAI);
    for (key, _) in std::env::vars() {
        if key.starts_with("KEDAI") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let kind = if database_url.starts_with("sqlite") {
        "sqlite"
    } else {
        "postgres"
    };
    command
        .arg("serve")
        .env("KEDAI__DATABASE__KIND", kind)
        .env("KEDAI__DATABASE__URL", database_url)
        .env("KEDAI__DATABASE__SEED_DEMO_ON_EMPTY", "false")
        .env("KEDAI__SERVER__BIND", "127.0.0.1:0")
        .env("KEDAI__SERVER__WORKERS", "1")
        .env("KEDAI__CARRIER__KIND", "http")
        .env("KEDAI__CARRIER__BASE_URL", carrier)
        .env("KEDAI__CARRIER__API_KEY", "ck_test")
        .env("KEDAI__EVENTS__CONCURRENCY", "4")
        .env("KEDAI__EVENTS__LEASE", "3s")
        .env("KEDAI__EVENTS__HANDLER_TIMEOUT", "2s")
        .env("KEDAI__EVENTS__POLL_INTERVAL", "100ms")
        .env("KEDAI__NOTIFY__QUIET_HOURS", "")
        .env("KEDAI__KNOWLEDGE__INGEST_ON_START", "false")
        .env(
            "KEDAI__TWILIO__EMBEDDED_TOKEN_FILE",
            std::env::temp_dir().join(format!("kedai-crash-token-{}", std::process::id())),
        )
        .env("KEDAI__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the kedai binary starts")
}

async fn count_done(db: &DatabaseConnection) -> u64 {
    delivery::Entity::find()
        .filter(delivery::Column::Status.eq("done"))
        .count(db)
        .await
        .unwrap()
}

/// Waits until every event is routed and every delivery done.
async fn wait_until_settled(db: &DatabaseConnection, expected_deliveries: u64) {
    let started = Instant::now();
    loop {
        let unrouted = outbox::Entity::find()
            .filter(outbox::Column::RoutedAt.is_null())
            .count(db)
            .await
            .unwrap();
        let done = count_done(db).await;
        let total = delivery::Entity::find().count(db).await.unwrap();
        if unrouted == 0 && total == expected_deliveries && done == total {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not settled: {unrouted} unrouted, {done}/{total} deliveries done (want {expected_deliveries})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn kill(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Seeds the demo catalog and `ORDERS` paid orders (their events not yet
/// dispatched) into the test database.
async fn prepare(database: &TestDatabase) -> (DatabaseConnection, Vec<String>) {
    let settings = crate::helpers::settings(database, &[]);
    let db = kedai::platform::db::connect(&settings.database)
        .await
        .unwrap();
    kedai::platform::db::migrate(&db).await.unwrap();
    kedai::catalog::Catalog::seed_demo_if_empty(&db)
        .await
        .unwrap();
    let writer = Writer::new(db.clone());
    let mut orders = Vec::with_capacity(ORDERS);
    for i in 0..ORDERS {
        let buyer = Buyer::opted_in(&format!("+6011{:07}", 2_000_000 + i));
        orders.push(paid_order(&writer, &buyer, 1).await);
    }
    (db, orders)
}

/// Every order has exactly one shipment, one notification and one analytics
/// count; every delivery is done exactly once.
async fn assert_each_effect_once(db: &DatabaseConnection, orders: &[String]) {
    let n = orders.len() as u64;
    // order.paid → notify, logistics, analytics; shipment.created → analytics.
    assert_eq!(delivery::Entity::find().count(db).await.unwrap(), 4 * n);
    assert_eq!(count_done(db).await, 4 * n);
    assert_eq!(shipment::Entity::find().count(db).await.unwrap(), n);
    let messages = message::Entity::find().all(db).await.unwrap();
    assert_eq!(messages.len() as u64, n, "one notification per order");
    for order in orders {
        let key = format!("order:{order}:paid");
        assert_eq!(
            messages
                .iter()
                .filter(|m| m.idempotency_key.as_deref() == Some(key.as_str()))
                .count(),
            1,
            "order {order} has one notification"
        );
    }
    let today = kedai::analytics::today(time::UtcOffset::from_hms(8, 0, 0).unwrap());
    let days = kedai::analytics::daily(db, today - time::Duration::days(1), today)
        .await
        .unwrap();
    let counted: i64 = days.iter().map(|d| d.orders).sum();
    assert_eq!(counted as u64, n, "analytics counted each order once");
    let shipments: i64 = days.iter().map(|d| d.shipments).sum();
    assert_eq!(shipments as u64, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_burst_loses_nothing_and_repeats_nothing() {
    let database = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let (db, orders) = prepare(&database).await;
    let carrier = slow_carrier().await;

    let mut first = server(database.url(), &carrier.uri());
    // Kill it once it is well into the burst.
    let started = Instant::now();
    while count_done(&db).await < 40 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the first server never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(&mut first);
    let done_at_kill = count_done(&db).await;
    assert!(
        done_at_kill < 4 * ORDERS as u64,
        "the kill must land mid-burst ({done_at_kill} done)"
    );

    let mut second = server(database.url(), &carrier.uri());
    wait_until_settled(&db, 4 * ORDERS as u64).await;
    kill(&mut second);
    assert_each_effect_once(&db, &orders).await;
    // The carrier may have been asked twice for a parcel whose booking was
    // interrupted; the idempotency key (the order id) makes that harmless.
    let requests = carrier.received_requests().await.unwrap();
    assert!(requests.len() >= ORDERS);
    for request in &requests {
        let key = request.headers.get("Idempotency-Key").unwrap();
        assert!(orders.iter().any(|o| o == key.to_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_postgres_outbox_and_each_effect_happens_once() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let (db, orders) = prepare(&database).await;
    let carrier = slow_carrier().await;

    let mut first = server(database.url(), &carrier.uri());
    let mut second = server(database.url(), &carrier.uri());
    // One replica dies half-way; the other takes over its leases.
    let started = Instant::now();
    while count_done(&db).await < 2 * ORDERS as u64 {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(&mut first);
    wait_until_settled(&db, 4 * ORDERS as u64).await;
    kill(&mut second);
    assert_each_effect_once(&db, &orders).await;
    let workers: std::collections::HashSet<String> = delivery::Entity::find()
        .all(&db)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.locked_by)
        .collect();
    assert!(workers.len() >= 2, "both servers dispatched ({workers:?})");
}
