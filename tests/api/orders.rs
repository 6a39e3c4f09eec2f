//! Orders: reservations, exactly-once fulfilment under concurrency, expiry
//! and late payments, on both databases.

use std::time::Duration;

use kedai::catalog::entity::variant;
use kedai::events::entity::outbox;
use kedai::orders::{
    self, FulfilOutcome, NewOrder, PaymentConfirmation, PlaceOrderError, ShippingAddress,
};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::helpers::TestApp;

crate::on_both_databases!(
    placing_an_order_prices_from_the_database_and_reserves_stock,
    an_order_that_cannot_be_reserved_reserves_nothing,
    ten_concurrent_deliveries_of_one_event_make_one_paid_order,
    the_success_page_racing_the_webhook_makes_one_paid_order,
    an_expired_reservation_is_released_and_a_late_payment_still_counts,
    a_late_payment_for_stock_that_is_gone_is_flagged_not_dropped,
    a_payment_for_an_unknown_session_changes_nothing,
);

/// A variant with plenty of stock and the demo's price, by SKU.
async fn stocked_variant(app: &TestApp, min_stock: i32) -> variant::Model {
    variant::Entity::find()
        .filter(variant::Column::StockOnHand.gte(min_stock))
        .one(&app.context.db)
        .await
        .unwrap()
        .expect("the demo has well-stocked variants")
}

async fn reload(app: &TestApp, id: i64) -> variant::Model {
    variant::Entity::find_by_id(id)
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap()
}

fn new_order(lines: Vec<(i64, i32)>, ttl: Duration) -> NewOrder {
    NewOrder {
        customer_id: None,
        email: "guest@example.com".into(),
        phone: Some("+60123456789".into()),
        whatsapp_opt_in: true,
        address: ShippingAddress {
            name: "Nurul".into(),
            line1: "3 Lorong Bunga".into(),
            line2: String::new(),
            city: "George Town".into(),
            postcode: "10200".into(),
            state: "Penang".into(),
            country: "MY".into(),
        },
        lines,
        shipping_minor: 800,
        payment_provider: "test".into(),
        reservation_ttl: ttl,
    }
}

async fn outbox_count(app: &TestApp, event_type: &str) -> usize {
    outbox::Entity::find()
        .filter(outbox::Column::EventType.eq(event_type))
        .all(&app.context.db)
        .await
        .unwrap()
        .len()
}

/// Places a one-line order with a payment session id, returning (order id, session).
async fn placed(app: &TestApp, variant_id: i64, quantity: i32, ttl: Duration) -> (i64, String) {
    let order = orders::place(
        &app.context.writer,
        new_order(vec![(variant_id, quantity)], ttl),
    )
    .await
    .unwrap();
    let session = format!("cs_test_{}", order.public_id);
    assert!(
        orders::attach_payment_session(&app.context.writer, order.id, &session)
            .await
            .unwrap()
    );
    (order.id, session)
}

fn confirmation(session: &str, event: Option<&str>) -> PaymentConfirmation {
    PaymentConfirmation {
        source: "stripe".into(),
        event_id: event.map(str::to_string),
        session_id: session.to_string(),
        payment_intent_id: Some("pi_test_1".into()),
    }
}

async fn placing_an_order_prices_from_the_database_and_reserves_stock(app: TestApp) {
    let v = stocked_variant(&app, 10).await;
    let order = orders::place(
        &app.context.writer,
        new_order(vec![(v.id, 3)], Duration::from_secs(1800)),
    )
    .await
    .unwrap();
    assert_eq!(order.total_minor, v.price_minor * 3 + 800);
    assert_eq!(order.currency, "MYR");
    let after = reload(&app, v.id).await;
    assert_eq!(after.reserved, v.reserved + 3);
    assert_eq!(
        after.stock_on_hand, v.stock_on_hand,
        "nothing leaves the shelf before payment"
    );

    let view = orders::find_by_id(&app.context.db, order.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.order.status, "pending_payment");
    assert_eq!(view.lines.len(), 1);
    assert_eq!(view.lines[0].sku, v.sku);
    assert_eq!(view.history.len(), 1);

    // The storefront shows the lower availability after a refresh.
    app.context.catalog.refresh_if_changed().await.unwrap();
    let snapshot = app.context.catalog.snapshot();
    let shown = snapshot
        .product_by_id(v.product_id)
        .unwrap()
        .variants
        .iter()
        .find(|x| x.id == v.id)
        .unwrap()
        .available;
    assert_eq!(shown, v.stock_on_hand - v.reserved - 3);
}

