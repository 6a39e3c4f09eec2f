//! The alert rules, as a pure function: a [`Snapshot`] of what the process
//! and the shared stores show, and the [`Thresholds`] from `[alerts]`, in;
//! one [`Verdict`] per rule that could be judged, out. Nothing here reads a
//! clock, a database or a metric, so every rule is tested with plain values.

use std::time::Duration;

use crate::config::AlertsSettings;
use crate::ops::WindowSnapshot;
use crate::platform::alerts::Severity;
use crate::platform::upstream::Upstream;

/// Every rule, by its stable name (stored with each alert).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// This replica's share of 5xx answers over the window.
    HttpErrors,
    /// The oldest chat queue message has waited too long.
    ChatQueueOldest,
    /// An event delivery or a chat queue message became a dead letter.
    DeadLetters,
    /// Bedrock or Twilio asked us to slow down.
    UpstreamThrottling,
    /// This replica's database statements are slow (p99).
    DatabaseLatency,
    /// What `/readyz` checks fails on this replica.
    Readiness,
    /// Orders flagged `needs_attention`.
    OrdersNeedAttention,
}

/// Whose view a rule judges: all replicas see the same shared stores, but
/// each sees only its own requests, statements and vendor calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Any replica that sees it fine may resolve it at once.
    Shared,
    /// Resolved only once no replica has seen it firing for a while.
    Replica,
}

impl Rule {
    pub const ALL: [Rule; 7] = [
        Rule::HttpErrors,
        Rule::ChatQueueOldest,
        Rule::DeadLetters,
        Rule::UpstreamThrottling,
        Rule::DatabaseLatency,
        Rule::Readiness,
        Rule::OrdersNeedAttention,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::HttpErrors => "http_errors",
            Rule::ChatQueueOldest => "chat_queue_oldest",
            Rule::DeadLetters => "dead_letters",
            Rule::UpstreamThrottling => "upstream_throttling",
            Rule::DatabaseLatency => "database_latency",
            Rule::Readiness => "readiness",
            Rule::OrdersNeedAttention => "orders_need_attention",
        }
    }

    pub fn parse(raw: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|rule| rule.as_str() == raw)
    }

    pub fn scope(self) -> Scope {
        match self {
            Rule::ChatQueueOldest | Rule::OrdersNeedAttention => Scope::Shared,
            // Dead letters: the database's are shared, but new chat queue
            // dead letters are noticed by each replica's own count.
            Rule::HttpErrors
            | Rule::DeadLetters
            | Rule::UpstreamThrottling
            | Rule::DatabaseLatency
            | Rule::Readiness => Scope::Replica,
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            Rule::HttpErrors | Rule::Readiness | Rule::ChatQueueOldest => Severity::Critical,
            Rule::DeadLetters
            | Rule::UpstreamThrottling
            | Rule::DatabaseLatency
            | Rule::OrdersNeedAttention => Severity::Warning,
        }
    }

    /// The admin page that shows the problem (a path under the public URL).
    pub fn page(self) -> &'static str {
        match self {
            Rule::HttpErrors | Rule::DatabaseLatency | Rule::Readiness => "/admin",
            Rule::UpstreamThrottling => "/admin",
            Rule::ChatQueueOldest => "/admin/conversations",
            Rule::DeadLetters => "/admin/events",
            Rule::OrdersNeedAttention => "/admin/orders?attention=1",
        }
    }
}

/// The thresholds of `[alerts]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    pub http_error_rate: f64,
    pub http_min_requests: u64,
    pub queue_oldest: Duration,
    pub database_p99: Duration,
    pub database_min_statements: u64,
    pub dead_letter_window: Duration,
}

impl Thresholds {
    pub fn from_settings(settings: &AlertsSettings) -> Thresholds {
        Thresholds {
            http_error_rate: settings.http_error_rate,
            http_min_requests: settings.http_min_requests,
            queue_oldest: settings.queue_oldest,
            database_p99: settings.database_p99,
            database_min_statements: settings.database_min_statements,
            dead_letter_window: settings.dead_letter_window,
        }
    }
}

