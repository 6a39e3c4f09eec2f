//! The back-office: who may see what (anonymous → sign-in, shopper → 403,
//! support vs owner), CSRF on every form, the audit log, the setup link and
//! the conversation inbox with take over / reply / note / release.

use kedai::admin::{self, Role};
use kedai::chat::store::{conversation, message};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::helpers::{Backend, Browser, TestApp, between, spawn_app_with, visitor_cookie};

pub(crate) const PASSWORD: &str = "correct horse battery";

impl Browser {
    /// A browser on the back-office's sign-in page.
    async fn open_admin(app: &TestApp) -> Browser {
        Browser::open_at(app, "/admin/login", "kedai_admin").await
    }

    pub(crate) async fn sign_in(app: &TestApp, email: &str) -> Browser {
        let mut browser = Browser::open_admin(app).await;
        let response = browser
            .post(
                app,
                "/admin/login",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(response.status(), 303, "{email} signs in");
        assert_eq!(response.headers()["location"], "/admin");
        assert!(browser.session.is_some());
        browser
    }
}

pub(crate) async fn app_with_admins(backend: Backend) -> Option<TestApp> {
    let app = spawn_app_with(backend, &[]).await?;
    for (email, role) in [
        ("owner@shop.test", Role::Owner),
        ("staff@shop.test", Role::Staff),
        ("support@shop.test", Role::Support),
    ] {
        admin::create(&app.context.writer, email, "", role, PASSWORD)
            .await
            .unwrap();
    }
    Some(app)
}

async fn authorization_follows_roles(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    // Anonymous: every page leads to the sign-in page.
    for path in [
        "/admin",
        "/admin/conversations",
        "/admin/conversations/1",
        "/admin/audit",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/admin/login", "{path}");
    }
    // A signed-in shopper is refused, not invited to sign in.
    let shopper = shopper_session(&app).await;
    let response = app
        .client
        .get(format!("{}/admin", app.address))
        .header("Cookie", shopper)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);

    let support = Browser::sign_in(&app, "support@shop.test").await;
    assert_eq!(support.get(&app, "/admin").await.status(), 200);
    assert_eq!(
        support.get(&app, "/admin/conversations").await.status(),
        200
    );
    assert_eq!(
        support.get(&app, "/admin/audit").await.status(),
        403,
        "support cannot read the audit log"
    );
    let staff = Browser::sign_in(&app, "staff@shop.test").await;
    assert_eq!(staff.get(&app, "/admin/audit").await.status(), 403);
    let owner = Browser::sign_in(&app, "owner@shop.test").await;
    let audit = owner.get(&app, "/admin/audit").await;
    assert_eq!(audit.status(), 200);
    let html = audit.text().await.unwrap();
    assert!(
        html.contains("support@shop.test") && html.contains("sign_in"),
        "sign-ins are audited"
    );

