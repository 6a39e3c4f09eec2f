//! The cart over HTTP, as a browser without JavaScript uses it: a visitor
//! cookie, CSRF-protected forms, redirects back to the cart.

use kedai::catalog::demo::demo_catalog;

use crate::helpers::{TestApp, between, visitor_cookie};

crate::on_both_databases!(
    a_shopper_adds_changes_and_removes_items,
    quantities_are_bounded_by_stock_with_a_clear_message,
    sold_out_options_cannot_be_added,
    forms_without_a_valid_csrf_token_change_nothing,
    carts_belong_to_their_visitor,
);

/// A browsing session: the visitor cookie and the CSRF token of a product page.
pub(crate) struct Shopper {
    pub(crate) cookie: String,
    pub(crate) csrf: String,
}

pub(crate) async fn visit(app: &TestApp, slug: &str) -> (Shopper, String) {
    let response = app.get(&format!("/products/{slug}")).await;
    let cookie = visitor_cookie(&response).expect("a visitor cookie");
    let html = response.text().await.unwrap();
    let mut shopper = Shopper {
        cookie,
        csrf: String::new(),
    };
    shopper.csrf = match between(&html, "name=\"csrf_token\" value=\"", "\"").first() {
        Some(token) => token.to_string(),
        // A page without forms (a sold-out product): the same visitor's
        // token is on any in-stock product page.
        None => {
            let (in_stock, _, _) = in_stock_variant(10);
            let page = app
                .client
                .get(format!("{}/products/{in_stock}", app.address))
                .header("Cookie", &shopper.cookie)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            between(&page, "name=\"csrf_token\" value=\"", "\"")[0].to_string()
        }
    };
    (shopper, html)
}

pub(crate) async fn post(
    app: &TestApp,
    shopper: &Shopper,
    path: &str,
    form: &[(&str, String)],
) -> reqwest::Response {
    app.client
        .post(format!("{}{}", app.address, path))
        .header("Cookie", &shopper.cookie)
        .form(form)
        .send()
        .await
        .unwrap()
}

pub(crate) async fn cart_page(app: &TestApp, shopper: &Shopper, query: &str) -> String {
    let response = app
        .client
        .get(format!("{}/cart{query}", app.address))
        .header("Cookie", &shopper.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "private, no-cache");
    response.text().await.unwrap()
}

pub(crate) fn in_stock_variant(min: i32) -> (String, String, i64) {
    let catalog = demo_catalog();
    let (product, index) = catalog
        .iter()
        .flat_map(|c| &c.products)
        .find_map(|p| {
            p.variants
                .iter()
                .position(|v| v.stock_on_hand >= min)
                .map(|i| (p, i))
        })
        .unwrap();
    (
        product.slug.clone(),
        product.variants[index].sku.clone(),
        product.variants[index].price_minor,
    )
}

pub(crate) fn variant_id_of(app: &TestApp, sku: &str) -> i64 {
    let snapshot = app.context.catalog.snapshot();
    snapshot
        .listing(None, kedai::catalog::SortOrder::Name)
        .iter()
        .flat_map(|p| p.variants.iter())
        .find(|v| v.sku == sku)
        .unwrap()
        .id
}

