//! The chat queue: inbound WhatsApp messages wait here for the assistant.
//! Two backends behind one trait, chosen by `[queue] kind`:
//!
//! - `database` (the default): a table in the main database
//!   ([`database::DatabaseQueue`]), on SQLite or PostgreSQL.
//! - `sqs`: an Amazon SQS queue ([`sqs::SqsQueue`]).
//!
//! The one idea a reader needs is SQS's *visibility timeout*, which both
//! backends implement: receiving a message does not remove it, it hides it
//! for a while and hands out a *receipt*. The receiver deletes the message
//! with that receipt once it is handled; if the receiver dies instead, the
//! message reappears when the timeout runs out and someone else gets it,
//! with its receive count one higher. A message received too often (a poison
//! message that crashes every worker) is moved to a dead-letter queue instead
//! of being handed out again. Delivery is therefore *at least once*: a
//! handler must tolerate seeing a message twice.
//!
//! Every receive hands out a fresh receipt. A receipt from an earlier receive
//! is stale: it cannot delete the message or change its visibility, so a slow
//! worker whose message was given to another worker cannot delete it under
//! that worker's feet.

pub mod database;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::config::{QueueKind, Settings};
use crate::platform::db::Writer;

/// Most messages one receive returns (SQS's limit, kept for both backends).
pub const MAX_BATCH: usize = 10;

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMessage {
    /// Stable across receives.
    pub id: String,
    pub body: String,
    /// Quote it to delete the message or change its visibility; valid until
    /// the message is received again.
    pub receipt: String,
    /// How many times the message has been received, this time included.
    pub receive_count: u32,
    pub sent_at: OffsetDateTime,
    /// The ordering group given at send time (a conversation), if any.
    pub group: Option<String>,
}

/// Figures for `/metrics`. All of them are approximate on SQS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Messages in the queue: waiting plus in flight (not the dead letters).
    pub depth: u64,
    /// Received and not yet deleted or visible again.
    pub in_flight: u64,
    /// Age of the oldest message in the queue. `None` when the queue is
    /// empty, and always on SQS, which publishes it only as the CloudWatch
    /// metric `ApproximateAgeOfOldestMessage`.
    pub oldest_age: Option<Duration>,
    /// Messages in the dead-letter queue.
    pub dead: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The receipt is not the message's current one: the message was
    /// deleted, or received again by someone else. SQS does not always
    /// tell (a stale receipt may "succeed" there without effect).
    #[error("the receipt is stale or unknown")]
    StaleReceipt,
    #[error("invalid queue request: {0}")]
    Invalid(String),
    #[error("the queue database failed: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// An SQS call failed; the text carries the SDK's error chain.
    #[error("SQS failed: {0}")]
    Sqs(String),
}

/// The queue port. Durations are rounded up to whole seconds on SQS.
#[async_trait]
pub trait Queue: Send + Sync + 'static {
    /// `"database"` or `"sqs"`, for logs and metrics labels.
    fn backend(&self) -> &'static str;

    /// The database queue, whose messages can be enqueued inside the
    /// caller's transaction; `None` for SQS.
    fn as_database(&self) -> Option<&database::DatabaseQueue> {
        None
    }

    /// Enqueues one message; returns its id.
    async fn send(&self, body: &str, group: Option<&str>) -> Result<String, QueueError>;

    /// Enqueues several messages (`(body, group)`); returns their ids in
    /// order. Either all are enqueued or an error is returned (on SQS some
    /// may have been enqueued before the error: sending is at least once).
    async fn send_batch(
        &self,
        messages: &[(String, Option<String>)],
    ) -> Result<Vec<String>, QueueError>;

    /// Takes up to `max` (1 to [`MAX_BATCH`]) visible messages and hides
    /// them for `visibility`. When none is visible, waits up to `wait` for
    /// one to arrive (long polling); returns an empty list if none did.
    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError>;

    /// Removes a handled message. A stale receipt removes nothing and gives
    /// [`QueueError::StaleReceipt`] (the database queue always says so; SQS
    /// may answer `Ok` without removing anything).
    async fn delete(&self, receipt: &str) -> Result<(), QueueError>;

    /// Removes several handled messages. Fails if any receipt was rejected;
    /// the others are removed all the same.
    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError>;

    /// Hides a received message for `visibility` from now (a worker that
    /// needs longer extends it); zero makes it visible at once (give it
    /// back). A stale receipt gives [`QueueError::StaleReceipt`].
    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError>;

    /// Depth, in-flight count, oldest age and dead letters, for metrics.
    async fn stats(&self) -> Result<QueueStats, QueueError>;
}

/// The queue `[queue]` describes. The database queue writes through the
/// application's `writer` (on SQLite, one writer at a time per process).
pub async fn from_settings(settings: &Settings, writer: &Writer) -> anyhow::Result<Arc<dyn Queue>> {
    let queue = &settings.queue;
    Ok(match queue.kind {
        QueueKind::Database => Arc::new(database::DatabaseQueue::new(
            writer.clone(),
            database::DatabaseQueueConfig {
                name: queue.name.clone(),
                max_receives: queue.max_receives,
                poll_interval: queue.poll_interval,
            },
        )),
        QueueKind::Sqs => Arc::new(sqs::SqsQueue::from_settings(settings).await),
    })
}

/// `max` clamped to what one receive may return.
pub(crate) fn batch_size(max: usize) -> Result<usize, QueueError> {
    if max == 0 || max > MAX_BATCH {
        return Err(QueueError::Invalid(format!(
            "a receive takes 1 to {MAX_BATCH} messages, not {max}"
        )));
    }
    Ok(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_size_is_one_to_ten() {
        assert!(batch_size(0).is_err());
        assert_eq!(batch_size(1).unwrap(), 1);
        assert_eq!(batch_size(10).unwrap(), 10);
        assert!(batch_size(11).is_err());
    }
}
