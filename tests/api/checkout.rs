//! The whole shopper journey over HTTP, on both databases: cart → checkout
//! → test-mode payment (a Stripe-signed webhook to ourselves) → paid order,
//! stock down, one outbox event; plus what bad input gets.

use kedai::catalog::entity::variant;
use kedai::events::entity::outbox;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};

use crate::cart::{Shopper, cart_page, in_stock_variant, post, variant_id_of, visit};
use crate::helpers::{TestApp, between};

crate::on_both_databases!(
    a_guest_pays_and_gets_one_paid_order,
    an_invalid_form_is_shown_again_with_reasons,
    cancelling_payment_releases_the_stock,
    stock_gone_at_checkout_creates_no_payment_session,
    order_pages_need_their_signed_link,
    the_order_page_shows_shipment_tracking,
);

async fn the_order_page_shows_shipment_tracking(app: TestApp) {
    let (shopper, _, pay_page) = to_payment_page(&app, 1).await;
    let response = post(
        &app,
        &shopper,
        &format!("{pay_page}/pay"),
        &[("csrf_token", shopper.csrf.clone())],
    )
    .await;
    let url = response.headers()["location"].to_str().unwrap().to_string();
    assert!(!app.page(&url).await.1.contains("Tracking number"));
    // Logistics books the shipment when it gets order.paid; staff mark it shipped.
    let public_id = url
        .trim_start_matches("/orders/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    app.context.dispatcher.drain().await.unwrap();
    let html = app.page(&url).await.1;
    assert!(html.contains("Being packed"), "{html}");
    let outcome = kedai::logistics::mark(
        &app.context.writer,
        kedai::logistics::ShipmentRef::Order(&public_id),
        kedai::logistics::ShipmentStatus::InTransit,
        Some("EP123456789MY"),
        None,
        None,
    )
    .await
    .unwrap();
    assert!(matches!(
        outcome,
        kedai::logistics::MarkOutcome::Changed { .. }
    ));
    let html = app.page(&url).await.1;
    assert!(
        html.contains("Tracking number: <span class=\"sku\">EP123456789MY</span>"),
        "{html}"
    );
    assert!(html.contains("On its way"), "{html}");
    assert!(html.contains("Shipped"), "the order moved along: {html}");
}

fn address(shopper: &Shopper) -> Vec<(&'static str, String)> {
    vec![
        ("csrf_token", shopper.csrf.clone()),
        ("email", "siti@example.com".into()),
        ("phone", "+60 12-345 6789".into()),
        ("name", "Siti Aminah".into()),
        ("line1", "12 Jalan Ampang".into()),
        ("line2", String::new()),
        ("city", "Kuala Lumpur".into()),
        ("postcode", "50450".into()),
        ("state", "WP Kuala Lumpur".into()),
    ]
}

async fn stock(app: &TestApp, id: i64) -> (i32, i32) {
    let v = variant::Entity::find_by_id(id)
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap();
    (v.stock_on_hand, v.reserved)
}

async fn get(app: &TestApp, shopper: &Shopper, path: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{}", app.address, path))
        .header("Cookie", &shopper.cookie)
        .send()
        .await
        .unwrap()
}

/// Adds `quantity` of a well-stocked variant and submits the checkout form;
/// returns the shopper, the variant id and the test payment page's path.
async fn to_payment_page(app: &TestApp, quantity: i32) -> (Shopper, i64, String) {
    let (slug, sku, _) = in_stock_variant(10);
    let (shopper, _) = visit(app, &slug).await;
    let id = variant_id_of(app, &sku);
    post(
        app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("quantity", quantity.to_string()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    let checkout = get(app, &shopper, "/checkout").await;
    assert_eq!(checkout.status(), 200);
    assert!(
        checkout
            .text()
            .await
            .unwrap()
            .contains("Continue to payment")
    );
    let response = post(app, &shopper, "/checkout", &address(&shopper)).await;
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/pay/test/cs_test_"), "{location}");
    (shopper, id, location)
}

async fn a_guest_pays_and_gets_one_paid_order(app: TestApp) {
    let paid_before = outbox::Entity::find()
        .filter(outbox::Column::EventType.eq("order.paid"))
        .count(&app.context.db)
        .await
        .unwrap();
    let (shopper, id, pay_page) = to_payment_page(&app, 2).await;
    let (on_hand, reserved) = stock(&app, id).await;

    let page = get(&app, &shopper, &pay_page).await.text().await.unwrap();
    assert!(page.contains("Test mode"));
    let response = post(
        &app,
        &shopper,
        &format!("{pay_page}/pay"),
        &[("csrf_token", shopper.csrf.clone())],
    )
    .await;
    assert_eq!(response.status(), 303);
    let order_url = response.headers()["location"].to_str().unwrap().to_string();
    assert!(
        order_url.starts_with("/orders/") && order_url.contains("?t="),
        "{order_url}"
    );

    let order = get(&app, &shopper, &order_url).await;
    assert_eq!(order.status(), 200);
    let html = order.text().await.unwrap();
    assert!(html.contains("Status: <strong>Paid</strong>"), "{html}");
    assert!(html.contains("Siti Aminah"));
    assert!(html.contains("Payment received") || html.contains("payment received"));

    assert_eq!(
        stock(&app, id).await,
        (on_hand - 2, reserved - 2),
        "the reservation became a sale"
    );
    let paid_after = outbox::Entity::find()
        .filter(outbox::Column::EventType.eq("order.paid"))
        .count(&app.context.db)
        .await
        .unwrap();
    assert_eq!(paid_after, paid_before + 1);
    assert!(
        cart_page(&app, &shopper, "")
            .await
            .contains("Your cart is empty"),
        "the cart is emptied"
    );

    // Paying the same session again changes nothing.
    let again = post(
        &app,
        &shopper,
        &format!("{pay_page}/pay"),
        &[("csrf_token", shopper.csrf.clone())],
    )
    .await;
    assert_eq!(again.status(), 303);
    assert_eq!(stock(&app, id).await.0, on_hand - 2);
    // The pay page of a paid order sends the shopper to the order.
    let revisit = get(&app, &shopper, &pay_page).await;
    assert_eq!(revisit.status(), 303);
}

async fn an_invalid_form_is_shown_again_with_reasons(app: TestApp) {
    let (slug, sku, _) = in_stock_variant(10);
    let (shopper, _) = visit(&app, &slug).await;
    let id = variant_id_of(&app, &sku);
    post(
        &app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    let (_, reserved) = stock(&app, id).await;
    let mut form = address(&shopper);
    form.retain(|(k, _)| !["postcode", "email", "line1"].contains(k));
    form.push(("email", "not-an-email".into()));
    form.push(("postcode", "123".into()));
    form.push(("line1", "<script>alert(1)</script>".into()));
    let response = post(&app, &shopper, "/checkout", &form).await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(html.contains("Enter an email address"));
    assert!(html.contains("5-digit Malaysian postcode"));
    assert!(
        html.contains("value=\"not-an-email\""),
        "what was typed is kept"
    );
    assert!(!html.contains("<script>alert(1)</script>"), "and escaped");
    assert_eq!(stock(&app, id).await.1, reserved, "nothing reserved");

    let forged = post(
        &app,
        &shopper,
        "/checkout",
        &[("csrf_token", "00".repeat(32))],
    )
    .await;
    assert_eq!(forged.status(), 403);
}

async fn cancelling_payment_releases_the_stock(app: TestApp) {
    let (shopper, id, pay_page) = to_payment_page(&app, 3).await;
    let (_, reserved) = stock(&app, id).await;
    let response = post(
        &app,
        &shopper,
        &format!("{pay_page}/cancel"),
        &[("csrf_token", shopper.csrf.clone())],
    )
    .await;
    assert_eq!(
        response.headers()["location"],
        "/cart?notice=payment_cancelled"
    );
    assert_eq!(stock(&app, id).await.1, reserved - 3);
    let cart = cart_page(&app, &shopper, "?notice=payment_cancelled").await;
    assert!(cart.contains("nothing was charged"));
    assert!(cart.contains("value=\"3\""), "the cart is kept");
}

async fn stock_gone_at_checkout_creates_no_payment_session(app: TestApp) {
    let (slug, sku, _) = in_stock_variant(10);
    let (shopper, _) = visit(&app, &slug).await;
    let id = variant_id_of(&app, &sku);
    post(
        &app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("quantity", "2".into()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    // The shelf empties while the shopper types the address.
    app.context.catalog.set_stock(&sku, 1).await.unwrap();
    let response = post(&app, &shopper, "/checkout", &address(&shopper)).await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(
        html.contains(&format!("Only 1 of {sku} are left")),
        "{html}"
    );
    let orders = kedai::orders::entity::order::Entity::find()
        .count(&app.context.db)
        .await
        .unwrap();
    assert_eq!(orders, 0, "no order, no payment session");
}

async fn order_pages_need_their_signed_link(app: TestApp) {
    let (shopper, _, pay_page) = to_payment_page(&app, 1).await;
    let response = post(
        &app,
        &shopper,
        &format!("{pay_page}/pay"),
        &[("csrf_token", shopper.csrf.clone())],
    )
    .await;
    let url = response.headers()["location"].to_str().unwrap().to_string();
    let (path, _) = url.split_once("?t=").unwrap();
    // Anyone else, without the signature or with a forged one: 404.
    assert_eq!(app.get(path).await.status(), 404);
    assert_eq!(
        app.get(&format!("{path}?t={}", "0".repeat(32)))
            .await
            .status(),
        404
    );
    let other = path.replace(&path[8..12], "ffff");
    let signature = url.split_once("?t=").unwrap().1;
    assert_eq!(
        app.get(&format!("{other}?t={signature}")).await.status(),
        404
    );
    assert_eq!(
        app.get(&url).await.status(),
        200,
        "the link itself works anywhere"
    );
    // The pay page of an unknown session is a 404 too.
    assert_eq!(app.get("/pay/test/cs_test_nope").await.status(), 404);
    let _ = between;
}
