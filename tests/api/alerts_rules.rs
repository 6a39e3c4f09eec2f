//! The alert rules end to end: a rule that fires opens exactly one alert
//! however often and from however many replicas it is evaluated, resolves
//! with a resolved notice, and shows on `/admin/alerts`; the Lark sink gets
//! the cards; vendor throttling reaches the rules; the dashboard draws its
//! chart and every health light; the pages are for admins only.

use std::sync::{Arc, Mutex};

use kedai::admin::{self, Role};
use kedai::alerts::AlertRecord;
use kedai::orders::entity::order;
use kedai::platform::alerts::{Alert, AlertError, AlertSink, AlertState};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::helpers::{
    Backend, Browser, TestApp, TestDatabase, between, spawn_app_with, spawn_on, unescape,
};
use crate::shop::{Buyer, drain, paid_order};

const RULE: &str = "orders_need_attention";

/// Keeps every alert it is handed, in order.
#[derive(Default)]
struct RecordingSink {
    alerts: Mutex<Vec<Alert>>,
}

impl RecordingSink {
    /// (state, title) of each alert of `rule`, in order.
    fn of(&self, rule: &str) -> Vec<(AlertState, String)> {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.rule == rule)
            .map(|a| (a.state, a.title.clone()))
            .collect()
    }

    fn all_of(&self, rule: &str) -> Vec<Alert> {
        self.alerts
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.rule == rule)
            .cloned()
            .collect()
    }
}

#[async_trait::async_trait]
impl AlertSink for RecordingSink {
    fn name(&self) -> &'static str {
        "recording"
    }

    async fn notify(&self, alert: &Alert) -> Result<(), AlertError> {
        self.alerts.lock().unwrap().push(alert.clone());
        Ok(())
    }
}

/// Sets or clears `needs_attention` on every order.
async fn flag_orders(app: &TestApp, needs_attention: bool) {
    order::Entity::update_many()
        .col_expr(order::Column::NeedsAttention, Expr::value(needs_attention))
        .filter(order::Column::Id.gt(0))
        .exec(&app.context.db)
        .await
        .unwrap();
}

async fn open_of(app: &TestApp, rule: &str) -> Vec<AlertRecord> {
    kedai::alerts::open_alerts(&app.context.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.rule == rule)
        .collect()
}

async fn add_admins(app: &TestApp) {
    for (email, role) in [
        ("owner@shop.test", Role::Owner),
        ("support@shop.test", Role::Support),
    ] {
        admin::create(&app.context.writer, email, "", role, crate::admin::PASSWORD)
            .await
            .unwrap();
    }
}

