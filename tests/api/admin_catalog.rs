//! The back-office's products and stock, on SQLite and PostgreSQL: who may
//! look and who may change (anonymous → sign-in, shopper → 403, support
//! looks but every change is 403, CSRF), creating a product that reaches
//! the storefront and the knowledge base, editing a price, archiving and
//! bringing back, stock adjustments with their ledger rows (never under
//! what unpaid orders reserved), the sales the orders write to the same
//! ledger, forms that come back with their mistakes, and the audit trail.

use std::time::Duration;

use kedai::admin;
use kedai::catalog::ProductStatus;
use kedai::catalog::entity::variant;
use kedai::knowledge::Scope;
use kedai::orders::{self, FulfilOutcome, NewOrder, PaymentConfirmation, ShippingAddress};
use kedai::platform::vectors::VectorFilter;
use sea_orm::EntityTrait;

use crate::admin::{app_with_admins, shopper_session};
use crate::helpers::{Backend, Browser, TestApp, between, unescape};

/// The first category's id, for the forms.
async fn category_id(app: &TestApp) -> String {
    kedai::catalog::category_choices(&app.context.db)
        .await
        .unwrap()[0]
        .0
        .to_string()
}

/// The product id in a `/admin/products/{id}?notice=…` redirect.
fn product_id_of(response: &reqwest::Response) -> i64 {
    assert_eq!(response.status(), 303, "{response:?}");
    let location = response.headers()["location"].to_str().unwrap();
    location
        .strip_prefix("/admin/products/")
        .and_then(|rest| rest.split('?').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a product page: {location}"))
}

/// Creates a product with one variant through the page; returns its id.
async fn create_product(
    app: &TestApp,
    browser: &mut Browser,
    name: &str,
    sku: &str,
    price: &str,
    opening_stock: &str,
) -> i64 {
    let category = category_id(app).await;
    let response = browser
        .post(
            app,
            "/admin/products",
            &[
                ("name", name),
                ("category_id", &category),
                ("description", "Woven by hand on a Terengganu loom."),
                ("tags", "Songket, gift"),
                ("featured", "on"),
                ("sku", sku),
                ("title", ""),
                ("size", ""),
                ("colour", "Gold"),
                ("price", price),
                ("opening_stock", opening_stock),
            ],
        )
        .await;
    product_id_of(&response)
}

/// The new-product form with a name, a description that needs escaping,
/// and the given price and SKU.
fn product_form<'a>(
    category: &'a str,
    price: &'a str,
    sku: &'a str,
) -> Vec<(&'static str, &'a str)> {
    vec![
        ("name", "Songket Silk Scarf"),
        ("category_id", category),
        ("description", "<b>Woven</b> by hand."),
        ("sku", sku),
        ("price", price),
        ("opening_stock", "7"),
    ]
}

/// Lets this replica's snapshot catch up, as its refresh loop would.
async fn refresh(app: &TestApp) {
    app.context.catalog.refresh_if_changed().await.unwrap();
}

async fn storefront(app: &TestApp, path: &str) -> (u16, String) {
    let (status, html) = app.page(path).await;
    (status, unescape(&html))
}

async fn audit_actions(app: &TestApp, email: &str) -> Vec<admin::entity::audit::Model> {
    admin::audit_log(&app.context.db, 200)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.admin_email == email)
        .collect()
}

fn new_order(variant_id: i64, quantity: i32) -> NewOrder {
    NewOrder {
        customer_id: None,
        email: "guest@example.com".into(),
        phone: None,
        whatsapp_opt_in: false,
        address: ShippingAddress {
            name: "Nurul".into(),
            line1: "3 Lorong Bunga".into(),
            line2: String::new(),
            city: "George Town".into(),
            postcode: "10200".into(),
            state: "Penang".into(),
            country: "MY".into(),
        },
        lines: vec![(variant_id, quantity)],
        shipping_minor: 800,
        payment_provider: "test".into(),
        reservation_ttl: Duration::from_secs(1800),
    }
}

