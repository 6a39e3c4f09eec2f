//! Operational alerts: rules over the process's own metrics and the shared
//! stores, evaluated every `alerts.interval` by each replica, stored in
//! `alerts`, and fanned out to the alert sink (`platform::alerts`: the log,
//! and Lark when configured) and the admin UI (`/admin/alerts`).
//!
//! One evaluation ([`Alerting::evaluate_once`], the step of [`Alerting::run`]):
//!
//! 1. gather a [`rules::Snapshot`]: this replica's rolling windows (HTTP,
//!    database statements), vendor throttling since the last evaluation,
//!    the chat queue's figures, dead letters, what `/readyz` checks, and
//!    orders flagged `needs_attention`;
//! 2. judge it ([`rules::evaluate`], pure);
//! 3. per verdict: a firing rule opens an alert unless one is open (a
//!    partial unique index on `rule` where `resolved_at IS NULL` makes two
//!    replicas evaluating at once open only one; the loser just notes it is
//!    still firing); a rule that is fine resolves its open alert — at once
//!    for rules over shared stores, and for rules over one replica's own
//!    metrics only once no replica has seen it firing for two intervals.
//!    Only the replica whose write opened (or resolved) the alert sends the
//!    firing (or resolved) notice.
//!
//! When the database cannot be written (the database itself failing is one
//! of the things alerted on), a firing rule is still notified, once per
//! process, and resolved the same way.

pub mod entity;
mod repo;
pub mod rules;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sea_orm::{DatabaseConnection, DbErr};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::ops::Signals;
use crate::platform::alerts::{Alert, AlertSink, AlertState, Severity};
use crate::platform::cache::Cache;
use crate::platform::db::Writer;
use crate::platform::queue::Queue;
use crate::platform::upstream::Upstream;

pub use entity::alert::Model as AlertRecord;
pub use rules::{Rule, Scope, Snapshot, Thresholds, Verdict};

/// The open alerts, newest first.
pub async fn open_alerts(db: &DatabaseConnection) -> Result<Vec<AlertRecord>, DbErr> {
    repo::open_alerts(db).await
}

/// The most recently resolved alerts, newest first.
pub async fn resolved_alerts(
    db: &DatabaseConnection,
    limit: u64,
) -> Result<Vec<AlertRecord>, DbErr> {
    repo::resolved_alerts(db, limit).await
}

pub async fn count_open(db: &DatabaseConnection) -> Result<u64, DbErr> {
    repo::count_open(db).await
}

/// What one evaluation did, by rule name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Every rule that is firing now.
    pub firing: Vec<&'static str>,
    /// Alerts this replica opened (and notified).
    pub opened: Vec<&'static str>,
    /// Alerts this replica resolved (and notified).
    pub resolved: Vec<&'static str>,
}

/// The evaluator of one application. Cheap to clone.
#[derive(Clone)]
pub struct Alerting {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    cache: Arc<dyn Cache>,
    queue: Arc<dyn Queue>,
    signals: Signals,
    sink: Arc<dyn AlertSink>,
    thresholds: Thresholds,
    interval: Duration,
    /// `server.public_url` without its trailing slash.
    base_url: String,
    /// Names this replica in `opened_by` / `resolved_by`.
    replica: String,
    /// Readiness is not judged while the process drains on purpose.
    shutdown: CancellationToken,
    memory: Mutex<Memory>,
}

/// What an evaluation needs from the ones before it.
#[derive(Default)]
struct Memory {
    /// Throttled attempts per upstream at the previous evaluation.
    throttled: Vec<(Upstream, u64)>,
    /// The chat queue's dead letters at the previous evaluation.
    queue_dead: Option<u64>,
    /// When (and by how much) the queue's dead letters went up.
    queue_dead_increases: VecDeque<(Instant, u64)>,
    /// Rules notified as firing while the database could not store them.
    unstored: HashSet<&'static str>,
}

/// The parts of the application an evaluation reads.
pub struct AlertingParts {
    pub writer: Writer,
    pub cache: Arc<dyn Cache>,
    pub queue: Arc<dyn Queue>,
    pub signals: Signals,
    pub sink: Arc<dyn AlertSink>,
    pub settings: Arc<crate::config::Settings>,
    pub shutdown: CancellationToken,
}

