//! The Lark alert sink against a fake Lark webhook (wiremock): signed
//! cards, grouping under the rate limit, retries and permanent errors, the
//! body limit. Delays are shrunk through `LarkSinkConfig`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use kedai::platform::alerts::{
    Alert, AlertSink, AlertState, LarkSink, LarkSinkConfig, LarkSinkStats, Severity,
    TRUNCATION_MARKER,
};
use secrecy::SecretString;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

const HOOK_PATH: &str = "/open-apis/bot/v2/hook/test-token-0001";

fn success() -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        r#"{"code":0,"msg":"success","data":{}}"#,
        "application/json",
    )
}

fn lark_error(code: i64, msg: &str) -> ResponseTemplate {
    let body = serde_json::json!({ "code": code, "msg": msg, "data": {} }).to_string();
    ResponseTemplate::new(200).set_body_raw(body, "application/json")
}

fn config(server: &MockServer) -> LarkSinkConfig {
    let mut config = LarkSinkConfig::new(format!("{}{HOOK_PATH}", server.uri()));
    config.initial_backoff = Duration::from_millis(20);
    config.timeout = Duration::from_secs(2);
    config
}

fn alert(title: &str) -> Alert {
    Alert {
        rule: "chat_queue_oldest".into(),
        state: AlertState::Firing,
        severity: Severity::Critical,
        title: title.into(),
        text: "The oldest chat message has waited **4m 10s**.".into(),
        link: Some("https://shop.example/admin/chat?tab=queue".into()),
        at: time::OffsetDateTime::now_utc(),
    }
}

fn bodies(requests: &[Request]) -> Vec<Value> {
    requests
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("a JSON body"))
        .collect()
}

/// Polls `done` on the sink's stats until it holds or `limit` passes.
async fn wait_for(sink: &LarkSink, limit: Duration, done: impl Fn(&LarkSinkStats) -> bool) {
    let start = Instant::now();
    while !done(&sink.stats()) {
        assert!(
            start.elapsed() < limit,
            "timed out; stats: {:?}",
            sink.stats()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The value of one counter series in the Prometheus text, 0 if absent.
fn counter(name_and_labels: &str) -> f64 {
    kedai::ops::metrics::handle()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Records when each request arrived.
#[derive(Clone, Default)]
struct Arrivals(Arc<Mutex<Vec<Instant>>>);

impl Respond for Arrivals {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        self.0.lock().unwrap().push(Instant::now());
        success()
    }
}

#[tokio::test]
async fn one_alert_is_one_signed_card() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(HOOK_PATH))
        .respond_with(success())
        .expect(1)
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.secret = Some(SecretString::from("demo-secret".to_string()));
    let shutdown = CancellationToken::new();
    let sink = LarkSink::start(config, shutdown.clone()).unwrap();
    assert_eq!(sink.name(), "lark");

    sink.notify(&alert("Chat queue is backing up"))
        .await
        .unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 1).await;

    let requests = server.received_requests().await.unwrap();
    assert_eq!(requests.len(), 1);
    let body = &bodies(&requests)[0];
    assert_eq!(body["msg_type"], "interactive");
    assert_eq!(
        body["card"]["header"]["title"]["content"],
        "Chat queue is backing up"
    );
    assert_eq!(body["card"]["header"]["template"], "red");
    let elements = body["card"]["elements"].as_array().unwrap();
    assert_eq!(
        elements[0]["text"]["content"],
        "The oldest chat message has waited **4m 10s**."
    );
    let button = elements
        .iter()
        .find(|e| e["tag"] == "action")
        .map(|e| &e["actions"][0])
        .expect("an action with the admin link");
    assert_eq!(button["tag"], "button");
    assert_eq!(button["url"], "https://shop.example/admin/chat?tab=queue");

    // The signature, recomputed here from the timestamp Lark received.
    let timestamp = body["timestamp"].as_str().expect("timestamp is a string");
    let seconds: i64 = timestamp.parse().unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - seconds).abs() < 60,
        "timestamp {seconds} vs now {now}"
    );
    let key = format!("{timestamp}\ndemo-secret");
    let mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(body["sign"], expected.as_str());

    // The path is the credential: it is what we posted to, nothing else.
    assert_eq!(requests[0].url.path(), HOOK_PATH);
    assert_eq!(
        requests[0]
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    shutdown.cancel();
    sink.stopped().await;
}

