//! The event bus end to end, on both databases: a paid order fanned out to
//! notifications, logistics and analytics with effects exactly once (also
//! under redelivery and replay), the WhatsApp 24-hour window, retries, dead
//! letters and replays with test handlers on a bus of their own, quiet
//! hours, Twilio status callbacks, and the operations JSON API.
//!
//! The background dispatcher is off in tests; every test steps the bus
//! itself with `drain()`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use kedai::analytics::{self, DayFigures};
use kedai::events::entity::outbox;
use kedai::events::{
    self, Bus, DeliveryFilter, DeliveryStatus, DeliveryView, DispatchStep, Dispatcher, Event,
    EventFilter, EventView, Handler, HandlerError, ReplayError,
};
use kedai::logistics::{self, MarkOutcome, ShipmentRef, ShipmentStatus};
use kedai::orders::{self, entity::shipment};
use kedai::platform::messaging::{self, OutboundMessage, twilio};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::shop::{Buyer, paid_order};
use crate::shop::{deliveries_of, drain, messages_to, order_number, shipments_of};

crate::on_both_databases!(
    a_paid_order_is_notified_shipped_and_counted_exactly_once,
    a_buyer_who_did_not_opt_in_gets_a_shipment_but_no_notify_delivery,
    an_order_refunded_before_it_ships_gets_no_shipment,
    free_text_inside_the_session_window_and_a_template_outside_it,
    an_opted_out_number_gets_no_message_and_the_delivery_is_done,
    a_failing_handler_is_retried_alone_until_it_succeeds,
    a_permanent_failure_is_a_dead_letter_and_replays_after_a_fix,
    a_handler_that_keeps_failing_dies_when_the_schedule_runs_out,
    replay_dead_sends_every_dead_letter_of_one_handler_back,
    replay_range_redelivers_the_archive_in_the_range_only,
    retry_after_beyond_the_schedule_is_honoured,
    a_deferred_delivery_waits_without_spending_an_attempt,
    a_handler_that_takes_too_long_is_timed_out_and_retried,
    a_delivery_for_a_handler_this_process_lacks_is_left_for_a_process_that_has_it,
    twilio_status_callbacks_that_are_unsigned_or_forged_change_nothing,
    twilio_status_callbacks_for_unknown_messages_are_acknowledged,
    twilio_status_callbacks_only_move_a_message_forward,
    shipment_messages_go_out_in_the_order_their_events_happened,
    a_failure_holds_back_later_events_of_the_same_key,
    a_panicking_handler_is_retried_and_the_bus_goes_on,
    out_for_delivery_again_after_an_exception_is_news_again,
);

/// Like `on_both_databases!`, for tests that need their own configuration:
/// each `async fn name(backend: Backend)` spawns its app itself.
macro_rules! configured_on_both_databases {
    ($($name:ident),* $(,)?) => {
        mod configured {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::super::$name($crate::helpers::Backend::Sqlite).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        super::super::$name($crate::helpers::Backend::Postgres).await;
                    }
                )*
            }
        }
    };
}

configured_on_both_databases!(
    the_ops_api_is_off_without_a_token_and_refuses_a_wrong_one,
    the_ops_api_lists_events_and_dead_letters_and_replays_them,
    the_ops_api_moves_shipments_and_reports_analytics_and_handlers,
    quiet_hours_hold_proactive_messages_but_not_a_fresh_confirmation,
);

const PHONE: &str = "+60123456789";

// ---------------------------------------------------------------------------
// Reading what happened.

async fn all_messages(app: &TestApp) -> Vec<OutboundMessage> {
    messaging::list(&app.context.db, None, 1000).await.unwrap()
}

/// Every archived event of a type, newest first, with its deliveries.
async fn events_of(app: &TestApp, event_type: &str) -> Vec<EventView> {
    events::list_events(
        &app.context.db,
        &EventFilter {
            event_type: Some(event_type.into()),
            limit: 100,
            ..EventFilter::default()
        },
    )
    .await
    .unwrap()
}

/// The archived events of a type that concern one order.
async fn order_events(app: &TestApp, event_type: &str, public_id: &str) -> Vec<EventView> {
    events_of(app, event_type)
        .await
        .into_iter()
        .filter(|e| e.event.text("order_id") == Some(public_id))
        .collect()
}

/// (handler, status) of each delivery, sorted by handler.
fn delivery_states(event: &EventView) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = event
        .deliveries
        .iter()
        .map(|d| (d.handler.clone(), d.status.clone()))
        .collect();
    states.sort();
    states
}

fn states(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(h, s)| (h.to_string(), s.to_string()))
        .collect()
}

async fn order_status(app: &TestApp, public_id: &str) -> String {
    orders::find_by_public_id(&app.context.db, public_id)
        .await
        .unwrap()
        .expect("the order exists")
        .order
        .status
}

async fn order_total(app: &TestApp, public_id: &str) -> i64 {
    orders::find_by_public_id(&app.context.db, public_id)
        .await
        .unwrap()
        .unwrap()
        .order
        .total_minor
}

async fn today(app: &TestApp) -> DayFigures {
    let day = analytics::today(app.context.settings.shop.offset());
    let mut days = analytics::daily(&app.context.db, day, day).await.unwrap();
    assert_eq!(days.len(), 1);
    days.remove(0)
}

async fn outbox_count(app: &TestApp) -> u64 {
    outbox::Entity::find().count(&app.context.db).await.unwrap()
}

// ---------------------------------------------------------------------------
// Test handlers, on a bus of their own.

#[derive(Debug, Clone, Copy)]
enum Failure {
    Retry,
    RetryAfter(Duration),
    Permanent,
    Defer(Duration),
    /// Takes this long (longer than the dispatcher waits).
    Hang(Duration),
}

/// Counts its calls; fails the first `failures` of them (until healed).
struct Probe {
    name: &'static str,
    failures: usize,
    failure: Failure,
    calls: AtomicUsize,
    healed: AtomicBool,
    seen: std::sync::Mutex<Vec<String>>,
}

