//! Shipment queries. Each change writes its outbox event in the same
//! transaction.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QuerySelect, QueryTrait,
};
use serde_json::json;
use time::OffsetDateTime;

use super::model::ShipmentStatus;
use crate::events::{self, types};
use crate::orders::entity::{order, shipment};
use crate::orders::{self, EventKey};
use crate::platform::carrier::BookedShipment;
use crate::platform::db::Writer;

/// The event payload for a shipment: enough for a notification without
/// reading the order back.
fn payload(
    order: &order::Model,
    shipment: &shipment::Model,
    previous: Option<ShipmentStatus>,
    detail: Option<&str>,
) -> serde_json::Value {
    json!({
        "order_id": order.public_id,
        "customer_id": order.customer_id,
        "name": order.ship_name,
        "phone": order.phone,
        "whatsapp_opt_in": order.whatsapp_opt_in && order.phone.is_some(),
        "carrier": shipment.carrier,
        "status": shipment.status,
        "previous_status": previous.map(ShipmentStatus::as_str),
        "tracking_number": shipment.tracking_number,
        "tracking_url": shipment.tracking_url,
        "detail": detail,
    })
}

pub async fn shipment_for_order<C: ConnectionTrait>(
    db: &C,
    public_id: &str,
) -> Result<Option<(order::Model, Option<shipment::Model>)>, DbErr> {
    let Some(order) = order::Entity::find()
        .filter(order::Column::PublicId.eq(public_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let shipment = shipment::Entity::find()
        .filter(shipment::Column::OrderId.eq(order.id))
        .one(db)
        .await?;
    Ok(Some((order, shipment)))
}

/// Stores a booked shipment once per order, moves the order to
/// `fulfilling` and writes `shipment.created`. False when the order already
/// had a shipment (a redelivered event): nothing is written then.
pub async fn create(
    writer: &Writer,
    order_id: i64,
    carrier: &str,
    booked: &BookedShipment,
) -> Result<bool, DbErr> {
    let (txn, _permit) = writer.begin().await?;
    let now = OffsetDateTime::now_utc();
    let inserted = shipment::Entity::insert(shipment::ActiveModel {
        id: NotSet,
        order_id: Set(order_id),
        carrier: Set(carrier.to_string()),
        tracking_number: Set(booked.tracking_number.clone()),
        tracking_url: Set(booked.tracking_url.clone()),
        label_url: Set(booked.label_url.clone()),
        status: Set(ShipmentStatus::Pending.as_str().to_string()),
        created_at: Set(now),
        updated_at: Set(now),
        shipped_at: Set(None),
        delivered_at: Set(None),
        carrier_ref: Set(booked.carrier_ref.clone()),
    })
    .on_conflict(
        OnConflict::column(shipment::Column::OrderId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&txn)
    .await?;
    if inserted == 0 {
        txn.rollback().await?;
        return Ok(false);
    }
    let order = order::Entity::find_by_id(order_id)
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("order {order_id}")))?;
    let row = shipment::Entity::find()
        .filter(shipment::Column::OrderId.eq(order_id))
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("shipment vanished".into()))?;
    orders::advance_fulfilment(
        &txn,
        order_id,
        orders::OrderStatus::Fulfilling,
        "shipment booked",
    )
    .await?;
    events::append(
        &txn,
        types::SHIPMENT_CREATED,
        payload(&order, &row, None, None),
    )
    .await?;
    txn.commit().await?;
    writer.outbox_committed();
    Ok(true)
}

/// How a status change request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MarkOutcome {
    Changed {
        from: ShipmentStatus,
        to: ShipmentStatus,
    },
    /// Already there or further along (late, repeated or out-of-order
    /// notices); nothing written.
    Unchanged {
        current: String,
    },
    /// The carrier notice was processed before.
    Duplicate,
    NoShipment,
}