async fn who_may_see_and_change_products(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let id = create_product(
        &app,
        &mut staff,
        "Songket Table Runner",
        "STR-01",
        "89.00",
        "4",
    )
    .await;
    let variant = kedai::catalog::product_record(&app.context.db, id)
        .await
        .unwrap()
        .unwrap()
        .variants[0]
        .clone();
    let product = format!("/admin/products/{id}");
    let variant_path = format!("{product}/variants/{}", variant.id);
    let stock_path = format!("{variant_path}/stock");

    // Anonymous: every page leads to the sign-in page.
    for path in [
        "/admin/products",
        "/admin/products?stock=low",
        "/admin/products/new",
        product.as_str(),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/admin/login", "{path}");
    }
    // A signed-in shopper is refused.
    let shopper = shopper_session(&app).await;
    let response = app
        .client
        .get(format!("{}/admin/products", app.address))
        .header("Cookie", shopper)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    // Support looks, without forms, and every change is refused.
    let mut support = Browser::sign_in(&app, "support@shop.test").await;
    for path in ["/admin/products", "/admin/products?stock=low"] {
        assert_eq!(support.get(&app, path).await.status(), 200, "{path}");
    }
    let page = support.get(&app, &product).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("STR-01") && html.contains("Opening stock"),
        "{html}"
    );
    assert!(
        !html.contains("Adjust stock") && !html.contains("/archive"),
        "{html}"
    );
    assert_eq!(support.get(&app, "/admin/products/new").await.status(), 403);
    let category = category_id(&app).await;
    let changes: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/admin/products".into(),
            vec![
                ("name", "Zzyzx Forbidden"),
                ("category_id", &category),
                ("sku", "ZZYZX-1"),
                ("price", "1.00"),
            ],
        ),
        (
            product.clone(),
            vec![("name", "Renamed"), ("category_id", &category)],
        ),
        (format!("{product}/archive"), vec![]),
        (format!("{product}/unarchive"), vec![]),
        (
            format!("{product}/variants"),
            vec![("sku", "ZZYZX-2"), ("price", "1.00")],
        ),
        (variant_path.clone(), vec![("price", "1.00")]),
        (
            stock_path.clone(),
            vec![("delta", "100"), ("reason", "received")],
        ),
    ];
    for (path, form) in &changes {
        let response = support.post(&app, path, form).await;
        assert_eq!(response.status(), 403, "support may not post {path}");
    }
    // Without the CSRF token even staff change nothing.
    for (path, form) in &changes {
        let response = staff.post_with(&app, path, "forged", form).await;
        assert_eq!(response.status(), 403, "{path} without a token");
    }
    let after = kedai::catalog::product_record(&app.context.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.name, "Songket Table Runner");
    assert_eq!(after.status, ProductStatus::Active);
    assert_eq!(after.variants.len(), 1);
    assert_eq!(after.variants[0].price.minor, 8900);
    assert_eq!(after.variants[0].stock_on_hand, 4);
    let (_, total) = kedai::catalog::list_products(
        &app.context.db,
        &kedai::catalog::ProductFilter {
            search: "zzyzx".into(),
            ..Default::default()
        },
        1,
        10,
    )
    .await
    .unwrap();
    assert_eq!(total, 0, "no product was created");
    assert!(
        audit_actions(&app, "support@shop.test")
            .await
            .iter()
            .all(|e| e.action == "sign_in")
    );
}

#[tokio::test]
async fn who_may_see_and_change_products_sqlite() {
    who_may_see_and_change_products(Backend::Sqlite).await;
}

#[tokio::test]
async fn who_may_see_and_change_products_postgres() {
    who_may_see_and_change_products(Backend::Postgres).await;
}