impl Probe {
    fn new(name: &'static str, failures: usize, failure: Failure) -> Arc<Probe> {
        Arc::new(Probe {
            name,
            failures,
            failure,
            calls: AtomicUsize::new(0),
            healed: AtomicBool::new(false),
            seen: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Succeeds every time.
    fn steady(name: &'static str) -> Arc<Probe> {
        Probe::new(name, 0, Failure::Retry)
    }

    /// Fails every time until healed.
    fn broken(name: &'static str, failure: Failure) -> Arc<Probe> {
        Probe::new(name, usize::MAX, failure)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn heal(&self) {
        self.healed.store(true, Ordering::SeqCst);
    }

    /// The event ids it was called with, in order.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Handler for Probe {
    fn name(&self) -> &'static str {
        self.name
    }

    fn rule(&self) -> Value {
        json!({ "type": [{ "prefix": "test." }] })
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.lock().unwrap().push(event.id.clone());
        if self.healed.load(Ordering::SeqCst) || call > self.failures {
            return Ok(());
        }
        if let Failure::Hang(wait) = self.failure {
            tokio::time::sleep(wait).await;
            return Ok(());
        }
        Err(match self.failure {
            Failure::Retry => HandlerError::retry(format!("{} failed call {call}", self.name)),
            Failure::RetryAfter(wait) => HandlerError::Retry {
                reason: "slow down".into(),
                retry_after: Some(wait),
            },
            Failure::Permanent => HandlerError::Permanent(format!("{} refuses", self.name)),
            Failure::Defer(wait) => HandlerError::Defer {
                until: OffsetDateTime::now_utc() + wait,
                reason: "not now".into(),
            },
            Failure::Hang(_) => unreachable!("handled above"),
        })
    }
}

/// A bus of `probes` and a dispatcher for it with this retry schedule and
/// no jitter (the app's own dispatcher is not used).
fn probe_bus(app: &TestApp, probes: &[&Arc<Probe>], schedule: Vec<Duration>) -> (Bus, Dispatcher) {
    let handlers: Vec<Arc<dyn Handler>> = probes
        .iter()
        .map(|p| Arc::clone(*p) as Arc<dyn Handler>)
        .collect();
    let bus = Bus::new(handlers).unwrap();
    let mut settings = app.context.settings.events.clone();
    settings.retry_schedule = schedule;
    settings.retry_jitter = 0.0;
    let dispatcher = Dispatcher::new(app.context.writer.clone(), bus.clone(), settings);
    (bus, dispatcher)
}

/// Appends an event in a write transaction of its own; returns its id.
async fn append(app: &TestApp, event_type: &str, payload: Value) -> String {
    let (txn, _permit) = app.context.writer.begin().await.unwrap();
    let id = events::append(&txn, event_type, payload).await.unwrap();
    txn.commit().await.unwrap();
    id
}

async fn delivery_for(app: &TestApp, handler: &str, event_id: &str) -> DeliveryView {
    let found: Vec<DeliveryView> = deliveries_of(app, handler)
        .await
        .into_iter()
        .filter(|d| d.event_id == event_id)
        .collect();
    assert_eq!(found.len(), 1, "{handler} / {event_id}: {found:?}");
    found.into_iter().next().unwrap()
}

// ---------------------------------------------------------------------------
// 1. The production handlers, exactly once.

async fn a_paid_order_is_notified_shipped_and_counted_exactly_once(app: TestApp) {
    let quantity = 2;
    let order = paid_order(&app.context.writer, &Buyer::opted_in(PHONE), quantity).await;
    let total = order_total(&app, &order).await;
    assert_eq!(order_status(&app, &order).await, "paid");
    assert!(
        messages_to(&app, PHONE).await.is_empty(),
        "nothing before the bus runs"
    );

    let step = drain(&app).await;
    // order.paid, then shipment.created: two events routed; four deliveries.
    assert_eq!(
        step,
        DispatchStep {
            routed: 2,
            done: 4,
            retried: 0,
            dead: 0
        }
    );

    // One WhatsApp message, a template (no inbound message from the shopper).
    let messages = messages_to(&app, PHONE).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let paid = &messages[0];
    assert_eq!(paid.kind, "order_paid");
    assert_eq!(paid.status, "recorded");
    assert_eq!(paid.content_sid.as_deref(), Some("template:order_paid"));
    assert!(
        paid.provider_sid
            .as_deref()
            .is_some_and(|s| s.starts_with("REC")),
        "{paid:?}"
    );
    assert!(paid.body.contains(&order_number(&order)), "{}", paid.body);

    // One shipment with the manual carrier, and the order is being fulfilled.
    let shipments = shipments_of(&app, &order).await;
    assert_eq!(shipments.len(), 1);
    assert_eq!(shipments[0].carrier, "manual");
    assert_eq!(shipments[0].status, "pending");
    assert_eq!(order_status(&app, &order).await, "fulfilling");

    // Today's figures.
    let figures = today(&app).await;
    assert_eq!(figures.orders, 1);
    assert_eq!(figures.units, i64::from(quantity));
    assert_eq!(figures.revenue_minor.get("MYR"), Some(&total));
    assert_eq!(figures.payment_outcomes.get("paid"), Some(&1));
    assert_eq!(figures.shipments, 1);
    assert_eq!(figures.events.get("order.paid"), Some(&1));
    assert_eq!(figures.events.get("shipment.created"), Some(&1));
    assert_eq!(figures.by_category.len(), 1, "{:?}", figures.by_category);
    let category = figures.by_category.values().next().unwrap();
    assert_eq!(category.units, i64::from(quantity));
    assert_eq!(
        category.revenue_minor,
        total - 800,
        "the lines, without shipping"
    );

    // Every delivery is done.
    let paid_events = order_events(&app, "order.paid", &order).await;
    assert_eq!(paid_events.len(), 1);
    assert!(paid_events[0].routed_at.is_some());
    assert_eq!(
        delivery_states(&paid_events[0]),
        states(&[
            ("analytics", "done"),
            ("logistics", "done"),
            ("notify", "done")
        ])
    );
    assert!(paid_events[0].deliveries.iter().all(|d| d.attempts == 1));
    let created = order_events(&app, "shipment.created", &order).await;
    assert_eq!(created.len(), 1);
    assert_eq!(
        delivery_states(&created[0]),
        states(&[("analytics", "done")])
    );

    // Draining again finds nothing and changes nothing.
    assert!(drain(&app).await.is_idle());
    assert_eq!(messages_to(&app, PHONE).await.len(), 1);
    assert_eq!(shipments_of(&app, &order).await.len(), 1);
    assert_eq!(today(&app).await, figures);

    // Staff ship it: a second message, and the order is shipped.
    let outcome = logistics::mark(
        &app.context.writer,
        ShipmentRef::Order(&order),
        ShipmentStatus::InTransit,
        Some("EP1"),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        MarkOutcome::Changed {
            from: ShipmentStatus::Pending,
            to: ShipmentStatus::InTransit
        }
    );
    let step = drain(&app).await;
    assert_eq!((step.routed, step.done, step.dead), (1, 2, 0), "{step:?}");
    assert_eq!(order_status(&app, &order).await, "shipped");
    let messages = messages_to(&app, PHONE).await;
    assert_eq!(messages.len(), 2, "{messages:?}");
    assert_eq!(messages[0].kind, "shipment_in_transit");
    assert_eq!(messages[0].status, "recorded");
    assert!(messages[0].body.contains("EP1"), "{}", messages[0].body);
    let shipped = shipments_of(&app, &order).await;
    assert_eq!(shipped[0].status, "in_transit");
    assert_eq!(shipped[0].tracking_number.as_deref(), Some("EP1"));
    let figures = today(&app).await;
    assert_eq!(figures.events.get("shipment.status_changed"), Some(&1));

    // Replaying the whole archive to notify and analytics redelivers every
    // matching event, and no effect happens twice.
    let from = OffsetDateTime::now_utc() - time::Duration::hours(1);
    let to = OffsetDateTime::now_utc() + time::Duration::hours(1);
    let bus = &app.context.bus;
    let writer = &app.context.writer;
    // notify: order.paid and shipment.status_changed.
    assert_eq!(
        events::replay_range(writer, bus, "notify", from, to)
            .await
            .unwrap(),
        2
    );
    // analytics: all three events.
    assert_eq!(
        events::replay_range(writer, bus, "analytics", from, to)
            .await
            .unwrap(),
        3
    );
    let step = drain(&app).await;
    assert_eq!((step.routed, step.done, step.dead), (0, 5, 0), "{step:?}");
    assert_eq!(messages_to(&app, PHONE).await.len(), 2);
    assert_eq!(all_messages(&app).await.len(), 2);
    assert_eq!(today(&app).await, figures);
    assert_eq!(shipments_of(&app, &order).await.len(), 1);
    let replayed = order_events(&app, "order.paid", &order).await;
    let notify = replayed[0]
        .deliveries
        .iter()
        .find(|d| d.handler == "notify")
        .unwrap();
    assert_eq!((notify.status.as_str(), notify.replays), ("done", 1));
    let logistics = replayed[0]
        .deliveries
        .iter()
        .find(|d| d.handler == "logistics")
        .unwrap();
    assert_eq!(logistics.replays, 0, "logistics was not replayed");
}

async fn a_buyer_who_did_not_opt_in_gets_a_shipment_but_no_notify_delivery(app: TestApp) {
    let silent = paid_order(&app.context.writer, &Buyer::silent(), 1).await;
    // A phone number alone is not consent.
    let declined = paid_order(
        &app.context.writer,
        &Buyer {
            phone: Some("+60198765432".into()),
            whatsapp_opt_in: false,
            customer_id: None,
        },
        3,
    )
    .await;
    let step = drain(&app).await;
    assert_eq!(step.dead, 0);
    assert_eq!(step.retried, 0);

    for order in [&silent, &declined] {
        let paid = order_events(&app, "order.paid", order).await;
        assert_eq!(paid.len(), 1);
        assert_eq!(
            delivery_states(&paid[0]),
            states(&[("analytics", "done"), ("logistics", "done")]),
            "the notify rule filters the event out"
        );
        assert_eq!(shipments_of(&app, order).await.len(), 1);
        assert_eq!(order_status(&app, order).await, "fulfilling");
    }
    assert!(all_messages(&app).await.is_empty());
    assert!(deliveries_of(&app, "notify").await.is_empty());
    let figures = today(&app).await;
    assert_eq!(figures.orders, 2);
    assert_eq!(figures.units, 4);
    assert_eq!(
        figures.revenue_minor.get("MYR"),
        Some(&(order_total(&app, &silent).await + order_total(&app, &declined).await))
    );
    assert_eq!(figures.shipments, 2);

    // A status change of a silent order is not notified either.
    logistics::mark(
        &app.context.writer,
        ShipmentRef::Order(&declined),
        ShipmentStatus::InTransit,
        None,
        None,
        None,
    )
    .await
    .unwrap();
    drain(&app).await;
    assert!(deliveries_of(&app, "notify").await.is_empty());
    assert!(all_messages(&app).await.is_empty());
}

async fn an_order_refunded_before_it_ships_gets_no_shipment(app: TestApp) {
    let order = paid_order(&app.context.writer, &Buyer::silent(), 2).await;
    let total = order_total(&app, &order).await;
    let refunded = orders::refund(&app.context.writer, None, &format!("pi_{order}"), true)
        .await
        .unwrap();
    assert_eq!(refunded, orders::Transition::Applied);
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (0, 0), "{step:?}");
    let paid = order_events(&app, "order.paid", &order).await;
    assert_eq!(
        delivery_states(&paid[0]),
        states(&[("analytics", "done"), ("logistics", "done")])
    );
    assert!(shipments_of(&app, &order).await.is_empty());
    assert!(
        order_events(&app, "shipment.created", &order)
            .await
            .is_empty()
    );
    assert_eq!(order_status(&app, &order).await, "refunded");
    let figures = today(&app).await;
    assert_eq!(figures.orders, 1);
    assert_eq!(figures.payment_outcomes.get("paid"), Some(&1));
    assert_eq!(figures.payment_outcomes.get("refunded"), Some(&1));
    assert_eq!(figures.refunds_minor.get("MYR"), Some(&total));
    assert_eq!(figures.shipments, 0);
}

// ---------------------------------------------------------------------------
// 2. The 24-hour window and opt-outs.

async fn free_text_inside_the_session_window_and_a_template_outside_it(app: TestApp) {
    let writer = &app.context.writer;
    let now = OffsetDateTime::now_utc();
    let chatting = "+60111111111";
    let lapsed = "+60122222222";
    messaging::record_inbound(writer, chatting, now - time::Duration::hours(1))
        .await
        .unwrap();
    messaging::record_inbound(writer, lapsed, now - time::Duration::hours(25))
        .await
        .unwrap();
    let open = paid_order(writer, &Buyer::opted_in(chatting), 1).await;
    let closed = paid_order(writer, &Buyer::opted_in(lapsed), 1).await;
    let step = drain(&app).await;
    assert_eq!(step.dead, 0);

    let free = messages_to(&app, chatting).await;
    assert_eq!(free.len(), 1, "{free:?}");
    assert_eq!(free[0].kind, "order_paid");
    assert_eq!(free[0].content_sid, None, "inside the window: free text");
    assert_eq!(free[0].status, "recorded");
    assert!(
        free[0].body.contains(&order_number(&open)),
        "{}",
        free[0].body
    );

    let template = messages_to(&app, lapsed).await;
    assert_eq!(template.len(), 1, "{template:?}");
    assert_eq!(
        template[0].content_sid.as_deref(),
        Some("template:order_paid"),
        "outside the window: a template"
    );
    assert!(template[0].body.contains(&order_number(&closed)));
    assert_eq!(all_messages(&app).await.len(), 2);
}

async fn an_opted_out_number_gets_no_message_and_the_delivery_is_done(app: TestApp) {
    let writer = &app.context.writer;
    messaging::set_opted_out(writer, PHONE, true).await.unwrap();
    let order = paid_order(writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (0, 0));
    assert!(all_messages(&app).await.is_empty());
    let paid = order_events(&app, "order.paid", &order).await;
    assert_eq!(
        delivery_states(&paid[0]),
        states(&[
            ("analytics", "done"),
            ("logistics", "done"),
            ("notify", "done")
        ])
    );
    assert_eq!(shipments_of(&app, &order).await.len(), 1);

    // Opting back in: the next notification goes out.
    messaging::set_opted_out(writer, PHONE, false)
        .await
        .unwrap();
    logistics::mark(
        writer,
        ShipmentRef::Order(&order),
        ShipmentStatus::InTransit,
        None,
        None,
        None,
    )
    .await
    .unwrap();
    drain(&app).await;
    let messages = messages_to(&app, PHONE).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].kind, "shipment_in_transit");
}

