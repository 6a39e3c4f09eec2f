//! Alerts: where an operational alert (the chat queue backing up, a worker
//! that stopped) is sent once a rule fires or resolves.
//!
//! Two sinks, chosen by `[alerts] kind`: `log` (the embedded default: a
//! tracing event, which the admin UI and the log collector already see) and
//! `lark` (a Lark custom bot in a group chat, and the log as well).
//!
//! The one idea: [`AlertSink::notify`] only enqueues. The caller is a rule
//! evaluator or a worker that must not wait on a chat vendor; each network
//! sink owns a background task that rate-limits, groups, retries and, when
//! it truly cannot deliver, says so in the log and in
//! `kedai_alerts_dropped_total`.

mod lark;

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::{AlertsKind, Settings};

pub use lark::{
    LarkSink, LarkSinkConfig, LarkSinkStats, MAX_GROUP, TRUNCATION_MARKER, lark_signature,
};

/// Whether a rule has started or stopped firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// How urgently a person should look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One change of an alert rule's state, as people will read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The rule's stable name, e.g. `chat_queue_oldest`.
    pub rule: String,
    pub state: AlertState,
    pub severity: Severity,
    /// One line, e.g. "Chat queue: oldest message waits 4m 10s".
    pub title: String,
    /// Details; may hold several lines.
    pub text: String,
    /// Absolute URL of the admin page that shows the problem.
    pub link: Option<String>,
    /// When the rule changed state.
    pub at: time::OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// The sink's background task has stopped (the server is shutting down).
    #[error("the {0} alert sink has stopped")]
    Closed(&'static str),
}

/// Where alerts go. Implementations return quickly: delivery, retries and
/// rate limits belong to the sink's own background task.
#[async_trait::async_trait]
pub trait AlertSink: Send + Sync {
    /// `log` or `lark`, for logs and metric labels.
    fn name(&self) -> &'static str;
    /// Hands the alert to the sink. Never waits on the network; an error
    /// means the sink has stopped, not that delivery failed.
    async fn notify(&self, alert: &Alert) -> Result<(), AlertError>;
}

/// The embedded default: a tracing event per alert, at `warn` while firing
/// and `info` once resolved.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl LogSink {
    /// Writes the alert as one structured tracing event.
    pub fn log(alert: &Alert) {
        let at = alert
            .at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let link = alert.link.as_deref().unwrap_or("");
        match alert.state {
            AlertState::Firing => tracing::warn!(
                rule = %alert.rule,
                state = alert.state.as_str(),
                severity = alert.severity.as_str(),
                text = %alert.text,
                link,
                at,
                "alert firing: {}",
                alert.title
            ),
            AlertState::Resolved => tracing::info!(
                rule = %alert.rule,
                state = alert.state.as_str(),
                severity = alert.severity.as_str(),
                text = %alert.text,
                link,
                at,
                "alert resolved: {}",
                alert.title
            ),
        }
    }
}

#[async_trait::async_trait]
impl AlertSink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    async fn notify(&self, alert: &Alert) -> Result<(), AlertError> {
        LogSink::log(alert);
        Ok(())
    }
}

/// Logs every alert, then hands it to another sink: a network sink's
/// delivery can fail, and the log is where an operator looks next.
struct AlsoLogged<S> {
    inner: S,
}

#[async_trait::async_trait]
impl<S: AlertSink> AlertSink for AlsoLogged<S> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn notify(&self, alert: &Alert) -> Result<(), AlertError> {
        LogSink::log(alert);
        self.inner.notify(alert).await
    }
}

/// The configured sink. For `lark`, this spawns the delivery task on the
/// current tokio runtime; it stops (after one last attempt to deliver what
/// is waiting) when `shutdown` is cancelled.
pub fn from_settings(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<dyn AlertSink>> {
    match settings.alerts.kind {
        AlertsKind::Log => Ok(Arc::new(LogSink)),
        AlertsKind::Lark => {
            let config = LarkSinkConfig::from_settings(&settings.lark)
                .context("lark.webhook_url is not a usable webhook URL")?;
            let sink = LarkSink::start(config, shutdown.clone())?;
            Ok(Arc::new(AlsoLogged { inner: sink }))
        }
    }
}