    // Wrong password: 401 and no session; the throttle holds after 5 tries.
    let mut stranger = Browser::open_admin(&app).await;
    let response = stranger
        .post(
            &app,
            "/admin/login",
            &[
                ("email", "owner@shop.test"),
                ("password", "wrong password!"),
            ],
        )
        .await;
    assert_eq!(response.status(), 401);
    assert!(stranger.session.is_none());
    let mut last = 0;
    for _ in 0..6 {
        last = stranger
            .post(
                &app,
                "/admin/login",
                &[
                    ("email", "owner@shop.test"),
                    ("password", "wrong password!"),
                ],
            )
            .await
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
}

#[tokio::test]
async fn authorization_follows_roles_sqlite() {
    authorization_follows_roles(Backend::Sqlite).await;
}

#[tokio::test]
async fn authorization_follows_roles_postgres() {
    authorization_follows_roles(Backend::Postgres).await;
}

/// A signed-in shopper's session cookie.
pub(crate) async fn shopper_session(app: &TestApp) -> String {
    let response = app.get("/account/signup").await;
    let visitor = visitor_cookie(&response).unwrap();
    let html = response.text().await.unwrap();
    let csrf = between(&html, "name=\"csrf_token\" value=\"", "\"")[0].to_string();
    let response = app
        .client
        .post(format!("{}/account/signup", app.address))
        .header("Cookie", &visitor)
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("name", "Siti"),
            ("email", "siti@example.com"),
            ("phone", ""),
            ("password", "a long shopper password"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let session = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .find(|v| v.starts_with("kedai_session="))
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    format!("{visitor}; {session}")
}

#[tokio::test]
async fn the_inbox_takes_over_replies_notes_and_releases_with_csrf_and_audit() {
    let Some(app) = app_with_admins(Backend::Sqlite).await else {
        return;
    };
    // A shopper wrote; the bot answered.
    let phone = "+60121110060";
    crate::chat::whatsapp_signed(&app, phone, "hello", "SMadm1").await;
    app.context.chat.drain(100).await.unwrap();
    let conv = conversation::Entity::find()
        .filter(conversation::Column::Identity.eq(phone))
        .one(&app.context.db)
        .await
        .unwrap()
        .unwrap();
    let path = format!("/admin/conversations/{}", conv.id);

    let mut support = Browser::sign_in(&app, "support@shop.test").await;
    let list = support
        .get(&app, "/admin/conversations")
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains(phone), "the inbox lists the conversation");
    let page = support.get(&app, &path).await.text().await.unwrap();
    assert!(page.contains("hello") && page.contains("Take over"));

    // Without the CSRF token nothing changes.
    let forged = support
        .post_with(&app, &format!("{path}/takeover"), "forged", &[])
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        kedai::chat::store::conversation(&app.context.db, conv.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        "bot"
    );

    assert_eq!(
        support
            .post(&app, &format!("{path}/takeover"), &[])
            .await
            .status(),
        303
    );
    let page = support.get(&app, &path).await.text().await.unwrap();
    assert!(
        page.contains("Release to the assistant"),
        "the holder sees reply and release"
    );
    assert_eq!(
        support
            .post(
                &app,
                &format!("{path}/reply"),
                &[("text", "Hi, Nadia here. How can I help?")]
            )
            .await
            .status(),
        303
    );
    assert_eq!(
        support
            .post(
                &app,
                &format!("{path}/note"),
                &[("text", "Regular customer; VIP.")]
            )
            .await
            .status(),
        303
    );
    // Another admin cannot reply while support holds it.
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let held = staff
        .post(&app, &format!("{path}/reply"), &[("text", "me too")])
        .await;
    assert_eq!(
        held.headers()["location"].to_str().unwrap(),
        format!("{path}?notice=not_taken")
    );
    assert_eq!(
        support
            .post(&app, &format!("{path}/release"), &[])
            .await
            .status(),
        303
    );

    let history = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conv.id))
        .all(&app.context.db)
        .await
        .unwrap();
    let human: Vec<&message::Model> = history.iter().filter(|m| m.role == "human").collect();
    assert_eq!(human.len(), 2);
    assert_eq!(
        human[0].status, "sent",
        "the reply went out through the messaging adapter"
    );
    assert_eq!(human[1].kind, "note");
    assert_eq!(human[1].status, "recorded", "a note is never sent");
    let sent = kedai::platform::messaging::list(&app.context.db, Some(phone), 10)
        .await
        .unwrap();
    assert!(
        sent.iter()
            .any(|m| m.body == "Hi, Nadia here. How can I help?")
    );
    assert!(!sent.iter().any(|m| m.body.contains("VIP")));

    let entries = admin::audit_log(&app.context.db, 50).await.unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .filter(|e| e.admin_email == "support@shop.test")
        .map(|e| e.action.as_str())
        .collect();
    for action in [
        "conversation_takeover",
        "conversation_reply",
        "conversation_note",
        "conversation_release",
    ] {
        assert!(actions.contains(&action), "{action} audited: {actions:?}");
    }
    let takeover = entries
        .iter()
        .find(|e| e.action == "conversation_takeover")
        .unwrap();
    assert!(takeover.before.as_deref().unwrap().contains("\"bot\""));
    assert!(takeover.after.as_deref().unwrap().contains("\"human\""));
}

#[tokio::test]
async fn an_empty_install_offers_a_one_time_setup_link() {
    let Some(app) = spawn_app_with(Backend::Sqlite, &[]).await else {
        return;
    };
    assert_eq!(admin::count(&app.context.db).await.unwrap(), 0);
    let token = admin::issue_setup_token(&app.context.writer)
        .await
        .unwrap()
        .unwrap();
    let path = format!("/admin/setup/{token}");
    let response = app.get(&path).await;
    assert_eq!(response.status(), 200);
    let visitor = visitor_cookie(&response).unwrap();
    let html = response.text().await.unwrap();
    let csrf = between(&html, "name=\"csrf_token\" value=\"", "\"")[0].to_string();
    let post = |password: &'static str| {
        app.client
            .post(format!("{}{path}", app.address))
            .header("Cookie", &visitor)
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("name", "Aminah"),
                ("email", "aminah@shop.test"),
                ("password", password),
            ])
            .send()
    };
    assert_eq!(
        post("short").await.unwrap().status(),
        422,
        "a short password is refused"
    );
    assert_eq!(post(PASSWORD).await.unwrap().status(), 303);
    assert_eq!(admin::count(&app.context.db).await.unwrap(), 1);
    assert_eq!(app.get(&path).await.status(), 404, "the link works once");
    assert!(
        admin::issue_setup_token(&app.context.writer)
            .await
            .unwrap()
            .is_none()
    );
    Browser::sign_in(&app, "aminah@shop.test").await;
}

#[tokio::test]
async fn kedai_admin_create_reads_the_password_from_stdin() {
    use std::io::Write;
    let Some(app) = spawn_app_with(Backend::Sqlite, &[]).await else {
        return;
    };
    let url = app.database.url().to_string();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kedai"));
        for (key, _) in std::env::vars() {
            if key.starts_with("KEDAI") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let mut child = command
            .args([
                "admin",
                "create",
                "--email",
                "Nadia@Shop.test",
                "--role",
                "support",
                "--name",
                "Nadia",
            ])
            .env("KEDAI__DATABASE__URL", url)
            .env("KEDAI__LOG__LEVEL", "error")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{PASSWORD}\n").as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        printed.contains("created support admin nadia@shop.test"),
        "{printed}"
    );
    assert!(
        !printed.contains(PASSWORD),
        "a password given on stdin is not echoed"
    );
    let browser = Browser::sign_in(&app, "nadia@shop.test").await;
    assert_eq!(browser.get(&app, "/admin/audit").await.status(), 403);
}