/// What the rules look at. `None` means "could not be read this time":
/// that rule is not judged (it neither opens nor resolves).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// This replica's HTTP requests over the window (5 minutes).
    pub http: WindowSnapshot,
    /// This replica's database statements over the window.
    pub database: WindowSnapshot,
    /// The chat queue's figures; `None` when the queue did not answer.
    pub queue: Option<QueueFigures>,
    /// Dead letters; `None` when they could not be counted.
    pub dead_letters: Option<DeadLetters>,
    /// Throttled attempts per upstream since the previous evaluation.
    pub throttled: Vec<(Upstream, u64)>,
    /// What `/readyz` checks, as (check, state) pairs; `None` while this
    /// replica is shutting down (failing readiness on purpose).
    pub readiness: Option<Vec<(&'static str, String)>>,
    /// Orders flagged `needs_attention`.
    pub needs_attention: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueFigures {
    pub depth: u64,
    /// The oldest message's age (the database queue; SQS does not say).
    pub oldest: Option<Duration>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeadLetters {
    /// Event deliveries that became dead letters within the window.
    pub events_recent: u64,
    pub events_total: u64,
    /// Chat queue messages dead-lettered within the window (noticed by
    /// this replica's count going up).
    pub queue_recent: u64,
    pub queue_total: u64,
}

/// One rule's judgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub rule: Rule,
    pub firing: bool,
    /// One line with the figures (for a firing rule: the alert's title).
    pub title: String,
    pub text: String,
}

/// "4m 10s", "950ms".
pub fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        return format!("{}ms", duration.as_millis());
    }
    humantime::format_duration(Duration::from_secs(duration.as_secs())).to_string()
}

fn percent(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

/// Judges every rule the snapshot has figures for.
pub fn evaluate(snapshot: &Snapshot, thresholds: &Thresholds) -> Vec<Verdict> {
    let mut verdicts = vec![http_errors(&snapshot.http, thresholds)];
    if let Some(queue) = &snapshot.queue {
        verdicts.push(chat_queue_oldest(queue, thresholds));
    }
    if let Some(dead) = &snapshot.dead_letters {
        verdicts.push(dead_letters(dead, thresholds));
    }
    verdicts.push(upstream_throttling(&snapshot.throttled));
    verdicts.push(database_latency(&snapshot.database, thresholds));
    if let Some(checks) = &snapshot.readiness {
        verdicts.push(readiness(checks));
    }
    if let Some(count) = snapshot.needs_attention {
        verdicts.push(orders_need_attention(count));
    }
    verdicts
}

fn http_errors(http: &WindowSnapshot, t: &Thresholds) -> Verdict {
    let rate = http.error_rate().unwrap_or(0.0);
    let firing = http.count >= t.http_min_requests.max(1) && rate > t.http_error_rate;
    Verdict {
        rule: Rule::HttpErrors,
        firing,
        title: format!(
            "HTTP 5xx: {} of {} requests in the last 5 minutes",
            percent(rate),
            http.count
        ),
        text: format!(
            "{} of {} requests answered 5xx on this replica (alert above {}, from {} requests).",
            http.errors,
            http.count,
            percent(t.http_error_rate),
            t.http_min_requests
        ),
    }
}

fn chat_queue_oldest(queue: &QueueFigures, t: &Thresholds) -> Verdict {
    let oldest = queue.oldest.unwrap_or_default();
    Verdict {
        rule: Rule::ChatQueueOldest,
        firing: oldest > t.queue_oldest,
        title: format!("Chat queue: oldest message waits {}", human(oldest)),
        text: format!(
            "{} message{} in the chat queue; the oldest has waited {} (alert above {}). \
             Are the chat workers running?",
            queue.depth,
            if queue.depth == 1 { "" } else { "s" },
            human(oldest),
            human(t.queue_oldest)
        ),
    }
}

fn dead_letters(dead: &DeadLetters, t: &Thresholds) -> Verdict {
    let recent = dead.events_recent + dead.queue_recent;
    Verdict {
        rule: Rule::DeadLetters,
        firing: recent > 0,
        title: format!(
            "Dead letters: {recent} new in the last {}",
            human(t.dead_letter_window)
        ),
        text: format!(
            "Event deliveries: {} new, {} in all. Chat queue: {} new, {} in all. \
             Dead letters are not retried until someone replays them.",
            dead.events_recent, dead.events_total, dead.queue_recent, dead.queue_total
        ),
    }
}

fn upstream_throttling(throttled: &[(Upstream, u64)]) -> Verdict {
    let seen: Vec<String> = throttled
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(upstream, n)| format!("{} ×{n}", upstream.label()))
        .collect();
    Verdict {
        rule: Rule::UpstreamThrottling,
        firing: !seen.is_empty(),
        title: if seen.is_empty() {
            "Upstream throttling: none".into()
        } else {
            format!("Upstream throttling: {}", seen.join(", "))
        },
        text: if seen.is_empty() {
            "No vendor throttled this replica in the last interval.".into()
        } else {
            format!(
                "Throttled attempts in the last interval: {}. Calls are retried with \
                 backoff; raise the vendor's quota if this persists.",
                seen.join(", ")
            )
        },
    }
}

fn database_latency(database: &WindowSnapshot, t: &Thresholds) -> Verdict {
    let p99 = database.p99().unwrap_or_default();
    Verdict {
        rule: Rule::DatabaseLatency,
        firing: database.count >= t.database_min_statements.max(1) && p99 > t.database_p99,
        title: format!("Database p99 {} over the last 5 minutes", human(p99)),
        text: format!(
            "p99 of {} statements on this replica is {} (alert above {}); the slowest took {}.",
            database.count,
            human(p99),
            human(t.database_p99),
            human(database.max)
        ),
    }
}