// ---------------------------------------------------------------------------
// 3–5. Retries, dead letters and replays, with test handlers.

async fn a_failing_handler_is_retried_alone_until_it_succeeds(app: TestApp) {
    let flaky = Probe::new("flaky", 2, Failure::Retry);
    let steady = Probe::steady("steady");
    let (_bus, dispatcher) = probe_bus(&app, &[&flaky, &steady], vec![Duration::ZERO; 3]);
    let event = append(&app, "test.ping", json!({ "n": 1 })).await;

    let step = dispatcher.drain().await.unwrap();
    assert_eq!(
        step,
        DispatchStep {
            routed: 1,
            done: 2,
            retried: 2,
            dead: 0
        }
    );
    assert_eq!(flaky.calls(), 3);
    assert_eq!(steady.calls(), 1, "the other handler is never re-run");
    let flaky_delivery = delivery_for(&app, "flaky", &event).await;
    assert_eq!(flaky_delivery.status, "done");
    assert_eq!(flaky_delivery.attempts, 3);
    assert!(flaky_delivery.completed_at.is_some());
    let steady_delivery = delivery_for(&app, "steady", &event).await;
    assert_eq!(steady_delivery.status, "done");
    assert_eq!(steady_delivery.attempts, 1);
    assert_eq!(steady_delivery.last_error, None);
    assert_eq!(steady_delivery.event_type.as_deref(), Some("test.ping"));

    assert!(dispatcher.drain().await.unwrap().is_idle());
    assert_eq!((flaky.calls(), steady.calls()), (3, 1));
}

