//! Lark (Feishu) custom bot: alerts as interactive cards in a group chat.
//!
//! Wire format: `POST {webhook_url}` (`https://open.larksuite.com/open-apis/bot/v2/hook/<token>`;
//! the token in the path is the credential, so only the host is ever
//! logged) with a JSON body `{"msg_type": "interactive", "card": {...}}`.
//! The card is Lark's message card JSON: a `header` (plain-text `title`
//! and a colour `template`), then `elements`: a `div` of `lark_md` text, a
//! `note`, and an `action` with a `button` whose `url` opens the admin page.
//! When the bot has signature verification on, the body also carries
//! `timestamp` (unix seconds, as a string) and `sign`: base64 of
//! HMAC-SHA256 keyed with `"{timestamp}\n{secret}"` over an empty message.
//! Lark answers HTTP 200 with `{"code": 0, "msg": "success"}`; any other
//! `code` is an error (9499 and 11232: too frequent; 19021: bad signature;
//! 19024: missing keyword).
//!
//! The one idea: [`LarkSink::notify`] only puts the alert in a bounded
//! in-memory queue; one background task drains it. Lark allows 5 messages
//! a second and 100 a minute per bot, and a body of 20 KB, so the task
//! waits for a slot in both sliding windows before every request (retries
//! included) and then sends *everything* that is waiting as one card ("3
//! alerts", a line each). Under a burst, alerts are grouped rather than
//! refused; a full queue only counts the newcomers by rule and reports the
//! count in the next card. A request that fails on the network, with a
//! 5xx or 429, or with a frequency-limit `code` is retried with
//! exponential backoff; any other error `code` (a wrong secret, a missing
//! keyword) will not fix itself and is given up at once. Whatever cannot
//! be delivered is logged with its titles and counted in
//! `kedai_alerts_dropped_total`; nothing disappears silently.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::{Alert, AlertError, AlertSink, AlertState, Severity};
use crate::config::LarkSettings;

type HmacSha256 = Hmac<Sha256>;

/// Appended to a card's text when it had to be cut to fit the body limit.
pub const TRUNCATION_MARKER: &str = "… (truncated)";
/// The most alerts put in one card while the sink runs; more wait for the
/// next slot. (At shutdown everything left goes into one last card.)
pub const MAX_GROUP: usize = 50;

const SINK: &str = "lark";
/// Lark's `code`s for "too many requests": worth retrying later.
const RATE_LIMIT_CODES: &[i64] = &[9499, 11232];
/// The longest wait between two attempts, `Retry-After` included.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Kept between our count and Lark's, whose clock starts when the
/// request arrives rather than when we send it.
const RATE_MARGIN: Duration = Duration::from_millis(50);
/// Longest card title, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Longest line per alert in a grouped card, in characters.
const GROUP_LINE_CHARS: usize = 300;
/// How many rules a full queue counts by name; the rest are "other".
const OVERFLOW_RULES: usize = 20;
/// How long the last card at shutdown may wait for a rate-limit slot.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(2);

/// How a [`LarkSink`] delivers. [`LarkSinkConfig::new`] gives Lark's
/// limits and production delays; tests shrink the delays.
#[derive(Clone)]
pub struct LarkSinkConfig {
    /// The custom bot's webhook URL. Its path holds the bot's token.
    pub webhook_url: String,
    /// The bot's signing secret, when signature verification is on.
    pub secret: Option<SecretString>,
    /// Messages per second (Lark: 5).
    pub per_second: u32,
    /// Messages per minute (Lark: 100).
    pub per_minute: u32,
    /// Requests per card, the first included, before it is dropped.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubles after each failure.
    pub initial_backoff: Duration,
    /// Per request, connection included.
    pub timeout: Duration,
    /// The serialized body stays strictly under this (Lark: 20 KB).
    pub max_body_bytes: usize,
    /// Alerts waiting in memory; beyond this they are only counted.
    pub queue_capacity: usize,
}

impl LarkSinkConfig {
    /// Lark's documented limits, and delays for production.
    pub fn new(webhook_url: impl Into<String>) -> Self {
        LarkSinkConfig {
            webhook_url: webhook_url.into(),
            secret: None,
            per_second: 5,
            per_minute: 100,
            max_attempts: 5,
            initial_backoff: Duration::from_secs(1),
            timeout: Duration::from_secs(10),
            max_body_bytes: 20_000,
            queue_capacity: 1_000,
        }
    }