async fn an_order_that_cannot_be_reserved_reserves_nothing(app: TestApp) {
    let plenty = stocked_variant(&app, 10).await;
    let scarce = variant::Entity::find()
        .filter(variant::Column::StockOnHand.between(1, 3))
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap();
    let result = orders::place(
        &app.context.writer,
        new_order(
            vec![(plenty.id, 2), (scarce.id, scarce.stock_on_hand + 1)],
            Duration::from_secs(60),
        ),
    )
    .await;
    match result {
        Err(PlaceOrderError::OutOfStock { sku, available }) => {
            assert_eq!(sku, scarce.sku);
            assert_eq!(available, scarce.stock_on_hand);
        }
        other => panic!("expected out of stock, got {other:?}"),
    }
    assert_eq!(
        reload(&app, plenty.id).await.reserved,
        plenty.reserved,
        "rolled back"
    );
    assert!(matches!(
        orders::place(
            &app.context.writer,
            new_order(vec![(999_999, 1)], Duration::from_secs(60))
        )
        .await,
        Err(PlaceOrderError::UnknownVariant(999_999))
    ));
    assert!(matches!(
        orders::place(
            &app.context.writer,
            new_order(vec![], Duration::from_secs(60))
        )
        .await,
        Err(PlaceOrderError::Empty)
    ));
}

async fn ten_concurrent_deliveries_of_one_event_make_one_paid_order(app: TestApp) {
    let v = stocked_variant(&app, 10).await;
    let (order_id, session) = placed(&app, v.id, 2, Duration::from_secs(1800)).await;
    let before_paid = outbox_count(&app, "order.paid").await;

    let mut tasks = Vec::new();
    for _ in 0..10 {
        let db = app.context.writer.clone();
        let payment = confirmation(&session, Some("evt_same"));
        tasks.push(tokio::spawn(
            async move { orders::fulfil(&db, &payment).await },
        ));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().expect("every delivery succeeds"));
    }
    let paid = outcomes
        .iter()
        .filter(|o| matches!(o, FulfilOutcome::Paid { .. }))
        .count();
    let duplicates = outcomes
        .iter()
        .filter(|o| **o == FulfilOutcome::DuplicateEvent)
        .count();
    assert_eq!((paid, duplicates), (1, 9), "{outcomes:?}");

    let after = reload(&app, v.id).await;
    assert_eq!(
        after.stock_on_hand,
        v.stock_on_hand - 2,
        "one stock decrement"
    );
    assert_eq!(
        after.reserved, v.reserved,
        "the reservation became the sale"
    );
    assert_eq!(
        outbox_count(&app, "order.paid").await,
        before_paid + 1,
        "one order.paid"
    );
    let view = orders::find_by_id(&app.context.db, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.order.status, "paid");
    assert!(view.order.paid_at.is_some());
    assert!(!view.order.needs_attention);
    assert_eq!(
        view.history
            .iter()
            .filter(|h| h.to_status == "paid")
            .count(),
        1
    );
}