async fn a_permanent_failure_is_a_dead_letter_and_replays_after_a_fix(app: TestApp) {
    let doomed = Probe::broken("doomed", Failure::Permanent);
    let steady = Probe::steady("steady");
    let (_bus, dispatcher) = probe_bus(&app, &[&doomed, &steady], vec![Duration::ZERO; 3]);
    let event = append(&app, "test.ping", json!({})).await;

    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.done, step.retried, step.dead), (1, 0, 1), "{step:?}");
    assert_eq!(doomed.calls(), 1, "a permanent failure is not retried");
    let dead = delivery_for(&app, "doomed", &event).await;
    assert_eq!(dead.status, "dead");
    assert_eq!(dead.attempts, 1);
    assert_eq!(dead.last_error.as_deref(), Some("doomed refuses"));
    assert!(dead.completed_at.is_some());
    assert_eq!(delivery_for(&app, "steady", &event).await.status, "done");

    // Listed as a dead letter, and counted.
    let letters = events::list_deliveries(
        &app.context.db,
        &DeliveryFilter {
            handler: None,
            status: Some(DeliveryStatus::Dead),
            limit: 50,
        },
    )
    .await
    .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].id, dead.id);
    assert_eq!(letters[0].handler, "doomed");
    assert_eq!(letters[0].event_type.as_deref(), Some("test.ping"));
    let stats = events::delivery_stats(&app.context.db, &["doomed", "steady"])
        .await
        .unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(stats[0].handler, "doomed");
    assert_eq!(
        (
            stats[0].pending,
            stats[0].running,
            stats[0].done,
            stats[0].dead
        ),
        (0, 0, 0, 1)
    );
    assert_eq!(stats[0].oldest_pending_at, None);
    assert_eq!(
        (
            stats[1].pending,
            stats[1].running,
            stats[1].done,
            stats[1].dead
        ),
        (0, 0, 1, 0)
    );

    // Nothing happens to a dead letter by itself.
    assert!(dispatcher.drain().await.unwrap().is_idle());
    assert_eq!(doomed.calls(), 1);

    // Fixed and replayed: done, and the other handler is left alone.
    doomed.heal();
    assert!(
        !events::replay_delivery(&app.context.writer, dead.id + 1000)
            .await
            .unwrap()
    );
    let steady_id = delivery_for(&app, "steady", &event).await.id;
    assert!(
        !events::replay_delivery(&app.context.writer, steady_id)
            .await
            .unwrap(),
        "only dead letters are replayed"
    );
    assert!(
        events::replay_delivery(&app.context.writer, dead.id)
            .await
            .unwrap()
    );
    let pending = delivery_for(&app, "doomed", &event).await;
    assert_eq!(
        (pending.status.as_str(), pending.attempts, pending.replays),
        ("pending", 0, 1)
    );
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.done, step.retried, step.dead), (1, 0, 0), "{step:?}");
    assert_eq!((doomed.calls(), steady.calls()), (2, 1));
    let done = delivery_for(&app, "doomed", &event).await;
    assert_eq!(
        (done.status.as_str(), done.attempts, done.replays),
        ("done", 1, 1)
    );
    // Replaying a delivery that is no longer dead does nothing.
    assert!(
        !events::replay_delivery(&app.context.writer, dead.id)
            .await
            .unwrap()
    );
    assert!(
        events::list_deliveries(
            &app.context.db,
            &DeliveryFilter {
                handler: None,
                status: Some(DeliveryStatus::Dead),
                limit: 50,
            },
        )
        .await
        .unwrap()
        .is_empty()
    );
}

async fn a_handler_that_keeps_failing_dies_when_the_schedule_runs_out(app: TestApp) {
    let failing = Probe::broken("failing", Failure::Retry);
    let steady = Probe::steady("steady");
    let (_bus, dispatcher) = probe_bus(&app, &[&failing, &steady], vec![Duration::ZERO; 3]);
    let event = append(&app, "test.ping", json!({})).await;

    let step = dispatcher.drain().await.unwrap();
    // The first attempt and three retries, then a dead letter.
    assert_eq!((step.done, step.retried, step.dead), (1, 3, 1), "{step:?}");
    assert_eq!(failing.calls(), 4);
    assert_eq!(steady.calls(), 1);
    let dead = delivery_for(&app, "failing", &event).await;
    assert_eq!(dead.status, "dead");
    assert_eq!(dead.attempts, 4);
    let error = dead.last_error.clone().unwrap();
    assert!(error.contains("failing failed call 4"), "{error}");
    assert!(error.contains("gave up after 4 attempts"), "{error}");
    let stats = events::delivery_stats(&app.context.db, &["failing", "steady"])
        .await
        .unwrap();
    assert_eq!((stats[0].dead, stats[0].pending), (1, 0));

    failing.heal();
    assert!(
        events::replay_delivery(&app.context.writer, dead.id)
            .await
            .unwrap()
    );
    dispatcher.drain().await.unwrap();
    let done = delivery_for(&app, "failing", &event).await;
    assert_eq!((done.status.as_str(), done.attempts), ("done", 1));
    assert_eq!((failing.calls(), steady.calls()), (5, 1));
}

async fn replay_dead_sends_every_dead_letter_of_one_handler_back(app: TestApp) {
    let doomed = Probe::broken("doomed", Failure::Permanent);
    let other = Probe::broken("other", Failure::Permanent);
    let (_bus, dispatcher) = probe_bus(&app, &[&doomed, &other], vec![Duration::ZERO; 3]);
    let first = append(&app, "test.ping", json!({ "n": 1 })).await;
    let second = append(&app, "test.ping", json!({ "n": 2 })).await;
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.routed, step.dead), (2, 4));

    doomed.heal();
    other.heal();
    assert_eq!(
        events::replay_dead(&app.context.writer, "doomed")
            .await
            .unwrap(),
        2
    );
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.done, step.dead), (2, 0), "{step:?}");
    assert_eq!(doomed.calls(), 4);
    assert_eq!(other.calls(), 2, "the other handler's dead letters stay");
    for event in [&first, &second] {
        let done = delivery_for(&app, "doomed", event).await;
        assert_eq!((done.status.as_str(), done.replays), ("done", 1));
        assert_eq!(delivery_for(&app, "other", event).await.status, "dead");
    }
    // Nothing dead is left for it.
    assert_eq!(
        events::replay_dead(&app.context.writer, "doomed")
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        events::replay_dead(&app.context.writer, "other")
            .await
            .unwrap(),
        2
    );
}

async fn replay_range_redelivers_the_archive_in_the_range_only(app: TestApp) {
    let counter = Probe::steady("counter");
    let bystander = Probe::steady("bystander");
    let (bus, dispatcher) = probe_bus(&app, &[&counter, &bystander], vec![Duration::ZERO; 3]);
    let old = append(&app, "test.ping", json!({ "n": 0 })).await;
    let recent = append(&app, "test.ping", json!({ "n": 1 })).await;
    let also_recent = append(&app, "test.ping", json!({ "n": 2 })).await;
    // Not for these handlers at all.
    let unmatched = append(&app, "other.thing", json!({})).await;
    // The first event happened two days ago.
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::OccurredAt,
            Expr::value(OffsetDateTime::now_utc() - time::Duration::days(2)),
        )
        .filter(outbox::Column::EventId.eq(old.as_str()))
        .exec(&app.context.db)
        .await
        .unwrap();
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.routed, step.done), (4, 6));
    assert_eq!(counter.calls(), 3);

    let now = OffsetDateTime::now_utc();
    let from = now - time::Duration::days(1);
    let to = now + time::Duration::minutes(5);
    let writer = &app.context.writer;
    assert_eq!(
        events::replay_range(writer, &bus, "counter", from, to)
            .await
            .unwrap(),
        2
    );
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.done, step.dead), (2, 0));
    assert_eq!(
        counter.calls(),
        5,
        "a non-idempotent handler sees them again"
    );
    let mut again = counter.seen()[3..].to_vec();
    again.sort();
    let mut expected = vec![recent.clone(), also_recent.clone()];
    expected.sort();
    assert_eq!(again, expected, "only the events in the range");
    assert!(!counter.seen().contains(&unmatched));
    assert_eq!(bystander.calls(), 3, "other handlers are not replayed to");
    assert_eq!(delivery_for(&app, "counter", &old).await.replays, 0);
    assert_eq!(delivery_for(&app, "counter", &recent).await.replays, 1);
    assert_eq!(delivery_for(&app, "bystander", &recent).await.replays, 0);

    // A handler added after the events gets them for the first time.
    let newcomer = Probe::steady("newcomer");
    let (late_bus, late_dispatcher) =
        probe_bus(&app, &[&counter, &newcomer], vec![Duration::ZERO; 3]);
    assert_eq!(
        events::replay_range(writer, &late_bus, "newcomer", from, to)
            .await
            .unwrap(),
        2
    );
    late_dispatcher.drain().await.unwrap();
    assert_eq!(newcomer.calls(), 2);
    assert_eq!(delivery_for(&app, "newcomer", &recent).await.status, "done");
    assert_eq!(counter.calls(), 5);

    // Bad requests.
    assert!(matches!(
        events::replay_range(writer, &bus, "nobody", from, to).await,
        Err(ReplayError::UnknownHandler(name)) if name == "nobody"
    ));
    assert!(matches!(
        events::replay_range(writer, &bus, "counter", to, from).await,
        Err(ReplayError::BadRange)
    ));
    assert!(matches!(
        events::replay_range(writer, &bus, "counter", from, from).await,
        Err(ReplayError::BadRange)
    ));
    // A range with nothing in it schedules nothing.
    assert_eq!(
        events::replay_range(
            writer,
            &bus,
            "counter",
            now - time::Duration::days(30),
            now - time::Duration::days(20)
        )
        .await
        .unwrap(),
        0
    );
}

