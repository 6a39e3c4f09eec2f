//! The database queue: one table, `queue_messages`, on SQLite or PostgreSQL.
//!
//! How a receive claims rows is the idea to hold on to. It is one statement,
//! `UPDATE … WHERE id IN (SELECT id … LIMIT n FOR UPDATE SKIP LOCKED)
//! RETURNING *`, the same shape as the event dispatcher's claim. On
//! PostgreSQL the subquery locks the rows it picks and skips rows another
//! replica's receive has locked, so competing receivers get different
//! messages without waiting on each other. SQLite has no row locks (it
//! ignores the clause) but runs one writer at a time, which gives the same
//! guarantee; within a process receivers also queue on the [`Writer`] gate.
//!
//! A claimed row gets `visible_at = now + visibility`, `receive_count + 1`
//! and a fresh `receipt` token. The receipt handed out is `<id>.<token>`;
//! deleting or extending needs both to match, so a stale receipt touches
//! nothing. A visible row that has already been received `max_receives`
//! times is not handed out again: the same receive first renames its queue
//! to `<name>-dlq`, the dead-letter queue, which is an ordinary queue of
//! this table (see [`DatabaseQueue::dead_letters`]).
//!
//! A receive that finds nothing waits: it looks again every
//! `poll_interval`, and a send in the same process wakes it at once.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, Condition, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    QueryTrait,
};
use time::OffsetDateTime;
use tokio::sync::Notify;

use super::{Queue, QueueError, QueueMessage, QueueStats, batch_size};
use crate::platform::db::Writer;

pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One message of a named queue (see the module note).
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "queue_messages")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub queue: String,
        pub body: String,
        pub message_group: Option<String>,
        pub receive_count: i32,
        pub visible_at: time::OffsetDateTime,
        /// The token of the latest receive; `None` before the first.
        pub receipt: Option<String>,
        pub sent_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{Column, Entity};

/// Exhausted messages moved to the dead-letter queue per receive, at most.
const DEAD_LETTER_BATCH: u64 = 100;

#[derive(Debug, Clone)]
pub struct DatabaseQueueConfig {
    /// The queue's name in the table (`queue.name`).
    pub name: String,
    /// Receives before a message is dead-lettered.
    pub max_receives: u32,
    /// How often a waiting receive looks again.
    pub poll_interval: Duration,
}

#[derive(Clone)]
pub struct DatabaseQueue {
    writer: Writer,
    name: String,
    dead_letter_name: String,
    max_receives: i32,
    poll_interval: Duration,
    /// Woken by sends (and give-backs) in this process.
    arrivals: Arc<Notify>,
}

impl std::fmt::Debug for DatabaseQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseQueue")
            .field("name", &self.name)
            .field("max_receives", &self.max_receives)
            .finish_non_exhaustive()
    }
}

