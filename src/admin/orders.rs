//! The back-office's orders: a filtered list (status, needs attention,
//! customer, dates) and an order's page (lines, payment, timeline,
//! shipment) with the staff actions: mark shipped (with a tracking number)
//! or delivered for the manual carrier, refund, and cancel an unpaid order.
//! Each action goes through the module that owns it (`logistics::mark`,
//! `orders::refund`, `orders::cancel_unpaid`), so events, stock and
//! notifications follow exactly as when a carrier or Stripe reports it.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::Permission;
use super::routes::{AdminLayout, admin, layout, page, require, when};
use crate::app::AppContext;
use crate::catalog::Money;
use crate::catalog::model::Currency;
use crate::config::PaymentsKind;
use crate::logistics::{MarkOutcome, ShipmentRef, ShipmentStatus};
use crate::orders::{OrderFilter, OrderStatus, Transition};
use crate::web::error::AppError;
use crate::web::http::see_other;
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/orders", web::get().to(list_orders))
        .route("/admin/orders/{public_id}", web::get().to(show_order))
        .route(
            "/admin/orders/{public_id}/{action}",
            web::post().to(order_action),
        );
}

const PER_PAGE: u64 = 50;

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}

fn money(minor: i64, currency: &str) -> String {
    Money::new(minor, Currency::parse(currency).unwrap_or(Currency::Myr)).to_string()
}

fn status_label(raw: &str) -> &'static str {
    raw.parse::<OrderStatus>().map_or("Unknown", |s| s.label())
}

/// The order number staff and shoppers quote: the public id's first eight
/// characters.
fn number(public_id: &str) -> &str {
    public_id.get(..8).unwrap_or(public_id)
}

// ---------------------------------------------------------------------------
// The list.

struct OrderRow {
    public_id: String,
    number: String,
    placed: String,
    customer: String,
    status: &'static str,
    total: String,
    attention: bool,
}

#[derive(Template)]
#[template(path = "admin/orders.html")]
struct OrdersPage<'a> {
    layout: AdminLayout<'a>,
    rows: Vec<OrderRow>,
    total: u64,
    page: u64,
    pages: u64,
    statuses: Vec<(&'static str, &'static str)>,
    query: OrdersQuery,
    /// The filter as a query string, for the page links.
    filter_query: String,
}

#[derive(Debug, Default, Deserialize)]
struct OrdersQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    attention: String,
    #[serde(default)]
    customer: String,
    /// Dates (YYYY-MM-DD), in the shop's time zone.
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    page: Option<u64>,
}

/// A `YYYY-MM-DD` date at the shop's local midnight.
fn local_day(raw: &str, offset: time::UtcOffset) -> Option<OffsetDateTime> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(raw.trim(), format)
        .ok()
        .map(|day| day.midnight().assume_offset(offset))
}