#[tokio::test]
async fn the_simulator_is_off_when_configured_off() {
    let Some(app) = spawn_app_with(Backend::Sqlite, &[("admin.simulator", "false")]).await else {
        return;
    };
    admin::create(
        &app.context.writer,
        "owner@shop.test",
        "",
        Role::Owner,
        PASSWORD,
    )
    .await
    .unwrap();
    let owner = Browser::sign_in(&app, "owner@shop.test").await;
    assert_eq!(owner.get(&app, "/admin/simulator").await.status(), 404);
    let page = owner.get(&app, "/admin").await.text().await.unwrap();
    assert!(!page.contains("/admin/simulator"), "not in the navigation");
}

/// An app whose order confirmations die: Twilio without an approved
/// template cannot send outside the 24-hour window (Twilio is never called).
async fn app_with_a_dead_letter(backend: Backend) -> Option<(TestApp, wiremock::MockServer)> {
    let twilio = wiremock::MockServer::start().await;
    let twilio_uri = twilio.uri();
    let app = spawn_app_with(
        backend,
        &[
            ("messaging.kind", "twilio"),
            ("twilio.account_sid", "AC123"),
            ("twilio.auth_token", "secret"),
            ("twilio.from", "whatsapp:+14155238886"),
            ("twilio.api_base", twilio_uri.as_str()),
        ],
    )
    .await?;
    for (email, role) in [
        ("staff@shop.test", Role::Staff),
        ("support@shop.test", Role::Support),
    ] {
        admin::create(&app.context.writer, email, "", role, PASSWORD)
            .await
            .unwrap();
    }
    crate::shop::paid_order(
        &app.context.writer,
        &crate::shop::Buyer::opted_in("+60123456789"),
        1,
    )
    .await;
    let step = crate::shop::drain(&app).await;
    assert_eq!(step.dead, 1, "{step:?}");
    Some((app, twilio))
}

async fn dead_notify(app: &TestApp) -> Vec<kedai::events::DeliveryView> {
    kedai::events::list_deliveries(
        &app.context.db,
        &kedai::events::DeliveryFilter {
            handler: Some("notify".into()),
            status: Some(kedai::events::DeliveryStatus::Dead),
            limit: 10,
        },
    )
    .await
    .unwrap()
}