async fn retry_after_beyond_the_schedule_is_honoured(app: TestApp) {
    let throttled = Probe::broken("throttled", Failure::RetryAfter(Duration::from_secs(60)));
    let (_bus, dispatcher) = probe_bus(&app, &[&throttled], vec![Duration::ZERO; 2]);
    let event = append(&app, "test.ping", json!({})).await;

    let before = OffsetDateTime::now_utc();
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.retried, step.dead, step.done), (1, 0, 0), "{step:?}");
    assert_eq!(throttled.calls(), 1);
    let pending = delivery_for(&app, "throttled", &event).await;
    assert_eq!(pending.status, "pending");
    assert_eq!(pending.attempts, 1);
    assert_eq!(pending.last_error.as_deref(), Some("slow down"));
    let wait = pending.next_attempt_at - before;
    assert!(
        wait >= time::Duration::seconds(59) && wait <= time::Duration::seconds(70),
        "next attempt in {wait}"
    );

    // Not due yet: another drain leaves it alone.
    assert!(dispatcher.drain().await.unwrap().is_idle());
    assert_eq!(throttled.calls(), 1);
    let stats = events::delivery_stats(&app.context.db, &["throttled"])
        .await
        .unwrap();
    assert_eq!(stats[0].pending, 1);
    let oldest = stats[0].oldest_pending_at.expect("a pending delivery");
    assert!(
        (oldest - pending.next_attempt_at).abs() < time::Duration::seconds(1),
        "{oldest} vs {}",
        pending.next_attempt_at
    );
}

async fn a_deferred_delivery_waits_without_spending_an_attempt(app: TestApp) {
    let sleepy = Probe::broken("sleepy", Failure::Defer(Duration::from_secs(3600)));
    let steady = Probe::steady("steady");
    let (_bus, dispatcher) = probe_bus(&app, &[&sleepy, &steady], vec![Duration::ZERO; 1]);
    let event = append(&app, "test.ping", json!({})).await;

    let before = OffsetDateTime::now_utc();
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.retried, step.done, step.dead), (1, 1, 0), "{step:?}");
    let deferred = delivery_for(&app, "sleepy", &event).await;
    assert_eq!(deferred.status, "pending");
    assert_eq!(deferred.attempts, 0, "a deferral spends no attempt");
    assert_eq!(deferred.last_error.as_deref(), Some("not now"));
    let wait = deferred.next_attempt_at - before;
    assert!(
        wait >= time::Duration::minutes(59) && wait <= time::Duration::minutes(61),
        "deferred by {wait}"
    );
    assert!(dispatcher.drain().await.unwrap().is_idle());
    assert_eq!(sleepy.calls(), 1);
}

async fn a_handler_that_takes_too_long_is_timed_out_and_retried(app: TestApp) {
    let slow = Probe::broken("slow", Failure::Hang(Duration::from_secs(30)));
    let handlers: Vec<Arc<dyn Handler>> = vec![slow.clone()];
    let mut settings = app.context.settings.events.clone();
    settings.retry_schedule = vec![Duration::ZERO];
    settings.retry_jitter = 0.0;
    settings.handler_timeout = Duration::from_millis(200);
    let dispatcher = Dispatcher::new(
        app.context.writer.clone(),
        Bus::new(handlers).unwrap(),
        settings,
    );
    let event = append(&app, "test.ping", json!({})).await;

    let started = std::time::Instant::now();
    let step = dispatcher.drain().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not wait"
    );
    assert_eq!((step.retried, step.dead, step.done), (1, 1, 0), "{step:?}");
    assert_eq!(slow.calls(), 2);
    let dead = delivery_for(&app, "slow", &event).await;
    assert_eq!((dead.status.as_str(), dead.attempts), ("dead", 2));
    let error = dead.last_error.unwrap();
    assert!(error.contains("timed out after 200ms"), "{error}");
}

async fn a_delivery_for_a_handler_this_process_lacks_is_left_for_a_process_that_has_it(
    app: TestApp,
) {
    let kept = Probe::steady("kept");
    let removed = Probe::steady("removed");
    let (_, dispatcher) = probe_bus(&app, &[&kept], vec![Duration::ZERO; 3]);
    let event = append(&app, "test.ping", json!({})).await;
    dispatcher.drain().await.unwrap();
    // Another build of the process (mid rolling deploy) has a handler this
    // one does not: its deliveries stay pending for that build.
    let (other_bus, other) = probe_bus(&app, &[&kept, &removed], vec![Duration::ZERO; 3]);
    let now = OffsetDateTime::now_utc();
    let scheduled = events::replay_range(
        &app.context.writer,
        &other_bus,
        "removed",
        now - time::Duration::hours(1),
        now + time::Duration::hours(1),
    )
    .await
    .unwrap();
    assert_eq!(scheduled, 1);
    let step = dispatcher.drain().await.unwrap();
    assert!(step.is_idle(), "{step:?}");
    let waiting = delivery_for(&app, "removed", &event).await;
    assert_eq!((waiting.status.as_str(), waiting.attempts), ("pending", 0));
    // The build that has the handler delivers it.
    let step = other.drain().await.unwrap();
    assert_eq!(step.done, 1, "{step:?}");
    assert_eq!(removed.calls(), 1);
    assert_eq!(kept.calls(), 1);
    assert_eq!(delivery_for(&app, "removed", &event).await.status, "done");
}

// ---------------------------------------------------------------------------
// 6. Twilio status callbacks.

async fn post_status(
    app: &TestApp,
    params: &[(&str, &str)],
    signature: Option<String>,
) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/webhooks/twilio/status", app.address))
        .form(params);
    if let Some(signature) = signature {
        request = request.header("X-Twilio-Signature", signature);
    }
    request.send().await.unwrap()
}

fn owned(params: &[(&str, &str)]) -> Vec<(String, String)> {
    params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Posts a callback signed the way Twilio signs it; asserts a 200.
async fn callback(app: &TestApp, params: &[(&str, &str)]) {
    let signature = twilio::sign(
        &app.context.twilio_tokens[0],
        &kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url),
        &owned(params),
    );
    let response = post_status(app, params, Some(signature)).await;
    assert_eq!(response.status(), 200, "{params:?}");
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/xml")
    );
}

/// A message with a provider sid, sent for a paid order to `phone`.
async fn sent_message(app: &TestApp, phone: &str) -> OutboundMessage {
    paid_order(&app.context.writer, &Buyer::opted_in(phone), 1).await;
    drain(app).await;
    let mut messages = messages_to(app, phone).await;
    assert_eq!(messages.len(), 1);
    let message = messages.remove(0);
    assert!(message.provider_sid.is_some(), "{message:?}");
    message
}

async fn message(app: &TestApp, message_id: &str) -> OutboundMessage {
    all_messages(app)
        .await
        .into_iter()
        .find(|m| m.message_id == message_id)
        .expect("the message exists")
}

async fn twilio_status_callbacks_only_move_a_message_forward(app: TestApp) {
    let first = sent_message(&app, PHONE).await;
    let sid = first.provider_sid.clone().unwrap();
    let other = sent_message(&app, "+60177777777").await;
    let other_sid = other.provider_sid.clone().unwrap();

    callback(
        &app,
        &[("MessageSid", &sid), ("MessageStatus", "delivered")],
    )
    .await;
    assert_eq!(message(&app, &first.message_id).await.status, "delivered");
    // A late "sent" does not drag it back.
    callback(&app, &[("MessageSid", &sid), ("MessageStatus", "sent")]).await;
    assert_eq!(message(&app, &first.message_id).await.status, "delivered");
    callback(&app, &[("MessageSid", &sid), ("MessageStatus", "read")]).await;
    assert_eq!(message(&app, &first.message_id).await.status, "read");
    callback(
        &app,
        &[("MessageSid", &sid), ("MessageStatus", "delivered")],
    )
    .await;
    assert_eq!(message(&app, &first.message_id).await.status, "read");

    // A failure records Twilio's error code, on that message only.
    callback(
        &app,
        &[
            ("MessageSid", &other_sid),
            ("MessageStatus", "failed"),
            ("ErrorCode", "63016"),
            ("ErrorMessage", "outside the allowed window"),
        ],
    )
    .await;
    let failed = message(&app, &other.message_id).await;
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.error_code.as_deref(), Some("63016"));
    assert_eq!(
        failed.error_message.as_deref(),
        Some("outside the allowed window")
    );
    let untouched = message(&app, &first.message_id).await;
    assert_eq!(
        (untouched.status.as_str(), untouched.error_code),
        ("read", None)
    );
}