fn readiness(checks: &[(&'static str, String)]) -> Verdict {
    let failing: Vec<String> = checks
        .iter()
        .filter(|(_, state)| state != "ok")
        .map(|(check, state)| format!("{check}: {state}"))
        .collect();
    Verdict {
        rule: Rule::Readiness,
        firing: !failing.is_empty(),
        title: if failing.is_empty() {
            "Readiness: ready".into()
        } else {
            format!("Readiness failing ({})", failing.join(", "))
        },
        text: if failing.is_empty() {
            "Every readiness check passes.".into()
        } else {
            format!(
                "This replica answers 503 on /readyz: {}. The load balancer sends it no traffic.",
                failing.join(", ")
            )
        },
    }
}

fn orders_need_attention(count: u64) -> Verdict {
    Verdict {
        rule: Rule::OrdersNeedAttention,
        firing: count > 0,
        title: format!(
            "{count} order{} need{} attention",
            if count == 1 { "" } else { "s" },
            if count == 1 { "s" } else { "" }
        ),
        text: format!(
            "{count} paid order{} could not be fulfilled as usual (stock ran out after payment, …) \
             and wait for a person.",
            if count == 1 { "" } else { "s" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thresholds() -> Thresholds {
        Thresholds {
            http_error_rate: 0.01,
            http_min_requests: 50,
            queue_oldest: Duration::from_secs(60),
            database_p99: Duration::from_millis(200),
            database_min_statements: 50,
            dead_letter_window: Duration::from_secs(900),
        }
    }

    fn healthy() -> Snapshot {
        Snapshot {
            http: WindowSnapshot::from_latencies(&[(Duration::from_millis(4), false); 100]),
            database: WindowSnapshot::from_latencies(&[(Duration::from_millis(1), false); 100]),
            queue: Some(QueueFigures {
                depth: 2,
                oldest: Some(Duration::from_secs(3)),
            }),
            dead_letters: Some(DeadLetters {
                events_total: 4,
                ..DeadLetters::default()
            }),
            throttled: Upstream::ALL.into_iter().map(|u| (u, 0)).collect(),
            readiness: Some(vec![("database", "ok".into()), ("cache", "ok".into())]),
            needs_attention: Some(0),
        }
    }

    fn verdict(snapshot: &Snapshot, rule: Rule) -> Option<Verdict> {
        evaluate(snapshot, &thresholds())
            .into_iter()
            .find(|v| v.rule == rule)
    }

    fn firing(snapshot: &Snapshot) -> Vec<Rule> {
        evaluate(snapshot, &thresholds())
            .into_iter()
            .filter(|v| v.firing)
            .map(|v| v.rule)
            .collect()
    }

    #[test]
    fn a_healthy_snapshot_fires_nothing_and_judges_every_rule() {
        let verdicts = evaluate(&healthy(), &thresholds());
        assert_eq!(verdicts.len(), Rule::ALL.len());
        assert!(firing(&healthy()).is_empty(), "{verdicts:?}");
    }

    #[test]
    fn http_errors_fire_above_the_rate_once_there_are_enough_requests() {
        let mut snapshot = healthy();
        // 2 of 100: 2 % > 1 %.
        let mut requests = vec![(Duration::from_millis(4), false); 98];
        requests.extend([(Duration::from_millis(4), true); 2]);
        snapshot.http = WindowSnapshot::from_latencies(&requests);
        let v = verdict(&snapshot, Rule::HttpErrors).unwrap();
        assert!(v.firing);
        assert_eq!(
            v.title,
            "HTTP 5xx: 2.0 % of 100 requests in the last 5 minutes"
        );
        // 1 of 100 is not above 1 %.
        requests[99].1 = false;
        snapshot.http = WindowSnapshot::from_latencies(&requests);
        assert!(!verdict(&snapshot, Rule::HttpErrors).unwrap().firing);
        // 1 of 3 is 33 %, but three requests are not a trend.
        snapshot.http = WindowSnapshot::from_latencies(&[
            (Duration::from_millis(4), true),
            (Duration::from_millis(4), false),
            (Duration::from_millis(4), false),
        ]);
        assert!(!verdict(&snapshot, Rule::HttpErrors).unwrap().firing);
        // No traffic at all is fine.
        snapshot.http = WindowSnapshot::default();
        assert!(!verdict(&snapshot, Rule::HttpErrors).unwrap().firing);
    }

    #[test]
    fn the_chat_queue_fires_when_its_oldest_message_waits_over_a_minute() {
        let mut snapshot = healthy();
        snapshot.queue = Some(QueueFigures {
            depth: 12,
            oldest: Some(Duration::from_secs(250)),
        });
        let v = verdict(&snapshot, Rule::ChatQueueOldest).unwrap();
        assert!(v.firing);
        assert_eq!(v.title, "Chat queue: oldest message waits 4m 10s");
        snapshot.queue = Some(QueueFigures {
            depth: 12,
            oldest: Some(Duration::from_secs(60)),
        });
        assert!(!verdict(&snapshot, Rule::ChatQueueOldest).unwrap().firing);
        // An empty queue (or SQS, which has no age) is fine.
        snapshot.queue = Some(QueueFigures::default());
        assert!(!verdict(&snapshot, Rule::ChatQueueOldest).unwrap().firing);
        // A queue that did not answer is not judged.
        snapshot.queue = None;
        assert_eq!(verdict(&snapshot, Rule::ChatQueueOldest), None);
    }

    #[test]
    fn any_new_dead_letter_fires_and_old_ones_alone_do_not() {
        let mut snapshot = healthy();
        assert!(!verdict(&snapshot, Rule::DeadLetters).unwrap().firing);
        snapshot.dead_letters = Some(DeadLetters {
            events_recent: 1,
            events_total: 5,
            ..DeadLetters::default()
        });
        let v = verdict(&snapshot, Rule::DeadLetters).unwrap();
        assert!(v.firing);
        assert_eq!(v.title, "Dead letters: 1 new in the last 15m");
        snapshot.dead_letters = Some(DeadLetters {
            queue_recent: 2,
            queue_total: 2,
            ..DeadLetters::default()
        });
        assert!(verdict(&snapshot, Rule::DeadLetters).unwrap().firing);
    }

    #[test]
    fn any_throttling_in_the_interval_fires_and_names_the_vendor() {
        let mut snapshot = healthy();
        snapshot.throttled = vec![
            (Upstream::BedrockModel, 3),
            (Upstream::BedrockEmbeddings, 0),
            (Upstream::Twilio, 1),
        ];
        let v = verdict(&snapshot, Rule::UpstreamThrottling).unwrap();
        assert!(v.firing);
        assert_eq!(
            v.title,
            "Upstream throttling: Bedrock (chat model) ×3, Twilio ×1"
        );
    }

    #[test]
    fn database_p99_fires_above_200ms_with_enough_statements() {
        let mut snapshot = healthy();
        let mut statements = vec![(Duration::from_millis(2), false); 97];
        statements.extend([(Duration::from_millis(450), false); 3]);
        snapshot.database = WindowSnapshot::from_latencies(&statements);
        let v = verdict(&snapshot, Rule::DatabaseLatency).unwrap();
        assert!(v.firing, "{v:?}");
        assert_eq!(v.title, "Database p99 450ms over the last 5 minutes");
        // One slow statement in a hundred is the 1 % p99 allows.
        let mut statements = vec![(Duration::from_millis(2), false); 99];
        statements.push((Duration::from_secs(3), false));
        snapshot.database = WindowSnapshot::from_latencies(&statements);
        assert!(!verdict(&snapshot, Rule::DatabaseLatency).unwrap().firing);
        // Too few statements to say.
        snapshot.database =
            WindowSnapshot::from_latencies(&[(Duration::from_millis(900), false); 10]);
        assert!(!verdict(&snapshot, Rule::DatabaseLatency).unwrap().firing);
    }

    #[test]
    fn failing_readiness_fires_and_draining_is_not_judged() {
        let mut snapshot = healthy();
        snapshot.readiness = Some(vec![("database", "ok".into()), ("cache", "timeout".into())]);
        let v = verdict(&snapshot, Rule::Readiness).unwrap();
        assert!(v.firing);
        assert_eq!(v.title, "Readiness failing (cache: timeout)");
        snapshot.readiness = None;
        assert_eq!(verdict(&snapshot, Rule::Readiness), None);
    }

    #[test]
    fn orders_needing_attention_fire_until_none_is_left() {
        let mut snapshot = healthy();
        snapshot.needs_attention = Some(1);
        let v = verdict(&snapshot, Rule::OrdersNeedAttention).unwrap();
        assert!(v.firing);
        assert_eq!(v.title, "1 order needs attention");
        snapshot.needs_attention = Some(3);
        assert_eq!(
            verdict(&snapshot, Rule::OrdersNeedAttention).unwrap().title,
            "3 orders need attention"
        );
        snapshot.needs_attention = None;
        assert_eq!(verdict(&snapshot, Rule::OrdersNeedAttention), None);
    }

    #[test]
    fn rule_names_round_trip_and_pages_are_admin_pages() {
        for rule in Rule::ALL {
            assert_eq!(Rule::parse(rule.as_str()), Some(rule));
            assert!(rule.page().starts_with("/admin"));
        }
        assert_eq!(Rule::parse("nonsense"), None);
    }
}
