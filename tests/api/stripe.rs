//! Checkout with `payments.kind = "stripe"` against a fake Stripe API
//! (wiremock) that checks what we send and answers in Stripe's format:
//! session creation, the success page confirming with Stripe and racing the
//! webhook, and Stripe being down.

use std::sync::Arc;

use kedai::catalog::entity::variant;
use kedai::platform::payments::{signature, stripe_event};
use sea_orm::EntityTrait;
use wiremock::matchers::{body_string_contains, header, header_exists, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::cart::{in_stock_variant, post, variant_id_of, visit};
use crate::helpers::{Backend, TestApp, TestDatabase, spawn_on};

const WEBHOOK_SECRET: &str = "whsec_stripe_mode_test";

async fn stripe_app(backend: Backend, stripe: &MockServer) -> Option<TestApp> {
    let database = Arc::new(TestDatabase::create(backend).await?);
    let uri = stripe.uri();
    Some(
        spawn_on(
            database,
            &[
                ("payments.kind", "stripe"),
                ("stripe.secret_key", "sk_test_kedai"),
                ("stripe.webhook_secret", WEBHOOK_SECRET),
                ("stripe.api_base", uri.as_str()),
                ("server.public_url", "https://shop.example.com"),
            ],
        )
        .await,
    )
}

fn address(csrf: &str) -> Vec<(&'static str, String)> {
    vec![
        ("csrf_token", csrf.to_string()),
        ("email", "nurul@example.com".into()),
        ("name", "Nurul Huda".into()),
        ("line1", "5 Jalan Tun Razak".into()),
        ("city", "Kuala Lumpur".into()),
        ("postcode", "50400".into()),
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

async fn checkout_redirects_to_stripe_and_the_success_page_confirms_once(backend: Backend) {
    let stripe = MockServer::start().await;
    let Some(app) = stripe_app(backend, &stripe).await else {
        return;
    };
    let (slug, sku, price) = in_stock_variant(10);
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

    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .and(header("authorization", "Bearer sk_test_kedai"))
        .and(header_exists("idempotency-key"))
        .and(body_string_contains("mode=payment"))
        .and(body_string_contains(format!("line_items%5B0%5D%5Bprice_data%5D%5Bunit_amount%5D={price}")))
        .and(body_string_contains("line_items%5B0%5D%5Bquantity%5D=2"))
        .and(body_string_contains("line_items%5B0%5D%5Bprice_data%5D%5Bcurrency%5D=myr"))
        .and(body_string_contains("client_reference_id="))
        .and(body_string_contains("customer_email=nurul%40example.com"))
        .and(body_string_contains("success_url=https%3A%2F%2Fshop.example.com%2Fcheckout%2Fsuccess%3Fsession_id%3D%7BCHECKOUT_SESSION_ID%7D"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"id":"cs_test_fake1","object":"checkout.session","url":"https://checkout.stripe.com/c/pay/cs_test_fake1"}"#,
            "application/json",
        ))
        .expect(1)
        .mount(&stripe)
        .await;
    let response = post(&app, &shopper, "/checkout", &address(&shopper.csrf)).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        response.headers()["location"],
        "https://checkout.stripe.com/c/pay/cs_test_fake1"
    );
    let (on_hand, reserved) = stock(&app, id).await;

    // The shopper comes back; Stripe says the session is paid.
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_fake1"))
        .and(header("authorization", "Bearer sk_test_kedai"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"id":"cs_test_fake1","object":"checkout.session","payment_status":"paid","payment_intent":"pi_fake1","status":"complete"}"#,
            "application/json",
        ))
        .mount(&stripe)
        .await;
    let success = app.get("/checkout/success?session_id=cs_test_fake1").await;
    assert_eq!(success.status(), 303);
    let order_url = success.headers()["location"].to_str().unwrap().to_string();
    assert!(
        app.page(&order_url)
            .await
            .1
            .contains("Status: <strong>Paid</strong>")
    );
    assert_eq!(stock(&app, id).await, (on_hand - 2, reserved - 2));

    // The webhook arrives afterwards: acknowledged, nothing more happens.
    let public_id = order_url
        .trim_start_matches("/orders/")
        .split('?')
        .next()
        .unwrap()
        .to_string();
    let body = stripe_event::session_completed_body(
        "evt_after_success",
        "cs_test_fake1",
        &public_id,
        100,
        "MYR",
    );
    let secret = secrecy::SecretString::from(WEBHOOK_SECRET.to_string());
    let header_value = signature::sign(
        &secret,
        time::OffsetDateTime::now_utc().unix_timestamp(),
        body.as_bytes(),
    );
    let webhook: serde_json::Value = app
        .client
        .post(format!("{}/webhooks/stripe", app.address))
        .header("Stripe-Signature", header_value)
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(webhook["outcome"], "already_paid");
    assert_eq!(stock(&app, id).await.0, on_hand - 2, "one decrement");
}

async fn an_unpaid_session_is_not_fulfilled_by_the_success_page(backend: Backend) {
    let stripe = MockServer::start().await;
    let Some(app) = stripe_app(backend, &stripe).await else {
        return;
    };
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
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"id":"cs_test_unpaid","url":"https://checkout.stripe.com/x"}"#,
            "application/json",
        ))
        .mount(&stripe)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/checkout/sessions/cs_test_unpaid"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"id":"cs_test_unpaid","payment_status":"unpaid"}"#,
            "application/json",
        ))
        .mount(&stripe)
        .await;
    post(&app, &shopper, "/checkout", &address(&shopper.csrf)).await;
    let success = app.get("/checkout/success?session_id=cs_test_unpaid").await;
    let order_url = success.headers()["location"].to_str().unwrap().to_string();
    assert!(
        app.page(&order_url)
            .await
            .1
            .contains("Status: <strong>Awaiting payment</strong>")
    );
    // Someone guessing session ids learns nothing.
    assert_eq!(
        app.get("/checkout/success?session_id=cs_test_other")
            .await
            .status(),
        404
    );
}

async fn stripe_down_releases_the_stock_and_says_so(backend: Backend) {
    let stripe = MockServer::start().await;
    let Some(app) = stripe_app(backend, &stripe).await else {
        return;
    };
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
    let before = stock(&app, id).await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .respond_with(ResponseTemplate::new(503).set_body_string("upstream down"))
        .expect(3)
        .mount(&stripe)
        .await;
    let response = post(&app, &shopper, "/checkout", &address(&shopper.csrf)).await;
    assert_eq!(response.status(), 503);
    assert!(response.text().await.unwrap().contains("Back in a moment"));
    assert_eq!(
        stock(&app, id).await,
        before,
        "the reservation was given back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkout_redirects_to_stripe_and_the_success_page_confirms_once() {
    checkout_redirects_to_stripe_and_the_success_page_confirms_once(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_checkout_redirects_to_stripe_and_the_success_page_confirms_once() {
    checkout_redirects_to_stripe_and_the_success_page_confirms_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_an_unpaid_session_is_not_fulfilled_by_the_success_page() {
    an_unpaid_session_is_not_fulfilled_by_the_success_page(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_an_unpaid_session_is_not_fulfilled_by_the_success_page() {
    an_unpaid_session_is_not_fulfilled_by_the_success_page(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_stripe_down_releases_the_stock_and_says_so() {
    stripe_down_releases_the_stock_and_says_so(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stripe_down_releases_the_stock_and_says_so() {
    stripe_down_releases_the_stock_and_says_so(Backend::Postgres).await;
}