    /// From `[lark]`: the webhook URL, and the secret unless it is empty.
    pub fn from_settings(settings: &LarkSettings) -> anyhow::Result<Self> {
        let mut config = LarkSinkConfig::new(settings.webhook_url.trim());
        let secret = settings.secret.expose_secret().trim();
        if !secret.is_empty() {
            config.secret = Some(SecretString::from(secret.to_string()));
        }
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let url = Url::parse(&self.webhook_url).context("the Lark webhook URL does not parse")?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            bail!("the Lark webhook URL must be an http(s) URL with a host");
        }
        if self.per_second == 0 || self.per_minute == 0 {
            bail!("the Lark rate limits must be at least 1");
        }
        if self.max_attempts == 0 {
            bail!("the Lark sink needs at least one attempt");
        }
        if self.max_body_bytes < 2_000 {
            bail!("the Lark body limit must be at least 2000 bytes");
        }
        if self.queue_capacity == 0 {
            bail!("the Lark alert queue needs room for at least one alert");
        }
        Ok(())
    }

    /// `scheme://host[:port]`: what logs may say about the webhook.
    fn endpoint(&self) -> String {
        match Url::parse(&self.webhook_url) {
            Ok(url) => {
                let host = url.host_str().unwrap_or_default();
                match url.port() {
                    Some(port) => format!("{}://{host}:{port}", url.scheme()),
                    None => format!("{}://{host}", url.scheme()),
                }
            }
            Err(_) => "<invalid url>".to_string(),
        }
    }
}

impl fmt::Debug for LarkSinkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LarkSinkConfig")
            .field(
                "webhook_url",
                &format_args!("{}/<redacted>", self.endpoint()),
            )
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("per_second", &self.per_second)
            .field("per_minute", &self.per_minute)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("timeout", &self.timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

/// The `sign` field Lark expects: base64 of HMAC-SHA256 keyed with
/// `"{timestamp}\n{secret}"` over an empty message.
pub fn lark_signature(timestamp: i64, secret: &SecretString) -> String {
    let key = format!("{timestamp}\n{}", secret.expose_secret());
    let mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC accepts keys of any length");
    BASE64.encode(mac.finalize().into_bytes())
}

/// What one sink has done since it started; for tests and diagnostics
/// (the process-wide picture is in the Prometheus counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LarkSinkStats {
    /// Cards Lark accepted.
    pub messages_sent: u64,
    /// Alerts in those cards, counted ones from a full queue included.
    pub alerts_sent: u64,
    /// Requests that failed (each retry counts).
    pub failed_attempts: u64,
    /// Alerts given up on, after retries or on a permanent error.
    pub alerts_dropped: u64,
    /// Alerts that arrived while the queue was full and were only counted.
    pub alerts_coalesced: u64,
}

#[derive(Default)]
struct Counters {
    messages_sent: AtomicU64,
    alerts_sent: AtomicU64,
    failed_attempts: AtomicU64,
    alerts_dropped: AtomicU64,
    alerts_coalesced: AtomicU64,
}

/// Alerts that did not fit in the queue: counted by rule, shown as one
/// line of the next card.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Overflow {
    count: usize,
    by_rule: BTreeMap<String, usize>,
}

impl Overflow {
    fn add(&mut self, rule: &str, count: usize) {
        self.count += count;
        let key = if self.by_rule.contains_key(rule) || self.by_rule.len() < OVERFLOW_RULES {
            rule
        } else {
            "other"
        };
        *self.by_rule.entry(key.to_string()).or_default() += count;
    }

    fn absorb(&mut self, other: Overflow) {
        for (rule, count) in other.by_rule {
            self.add(&rule, count);
        }
    }

