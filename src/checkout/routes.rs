//! The shopper's path from cart to a paid order: the checkout form, the
//! payment step (Stripe Checkout, or the built-in test-mode page), the
//! success page and the order page behind a signed link.
//!
//! The test-mode "Pay" button signs a `checkout.session.completed` event
//! exactly as Stripe does and posts it to our own `/webhooks/stripe` over
//! loopback, so the real webhook path makes the order paid. With Stripe,
//! the webhook and the success page (after reading the session back from
//! Stripe's API) both call `orders::fulfil`, which makes it paid once.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::views::{CheckoutForm, CheckoutPage, OrderPage, TestPaymentPage};
use crate::app::AppContext;
use crate::cart::{self, CartNotice};
use crate::catalog::{Money, model::Currency};
use crate::config::PaymentsKind;
use crate::customers::normalise_phone;
use crate::orders::{
    self, NewOrder, OrderStatus, PaymentConfirmation, PlaceOrderError, ShippingAddress,
};
use crate::platform::payments::stripe_api::{CheckoutLine, NewCheckoutSession};
use crate::platform::payments::{signature, stripe_event};
use crate::web::error::AppError;
use crate::web::http::{CachePolicy, render, see_other};
use crate::web::layout::Layout;
use crate::web::visitor::{Visitor, verified_visitor};

/// Flat delivery fee in sen, waived from [`FREE_DELIVERY_FROM`].
pub const DELIVERY_FEE: i64 = 800;
pub const FREE_DELIVERY_FROM: i64 = 15_000;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/checkout", web::get().to(show_checkout))
        .route("/checkout", web::post().to(submit_checkout))
        .route("/checkout/success", web::get().to(show_checkout_success))
        .route("/pay/test/{session}", web::get().to(show_test_payment))
        .route("/pay/test/{session}/pay", web::post().to(pay_test_session))
        .route(
            "/pay/test/{session}/cancel",
            web::post().to(cancel_test_session),
        )
        .route("/orders/{public_id}", web::get().to(show_order));
}

fn delivery_fee(subtotal: i64) -> i64 {
    if subtotal >= FREE_DELIVERY_FROM {
        0
    } else {
        DELIVERY_FEE
    }
}

async fn render_checkout(
    req: &HttpRequest,
    ctx: &AppContext,
    visitor: &Visitor,
    form: &CheckoutForm,
    errors: &[String],
) -> Result<HttpResponse, AppError> {
    let snapshot = ctx.catalog.snapshot();
    let cart = cart::load(&ctx.db, &snapshot, &visitor.token).await?;
    if cart.is_empty() {
        return Ok(see_other("/cart"));
    }
    let subtotal = cart.subtotal.map(|m| m.minor).unwrap_or(0);
    let shipping = delivery_fee(subtotal);
    let csrf_token = ctx.csrf.token_for(visitor);
    let page = CheckoutPage {
        layout: Layout::new("Checkout — Kedai", &snapshot.categories),
        cart: &cart,
        form,
        errors,
        csrf_token: &csrf_token,
        shipping: if shipping == 0 {
            "Free".into()
        } else {
            Money::new(shipping, Currency::Myr).to_string()
        },
        total: Money::new(subtotal + shipping, Currency::Myr).to_string(),
    };
    let mut response = render(req, &page, CachePolicy::Private)?;
    if !errors.is_empty() {
        *response.status_mut() = actix_web::http::StatusCode::UNPROCESSABLE_ENTITY;
    }
    Ok(response)
}

pub async fn show_checkout(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(&req);
    if visitor.is_new {
        return Ok(see_other("/cart"));
    }
    let mut form = CheckoutForm::default();
    if let Some(id) = ctx.customer_id(&req).await?
        && let Some(customer) = crate::customers::find(&ctx.db, id).await?
    {
        form.email = customer.email;
        form.name = customer.name;
        form.phone = customer.phone.unwrap_or_default();
        if customer.whatsapp_opt_in {
            form.whatsapp_opt_in = Some("on".into());
        }
    }
    render_checkout(&req, &ctx, &visitor, &form, &[]).await
}