async fn list_orders(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<OrdersQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let query = query.into_inner();
    let offset = ctx.settings.shop.offset();
    let filter = OrderFilter {
        status: query.status.parse().ok(),
        customer_id: None,
        needs_attention: !query.attention.is_empty(),
        customer: Some(query.customer.clone()),
        from: local_day(&query.from, offset),
        // Through the end of the "to" day.
        to: local_day(&query.to, offset).map(|day| day + time::Duration::days(1)),
    };
    let page_number = query.page.unwrap_or(1).clamp(1, 100_000);
    let (orders, total) = crate::orders::list(&ctx.db, &filter, page_number, PER_PAGE)
        .await
        .map_err(internal)?;
    let rows = orders
        .into_iter()
        .map(|o| OrderRow {
            number: number(&o.public_id).to_string(),
            placed: when(o.created_at.to_offset(offset)),
            customer: match &o.phone {
                Some(phone) => format!("{} · {phone}", o.email),
                None => o.email.clone(),
            },
            status: status_label(&o.status),
            total: money(o.total_minor, &o.currency),
            attention: o.needs_attention,
            public_id: o.public_id,
        })
        .collect();
    let visitor = Visitor::of(&req);
    let template = OrdersPage {
        layout: layout(&ctx, &visitor, "Orders", Some(&admin), "orders"),
        rows,
        total,
        page: page_number,
        pages: total.div_ceil(PER_PAGE).max(1),
        statuses: OrderStatus::ALL
            .into_iter()
            .map(|s| (s.as_str(), s.label()))
            .collect(),
        filter_query: url::form_urlencoded::Serializer::new(String::new())
            .append_pair("status", &query.status)
            .append_pair("attention", &query.attention)
            .append_pair("customer", &query.customer)
            .append_pair("from", &query.from)
            .append_pair("to", &query.to)
            .finish(),
        query,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

// ---------------------------------------------------------------------------
// One order.

struct LineRow {
    name: String,
    sku: String,
    quantity: i32,
    unit: String,
    total: String,
}

struct TimelineRow {
    at: String,
    change: String,
    note: String,
}

struct ShipmentInfo {
    carrier: String,
    status: String,
    tracking_number: String,
    tracking_url: String,
}

#[derive(Template)]
#[template(path = "admin/order.html")]
struct OrderPage<'a> {
    layout: AdminLayout<'a>,
    order: crate::orders::entity::order::Model,
    number: String,
    status: &'static str,
    placed: String,
    lines: Vec<LineRow>,
    subtotal: String,
    shipping: String,
    total: String,
    timeline: Vec<TimelineRow>,
    shipment: Option<ShipmentInfo>,
    can_manage: bool,
    can_ship: bool,
    can_deliver: bool,
    can_refund: bool,
    can_cancel: bool,
    /// Refunds go through Stripe's dashboard when Stripe takes payments.
    stripe: bool,
    notice: Option<&'static str>,
}

#[derive(Debug, Deserialize)]
struct NoticeQuery {
    #[serde(default)]
    notice: Option<String>,
}

fn notice_text(code: &str) -> Option<&'static str> {
    Some(match code {
        "shipped" => "Marked shipped; the shopper is told on WhatsApp if they opted in.",
        "delivered" => "Marked delivered.",
        "unchanged" => "Nothing changed: the shipment is already there or further along.",
        "no_shipment" => "This order has no shipment yet (it is booked once the order is paid).",
        "refunded" => "Refunded.",
        "cancelled" => "Cancelled; the reserved stock is back on the shelf.",
        "not_applicable" => "That action does not apply to the order as it is now.",
        "stripe_failed" => {
            "Stripe did not refund the payment, so nothing changed; the log has Stripe's answer."
        }
        "tracking_needed" => "Enter the tracking number to mark the order shipped.",
        _ => return None,
    })
}

