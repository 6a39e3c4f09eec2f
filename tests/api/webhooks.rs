//! `POST /webhooks/stripe` over HTTP: signatures, exactly-once effects under
//! concurrent deliveries, expiry, refunds, and what bad input gets.

use std::time::Duration;

use kedai::catalog::entity::variant;
use kedai::events::entity::{outbox, processed_event};
use kedai::orders::{self, NewOrder, ShippingAddress};
use kedai::platform::payments::signature;
use kedai::platform::payments::stripe_event::session_completed_body;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::helpers::TestApp;

crate::on_both_databases!(
    unsigned_stale_or_forged_events_are_rejected_and_change_nothing,
    ten_concurrent_signed_deliveries_make_one_paid_order,
    an_expired_session_cancels_and_releases_stock,
    a_refund_marks_the_order_refunded_and_restocks_once,
    unknown_event_types_are_acknowledged,
    oversized_and_malformed_bodies_are_refused,
);

struct Checkout {
    order_id: i64,
    public_id: String,
    session: String,
    variant: variant::Model,
}

async fn checkout(app: &TestApp, quantity: i32) -> Checkout {
    let variant = variant::Entity::find()
        .filter(variant::Column::StockOnHand.gte(10))
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap();
    let placed = orders::place(
        &app.context.writer,
        NewOrder {
            customer_id: None,
            email: "buyer@example.com".into(),
            phone: None,
            whatsapp_opt_in: false,
            address: ShippingAddress {
                name: "Buyer".into(),
                country: "MY".into(),
                ..Default::default()
            },
            lines: vec![(variant.id, quantity)],
            shipping_minor: 0,
            payment_provider: "stripe".into(),
            reservation_ttl: Duration::from_secs(1800),
        },
    )
    .await
    .unwrap();
    let session = format!("cs_test_{}", uuid::Uuid::now_v7().simple());
    orders::attach_payment_session(&app.context.writer, placed.id, &session)
        .await
        .unwrap();
    Checkout {
        order_id: placed.id,
        public_id: placed.public_id,
        session,
        variant,
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn post(app: &TestApp, body: &str, signature: Option<String>) -> reqwest::Response {
    let mut request = app
        .client
        .post(format!("{}/webhooks/stripe", app.address))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    request.send().await.unwrap()
}

fn signed(app: &TestApp, body: &str) -> Option<String> {
    Some(signature::sign(
        app.context.payments.signing_secret().unwrap(),
        now(),
        body.as_bytes(),
    ))
}

async fn status_of(app: &TestApp, order_id: i64) -> String {
    orders::find_by_id(&app.context.db, order_id)
        .await
        .unwrap()
        .unwrap()
        .order
        .status
}

async fn stock(app: &TestApp, id: i64) -> (i32, i32) {
    let v = variant::Entity::find_by_id(id)
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap();
    (v.stock_on_hand, v.reserved)
}

async fn count_outbox(app: &TestApp, event_type: &str) -> u64 {
    outbox::Entity::find()
        .filter(outbox::Column::EventType.eq(event_type))
        .count(&app.context.db)
        .await
        .unwrap()
}

async fn unsigned_stale_or_forged_events_are_rejected_and_change_nothing(app: TestApp) {
    let order = checkout(&app, 1).await;
    let body = session_completed_body("evt_forged", &order.session, &order.public_id, 100, "MYR");
    let secret = app.context.payments.signing_secret().unwrap().clone();
    let wrong = secrecy::SecretString::from("whsec_attacker".to_string());
    let cases = [
        ("missing", None),
        (
            "wrong secret",
            Some(signature::sign(&wrong, now(), body.as_bytes())),
        ),
        (
            "stale",
            Some(signature::sign(&secret, now() - 600, body.as_bytes())),
        ),
        (
            "future",
            Some(signature::sign(&secret, now() + 600, body.as_bytes())),
        ),
        (
            "tampered",
            Some(signature::sign(
                &secret,
                now(),
                body.replace("100", "1").as_bytes(),
            )),
        ),
        ("garbage", Some("t=notanumber,v1=zz".to_string())),
    ];
    for (case, header) in cases {
        let response = post(&app, &body, header).await;
        assert_eq!(response.status(), 400, "{case}");
        let text = response.text().await.unwrap();
        assert!(!text.contains(&order.session), "{case}: no body echo");
    }
    assert_eq!(status_of(&app, order.order_id).await, "pending_payment");
    let claimed = processed_event::Entity::find()
        .count(&app.context.db)
        .await
        .unwrap();
    assert_eq!(claimed, 0, "nothing written");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains(
            "kedai_webhook_rejected_total{source=\"stripe\",reason=\"invalid_signature\"}"
        )
    );
}

async fn ten_concurrent_signed_deliveries_make_one_paid_order(app: TestApp) {
    let order = checkout(&app, 2).await;
    let (on_hand, _) = stock(&app, order.variant.id).await;
    let paid_before = count_outbox(&app, "order.paid").await;
    let body = session_completed_body(
        "evt_concurrent",
        &order.session,
        &order.public_id,
        100,
        "MYR",
    );
    let mut deliveries = Vec::new();
    for _ in 0..10 {
        let request = app
            .client
            .post(format!("{}/webhooks/stripe", app.address))
            .header("Stripe-Signature", signed(&app, &body).unwrap())
            .body(body.clone());
        deliveries.push(tokio::spawn(async move { request.send().await.unwrap() }));
    }
    let mut outcomes = Vec::new();
    for delivery in deliveries {
        let response = delivery.await.unwrap();
        assert_eq!(response.status(), 200, "every delivery is acknowledged");
        let json: serde_json::Value = response.json().await.unwrap();
        outcomes.push(json["outcome"].as_str().unwrap().to_string());
    }
    assert_eq!(
        outcomes.iter().filter(|o| *o == "paid").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        9,
        "{outcomes:?}"
    );
    assert_eq!(status_of(&app, order.order_id).await, "paid");
    assert_eq!(
        stock(&app, order.variant.id).await.0,
        on_hand - 2,
        "one decrement"
    );
    assert_eq!(
        count_outbox(&app, "order.paid").await,
        paid_before + 1,
        "one order.paid"
    );
}

async fn an_expired_session_cancels_and_releases_stock(app: TestApp) {
    let order = checkout(&app, 3).await;
    let (_, reserved) = stock(&app, order.variant.id).await;
    let body = format!(
        r#"{{"id":"evt_exp","type":"checkout.session.expired","data":{{"object":{{"id":"{}","object":"checkout.session"}}}}}}"#,
        order.session
    );
    let response = post(&app, &body, signed(&app, &body)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(status_of(&app, order.order_id).await, "cancelled");
    assert_eq!(stock(&app, order.variant.id).await.1, reserved - 3);
    // A retry of the same event changes nothing more.
    let again: serde_json::Value = post(&app, &body, signed(&app, &body))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["outcome"], "duplicate");
    assert_eq!(stock(&app, order.variant.id).await.1, reserved - 3);
}

async fn a_refund_marks_the_order_refunded_and_restocks_once(app: TestApp) {
    let order = checkout(&app, 2).await;
    let paid = session_completed_body("evt_pay", &order.session, &order.public_id, 100, "MYR");
    assert_eq!(post(&app, &paid, signed(&app, &paid)).await.status(), 200);
    let (after_sale, _) = stock(&app, order.variant.id).await;
    let intent = format!("pi_test_{}", order.session.trim_start_matches("cs_test_"));
    let refund = format!(
        r#"{{"id":"evt_refund","type":"charge.refunded","data":{{"object":{{"id":"ch_1","object":"charge","payment_intent":"{intent}","refunded":true}}}}}}"#
    );
    for _ in 0..3 {
        assert_eq!(
            post(&app, &refund, signed(&app, &refund)).await.status(),
            200
        );
    }
    assert_eq!(status_of(&app, order.order_id).await, "refunded");
    assert_eq!(
        stock(&app, order.variant.id).await.0,
        after_sale + 2,
        "restocked once"
    );
    assert_eq!(count_outbox(&app, "order.refunded").await, 1);
    // A payment arriving for a refunded order changes nothing.
    let late = session_completed_body(
        "evt_pay_again",
        &order.session,
        &order.public_id,
        100,
        "MYR",
    );
    let json: serde_json::Value = post(&app, &late, signed(&app, &late))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(json["outcome"], "ignored");
}

async fn unknown_event_types_are_acknowledged(app: TestApp) {
    let body = r#"{"id":"evt_other","type":"customer.created","data":{"object":{"id":"cus_1"}}}"#;
    let response = post(&app, body, signed(&app, body)).await;
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["outcome"], "ignored");
}

async fn oversized_and_malformed_bodies_are_refused(app: TestApp) {
    let huge = format!(
        r#"{{"id":"evt_big","type":"x","pad":"{}"}}"#,
        "a".repeat(400 * 1024)
    );
    let response = post(&app, &huge, signed(&app, &huge)).await;
    assert_eq!(response.status(), 413);
    let broken = r#"{"id":"evt_broken","type":"checkout.session.completed","data":{"object":{}}}"#;
    let response = post(&app, broken, signed(&app, broken)).await;
    assert_eq!(response.status(), 400);
    let json: serde_json::Value = response.json().await.unwrap();
    assert_eq!(json["error"], "malformed_event");
    assert_eq!(
        processed_event::Entity::find()
            .count(&app.context.db)
            .await
            .unwrap(),
        0
    );
}
