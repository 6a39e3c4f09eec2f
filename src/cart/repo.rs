//! Cart queries; the only place that touches the cart entities.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use time::OffsetDateTime;

use super::entity::{cart, cart_line};
use crate::platform::db::Writer;

/// The (variant id, quantity) lines of the visitor's cart, oldest first.
pub async fn lines(db: &DatabaseConnection, token: &str) -> Result<Vec<(i64, i32)>, DbErr> {
    let Some(cart) = cart::Entity::find()
        .filter(cart::Column::Token.eq(token))
        .one(db)
        .await?
    else {
        return Ok(Vec::new());
    };
    Ok(cart_line::Entity::find()
        .filter(cart_line::Column::CartId.eq(cart.id))
        .order_by_asc(cart_line::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(|line| (line.variant_id, line.quantity))
        .collect())
}

async fn cart_id<C: ConnectionTrait>(db: &C, token: &str) -> Result<i64, DbErr> {
    let now = OffsetDateTime::now_utc();
    cart::Entity::insert(cart::ActiveModel {
        id: NotSet,
        token: Set(token.to_string()),
        customer_id: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(cart::Column::Token)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    cart::Entity::find()
        .filter(cart::Column::Token.eq(token))
        .one(db)
        .await?
        .map(|cart| cart.id)
        .ok_or_else(|| DbErr::RecordNotFound("the cart was just created".into()))
}

/// Sets a line's quantity, creating the cart on first use; 0 removes the line.
pub async fn set_quantity(
    writer: &Writer,
    token: &str,
    variant_id: i64,
    quantity: i32,
) -> Result<(), DbErr> {
    let (txn, _permit) = writer.begin().await?;
    let cart_id = cart_id(&txn, token).await?;
    if quantity <= 0 {
        cart_line::Entity::delete_many()
            .filter(cart_line::Column::CartId.eq(cart_id))
            .filter(cart_line::Column::VariantId.eq(variant_id))
            .exec(&txn)
            .await?;
    } else {
        cart_line::Entity::insert(cart_line::ActiveModel {
            id: NotSet,
            cart_id: Set(cart_id),
            variant_id: Set(variant_id),
            quantity: Set(quantity),
            created_at: Set(OffsetDateTime::now_utc()),
        })
        .on_conflict(
            OnConflict::columns([cart_line::Column::CartId, cart_line::Column::VariantId])
                .update_column(cart_line::Column::Quantity)
                .to_owned(),
        )
        .exec_without_returning(&txn)
        .await?;
    }
    cart::Entity::update_many()
        .col_expr(
            cart::Column::UpdatedAt,
            sea_orm::sea_query::Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(cart::Column::Id.eq(cart_id))
        .exec(&txn)
        .await?;
    txn.commit().await
}

/// Empties the visitor's cart (after a successful payment).
pub async fn clear(writer: &Writer, token: &str) -> Result<(), DbErr> {
    let _permit = writer.permit().await;
    if let Some(cart) = cart::Entity::find()
        .filter(cart::Column::Token.eq(token))
        .one(&writer.db)
        .await?
    {
        cart_line::Entity::delete_many()
            .filter(cart_line::Column::CartId.eq(cart.id))
            .exec(&writer.db)
            .await?;
    }
    Ok(())
}

/// Ties the visitor's cart to a customer on sign-in and folds in the lines
/// of that customer's carts from other browsers (quantities add up, capped
/// at `max_quantity`); those carts are then removed.
pub async fn attach_to_customer(
    writer: &Writer,
    token: &str,
    customer_id: i64,
    max_quantity: i32,
) -> Result<(), DbErr> {
    use std::collections::BTreeMap;

    let (txn, _permit) = writer.begin().await?;
    let cart_id = cart_id(&txn, token).await?;
    let others: Vec<i64> = cart::Entity::find()
        .filter(cart::Column::CustomerId.eq(customer_id))
        .filter(cart::Column::Id.ne(cart_id))
        .all(&txn)
        .await?
        .into_iter()
        .map(|c| c.id)
        .collect();
    if !others.is_empty() {
        let mut quantities: BTreeMap<i64, i32> = BTreeMap::new();
        let lines = cart_line::Entity::find()
            .filter(cart_line::Column::CartId.is_in(others.iter().copied().chain([cart_id])))
            .all(&txn)
            .await?;
        for line in lines {
            *quantities.entry(line.variant_id).or_default() += line.quantity;
        }
        cart_line::Entity::delete_many()
            .filter(cart_line::Column::CartId.eq(cart_id))
            .exec(&txn)
            .await?;
        let now = OffsetDateTime::now_utc();
        let merged: Vec<cart_line::ActiveModel> = quantities
            .into_iter()
            .map(|(variant_id, quantity)| cart_line::ActiveModel {
                id: NotSet,
                cart_id: Set(cart_id),
                variant_id: Set(variant_id),
                quantity: Set(quantity.min(max_quantity)),
                created_at: Set(now),
            })
            .collect();
        if !merged.is_empty() {
            cart_line::Entity::insert_many(merged)
                .exec_without_returning(&txn)
                .await?;
        }
        cart::Entity::delete_many()
            .filter(cart::Column::Id.is_in(others))
            .exec(&txn)
            .await?;
    }
    cart::Entity::update_many()
        .col_expr(
            cart::Column::CustomerId,
            sea_orm::sea_query::Expr::value(customer_id),
        )
        .filter(cart::Column::Id.eq(cart_id))
        .exec(&txn)
        .await?;
    txn.commit().await
}