async fn show_order(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<String>,
    query: web::Query<NoticeQuery>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let view = crate::orders::find_by_public_id(&ctx.db, &path)
        .await
        .map_err(internal)?
        .ok_or(AppError::NotFound)?;
    let offset = ctx.settings.shop.offset();
    let order = view.order;
    let status = order.status.parse::<OrderStatus>().ok();
    let shipment_status = view
        .shipment
        .as_ref()
        .and_then(|s| ShipmentStatus::parse(&s.status));
    let can_manage = admin.role.allows(Permission::Manage);
    let shippable = matches!(
        shipment_status,
        Some(ShipmentStatus::Pending | ShipmentStatus::Exception)
    );
    let deliverable = matches!(
        shipment_status,
        Some(
            ShipmentStatus::Pending
                | ShipmentStatus::InTransit
                | ShipmentStatus::OutForDelivery
                | ShipmentStatus::Exception
        )
    );
    let currency = order.currency.clone();
    let visitor = Visitor::of(&req);
    let template = OrderPage {
        layout: layout(
            &ctx,
            &visitor,
            &format!("Order {}", number(&order.public_id)),
            Some(&admin),
            "orders",
        ),
        number: number(&order.public_id).to_string(),
        status: status_label(&order.status),
        placed: when(order.created_at.to_offset(offset)),
        lines: view
            .lines
            .iter()
            .map(|l| LineRow {
                name: format!("{} — {}", l.product_name, l.variant_title),
                sku: l.sku.clone(),
                quantity: l.quantity,
                unit: money(l.unit_price_minor, &currency),
                total: money(l.line_total_minor, &currency),
            })
            .collect(),
        subtotal: money(order.subtotal_minor, &currency),
        shipping: money(order.shipping_minor, &currency),
        total: money(order.total_minor, &currency),
        timeline: view
            .history
            .iter()
            .map(|h| TimelineRow {
                at: when(h.created_at.to_offset(offset)),
                change: match &h.from_status {
                    Some(from) => {
                        format!("{} → {}", status_label(from), status_label(&h.to_status))
                    }
                    None => status_label(&h.to_status).to_string(),
                },
                note: h.note.clone(),
            })
            .collect(),
        shipment: view.shipment.as_ref().map(|s| ShipmentInfo {
            carrier: s.carrier.clone(),
            status: s.status.replace('_', " "),
            tracking_number: s.tracking_number.clone().unwrap_or_default(),
            tracking_url: s.tracking_url.clone().unwrap_or_default(),
        }),
        can_manage,
        can_ship: can_manage && shippable,
        can_deliver: can_manage && deliverable,
        can_refund: can_manage
            && order.payment_intent_id.is_some()
            && status.is_some_and(|s| s.can_become(OrderStatus::Refunded)),
        can_cancel: can_manage
            && order.payment_session_id.is_some()
            && status == Some(OrderStatus::PendingPayment),
        stripe: ctx.settings.payments.kind == PaymentsKind::Stripe,
        notice: query.notice.as_deref().and_then(notice_text),
        order,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    tracking_number: String,
    /// A checked "put the units back on the shelf" box posts "on".
    #[serde(default)]
    restock: Option<String>,
}

async fn order_action(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    path: web::Path<(String, String)>,
    form: web::Form<ActionForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Manage);
    let (public_id, action) = path.into_inner();
    let before = crate::orders::find_by_public_id(&ctx.db, &public_id)
        .await
        .map_err(internal)?
        .ok_or(AppError::NotFound)?;
    let back = |notice: &str| see_other(format!("/admin/orders/{public_id}?notice={notice}"));
    let outcome: &str = match action.as_str() {
        "ship" | "deliver" => {
            let tracking = form.tracking_number.trim();
            if action == "ship" && tracking.is_empty() {
                return Ok(back("tracking_needed"));
            }
            let to = if action == "ship" {
                ShipmentStatus::InTransit
            } else {
                ShipmentStatus::Delivered
            };
            let detail = format!("marked by {}", admin.email);
            match crate::logistics::mark(
                &ctx.writer,
                ShipmentRef::Order(&public_id),
                to,
                (!tracking.is_empty()).then_some(tracking),
                Some(&detail),
                None,
            )
            .await
            .map_err(internal)?
            {
                MarkOutcome::Changed { .. } if action == "ship" => "shipped",
                MarkOutcome::Changed { .. } => "delivered",
                MarkOutcome::NoShipment => return Ok(back("no_shipment")),
                _ => return Ok(back("unchanged")),
            }
        }
        "refund" => {
            let Some(intent) = before.order.payment_intent_id.as_deref() else {
                return Ok(back("not_applicable"));
            };
            let refundable = before
                .order
                .status
                .parse::<OrderStatus>()
                .is_ok_and(|s| s.can_become(OrderStatus::Refunded));
            if !refundable {
                return Ok(back("not_applicable"));
            }
            // With Stripe the money goes back first; Stripe's
            // `charge.refunded` webhook then finds the order refunded already.
            if ctx.settings.payments.kind == PaymentsKind::Stripe {
                let stripe = ctx.payments.stripe().ok_or_else(|| {
                    internal(anyhow::anyhow!(
                        "payments.kind is stripe without a Stripe client"
                    ))
                })?;
                if let Err(error) = stripe.create_refund(intent, &public_id).await {
                    tracing::warn!(order = %public_id, error = %error, "Stripe did not refund an order");
                    return Ok(back("stripe_failed"));
                }
            }
            match crate::orders::refund(&ctx.writer, None, intent, form.restock.is_some())
                .await
                .map_err(internal)?
            {
                Transition::Applied => "refunded",
                _ => return Ok(back("not_applicable")),
            }
        }
        "cancel" => {
            let Some(session) = before.order.payment_session_id.as_deref() else {
                return Ok(back("not_applicable"));
            };
            let reason = format!("cancelled by {}", admin.email);
            match crate::orders::cancel_unpaid(&ctx.writer, None, session, &reason)
                .await
                .map_err(internal)?
            {
                Transition::Applied => "cancelled",
                _ => return Ok(back("not_applicable")),
            }
        }
        _ => return Err(AppError::NotFound),
    };
    let after = crate::orders::find_by_public_id(&ctx.db, &public_id)
        .await
        .map_err(internal)?;
    let state = |view: &crate::orders::OrderView| {
        json!({
            "status": view.order.status,
            "shipment": view.shipment.as_ref().map(|s| json!({"status": s.status, "tracking_number": s.tracking_number})),
        })
    };
    super::record(
        &ctx.writer,
        &admin,
        &format!("order_{action}"),
        &format!("order:{public_id}"),
        Some(state(&before)),
        after.as_ref().map(state),
    )
    .await
    .map_err(internal)?;
    Ok(back(outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_dates_are_local_days() {
        let offset = time::UtcOffset::from_hms(8, 0, 0).unwrap();
        let day = local_day("2026-12-03", offset).unwrap();
        assert_eq!(
            day.to_offset(time::UtcOffset::UTC),
            time::macros::datetime!(2026-12-02 16:00 UTC)
        );
        assert_eq!(local_day("03/12/2026", offset), None);
        assert_eq!(local_day("", offset), None);
    }
}