async fn the_success_page_racing_the_webhook_makes_one_paid_order(app: TestApp) {
    let v = stocked_variant(&app, 10).await;
    let (_, session) = placed(&app, v.id, 1, Duration::from_secs(1800)).await;
    let before_paid = outbox_count(&app, "order.paid").await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let db = app.context.writer.clone();
        // Half come from the success page (no event id), half are webhook retries.
        let event = (i % 2 == 0).then(|| format!("evt_race_{i}"));
        let payment = confirmation(&session, event.as_deref());
        tasks.push(tokio::spawn(
            async move { orders::fulfil(&db, &payment).await },
        ));
    }
    let mut paid = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            FulfilOutcome::Paid { .. } => paid += 1,
            FulfilOutcome::AlreadyPaid { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(paid, 1);
    assert_eq!(reload(&app, v.id).await.stock_on_hand, v.stock_on_hand - 1);
    assert_eq!(outbox_count(&app, "order.paid").await, before_paid + 1);
}

async fn an_expired_reservation_is_released_and_a_late_payment_still_counts(app: TestApp) {
    let v = stocked_variant(&app, 10).await;
    let (order_id, session) = placed(&app, v.id, 2, Duration::ZERO).await;
    assert_eq!(reload(&app, v.id).await.reserved, v.reserved + 2);

    let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    assert_eq!(
        orders::sweep_expired(&app.context.writer, now, 100)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        orders::sweep_expired(&app.context.writer, now, 100)
            .await
            .unwrap(),
        0,
        "idempotent"
    );
    let released = reload(&app, v.id).await;
    assert_eq!(released.reserved, v.reserved, "reservation released");
    let view = orders::find_by_id(&app.context.db, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.order.status, "cancelled");
    assert!(outbox_count(&app, "order.cancelled").await >= 1);

    // The payment completed just before expiry; its webhook arrives now.
    let outcome = orders::fulfil(
        &app.context.writer,
        &confirmation(&session, Some("evt_late")),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        FulfilOutcome::Paid {
            order_id,
            needs_attention: false
        }
    );
    let after = reload(&app, v.id).await;
    assert_eq!(after.stock_on_hand, v.stock_on_hand - 2);
    assert_eq!(after.reserved, v.reserved);
    let view = orders::find_by_id(&app.context.db, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.order.status, "paid");
    assert_eq!(view.history.last().unwrap().note, "late payment received");
}

async fn a_late_payment_for_stock_that_is_gone_is_flagged_not_dropped(app: TestApp) {
    let v = stocked_variant(&app, 10).await;
    let (order_id, session) = placed(&app, v.id, 2, Duration::ZERO).await;
    let now = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    orders::sweep_expired(&app.context.writer, now, 100)
        .await
        .unwrap();
    // Meanwhile the shelf empties.
    assert!(app.context.catalog.set_stock(&v.sku, 0).await.unwrap());
    let attention_before = outbox_count(&app, "order.needs_attention").await;

    let outcome = orders::fulfil(
        &app.context.writer,
        &confirmation(&session, Some("evt_gone")),
    )
    .await
    .unwrap();
    assert_eq!(
        outcome,
        FulfilOutcome::Paid {
            order_id,
            needs_attention: true
        }
    );
    let view = orders::find_by_id(&app.context.db, order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.order.status, "paid");
    assert!(view.order.needs_attention);
    assert!(view.order.attention_reason.unwrap().contains(&v.sku));
    assert_eq!(reload(&app, v.id).await.stock_on_hand, 0, "never oversold");
    assert_eq!(
        outbox_count(&app, "order.needs_attention").await,
        attention_before + 1
    );
}

async fn a_payment_for_an_unknown_session_changes_nothing(app: TestApp) {
    let paid_before = outbox_count(&app, "order.paid").await;
    let outcome = orders::fulfil(
        &app.context.writer,
        &confirmation("cs_nobody", Some("evt_x")),
    )
    .await
    .unwrap();
    assert_eq!(outcome, FulfilOutcome::UnknownSession);
    assert_eq!(outbox_count(&app, "order.paid").await, paid_before);
    // The same event again is recognised as a duplicate.
    let again = orders::fulfil(
        &app.context.writer,
        &confirmation("cs_nobody", Some("evt_x")),
    )
    .await
    .unwrap();
    assert_eq!(again, FulfilOutcome::DuplicateEvent);
}