async fn page_of(browser: &Browser, app: &TestApp, path: &str) -> String {
    let response = browser.get(app, path).await;
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// Two replicas on one database, both evaluating: one alert, one firing
/// notice, one resolved notice; a later firing opens a new alert.
async fn a_rule_opens_one_alert_across_replicas_and_resolves(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let database = Arc::new(database);
    let first = spawn_on(database.clone(), &[]).await;
    let second = spawn_on(database, &[]).await;
    add_admins(&first).await;
    let sink = Arc::new(RecordingSink::default());
    let a = first.context.alerting.with_sink(sink.clone());
    let b = second.context.alerting.with_sink(sink.clone());
    assert_ne!(a.replica(), b.replica());

    // Nothing flagged: the rule is judged fine and nothing opens.
    let quiet = a.evaluate_once().await.unwrap();
    assert!(!quiet.firing.contains(&RULE), "{quiet:?}");

    paid_order(&first.context.writer, &Buyer::silent(), 1).await;
    flag_orders(&first, true).await;

    // Both replicas at once, then each again: exactly one opens it.
    let (one, two) = tokio::join!(a.evaluate_once(), b.evaluate_once());
    let (one, two) = (one.unwrap(), two.unwrap());
    assert!(one.firing.contains(&RULE) && two.firing.contains(&RULE));
    let openers = [&one, &two]
        .iter()
        .filter(|e| e.opened.contains(&RULE))
        .count();
    assert_eq!(openers, 1, "{one:?} {two:?}");
    for again in [
        a.evaluate_once().await.unwrap(),
        b.evaluate_once().await.unwrap(),
    ] {
        assert!(again.firing.contains(&RULE) && !again.opened.contains(&RULE));
    }
    let open = open_of(&first, RULE).await;
    assert_eq!(open.len(), 1, "one open alert per rule");
    let alert = &open[0];
    assert_eq!(alert.title, "1 order needs attention");
    assert_eq!(alert.severity, "warning");
    let public_url = first.context.settings.server.public_url.as_str();
    let link = format!(
        "{}/admin/orders?attention=1",
        public_url.trim_end_matches('/')
    );
    assert_eq!(alert.link.as_deref(), Some(link.as_str()));
    assert!(alert.last_seen_at >= alert.opened_at);
    let firing = sink.all_of(RULE);
    assert_eq!(firing.len(), 1, "one firing notice: {firing:?}");
    assert_eq!(firing[0].state, AlertState::Firing);
    assert_eq!(firing[0].link.as_deref(), Some(link.as_str()));

    // The alerts page lists it as open, for any admin.
    let support = Browser::sign_in(&first, "support@shop.test").await;
    let html = page_of(&support, &first, "/admin/alerts").await;
    let open_table = between(&html, "id=\"open-alerts\"", "</table>");
    assert_eq!(open_table.len(), 1, "{html}");
    assert!(open_table[0].contains("1 order needs attention"));
    assert!(open_table[0].contains(RULE));
    assert!(unescape(open_table[0]).contains(&link));
    assert!(html.contains("href=\"/admin/alerts\" aria-current=\"page\""));

    // Fixed: the next evaluation resolves it (shared stores resolve at
    // once), exactly once, with a resolved notice after the firing one.
    flag_orders(&first, false).await;
    let resolved = b.evaluate_once().await.unwrap();
    assert!(resolved.resolved.contains(&RULE), "{resolved:?}");
    let after = a.evaluate_once().await.unwrap();
    assert!(!after.resolved.contains(&RULE), "resolved once: {after:?}");
    assert!(open_of(&first, RULE).await.is_empty());
    let notices = sink.of(RULE);
    assert_eq!(
        notices.iter().map(|(state, _)| *state).collect::<Vec<_>>(),
        vec![AlertState::Firing, AlertState::Resolved],
        "{notices:?}"
    );
    assert_eq!(notices[1].1, "1 order needs attention");
    let resolved_notice = &sink.all_of(RULE)[1];
    assert!(
        resolved_notice.text.starts_with("Resolved after"),
        "{}",
        resolved_notice.text
    );

    let html = page_of(&support, &first, "/admin/alerts").await;
    assert!(html.contains("Nothing is firing."), "{html}");
    let resolved_table = between(&html, "id=\"resolved-alerts\"", "</table>");
    assert!(resolved_table[0].contains("1 order needs attention"));

    // It happens again: a new alert (the resolved one does not block it).
    flag_orders(&first, true).await;
    let again = a.evaluate_once().await.unwrap();
    assert!(again.opened.contains(&RULE), "{again:?}");
    let history = kedai::alerts::resolved_alerts(&first.context.db, 10)
        .await
        .unwrap();
    assert_eq!(history.iter().filter(|h| h.rule == RULE).count(), 1);
    assert_eq!(open_of(&first, RULE).await.len(), 1);
    assert_eq!(sink.of(RULE).len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_opens_one_alert_across_replicas_and_resolves_sqlite() {
    a_rule_opens_one_alert_across_replicas_and_resolves(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_opens_one_alert_across_replicas_and_resolves_postgres() {
    a_rule_opens_one_alert_across_replicas_and_resolves(Backend::Postgres).await;
}

/// The configured Lark sink (a fake Lark webhook) gets the firing card and
/// then the resolved one; a dead letter fires its rule with a link to the
/// events page.
async fn the_lark_sink_gets_firing_and_resolved_cards(backend: Backend) {
    let lark = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/open-apis/bot/v2/hook/alerts"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({ "code": 0, "msg": "success" })),
        )
        .mount(&lark)
        .await;
    let twilio = MockServer::start().await;
    let hook = format!("{}/open-apis/bot/v2/hook/alerts", lark.uri());
    let twilio_uri = twilio.uri();
    let Some(app) = spawn_app_with(
        backend,
        &[
            ("alerts.kind", "lark"),
            ("lark.webhook_url", hook.as_str()),
            // Without a template, order confirmations die (Twilio is never called).
            ("messaging.kind", "twilio"),
            ("twilio.account_sid", "AC123"),
            ("twilio.auth_token", "secret"),
            ("twilio.from", "whatsapp:+14155238886"),
            ("twilio.api_base", twilio_uri.as_str()),
        ],
    )
    .await
    else {
        return;
    };
    paid_order(&app.context.writer, &Buyer::opted_in("+60123456789"), 1).await;
    let step = drain(&app).await;
    assert_eq!(step.dead, 1, "{step:?}");
    flag_orders(&app, true).await;

    let evaluation = app.context.alerting.evaluate_once().await.unwrap();
    assert!(
        evaluation.opened.contains(&"dead_letters"),
        "{evaluation:?}"
    );
    assert!(evaluation.opened.contains(&RULE), "{evaluation:?}");
    let dead = open_of(&app, "dead_letters").await;
    assert!(dead[0].link.as_deref().unwrap().ends_with("/admin/events"));
    assert!(
        dead[0].title.starts_with("Dead letters: 1 new"),
        "{}",
        dead[0].title
    );

    let cards = wait_for_cards(&lark, |text| text.contains("needs attention")).await;
    assert!(cards.contains("Dead letters: 1 new"), "{cards}");
    assert!(cards.contains("/admin/orders?attention=1"), "{cards}");

    flag_orders(&app, false).await;
    let evaluation = app.context.alerting.evaluate_once().await.unwrap();
    assert!(evaluation.resolved.contains(&RULE), "{evaluation:?}");
    let cards = wait_for_cards(&lark, |text| text.contains("Resolved")).await;
    assert!(cards.contains("Resolved"), "{cards}");
}

/// Every card the fake Lark received so far, as one text, once `done`
/// holds for it (or after five seconds).
async fn wait_for_cards(lark: &MockServer, done: impl Fn(&str) -> bool) -> String {
    let started = std::time::Instant::now();
    loop {
        let text: String = lark
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).to_string())
            .collect::<Vec<_>>()
            .join("\n");
        if done(&text) || started.elapsed() > std::time::Duration::from_secs(5) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lark_sink_gets_firing_and_resolved_cards_sqlite() {
    the_lark_sink_gets_firing_and_resolved_cards(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lark_sink_gets_firing_and_resolved_cards_postgres() {
    the_lark_sink_gets_firing_and_resolved_cards(Backend::Postgres).await;
}

/// Twilio answering 429 is counted by the transport and fires the
/// throttling rule; the messaging light shows the last failed call.
async fn twilio_throttling_fires_the_throttling_rule(backend: Backend) {
    let twilio = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/2010-04-01/Accounts/AC123/Messages.json"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "30"))
        .mount(&twilio)
        .await;
    let twilio_uri = twilio.uri();
    let Some(app) = spawn_app_with(
        backend,
        &[
            ("messaging.kind", "twilio"),
            ("twilio.account_sid", "AC123"),
            ("twilio.auth_token", "secret"),
            ("twilio.from", "whatsapp:+14155238886"),
            ("twilio.api_base", twilio_uri.as_str()),
            ("notify.template_order_paid", "HXabc"),
        ],
    )
    .await
    else {
        return;
    };
    add_admins(&app).await;
    let sink = Arc::new(RecordingSink::default());
    let alerting = app.context.alerting.with_sink(sink.clone());
    paid_order(&app.context.writer, &Buyer::opted_in("+60123456789"), 1).await;
    let step = drain(&app).await;
    assert_eq!(step.retried, 1, "the 429 is retried later: {step:?}");

    let evaluation = alerting.evaluate_once().await.unwrap();
    assert!(
        evaluation.opened.contains(&"upstream_throttling"),
        "{evaluation:?}"
    );
    let notices = sink.of("upstream_throttling");
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].1, "Upstream throttling: Twilio ×1");
    // Nothing throttled since: still firing in the database until no
    // replica has seen it for two intervals, so not resolved yet.
    let next = alerting.evaluate_once().await.unwrap();
    assert!(!next.firing.contains(&"upstream_throttling"));
    assert!(!next.resolved.contains(&"upstream_throttling"));

    let owner = Browser::sign_in(&app, "owner@shop.test").await;
    let html = page_of(&owner, &app, "/admin").await;
    let health = between(&html, "id=\"health\"", "</ul>")[0];
    assert!(
        health.contains("health-down") && unescape(health).contains("Twilio: last call failed"),
        "{health}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_throttling_fires_the_throttling_rule_sqlite() {
    twilio_throttling_fires_the_throttling_rule(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_throttling_fires_the_throttling_rule_postgres() {
    twilio_throttling_fires_the_throttling_rule(Backend::Postgres).await;
}

/// The dashboard: today's figures, the 30-day chart (inline SVG, a bar per
/// day, escaped labels), the operations tiles and a light per adapter;
/// anonymous visitors sign in first, shoppers are refused.
async fn the_dashboard_draws_the_chart_and_every_health_light(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[]).await else {
        return;
    };
    add_admins(&app).await;
    for path in ["/admin", "/admin/alerts"] {
        let response = app.get(path).await;
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/admin/login", "{path}");
    }
    let shopper = crate::admin::shopper_session(&app).await;
    for path in ["/admin", "/admin/alerts"] {
        let response = app
            .client
            .get(format!("{}{path}", app.address))
            .header("Cookie", &shopper)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "{path}");
    }

    // Two paid orders today, counted by the analytics handler.
    paid_order(&app.context.writer, &Buyer::silent(), 1).await;
    paid_order(&app.context.writer, &Buyer::silent(), 2).await;
    drain(&app).await;

    let support = Browser::sign_in(&app, "support@shop.test").await;
    let html = page_of(&support, &app, "/admin").await;
    let today = between(&html, "id=\"today\"", "<h2>")[0];
    assert!(
        today.contains("2</span><span class=\"tile-label\">orders today"),
        "{today}"
    );

    let chart = between(&html, "<svg class=\"chart-svg\"", "</svg>");
    assert_eq!(chart.len(), 1, "one inline SVG chart");
    let chart = chart[0];
    assert_eq!(chart.matches("<rect class=\"chart-bar\"").count(), 30);
    assert_eq!(chart.matches("<circle class=\"chart-dot\"").count(), 30);
    let today_key = kedai::analytics::today(app.context.settings.shop.offset()).to_string();
    assert!(
        chart.contains(&format!("<title>{today_key}: 2 orders, RM ")),
        "today's bar says two orders: {chart}"
    );
    assert!(!html.contains("<script"), "no script on the dashboard");

    let operations = between(&html, "id=\"operations\"", "<h2>")[0];
    for label in [
        "5xx rate, last 5 min",
        "p99 latency, last 5 min",
        "database p99, last 5 min",
        "chat dead letters",
        "event dead letters",
    ] {
        assert!(operations.contains(label), "{label}: {operations}");
    }
    assert!(html.contains("open alerts"));

    let health = between(&html, "id=\"health\"", "</ul>")[0];
    for name in [
        "database",
        "cache",
        "chat queue",
        "object store",
        "model",
        "messaging",
    ] {
        assert!(
            health.contains(&format!("<strong>{name}</strong> ok")),
            "{name} is lit green: {health}"
        );
    }
    assert_eq!(health.matches("health-ok").count(), 6, "{health}");
    assert!(
        html.contains("href=\"/admin/alerts\">Alerts</a>"),
        "the nav links the alerts page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_chart_and_every_health_light_sqlite() {
    the_dashboard_draws_the_chart_and_every_health_light(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_the_chart_and_every_health_light_postgres() {
    the_dashboard_draws_the_chart_and_every_health_light(Backend::Postgres).await;
}

/// The rolling window sees the app's own requests: a 404 is no 5xx, and
/// the dashboard's figures move.
async fn requests_reach_the_rolling_window(backend: Backend) {
    let Some(app) = spawn_app_with(backend, &[]).await else {
        return;
    };
    let before = app.context.signals.http.snapshot();
    for _ in 0..5 {
        app.get("/healthz").await;
    }
    app.get("/no-such-page").await;
    let after = app.context.signals.http.snapshot();
    assert!(after.count >= before.count + 6, "{before:?} {after:?}");
    assert_eq!(after.errors, before.errors);
    assert!(
        app.context.signals.database.snapshot().count > 0,
        "statements are observed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_rolling_window_sqlite() {
    requests_reach_the_rolling_window(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_reach_the_rolling_window_postgres() {
    requests_reach_the_rolling_window(Backend::Postgres).await;
}