async fn products_are_created_edited_archived_and_the_storefront_follows(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let mut owner = Browser::sign_in(&app, "owner@shop.test").await;
    let form = owner.get(&app, "/admin/products/new").await;
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("Price in MYR"));

    // Mistakes come back with the message and what was typed.
    let category = category_id(&app).await;
    let refused = owner
        .post(
            &app,
            "/admin/products",
            &product_form(&category, "149,90", "SSS-01"),
        )
        .await;
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("like 49.90"), "{html}");
    assert!(html.contains("value=\"Songket Silk Scarf\""), "{html}");
    assert!(html.contains("value=\"149,90\""), "{html}");
    assert!(
        html.contains("&lt;b&gt;Woven") || html.contains("&#60;b&#62;Woven"),
        "escaped"
    );
    let demo_sku = variant::Entity::find()
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap()
        .sku;
    let taken = owner
        .post(
            &app,
            "/admin/products",
            &product_form(&category, "149.90", &demo_sku),
        )
        .await;
    assert_eq!(taken.status(), 422);
    assert!(taken.text().await.unwrap().contains("already used"));
    let bad_category = owner
        .post(
            &app,
            "/admin/products",
            &[
                ("name", "Scarf"),
                ("category_id", "999999"),
                ("sku", "X-1"),
                ("price", "1"),
            ],
        )
        .await;
    assert_eq!(bad_category.status(), 422);

    // Created: on the storefront once the snapshot refreshes, and in search.
    let id = create_product(
        &app,
        &mut owner,
        "Songket Silk Scarf",
        "sss-01",
        "149.37",
        "7",
    )
    .await;
    let record = kedai::catalog::product_record(&app.context.db, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.slug, "songket-silk-scarf");
    assert_eq!(record.tags, "songket, gift");
    assert!(record.featured);
    let variant = record.variants[0].clone();
    assert_eq!(
        (variant.sku.as_str(), variant.price.minor),
        ("SSS-01", 14_937)
    );
    assert_eq!(variant.title, "Gold");
    assert_eq!(variant.stock_on_hand, 7);
    let page = owner
        .get(&app, &format!("/admin/products/{id}?notice=created"))
        .await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("Product created") && html.contains("RM 149.37"),
        "{html}"
    );

    refresh(&app).await;
    let (status, html) = storefront(&app, "/products/songket-silk-scarf").await;
    assert_eq!(status, 200);
    assert!(html.contains("Songket Silk Scarf") && html.contains("RM 149.37"));
    let (_, html) = storefront(&app, "/search?q=songket+silk").await;
    assert!(html.contains("Songket Silk Scarf"), "found by search");
    assert_eq!(
        app.get("/media/products/songket-silk-scarf.svg")
            .await
            .status(),
        200,
        "it has a picture"
    );

    // The same name again gets its own slug.
    let twin = create_product(&app, &mut owner, "Songket Silk Scarf", "SSS-99", "10", "").await;
    let twin = kedai::catalog::product_record(&app.context.db, twin)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(twin.slug, "songket-silk-scarf-2");

    // Listed, found by SKU, filtered by status.
    let list = owner
        .get(&app, "/admin/products?q=sss-01")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains("Songket Silk Scarf") && list.contains("1 product"),
        "{list}"
    );

    // A new price reaches the storefront.
    let variant_path = format!("/admin/products/{id}/variants/{}", variant.id);
    let refused = owner
        .post(
            &app,
            &variant_path,
            &[("title", "Gold"), ("price", "12.345")],
        )
        .await;
    assert_eq!(refused.status(), 422);
    assert!(refused.text().await.unwrap().contains("value=\"12.345\""));
    let saved = owner
        .post(
            &app,
            &variant_path,
            &[("title", "Gold"), ("colour", "Gold"), ("price", "128.55")],
        )
        .await;
    assert_eq!(saved.status(), 303);
    refresh(&app).await;
    let (_, html) = storefront(&app, "/products/songket-silk-scarf").await;
    assert!(
        html.contains("RM 128.55") && !html.contains("RM 149.37"),
        "{html}"
    );

    // Another variant, and the product's own fields.
    let added = owner
        .post(
            &app,
            &format!("/admin/products/{id}/variants"),
            &[
                ("sku", "SSS-02"),
                ("colour", "Maroon"),
                ("price", "139.00"),
                ("opening_stock", "3"),
            ],
        )
        .await;
    assert_eq!(added.status(), 303);
    let edited = owner
        .post(
            &app,
            &format!("/admin/products/{id}"),
            &[
                ("name", "Songket Silk Shawl"),
                ("category_id", category.as_str()),
                ("description", "Woven by hand."),
                ("tags", "songket"),
            ],
        )
        .await;
    assert_eq!(edited.status(), 303);
    let empty_name = owner
        .post(
            &app,
            &format!("/admin/products/{id}"),
            &[("name", " "), ("category_id", category.as_str())],
        )
        .await;
    assert_eq!(empty_name.status(), 422);
    refresh(&app).await;
    let (_, html) = storefront(&app, "/products/songket-silk-scarf").await;
    assert!(
        html.contains("Songket Silk Shawl") && html.contains("Maroon"),
        "{html}"
    );

    // Archived: gone from the storefront and search; back when brought back.
    let archived = owner
        .post(&app, &format!("/admin/products/{id}/archive"), &[])
        .await;
    assert_eq!(archived.status(), 303);
    refresh(&app).await;
    assert_eq!(
        storefront(&app, "/products/songket-silk-scarf").await.0,
        404
    );
    let (_, html) = storefront(&app, "/search?q=shawl").await;
    assert!(!html.contains("Songket Silk Shawl"), "not found by search");
    let archived_list = owner
        .get(&app, "/admin/products?status=archived")
        .await
        .text()
        .await
        .unwrap();
    assert!(archived_list.contains("Songket Silk Shawl"));
    let active_list = owner
        .get(&app, "/admin/products?status=active&q=shawl")
        .await
        .text()
        .await
        .unwrap();
    assert!(!active_list.contains("Songket Silk Shawl"));
    let again = owner
        .post(&app, &format!("/admin/products/{id}/archive"), &[])
        .await;
    assert!(
        again.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("notice=unchanged")
    );
    let back = owner
        .post(&app, &format!("/admin/products/{id}/unarchive"), &[])
        .await;
    assert_eq!(back.status(), 303);
    refresh(&app).await;
    assert_eq!(
        storefront(&app, "/products/songket-silk-scarf").await.0,
        200
    );

    // Every change is in the audit log, with the state before and after.
    let entries = audit_actions(&app, "owner@shop.test").await;
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    for action in [
        "product_create",
        "variant_update",
        "variant_create",
        "product_update",
        "product_archive",
        "product_unarchive",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    let price_change = entries
        .iter()
        .find(|e| e.action == "variant_update")
        .unwrap();
    assert!(price_change.before.as_deref().unwrap().contains("14937"));
    assert!(price_change.after.as_deref().unwrap().contains("12855"));
    let rename = entries
        .iter()
        .find(|e| e.action == "product_update")
        .unwrap();
    assert!(
        rename
            .before
            .as_deref()
            .unwrap()
            .contains("Songket Silk Scarf")
    );
    assert!(
        rename
            .after
            .as_deref()
            .unwrap()
            .contains("Songket Silk Shawl")
    );
    assert_eq!(rename.target, format!("product:{id}"));
    let html = owner.get(&app, "/admin/audit").await.text().await.unwrap();
    assert!(html.contains("product_archive"));
}