async fn twilio_status_callbacks_that_are_unsigned_or_forged_change_nothing(app: TestApp) {
    let sent = sent_message(&app, PHONE).await;
    let sid = sent.provider_sid.clone().unwrap();
    let params = [("MessageSid", sid.as_str()), ("MessageStatus", "failed")];
    let url = kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url);
    let wrong_token = secrecy::SecretString::from("not-the-token");
    let cases = [
        ("missing", None),
        (
            "wrong token",
            Some(twilio::sign(&wrong_token, &url, &owned(&params))),
        ),
        (
            "wrong url",
            Some(twilio::sign(
                &app.context.twilio_tokens[0],
                "https://elsewhere.example/webhooks/twilio/status",
                &owned(&params),
            )),
        ),
        (
            "other params",
            Some(twilio::sign(
                &app.context.twilio_tokens[0],
                &url,
                &owned(&[("MessageSid", sid.as_str()), ("MessageStatus", "read")]),
            )),
        ),
        ("garbage", Some("%%%".to_string())),
    ];
    for (case, signature) in cases {
        let response = post_status(&app, &params, signature).await;
        assert_eq!(response.status(), 403, "{case}");
    }
    let after = message(&app, &sent.message_id).await;
    assert_eq!(after, sent, "nothing changed");
}

async fn twilio_status_callbacks_for_unknown_messages_are_acknowledged(app: TestApp) {
    let sent = sent_message(&app, PHONE).await;
    callback(
        &app,
        &[("MessageSid", "SMnobody"), ("MessageStatus", "delivered")],
    )
    .await;
    assert_eq!(message(&app, &sent.message_id).await, sent);
    // Signed but without the fields: a bad request.
    let params = [("MessageSid", "SMnobody")];
    let signature = twilio::sign(
        &app.context.twilio_tokens[0],
        &kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url),
        &owned(&params),
    );
    assert_eq!(
        post_status(&app, &params, Some(signature)).await.status(),
        400
    );
}

// ---------------------------------------------------------------------------
// 7. The operations JSON API.

const TOKEN: &str = "t0ken";

