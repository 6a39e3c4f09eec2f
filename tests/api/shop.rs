//! Shop fixtures shared by the event tests: paid orders made through the
//! real order transactions (so `order.paid` is written exactly as in
//! production).

use std::time::Duration;

use kedai::catalog::entity::variant;
use kedai::events::{self, DeliveryFilter, DeliveryView};
use kedai::orders::entity::shipment;
use kedai::orders::{self, FulfilOutcome, NewOrder, PaymentConfirmation, ShippingAddress};
use kedai::platform::db::Writer;
use kedai::platform::messaging::{self, OutboundMessage};

use crate::helpers::TestApp;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

/// Who buys, and whether they asked for WhatsApp updates.
#[derive(Debug, Clone)]
pub struct Buyer {
    pub phone: Option<String>,
    pub whatsapp_opt_in: bool,
    /// The signed-in account, if any.
    pub customer_id: Option<i64>,
}

impl Buyer {
    pub fn opted_in(phone: &str) -> Buyer {
        Buyer {
            phone: Some(phone.to_string()),
            whatsapp_opt_in: true,
            customer_id: None,
        }
    }

    pub fn silent() -> Buyer {
        Buyer {
            phone: None,
            whatsapp_opt_in: false,
            customer_id: None,
        }
    }
}

/// An order of `quantity` units of a well-stocked variant, placed and
/// waiting for payment: (public id, payment session).
pub async fn unpaid_order(writer: &Writer, buyer: &Buyer, quantity: i32) -> (String, String) {
    let variant = variant::Entity::find()
        .filter(variant::Column::StockOnHand.gte(quantity + 50))
        .one(&writer.db)
        .await
        .unwrap()
        .expect("the demo has well-stocked variants");
    let placed = orders::place(
        writer,
        NewOrder {
            customer_id: buyer.customer_id,
            email: "buyer@example.com".into(),
            phone: buyer.phone.clone(),
            whatsapp_opt_in: buyer.whatsapp_opt_in,
            address: ShippingAddress {
                name: "Nurul Huda".into(),
                line1: "3 Lorong Bunga".into(),
                line2: String::new(),
                city: "George Town".into(),
                postcode: "10200".into(),
                state: "Penang".into(),
                country: "MY".into(),
            },
            lines: vec![(variant.id, quantity)],
            shipping_minor: 800,
            payment_provider: "test".into(),
            reservation_ttl: Duration::from_secs(1800),
        },
    )
    .await
    .unwrap();
    let session = format!("cs_test_{}", placed.public_id);
    assert!(
        orders::attach_payment_session(writer, placed.id, &session)
            .await
            .unwrap()
    );
    (placed.public_id, session)
}

/// A paid order of `quantity` units of a well-stocked variant; returns its
/// public id. Writes `order.paid` to the outbox, nothing more.
pub async fn paid_order(writer: &Writer, buyer: &Buyer, quantity: i32) -> String {
    let (public_id, session) = unpaid_order(writer, buyer, quantity).await;
    let outcome = orders::fulfil(
        writer,
        &PaymentConfirmation {
            source: "stripe".into(),
            event_id: Some(format!("evt_{public_id}")),
            session_id: session,
            payment_intent_id: Some(format!("pi_{public_id}")),
        },
    )
    .await
    .unwrap();
    assert!(matches!(outcome, FulfilOutcome::Paid { .. }), "{outcome:?}");
    public_id
}

// Reading what the bus did, for the event tests.

pub async fn deliveries_of(app: &TestApp, handler: &str) -> Vec<DeliveryView> {
    events::list_deliveries(
        &app.context.db,
        &DeliveryFilter {
            handler: Some(handler.into()),
            status: None,
            limit: 100,
        },
    )
    .await
    .unwrap()
}

pub async fn messages_to(app: &TestApp, phone: &str) -> Vec<OutboundMessage> {
    messaging::list(&app.context.db, Some(phone), 100)
        .await
        .unwrap()
}

/// The order number a shopper sees, as on the order page (the id's first eight characters).
pub fn order_number(public_id: &str) -> String {
    public_id.chars().take(8).collect()
}

pub async fn drain(app: &TestApp) -> kedai::events::DispatchStep {
    app.context.dispatcher.drain().await.unwrap()
}

pub async fn shipments_of(app: &TestApp, public_id: &str) -> Vec<shipment::Model> {
    let order = orders::find_by_public_id(&app.context.db, public_id)
        .await
        .unwrap()
        .expect("the order exists")
        .order;
    shipment::Entity::find()
        .filter(shipment::Column::OrderId.eq(order.id))
        .all(&app.context.db)
        .await
        .unwrap()
}