    fn describe(&self) -> String {
        self.by_rule
            .iter()
            .map(|(rule, count)| format!("{rule} ×{count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What is waiting for the delivery task.
#[derive(Default)]
struct Waiting {
    alerts: VecDeque<Alert>,
    overflow: Overflow,
    /// Set by the task as it takes the last card at shutdown; later
    /// alerts are refused rather than left behind unseen.
    closed: bool,
}

struct Shared {
    waiting: Mutex<Waiting>,
    wake: Notify,
    counters: Counters,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn has_work(&self) -> bool {
        let waiting = self.lock();
        !waiting.alerts.is_empty() || waiting.overflow.count > 0
    }

    /// Moves waiting alerts into `group` until it holds `limit`, and the
    /// overflow count with them.
    fn take_into(&self, group: &mut Group, limit: usize, close: bool) {
        let mut waiting = self.lock();
        while group.alerts.len() < limit {
            match waiting.alerts.pop_front() {
                Some(alert) => group.alerts.push(alert),
                None => break,
            }
        }
        let overflow = std::mem::take(&mut waiting.overflow);
        group.overflow.absorb(overflow);
        if close {
            waiting.closed = true;
        }
    }
}

/// The alerts one card carries.
#[derive(Debug, Clone, Default)]
struct Group {
    alerts: Vec<Alert>,
    overflow: Overflow,
}

impl Group {
    fn len(&self) -> usize {
        self.alerts.len() + self.overflow.count
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn titles(&self) -> String {
        let mut titles: Vec<String> = self.alerts.iter().map(|a| a.title.clone()).collect();
        if self.overflow.count > 0 {
            titles.push(format!("(queue full: {})", self.overflow.describe()));
        }
        titles.join(" | ")
    }
}

/// Posts alerts to a Lark custom bot from a background task; see the
/// module note.
pub struct LarkSink {
    shared: Arc<Shared>,
    /// A child of the shutdown token, cancelled as well when the sink is
    /// dropped, so the task never outlives its last sender.
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl LarkSink {
    /// Checks the configuration and spawns the delivery task on the
    /// current tokio runtime. The task stops when `shutdown` is cancelled
    /// (or the sink is dropped), after one last attempt to deliver what is
    /// waiting.
    pub fn start(config: LarkSinkConfig, shutdown: CancellationToken) -> anyhow::Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current()
            .context("the Lark alert sink must start inside the tokio runtime")?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()
            .context("building the HTTP client for Lark")?;
        let shared = Arc::new(Shared {
            waiting: Mutex::new(Waiting::default()),
            wake: Notify::new(),
            counters: Counters::default(),
            capacity: config.queue_capacity,
        });
        let stop = shutdown.child_token();
        let worker = Worker {
            shared: Arc::clone(&shared),
            client,
            endpoint: config.endpoint(),
            limiter: RateLimiter::new(config.per_second, config.per_minute),
            config,
        };
        let task = runtime.spawn(worker.run(stop.clone()));
        Ok(LarkSink {
            shared,
            stop,
            task: Mutex::new(Some(task)),
        })
    }

    /// What this sink has done so far.
    pub fn stats(&self) -> LarkSinkStats {
        let c = &self.shared.counters;
        LarkSinkStats {
            messages_sent: c.messages_sent.load(Ordering::Relaxed),
            alerts_sent: c.alerts_sent.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            alerts_dropped: c.alerts_dropped.load(Ordering::Relaxed),
            alerts_coalesced: c.alerts_coalesced.load(Ordering::Relaxed),
        }
    }

    /// Waits until the delivery task has finished (after shutdown). Only
    /// the first caller waits; later calls return at once.
    pub async fn stopped(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

impl Drop for LarkSink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait::async_trait]
impl AlertSink for LarkSink {
    fn name(&self) -> &'static str {
        SINK
    }

    async fn notify(&self, alert: &Alert) -> Result<(), AlertError> {
        {
            let mut waiting = self.shared.lock();
            if waiting.closed {
                return Err(AlertError::Closed(SINK));
            }
            if waiting.alerts.len() < self.shared.capacity {
                waiting.alerts.push_back(alert.clone());
            } else {
                if waiting.overflow.count == 0 {
                    tracing::warn!(
                        sink = SINK,
                        capacity = self.shared.capacity,
                        "the alert queue is full; further alerts are counted into the next card"
                    );
                }
                waiting.overflow.add(&alert.rule, 1);
                self.shared
                    .counters
                    .alerts_coalesced
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!("kedai_alerts_coalesced_total", "sink" => SINK).increment(1);
            }
        }
        self.shared.wake.notify_one();
        Ok(())
    }
}

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Sent,
    /// Worth trying again later; the reason is a metric label.
    Retry {
        reason: &'static str,
        retry_after: Option<Duration>,
    },
    /// Will fail the same way again.
    Permanent {
        reason: &'static str,
    },
}

/// Classifies Lark's answer: its HTTP status and the `code` of its JSON
/// body, if it had one.
fn classify(status: u16, code: Option<i64>) -> Outcome {
    let retry = |reason| Outcome::Retry {
        reason,
        retry_after: None,
    };
    match (status, code) {
        (_, Some(code)) if RATE_LIMIT_CODES.contains(&code) => retry("rate_limited"),
        (429, _) => retry("http_429"),
        (500..=599, _) => retry("http_5xx"),
        (200..=299, None | Some(0)) => Outcome::Sent,
        (_, Some(_)) => Outcome::Permanent { reason: "rejected" },
        (400..=499, None) => Outcome::Permanent { reason: "http_4xx" },
        _ => Outcome::Permanent {
            reason: "http_status",
        },
    }
}

/// Sliding one-second and one-minute windows over the requests sent.
#[derive(Debug)]
struct RateLimiter {
    per_second: usize,
    per_minute: usize,
    sent: VecDeque<Instant>,
}

impl RateLimiter {
    fn new(per_second: u32, per_minute: u32) -> Self {
        RateLimiter {
            per_second: per_second.max(1) as usize,
            per_minute: per_minute.max(1) as usize,
            sent: VecDeque::new(),
        }
    }

    /// How long to wait before the next request fits in both windows.
    fn delay(&mut self, now: Instant) -> Duration {
        let minute = Duration::from_secs(60) + RATE_MARGIN;
        while self
            .sent
            .front()
            .is_some_and(|&t| now.saturating_duration_since(t) >= minute)
        {
            self.sent.pop_front();
        }
        let mut wait = Duration::ZERO;
        for (limit, window) in [
            (self.per_second, Duration::from_secs(1) + RATE_MARGIN),
            (self.per_minute, minute),
        ] {
            // The window is full when the limit-th most recent request is
            // still inside it; the next one may go once that one leaves.
            if self.sent.len() >= limit {
                let oldest_in_window = self.sent[self.sent.len() - limit];
                wait = wait.max((oldest_in_window + window).saturating_duration_since(now));
            }
        }
        wait
    }

    fn record(&mut self, at: Instant) {
        self.sent.push_back(at);
    }
}

/// The pieces of a card, before the body limit is applied.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Card {
    title: String,
    template: &'static str,
    text: String,
    note: String,
    link: Option<String>,
}

fn template(group: &Group) -> &'static str {
    let firing = group
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing);
    if firing.clone().any(|a| a.severity == Severity::Critical) {
        "red"
    } else if firing.count() > 0 || group.overflow.count > 0 {
        "orange"
    } else {
        "green"
    }
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn first_chars(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn card(group: &Group) -> Card {
    let template = template(group);
    if let ([alert], 0) = (group.alerts.as_slice(), group.overflow.count) {
        let title = match alert.state {
            AlertState::Firing => alert.title.clone(),
            AlertState::Resolved => format!("Resolved: {}", alert.title),
        };
        return Card {
            title: first_chars(&title, MAX_TITLE_CHARS),
            template,
            text: alert.text.clone(),
            note: format!(
                "{} · {} · {} · {}",
                alert.rule,
                alert.severity.as_str(),
                alert.state.as_str(),
                rfc3339(alert.at)
            ),
            link: alert.link.clone(),
        };
    }
    let firing = group
        .alerts
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    let resolved = group.alerts.len() - firing;
    let mut lines = Vec::with_capacity(group.alerts.len() + 1);
    for alert in &group.alerts {
        let detail = alert.text.lines().next().unwrap_or_default();
        let mut line = format!(
            "- **[{} · {}]** {}",
            alert.state.as_str(),
            alert.severity.as_str(),
            alert.title
        );
        if !detail.is_empty() {
            line.push_str(": ");
            line.push_str(detail);
        }
        let mut line = first_chars(&line, GROUP_LINE_CHARS);
        if let Some(link) = &alert.link {
            line.push_str(&format!(" [open]({link})"));
        }
        lines.push(line);
    }
    if group.overflow.count > 0 {
        lines.push(format!(
            "- …and {} more that arrived while the queue was full: {}",
            group.overflow.count,
            group.overflow.describe()
        ));
    }
    let mut counts = Vec::new();
    if firing > 0 {
        counts.push(format!("{firing} firing"));
    }
    if resolved > 0 {
        counts.push(format!("{resolved} resolved"));
    }
    if group.overflow.count > 0 {
        counts.push(format!("{} counted", group.overflow.count));
    }
    let first = group.alerts.iter().map(|a| a.at).min();
    let last = group.alerts.iter().map(|a| a.at).max();
    let note = match (first, last) {
        (Some(first), Some(last)) if first != last => {
            format!("{} to {}", rfc3339(first), rfc3339(last))
        }
        (Some(at), _) => rfc3339(at),
        _ => String::new(),
    };
    Card {
        title: format!("{} alerts ({})", group.len(), counts.join(", ")),
        template,
        text: lines.join("\n"),
        note,
        link: None,
    }
}

/// The JSON body for `card`, signed when `signature` is given as
/// `(timestamp, sign)`.
fn body_json(card: &Card, text: &str, signature: Option<&(String, String)>) -> Value {
    let mut elements = vec![json!({
        "tag": "div",
        "text": { "tag": "lark_md", "content": text },
    })];
    if !card.note.is_empty() {
        elements.push(json!({
            "tag": "note",
            "elements": [{ "tag": "plain_text", "content": card.note }],
        }));
    }
    if let Some(link) = &card.link {
        elements.push(json!({
            "tag": "action",
            "actions": [{
                "tag": "button",
                "text": { "tag": "plain_text", "content": "Open in admin" },
                "type": "primary",
                "url": link,
            }],
        }));
    }
    let mut body = json!({
        "msg_type": "interactive",
        "card": {
            "config": { "wide_screen_mode": true },
            "header": {
                "title": { "tag": "plain_text", "content": card.title },
                "template": card.template,
            },
            "elements": elements,
        },
    });
    if let Some((timestamp, sign)) = signature {
        body["timestamp"] = Value::String(timestamp.clone());
        body["sign"] = Value::String(sign.clone());
    }
    body
}

/// The largest index `<= max` that starts a character of `text`.
fn char_floor(text: &str, max: usize) -> usize {
    if max >= text.len() {
        return text.len();
    }
    (0..=max)
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

/// How many bytes `c` takes inside a JSON string as serde_json writes it.
fn escaped_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Serializes the card, cutting its text (and marking the cut) so that
/// the body is shorter than `max_bytes`. `None` if even an empty text is
/// too long, which only a huge title or link could cause.
fn encode(card: &Card, signature: Option<&(String, String)>, max_bytes: usize) -> Option<Vec<u8>> {
    let serialize = |text: &str| serde_json::to_vec(&body_json(card, text, signature)).ok();
    let body = serialize(&card.text)?;
    if body.len() < max_bytes {
        return Some(body);
    }
    // The text appears once in the body, so the body is the rest plus the
    // text's escaped length: keep the longest prefix that fits the budget.
    let marker: usize = TRUNCATION_MARKER.chars().map(escaped_len).sum();
    let rest = serialize(TRUNCATION_MARKER)?.len() - marker;
    let budget = max_bytes.checked_sub(1 + rest + marker)?;
    let mut used = 0;
    let mut keep = 0;
    for (index, c) in card.text.char_indices() {
        used += escaped_len(c);
        if used > budget {
            break;
        }
        keep = index + c.len_utf8();
    }
    loop {
        let text = format!("{}{TRUNCATION_MARKER}", &card.text[..keep]);
        let body = serialize(&text)?;
        if body.len() < max_bytes {
            return Some(body);
        }
        // Only reached if the escaping above differs from serde_json's: a
        // raw byte serializes to at least one byte, so cutting the excess
        // from the text shortens the body by at least as much.
        if keep == 0 {
            return None;
        }
        keep = char_floor(&card.text, keep.saturating_sub(body.len() + 1 - max_bytes));
    }
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The delivery task's state.
struct Worker {
    shared: Arc<Shared>,
    client: reqwest::Client,
    config: LarkSinkConfig,
    /// `scheme://host[:port]` of the webhook: never the token path.
    endpoint: String,
    limiter: RateLimiter,
}

impl Worker {
    async fn run(mut self, stop: CancellationToken) {
        let mut group = Group::default();
        let mut failures = 0u32;
        loop {
            if group.is_empty() {
                failures = 0;
                if !self.wait_for_work(&stop).await {
                    break;
                }
            }
            // A slot in both windows before every request, retries included.
            let wait = self.limiter.delay(Instant::now());
            if !wait.is_zero() {
                tokio::select! {
                    biased;
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            // Whatever arrived meanwhile rides along in the same card.
            self.shared.take_into(&mut group, MAX_GROUP, false);
            self.limiter.record(Instant::now());
            match self.attempt(&group).await {
                Outcome::Sent => self.sent(std::mem::take(&mut group)),
                Outcome::Permanent { reason } => {
                    self.failed(reason);
                    self.give_up(std::mem::take(&mut group), reason);
                }
                Outcome::Retry {
                    reason,
                    retry_after,
                } => {
                    self.failed(reason);
                    failures += 1;
                    if failures >= self.config.max_attempts {
                        self.give_up(std::mem::take(&mut group), "attempts_exhausted");
                        continue;
                    }
                    let delay = retry_after
                        .unwrap_or_else(|| self.backoff(failures))
                        .min(MAX_BACKOFF);
                    tokio::select! {
                        biased;
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.last_card(group).await;
    }

    /// Waits until an alert is waiting; false once the sink is stopping.
    async fn wait_for_work(&self, stop: &CancellationToken) -> bool {
        loop {
            if self.shared.has_work() {
                return true;
            }
            // `notify_one` keeps a permit when nobody waits, so an alert
            // queued between the check and here still wakes us.
            tokio::select! {
                biased;
                _ = stop.cancelled() => return false,
                _ = self.shared.wake.notified() => {}
            }
        }
    }

    /// At shutdown: one attempt for everything still waiting, if a rate
    /// slot opens soon; otherwise (or if it fails) it is dropped, loudly.
    async fn last_card(&mut self, mut group: Group) {
        self.shared.take_into(&mut group, usize::MAX, true);
        if group.is_empty() {
            return;
        }
        let wait = self.limiter.delay(Instant::now());
        if wait > SHUTDOWN_WAIT {
            self.give_up(group, "shutdown");
            return;
        }
        tokio::time::sleep(wait).await;
        self.limiter.record(Instant::now());
        match self.attempt(&group).await {
            Outcome::Sent => self.sent(group),
            Outcome::Retry { reason, .. } | Outcome::Permanent { reason } => {
                self.failed(reason);
                self.give_up(group, "shutdown");
            }
        }
    }

    /// `initial_backoff × 2^(failures-1)`, ±20 % jitter.
    fn backoff(&self, failures: u32) -> Duration {
        let base = self
            .config
            .initial_backoff
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(MAX_BACKOFF);
        base.mul_f64(0.8 + 0.4 * fastrand::f64())
    }

    /// One request for the card of `group`, signed afresh.
    async fn attempt(&self, group: &Group) -> Outcome {
        let card = card(group);
        let signature = self.config.secret.as_ref().map(|secret| {
            let timestamp = unix_now();
            (timestamp.to_string(), lark_signature(timestamp, secret))
        });
        let Some(body) = encode(&card, signature.as_ref(), self.config.max_body_bytes) else {
            tracing::warn!(
                sink = SINK,
                limit = self.config.max_body_bytes,
                "an alert card is too large for Lark even without its text"
            );
            return Outcome::Permanent {
                reason: "too_large",
            };
        };
        let response = self
            .client
            .post(&self.config.webhook_url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let response = match response {
            Ok(response) => response,
            Err(error) => {
                // Without the URL: its path is the bot's token.
                let error = error.without_url();
                let reason = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                tracing::warn!(
                    sink = SINK,
                    endpoint = %self.endpoint,
                    alerts = group.len(),
                    reason,
                    error = %error,
                    "posting alerts to Lark failed"
                );
                return Outcome::Retry {
                    reason,
                    retry_after: None,
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after = crate::platform::retry_after(response.headers());
        let text = response.text().await.unwrap_or_default();
        let reply: Option<Value> = serde_json::from_str(&text).ok();
        // The older webhook answers carried `StatusCode` instead of `code`.
        let code = reply.as_ref().and_then(|reply| {
            reply
                .get("code")
                .or_else(|| reply.get("StatusCode"))
                .and_then(Value::as_i64)
        });
        let outcome = match classify(status, code) {
            Outcome::Retry { reason, .. } => Outcome::Retry {
                reason,
                retry_after,
            },
            other => other,
        };
        if outcome != Outcome::Sent {
            let message = reply
                .as_ref()
                .and_then(|reply| reply.get("msg").or_else(|| reply.get("StatusMessage")))
                .and_then(Value::as_str)
                .map(|m| first_chars(m, 200))
                .unwrap_or_default();
            tracing::warn!(
                sink = SINK,
                endpoint = %self.endpoint,
                alerts = group.len(),
                status,
                code,
                message,
                outcome = ?outcome,
                "Lark did not accept the alert card"
            );
        }
        outcome
    }

    fn sent(&self, group: Group) {
        let counters = &self.shared.counters;
        counters.messages_sent.fetch_add(1, Ordering::Relaxed);
        counters
            .alerts_sent
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        metrics::counter!("kedai_alerts_sent_total", "sink" => SINK).increment(group.len() as u64);
        tracing::debug!(
            sink = SINK,
            alerts = group.len(),
            "alerts delivered to Lark"
        );
    }

    fn failed(&self, reason: &'static str) {
        self.shared
            .counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("kedai_alerts_failed_total", "sink" => SINK, "reason" => reason)
            .increment(1);
    }

    fn give_up(&self, group: Group, reason: &'static str) {
        self.shared
            .counters
            .alerts_dropped
            .fetch_add(group.len() as u64, Ordering::Relaxed);
        metrics::counter!("kedai_alerts_dropped_total", "sink" => SINK)
            .increment(group.len() as u64);
        tracing::warn!(
            sink = SINK,
            endpoint = %self.endpoint,
            alerts = group.len(),
            reason,
            titles = %group.titles(),
            "alerts could not be delivered to Lark and were dropped"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(title: &str, state: AlertState, severity: Severity) -> Alert {
        Alert {
            rule: "chat_queue_oldest".into(),
            state,
            severity,
            title: title.into(),
            text: "oldest message waits 4m".into(),
            link: Some("https://shop.example/admin/chat".into()),
            at: time::macros::datetime!(2026-11-02 10:00 UTC),
        }
    }

    #[test]
    fn signature_matches_an_independent_computation() {
        // python3: base64(hmac.new(b"1700000000\ndemo-secret", b"", sha256).digest())
        let secret = SecretString::from("demo-secret".to_string());
        assert_eq!(
            lark_signature(1_700_000_000, &secret),
            "mYHw2R2SOm8Rw/sne3lQdmz4sOfntKR+1P/8RKKTwmA="
        );
        let secret = SecretString::from("b8aVzEjLqGwhNQHK3fBa5e".to_string());
        assert_eq!(
            lark_signature(1_599_360_473, &secret),
            "wwXY8bie7abJWiOBzYVIzQ3PRS8zBzscZhjavlUYAP4="
        );
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(200, Some(0)), Outcome::Sent);
        assert_eq!(classify(200, None), Outcome::Sent);
        for (status, code, reason) in [
            (200, Some(9499), "rate_limited"),
            (200, Some(11232), "rate_limited"),
            (400, Some(11232), "rate_limited"),
            (429, None, "http_429"),
            (500, None, "http_5xx"),
            (503, Some(1), "http_5xx"),
        ] {
            assert_eq!(
                classify(status, code),
                Outcome::Retry {
                    reason,
                    retry_after: None
                },
                "{status} {code:?}"
            );
        }
        assert_eq!(
            classify(200, Some(19021)),
            Outcome::Permanent { reason: "rejected" }
        );
        assert_eq!(
            classify(400, Some(19024)),
            Outcome::Permanent { reason: "rejected" }
        );
        assert_eq!(
            classify(404, None),
            Outcome::Permanent { reason: "http_4xx" }
        );
    }

    #[test]
    fn the_limiter_keeps_both_sliding_windows() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(5, 7);
        for i in 0..5 {
            assert_eq!(limiter.delay(start), Duration::ZERO, "request {i}");
            limiter.record(start);
        }
        // The sixth waits until the first has left the one-second window.
        assert_eq!(limiter.delay(start), Duration::from_secs(1) + RATE_MARGIN);
        let later = start + Duration::from_secs(2);
        limiter.record(later);
        limiter.record(later);
        // Seven in the minute: the next waits for the first to leave it.
        assert_eq!(limiter.delay(later), Duration::from_secs(58) + RATE_MARGIN);
        let much_later = start + Duration::from_secs(120);
        assert_eq!(limiter.delay(much_later), Duration::ZERO);
        assert!(limiter.sent.is_empty());
    }

    #[test]
    fn colours_follow_state_and_severity() {
        let one = |a: Alert| Group {
            alerts: vec![a],
            overflow: Overflow::default(),
        };
        let critical = alert("a", AlertState::Firing, Severity::Critical);
        let warning = alert("b", AlertState::Firing, Severity::Warning);
        let resolved = alert("c", AlertState::Resolved, Severity::Critical);
        assert_eq!(card(&one(critical.clone())).template, "red");
        assert_eq!(card(&one(warning.clone())).template, "orange");
        assert_eq!(card(&one(resolved.clone())).template, "green");
        assert_eq!(card(&one(resolved.clone())).title, "Resolved: c");
        let mixed = Group {
            alerts: vec![warning.clone(), resolved.clone()],
            overflow: Overflow::default(),
        };
        assert_eq!(card(&mixed).template, "orange");
        assert_eq!(card(&mixed).title, "2 alerts (1 firing, 1 resolved)");
        let with_critical = Group {
            alerts: vec![warning, resolved, critical],
            overflow: Overflow::default(),
        };
        assert_eq!(card(&with_critical).template, "red");
    }

    #[test]
    fn a_single_alert_card_has_the_documented_shape() {
        let group = Group {
            alerts: vec![alert("Queue slow", AlertState::Firing, Severity::Critical)],
            overflow: Overflow::default(),
        };
        let card = card(&group);
        let signature = ("1700000000".to_string(), "sig".to_string());
        let body = body_json(&card, &card.text, Some(&signature));
        assert_eq!(body["msg_type"], "interactive");
        assert_eq!(body["timestamp"], "1700000000");
        assert_eq!(body["sign"], "sig");
        assert_eq!(body["card"]["header"]["title"]["tag"], "plain_text");
        assert_eq!(body["card"]["header"]["title"]["content"], "Queue slow");
        assert_eq!(body["card"]["header"]["template"], "red");
        let elements = body["card"]["elements"].as_array().unwrap();
        assert_eq!(elements[0]["tag"], "div");
        assert_eq!(elements[0]["text"]["tag"], "lark_md");
        assert_eq!(elements[0]["text"]["content"], "oldest message waits 4m");
        let action = elements.last().unwrap();
        assert_eq!(action["tag"], "action");
        assert_eq!(action["actions"][0]["tag"], "button");
        assert_eq!(
            action["actions"][0]["url"],
            "https://shop.example/admin/chat"
        );
    }

    #[test]
    fn overflow_is_counted_by_rule_in_the_card() {
        let mut overflow = Overflow::default();
        overflow.add("chat_queue_oldest", 3);
        overflow.add("worker_stalled", 1);
        let group = Group {
            alerts: vec![alert("Queue slow", AlertState::Firing, Severity::Warning)],
            overflow,
        };
        let card = card(&group);
        assert_eq!(card.title, "5 alerts (1 firing, 4 counted)");
        assert!(
            card.text
                .contains("4 more that arrived while the queue was full: chat_queue_oldest ×3, worker_stalled ×1"),
            "{}",
            card.text
        );
    }

    #[test]
    fn long_text_is_cut_to_fit_with_a_marker() {
        for filler in ["x", "é", "\"", "\u{1}", "\\", "a\nb", "🚨"] {
            let mut a = alert("Big", AlertState::Firing, Severity::Warning);
            a.text = filler.repeat(50_000);
            let group = Group {
                alerts: vec![a],
                overflow: Overflow::default(),
            };
            let body = encode(&card(&group), None, 20_000).expect("fits once cut");
            assert!(body.len() < 20_000, "{filler:?}: {}", body.len());
            // Cut no more than one escaped character's worth too much.
            assert!(body.len() >= 20_000 - 7, "{filler:?}: {}", body.len());
            let body: Value = serde_json::from_slice(&body).unwrap();
            let text = body["card"]["elements"][0]["text"]["content"]
                .as_str()
                .unwrap();
            assert!(text.ends_with(TRUNCATION_MARKER), "{filler:?}");
        }
        // Short text is left alone.
        let group = Group {
            alerts: vec![alert("Small", AlertState::Firing, Severity::Warning)],
            overflow: Overflow::default(),
        };
        let body = encode(&card(&group), None, 20_000).unwrap();
        assert!(!String::from_utf8(body).unwrap().contains(TRUNCATION_MARKER));
    }

    #[test]
    fn config_debug_hides_the_token_and_secret() {
        let mut config =
            LarkSinkConfig::new("https://open.larksuite.com/open-apis/bot/v2/hook/tok-123");
        config.secret = Some(SecretString::from("s3cr3t".to_string()));
        let printed = format!("{config:?}");
        assert!(!printed.contains("tok-123"), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        assert!(printed.contains("https://open.larksuite.com/<redacted>"));
    }

    #[tokio::test]
    async fn a_stopped_sink_refuses_alerts() {
        let shutdown = CancellationToken::new();
        let sink = LarkSink::start(
            LarkSinkConfig::new("http://127.0.0.1:9/hook/x"),
            shutdown.clone(),
        )
        .unwrap();
        shutdown.cancel();
        sink.stopped().await;
        let refused = sink
            .notify(&alert("late", AlertState::Firing, Severity::Warning))
            .await;
        assert_eq!(refused, Err(AlertError::Closed("lark")));
    }
}