async fn ops(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = app
        .client
        .request(method, format!("{}{}", app.address, path))
        .bearer_auth(TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

async fn ops_get(app: &TestApp, path: &str) -> (u16, Value) {
    ops(app, reqwest::Method::GET, path, None).await
}

async fn ops_post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    ops(app, reqwest::Method::POST, path, Some(body)).await
}

async fn the_ops_api_is_off_without_a_token_and_refuses_a_wrong_one(backend: Backend) {
    let Some(off) = spawn_app_with(backend, &[]).await else {
        return;
    };
    for path in ["/api/ops/events", "/api/ops/handlers"] {
        let response = off
            .client
            .get(format!("{}{path}", off.address))
            .bearer_auth("anything")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("server.ops_api_token")
        );
    }

    let app = spawn_app_with(backend, &[("server.ops_api_token", TOKEN)])
        .await
        .unwrap();
    let url = format!("{}/api/ops/events", app.address);
    let none = app.client.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let wrong = app
        .client
        .get(&url)
        .bearer_auth("t0ke")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let not_bearer = app
        .client
        .get(&url)
        .basic_auth("ops", Some(TOKEN))
        .send()
        .await
        .unwrap();
    assert_eq!(not_bearer.status(), 401);
    let replay = app
        .client
        .post(format!(
            "{}/api/ops/handlers/notify/replay-dead",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401, "writes are guarded too");
    let (status, body) = ops_get(&app, "/api/ops/events").await;
    assert_eq!(status, 200);
    assert_eq!(body["events"], json!([]));
}

async fn the_ops_api_lists_events_and_dead_letters_and_replays_them(backend: Backend) {
    // Twilio without an approved template: the confirmation outside the
    // session window cannot be sent, so the notify delivery dies. Twilio
    // itself is never called.
    let twilio = wiremock::MockServer::start().await;
    let twilio_uri = twilio.uri();
    let Some(app) = spawn_app_with(
        backend,
        &[
            ("server.ops_api_token", TOKEN),
            ("messaging.kind", "twilio"),
            ("twilio.account_sid", "AC123"),
            ("twilio.auth_token", "secret"),
            ("twilio.from", "whatsapp:+14155238886"),
            ("twilio.api_base", twilio_uri.as_str()),
        ],
    )
    .await
    else {
        return;
    };
    let order = paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.done, step.dead), (3, 1), "{step:?}");
    assert!(twilio.received_requests().await.unwrap().is_empty());
    assert!(all_messages(&app).await.is_empty());

    // The archive.
    let (status, body) = ops_get(&app, "/api/ops/events?type=order.paid").await;
    assert_eq!(status, 200);
    let listed = body["events"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{body}");
    let event = &listed[0];
    assert_eq!(event["type"], "order.paid");
    assert_eq!(event["payload"]["order_id"], order.as_str());
    let event_id = event["id"].as_str().unwrap().to_string();
    let handlers: Vec<(&str, &str)> = event["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["handler"].as_str().unwrap(),
                d["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        handlers,
        vec![
            ("analytics", "done"),
            ("logistics", "done"),
            ("notify", "dead")
        ]
    );
    let (status, all) = ops_get(&app, "/api/ops/events").await;
    assert_eq!(status, 200);
    assert_eq!(
        all["events"].as_array().unwrap().len(),
        2,
        "paid and shipment.created"
    );
    let (status, one) = ops_get(&app, &format!("/api/ops/events/{event_id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one["id"], event_id.as_str());
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 3);
    assert_eq!(ops_get(&app, "/api/ops/events/no-such-event").await.0, 404);
    assert_eq!(ops_get(&app, "/api/ops/events?from=yesterday").await.0, 400);

    // The dead letter.
    let (status, body) = ops_get(&app, "/api/ops/deliveries?status=dead").await;
    assert_eq!(status, 200);
    let dead = body["deliveries"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{body}");
    assert_eq!(dead[0]["handler"], "notify");
    assert_eq!(dead[0]["event_id"], event_id.as_str());
    assert_eq!(dead[0]["event_type"], "order.paid");
    assert_eq!(dead[0]["status"], "dead");
    let error = dead[0]["last_error"].as_str().unwrap();
    assert!(error.contains("notify.template_order_paid"), "{error}");
    let id = dead[0]["id"].as_i64().unwrap();
    assert_eq!(
        ops_get(&app, "/api/ops/deliveries?status=lost").await.0,
        400
    );
    let (_, done) = ops_get(&app, "/api/ops/deliveries?status=done&handler=logistics").await;
    assert_eq!(done["deliveries"].as_array().unwrap().len(), 1);

    let (status, body) =
        ops_post(&app, &format!("/api/ops/deliveries/{id}/replay"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["replayed"], 1);
    let replayed = delivery_for(&app, "notify", &event_id).await;
    assert_eq!((replayed.status.as_str(), replayed.replays), ("pending", 1));
    // Once more is not a dead letter any more; nor is a made-up id.
    assert_eq!(
        ops_post(&app, &format!("/api/ops/deliveries/{id}/replay"), json!({}))
            .await
            .0,
        404
    );
    assert_eq!(
        ops_post(&app, "/api/ops/deliveries/999999/replay", json!({}))
            .await
            .0,
        404
    );
    // Still no template: it dies again.
    let step = drain(&app).await;
    assert_eq!(step.dead, 1);
    assert_eq!(delivery_for(&app, "notify", &event_id).await.status, "dead");

    let (status, body) = ops_post(&app, "/api/ops/handlers/notify/replay-dead", json!({})).await;
    assert_eq!((status, body["replayed"].as_i64()), (200, Some(1)));
    assert_eq!(
        ops_post(&app, "/api/ops/handlers/nobody/replay-dead", json!({}))
            .await
            .0,
        404
    );
    drain(&app).await;

    // Replaying a time range.
    let now = OffsetDateTime::now_utc();
    let from = (now - time::Duration::hours(1)).format(&Rfc3339).unwrap();
    let to = (now + time::Duration::hours(1)).format(&Rfc3339).unwrap();
    let (status, body) = ops_post(
        &app,
        "/api/ops/handlers/notify/replay",
        json!({ "from": from, "to": to }),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "scheduled": 1 }));
    let (status, body) = ops_post(
        &app,
        "/api/ops/handlers/analytics/replay",
        json!({ "from": from, "to": to }),
    )
    .await;
    assert_eq!((status, body["scheduled"].as_i64()), (200, Some(2)));
    assert_eq!(
        ops_post(
            &app,
            "/api/ops/handlers/nobody/replay",
            json!({ "from": from, "to": to })
        )
        .await
        .0,
        404
    );
    assert_eq!(
        ops_post(
            &app,
            "/api/ops/handlers/notify/replay",
            json!({ "from": to, "to": from })
        )
        .await
        .0,
        400
    );
    assert_eq!(
        ops_post(
            &app,
            "/api/ops/handlers/notify/replay",
            json!({ "from": "last week", "to": to })
        )
        .await
        .0,
        400
    );
    let step = drain(&app).await;
    assert_eq!((step.done, step.dead), (2, 1), "{step:?}");
    // Analytics replayed: still one order.
    assert_eq!(today(&app).await.orders, 1);
    assert!(twilio.received_requests().await.unwrap().is_empty());
}

async fn the_ops_api_moves_shipments_and_reports_analytics_and_handlers(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[("server.ops_api_token", TOKEN)]).await else {
        return;
    };
    let order = paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 2).await;
    let total = order_total(&app, &order).await;
    drain(&app).await;

    // Analytics, in shop-local days ending today.
    let today_key = {
        let day = analytics::today(app.context.settings.shop.offset());
        format!(
            "{:04}-{:02}-{:02}",
            day.year(),
            u8::from(day.month()),
            day.day()
        )
    };
    let (status, body) = ops_get(&app, "/api/ops/analytics/daily").await;
    assert_eq!(status, 200);
    let days = body["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    let last = days.last().unwrap();
    assert_eq!(last["day"], today_key.as_str());
    assert_eq!(last["orders"], 1);
    assert_eq!(last["units"], 2);
    assert_eq!(last["revenue_minor"]["MYR"], total);
    assert_eq!(last["payment_outcomes"]["paid"], 1);
    assert_eq!(last["shipments"], 1);
    assert!(days[..29].iter().all(|d| d["orders"] == 0));
    let (status, body) = ops_get(
        &app,
        &format!("/api/ops/analytics/daily?from={today_key}&to={today_key}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["days"].as_array().unwrap().len(), 1);
    assert_eq!(
        ops_get(
            &app,
            "/api/ops/analytics/daily?from=2020-01-01&to=2026-01-01"
        )
        .await
        .0,
        400
    );
    assert_eq!(
        ops_get(&app, "/api/ops/analytics/daily?to=soon").await.0,
        400
    );

    // Shipments, moved by staff.
    let path = format!("/api/ops/shipments/{order}/status");
    let mark = json!({ "status": "shipped", "tracking_number": "X1" });
    let (status, body) = ops_post(&app, &path, mark.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "changed": true, "from": "pending", "to": "in_transit" })
    );
    let shipment = &shipments_of(&app, &order).await[0];
    assert_eq!(shipment.status, "in_transit");
    assert_eq!(shipment.tracking_number.as_deref(), Some("X1"));
    assert!(shipment.shipped_at.is_some());
    assert_eq!(order_status(&app, &order).await, "shipped");
    let (status, body) = ops_post(&app, &path, mark).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["changed"], false);
    assert_eq!(body["current"], "in_transit");
    assert_eq!(
        ops_post(&app, &path, json!({ "status": "lost" })).await.0,
        400
    );
    assert_eq!(
        ops_post(
            &app,
            "/api/ops/shipments/no-such-order/status",
            json!({ "status": "delivered" })
        )
        .await
        .0,
        404
    );
    assert_eq!(
        order_events(&app, "shipment.status_changed", &order)
            .await
            .len(),
        1,
        "the refused move wrote no event"
    );
    drain(&app).await;
    let messages = messages_to(&app, PHONE).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0].kind, "shipment_in_transit");
    let (status, body) = ops_get(&app, "/api/ops/messages?to=%2B60123456789").await;
    assert_eq!(status, 200);
    assert_eq!(body["messages"].as_array().unwrap().len(), 2);

    // Handlers and their counts.
    let (status, body) = ops_get(&app, "/api/ops/handlers").await;
    assert_eq!(status, 200);
    let handlers = body["handlers"].as_array().unwrap();
    let names: Vec<&str> = handlers
        .iter()
        .map(|h| h["handler"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["account_messages", "notify", "logistics", "analytics"]
    );
    let count = |name: &str, field: &str| {
        handlers.iter().find(|h| h["handler"] == name).unwrap()[field]
            .as_i64()
            .unwrap()
    };
    // notify: paid + in transit; logistics: paid; analytics: all three events.
    assert_eq!(count("notify", "done"), 2);
    assert_eq!(count("logistics", "done"), 1);
    assert_eq!(count("analytics", "done"), 3);
    for name in ["notify", "logistics", "analytics"] {
        assert_eq!(count(name, "pending"), 0);
        assert_eq!(count(name, "dead"), 0);
    }
    assert_eq!(outbox_count(&app).await, 3);
}

// ---------------------------------------------------------------------------
// Quiet hours (off in the other tests).

async fn quiet_hours_hold_proactive_messages_but_not_a_fresh_confirmation(backend: Backend) {
    // Quiet from an hour ago until an hour from now, in UTC shop time.
    let now = OffsetDateTime::now_utc();
    let hhmm = |t: OffsetDateTime| format!("{:02}:{:02}", t.hour(), t.minute());
    let window = format!(
        "{}-{}",
        hhmm(now - time::Duration::hours(1)),
        hhmm(now + time::Duration::hours(1))
    );
    let Some(app) = spawn_app_with(
        backend,
        &[
            ("shop.utc_offset", "+00:00"),
            ("notify.quiet_hours", window.as_str()),
        ],
    )
    .await
    else {
        return;
    };
    let writer = &app.context.writer;
    // Just paid: the shopper is at the screen, the confirmation goes now.
    let fresh = paid_order(writer, &Buyer::opted_in(PHONE), 1).await;
    // Paid twenty minutes ago (the bus was behind): that one waits.
    let late_phone = "+60133333333";
    let late = paid_order(writer, &Buyer::opted_in(late_phone), 1).await;
    let late_event = order_events(&app, "order.paid", &late).await[0]
        .event
        .id
        .clone();
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::OccurredAt,
            Expr::value(OffsetDateTime::now_utc() - time::Duration::minutes(20)),
        )
        .filter(outbox::Column::EventId.eq(late_event.as_str()))
        .exec(&app.context.db)
        .await
        .unwrap();
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (0, 1), "{step:?}");
    assert_eq!(messages_to(&app, PHONE).await.len(), 1);
    assert!(messages_to(&app, late_phone).await.is_empty());
    let held = delivery_for(&app, "notify", &late_event).await;
    assert_eq!(held.status, "pending");
    assert_eq!(
        held.attempts, 0,
        "waiting out quiet hours spends no attempt"
    );
    assert_eq!(held.last_error.as_deref(), Some("quiet hours"));
    let wait = held.next_attempt_at - OffsetDateTime::now_utc();
    assert!(
        wait > time::Duration::minutes(58) && wait <= time::Duration::minutes(60),
        "held for {wait}"
    );

    // A shipment update in quiet hours waits too.
    logistics::mark(
        writer,
        ShipmentRef::Order(&fresh),
        ShipmentStatus::InTransit,
        None,
        None,
        None,
    )
    .await
    .unwrap();
    let step = drain(&app).await;
    assert_eq!((step.retried, step.done), (1, 1), "{step:?}");
    assert_eq!(messages_to(&app, PHONE).await.len(), 1);
    let changed = order_events(&app, "shipment.status_changed", &fresh).await;
    let held = delivery_for(&app, "notify", &changed[0].event.id).await;
    assert_eq!((held.status.as_str(), held.attempts), ("pending", 0));
    assert!(drain(&app).await.is_idle());
}