/// The events page lists handlers, dead letters and recent events; staff
/// replay one dead letter, a handler's dead letters or a time range (CSRF,
/// audited); support sees the page but cannot replay.
async fn dead_letters_are_listed_and_replayed_from_the_events_page(backend: Backend) {
    let Some((app, _twilio)) = app_with_a_dead_letter(backend).await else {
        return;
    };
    for path in ["/admin/events", "/admin/messages"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/admin/login");
    }
    let dead = dead_notify(&app).await;
    assert_eq!(dead.len(), 1);
    let dead_id = dead[0].id.to_string();

    // Support: sees the dead letter, has no replay buttons, and is refused.
    let mut support = Browser::sign_in(&app, "support@shop.test").await;
    let html = support
        .get(&app, "/admin/events")
        .await
        .text()
        .await
        .unwrap();
    let dead_table = between(&html, "id=\"dead-letters\"", "</table>")[0];
    assert!(dead_table.contains("notify"), "{html}");
    assert!(dead_table.contains("order.paid"), "{html}");
    assert!(!html.contains("/admin/events/replay"), "{html}");
    assert!(html.contains("id=\"recent-events\""), "{html}");
    let refused = support
        .post(
            &app,
            "/admin/events/replay",
            &[("what", "one"), ("id", &dead_id)],
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(dead_notify(&app).await.len(), 1);

    // Staff: a forged form is refused; a real one replays the one letter.
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let html = staff.get(&app, "/admin/events").await.text().await.unwrap();
    assert!(html.contains("Replay all 1 dead"), "{html}");
    let forged = staff
        .post_with(
            &app,
            "/admin/events/replay",
            "forged",
            &[("what", "one"), ("id", &dead_id)],
        )
        .await;
    assert_eq!(forged.status(), 403);
    assert_eq!(dead_notify(&app).await.len(), 1);
    let replayed = staff
        .post(
            &app,
            "/admin/events/replay",
            &[("what", "one"), ("id", &dead_id)],
        )
        .await;
    assert_eq!(replayed.status(), 303);
    assert_eq!(
        replayed.headers()["location"],
        "/admin/events?notice=replayed:1"
    );
    assert!(dead_notify(&app).await.is_empty());
    let html = staff
        .get(&app, "/admin/events?notice=replayed:1")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Replayed 1 delivery."), "{html}");
    // Still no template: it dies again, and the handler's replay takes it.
    let step = crate::shop::drain(&app).await;
    assert_eq!(step.dead, 1, "{step:?}");
    let replayed = staff
        .post(
            &app,
            "/admin/events/replay",
            &[("what", "handler"), ("handler", "notify")],
        )
        .await;
    assert_eq!(
        replayed.headers()["location"],
        "/admin/events?notice=replayed:1"
    );
    assert!(dead_notify(&app).await.is_empty());
    crate::shop::drain(&app).await;

    // A time range to one handler: every event in it that the analytics
    // rule matches (the order's payment, its shipment) goes to it again.
    let analysed = kedai::events::list_deliveries(
        &app.context.db,
        &kedai::events::DeliveryFilter {
            handler: Some("analytics".into()),
            status: None,
            limit: 100,
        },
    )
    .await
    .unwrap()
    .len();
    assert!(analysed >= 1);
    let now = time::OffsetDateTime::now_utc();
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    let from = (now - time::Duration::hours(1)).format(format).unwrap();
    let to = (now + time::Duration::hours(1)).format(format).unwrap();
    let replayed = staff
        .post(
            &app,
            "/admin/events/replay",
            &[
                ("what", "range"),
                ("handler", "analytics"),
                ("from", &from),
                ("to", &to),
            ],
        )
        .await;
    assert_eq!(
        replayed.headers()["location"],
        format!("/admin/events?notice=replayed:{analysed}").as_str()
    );
    for (from, to, why) in [
        (to.as_str(), from.as_str(), "reversed"),
        ("yesterday", to.as_str(), "not a time"),
    ] {
        let refused = staff
            .post(
                &app,
                "/admin/events/replay",
                &[
                    ("what", "range"),
                    ("handler", "analytics"),
                    ("from", from),
                    ("to", to),
                ],
            )
            .await;
        assert_eq!(
            refused.headers()["location"],
            "/admin/events?notice=bad_range",
            "{why}"
        );
    }
    let unknown = staff
        .post(
            &app,
            "/admin/events/replay",
            &[("what", "handler"), ("handler", "nobody")],
        )
        .await;
    assert_eq!(
        unknown.headers()["location"],
        "/admin/events?notice=unknown_handler"
    );

    // Every replay is in the audit log, with who did it.
    let entries = admin::audit_log(&app.context.db, 50).await.unwrap();
    let replays: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.action.starts_with("events_replay_"))
        .map(|e| (e.action.as_str(), e.admin_email.as_str()))
        .collect();
    assert_eq!(
        replays,
        [
            ("events_replay_range", "staff@shop.test"),
            ("events_replay_handler", "staff@shop.test"),
            ("events_replay_one", "staff@shop.test"),
        ]
    );
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_events_page_sqlite() {
    dead_letters_are_listed_and_replayed_from_the_events_page(Backend::Sqlite).await;
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_from_the_events_page_postgres() {
    dead_letters_are_listed_and_replayed_from_the_events_page(Backend::Postgres).await;
}

/// The outbox page lists every WhatsApp message with its status, newest
/// first, and finds a number however the admin types it.
#[tokio::test]
async fn the_message_outbox_lists_messages_by_number() {
    let Some(app) = app_with_admins(Backend::Sqlite).await else {
        return;
    };
    let order = crate::shop::paid_order(
        &app.context.writer,
        &crate::shop::Buyer::opted_in("+60123456789"),
        1,
    )
    .await;
    crate::shop::drain(&app).await;
    let support = Browser::sign_in(&app, "support@shop.test").await;
    let html = support
        .get(&app, "/admin/messages?to=%2B60+12-345+6789")
        .await
        .text()
        .await
        .unwrap();
    let table = between(&html, "id=\"messages\"", "</table>")[0];
    assert!(table.contains("+60123456789"), "{html}");
    assert!(table.contains("order_paid"), "{html}");
    assert!(table.contains("recorded"), "{html}");
    assert!(table.contains(&crate::shop::order_number(&order)), "{html}");
    let html = support
        .get(&app, "/admin/messages?to=%2B60111111111")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("No messages to +60111111111."), "{html}");
}

/// Where a form post sent the browser.
fn location(response: &reqwest::Response) -> &str {
    response.headers()["location"].to_str().unwrap()
}

async fn order_status_of(app: &TestApp, public_id: &str) -> (String, Option<String>) {
    let view = kedai::orders::find_by_public_id(&app.context.db, public_id)
        .await
        .unwrap()
        .unwrap();
    (view.order.status, view.shipment.map(|s| s.status))
}

/// Orders: everyone sees the list and filters it; staff mark a parcel
/// shipped (with its tracking number, which reaches the shopper on
/// WhatsApp) and delivered, refund a paid order and cancel an unpaid one;
/// support cannot; every action needs the CSRF token and is audited.
async fn staff_ship_deliver_refund_and_cancel_orders(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let writer = &app.context.writer;
    let phone = "+60123456789";
    let shipped = crate::shop::paid_order(writer, &crate::shop::Buyer::opted_in(phone), 1).await;
    let refunded = crate::shop::paid_order(writer, &crate::shop::Buyer::silent(), 2).await;
    let (unpaid, _) = crate::shop::unpaid_order(writer, &crate::shop::Buyer::silent(), 1).await;
    crate::shop::drain(&app).await;
    let number = crate::shop::order_number(&shipped);
    assert_eq!(
        order_status_of(&app, &shipped).await,
        ("fulfilling".into(), Some("pending".into()))
    );

    // Support: the list and its filters, the order page without actions.
    let mut support = Browser::sign_in(&app, "support@shop.test").await;
    let html = support
        .get(&app, "/admin/orders")
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("3 orders"), "{html}");
    let by_number = support
        .get(&app, &format!("/admin/orders?customer={number}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(by_number.contains("1 order<"), "{by_number}");
    let by_phone = support
        .get(&app, "/admin/orders?customer=%2B60+12-345+6789")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        by_phone.contains(&number) && by_phone.contains("1 order<"),
        "{by_phone}"
    );
    let pending = support
        .get(&app, "/admin/orders?status=pending_payment")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        pending.contains(&crate::shop::order_number(&unpaid)) && pending.contains("1 order<"),
        "{pending}"
    );
    let flagged = support
        .get(&app, "/admin/orders?attention=1")
        .await
        .text()
        .await
        .unwrap();
    assert!(flagged.contains("No orders match."), "{flagged}");
    let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(2)).date();
    let later = support
        .get(&app, &format!("/admin/orders?from={tomorrow}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(later.contains("0 orders"), "{later}");
    let detail = support
        .get(&app, &format!("/admin/orders/{shipped}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(detail.contains("Being packed"), "{detail}");
    assert!(detail.contains("id=\"timeline\""), "{detail}");
    assert!(!detail.contains("Mark shipped"), "{detail}");
    let refused = support
        .post(
            &app,
            &format!("/admin/orders/{shipped}/ship"),
            &[("tracking_number", "MY1")],
        )
        .await;
    assert_eq!(refused.status(), 403);
    assert_eq!(support.get(&app, "/admin/orders/nope").await.status(), 404);

    // Staff: ship (a tracking number is required), then deliver.
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let detail = staff
        .get(&app, &format!("/admin/orders/{shipped}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(detail.contains("Mark shipped"), "{detail}");
    let forged = staff
        .post_with(
            &app,
            &format!("/admin/orders/{shipped}/ship"),
            "forged",
            &[("tracking_number", "MY1")],
        )
        .await;
    assert_eq!(forged.status(), 403);
    let response = staff
        .post(
            &app,
            &format!("/admin/orders/{shipped}/ship"),
            &[("tracking_number", " ")],
        )
        .await;
    assert!(location(&response).ends_with("notice=tracking_needed"));
    let response = staff
        .post(
            &app,
            &format!("/admin/orders/{shipped}/ship"),
            &[("tracking_number", "MY123456789")],
        )
        .await;
    assert_eq!(
        response.headers()["location"],
        format!("/admin/orders/{shipped}?notice=shipped").as_str()
    );
    assert_eq!(
        order_status_of(&app, &shipped).await,
        ("shipped".into(), Some("in_transit".into()))
    );
    crate::shop::drain(&app).await;
    let told = crate::shop::messages_to(&app, phone).await;
    assert!(
        told.iter().any(|m| m.body.contains("MY123456789")),
        "{told:#?}"
    );
    let detail = staff
        .get(&app, &format!("/admin/orders/{shipped}?notice=shipped"))
        .await
        .text()
        .await
        .unwrap();
    assert!(detail.contains("tracking"), "{detail}");
    assert!(detail.contains("MY123456789"), "{detail}");
    let response = staff
        .post(&app, &format!("/admin/orders/{shipped}/deliver"), &[])
        .await;
    assert!(location(&response).ends_with("notice=delivered"));
    assert_eq!(
        order_status_of(&app, &shipped).await,
        ("delivered".into(), Some("delivered".into()))
    );
    // Delivering again changes nothing.
    let response = staff
        .post(&app, &format!("/admin/orders/{shipped}/deliver"), &[])
        .await;
    assert!(location(&response).ends_with("notice=unchanged"));

    // Refund (test-mode payments) and cancel an unpaid order.
    let response = staff
        .post(
            &app,
            &format!("/admin/orders/{refunded}/refund"),
            &[("restock", "on")],
        )
        .await;
    assert!(location(&response).ends_with("notice=refunded"));
    assert_eq!(order_status_of(&app, &refunded).await.0, "refunded");
    let response = staff
        .post(&app, &format!("/admin/orders/{refunded}/refund"), &[])
        .await;
    assert!(location(&response).ends_with("notice=not_applicable"));
    let response = staff
        .post(&app, &format!("/admin/orders/{unpaid}/cancel"), &[])
        .await;
    assert!(location(&response).ends_with("notice=cancelled"));
    assert_eq!(order_status_of(&app, &unpaid).await.0, "cancelled");

    let entries = admin::audit_log(&app.context.db, 50).await.unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.action.starts_with("order_"))
        .map(|e| (e.action.as_str(), e.target.as_str()))
        .collect();
    let target = |id: &str| format!("order:{id}");
    assert_eq!(
        actions,
        [
            ("order_cancel", target(&unpaid).as_str()),
            ("order_refund", target(&refunded).as_str()),
            ("order_deliver", target(&shipped).as_str()),
            ("order_ship", target(&shipped).as_str()),
        ]
    );
    let ship = entries.iter().find(|e| e.action == "order_ship").unwrap();
    assert!(
        ship.before.as_deref().unwrap().contains("fulfilling"),
        "{ship:?}"
    );
    assert!(
        ship.after.as_deref().unwrap().contains("MY123456789"),
        "{ship:?}"
    );
}

#[tokio::test]
async fn staff_ship_deliver_refund_and_cancel_orders_sqlite() {
    staff_ship_deliver_refund_and_cancel_orders(Backend::Sqlite).await;
}

#[tokio::test]
async fn staff_ship_deliver_refund_and_cancel_orders_postgres() {
    staff_ship_deliver_refund_and_cancel_orders(Backend::Postgres).await;
}

/// A `multipart/form-data` body, as a browser's upload form sends it.
fn multipart(fields: &[(&str, &str)], file: Option<(&str, &[u8])>) -> (String, Vec<u8>) {
    let boundary = "----kedai-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
            )
            .as_bytes(),
        );
    }
    if let Some((file_name, content)) = file {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{file_name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

async fn upload(
    app: &TestApp,
    browser: &Browser,
    csrf: &str,
    key: &str,
    file: Option<(&str, &[u8])>,
) -> reqwest::Response {
    let (content_type, body) = multipart(&[("csrf_token", csrf), ("key", key)], file);
    app.client
        .post(format!("{}/admin/knowledge/upload", app.address))
        .header("Cookie", browser.cookies())
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// The knowledge page: documents with their status, the assistant's own
/// search with the evidence gate's verdict, missing knowledge; staff
/// upload (multipart, CSRF, audited), find and delete a document; support
/// may search but not change anything.
async fn the_knowledge_page_uploads_searches_and_deletes(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    crate::chat::with_demo_knowledge(&app).await;
    let knowledge = &app.context.knowledge;

    let support = Browser::sign_in(&app, "support@shop.test").await;
    let html = support
        .get(&app, "/admin/knowledge")
        .await
        .text()
        .await
        .unwrap();
    let documents = between(&html, "id=\"kb-documents\"", "</table>")[0];
    assert!(documents.contains("indexed"), "{html}");
    assert!(!html.contains("/admin/knowledge/upload"), "{html}");
    let found = support
        .get(&app, "/admin/knowledge?q=how+long+is+delivery+to+sabah")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        found.contains("The assistant would answer from these passages."),
        "{found}"
    );
    let results = between(&found, "id=\"kb-results\"", "</table>")[0];
    assert!(results.to_lowercase().contains("sabah"), "{results}");
    let refused = upload(
        &app,
        &support,
        &support.csrf,
        "policies/gift-wrap.md",
        Some(("gift-wrap.md", b"# Gift wrap\n\nWe wrap gifts.")),
    )
    .await;
    assert_eq!(refused.status(), 403);

    // Staff: a question the shop has no answer for yet…
    let question = "/admin/knowledge?q=what+is+the+capital+of+mongolia";
    let staff = Browser::sign_in(&app, "staff@shop.test").await;
    let before = staff.get(&app, question).await.text().await.unwrap();
    assert!(
        before.contains("the assistant would hand this question to a person"),
        "{before}"
    );
    // …is answered once a document says so.
    let forged = upload(
        &app,
        &staff,
        "forged",
        "",
        Some(("mongolia.md", b"# Gift wrap\n\nWe wrap gifts.")),
    )
    .await;
    assert_eq!(forged.status(), 403);
    let document = "---\ntitle: Our Mongolia pop-up\nkind: page\n---\n# Our Mongolia pop-up\n\nThe capital of Mongolia is Ulaanbaatar, where our pop-up store opens in March.\n";
    let uploaded = upload(
        &app,
        &staff,
        &staff.csrf,
        "",
        Some(("mongolia.md", document.as_bytes())),
    )
    .await;
    assert_eq!(uploaded.status(), 303);
    assert_eq!(
        uploaded.headers()["location"],
        "/admin/knowledge?notice=uploaded&key=mongolia.md"
    );
    knowledge.refresh().await.unwrap();
    let after = staff.get(&app, question).await.text().await.unwrap();
    assert!(
        after.contains("The assistant would answer from these passages."),
        "{after}"
    );
    assert!(
        between(&after, "id=\"kb-results\"", "</table>")[0].contains("Our Mongolia pop-up"),
        "{after}"
    );
    let listed = staff
        .get(&app, "/admin/knowledge")
        .await
        .text()
        .await
        .unwrap();
    assert!(listed.contains("<code>mongolia.md</code>"), "{listed}");

    // Files it cannot take are explained, and nothing is stored.
    for (key, file, notice) in [
        ("", Some(("notes.docx", b"PK..".as_slice())), "format"),
        ("", None, "empty"),
        ("../escape.md", Some(("x.md", b"# x".as_slice())), "bad_key"),
    ] {
        let response = upload(&app, &staff, &staff.csrf, key, file).await;
        assert_eq!(
            response.headers()["location"],
            format!("/admin/knowledge?notice={notice}").as_str(),
            "{key:?}"
        );
    }

    // Delete it again: gone from the list and from the search.
    let mut staff = staff;
    let deleted = staff
        .post(&app, "/admin/knowledge/delete", &[("key", "mongolia.md")])
        .await;
    assert_eq!(
        deleted.headers()["location"],
        "/admin/knowledge?notice=deleted&key=mongolia.md"
    );
    knowledge.refresh().await.unwrap();
    let listed = staff
        .get(&app, "/admin/knowledge")
        .await
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("<code>mongolia.md</code>"), "{listed}");
    let reindexed = staff.post(&app, "/admin/knowledge/reindex", &[]).await;
    assert_eq!(
        reindexed.headers()["location"],
        "/admin/knowledge?notice=reindexed"
    );

    let actions: Vec<String> = admin::audit_log(&app.context.db, 50)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action.starts_with("kb_"))
        .map(|e| format!("{} {}", e.action, e.target))
        .collect();
    assert_eq!(
        actions,
        [
            "kb_reindex kb:*",
            "kb_delete kb:mongolia.md",
            "kb_upload kb:mongolia.md"
        ]
    );
}

#[tokio::test]
async fn the_knowledge_page_uploads_searches_and_deletes_sqlite() {
    the_knowledge_page_uploads_searches_and_deletes(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_knowledge_page_uploads_searches_and_deletes_postgres() {
    the_knowledge_page_uploads_searches_and_deletes(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// The inbox's filters and the live conversation view.

async fn conversation_of(app: &TestApp, phone: &str) -> conversation::Model {
    kedai::chat::store::by_identity(&app.context.db, phone)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{phone} has a conversation"))
}

/// The conversation ids an inbox filter lists (from the rows' links).
async fn inbox(browser: &Browser, app: &TestApp, filter: &str) -> Vec<i64> {
    let html = browser
        .get(app, &format!("/admin/conversations?filter={filter}"))
        .await
        .text()
        .await
        .unwrap();
    let mut ids: Vec<i64> = between(&html, "href=\"/admin/conversations/", "\"")
        .iter()
        .filter_map(|id| id.parse().ok())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

async fn inbox_filters_follow_answers_and_takeovers(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let (chatty, asks_for_person) = ("+60121110071", "+60121110072");
    crate::chat::whatsapp_signed(&app, chatty, "hello", "SMinbox1").await;
    crate::chat::whatsapp_signed(&app, asks_for_person, "can I talk to a human", "SMinbox2").await;
    let chatty = conversation_of(&app, chatty).await.id;
    let person = conversation_of(&app, asks_for_person).await.id;
    let support = Browser::sign_in(&app, "support@shop.test").await;
    let staff = Browser::sign_in(&app, "staff@shop.test").await;

    assert_eq!(
        inbox(&support, &app, "unanswered").await,
        vec![chatty, person],
        "before the assistant's turn both wait"
    );
    app.context.chat.drain(100).await.unwrap();
    assert_eq!(inbox(&support, &app, "all").await, vec![chatty, person]);
    assert_eq!(
        inbox(&support, &app, "unanswered").await,
        vec![person],
        "the assistant answered one; the other waits for a person"
    );
    assert_eq!(inbox(&support, &app, "needs_human").await, vec![person]);
    assert!(inbox(&support, &app, "mine").await.is_empty());

    let mut holder = support;
    let path = format!("/admin/conversations/{person}");
    assert_eq!(
        holder
            .post(&app, &format!("{path}/takeover"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(inbox(&holder, &app, "mine").await, vec![person]);
    assert!(
        inbox(&staff, &app, "mine").await.is_empty(),
        "taken over by someone else is not mine"
    );
    assert!(inbox(&holder, &app, "needs_human").await.is_empty());
    assert!(
        inbox(&holder, &app, "unanswered").await.is_empty(),
        "taken over: the holder's, no longer waiting in the shared queue"
    );
    // The shopper writes again while a person holds the conversation.
    crate::chat::whatsapp_signed(&app, asks_for_person, "are you there?", "SMinbox3").await;
    app.context.chat.drain(100).await.unwrap();
    assert_eq!(
        inbox(&holder, &app, "unanswered").await,
        vec![person],
        "a message to the person who holds it waits for them"
    );
    assert_eq!(
        holder
            .post(
                &app,
                &format!("{path}/reply"),
                &[("text", "Hi, Aina here.")]
            )
            .await
            .status(),
        303
    );
    assert!(
        inbox(&holder, &app, "unanswered").await.is_empty(),
        "a person's reply answers the waiting message"
    );
}

#[tokio::test]
async fn inbox_filters_follow_answers_and_takeovers_sqlite() {
    inbox_filters_follow_answers_and_takeovers(Backend::Sqlite).await;
}

#[tokio::test]
async fn inbox_filters_follow_answers_and_takeovers_postgres() {
    inbox_filters_follow_answers_and_takeovers(Backend::Postgres).await;
}

/// Server-sent events read off a streaming response.
struct EventReader {
    response: reqwest::Response,
    buffer: String,
}

impl EventReader {
    /// The next event named `name` (skipping comments and others), within
    /// `wait`; its data lines joined with newlines.
    async fn next(&mut self, name: &str, wait: std::time::Duration) -> Option<String> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("event: ") {
                        event = value;
                    } else if let Some(value) = line.strip_prefix("data: ") {
                        data.push(value);
                    }
                }
                if event == name {
                    return Some(data.join("\n"));
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?
                .unwrap()?;
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// The next `update` whose log contains `text`.
    async fn update_with(&mut self, text: &str) -> String {
        let wait = std::time::Duration::from_secs(10);
        loop {
            let log = self
                .next("update", wait)
                .await
                .unwrap_or_else(|| panic!("an update showing {text:?} within {wait:?}"));
            if log.contains(text) {
                return log;
            }
        }
    }
}

async fn the_conversation_page_is_live(backend: Backend) {
    let Some(app) = app_with_admins(backend).await else {
        return;
    };
    let phone = "+60121110081";
    crate::chat::whatsapp_signed(&app, phone, "hello there", "SMlive1").await;
    let id = conversation_of(&app, phone).await.id;
    let path = format!("/admin/conversations/{id}");
    let support = Browser::sign_in(&app, "support@shop.test").await;

    let page = support.get(&app, &path).await.text().await.unwrap();
    assert!(page.contains(&format!("data-live=\"{path}/live\"")));
    assert!(
        page.contains("/static/js/admin."),
        "the page loads the live script"
    );

    // Anonymous visitors and unknown conversations get no stream.
    let anonymous = app.get(&format!("{path}/live")).await;
    assert_eq!(anonymous.status(), 303);
    assert_eq!(location(&anonymous), "/admin/login");
    assert_eq!(
        support
            .get(&app, "/admin/conversations/999999/live")
            .await
            .status(),
        404
    );

    let response = support.get(&app, &format!("{path}/live")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert!(
        response.headers().get("content-encoding").is_none()
            || response.headers()["content-encoding"] == "identity",
        "events are not held back by compression"
    );
    let mut events = EventReader {
        response,
        buffer: String::new(),
    };
    let first = events.update_with("hello there").await;
    assert!(first.contains("State: <strong>assistant</strong>"));

    // The assistant's turn: the shopper's message is answered and a reply
    // appears, without a reload.
    app.context.chat.drain(100).await.unwrap();
    let answered = events.update_with("chat-assistant").await;
    assert!(answered.contains("answered"), "{answered}");

    // A new inbound message, escaped like the page.
    crate::chat::whatsapp_signed(&app, phone, "is <b>batik</b> washable?", "SMlive2").await;
    let inbound = events.update_with("washable").await;
    assert!(
        inbound.contains("is &#60;b&#62;batik&#60;/b&#62; washable?")
            || inbound.contains("is &lt;b&gt;batik&lt;/b&gt; washable?"),
        "{inbound}"
    );
    assert!(!inbound.contains("<b>batik</b>"));

    // A takeover by another admin changes the state line.
    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    staff.post(&app, &format!("{path}/takeover"), &[]).await;
    events.update_with("taken over by staff@shop.test").await;

    // A delivery tick: the reply's status callback moves it to delivered.
    let sent = kedai::platform::messaging::list(&app.context.db, Some(phone), 10)
        .await
        .unwrap();
    let reply = sent
        .iter()
        .find(|m| m.provider_sid.is_some() && m.status != "delivered")
        .expect("the assistant's reply was handed to the provider");
    let applied = kedai::platform::messaging::apply_status(
        &app.context.writer,
        reply.provider_sid.as_deref().unwrap(),
        "delivered",
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(applied, kedai::platform::messaging::StatusUpdate::Applied);
    events.update_with("delivered").await;
}

#[tokio::test]
async fn the_conversation_page_is_live_sqlite() {
    the_conversation_page_is_live(Backend::Sqlite).await;
}

#[tokio::test]
async fn the_conversation_page_is_live_postgres() {
    the_conversation_page_is_live(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------
// Refunds through Stripe.

/// With `payments.kind = "stripe"`, staff refund an order from its page:
/// Stripe's Refunds API is called (bearer key, the payment intent, an
/// idempotency key per order) before the order is marked refunded; a
/// second click does not ask Stripe again; a refusal from Stripe changes
/// nothing and says so.
#[tokio::test]
async fn staff_refund_through_stripe_when_configured() {
    use wiremock::matchers::{body_string_contains, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let stripe = MockServer::start().await;
    let uri = stripe.uri();
    let Some(app) = spawn_app_with(
        Backend::Sqlite,
        &[
            ("payments.kind", "stripe"),
            ("stripe.secret_key", "sk_test_kedai"),
            ("stripe.webhook_secret", "whsec_admin_refund"),
            ("stripe.api_base", uri.as_str()),
        ],
    )
    .await
    else {
        return;
    };
    admin::create(
        &app.context.writer,
        "staff@shop.test",
        "",
        Role::Staff,
        PASSWORD,
    )
    .await
    .unwrap();
    let writer = &app.context.writer;
    let refunded = crate::shop::paid_order(writer, &crate::shop::Buyer::silent(), 1).await;
    let refused = crate::shop::paid_order(writer, &crate::shop::Buyer::silent(), 1).await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(header("authorization", "Bearer sk_test_kedai"))
        .and(header(
            "idempotency-key",
            format!("kedai-refund-{refunded}").as_str(),
        ))
        .and(body_string_contains(
            format!("payment_intent=pi_{refunded}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "id": "re_test_1", "object": "refund", "status": "succeeded",
            "payment_intent": format!("pi_{refunded}"), "amount": 26700
        })))
        .expect(1)
        .mount(&stripe)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .and(body_string_contains(
            format!("payment_intent=pi_{refused}").as_str(),
        ))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
            "error": {"type": "invalid_request_error", "code": "charge_already_refunded",
                      "message": "Charge ch_1 has already been refunded."}
        })))
        .expect(1)
        .mount(&stripe)
        .await;

    let mut staff = Browser::sign_in(&app, "staff@shop.test").await;
    let page = staff
        .get(&app, &format!("/admin/orders/{refunded}"))
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("through Stripe"), "{page}");
    let done = staff
        .post(
            &app,
            &format!("/admin/orders/{refunded}/refund"),
            &[("restock", "on")],
        )
        .await;
    assert_eq!(
        location(&done),
        format!("/admin/orders/{refunded}?notice=refunded")
    );
    assert_eq!(order_status_of(&app, &refunded).await.0, "refunded");
    // A second click: nothing to refund, Stripe is not asked again.
    let again = staff
        .post(&app, &format!("/admin/orders/{refunded}/refund"), &[])
        .await;
    assert_eq!(
        location(&again),
        format!("/admin/orders/{refunded}?notice=not_applicable")
    );

    let failed = staff
        .post(&app, &format!("/admin/orders/{refused}/refund"), &[])
        .await;
    assert_eq!(
        location(&failed),
        format!("/admin/orders/{refused}?notice=stripe_failed")
    );
    assert_ne!(order_status_of(&app, &refused).await.0, "refunded");
    let page = staff
        .get(
            &app,
            &format!("/admin/orders/{refused}?notice=stripe_failed"),
        )
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("Stripe did not refund the payment"), "{page}");
    stripe.verify().await;

    let actions: Vec<String> = admin::audit_log(&app.context.db, 20)
        .await
        .unwrap()
        .into_iter()
        .map(|e| format!("{} {}", e.action, e.target))
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a.starts_with("order_refund") && a.contains(&refunded)),
        "{actions:?}"
    );
}