/// Problems with the form, in the shopper's words.
fn validate(form: &CheckoutForm) -> Vec<String> {
    let mut errors = Vec::new();
    let email = form.email.trim();
    let email_ok = email.len() <= 320
        && !email.contains(char::is_whitespace)
        && email.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.ends_with('.')
        });
    if !email_ok {
        errors.push("Enter an email address like name@example.com.".to_string());
    }
    if !form.phone.trim().is_empty() && normalise_phone(&form.phone).is_none() {
        errors.push(crate::customers::model::PHONE_HINT.to_string());
    }
    for (value, label, max) in [
        (&form.name, "your name", 200),
        (&form.line1, "the address", 300),
        (&form.city, "the city", 120),
        (&form.state, "the state", 120),
    ] {
        if value.trim().is_empty() || value.len() > max {
            errors.push(format!("Enter {label}."));
        }
    }
    if form.line2.len() > 300 {
        errors.push("The second address line is too long.".to_string());
    }
    let postcode = form.postcode.trim();
    if postcode.len() != 5 || !postcode.bytes().all(|b| b.is_ascii_digit()) {
        errors.push("Enter a 5-digit Malaysian postcode.".to_string());
    }
    errors
}

pub async fn submit_checkout(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<CheckoutForm>,
) -> Result<HttpResponse, AppError> {
    let visitor = verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let errors = validate(&form);
    if !errors.is_empty() {
        return render_checkout(&req, &ctx, &visitor, &form, &errors).await;
    }
    let snapshot = ctx.catalog.snapshot();
    let cart = cart::load(&ctx.db, &snapshot, &visitor.token).await?;
    if cart.is_empty() {
        return Ok(see_other("/cart"));
    }
    let subtotal = cart.subtotal.map(|m| m.minor).unwrap_or(0);
    let new_order = NewOrder {
        customer_id: ctx.customer_id(&req).await?,
        email: form.email.trim().to_string(),
        phone: normalise_phone(&form.phone),
        whatsapp_opt_in: form.whatsapp_opt_in.is_some(),
        address: ShippingAddress {
            name: form.name.trim().to_string(),
            line1: form.line1.trim().to_string(),
            line2: form.line2.trim().to_string(),
            city: form.city.trim().to_string(),
            postcode: form.postcode.trim().to_string(),
            state: form.state.trim().to_string(),
            country: "MY".to_string(),
        },
        lines: cart
            .lines
            .iter()
            .map(|l| (l.variant.id, l.quantity))
            .collect(),
        shipping_minor: delivery_fee(subtotal),
        payment_provider: match ctx.settings.payments.kind {
            PaymentsKind::Test => "test".to_string(),
            PaymentsKind::Stripe => "stripe".to_string(),
        },
        reservation_ttl: ctx.settings.payments.reservation_ttl,
    };
    let placed = match orders::place(&ctx.writer, new_order).await {
        Ok(placed) => placed,
        Err(PlaceOrderError::Database(error)) => return Err(error.into()),
        Err(problem) => {
            let message = match problem {
                PlaceOrderError::OutOfStock { sku, available: 0 } => {
                    format!("{sku} has just sold out. Please remove it from your cart.")
                }
                PlaceOrderError::OutOfStock { sku, available } => {
                    format!(
                        "Only {available} of {sku} are left. Please lower the quantity in your cart."
                    )
                }
                other => format!("{other}. Please review your cart."),
            };
            return render_checkout(&req, &ctx, &visitor, &form, &[message]).await;
        }
    };
    match ctx.settings.payments.kind {
        PaymentsKind::Test => {
            let session = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
            orders::attach_payment_session(&ctx.writer, placed.id, &session).await?;
            Ok(see_other(format!("/pay/test/{session}")))
        }
        PaymentsKind::Stripe => {
            let stripe = ctx.payments.stripe().ok_or(AppError::Unavailable)?;
            let public_url = ctx
                .settings
                .server
                .public_url
                .as_str()
                .trim_end_matches('/');
            let mut lines: Vec<CheckoutLine> = cart
                .lines
                .iter()
                .map(|l| CheckoutLine {
                    name: format!("{} — {}", l.product.name, l.variant.title),
                    unit_amount: l.variant.price.minor,
                    quantity: l.quantity,
                })
                .collect();
            let fee = delivery_fee(subtotal);
            if fee > 0 {
                lines.push(CheckoutLine {
                    name: "Delivery".into(),
                    unit_amount: fee,
                    quantity: 1,
                });
            }
            // Stripe wants 30 minutes to 24 hours; a reservation that
            // expires first is handled as a late payment.
            let ttl = ctx
                .settings
                .payments
                .reservation_ttl
                .max(std::time::Duration::from_secs(31 * 60));
            let request = NewCheckoutSession {
                order_reference: placed.public_id.clone(),
                email: form.email.trim().to_string(),
                currency: placed.currency.clone(),
                lines,
                success_url: format!(
                    "{public_url}/checkout/success?session_id={{CHECKOUT_SESSION_ID}}"
                ),
                cancel_url: format!(
                    "{public_url}/cart?notice={}",
                    CartNotice::PaymentCancelled.code()
                ),
                expires_at: (time::OffsetDateTime::now_utc() + ttl).unix_timestamp(),
            };
            match stripe.create_checkout_session(&request).await {
                Ok(session) => {
                    orders::attach_payment_session(&ctx.writer, placed.id, &session.id).await?;
                    Ok(see_other(session.url))
                }
                Err(error) => {
                    // No payment can happen: give the stock back at once.
                    tracing::error!(error = %error, "could not create a Stripe Checkout session");
                    let key = format!("unpaid-{}", placed.id);
                    orders::attach_payment_session(&ctx.writer, placed.id, &key).await?;
                    orders::cancel_unpaid(&ctx.writer, None, &key, "payment provider unavailable")
                        .await?;
                    Err(AppError::Unavailable)
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct SuccessQuery {
    #[serde(default)]
    session_id: String,
}

/// Where Stripe sends the shopper after paying. The URL proves nothing, so
/// the session is read back from Stripe's API; only when Stripe says it is
/// paid does this page fulfil the order (racing the webhook harmlessly).
pub async fn show_checkout_success(
    ctx: web::Data<AppContext>,
    query: web::Query<SuccessQuery>,
) -> Result<HttpResponse, AppError> {
    let stripe = ctx.payments.stripe().ok_or(AppError::NotFound)?;
    let view = orders::find_by_session(&ctx.db, &query.session_id)
        .await?
        .ok_or(AppError::NotFound)?;
    match stripe.retrieve_checkout_session(&query.session_id).await {
        Ok(session) if session.is_paid() => {
            let payment = PaymentConfirmation {
                source: "stripe".into(),
                event_id: None,
                session_id: session.id.clone(),
                payment_intent_id: session.payment_intent.clone(),
            };
            let outcome = orders::fulfil(&ctx.writer, &payment).await?;
            tracing::info!(?outcome, "success page confirmed a payment");
        }
        Ok(_) => tracing::info!("success page: Stripe has not confirmed the payment yet"),
        // The webhook will still arrive; the order page shows where it stands.
        Err(error) => {
            tracing::warn!(error = %error, "success page could not read the session from Stripe")
        }
    }
    Ok(see_other(ctx.links.url(&view.order.public_id)))
}

/// The order behind a test-mode session, while test mode is on.
async fn test_order(ctx: &AppContext, session: &str) -> Result<orders::OrderView, AppError> {
    if ctx.settings.payments.kind != PaymentsKind::Test || !session.starts_with("cs_test_") {
        return Err(AppError::NotFound);
    }
    orders::find_by_session(&ctx.db, session)
        .await?
        .ok_or(AppError::NotFound)
}

fn money(minor: i64, currency: &str) -> String {
    Money::new(minor, Currency::parse(currency).unwrap_or(Currency::Myr)).to_string()
}

pub async fn show_test_payment(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    session: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    let view = test_order(&ctx, &session).await?;
    let visitor = Visitor::of(&req);
    if view.order.status != OrderStatus::PendingPayment.as_str() {
        return Ok(see_other(ctx.links.url(&view.order.public_id)));
    }
    let snapshot = ctx.catalog.snapshot();
    let csrf_token = ctx.csrf.token_for(&visitor);
    let page = TestPaymentPage {
        layout: Layout::new("Test payment — Kedai", &snapshot.categories),
        view: &view,
        session: &session,
        total: money(view.order.total_minor, &view.order.currency),
        csrf_token: &csrf_token,
    };
    let mut response = render(&req, &page, CachePolicy::NoStore)?;
    visitor.remember(&mut response, ctx.secure_cookies())?;
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf_token: String,
}

pub async fn pay_test_session(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    session: web::Path<String>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, AppError> {
    let visitor = verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let view = test_order(&ctx, &session).await?;
    let secret = ctx.payments.signing_secret().ok_or(AppError::Unavailable)?;
    let body = stripe_event::session_completed_body(
        &format!("evt_test_{}", uuid::Uuid::new_v4().simple()),
        &session,
        &view.order.public_id,
        view.order.total_minor,
        &view.order.currency,
    );
    let header = signature::sign(
        secret,
        time::OffsetDateTime::now_utc().unix_timestamp(),
        body.as_bytes(),
    );
    let delivered = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", ctx.self_url))
        .header("Stripe-Signature", header)
        .header("Content-Type", "application/json")
        .body(body)
        .timeout(std::time::Duration::from_secs(10))
        .send()
        .await
        .map_err(|error| {
            AppError::Internal(
                anyhow::Error::new(error).context("posting the test payment webhook"),
            )
        })?;
    if !delivered.status().is_success() {
        return Err(AppError::Internal(anyhow::anyhow!(
            "our webhook refused the test payment with {}",
            delivered.status()
        )));
    }
    cart::clear(&ctx.writer, &visitor.token).await?;
    Ok(see_other(ctx.links.url(&view.order.public_id)))
}

pub async fn cancel_test_session(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    session: web::Path<String>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    test_order(&ctx, &session).await?;
    orders::cancel_unpaid(&ctx.writer, None, &session, "cancelled on the payment page").await?;
    Ok(see_other(format!(
        "/cart?notice={}",
        CartNotice::PaymentCancelled.code()
    )))
}

#[derive(Debug, Deserialize)]
pub struct OrderQuery {
    #[serde(default)]
    t: String,
}

pub async fn show_order(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    public_id: web::Path<String>,
    query: web::Query<OrderQuery>,
) -> Result<HttpResponse, AppError> {
    // A wrong or missing signature looks exactly like a missing order.
    if !ctx.links.verify(&public_id, &query.t) {
        tracing::info!("order page asked for without a valid link");
        return Err(AppError::NotFound);
    }
    let view = orders::find_by_public_id(&ctx.db, &public_id)
        .await?
        .ok_or(AppError::NotFound)?;
    let currency = view.order.currency.clone();
    let status: OrderStatus = view
        .order
        .status
        .parse()
        .unwrap_or(OrderStatus::PendingPayment);
    let snapshot = ctx.catalog.snapshot();
    let date =
        time::macros::format_description!("[day] [month repr:short] [year], [hour]:[minute]");
    let page = OrderPage {
        layout: Layout::new("Your order — Kedai", &snapshot.categories),
        status_label: status.label(),
        subtotal: money(view.order.subtotal_minor, &currency),
        shipping: if view.order.shipping_minor == 0 {
            "Free".to_string()
        } else {
            money(view.order.shipping_minor, &currency)
        },
        total: money(view.order.total_minor, &currency),
        lines: view
            .lines
            .iter()
            .map(|l| {
                (
                    l.product_name.clone(),
                    l.variant_title.clone(),
                    money(l.unit_price_minor, &currency),
                    l.quantity,
                    money(l.line_total_minor, &currency),
                )
            })
            .collect(),
        history: view
            .history
            .iter()
            .map(|h| {
                (
                    h.created_at.format(&date).unwrap_or_default(),
                    h.to_status
                        .parse::<OrderStatus>()
                        .map(|s| s.label())
                        .unwrap_or("Updated"),
                    h.note.clone(),
                )
            })
            .collect(),
        view: &view,
    };
    render(&req, &page, CachePolicy::NoStore)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_validated_field_by_field() {
        let good = CheckoutForm {
            email: "siti@example.com".into(),
            name: "Siti".into(),
            line1: "1 Jalan Ampang".into(),
            city: "Kuala Lumpur".into(),
            postcode: "50450".into(),
            state: "WP Kuala Lumpur".into(),
            ..CheckoutForm::default()
        };
        assert!(validate(&good).is_empty());
        let bad = CheckoutForm {
            email: "siti@".into(),
            postcode: "5045".into(),
            phone: "012".into(),
            ..good.clone()
        };
        assert_eq!(validate(&bad).len(), 3);
        assert_eq!(delivery_fee(14_999), DELIVERY_FEE);
        assert_eq!(delivery_fee(15_000), 0);
    }
}