#[tokio::test]
async fn products_are_created_edited_archived_and_the_storefront_follows_sqlite() {
    products_are_created_edited_archived_and_the_storefront_follows(Backend::Sqlite).await;
}

#[tokio::test]
async fn products_are_created_edited_archived_and_the_storefront_follows_postgres() {
    products_are_created_edited_archived_and_the_storefront_follows(Backend::Postgres).await;
}

async fn stock_adjustments_are_ledgered_and_never_go_under_reserved(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let id = create_product(
        &app,
        &mut staff,
        "Pewter Tea Caddy",
        "PTC-01",
        "220.00",
        "5",
    )
    .await;
    let variant = kedai::catalog::product_record(&app.context.db, id)
        .await
        .unwrap()
        .unwrap()
        .variants[0]
        .clone();
    let stock_path = format!("/admin/products/{id}/variants/{}/stock", variant.id);
    let ids = [variant.id];
    let ledger = || kedai::catalog::stock_ledger(&app.context.db, &ids, 100);
    let on_hand = || async {
        kedai::catalog::variant_record_by_id(&app.context.db, variant.id)
            .await
            .unwrap()
            .unwrap()
    };
    let opening = ledger().await.unwrap();
    assert_eq!(opening.len(), 1);
    assert_eq!(
        (opening[0].reason.as_str(), opening[0].delta),
        ("opening", 5)
    );

    // Received: +10, with its ledger row, and the shop sees 15 available.
    let received = staff
        .post(
            &app,
            &stock_path,
            &[("delta", "+10"), ("reason", "received"), ("note", "PO 881")],
        )
        .await;
    assert_eq!(received.status(), 303);
    let rows = ledger().await.unwrap();
    assert_eq!(rows.len(), 2);
    let newest = &rows[0];
    assert_eq!(newest.delta, 10);
    assert_eq!(newest.stock_after, 15);
    assert_eq!(newest.reason, "received");
    assert_eq!(newest.note, "PO 881");
    assert_eq!(newest.sku, "PTC-01");
    assert_eq!(newest.admin_email.as_deref(), Some("staff@shop.test"));
    assert_eq!(newest.order_id, None);
    refresh(&app).await;
    let snapshot = app.context.catalog.snapshot();
    assert_eq!(snapshot.variant(variant.id).unwrap().1.available, 15);

    // An unpaid order reserves 4: stock may not go under 4.
    let order = orders::place(&app.context.writer, new_order(variant.id, 4))
        .await
        .unwrap();
    let refused = staff
        .post(
            &app,
            &stock_path,
            &[("delta", "-12"), ("reason", "damaged")],
        )
        .await;
    assert_eq!(refused.status(), 422);
    let html = refused.text().await.unwrap();
    assert!(html.contains("cannot go below 4"), "{html}");
    assert!(html.contains("value=\"-12\""), "what was typed comes back");
    assert_eq!(on_hand().await.stock_on_hand, 15);
    assert_eq!(ledger().await.unwrap().len(), 2, "no row for a refusal");
    for (delta, reason) in [
        ("abc", "received"),
        ("0", "received"),
        ("5", "sale"),
        ("5", "other"),
    ] {
        let response = staff
            .post(&app, &stock_path, &[("delta", delta), ("reason", reason)])
            .await;
        assert_eq!(response.status(), 422, "{delta} {reason}");
    }
    let counted = staff
        .post(
            &app,
            &stock_path,
            &[
                ("delta", "-11"),
                ("reason", "count_correction"),
                ("note", ""),
            ],
        )
        .await;
    assert_eq!(counted.status(), 303);
    let now = on_hand().await;
    assert_eq!(
        (now.stock_on_hand, now.reserved, now.available()),
        (4, 4, 0)
    );
    refresh(&app).await;
    let snapshot = app.context.catalog.snapshot();
    assert!(snapshot.variant(variant.id).unwrap().1.stock.is_sold_out());

    // On the low-stock list, and on the product page with its ledger.
    let low = staff
        .get(&app, "/admin/products?stock=low")
        .await
        .text()
        .await
        .unwrap();
    let table = between(&low, "id=\"low-stock\"", "</table>")[0];
    assert!(
        table.contains("PTC-01") && table.contains("Pewter Tea Caddy"),
        "{low}"
    );
    let page = staff
        .get(&app, &format!("/admin/products/{id}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("PO 881") && page.contains("Count correction"),
        "{page}"
    );

    // The sale the order makes is in the same ledger, under the order.
    let session = format!("cs_test_{}", order.public_id);
    assert!(
        orders::attach_payment_session(&app.context.writer, order.id, &session)
            .await
            .unwrap()
    );
    let paid = orders::fulfil(
        &app.context.writer,
        &PaymentConfirmation {
            source: "stripe".into(),
            event_id: Some(format!("evt_{}", order.public_id)),
            session_id: session,
            payment_intent_id: Some(format!("pi_{}", order.public_id)),
        },
    )
    .await
    .unwrap();
    assert!(matches!(paid, FulfilOutcome::Paid { .. }), "{paid:?}");
    let sale = &ledger().await.unwrap()[0];
    assert_eq!(
        (sale.reason.as_str(), sale.delta, sale.stock_after),
        ("sale", -4, 0)
    );
    assert_eq!(sale.order_id, Some(order.id));
    assert_eq!(sale.admin_email, None);
    let refunded = orders::refund(
        &app.context.writer,
        None,
        &format!("pi_{}", order.public_id),
        true,
    )
    .await
    .unwrap();
    assert_eq!(refunded, orders::Transition::Applied);
    let restock = &ledger().await.unwrap()[0];
    assert_eq!(
        (restock.reason.as_str(), restock.delta, restock.stock_after),
        ("restock", 4, 4)
    );
    let page = staff
        .get(&app, &format!("/admin/products/{id}"))
        .await
        .text()
        .await
        .unwrap();
    let number: String = order.public_id.chars().take(8).collect();
    assert!(
        page.contains(&format!("/admin/orders/{}", order.public_id)) && page.contains(&number),
        "the sale links to its order"
    );

    // Audited with before and after.
    let entries = audit_actions(&app, "staff@shop.test").await;
    let adjustments: Vec<_> = entries
        .iter()
        .filter(|e| e.action == "stock_adjust")
        .collect();
    assert_eq!(adjustments.len(), 2, "refusals are not audited");
    let received = adjustments
        .iter()
        .find(|e| e.after.as_deref().unwrap().contains("PO 881"))
        .unwrap();
    assert!(
        received
            .before
            .as_deref()
            .unwrap()
            .contains("\"stock_on_hand\":5")
    );
    assert!(
        received
            .after
            .as_deref()
            .unwrap()
            .contains("\"stock_on_hand\":15")
    );
    assert_eq!(received.target, "variant:PTC-01");
}

#[tokio::test]
async fn stock_adjustments_are_ledgered_and_never_go_under_reserved_sqlite() {
    stock_adjustments_are_ledgered_and_never_go_under_reserved(Backend::Sqlite).await;
}

#[tokio::test]
async fn stock_adjustments_are_ledgered_and_never_go_under_reserved_postgres() {
    stock_adjustments_are_ledgered_and_never_go_under_reserved(Backend::Postgres).await;
}

async fn a_new_product_reaches_the_knowledge_base(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let knowledge = app.context.knowledge.clone();
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let name = "Terengganu Songket Tablecloth";
    let id = create_product(&app, &mut staff, name, "TST-01", "310.00", "2").await;
    refresh(&app).await;
    knowledge.sync(Scope::Products, None).await.unwrap();
    let products = VectorFilter {
        product_id: Some(id),
        ..VectorFilter::default()
    };
    let hits = knowledge
        .search("songket tablecloth price", &products, 3)
        .await
        .unwrap();
    assert!(
        hits.iter()
            .any(|h| h.title == name && h.text.contains("RM 310.00")),
        "{hits:?}"
    );
    let everything = knowledge
        .search("terengganu songket tablecloth", &VectorFilter::default(), 5)
        .await
        .unwrap();
    assert!(everything.iter().any(|h| h.title == name), "{everything:?}");

    // Archived: its document leaves the knowledge base.
    let archived = staff
        .post(&app, &format!("/admin/products/{id}/archive"), &[])
        .await;
    assert_eq!(archived.status(), 303);
    refresh(&app).await;
    knowledge.sync(Scope::Products, None).await.unwrap();
    let hits = knowledge
        .search("songket tablecloth price", &products, 3)
        .await
        .unwrap();
    assert!(hits.is_empty(), "{hits:?}");
}

#[tokio::test]
async fn a_new_product_reaches_the_knowledge_base_sqlite() {
    a_new_product_reaches_the_knowledge_base(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_new_product_reaches_the_knowledge_base_postgres() {
    a_new_product_reaches_the_knowledge_base(Backend::Postgres).await;
}
