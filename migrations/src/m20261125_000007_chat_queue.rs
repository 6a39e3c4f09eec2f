//! The database chat queue (`queue.kind = "database"`).
//!
//! - `queue_messages`: one row per message in a named queue. A message is
//!   receivable when `visible_at` has passed; receiving it pushes
//!   `visible_at` forward by the visibility timeout, counts the receive and
//!   stores a fresh `receipt`, which a later delete or visibility change
//!   must quote (a stale receipt matches nothing). A message received too
//!   often is moved to the queue's dead-letter queue by renaming its
//!   `queue` (`chat` → `chat-dlq`), so dead letters are ordinary rows that
//!   can be inspected and re-driven.
//! - `message_group`: per-conversation ordering, for later.
//! - The index on (queue, visible_at) is what every receive scans.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum QueueMessages {
    Table,
    Id,
    Queue,
    Body,
    MessageGroup,
    ReceiveCount,
    VisibleAt,
    Receipt,
    SentAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QueueMessages::Table)
                    .if_not_exists()
                    .col(string_len(QueueMessages::Id, 36).primary_key())
                    .col(string_len(QueueMessages::Queue, 80))
                    .col(text(QueueMessages::Body))
                    .col(string_len_null(QueueMessages::MessageGroup, 128))
                    .col(integer(QueueMessages::ReceiveCount).default(0))
                    .col(timestamp_with_time_zone(QueueMessages::VisibleAt))
                    .col(string_len_null(QueueMessages::Receipt, 36))
                    .col(timestamp_with_time_zone(QueueMessages::SentAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_queue_messages_queue_visible")
                    .table(QueueMessages::Table)
                    .col(QueueMessages::Queue)
                    .col(QueueMessages::VisibleAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(
                Table::drop()
                    .table(QueueMessages::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}