impl Alerting {
    pub fn new(parts: AlertingParts) -> Alerting {
        let settings = &parts.settings;
        let memory = Memory {
            throttled: parts.signals.upstreams.throttled_totals().to_vec(),
            ..Memory::default()
        };
        Alerting {
            inner: Arc::new(Inner {
                thresholds: Thresholds::from_settings(&settings.alerts),
                interval: settings.alerts.interval,
                base_url: settings
                    .server
                    .public_url
                    .as_str()
                    .trim_end_matches('/')
                    .to_string(),
                replica: format!(
                    "{}-{}",
                    std::process::id(),
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
                writer: parts.writer,
                cache: parts.cache,
                queue: parts.queue,
                signals: parts.signals,
                sink: parts.sink,
                shutdown: parts.shutdown,
                memory: Mutex::new(memory),
            }),
        }
    }

    /// The same evaluator (same replica name and memory) notifying another
    /// sink: tests record what would be sent.
    pub fn with_sink(&self, sink: Arc<dyn AlertSink>) -> Alerting {
        let inner = &self.inner;
        let memory = inner.memory.lock().map(|m| Memory {
            throttled: m.throttled.clone(),
            queue_dead: m.queue_dead,
            queue_dead_increases: m.queue_dead_increases.clone(),
            unstored: m.unstored.clone(),
        });
        Alerting {
            inner: Arc::new(Inner {
                writer: inner.writer.clone(),
                cache: inner.cache.clone(),
                queue: inner.queue.clone(),
                signals: inner.signals.clone(),
                sink,
                thresholds: inner.thresholds.clone(),
                interval: inner.interval,
                base_url: inner.base_url.clone(),
                replica: inner.replica.clone(),
                shutdown: inner.shutdown.clone(),
                memory: Mutex::new(memory.unwrap_or_default()),
            }),
        }
    }

    /// This replica's name in `opened_by` / `resolved_by`.
    pub fn replica(&self) -> &str {
        &self.inner.replica
    }

    /// The absolute URL of an admin page.
    fn link(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base_url)
    }

