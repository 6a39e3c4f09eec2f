//! The schema behaves the same on both databases: every entity round-trips,
//! constraints hold, migrations are idempotent, search triggers follow edits.

use kedai::cart::entity::{cart, cart_line};
use kedai::customers::entity::customer;
use kedai::events::entity::{outbox, processed_event};
use kedai::orders::OrderStatus;
use kedai::orders::entity::{order, order_line, order_status_change, shipment};
use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use time::OffsetDateTime;

use crate::helpers::TestApp;

crate::on_both_databases!(
    migrations_are_idempotent,
    every_shop_entity_round_trips,
    constraints_reject_bad_rows,
    processed_events_are_unique_per_source,
);

async fn migrations_are_idempotent(app: TestApp) {
    kedai::platform::db::migrate(&app.context.db)
        .await
        .expect("second run is a no-op");
    kedai::platform::db::migrate(&app.context.db)
        .await
        .expect("third run too");
}

async fn variant_id(app: &TestApp) -> i64 {
    let snapshot = app.context.catalog.snapshot();
    snapshot
        .product_by_slug("kelantan-hand-drawn-batik-shirt")
        .unwrap()
        .variants[0]
        .id
}

async fn every_shop_entity_round_trips(app: TestApp) {
    let db = &app.context.db;
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
    let customer_id = customer::Entity::insert(customer::ActiveModel {
        id: NotSet,
        email: Set(Some("aisyah@example.com".into())),
        name: Set("Aisyah".into()),
        phone: Set(Some("+60123456789".into())),
        password_hash: Set(None),
        whatsapp_opt_in: Set(true),
        created_at: Set(now),
        updated_at: Set(now),
        phone_verified_at: Set(Some(now)),
        phone_code_hash: Set(None),
        phone_code_expires_at: Set(None),
        phone_code_attempts: Set(0),
    })
    .exec(db)
    .await
    .unwrap()
    .last_insert_id;

    let cart_id = cart::Entity::insert(cart::ActiveModel {
        id: NotSet,
        token: Set("cart-token-1".into()),
        customer_id: Set(Some(customer_id)),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec(db)
    .await
    .unwrap()
    .last_insert_id;
    let variant = variant_id(&app).await;
    cart_line::Entity::insert(cart_line::ActiveModel {
        id: NotSet,
        cart_id: Set(cart_id),
        variant_id: Set(variant),
        quantity: Set(2),
        created_at: Set(now),
    })
    .exec(db)
    .await
    .unwrap();

    let order_id = order::Entity::insert(order::ActiveModel {
        id: NotSet,
        public_id: Set(uuid::Uuid::now_v7().to_string()),
        customer_id: Set(Some(customer_id)),
        email: Set("aisyah@example.com".into()),
        phone: Set(Some("+60123456789".into())),
        status: Set(OrderStatus::PendingPayment.as_str().into()),
        currency: Set("MYR".into()),
        subtotal_minor: Set(37800),
        shipping_minor: Set(800),
        total_minor: Set(38600),
        payment_provider: Set("test".into()),
        payment_session_id: Set(Some("cs_test_1".into())),
        payment_intent_id: Set(None),
        needs_attention: Set(false),
        attention_reason: Set(None),
        ship_name: Set("Aisyah".into()),
        ship_line1: Set("12 Jalan Ampang".into()),
        ship_line2: Set(String::new()),
        ship_city: Set("Kuala Lumpur".into()),
        ship_postcode: Set("50450".into()),
        ship_state: Set("WP Kuala Lumpur".into()),
        ship_country: Set("MY".into()),
        reservation_expires_at: Set(Some(now + time::Duration::minutes(30))),
        paid_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        whatsapp_opt_in: Set(false),
    })
    .exec(db)
    .await
    .unwrap()
    .last_insert_id;
    order_line::Entity::insert(order_line::ActiveModel {
        id: NotSet,
        order_id: Set(order_id),
        variant_id: Set(Some(variant)),
        product_name: Set("Kelantan Hand-Drawn Batik Shirt".into()),
        variant_title: Set("S / Indigo".into()),
        sku: Set("KD-BAT-001-01".into()),
        unit_price_minor: Set(18900),
        quantity: Set(2),
        line_total_minor: Set(37800),
    })
    .exec(db)
    .await
    .unwrap();
    order_status_change::Entity::insert(order_status_change::ActiveModel {
        id: NotSet,
        order_id: Set(order_id),
        from_status: Set(None),
        to_status: Set(OrderStatus::PendingPayment.as_str().into()),
        note: Set("created at checkout".into()),
        created_at: Set(now),
    })
    .exec(db)
    .await
    .unwrap();
    shipment::Entity::insert(shipment::ActiveModel {
        id: NotSet,
        order_id: Set(order_id),
        carrier: Set("manual".into()),
        tracking_number: Set(None),
        tracking_url: Set(None),
        label_url: Set(None),
        status: Set("pending".into()),
        created_at: Set(now),
        updated_at: Set(now),
        shipped_at: Set(None),
        delivered_at: Set(None),
        carrier_ref: Set(None),
    })
    .exec(db)
    .await
    .unwrap();
    let event_id = uuid::Uuid::now_v7().to_string();
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        event_id: Set(event_id.clone()),
        event_type: Set("order.paid".into()),
        version: Set(1),
        payload: Set(serde_json::json!({ "order_id": order_id, "total_minor": 38600 })),
        occurred_at: Set(now),
        routed_at: Set(None),
    })
    .exec(db)
    .await
    .unwrap();

    let stored = order::Entity::find_by_id(order_id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        stored.status.parse::<OrderStatus>(),
        Ok(OrderStatus::PendingPayment)
    );
    assert_eq!(stored.total_minor, 38600);
    assert_eq!(stored.created_at, now);
    assert_eq!(
        stored.reservation_expires_at,
        Some(now + time::Duration::minutes(30))
    );
    let lines = order_line::Entity::find()
        .filter(order_line::Column::OrderId.eq(order_id))
        .all(db)
        .await
        .unwrap();
    assert_eq!(lines.len(), 1);
    let event = outbox::Entity::find()
        .filter(outbox::Column::EventId.eq(event_id))
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event.payload["total_minor"], 38600);
    let stored_customer = customer::Entity::find_by_id(customer_id)
        .one(db)
        .await
        .unwrap()
        .unwrap();
    assert!(stored_customer.whatsapp_opt_in);
    assert_eq!(stored_customer.phone_verified_at, Some(now));

    // Deleting the order cascades to its lines, history and shipment.
    order::Entity::delete_by_id(order_id)
        .exec(db)
        .await
        .unwrap();
    assert!(order_line::Entity::find().all(db).await.unwrap().is_empty());
    assert!(shipment::Entity::find().all(db).await.unwrap().is_empty());
    assert!(
        order_status_change::Entity::find()
            .all(db)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn constraints_reject_bad_rows(app: TestApp) {
    let db = &app.context.db;
    let backend = db.get_database_backend();
    let now = OffsetDateTime::now_utc();
    // Negative stock violates a CHECK constraint.
    let negative = db
        .execute_raw(sea_orm::Statement::from_string(
            backend,
            "UPDATE variants SET stock_on_hand = -1 WHERE id = (SELECT MIN(id) FROM variants)",
        ))
        .await;
    assert!(negative.is_err(), "negative stock must be rejected");
    // A cart line must point at a real cart (foreign keys are on in SQLite too).
    let orphan = cart_line::Entity::insert(cart_line::ActiveModel {
        id: NotSet,
        cart_id: Set(999_999),
        variant_id: Set(variant_id(&app).await),
        quantity: Set(1),
        created_at: Set(now),
    })
    .exec(db)
    .await;
    assert!(orphan.is_err(), "foreign keys are enforced");
    // Two orders cannot share a payment session.
    let order = |public_id: &str| order::ActiveModel {
        id: NotSet,
        public_id: Set(public_id.into()),
        customer_id: Set(None),
        email: Set("guest@example.com".into()),
        phone: Set(None),
        status: Set("pending_payment".into()),
        currency: Set("MYR".into()),
        subtotal_minor: Set(100),
        shipping_minor: Set(0),
        total_minor: Set(100),
        payment_provider: Set("test".into()),
        payment_session_id: Set(Some("cs_same".into())),
        payment_intent_id: Set(None),
        needs_attention: Set(false),
        attention_reason: Set(None),
        ship_name: Set(String::new()),
        ship_line1: Set(String::new()),
        ship_line2: Set(String::new()),
        ship_city: Set(String::new()),
        ship_postcode: Set(String::new()),
        ship_state: Set(String::new()),
        ship_country: Set("MY".into()),
        reservation_expires_at: Set(None),
        paid_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        whatsapp_opt_in: Set(false),
    };
    order::Entity::insert(order("a")).exec(db).await.unwrap();
    assert!(order::Entity::insert(order("b")).exec(db).await.is_err());
}

async fn processed_events_are_unique_per_source(app: TestApp) {
    let db = &app.context.db;
    let row = |source: &str, id: &str| processed_event::ActiveModel {
        id: NotSet,
        source: Set(source.into()),
        event_id: Set(id.into()),
        processed_at: Set(OffsetDateTime::now_utc()),
    };
    processed_event::Entity::insert(row("stripe", "evt_1"))
        .exec(db)
        .await
        .unwrap();
    assert!(
        processed_event::Entity::insert(row("stripe", "evt_1"))
            .exec(db)
            .await
            .is_err()
    );
    // The same id from another provider is a different key.
    processed_event::Entity::insert(row("twilio", "evt_1"))
        .exec(db)
        .await
        .unwrap();
}

/// Events written before the dispatcher existed are history: the migration
/// that adds routing marks them routed, so upgrading does not book parcels
/// for old orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrading_marks_existing_events_as_already_routed() {
    use kedai_migrations::{Migrator, MigratorTrait};
    let database = crate::helpers::TestDatabase::create(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let settings = crate::helpers::settings(&database, &[]);
    let db = kedai::platform::db::connect(&settings.database)
        .await
        .unwrap();
    Migrator::up(&db, Some(4)).await.unwrap();
    db.execute_unprepared(
        "INSERT INTO outbox (event_id, event_type, version, payload, occurred_at) \
         VALUES ('old-1', 'order.paid', 1, '{}', '2026-10-01T00:00:00Z')",
    )
    .await
    .unwrap();
    Migrator::up(&db, None).await.unwrap();
    let row = outbox::Entity::find()
        .filter(outbox::Column::EventId.eq("old-1"))
        .one(&db)
        .await
        .unwrap()
        .unwrap();
    assert!(row.routed_at.is_some(), "{row:?}");
    let writer = kedai::platform::db::Writer::new(db.clone());
    let bus = kedai::app::standard_bus(&settings, &writer).unwrap();
    let dispatcher = kedai::events::Dispatcher::new(writer, bus, settings.events.clone());
    assert!(dispatcher.drain().await.unwrap().is_idle());
}