/// Several status changes of one parcel due at once: the buyer hears about
/// them in the order they happened.
async fn shipment_messages_go_out_in_the_order_their_events_happened(app: TestApp) {
    use kedai::logistics::{ShipmentRef, ShipmentStatus, mark};
    let writer = &app.context.writer;
    let order =
        crate::shop::paid_order(writer, &crate::shop::Buyer::opted_in("+60175550101"), 1).await;
    app.context.dispatcher.drain().await.unwrap();
    for status in [
        ShipmentStatus::InTransit,
        ShipmentStatus::OutForDelivery,
        ShipmentStatus::Delivered,
    ] {
        mark(writer, ShipmentRef::Order(&order), status, None, None, None)
            .await
            .unwrap();
    }
    app.context.dispatcher.drain().await.unwrap();
    let mut messages = kedai::platform::messaging::list(&app.context.db, Some("+60175550101"), 10)
        .await
        .unwrap();
    messages.reverse();
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order_paid",
            "shipment_in_transit",
            "shipment_out_for_delivery",
            "shipment_delivered"
        ]
    );
}

/// Calls an ordered handler sees, by event payload `"n"`; fails events
/// marked `"fail": true` and panics on `"panic": true`.
struct Ordered {
    seen: std::sync::Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl Handler for Ordered {
    fn name(&self) -> &'static str {
        "ordered"
    }

    fn rule(&self) -> Value {
        json!({ "type": ["test.ordered"] })
    }

    fn ordering_key(&self, event: &events::Event) -> Option<String> {
        event.text("key").map(str::to_string)
    }

    async fn handle(&self, event: &events::Event) -> Result<(), HandlerError> {
        self.seen
            .lock()
            .unwrap()
            .push(event.payload["n"].as_i64().unwrap());
        if event.payload["panic"] == json!(true) {
            panic!("a handler bug");
        }
        if event.payload["fail"] == json!(true) {
            return Err(HandlerError::retry("upstream down"));
        }
        Ok(())
    }
}

fn ordered_bus(app: &TestApp) -> (Arc<Ordered>, Dispatcher) {
    let ordered = Arc::new(Ordered {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let bus = Bus::new(vec![ordered.clone() as Arc<dyn Handler>]).unwrap();
    let mut settings = app.context.settings.events.clone();
    settings.retry_schedule = vec![Duration::from_secs(60)];
    settings.retry_jitter = 0.0;
    let dispatcher = Dispatcher::new(app.context.writer.clone(), bus, settings);
    (ordered, dispatcher)
}

async fn a_failure_holds_back_later_events_of_the_same_key(app: TestApp) {
    let (ordered, dispatcher) = ordered_bus(&app);
    let first = append(
        &app,
        "test.ordered",
        json!({ "key": "a", "n": 1, "fail": true }),
    )
    .await;
    let second = append(&app, "test.ordered", json!({ "key": "a", "n": 2 })).await;
    let other = append(&app, "test.ordered", json!({ "key": "b", "n": 3 })).await;
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.done, step.retried), (1, 2), "{step:?}");
    let mut seen = ordered.seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, [1, 3], "the second event of key a waited");
    let failed = delivery_for(&app, "ordered", &first).await;
    let held = delivery_for(&app, "ordered", &second).await;
    assert_eq!((failed.status.as_str(), failed.attempts), ("pending", 1));
    assert_eq!((held.status.as_str(), held.attempts), ("pending", 0));
    assert!(held.next_attempt_at >= failed.next_attempt_at);
    assert!(
        held.last_error
            .as_deref()
            .unwrap()
            .contains("earlier event"),
        "{held:?}"
    );
    assert_eq!(delivery_for(&app, "ordered", &other).await.status, "done");
}

async fn a_panicking_handler_is_retried_and_the_bus_goes_on(app: TestApp) {
    let (ordered, dispatcher) = ordered_bus(&app);
    let bad = append(
        &app,
        "test.ordered",
        json!({ "key": "a", "n": 1, "panic": true }),
    )
    .await;
    let good = append(&app, "test.ordered", json!({ "key": "b", "n": 2 })).await;
    let step = dispatcher.drain().await.unwrap();
    assert_eq!((step.done, step.retried), (1, 1), "{step:?}");
    let panicked = delivery_for(&app, "ordered", &bad).await;
    assert_eq!(panicked.status, "pending");
    assert_eq!(panicked.last_error.as_deref(), Some("the handler panicked"));
    assert_eq!(delivery_for(&app, "ordered", &good).await.status, "done");
    // The dispatcher is still usable.
    let later = append(&app, "test.ordered", json!({ "key": "c", "n": 3 })).await;
    dispatcher.drain().await.unwrap();
    assert_eq!(delivery_for(&app, "ordered", &later).await.status, "done");
    assert_eq!(ordered.seen.lock().unwrap().len(), 3);
}

async fn out_for_delivery_again_after_an_exception_is_news_again(app: TestApp) {
    use kedai::logistics::{ShipmentRef, ShipmentStatus::*, mark};
    let writer = &app.context.writer;
    let phone = "+60175550202";
    let order = crate::shop::paid_order(writer, &crate::shop::Buyer::opted_in(phone), 1).await;
    app.context.dispatcher.drain().await.unwrap();
    for status in [
        InTransit,
        OutForDelivery,
        Exception,
        OutForDelivery,
        Delivered,
    ] {
        let outcome = mark(
            writer,
            ShipmentRef::Order(&order),
            status,
            None,
            Some("nobody home"),
            None,
        )
        .await
        .unwrap();
        assert!(
            matches!(outcome, MarkOutcome::Changed { .. }),
            "{status}: {outcome:?}"
        );
        app.context.dispatcher.drain().await.unwrap();
    }
    // Redelivering everything sends nothing new.
    let now = OffsetDateTime::now_utc();
    events::replay_range(
        writer,
        &app.context.bus,
        "notify",
        now - time::Duration::hours(1),
        now + time::Duration::hours(1),
    )
    .await
    .unwrap();
    app.context.dispatcher.drain().await.unwrap();
    let mut messages = messaging::list(&app.context.db, Some(phone), 20)
        .await
        .unwrap();
    messages.reverse();
    let kinds: Vec<&str> = messages.iter().map(|m| m.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "order_paid",
            "shipment_in_transit",
            "shipment_out_for_delivery",
            "shipment_exception",
            "shipment_out_for_delivery",
            "shipment_delivered"
        ]
    );
}

/// The running dispatcher is woken by the commit that writes an event, not
/// by its timer: with a 60-second poll interval the order is still handled
/// at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_wakes_the_dispatcher_without_waiting_for_its_timer() {
    let app = crate::helpers::spawn_app_with(
        crate::helpers::Backend::Sqlite,
        &[("events.enabled", "true"), ("events.poll_interval", "60s")],
    )
    .await
    .unwrap();
    // Let the dispatcher finish its first (empty) step and go to sleep.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let order = crate::shop::paid_order(
        &app.context.writer,
        &crate::shop::Buyer::opted_in("+60175550303"),
        1,
    )
    .await;
    let started = std::time::Instant::now();
    loop {
        let shipments = shipment::Entity::find().all(&app.context.db).await.unwrap();
        if !shipments.is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "order {order} was not handled: the commit did not wake the dispatcher"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