#[tokio::test]
async fn without_a_secret_the_body_is_unsigned() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success())
        .mount(&server)
        .await;
    let sink = LarkSink::start(config(&server), CancellationToken::new()).unwrap();
    let mut resolved = alert("Chat queue is backing up");
    resolved.state = AlertState::Resolved;
    resolved.link = None;
    sink.notify(&resolved).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 1).await;

    let body = &bodies(&server.received_requests().await.unwrap())[0];
    let fields = body.as_object().unwrap();
    assert!(!fields.contains_key("timestamp"), "{body}");
    assert!(!fields.contains_key("sign"), "{body}");
    assert_eq!(body["card"]["header"]["template"], "green");
    assert_eq!(
        body["card"]["header"]["title"]["content"],
        "Resolved: Chat queue is backing up"
    );
    let elements = body["card"]["elements"].as_array().unwrap();
    assert!(elements.iter().all(|e| e["tag"] != "action"), "{body}");
}

#[tokio::test]
async fn a_burst_is_grouped_within_the_rate_limit_and_nothing_is_lost() {
    let server = MockServer::start().await;
    let arrivals = Arrivals::default();
    Mock::given(method("POST"))
        .respond_with(arrivals.clone())
        .mount(&server)
        .await;
    let sink = LarkSink::start(config(&server), CancellationToken::new()).unwrap();

    // Twelve alerts over ~120 ms: the first five go alone, the other seven
    // wait for the one-second window and go together.
    let started = Instant::now();
    for i in 0..12 {
        sink.notify(&alert(&format!("burst alert #{i:02}")))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 12).await;

    let times = arrivals.0.lock().unwrap().clone();
    let in_first_second = times
        .iter()
        .filter(|t| t.duration_since(started) < Duration::from_secs(1))
        .count();
    assert!(
        (1..=5).contains(&in_first_second),
        "{in_first_second} requests in the first second"
    );
    for window in times.windows(6) {
        assert!(
            window[5].duration_since(window[0]) >= Duration::from_secs(1),
            "six requests within one second: {times:?}"
        );
    }
    assert!(
        times.len() < 12,
        "the burst was not grouped: {} requests",
        times.len()
    );

    let bodies = bodies(&server.received_requests().await.unwrap());
    let all_text: Vec<String> = bodies
        .iter()
        .map(|b| {
            format!(
                "{}\n{}",
                b["card"]["header"]["title"]["content"],
                b["card"]["elements"][0]["text"]["content"]
            )
        })
        .collect();
    for i in 0..12 {
        let title = format!("burst alert #{i:02}");
        let seen = all_text.iter().filter(|t| t.contains(&title)).count();
        assert_eq!(seen, 1, "{title} appears {seen} times in {all_text:#?}");
    }
    assert!(
        bodies
            .iter()
            .any(|b| b["card"]["header"]["title"]["content"]
                .as_str()
                .is_some_and(|t| t.contains(" alerts ("))),
        "no grouped card: {all_text:#?}"
    );
    let stats = sink.stats();
    assert_eq!(stats.messages_sent as usize, times.len());
    assert_eq!(stats.alerts_dropped, 0);
}

#[tokio::test]
async fn a_server_error_is_retried_then_delivered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(success())
        .with_priority(2)
        .mount(&server)
        .await;
    let sink = LarkSink::start(config(&server), CancellationToken::new()).unwrap();
    sink.notify(&alert("retry after 500")).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 1).await;

    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    let stats = sink.stats();
    assert_eq!(stats.failed_attempts, 1);
    assert_eq!(stats.alerts_dropped, 0);
}

