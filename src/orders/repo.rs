//! Order queries and the transactions that move an order through its life.
//! The only place that touches the order entities.
//!
//! Every transition is one transaction that also writes the status history
//! row and the outbox event, and every write transaction starts with a
//! write, so SQLite takes its write lock (waiting up to `busy_timeout`)
//! before it reads anything it relies on.

use std::collections::HashMap;
use std::time::Duration;

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use serde_json::json;
use time::OffsetDateTime;

use super::entity::{order, order_line, order_status_change, shipment};
use super::model::OrderStatus;
use crate::catalog::stock;
use crate::events;
use crate::platform::db::Writer;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShippingAddress {
    pub name: String,
    pub line1: String,
    pub line2: String,
    pub city: String,
    pub postcode: String,
    pub state: String,
    pub country: String,
}

#[derive(Debug, Clone)]
pub struct NewOrder {
    pub customer_id: Option<i64>,
    pub email: String,
    pub phone: Option<String>,
    /// The buyer asked for order updates on WhatsApp (needs a phone).
    pub whatsapp_opt_in: bool,
    pub address: ShippingAddress,
    /// (variant id, quantity); a variant may appear once.
    pub lines: Vec<(i64, i32)>,
    pub shipping_minor: i64,
    pub payment_provider: String,
    /// How long the stock stays reserved while the shopper pays.
    pub reservation_ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacedOrder {
    pub id: i64,
    pub public_id: String,
    pub currency: String,
    pub total_minor: i64,
    pub reservation_expires_at: OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum PlaceOrderError {
    #[error("the order has no lines")]
    Empty,
    #[error("a quantity must be between 1 and 99")]
    BadQuantity,
    #[error("a product in the cart is no longer sold")]
    UnknownVariant(i64),
    #[error("only {available} of {sku} left")]
    OutOfStock { sku: String, available: i32 },
    #[error("the cart mixes currencies")]
    MixedCurrencies,
    #[error(transparent)]
    Database(#[from] DbErr),
}

/// Creates a `pending_payment` order, pricing every line from the database
/// and reserving its stock, all in one transaction: either every line is
/// reserved or nothing is.
pub async fn place(db: &Writer, new: NewOrder) -> Result<PlacedOrder, PlaceOrderError> {
    if new.lines.is_empty() {
        return Err(PlaceOrderError::Empty);
    }
    if new.lines.iter().any(|(_, q)| !(1..=99).contains(q)) {
        return Err(PlaceOrderError::BadQuantity);
    }
    let (txn, _permit) = db.begin().await?;
    // Reserve first: the first statement writes, which takes SQLite's lock.
    let ids: Vec<i64> = new.lines.iter().map(|(id, _)| *id).collect();
    for (variant_id, quantity) in &new.lines {
        if !stock::reserve_stock(&txn, *variant_id, *quantity).await? {
            let variants = stock::variants_for_sale(&txn, &[*variant_id]).await?;
            txn.rollback().await?;
            return Err(match variants.into_iter().next() {
                Some(v) => PlaceOrderError::OutOfStock {
                    sku: v.sku,
                    available: v.available.max(0),
                },
                None => PlaceOrderError::UnknownVariant(*variant_id),
            });
        }
    }
    let variants: HashMap<i64, stock::VariantForSale> = stock::variants_for_sale(&txn, &ids)
        .await?
        .into_iter()
        .map(|v| (v.id, v))
        .collect();
    let mut currency: Option<String> = None;
    let mut lines = Vec::with_capacity(new.lines.len());
    for (variant_id, quantity) in &new.lines {
        let Some(variant) = variants.get(variant_id) else {
            txn.rollback().await?;
            return Err(PlaceOrderError::UnknownVariant(*variant_id));
        };
        if currency.get_or_insert_with(|| variant.currency.clone()) != &variant.currency {
            txn.rollback().await?;
            return Err(PlaceOrderError::MixedCurrencies);
        }
        lines.push((variant, *quantity));
    }
    let subtotal: i64 = lines
        .iter()
        .map(|(v, q)| v.price_minor * i64::from(*q))
        .sum();
    let total = subtotal + new.shipping_minor;
    let now = OffsetDateTime::now_utc();
    let expires = now + new.reservation_ttl;
    let public_id = uuid::Uuid::new_v4().to_string();
    let currency = currency.unwrap_or_else(|| "MYR".to_string());
    let order_id = order::Entity::insert(order::ActiveModel {
        id: NotSet,
        public_id: Set(public_id.clone()),
        customer_id: Set(new.customer_id),
        email: Set(new.email),
        whatsapp_opt_in: Set(new.whatsapp_opt_in && new.phone.is_some()),
        phone: Set(new.phone),
        status: Set(OrderStatus::PendingPayment.as_str().to_string()),
        currency: Set(currency.clone()),
        subtotal_minor: Set(subtotal),
        shipping_minor: Set(new.shipping_minor),
        total_minor: Set(total),
        payment_provider: Set(new.payment_provider),
        payment_session_id: Set(None),
        payment_intent_id: Set(None),
        needs_attention: Set(false),
        attention_reason: Set(None),
        ship_name: Set(new.address.name),
        ship_line1: Set(new.address.line1),
        ship_line2: Set(new.address.line2),
        ship_city: Set(new.address.city),
        ship_postcode: Set(new.address.postcode),
        ship_state: Set(new.address.state),
        ship_country: Set(new.address.country),
        reservation_expires_at: Set(Some(expires)),
        paid_at: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .exec(&txn)
    .await?
    .last_insert_id;
    let rows = lines
        .iter()
        .map(|(variant, quantity)| order_line::ActiveModel {
            id: NotSet,
            order_id: Set(order_id),
            variant_id: Set(Some(variant.id)),
            product_name: Set(variant.product_name.clone()),
            variant_title: Set(variant.title.clone()),
            sku: Set(variant.sku.clone()),
            unit_price_minor: Set(variant.price_minor),
            quantity: Set(*quantity),
            line_total_minor: Set(variant.price_minor * i64::from(*quantity)),
        });
    order_line::Entity::insert_many(rows)
        .exec_without_returning(&txn)
        .await?;
    record_change(
        &txn,
        order_id,
        None,
        OrderStatus::PendingPayment,
        "checkout started",
    )
    .await?;
    txn.commit().await?;
    Ok(PlacedOrder {
        id: order_id,
        public_id,
        currency,
        total_minor: total,
        reservation_expires_at: expires,
    })
}

/// Links the provider's payment session (Stripe Checkout session id) to the order.
pub async fn attach_payment_session(
    db: &Writer,
    order_id: i64,
    session_id: &str,
) -> Result<bool, DbErr> {
    let _permit = db.permit().await;
    let result = order::Entity::update_many()
        .col_expr(order::Column::PaymentSessionId, Expr::value(session_id))
        .col_expr(
            order::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(order::Column::Id.eq(order_id))
        .filter(order::Column::PaymentSessionId.is_null())
        .exec(&db.db)
        .await?;
    Ok(result.rows_affected == 1)
}

/// A provider's word that a payment succeeded.
#[derive(Debug, Clone)]
pub struct PaymentConfirmation {
    /// `stripe`; the idempotency namespace of `event_id`.
    pub source: String,
    /// The provider's event id; `None` when the success page confirms it.
    pub event_id: Option<String>,
    pub session_id: String,
    pub payment_intent_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FulfilOutcome {
    /// This call made the order paid.
    Paid {
        order_id: i64,
        needs_attention: bool,
    },
    /// The event id was processed before.
    DuplicateEvent,
    /// The order was already paid (the webhook and the success page raced).
    AlreadyPaid { order_id: i64 },
    /// No order has this payment session.
    UnknownSession,
    /// The order is in a state a payment cannot change (refunded).
    Ignored { order_id: i64, status: String },
}

/// Makes the order of a payment session paid, exactly once, however many
/// times and however concurrently it is called: in one transaction it
/// claims the event id, moves the order to `paid` with a conditional update
/// (only one caller can win it), turns reservations into stock decrements,
/// and writes `order.paid` to the outbox. When the reservation had already
/// been released and the stock is gone, the order is still paid but flagged
/// `needs_attention`, with an `order.needs_attention` event.
pub async fn fulfil(db: &Writer, payment: &PaymentConfirmation) -> Result<FulfilOutcome, DbErr> {
    let (txn, _permit) = db.begin().await?;
    let key = payment.event_id.as_ref().map(|event_id| EventKey {
        source: payment.source.clone(),
        event_id: event_id.clone(),
    });
    if !claim(&txn, key.as_ref()).await? {
        txn.rollback().await?;
        return Ok(FulfilOutcome::DuplicateEvent);
    }
    let payable = [
        OrderStatus::PendingPayment,
        OrderStatus::PaymentFailed,
        OrderStatus::Cancelled,
    ]
    .map(|s| s.as_str());
    let now = OffsetDateTime::now_utc();
    let won = order::Entity::update_many()
        .col_expr(
            order::Column::Status,
            Expr::value(OrderStatus::Paid.as_str()),
        )
        .col_expr(order::Column::PaidAt, Expr::value(now))
        .col_expr(order::Column::UpdatedAt, Expr::value(now))
        .col_expr(
            order::Column::PaymentIntentId,
            Expr::value(payment.payment_intent_id.clone()),
        )
        .filter(order::Column::PaymentSessionId.eq(payment.session_id.as_str()))
        .filter(order::Column::Status.is_in(payable))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    let Some(order) = order::Entity::find()
        .filter(order::Column::PaymentSessionId.eq(payment.session_id.as_str()))
        .one(&txn)
        .await?
    else {
        // Keep the claimed event id: an unknown session stays unknown.
        txn.commit().await?;
        return Ok(FulfilOutcome::UnknownSession);
    };
    if !won {
        txn.commit().await?;
        let status: OrderStatus = order.status.parse().unwrap_or(OrderStatus::Refunded);
        return Ok(if status.is_paid() {
            FulfilOutcome::AlreadyPaid { order_id: order.id }
        } else {
            FulfilOutcome::Ignored {
                order_id: order.id,
                status: order.status,
            }
        });
    }
    let previous: OrderStatus = order_status_before_paid(&txn, order.id).await?;
    // A reservation is held while the order waited for payment and the
    // sweeper has not released it.
    let reservation_held = order.reservation_expires_at.is_some();
    let lines = order_line::Entity::find()
        .filter(order_line::Column::OrderId.eq(order.id))
        .all(&txn)
        .await?;
    let mut short = Vec::new();
    for line in &lines {
        let Some(variant_id) = line.variant_id else {
            short.push(line.sku.clone());
            continue;
        };
        let taken = if reservation_held {
            stock::take_reserved_stock(&txn, variant_id, line.quantity, order.id).await?
        } else {
            stock::take_unreserved_stock(&txn, variant_id, line.quantity, order.id).await?
        };
        if !taken {
            short.push(line.sku.clone());
        }
    }
    let needs_attention = !short.is_empty();
    let mut update = order::Entity::update_many()
        .col_expr(
            order::Column::ReservationExpiresAt,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .filter(order::Column::Id.eq(order.id));
    if needs_attention {
        let reason = format!("paid, but stock ran out for {}", short.join(", "));
        update = update
            .col_expr(order::Column::NeedsAttention, Expr::value(true))
            .col_expr(order::Column::AttentionReason, Expr::value(reason));
    }
    update.exec(&txn).await?;
    let note = if previous == OrderStatus::Cancelled {
        "late payment received"
    } else {
        "payment received"
    };
    record_change(&txn, order.id, Some(previous), OrderStatus::Paid, note).await?;
    let variant_ids: Vec<i64> = lines.iter().filter_map(|l| l.variant_id).collect();
    let categories = stock::variant_categories(&txn, &variant_ids).await?;
    let payload = order_payload(&order, &lines, &categories);
    events::append(&txn, events::types::ORDER_PAID, payload.clone()).await?;
    if needs_attention {
        events::append(
            &txn,
            events::types::ORDER_NEEDS_ATTENTION,
            json!({ "order_id": order.public_id, "reason": "out_of_stock", "skus": short }),
        )
        .await?;
    }
    txn.commit().await?;
    db.outbox_committed();
    if needs_attention {
        tracing::warn!(
            order_id = order.id,
            "paid order needs attention: stock ran out"
        );
    }
    Ok(FulfilOutcome::Paid {
        order_id: order.id,
        needs_attention,
    })
}

/// The status an order had before the `paid` update in this transaction:
/// the latest history row.
async fn order_status_before_paid<C: ConnectionTrait>(
    db: &C,
    order_id: i64,
) -> Result<OrderStatus, DbErr> {
    let last = order_status_change::Entity::find()
        .filter(order_status_change::Column::OrderId.eq(order_id))
        .order_by_desc(order_status_change::Column::Id)
        .one(db)
        .await?;
    Ok(last
        .and_then(|row| row.to_status.parse().ok())
        .unwrap_or(OrderStatus::PendingPayment))
}

/// A provider event's identity, claimed once in the transaction it causes.
#[derive(Debug, Clone)]
pub struct EventKey {
    pub source: String,
    pub event_id: String,
}

/// Claims the event in the transaction; false when it was processed
/// before. Transitions without an event (the success page, the sweeper)
/// always proceed and rely on their conditional updates alone.
async fn claim<C: ConnectionTrait>(db: &C, event: Option<&EventKey>) -> Result<bool, DbErr> {
    match event {
        Some(key) => events::claim(db, &key.source, &key.event_id).await,
        None => Ok(true),
    }
}

/// Result of an event-driven transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// This call changed the order.
    Applied,
    /// The event id was processed before.
    DuplicateEvent,
    /// The order was not in a state this transition applies to (or unknown).
    NotApplicable,
}

/// Cancels the order of an expired or abandoned payment session and gives
/// its reservation back. Idempotent; a paid order is left alone.
pub async fn cancel_unpaid(
    db: &Writer,
    event: Option<&EventKey>,
    session_id: &str,
    reason: &str,
) -> Result<Transition, DbErr> {
    close_unpaid(db, event, session_id, OrderStatus::Cancelled, reason).await
}

/// Records that a delayed payment method failed; the reservation is given
/// back. A later successful payment for the same session is still honoured.
pub async fn mark_payment_failed(
    db: &Writer,
    event: Option<&EventKey>,
    session_id: &str,
) -> Result<Transition, DbErr> {
    close_unpaid(
        db,
        event,
        session_id,
        OrderStatus::PaymentFailed,
        "payment failed",
    )
    .await
}

async fn close_unpaid(
    db: &Writer,
    event: Option<&EventKey>,
    session_id: &str,
    to: OrderStatus,
    reason: &str,
) -> Result<Transition, DbErr> {
    let (txn, _permit) = db.begin().await?;
    if !claim(&txn, event).await? {
        txn.rollback().await?;
        return Ok(Transition::DuplicateEvent);
    }
    let now = OffsetDateTime::now_utc();
    let from: Vec<&str> = [OrderStatus::PendingPayment, OrderStatus::PaymentFailed]
        .into_iter()
        .filter(|s| s.can_become(to))
        .map(|s| s.as_str())
        .collect();
    let won = order::Entity::update_many()
        .col_expr(order::Column::Status, Expr::value(to.as_str()))
        .col_expr(order::Column::UpdatedAt, Expr::value(now))
        .filter(order::Column::PaymentSessionId.eq(session_id))
        .filter(order::Column::Status.is_in(from))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        txn.commit().await?;
        return Ok(Transition::NotApplicable);
    }
    let order = order::Entity::find()
        .filter(order::Column::PaymentSessionId.eq(session_id))
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("order vanished inside its transaction".into()))?;
    release_reservation(&txn, &order).await?;
    let previous = order_status_before_paid(&txn, order.id).await?;
    record_change(&txn, order.id, Some(previous), to, reason).await?;
    if to == OrderStatus::Cancelled {
        events::append(
            &txn,
            events::types::ORDER_CANCELLED,
            json!({ "order_id": order.public_id, "reason": reason }),
        )
        .await?;
    }
    txn.commit().await?;
    db.outbox_committed();
    Ok(Transition::Applied)
}

/// Marks a paid order refunded (a full refund), putting its units back on
/// the shelf when `restock` is set, and writes `order.refunded`.
pub async fn refund(
    db: &Writer,
    event: Option<&EventKey>,
    payment_intent_id: &str,
    restock: bool,
) -> Result<Transition, DbErr> {
    let (txn, _permit) = db.begin().await?;
    if !claim(&txn, event).await? {
        txn.rollback().await?;
        return Ok(Transition::DuplicateEvent);
    }
    let refundable: Vec<&str> = OrderStatus::ALL
        .into_iter()
        .filter(|s| s.can_become(OrderStatus::Refunded))
        .map(|s| s.as_str())
        .collect();
    let now = OffsetDateTime::now_utc();
    let won = order::Entity::update_many()
        .col_expr(
            order::Column::Status,
            Expr::value(OrderStatus::Refunded.as_str()),
        )
        .col_expr(order::Column::UpdatedAt, Expr::value(now))
        .filter(order::Column::PaymentIntentId.eq(payment_intent_id))
        .filter(order::Column::Status.is_in(refundable))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        txn.commit().await?;
        return Ok(Transition::NotApplicable);
    }
    let order = order::Entity::find()
        .filter(order::Column::PaymentIntentId.eq(payment_intent_id))
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("order vanished inside its transaction".into()))?;
    let lines = order_line::Entity::find()
        .filter(order_line::Column::OrderId.eq(order.id))
        .all(&txn)
        .await?;
    if restock {
        for line in &lines {
            if let Some(variant_id) = line.variant_id {
                stock::restock(&txn, variant_id, line.quantity, order.id).await?;
            }
        }
    }
    let previous = order_status_before_paid(&txn, order.id).await?;
    let note = if restock {
        "refunded; items restocked"
    } else {
        "refunded"
    };
    record_change(&txn, order.id, Some(previous), OrderStatus::Refunded, note).await?;
    events::append(
        &txn,
        events::types::ORDER_REFUNDED,
        json!({ "order_id": order.public_id, "currency": order.currency, "total_minor": order.total_minor, "restocked": restock }),
    )
    .await?;
    txn.commit().await?;
    db.outbox_committed();
    Ok(Transition::Applied)
}

/// Moves a paid order along fulfilment (`fulfilling` → `shipped` →
/// `delivered`) as its shipment progresses, in the caller's transaction,
/// recording every step (one skipped by the carrier too). Orders that are
/// not on that path (refunded) or already further along are left alone.
/// Returns whether the order changed.
pub async fn advance_fulfilment<C: ConnectionTrait>(
    db: &C,
    order_id: i64,
    to: OrderStatus,
    note: &str,
) -> Result<bool, DbErr> {
    use OrderStatus::*;
    const PATH: [OrderStatus; 4] = [Paid, Fulfilling, Shipped, Delivered];
    let Some(target) = PATH.iter().position(|s| *s == to) else {
        return Ok(false);
    };
    let Some(order) = order::Entity::find_by_id(order_id).one(db).await? else {
        return Ok(false);
    };
    let Some(mut at) = order
        .status
        .parse::<OrderStatus>()
        .ok()
        .and_then(|current| PATH.iter().position(|s| *s == current))
    else {
        return Ok(false);
    };
    let mut changed = false;
    while at < target {
        let from = PATH[at];
        let next = if from.can_become(to) {
            to
        } else {
            PATH[at + 1]
        };
        let won = order::Entity::update_many()
            .col_expr(order::Column::Status, Expr::value(next.as_str()))
            .col_expr(
                order::Column::UpdatedAt,
                Expr::value(OffsetDateTime::now_utc()),
            )
            .filter(order::Column::Id.eq(order_id))
            .filter(order::Column::Status.eq(from.as_str()))
            .exec(db)
            .await?
            .rows_affected
            == 1;
        if !won {
            break;
        }
        record_change(db, order_id, Some(from), next, note).await?;
        changed = true;
        at = PATH.iter().position(|s| *s == next).unwrap_or(target);
    }
    Ok(changed)
}

/// Gives back the stock an unpaid order holds, once.
async fn release_reservation<C: ConnectionTrait>(
    db: &C,
    order: &order::Model,
) -> Result<(), DbErr> {
    if order.reservation_expires_at.is_none() {
        return Ok(());
    }
    let lines = order_line::Entity::find()
        .filter(order_line::Column::OrderId.eq(order.id))
        .all(db)
        .await?;
    for line in lines {
        if let Some(variant_id) = line.variant_id {
            stock::release_stock(db, variant_id, line.quantity).await?;
        }
    }
    order::Entity::update_many()
        .col_expr(
            order::Column::ReservationExpiresAt,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .filter(order::Column::Id.eq(order.id))
        .exec(db)
        .await?;
    Ok(())
}

/// One step of the reservation sweeper: cancels unpaid orders whose
/// reservation expired before `now`, oldest first, at most `limit`.
/// Returns how many it cancelled.
pub async fn sweep_expired(db: &Writer, now: OffsetDateTime, limit: u64) -> Result<usize, DbErr> {
    use sea_orm::QuerySelect;
    let expired: Vec<(i64, Option<String>)> = order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .column(order::Column::PaymentSessionId)
        .filter(order::Column::Status.eq(OrderStatus::PendingPayment.as_str()))
        .filter(order::Column::ReservationExpiresAt.lt(now))
        .order_by_asc(order::Column::ReservationExpiresAt)
        .limit(limit)
        .into_tuple()
        .all(&db.db)
        .await?;
    let mut cancelled = 0;
    for (order_id, session) in expired {
        let session = match session {
            Some(session) => session,
            // Never reached a payment page: give it a session key to cancel by.
            None => {
                let key = format!("unpaid-{order_id}");
                attach_payment_session(db, order_id, &key).await?;
                key
            }
        };
        if cancel_unpaid(db, None, &session, "payment window expired").await? == Transition::Applied
        {
            cancelled += 1;
        }
    }
    Ok(cancelled)
}

async fn record_change<C: ConnectionTrait>(
    db: &C,
    order_id: i64,
    from: Option<OrderStatus>,
    to: OrderStatus,
    note: &str,
) -> Result<(), DbErr> {
    order_status_change::Entity::insert(order_status_change::ActiveModel {
        id: NotSet,
        order_id: Set(order_id),
        from_status: Set(from.map(|s| s.as_str().to_string())),
        to_status: Set(to.as_str().to_string()),
        note: Set(note.to_string()),
        created_at: Set(OffsetDateTime::now_utc()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(())
}

/// What `order.paid` carries: enough for notifications, logistics and
/// analytics to act without reading the order back.
fn order_payload(
    order: &order::Model,
    lines: &[order_line::Model],
    categories: &HashMap<i64, String>,
) -> serde_json::Value {
    json!({
        "order_id": order.public_id,
        "customer_id": order.customer_id,
        "name": order.ship_name,
        "email": order.email,
        "phone": order.phone,
        "whatsapp_opt_in": order.whatsapp_opt_in && order.phone.is_some(),
        "currency": order.currency,
        "subtotal_minor": order.subtotal_minor,
        "shipping_minor": order.shipping_minor,
        "total_minor": order.total_minor,
        "units": lines.iter().map(|l| i64::from(l.quantity)).sum::<i64>(),
        "lines": lines.iter().map(|l| json!({
            "sku": l.sku,
            "product_name": l.product_name,
            "variant_title": l.variant_title,
            "category": l.variant_id.and_then(|id| categories.get(&id)).map(String::as_str).unwrap_or("uncategorised"),
            "quantity": l.quantity,
            "unit_price_minor": l.unit_price_minor,
            "line_total_minor": l.line_total_minor,
        })).collect::<Vec<_>>(),
        "ship_to": {
            "name": order.ship_name,
            "line1": order.ship_line1,
            "line2": order.ship_line2,
            "city": order.ship_city,
            "postcode": order.ship_postcode,
            "state": order.ship_state,
            "country": order.ship_country,
        },
    })
}

/// An order as the shop shows it.
#[derive(Debug, Clone)]
pub struct OrderView {
    pub order: order::Model,
    pub lines: Vec<order_line::Model>,
    pub history: Vec<order_status_change::Model>,
    /// The shipment, once logistics created one.
    pub shipment: Option<shipment::Model>,
}

/// A customer's orders, newest first: one page of them and the total count.
pub async fn list_for_customer(
    db: &DatabaseConnection,
    customer_id: i64,
    page: u64,
    per_page: u64,
) -> Result<(Vec<order::Model>, u64), DbErr> {
    let filter = OrderFilter {
        customer_id: Some(customer_id),
        ..OrderFilter::default()
    };
    list(db, &filter, page, per_page).await
}

/// What the back-office's order list shows.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    /// Only the orders of this account.
    pub customer_id: Option<i64>,
    /// Only orders flagged for a person (stock ran out after payment, …).
    pub needs_attention: bool,
    /// An email address, a WhatsApp number or the start of an order number.
    pub customer: Option<String>,
    /// Placed at or after / before these times.
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

/// Orders matching the filter, newest first: one page and the total count.
pub async fn list(
    db: &DatabaseConnection,
    filter: &OrderFilter,
    page: u64,
    per_page: u64,
) -> Result<(Vec<order::Model>, u64), DbErr> {
    use sea_orm::PaginatorTrait;
    let mut query = order::Entity::find();
    if let Some(status) = filter.status {
        query = query.filter(order::Column::Status.eq(status.as_str()));
    }
    if let Some(customer_id) = filter.customer_id {
        query = query.filter(order::Column::CustomerId.eq(customer_id));
    }
    if filter.needs_attention {
        query = query.filter(order::Column::NeedsAttention.eq(true));
    }
    if let Some(customer) = filter
        .customer
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        query = if let Some(email) = crate::customers::normalise_email(customer) {
            query.filter(order::Column::Email.eq(email))
        } else if let Some(phone) = crate::customers::normalise_phone(customer) {
            query.filter(order::Column::Phone.eq(phone))
        } else {
            // Order numbers are the start of the public id: hex and dashes.
            let prefix: String = customer
                .to_ascii_lowercase()
                .chars()
                .filter(|c| c.is_ascii_hexdigit() || *c == '-')
                .collect();
            query.filter(order::Column::PublicId.starts_with(prefix))
        };
    }
    // Stored times are UTC; SQLite compares them as text.
    if let Some(from) = filter.from {
        query = query.filter(order::Column::CreatedAt.gte(from.to_offset(time::UtcOffset::UTC)));
    }
    if let Some(to) = filter.to {
        query = query.filter(order::Column::CreatedAt.lt(to.to_offset(time::UtcOffset::UTC)));
    }
    let paginator = query
        .order_by_desc(order::Column::CreatedAt)
        .order_by_desc(order::Column::Id)
        .paginate(db, per_page);
    let total = paginator.num_items().await?;
    let orders = paginator.fetch_page(page.saturating_sub(1)).await?;
    Ok((orders, total))
}

/// The public ids of the orders among `ids` (for links from other pages,
/// such as the stock ledger's sales).
pub async fn public_ids(
    db: &DatabaseConnection,
    ids: &[i64],
) -> Result<HashMap<i64, String>, DbErr> {
    use sea_orm::QuerySelect;
    let rows: Vec<(i64, String)> = order::Entity::find()
        .select_only()
        .column(order::Column::Id)
        .column(order::Column::PublicId)
        .filter(order::Column::Id.is_in(ids.iter().copied()))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

/// The order paid through a payment session.
pub async fn find_by_session(
    db: &DatabaseConnection,
    session_id: &str,
) -> Result<Option<OrderView>, DbErr> {
    find_one(db, order::Column::PaymentSessionId.eq(session_id)).await
}

/// The order behind a public id (the id in order links).
pub async fn find_by_public_id(
    db: &DatabaseConnection,
    public_id: &str,
) -> Result<Option<OrderView>, DbErr> {
    find_one(db, order::Column::PublicId.eq(public_id)).await
}

async fn find_one(
    db: &DatabaseConnection,
    condition: sea_orm::sea_query::SimpleExpr,
) -> Result<Option<OrderView>, DbErr> {
    match order::Entity::find().filter(condition).one(db).await? {
        Some(order) => find_by_id(db, order.id).await,
        None => Ok(None),
    }
}

pub async fn find_by_id(
    db: &DatabaseConnection,
    order_id: i64,
) -> Result<Option<OrderView>, DbErr> {
    let Some(order) = order::Entity::find_by_id(order_id).one(db).await? else {
        return Ok(None);
    };
    let lines = order_line::Entity::find()
        .filter(order_line::Column::OrderId.eq(order_id))
        .order_by_asc(order_line::Column::Id)
        .all(db)
        .await?;
    let history = order_status_change::Entity::find()
        .filter(order_status_change::Column::OrderId.eq(order_id))
        .order_by_asc(order_status_change::Column::Id)
        .all(db)
        .await?;
    let shipment = shipment::Entity::find()
        .filter(shipment::Column::OrderId.eq(order_id))
        .one(db)
        .await?;
    Ok(Some(OrderView {
        order,
        lines,
        history,
        shipment,
    }))
}

/// Orders paid at or after a time: how many, and their totals per currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sales {
    pub orders: u64,
    pub revenue_minor: std::collections::BTreeMap<String, i64>,
}

pub async fn sales_since(db: &DatabaseConnection, since: OffsetDateTime) -> Result<Sales, DbErr> {
    use sea_orm::QuerySelect;
    let paid: Vec<(i64, String)> = order::Entity::find()
        .select_only()
        .column(order::Column::TotalMinor)
        .column(order::Column::Currency)
        // Stored times are UTC; SQLite compares them as text.
        .filter(order::Column::PaidAt.gte(since.to_offset(time::UtcOffset::UTC)))
        .into_tuple()
        .all(db)
        .await?;
    let mut sales = Sales {
        orders: paid.len() as u64,
        ..Sales::default()
    };
    for (total, currency) in paid {
        *sales.revenue_minor.entry(currency).or_default() += total;
    }
    Ok(sales)
}

/// Orders flagged for a person.
pub async fn count_needing_attention(db: &DatabaseConnection) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    order::Entity::find()
        .filter(order::Column::NeedsAttention.eq(true))
        .count(db)
        .await
}
