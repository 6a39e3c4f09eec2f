//! Domain events: the outbox written in the same transaction as each
//! change, the bus that delivers them to handlers, and the idempotency keys
//! of provider events already processed.
//!
//! How an event travels:
//!
//! 1. A module's transaction calls [`append`]; after the commit it calls
//!    `Writer::outbox_committed`, which wakes this process's dispatcher.
//! 2. The [`Dispatcher`] *routes* unrouted outbox rows: it stamps
//!    `routed_at` and inserts one `event_deliveries` row per handler whose
//!    rule matches, in one transaction.
//! 3. It *claims* due deliveries (a single `UPDATE … WHERE id IN (SELECT …
//!    FOR UPDATE SKIP LOCKED) RETURNING`, so replicas never take the same
//!    row; SQLite has one writer, so there the statement alone suffices),
//!    leasing each to this process for `events.lease`.
//! 4. It calls the handler and records the outcome on that delivery only:
//!    done, retry later (backoff with jitter, or the upstream's
//!    `Retry-After`), or dead letter after the last retry. A delivery whose
//!    process died mid-way is claimed again once its lease runs out.
//!
//! Delivery is at least once; handlers make their effects exactly once by
//! recording them keyed by (event, handler) in the same transaction as the
//! effect ([`claim`] with the handler's name as the source), or by an
//! idempotency key the provider honours.

mod dispatcher;
pub mod entity;
mod repo;
pub mod retry;
pub mod routes;
pub mod rules;

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

pub use dispatcher::{DispatchStep, Dispatcher};
pub use repo::{
    DeadLetterCounts, DeliveryFilter, DeliveryView, EventFilter, EventView, HandlerStats,
    ReplayError, append, claim, dead_letter_counts, delivery_stats, find_event, list_deliveries,
    list_events, replay_dead, replay_delivery, replay_range,
};
pub use rules::{Pattern, PatternError};

/// Event type names, as written to the outbox and matched by rules.
pub mod types {
    pub const ORDER_PAID: &str = "order.paid";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_REFUNDED: &str = "order.refunded";
    pub const ORDER_NEEDS_ATTENTION: &str = "order.needs_attention";
    pub const SHIPMENT_CREATED: &str = "shipment.created";
    pub const SHIPMENT_STATUS_CHANGED: &str = "shipment.status_changed";
    pub const CUSTOMER_PASSWORD_RESET_REQUESTED: &str = "customer.password_reset_requested";
}

/// An event as handlers receive it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    pub payload: serde_json::Value,
}

impl Event {
    /// The document rules are matched against: `{"type", "version", "payload"}`.
    pub fn rule_document(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.event_type,
            "version": self.version,
            "payload": self.payload,
        })
    }

    /// A string field of the payload.
    pub fn text(&self, key: &str) -> Option<&str> {
        self.payload.get(key).and_then(|v| v.as_str())
    }
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or its next retry.
    Pending,
    /// Leased to a process that is running the handler.
    Running,
    /// The handler succeeded (or decided there was nothing to do).
    Done,
    /// Every retry failed, or the failure was permanent: a dead letter.
    Dead,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 4] = [
        DeliveryStatus::Pending,
        DeliveryStatus::Running,
        DeliveryStatus::Done,
        DeliveryStatus::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Running => "running",
            DeliveryStatus::Done => "done",
            DeliveryStatus::Dead => "dead",
        }
    }

    pub fn parse(raw: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// Why a handler did not finish.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again (timeouts, 5xx, throttling, a database hiccup).
    /// `retry_after` is the upstream's own wish, honoured when longer than
    /// the schedule's delay.
    #[error("{reason}")]
    Retry {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help (bad data, a rejected request, missing
    /// configuration): a dead letter at once, replayable after a fix.
    #[error("{0}")]
    Permanent(String),
    /// Not now, and not a failure (quiet hours): due again at `until`
    /// without spending an attempt.
    #[error("deferred: {reason}")]
    Defer {
        until: OffsetDateTime,
        reason: String,
    },
}

impl HandlerError {
    pub fn retry(reason: impl Into<String>) -> Self {
        HandlerError::Retry {
            reason: reason.into(),
            retry_after: None,
        }
    }
}

impl From<sea_orm::DbErr> for HandlerError {
    fn from(error: sea_orm::DbErr) -> Self {
        HandlerError::retry(format!("database: {error}"))
    }
}

/// A subscriber of the bus.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// A stable name: deliveries, effects and replays are keyed by it.
    fn name(&self) -> &'static str;

    /// The rule (an EventBridge-style pattern over `{"type", "version",
    /// "payload"}`) selecting the events this handler receives.
    fn rule(&self) -> serde_json::Value;

    /// Events with the same key are handed to this handler one at a time,
    /// oldest first, when they are due together (a parcel's "in transit"
    /// before its "delivered"). `None`: no ordering needed.
    fn ordering_key(&self, _event: &Event) -> Option<String> {
        None
    }

    /// Acts on one event. Called at least once per matching event; must make
    /// its effect exactly once.
    async fn handle(&self, event: &Event) -> Result<(), HandlerError>;
}

/// A handler with its parsed rule.
pub struct Subscription {
    pub handler: Arc<dyn Handler>,
    pub rule: Pattern,
}

/// The handlers of this process and their rules, parsed once.
#[derive(Clone, Default)]
pub struct Bus {
    subscriptions: Arc<Vec<Subscription>>,
}

impl Bus {
    /// Subscribes the handlers; a bad rule or a repeated name is refused.
    pub fn new(handlers: Vec<Arc<dyn Handler>>) -> Result<Bus, PatternError> {
        let mut subscriptions: Vec<Subscription> = Vec::with_capacity(handlers.len());
        for handler in handlers {
            if subscriptions
                .iter()
                .any(|s| s.handler.name() == handler.name())
            {
                return Err(PatternError {
                    path: handler.name().to_string(),
                    reason: "two handlers share this name".into(),
                });
            }
            let rule = Pattern::parse(&handler.rule())?;
            subscriptions.push(Subscription { handler, rule });
        }
        Ok(Bus {
            subscriptions: Arc::new(subscriptions),
        })
    }

    pub fn handler(&self, name: &str) -> Option<&Subscription> {
        self.subscriptions.iter().find(|s| s.handler.name() == name)
    }

    pub fn handler_names(&self) -> Vec<&'static str> {
        self.subscriptions
            .iter()
            .map(|s| s.handler.name())
            .collect()
    }

    /// The handlers whose rule matches the event.
    pub fn matching(&self, event: &Event) -> Vec<&'static str> {
        let document = event.rule_document();
        self.subscriptions
            .iter()
            .filter(|s| s.rule.matches(&document))
            .map(|s| s.handler.name())
            .collect()
    }
}