#[tokio::test]
async fn a_frequency_limit_code_is_retried_then_delivered() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(lark_error(9499, "too many request"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(success())
        .with_priority(2)
        .mount(&server)
        .await;
    let before = counter(r#"kedai_alerts_failed_total{sink="lark",reason="rate_limited"}"#);
    let sink = LarkSink::start(config(&server), CancellationToken::new()).unwrap();
    sink.notify(&alert("retry after 9499")).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 1).await;

    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert_eq!(sink.stats().failed_attempts, 1);
    let after = counter(r#"kedai_alerts_failed_total{sink="lark",reason="rate_limited"}"#);
    assert!(after >= before + 1.0, "{before} -> {after}");
}

#[tokio::test]
async fn a_bad_signature_is_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(lark_error(
            19021,
            "sign match fail or timestamp is not within one hour from current time",
        ))
        .mount(&server)
        .await;
    let rejected = r#"kedai_alerts_failed_total{sink="lark",reason="rejected"}"#;
    let dropped = r#"kedai_alerts_dropped_total{sink="lark"}"#;
    let (rejected_before, dropped_before) = (counter(rejected), counter(dropped));
    let mut config = config(&server);
    config.secret = Some(SecretString::from("the-wrong-secret".to_string()));
    let sink = LarkSink::start(config, CancellationToken::new()).unwrap();
    sink.notify(&alert("signed wrongly")).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_dropped == 1).await;

    // Several backoff periods later, still only the one request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
    let stats = sink.stats();
    assert_eq!((stats.failed_attempts, stats.alerts_sent), (1, 0));
    assert!(counter(rejected) >= rejected_before + 1.0);
    assert!(counter(dropped) >= dropped_before + 1.0);
}

#[tokio::test]
async fn retries_stop_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.max_attempts = 3;
    config.initial_backoff = Duration::from_millis(5);
    let sink = LarkSink::start(config, CancellationToken::new()).unwrap();
    sink.notify(&alert("never delivered")).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_dropped == 1).await;

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
    assert_eq!(sink.stats().failed_attempts, 3);
}

#[tokio::test]
async fn a_huge_text_is_truncated_under_the_body_limit() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success())
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.secret = Some(SecretString::from("demo-secret".to_string()));
    let sink = LarkSink::start(config, CancellationToken::new()).unwrap();
    let mut huge = alert("A very long alert");
    huge.text = "stack frame \"quoted\" ünïcödé\n".repeat(5_000);
    sink.notify(&huge).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 1).await;

    let requests = server.received_requests().await.unwrap();
    let raw = &requests[0].body;
    assert!(raw.len() < 20_000, "{} bytes", raw.len());
    assert!(
        raw.len() > 15_000,
        "cut far more than needed: {} bytes",
        raw.len()
    );
    let body: Value = serde_json::from_slice(raw).unwrap();
    let text = body["card"]["elements"][0]["text"]["content"]
        .as_str()
        .unwrap();
    assert!(
        text.ends_with(TRUNCATION_MARKER),
        "{}",
        &text[text.len() - 40..]
    );
    assert!(text.starts_with("stack frame \"quoted\" ünïcödé\n"));
}

#[tokio::test]
async fn an_alert_waiting_at_shutdown_is_still_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success())
        .mount(&server)
        .await;
    let mut config = config(&server);
    config.per_second = 1;
    let shutdown = CancellationToken::new();
    let sink = LarkSink::start(config, shutdown.clone()).unwrap();
    sink.notify(&alert("first")).await.unwrap();
    wait_for(&sink, Duration::from_secs(5), |s| s.alerts_sent == 1).await;
    // The second waits for the rate limit when shutdown begins.
    sink.notify(&alert("second")).await.unwrap();
    shutdown.cancel();
    sink.stopped().await;

    let stats = sink.stats();
    assert_eq!((stats.alerts_sent, stats.alerts_dropped), (2, 0));
    assert_eq!(server.received_requests().await.unwrap().len(), 2);
    assert!(sink.notify(&alert("too late")).await.is_err());
}