async fn a_shopper_adds_changes_and_removes_items(app: TestApp) {
    let (slug, sku, price) = in_stock_variant(10);
    let (shopper, html) = visit(&app, &slug).await;
    assert!(html.contains("action=\"/cart/add\""));
    let id = variant_id_of(&app, &sku);

    let response = post(
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
    assert_eq!(response.status(), 303);
    assert_eq!(response.headers()["location"], "/cart?notice=added");
    let cart = cart_page(&app, &shopper, "?notice=added").await;
    assert!(cart.contains("Added to your cart."));
    assert!(cart.contains(&sku));
    assert!(cart.contains("value=\"2\""));
    let total = format!("RM {}.{:02}", price * 2 / 100, price * 2 % 100);
    assert!(cart.contains(&total), "{total}");

    // Adding again adds up.
    post(
        &app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("quantity", "1".into()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    assert!(cart_page(&app, &shopper, "").await.contains("value=\"3\""));

    let response = post(
        &app,
        &shopper,
        "/cart/update",
        &[
            ("variant_id", id.to_string()),
            ("quantity", "1".into()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    assert_eq!(response.headers()["location"], "/cart?notice=updated");
    assert!(cart_page(&app, &shopper, "").await.contains("value=\"1\""));

    let response = post(
        &app,
        &shopper,
        "/cart/remove",
        &[
            ("variant_id", id.to_string()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    assert_eq!(response.headers()["location"], "/cart?notice=removed");
    assert!(
        cart_page(&app, &shopper, "")
            .await
            .contains("Your cart is empty")
    );
}

async fn quantities_are_bounded_by_stock_with_a_clear_message(app: TestApp) {
    let catalog = demo_catalog();
    let scarce = catalog
        .iter()
        .flat_map(|c| &c.products)
        .flat_map(|p| p.variants.iter().map(move |v| (p, v)))
        .find(|(_, v)| (2..=3).contains(&v.stock_on_hand))
        .unwrap();
    let (shopper, _) = visit(&app, &scarce.0.slug).await;
    let id = variant_id_of(&app, &scarce.1.sku);
    let response = post(
        &app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("quantity", "9".into()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    assert_eq!(response.headers()["location"], "/cart?notice=limited");
    let cart = cart_page(&app, &shopper, "?notice=limited").await;
    assert!(cart.contains("so your cart holds all we have"));
    assert!(cart.contains(&format!("value=\"{}\"", scarce.1.stock_on_hand)));
}

async fn sold_out_options_cannot_be_added(app: TestApp) {
    let catalog = demo_catalog();
    let sold_out = catalog
        .iter()
        .flat_map(|c| &c.products)
        .find(|p| p.variants.iter().all(|v| v.stock_on_hand == 0))
        .unwrap();
    let (shopper, html) = visit(&app, &sold_out.slug).await;
    assert!(
        !html.contains("action=\"/cart/add\""),
        "no add-to-cart form on a sold-out product"
    );
    let id = variant_id_of(&app, &sold_out.variants[0].sku);
    let response = post(
        &app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    assert_eq!(response.headers()["location"], "/cart?notice=sold_out");
    assert!(
        cart_page(&app, &shopper, "")
            .await
            .contains("Your cart is empty")
    );
    let response = post(
        &app,
        &shopper,
        "/cart/add",
        &[
            ("variant_id", "999999".into()),
            ("csrf_token", shopper.csrf.clone()),
        ],
    )
    .await;
    assert_eq!(response.headers()["location"], "/cart?notice=unknown");
}

async fn forms_without_a_valid_csrf_token_change_nothing(app: TestApp) {
    let (slug, sku, _) = in_stock_variant(10);
    let (shopper, _) = visit(&app, &slug).await;
    let id = variant_id_of(&app, &sku);
    let forged = [
        vec![("variant_id", id.to_string())],
        vec![
            ("variant_id", id.to_string()),
            ("csrf_token", "00".repeat(32)),
        ],
        vec![
            ("variant_id", id.to_string()),
            ("csrf_token", "not-hex".into()),
        ],
    ];
    for form in &forged {
        let response = post(&app, &shopper, "/cart/add", form).await;
        assert_eq!(response.status(), 403);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("This form has expired")
        );
    }
    // A valid token without its cookie (another site posting) fails too.
    let response = app
        .client
        .post(format!("{}/cart/add", app.address))
        .form(&[
            ("variant_id", id.to_string()),
            ("csrf_token", shopper.csrf.clone()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert!(
        cart_page(&app, &shopper, "")
            .await
            .contains("Your cart is empty")
    );
}

async fn carts_belong_to_their_visitor(app: TestApp) {
    let (slug, sku, _) = in_stock_variant(10);
    let (alice, _) = visit(&app, &slug).await;
    let (bob, _) = visit(&app, &slug).await;
    assert_ne!(alice.cookie, bob.cookie);
    let id = variant_id_of(&app, &sku);
    post(
        &app,
        &alice,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("csrf_token", alice.csrf.clone()),
        ],
    )
    .await;
    assert!(cart_page(&app, &alice, "").await.contains(&sku));
    assert!(
        cart_page(&app, &bob, "")
            .await
            .contains("Your cart is empty")
    );
    // Bob cannot use Alice's token.
    let response = post(
        &app,
        &bob,
        "/cart/add",
        &[
            ("variant_id", id.to_string()),
            ("csrf_token", alice.csrf.clone()),
        ],
    )
    .await;
    assert_eq!(response.status(), 403);
}
