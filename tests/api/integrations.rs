//! The outside services behind the bus, faked with wiremock and checked on
//! the wire, on both databases: the Twilio Messages API (templates versus
//! free text, throttling, refusals, 5xx retried inside one call) and the
//! HTTP carrier (booking, retries, its signed status webhook).

use std::time::Duration;

use base64::Engine;
use kedai::events::{self, DeliveryView, Dispatcher};
use kedai::orders;
use kedai::platform::messaging::{self, OutboundMessage};
use kedai::platform::payments::signature;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use secrecy::SecretString;
use serde_json::{Value, json};
use time::OffsetDateTime;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{Backend, TestApp, spawn_app_with};
use crate::shop::{Buyer, paid_order};
use crate::shop::{deliveries_of, drain, messages_to, order_number, shipments_of};

/// Each `async fn name(backend: Backend)` once on SQLite and once on
/// PostgreSQL; the test spawns its own app (with its own configuration).
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    twilio_gets_a_template_outside_the_window_and_free_text_inside_it,
    twilio_throttling_with_a_long_retry_after_goes_back_to_the_dispatcher,
    twilio_throttling_with_a_short_retry_after_is_retried_inline,
    twilio_refusing_a_message_makes_a_dead_letter_with_its_error_code,
    twilio_server_errors_are_retried_inside_the_call,
    twilio_down_for_every_attempt_leaves_the_message_pending,
    twilio_status_callbacks_move_a_queued_message_forward_only,
    twilio_not_answering_in_time_is_not_retried_and_not_resent,
    the_http_carrier_books_with_the_order_as_idempotency_key,
    the_http_carrier_unavailable_is_retried_later_with_the_same_key,
    the_http_carrier_refusing_or_throttling_a_booking,
    carrier_status_webhooks_are_signed_deduplicated_and_forward_only,
    carrier_webhooks_are_refused_without_a_secret,
);

const PHONE: &str = "+60123456789";
const MESSAGES_PATH: &str = "/2010-04-01/Accounts/AC123/Messages.json";
const CARRIER_SECRET: &str = "whsec_carrier";

// ---------------------------------------------------------------------------
// Shared helpers.

async fn only_delivery(app: &TestApp, handler: &str) -> DeliveryView {
    let mut all = deliveries_of(app, handler).await;
    assert_eq!(all.len(), 1, "{handler}: {all:?}");
    all.remove(0)
}

async fn order_view(app: &TestApp, public_id: &str) -> orders::OrderView {
    orders::find_by_public_id(&app.context.db, public_id)
        .await
        .unwrap()
        .expect("the order exists")
}

fn money(minor: i64) -> String {
    format!("MYR {}.{:02}", minor / 100, minor % 100)
}

fn header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

// ---------------------------------------------------------------------------
// 8–9. Twilio.

/// An app sending WhatsApp through Twilio at `server`, with an approved
/// template for order confirmations.
async fn twilio_app(backend: Backend, server: &MockServer) -> Option<TestApp> {
    twilio_app_with(backend, server, &[]).await
}

async fn twilio_app_with(
    backend: Backend,
    server: &MockServer,
    extra: &[(&str, &str)],
) -> Option<TestApp> {
    let base = server.uri();
    let mut settings = vec![
        ("messaging.kind", "twilio"),
        ("twilio.account_sid", "AC123"),
        ("twilio.auth_token", "secret"),
        ("twilio.from", "whatsapp:+14155238886"),
        ("twilio.api_base", base.as_str()),
        ("notify.template_order_paid", "HXabc"),
    ];
    settings.extend_from_slice(extra);
    spawn_app_with(backend, &settings).await
}

fn created(sid: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({ "sid": sid, "status": "queued" }))
}

async fn mount(server: &MockServer, response: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("POST"))
        .and(path(MESSAGES_PATH))
        .respond_with(response);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

fn form(request: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&request.body)
        .into_owned()
        .collect()
}

fn field<'f>(form: &'f [(String, String)], name: &str) -> Option<&'f str> {
    let values: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect();
    assert!(values.len() <= 1, "{name} is sent once: {form:?}");
    values.first().copied()
}

