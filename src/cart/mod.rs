//! The shopper's cart: lines of variants and quantities, stored in the
//! database under the visitor's token so it survives restarts and works on
//! any replica. Prices and availability come from the catalog snapshot when
//! shown; checkout prices again from the database.

pub mod entity;
mod repo;
pub mod routes;
pub mod views;

use std::sync::Arc;

use sea_orm::{DatabaseConnection, DbErr};

use crate::catalog::{CatalogSnapshot, Money, Product, Variant};
use crate::platform::db::Writer;

/// Most units of one variant in a cart.
pub const MAX_QUANTITY: i32 = 20;

#[derive(Debug, Clone)]
pub struct CartLine {
    pub product: Arc<Product>,
    pub variant: Variant,
    pub quantity: i32,
    pub line_total: Money,
    /// More were asked for than are available now.
    pub over_available: bool,
}

impl CartLine {
    /// Largest quantity the shopper may choose for this line.
    pub fn max_quantity(&self) -> i32 {
        self.variant
            .available
            .clamp(0, MAX_QUANTITY)
            .max(self.quantity.min(MAX_QUANTITY))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Cart {
    pub lines: Vec<CartLine>,
    pub subtotal: Option<Money>,
    pub item_count: i32,
}

impl Cart {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    pub fn has_problems(&self) -> bool {
        self.lines.iter().any(|l| l.over_available)
    }
}

/// What happened to a requested change, for the message the shopper sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartNotice {
    Added,
    Updated,
    Removed,
    /// Fewer than asked were available; the cart holds what there is.
    Limited,
    SoldOut,
    Unknown,
    /// The shopper left the payment page; nothing was charged.
    PaymentCancelled,
}

impl CartNotice {
    pub fn code(self) -> &'static str {
        match self {
            CartNotice::Added => "added",
            CartNotice::Updated => "updated",
            CartNotice::Removed => "removed",
            CartNotice::Limited => "limited",
            CartNotice::SoldOut => "sold_out",
            CartNotice::Unknown => "unknown",
            CartNotice::PaymentCancelled => "payment_cancelled",
        }
    }

    pub fn parse(code: &str) -> Option<CartNotice> {
        [
            CartNotice::Added,
            CartNotice::Updated,
            CartNotice::Removed,
            CartNotice::Limited,
            CartNotice::SoldOut,
            CartNotice::Unknown,
            CartNotice::PaymentCancelled,
        ]
        .into_iter()
        .find(|n| n.code() == code)
    }

    pub fn message(self) -> &'static str {
        match self {
            CartNotice::Added => "Added to your cart.",
            CartNotice::Updated => "Your cart is updated.",
            CartNotice::Removed => "Removed from your cart.",
            CartNotice::Limited => "We don't have that many left, so your cart holds all we have.",
            CartNotice::SoldOut => "Sorry, that option has just sold out.",
            CartNotice::Unknown => "That product is no longer available.",
            CartNotice::PaymentCancelled => {
                "Payment cancelled; nothing was charged. Your cart is as you left it."
            }
        }
    }

    pub fn is_problem(self) -> bool {
        matches!(
            self,
            CartNotice::Limited | CartNotice::SoldOut | CartNotice::Unknown
        )
    }
}

/// The visitor's cart, priced from the snapshot. Lines whose variant is no
/// longer sold are left out.
pub async fn load(
    db: &DatabaseConnection,
    snapshot: &CatalogSnapshot,
    token: &str,
) -> Result<Cart, DbErr> {
    let raw = repo::lines(db, token).await?;
    let mut cart = Cart::default();
    for (variant_id, quantity) in raw {
        let Some((product, variant)) = snapshot.variant(variant_id) else {
            continue;
        };
        let line_total = Money::new(
            variant.price.minor * i64::from(quantity),
            variant.price.currency,
        );
        cart.subtotal = Some(match cart.subtotal {
            Some(sum) => Money::new(sum.minor + line_total.minor, sum.currency),
            None => line_total,
        });
        cart.item_count += quantity;
        cart.lines.push(CartLine {
            product: product.clone(),
            variant: variant.clone(),
            quantity,
            line_total,
            over_available: quantity > variant.available,
        });
    }
    Ok(cart)
}

/// On sign-in: the visitor's cart becomes the customer's, merged with the
/// customer's carts from other browsers.
pub async fn attach_to_customer(
    writer: &Writer,
    token: &str,
    customer_id: i64,
) -> Result<(), DbErr> {
    repo::attach_to_customer(writer, token, customer_id, MAX_QUANTITY).await
}

/// Empties the visitor's cart.
pub async fn clear(writer: &Writer, token: &str) -> Result<(), DbErr> {
    repo::clear(writer, token).await
}

/// Sets the quantity of a variant in the cart (adding to what is there when
/// `add` is set), bounded by what is available and by [`MAX_QUANTITY`].
pub async fn change(
    writer: &Writer,
    snapshot: &CatalogSnapshot,
    token: &str,
    variant_id: i64,
    quantity: i32,
    add: bool,
) -> Result<CartNotice, DbErr> {
    if quantity <= 0 && !add {
        repo::set_quantity(writer, token, variant_id, 0).await?;
        return Ok(CartNotice::Removed);
    }
    let Some((_, variant)) = snapshot.variant(variant_id) else {
        return Ok(CartNotice::Unknown);
    };
    if variant.available <= 0 {
        return Ok(CartNotice::SoldOut);
    }
    let current = if add {
        repo::lines(&writer.db, token)
            .await?
            .into_iter()
            .find(|(id, _)| *id == variant_id)
            .map(|(_, q)| q)
            .unwrap_or(0)
    } else {
        0
    };
    let wanted = current + quantity.max(1);
    let allowed = wanted.min(variant.available).min(MAX_QUANTITY);
    repo::set_quantity(writer, token, variant_id, allowed).await?;
    Ok(if allowed < wanted {
        CartNotice::Limited
    } else if add {
        CartNotice::Added
    } else {
        CartNotice::Updated
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notice_codes_round_trip_and_unknown_codes_are_ignored() {
        for notice in [
            CartNotice::Added,
            CartNotice::Limited,
            CartNotice::SoldOut,
            CartNotice::Removed,
        ] {
            assert_eq!(CartNotice::parse(notice.code()), Some(notice));
        }
        assert_eq!(CartNotice::parse("<script>"), None);
    }
}