impl DatabaseQueue {
    pub fn new(writer: Writer, config: DatabaseQueueConfig) -> Self {
        let dead_letter_name = format!("{}-dlq", config.name);
        DatabaseQueue {
            writer,
            name: config.name,
            dead_letter_name,
            max_receives: i32::try_from(Ord::max(config.max_receives, 1)).unwrap_or(i32::MAX),
            poll_interval: config.poll_interval.max(Duration::from_millis(10)),
            arrivals: Arc::new(Notify::new()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This queue's dead-letter queue, as a queue of its own: receive from
    /// it to inspect dead letters, delete them, or send them back. Like an
    /// SQS dead-letter queue it has no redrive policy of its own (its
    /// messages keep their receive counts and are never dead-lettered).
    pub fn dead_letters(&self) -> DatabaseQueue {
        DatabaseQueue::new(
            self.writer.clone(),
            DatabaseQueueConfig {
                name: self.dead_letter_name.clone(),
                max_receives: u32::MAX,
                poll_interval: self.poll_interval,
            },
        )
    }

    /// A new message row and its id (a UUIDv7, so ids sort by send time).
    fn new_row(
        &self,
        body: &str,
        group: Option<&str>,
        now: OffsetDateTime,
    ) -> (String, entity::ActiveModel) {
        let id = uuid::Uuid::now_v7().to_string();
        let row = entity::ActiveModel {
            id: Set(id.clone()),
            queue: Set(self.name.clone()),
            body: Set(body.to_string()),
            message_group: Set(group.map(str::to_string)),
            receive_count: Set(0),
            visible_at: Set(now),
            receipt: Set(None),
            sent_at: Set(now),
        };
        (id, row)
    }

    /// The statements that enqueue messages inside the caller's
    /// [`Batch`](crate::platform::db::Batch), visible after `delay`: the
    /// messages exist exactly when the batch commits. Call
    /// [`DatabaseQueue::committed`] after the commit to wake receivers.
    pub fn send_statements(
        &self,
        messages: &[(String, Option<String>)],
        delay: Duration,
    ) -> Vec<sea_orm::Statement> {
        let now = OffsetDateTime::now_utc();
        let visible_at = now + delay;
        let backend = self.writer.db.get_database_backend();
        let rows: Vec<entity::ActiveModel> = messages
            .iter()
            .map(|(body, group)| {
                let (_, mut row) = self.new_row(body, group.as_deref(), now);
                row.visible_at = Set(visible_at);
                row
            })
            .collect();
        rows.chunks(100)
            .map(|chunk| Entity::insert_many(chunk.to_vec()).build(backend))
            .collect()
    }

    /// Wakes this process's waiting receivers after a
    /// [`send_statements`](DatabaseQueue::send_statements) commit.
    pub fn committed(&self) {
        self.arrivals.notify_waiters();
    }

    /// Whether any message of this queue is visible (a cheap read, so an
    /// idle poll does not take the write lock).
    async fn any_visible(&self, now: OffsetDateTime) -> Result<bool, QueueError> {
        let found = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Queue.eq(&self.name))
            .filter(Column::VisibleAt.lte(now))
            .limit(1)
            .into_tuple::<String>()
            .one(&self.writer.db)
            .await?;
        Ok(found.is_some())
    }

    /// One claim, without waiting: dead-letters exhausted messages, then
    /// takes up to `max` visible ones.
    async fn try_receive(
        &self,
        max: usize,
        visibility: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let now = OffsetDateTime::now_utc();
        if !self.any_visible(now).await? {
            return Ok(Vec::new());
        }
        let (txn, _permit) = self.writer.begin().await?;

        let exhausted = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Queue.eq(&self.name))
            .filter(Column::VisibleAt.lte(now))
            .filter(Column::ReceiveCount.gte(self.max_receives))
            .limit(DEAD_LETTER_BATCH)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .into_query();
        let dead = Entity::update_many()
            .col_expr(Column::Queue, Expr::value(self.dead_letter_name.clone()))
            .col_expr(Column::Receipt, Expr::value(Option::<String>::None))
            .col_expr(Column::VisibleAt, Expr::value(now))
            .filter(Column::Id.in_subquery(exhausted))
            .exec(&txn)
            .await?;
        if dead.rows_affected > 0 {
            tracing::warn!(
                queue = %self.name,
                dead_letter_queue = %self.dead_letter_name,
                messages = dead.rows_affected,
                "messages received too often moved to the dead-letter queue"
            );
        }

        let token = uuid::Uuid::new_v4().to_string();
        let visible_at = now + visibility;
        let batch = Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::Queue.eq(&self.name))
            .filter(Column::VisibleAt.lte(now))
            .filter(Column::ReceiveCount.lt(self.max_receives))
            .order_by_asc(Column::VisibleAt)
            .order_by_asc(Column::Id)
            .limit(max as u64)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .into_query();
        let mut claimed = Entity::update_many()
            .col_expr(Column::ReceiveCount, Expr::col(Column::ReceiveCount).add(1))
            .col_expr(Column::VisibleAt, Expr::value(visible_at))
            .col_expr(Column::Receipt, Expr::value(token.clone()))
            .filter(Column::Id.in_subquery(batch))
            .exec_with_returning(&txn)
            .await?;
        txn.commit().await?;

        // RETURNING gives no order; hand out the oldest first.
        claimed.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(claimed
            .into_iter()
            .map(|row| QueueMessage {
                receipt: format!("{}.{}", row.id, token),
                id: row.id,
                body: row.body,
                receive_count: u32::try_from(row.receive_count).unwrap_or(0),
                sent_at: row.sent_at,
                group: row.message_group,
            })
            .collect())
    }

    /// The condition matching the message a receipt names, if it is current.
    fn receipt_condition(&self, receipt: &str) -> Result<Condition, QueueError> {
        let (id, token) = receipt.split_once('.').ok_or(QueueError::StaleReceipt)?;
        Ok(Condition::all()
            .add(Column::Id.eq(id))
            .add(Column::Queue.eq(&self.name))
            .add(Column::Receipt.eq(token)))
    }
}