async fn twilio_gets_a_template_outside_the_window_and_free_text_inside_it(backend: Backend) {
    let server = MockServer::start().await;
    mount(&server, created("SM1"), Some(1)).await;
    mount(&server, created("SM2"), None).await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    let order = paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 2).await;
    let total = order_view(&app, &order).await.order.total_minor;
    let step = drain(&app).await;
    assert_eq!((step.done, step.dead, step.retried), (4, 0, 0), "{step:?}");

    let received = requests(&server).await;
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), MESSAGES_PATH);
    let basic = base64::engine::general_purpose::STANDARD.encode("AC123:secret");
    assert_eq!(
        header(request, "authorization"),
        Some(format!("Basic {basic}").as_str())
    );
    assert!(
        header(request, "content-type")
            .unwrap()
            .starts_with("application/x-www-form-urlencoded")
    );
    let sent = form(request);
    assert_eq!(field(&sent, "From"), Some("whatsapp:+14155238886"));
    assert_eq!(
        field(&sent, "To"),
        Some(format!("whatsapp:{PHONE}").as_str())
    );
    assert_eq!(field(&sent, "ContentSid"), Some("HXabc"));
    assert_eq!(field(&sent, "Body"), None, "a template has no body");
    let variables: Value = serde_json::from_str(field(&sent, "ContentVariables").unwrap()).unwrap();
    assert_eq!(
        variables,
        json!({ "1": "Nurul", "2": order_number(&order), "3": money(total) })
    );
    assert_eq!(
        field(&sent, "StatusCallback"),
        Some(
            kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url)
                .as_str()
        )
    );

    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].provider_sid.as_deref(), Some("SM1"));
    assert_eq!(stored[0].status, "queued");
    assert_eq!(stored[0].content_sid.as_deref(), Some("HXabc"));
    assert_eq!(stored[0].kind, "order_paid");

    // Inside the 24-hour window: free text, no template.
    let chatting = "+60111111111";
    messaging::record_inbound(
        &app.context.writer,
        chatting,
        OffsetDateTime::now_utc() - time::Duration::minutes(10),
    )
    .await
    .unwrap();
    let second = paid_order(&app.context.writer, &Buyer::opted_in(chatting), 1).await;
    drain(&app).await;
    let received = requests(&server).await;
    assert_eq!(received.len(), 2);
    let sent = form(&received[1]);
    assert_eq!(
        field(&sent, "To"),
        Some(format!("whatsapp:{chatting}").as_str())
    );
    assert_eq!(field(&sent, "ContentSid"), None);
    assert_eq!(field(&sent, "ContentVariables"), None);
    let body = field(&sent, "Body").expect("free text has a body");
    assert!(body.contains(&order_number(&second)), "{body}");
    assert!(body.starts_with("Hi Nurul"), "{body}");
    assert_eq!(
        field(&sent, "StatusCallback"),
        Some(
            kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url)
                .as_str()
        )
    );
    let stored = messages_to(&app, chatting).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (
            stored[0].provider_sid.as_deref(),
            stored[0].content_sid.as_deref()
        ),
        (Some("SM2"), None)
    );
    assert_eq!(stored[0].body, body);
}

async fn twilio_throttling_with_a_long_retry_after_goes_back_to_the_dispatcher(backend: Backend) {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(429).insert_header("Retry-After", "120"),
        None,
    )
    .await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let before = OffsetDateTime::now_utc();
    let step = drain(&app).await;
    assert_eq!((step.retried, step.dead), (1, 0), "{step:?}");
    assert_eq!(requests(&server).await.len(), 1, "not retried inline");

    let notify = only_delivery(&app, "notify").await;
    assert_eq!(notify.status, "pending");
    assert_eq!(notify.attempts, 1);
    assert!(
        notify.next_attempt_at >= before + time::Duration::seconds(119),
        "next attempt at {} (started {before})",
        notify.next_attempt_at
    );
    assert!(notify.next_attempt_at <= before + time::Duration::seconds(130));
    assert!(
        notify.last_error.as_deref().unwrap().contains("throttled"),
        "{notify:?}"
    );
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "pending", "nothing was sent; not failed");
    assert_eq!(stored[0].provider_sid, None);
    assert_eq!(stored[0].error_code, None);
    assert!(drain(&app).await.is_idle());
    assert_eq!(requests(&server).await.len(), 1);
}