    /// Evaluates the rules every `alerts.interval` (the first time one
    /// interval after start, so a replica that is still warming up is not
    /// judged) until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = self.inner.interval;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match self.evaluate_once().await {
                Ok(evaluation)
                    if !evaluation.opened.is_empty() || !evaluation.resolved.is_empty() =>
                {
                    tracing::info!(
                        opened = ?evaluation.opened,
                        resolved = ?evaluation.resolved,
                        firing = ?evaluation.firing,
                        "alert rules evaluated"
                    );
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = %error, "evaluating the alert rules failed"),
            }
        }
    }

    /// One evaluation: gather, judge, open / resolve, notify.
    pub async fn evaluate_once(&self) -> anyhow::Result<Evaluation> {
        let snapshot = self.gather().await;
        let verdicts = rules::evaluate(&snapshot, &self.inner.thresholds);
        let mut evaluation = Evaluation::default();
        for verdict in verdicts {
            let rule = verdict.rule.as_str();
            if verdict.firing {
                evaluation.firing.push(rule);
                if self.fire(&verdict).await {
                    evaluation.opened.push(rule);
                }
            } else if self.settle(&verdict).await {
                evaluation.resolved.push(rule);
            }
        }
        Ok(evaluation)
    }

    /// Reads everything the rules look at. A source that fails leaves its
    /// rules unjudged this time (and is logged).
    pub async fn gather(&self) -> Snapshot {
        let inner = &self.inner;
        let db = &inner.writer.db;
        let now = Instant::now();
        let window = inner.thresholds.dead_letter_window;

        let queue_stats =
            match tokio::time::timeout(Duration::from_secs(5), inner.queue.stats()).await {
                Ok(Ok(stats)) => Some(stats),
                Ok(Err(error)) => {
                    tracing::warn!(error = %error, "alerts: the chat queue's figures failed");
                    None
                }
                Err(_) => {
                    tracing::warn!("alerts: the chat queue's figures took longer than 5s");
                    None
                }
            };
        let since = OffsetDateTime::now_utc() - window;
        let events_dead = crate::events::dead_letter_counts(db, since)
            .await
            .inspect_err(
                |error| tracing::warn!(error = %error, "alerts: counting dead letters failed"),
            )
            .ok();
        let needs_attention = crate::orders::count_needing_attention(db)
            .await
            .inspect_err(
                |error| tracing::warn!(error = %error, "alerts: counting orders needing attention failed"),
            )
            .ok();
        let readiness = if inner.shutdown.is_cancelled() {
            None
        } else {
            let checks = crate::ops::check_readiness(db, inner.cache.as_ref()).await;
            Some(vec![("database", checks.database), ("cache", checks.cache)])
        };

        let throttled_now = inner.signals.upstreams.throttled_totals();
        let Ok(mut memory) = inner.memory.lock() else {
            return Snapshot::default();
        };
        let throttled = throttled_now
            .iter()
            .map(|(upstream, total)| {
                let before = memory
                    .throttled
                    .iter()
                    .find(|(u, _)| u == upstream)
                    .map_or(0, |(_, n)| *n);
                (*upstream, total.saturating_sub(before))
            })
            .collect();
        memory.throttled = throttled_now.to_vec();

        let queue_recent = match queue_stats {
            Some(stats) => {
                if let Some(before) = memory.queue_dead
                    && stats.dead > before
                {
                    memory
                        .queue_dead_increases
                        .push_back((now, stats.dead - before));
                }
                memory.queue_dead = Some(stats.dead);
                while memory
                    .queue_dead_increases
                    .front()
                    .is_some_and(|(at, _)| now.duration_since(*at) > window)
                {
                    memory.queue_dead_increases.pop_front();
                }
                memory.queue_dead_increases.iter().map(|(_, n)| n).sum()
            }
            None => 0,
        };
        drop(memory);

        Snapshot {
            http: inner.signals.http.snapshot(),
            database: inner.signals.database.snapshot(),
            queue: queue_stats.map(|stats| rules::QueueFigures {
                depth: stats.depth,
                oldest: stats.oldest_age,
            }),
            dead_letters: match (events_dead, queue_stats) {
                (Some(events), Some(queue)) => Some(rules::DeadLetters {
                    events_recent: events.since,
                    events_total: events.total,
                    queue_recent,
                    queue_total: queue.dead,
                }),
                _ => None,
            },
            throttled,
            readiness,
            needs_attention,
        }
    }

    fn alert(&self, verdict: &Verdict, state: AlertState, at: OffsetDateTime) -> Alert {
        Alert {
            rule: verdict.rule.as_str().to_string(),
            state,
            severity: verdict.rule.severity(),
            title: verdict.title.clone(),
            text: verdict.text.clone(),
            link: Some(self.link(verdict.rule.page())),
            at,
        }
    }

    async fn notify(&self, alert: &Alert) {
        if let Err(error) = self.inner.sink.notify(alert).await {
            tracing::warn!(error = %error, rule = %alert.rule, "the alert sink refused an alert");
        }
    }

    /// A firing verdict: open (or keep open) its alert. True when this
    /// replica opened it and sent the notice.
    async fn fire(&self, verdict: &Verdict) -> bool {
        let rule = verdict.rule.as_str();
        let now = OffsetDateTime::now_utc();
        let alert = self.alert(verdict, AlertState::Firing, now);
        let new = repo::NewAlert {
            rule: rule.to_string(),
            severity: alert.severity.as_str().to_string(),
            title: alert.title.clone(),
            text: alert.text.clone(),
            link: alert.link.clone(),
        };
        match repo::open(&self.inner.writer, &new, &self.inner.replica, now).await {
            Ok(repo::Opened::New(_)) => {
                // Already told while the database was failing: not twice.
                let told = self.forget_unstored(rule);
                if !told {
                    self.notify(&alert).await;
                }
                !told
            }
            Ok(repo::Opened::AlreadyOpen) => false,
            Err(error) => {
                tracing::warn!(error = %error, rule, "could not store a firing alert; notifying anyway");
                let first = self
                    .inner
                    .memory
                    .lock()
                    .map(|mut m| m.unstored.insert(rule))
                    .unwrap_or(true);
                if first {
                    self.notify(&alert).await;
                }
                first
            }
        }
    }

    /// A verdict that is fine: resolve its open alert if it has one. True
    /// when this replica resolved it and sent the notice.
    async fn settle(&self, verdict: &Verdict) -> bool {
        let rule = verdict.rule.as_str();
        let now = OffsetDateTime::now_utc();
        let unseen_since = match verdict.rule.scope() {
            Scope::Shared => None,
            // Every replica that still sees it firing touches it each
            // interval; two intervals without a touch means none does.
            Scope::Replica => Some(now - self.inner.interval * 2),
        };
        match repo::resolve(
            &self.inner.writer,
            rule,
            unseen_since,
            &self.inner.replica,
            now,
        )
        .await
        {
            Ok(Some(record)) => {
                self.forget_unstored(rule);
                let took = (now - record.opened_at).unsigned_abs();
                let alert = Alert {
                    rule: record.rule,
                    state: AlertState::Resolved,
                    severity: match record.severity.as_str() {
                        "critical" => Severity::Critical,
                        _ => Severity::Warning,
                    },
                    title: record.title,
                    text: format!(
                        "Resolved after {}. Now: {}",
                        rules::human(took),
                        verdict.title
                    ),
                    link: record.link,
                    at: now,
                };
                self.notify(&alert).await;
                true
            }
            Ok(None) => {
                if self.forget_unstored(rule) {
                    // Told as firing while the database failed, never stored.
                    self.notify(&self.alert(verdict, AlertState::Resolved, now))
                        .await;
                    return true;
                }
                false
            }
            Err(error) => {
                tracing::warn!(error = %error, rule, "could not resolve an alert");
                false
            }
        }
    }

    /// Forgets that `rule` was notified without being stored; true if it was.
    fn forget_unstored(&self, rule: &str) -> bool {
        self.inner
            .memory
            .lock()
            .map(|mut m| m.unstored.remove(rule))
            .unwrap_or(false)
    }
}