#[async_trait]
impl Queue for DatabaseQueue {
    fn backend(&self) -> &'static str {
        "database"
    }

    fn as_database(&self) -> Option<&DatabaseQueue> {
        Some(self)
    }

    async fn send(&self, body: &str, group: Option<&str>) -> Result<String, QueueError> {
        let (id, row) = self.new_row(body, group, OffsetDateTime::now_utc());
        {
            let _permit = self.writer.permit().await;
            Entity::insert(row)
                .exec_without_returning(&self.writer.db)
                .await?;
        }
        self.arrivals.notify_waiters();
        Ok(id)
    }

    async fn send_batch(
        &self,
        messages: &[(String, Option<String>)],
    ) -> Result<Vec<String>, QueueError> {
        if messages.is_empty() {
            return Ok(Vec::new());
        }
        let now = OffsetDateTime::now_utc();
        let (ids, rows): (Vec<String>, Vec<entity::ActiveModel>) = messages
            .iter()
            .map(|(body, group)| self.new_row(body, group.as_deref(), now))
            .unzip();
        {
            let (txn, _permit) = self.writer.begin().await?;
            for chunk in rows.chunks(100) {
                Entity::insert_many(chunk.to_vec())
                    .exec_without_returning(&txn)
                    .await?;
            }
            txn.commit().await?;
        }
        self.arrivals.notify_waiters();
        Ok(ids)
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let max = batch_size(max)?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Listen before looking, so a send between the look and the
            // sleep is not missed.
            let arrival = self.arrivals.notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();

            let messages = self.try_receive(max, visibility).await?;
            if !messages.is_empty() {
                return Ok(messages);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let nap = self.poll_interval.min(deadline - now);
            tokio::select! {
                _ = &mut arrival => {}
                _ = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        let condition = self.receipt_condition(receipt)?;
        let _permit = self.writer.permit().await;
        let deleted = Entity::delete_many()
            .filter(condition)
            .exec(&self.writer.db)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(QueueError::StaleReceipt);
        }
        Ok(())
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        let mut any = Condition::any();
        let mut valid = 0u64;
        for receipt in receipts {
            if let Ok(condition) = self.receipt_condition(receipt) {
                any = any.add(condition);
                valid += 1;
            }
        }
        let deleted = if valid == 0 {
            0
        } else {
            let _permit = self.writer.permit().await;
            Entity::delete_many()
                .filter(any)
                .exec(&self.writer.db)
                .await?
                .rows_affected
        };
        if deleted < receipts.len() as u64 {
            return Err(QueueError::StaleReceipt);
        }
        Ok(())
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        let condition = self.receipt_condition(receipt)?;
        let visible_at = OffsetDateTime::now_utc() + visibility;
        let changed = {
            let _permit = self.writer.permit().await;
            Entity::update_many()
                .col_expr(Column::VisibleAt, Expr::value(visible_at))
                .filter(condition)
                .exec(&self.writer.db)
                .await?
        };
        if changed.rows_affected == 0 {
            return Err(QueueError::StaleReceipt);
        }
        if visibility.is_zero() {
            self.arrivals.notify_waiters();
        }
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let db = &self.writer.db;
        let now = OffsetDateTime::now_utc();
        let depth = Entity::find()
            .filter(Column::Queue.eq(&self.name))
            .count(db)
            .await?;
        let in_flight = Entity::find()
            .filter(Column::Queue.eq(&self.name))
            .filter(Column::VisibleAt.gt(now))
            .count(db)
            .await?;
        let dead = Entity::find()
            .filter(Column::Queue.eq(&self.dead_letter_name))
            .count(db)
            .await?;
        let oldest: Option<OffsetDateTime> = Entity::find()
            .select_only()
            .column(Column::SentAt)
            .filter(Column::Queue.eq(&self.name))
            .order_by_asc(Column::SentAt)
            .limit(1)
            .into_tuple()
            .one(db)
            .await?;
        let oldest_age =
            oldest.map(|sent| Duration::try_from(now - sent).unwrap_or(Duration::ZERO));
        Ok(QueueStats {
            depth,
            in_flight,
            oldest_age,
            dead,
        })
    }
}