async fn twilio_throttling_with_a_short_retry_after_is_retried_inline(backend: Backend) {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(429).insert_header("Retry-After", "1"),
        Some(1),
    )
    .await;
    mount(&server, created("SM9"), None).await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.retried, step.dead), (0, 0), "{step:?}");
    let received = requests(&server).await;
    assert_eq!(received.len(), 2);
    assert_eq!(form(&received[0]), form(&received[1]), "the same message");
    let notify = only_delivery(&app, "notify").await;
    assert_eq!((notify.status.as_str(), notify.attempts), ("done", 1));
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "queued");
    assert_eq!(stored[0].provider_sid.as_deref(), Some("SM9"));
}

async fn twilio_refusing_a_message_makes_a_dead_letter_with_its_error_code(backend: Backend) {
    let server = MockServer::start().await;
    mount(
        &server,
        ResponseTemplate::new(400).set_body_json(json!({
            "code": 63016,
            "message": "Failed to send freeform message because you are outside the allowed window.",
            "status": 400
        })),
        None,
    )
    .await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (1, 0), "{step:?}");
    assert_eq!(requests(&server).await.len(), 1, "a refusal is not retried");
    let notify = only_delivery(&app, "notify").await;
    assert_eq!((notify.status.as_str(), notify.attempts), ("dead", 1));
    assert!(
        notify.last_error.as_deref().unwrap().contains("63016"),
        "{notify:?}"
    );
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "failed");
    assert_eq!(stored[0].error_code.as_deref(), Some("63016"));
    assert!(
        stored[0]
            .error_message
            .as_deref()
            .unwrap()
            .contains("outside the allowed window")
    );
    // The rest of the order went on.
    assert_eq!(only_delivery(&app, "logistics").await.status, "done");

    // Nothing went out, so replaying the dead letter (after fixing the
    // template, say) tries again with the same message row; here Twilio
    // still refuses it.
    assert!(
        events::replay_delivery(&app.context.writer, notify.id)
            .await
            .unwrap()
    );
    drain(&app).await;
    assert_eq!(requests(&server).await.len(), 2);
    let again = only_delivery(&app, "notify").await;
    assert_eq!((again.status.as_str(), again.replays), ("dead", 1));
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1, "still one message row for the key");
    assert_eq!(stored[0].status, "failed");
}

async fn twilio_server_errors_are_retried_inside_the_call(backend: Backend) {
    let server = MockServer::start().await;
    mount(&server, ResponseTemplate::new(500), Some(2)).await;
    mount(&server, created("SM5"), None).await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.retried, step.dead), (0, 0), "{step:?}");
    assert_eq!(requests(&server).await.len(), 3);
    let notify = only_delivery(&app, "notify").await;
    assert_eq!((notify.status.as_str(), notify.attempts), ("done", 1));
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(
        (stored[0].status.as_str(), stored[0].provider_sid.as_deref()),
        ("queued", Some("SM5"))
    );
}

async fn twilio_down_for_every_attempt_leaves_the_message_pending(backend: Backend) {
    let server = MockServer::start().await;
    mount(&server, ResponseTemplate::new(503), None).await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.retried, step.dead), (1, 0), "{step:?}");
    assert_eq!(
        requests(&server).await.len(),
        3,
        "three attempts in the call"
    );
    let notify = only_delivery(&app, "notify").await;
    assert_eq!((notify.status.as_str(), notify.attempts), ("pending", 1));
    assert!(notify.last_error.as_deref().unwrap().contains("503"));
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "pending");
}

async fn twilio_not_answering_in_time_is_not_retried_and_not_resent(backend: Backend) {
    let server = MockServer::start().await;
    mount(
        &server,
        created("SM7").set_delay(Duration::from_secs(3)),
        None,
    )
    .await;
    let Some(app) = twilio_app_with(backend, &server, &[("twilio.timeout", "300ms")]).await else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (1, 0), "{step:?}");
    // Twilio may have taken it: asking again could send it twice.
    assert_eq!(requests(&server).await.len(), 1);
    let stored = messages_to(&app, PHONE).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].status, "unconfirmed");
    assert_eq!(stored[0].provider_sid, None);
    let notify = only_delivery(&app, "notify").await;
    assert_eq!(notify.status, "dead");
    assert!(
        notify
            .last_error
            .as_deref()
            .unwrap()
            .contains("outcome unknown"),
        "{notify:?}"
    );

    // A replay finds the message and does not send it again.
    assert!(
        events::replay_delivery(&app.context.writer, notify.id)
            .await
            .unwrap()
    );
    drain(&app).await;
    assert_eq!(only_delivery(&app, "notify").await.status, "done");
    assert_eq!(requests(&server).await.len(), 1);
    assert_eq!(messages_to(&app, PHONE).await[0].status, "unconfirmed");
}