/// Which shipment a change is for.
#[derive(Debug, Clone)]
pub enum ShipmentRef<'a> {
    Order(&'a str),
    Tracking(&'a str),
}

/// Moves a shipment forward, stamps its dates, moves the order along and
/// writes `shipment.status_changed`, in one transaction.
pub async fn mark(
    writer: &Writer,
    which: ShipmentRef<'_>,
    to: ShipmentStatus,
    tracking_number: Option<&str>,
    detail: Option<&str>,
    notice: Option<&EventKey>,
) -> Result<MarkOutcome, DbErr> {
    let (txn, _permit) = writer.begin().await?;
    // Write first, so SQLite takes its write lock (waiting up to
    // busy_timeout) before anything is read: `kedai shipments mark` runs in
    // its own process next to the server.
    let target = match which {
        ShipmentRef::Order(public_id) => shipment::Column::OrderId.in_subquery(
            order::Entity::find()
                .select_only()
                .column(order::Column::Id)
                .filter(order::Column::PublicId.eq(public_id))
                .into_query(),
        ),
        ShipmentRef::Tracking(number) => shipment::Column::TrackingNumber.eq(number),
    };
    shipment::Entity::update_many()
        .col_expr(
            shipment::Column::UpdatedAt,
            Expr::col(shipment::Column::UpdatedAt),
        )
        .filter(target)
        .exec(&txn)
        .await?;
    if let Some(key) = notice
        && !events::claim(&txn, &key.source, &key.event_id).await?
    {
        txn.rollback().await?;
        return Ok(MarkOutcome::Duplicate);
    }
    let found = match which {
        ShipmentRef::Order(public_id) => shipment_for_order(&txn, public_id)
            .await?
            .and_then(|(o, s)| Some((o, s?))),
        ShipmentRef::Tracking(number) => {
            match shipment::Entity::find()
                .filter(shipment::Column::TrackingNumber.eq(number))
                .one(&txn)
                .await?
            {
                Some(s) => order::Entity::find_by_id(s.order_id)
                    .one(&txn)
                    .await?
                    .map(|o| (o, s)),
                None => None,
            }
        }
    };
    let Some((order, current)) = found else {
        // Not booked yet (or never): forget the notice id, so the carrier's
        // retry is applied once the shipment exists.
        txn.rollback().await?;
        return Ok(MarkOutcome::NoShipment);
    };
    let Some(from) = ShipmentStatus::parse(&current.status) else {
        txn.commit().await?;
        return Ok(MarkOutcome::Unchanged {
            current: current.status,
        });
    };
    if !from.can_become(to) {
        txn.commit().await?;
        return Ok(MarkOutcome::Unchanged {
            current: current.status,
        });
    }
    let now = OffsetDateTime::now_utc();
    let mut update = shipment::Entity::update_many()
        .col_expr(shipment::Column::Status, Expr::value(to.as_str()))
        .col_expr(shipment::Column::UpdatedAt, Expr::value(now));
    if current.shipped_at.is_none()
        && matches!(
            to,
            ShipmentStatus::InTransit | ShipmentStatus::OutForDelivery | ShipmentStatus::Delivered
        )
    {
        update = update.col_expr(shipment::Column::ShippedAt, Expr::value(now));
    }
    if to == ShipmentStatus::Delivered {
        update = update.col_expr(shipment::Column::DeliveredAt, Expr::value(now));
    }
    if let Some(number) = tracking_number.filter(|n| !n.trim().is_empty()) {
        update = update.col_expr(
            shipment::Column::TrackingNumber,
            Expr::value(number.trim().to_string()),
        );
    }
    let won = update
        .filter(shipment::Column::Id.eq(current.id))
        .filter(shipment::Column::Status.eq(from.as_str()))
        .exec(&txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        txn.rollback().await?;
        return Ok(MarkOutcome::Unchanged {
            current: current.status,
        });
    }
    let row = shipment::Entity::find_by_id(current.id)
        .one(&txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound("shipment vanished".into()))?;
    if let Some(order_status) = to.order_status() {
        let note = format!("shipment {}", to.as_str().replace('_', " "));
        orders::advance_fulfilment(&txn, order.id, order_status, &note).await?;
    }
    events::append(
        &txn,
        types::SHIPMENT_STATUS_CHANGED,
        payload(&order, &row, Some(from), detail),
    )
    .await?;
    txn.commit().await?;
    writer.outbox_committed();
    Ok(MarkOutcome::Changed { from, to })
}