/// Posts a status callback signed with the auth token, as Twilio does.
async fn status_callback_for(app: &TestApp, params: &[(&str, &str)]) -> u16 {
    let owned: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let signature = messaging::twilio::sign(
        &SecretString::from("secret"),
        &kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url),
        &owned,
    );
    app.client
        .post(format!("{}/webhooks/twilio/status", app.address))
        .header("X-Twilio-Signature", signature)
        .form(params)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn status_of(app: &TestApp, phone: &str) -> OutboundMessage {
    let mut stored = messages_to(app, phone).await;
    assert_eq!(stored.len(), 1);
    stored.remove(0)
}

async fn twilio_status_callbacks_move_a_queued_message_forward_only(backend: Backend) {
    let server = MockServer::start().await;
    mount(&server, created("SM1"), Some(1)).await;
    mount(&server, created("SM2"), None).await;
    let Some(app) = twilio_app(backend, &server).await else {
        return;
    };
    let other = "+60177777777";
    paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    paid_order(&app.context.writer, &Buyer::opted_in(other), 1).await;
    drain(&app).await;
    assert_eq!(status_of(&app, PHONE).await.status, "queued");
    let sid_of_other = status_of(&app, other).await.provider_sid.unwrap();
    let sid = status_of(&app, PHONE).await.provider_sid.unwrap();
    assert_ne!(sid, sid_of_other);

    let steps = [
        ("sent", "sent"),
        ("delivered", "delivered"),
        // Late and out of order: ignored.
        ("sent", "delivered"),
        ("queued", "delivered"),
        ("read", "read"),
        ("delivered", "read"),
        ("failed", "read"),
    ];
    for (callback, expected) in steps {
        let status =
            status_callback_for(&app, &[("MessageSid", &sid), ("MessageStatus", callback)]).await;
        assert_eq!(status, 200, "{callback}");
        assert_eq!(
            status_of(&app, PHONE).await.status,
            expected,
            "after {callback}"
        );
    }
    assert_eq!(status_of(&app, PHONE).await.error_code, None);

    // A failure records Twilio's error code and message.
    let status = status_callback_for(
        &app,
        &[
            ("MessageSid", &sid_of_other),
            ("MessageStatus", "failed"),
            ("ErrorCode", "63016"),
            ("ErrorMessage", "outside the allowed window"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let failed = status_of(&app, other).await;
    assert_eq!(failed.status, "failed");
    assert_eq!(failed.error_code.as_deref(), Some("63016"));
    assert_eq!(
        failed.error_message.as_deref(),
        Some("outside the allowed window")
    );
    // Signed with some other token: refused.
    let params = [("MessageSid", sid.as_str()), ("MessageStatus", "failed")];
    let forged = messaging::twilio::sign(
        &SecretString::from("not-secret"),
        &kedai::notify::routes::status_callback_url(&app.context.settings.server.public_url),
        &params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<Vec<_>>(),
    );
    let response = app
        .client
        .post(format!("{}/webhooks/twilio/status", app.address))
        .header("X-Twilio-Signature", forged)
        .form(&params)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(status_of(&app, PHONE).await.status, "read");
}

// ---------------------------------------------------------------------------
// 10. The HTTP carrier.

async fn carrier_app(backend: Backend, server: &MockServer) -> Option<TestApp> {
    let base = server.uri();
    spawn_app_with(
        backend,
        &[
            ("carrier.kind", "http"),
            ("carrier.base_url", base.as_str()),
            ("carrier.api_key", "ck_test"),
            ("carrier.webhook_secret", CARRIER_SECRET),
        ],
    )
    .await
}

fn booked() -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({
        "id": "shp_1",
        "tracking_number": "TRK1",
        "label_url": "https://labels.example/1.pdf",
        "tracking_url": "https://track.example/TRK1",
    }))
}

async fn mount_carrier(server: &MockServer, response: ResponseTemplate, times: Option<u64>) {
    let mock = Mock::given(method("POST"))
        .and(path("/v1/shipments"))
        .respond_with(response);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

async fn the_http_carrier_books_with_the_order_as_idempotency_key(backend: Backend) {
    let server = MockServer::start().await;
    mount_carrier(&server, booked(), None).await;
    let Some(app) = carrier_app(backend, &server).await else {
        return;
    };
    let order = paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 3).await;
    let step = drain(&app).await;
    assert_eq!((step.done, step.dead, step.retried), (4, 0, 0), "{step:?}");

    let received = requests(&server).await;
    assert_eq!(received.len(), 1);
    let request = &received[0];
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(header(request, "authorization"), Some("Bearer ck_test"));
    assert_eq!(header(request, "idempotency-key"), Some(order.as_str()));
    assert!(
        header(request, "content-type")
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(body["reference"], order.as_str());
    assert_eq!(body["recipient"]["name"], "Nurul Huda");
    assert_eq!(body["recipient"]["phone"], PHONE);
    assert_eq!(body["recipient"]["city"], "George Town");
    assert_eq!(body["recipient"]["country"], "MY");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["quantity"], 3);
    let view = order_view(&app, &order).await;
    assert_eq!(items[0]["sku"], view.lines[0].sku.as_str());

    let shipments = shipments_of(&app, &order).await;
    assert_eq!(shipments.len(), 1);
    let shipment = &shipments[0];
    assert_eq!(shipment.carrier, "http");
    assert_eq!(shipment.status, "pending");
    assert_eq!(shipment.tracking_number.as_deref(), Some("TRK1"));
    assert_eq!(shipment.carrier_ref.as_deref(), Some("shp_1"));
    assert_eq!(
        shipment.label_url.as_deref(),
        Some("https://labels.example/1.pdf")
    );
    assert_eq!(
        shipment.tracking_url.as_deref(),
        Some("https://track.example/TRK1")
    );
    assert_eq!(view.order.status, "fulfilling");

    // Redelivered: the shipment exists, the carrier is not asked again.
    assert!(
        events::replay_range(
            &app.context.writer,
            &app.context.bus,
            "logistics",
            OffsetDateTime::now_utc() - time::Duration::hours(1),
            OffsetDateTime::now_utc() + time::Duration::hours(1),
        )
        .await
        .unwrap()
            == 1
    );
    drain(&app).await;
    assert_eq!(requests(&server).await.len(), 1);
    assert_eq!(shipments_of(&app, &order).await.len(), 1);
}

async fn the_http_carrier_unavailable_is_retried_later_with_the_same_key(backend: Backend) {
    let server = MockServer::start().await;
    mount_carrier(&server, ResponseTemplate::new(503), Some(1)).await;
    mount_carrier(&server, booked(), None).await;
    let Some(app) = carrier_app(backend, &server).await else {
        return;
    };
    // A dispatcher on the app's own bus that retries at once.
    let mut settings = app.context.settings.events.clone();
    settings.retry_schedule = vec![Duration::ZERO; 3];
    settings.retry_jitter = 0.0;
    let dispatcher = Dispatcher::new(
        app.context.writer.clone(),
        app.context.bus.clone(),
        settings,
    );
    let order = paid_order(&app.context.writer, &Buyer::silent(), 1).await;

    let step = dispatcher.try_dispatch_once().await.unwrap();
    assert_eq!(
        (step.routed, step.done, step.retried),
        (1, 1, 1),
        "{step:?}"
    );
    let logistics = only_delivery(&app, "logistics").await;
    assert_eq!(
        (logistics.status.as_str(), logistics.attempts),
        ("pending", 1)
    );
    assert!(
        logistics.last_error.as_deref().unwrap().contains("503"),
        "{logistics:?}"
    );
    assert!(
        shipments_of(&app, &order).await.is_empty(),
        "no shipment yet"
    );
    assert_eq!(order_view(&app, &order).await.order.status, "paid");

    let step = dispatcher.drain().await.unwrap();
    assert_eq!(step.dead, 0, "{step:?}");
    let logistics = only_delivery(&app, "logistics").await;
    assert_eq!((logistics.status.as_str(), logistics.attempts), ("done", 2));
    let received = requests(&server).await;
    assert_eq!(received.len(), 2);
    for request in &received {
        assert_eq!(header(request, "idempotency-key"), Some(order.as_str()));
    }
    let shipments = shipments_of(&app, &order).await;
    assert_eq!(shipments.len(), 1);
    assert_eq!(shipments[0].carrier_ref.as_deref(), Some("shp_1"));
    assert_eq!(order_view(&app, &order).await.order.status, "fulfilling");
}

async fn the_http_carrier_refusing_or_throttling_a_booking(backend: Backend) {
    let server = MockServer::start().await;
    mount_carrier(
        &server,
        ResponseTemplate::new(422).set_body_json(json!({ "error": "postcode unknown" })),
        Some(1),
    )
    .await;
    mount_carrier(
        &server,
        ResponseTemplate::new(429).insert_header("Retry-After", "300"),
        None,
    )
    .await;
    let Some(app) = carrier_app(backend, &server).await else {
        return;
    };
    let refused = paid_order(&app.context.writer, &Buyer::silent(), 1).await;
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (1, 0), "{step:?}");
    let dead = only_delivery(&app, "logistics").await;
    assert_eq!((dead.status.as_str(), dead.attempts), ("dead", 1));
    let error = dead.last_error.clone().unwrap();
    assert!(
        error.contains("422") && error.contains("postcode unknown"),
        "{error}"
    );
    assert!(shipments_of(&app, &refused).await.is_empty());
    assert_eq!(order_view(&app, &refused).await.order.status, "paid");

    // Replayed while the carrier throttles: it waits as long as asked.
    assert!(
        events::replay_delivery(&app.context.writer, dead.id)
            .await
            .unwrap()
    );
    let before = OffsetDateTime::now_utc();
    let step = drain(&app).await;
    assert_eq!((step.dead, step.retried), (0, 1), "{step:?}");
    let waiting = only_delivery(&app, "logistics").await;
    assert_eq!(waiting.status, "pending");
    assert_eq!(waiting.replays, 1);
    assert!(
        waiting.next_attempt_at >= before + time::Duration::seconds(299),
        "{waiting:?}"
    );
    assert_eq!(requests(&server).await.len(), 2);
    assert!(shipments_of(&app, &refused).await.is_empty());
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

async fn post_notice(app: &TestApp, body: &str, signature: Option<String>) -> (u16, Value) {
    let mut request = app
        .client
        .post(format!("{}/webhooks/carrier", app.address))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(signature) = signature {
        request = request.header("X-Carrier-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn signed_at(body: &str, at: i64) -> Option<String> {
    Some(signature::sign(
        &SecretString::from(CARRIER_SECRET),
        at,
        body.as_bytes(),
    ))
}

/// Posts a correctly signed notice; returns its outcome word.
async fn notice(app: &TestApp, body: &Value) -> String {
    let body = body.to_string();
    let (status, answer) = post_notice(app, &body, signed_at(&body, now())).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["received"], true);
    answer["outcome"].as_str().unwrap().to_string()
}

async fn status_changes(app: &TestApp) -> u64 {
    events::entity::outbox::Entity::find()
        .filter(events::entity::outbox::Column::EventType.eq("shipment.status_changed"))
        .count(&app.context.db)
        .await
        .unwrap()
}

async fn carrier_status_webhooks_are_signed_deduplicated_and_forward_only(backend: Backend) {
    let server = MockServer::start().await;
    mount_carrier(&server, booked(), None).await;
    let Some(app) = carrier_app(backend, &server).await else {
        return;
    };
    let order = paid_order(&app.context.writer, &Buyer::opted_in(PHONE), 1).await;
    drain(&app).await;
    assert_eq!(shipments_of(&app, &order).await[0].status, "pending");

    let in_transit = json!({
        "id": "n1", "reference": order, "tracking_number": "TRK1", "status": "in_transit"
    });
    assert_eq!(notice(&app, &in_transit).await, "applied");
    let shipment = &shipments_of(&app, &order).await[0];
    assert_eq!(shipment.status, "in_transit");
    assert!(shipment.shipped_at.is_some());
    assert_eq!(order_view(&app, &order).await.order.status, "shipped");
    assert_eq!(status_changes(&app).await, 1);
    let changed = events::list_events(
        &app.context.db,
        &events::EventFilter {
            event_type: Some("shipment.status_changed".into()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let payload = &changed[0].event.payload;
    assert_eq!(payload["order_id"], order.as_str());
    assert_eq!(payload["status"], "in_transit");
    assert_eq!(payload["previous_status"], "pending");
    assert_eq!(payload["tracking_number"], "TRK1");

    // The same notice again.
    assert_eq!(notice(&app, &in_transit).await, "duplicate");
    assert_eq!(status_changes(&app).await, 1);

    // A later status, then a stale one that arrives late with a new id.
    let out = json!({
        "id": "n2", "reference": order, "tracking_number": "TRK1", "status": "out_for_delivery"
    });
    assert_eq!(notice(&app, &out).await, "applied");
    let late = json!({
        "id": "n3", "reference": order, "tracking_number": "TRK1", "status": "in_transit"
    });
    assert_eq!(notice(&app, &late).await, "stale");
    assert_eq!(
        shipments_of(&app, &order).await[0].status,
        "out_for_delivery"
    );
    assert_eq!(status_changes(&app).await, 2);

    // Forged, stale and unsigned notices are refused and change nothing.
    let delivered = json!({
        "id": "n4", "reference": order, "tracking_number": "TRK1", "status": "delivered"
    })
    .to_string();
    let wrong = Some(signature::sign(
        &SecretString::from("whsec_attacker"),
        now(),
        delivered.as_bytes(),
    ));
    for (case, header) in [
        ("wrong secret", wrong),
        ("ten minutes old", signed_at(&delivered, now() - 600)),
        ("unsigned", None),
        ("tampered", signed_at(&delivered.replace("n4", "n5"), now())),
    ] {
        let (status, answer) = post_notice(&app, &delivered, header).await;
        assert_eq!(status, 401, "{case}: {answer}");
        assert_eq!(answer["error"], "invalid_signature", "{case}");
    }
    assert_eq!(
        shipments_of(&app, &order).await[0].status,
        "out_for_delivery"
    );
    assert_eq!(status_changes(&app).await, 2);

    // Found by tracking number alone, and delivered.
    let by_tracking = json!({ "id": "n6", "tracking_number": "TRK1", "status": "delivered" });
    assert_eq!(notice(&app, &by_tracking).await, "applied");
    let shipment = &shipments_of(&app, &order).await[0];
    assert_eq!(shipment.status, "delivered");
    assert!(shipment.delivered_at.is_some());
    assert_eq!(order_view(&app, &order).await.order.status, "delivered");
    assert_eq!(status_changes(&app).await, 3);

    // A parcel we do not know, an unknown status, a notice without an id.
    // Unknown parcels get 404, so the carrier retries (the booking may still
    // be in flight), and the notice id is not spent.
    let unknown = json!({ "id": "n7", "reference": "nope", "status": "in_transit" }).to_string();
    for _ in 0..2 {
        let (status, answer) = post_notice(&app, &unknown, signed_at(&unknown, now())).await;
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["error"], "unknown_shipment");
    }
    for bad in [
        json!({ "id": "n8", "reference": order, "status": "lost" }),
        json!({ "id": "", "reference": order, "status": "in_transit" }),
        json!({ "id": "n9", "status": "in_transit" }),
    ] {
        let body = bad.to_string();
        let (status, _) = post_notice(&app, &body, signed_at(&body, now())).await;
        assert_eq!(status, 400, "{bad}");
    }

    // Each change was one message to the opted-in buyer. (Drained together,
    // the three status changes are handled concurrently, in no set order.)
    drain(&app).await;
    let mut kinds: Vec<String> = messages_to(&app, PHONE)
        .await
        .into_iter()
        .map(|m| m.kind)
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "order_paid",
            "shipment_delivered",
            "shipment_in_transit",
            "shipment_out_for_delivery",
        ]
    );
}

async fn carrier_webhooks_are_refused_without_a_secret(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[]).await else {
        return;
    };
    let body = json!({ "id": "n1", "reference": "x", "status": "in_transit" }).to_string();
    let (status, answer) = post_notice(&app, &body, signed_at(&body, now())).await;
    assert_eq!(status, 401);
    assert_eq!(answer["error"], "carrier_webhook_disabled");
}
