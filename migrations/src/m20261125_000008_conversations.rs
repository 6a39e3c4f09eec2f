//! The WhatsApp assistant's conversation store.
//!
//! - `conversations`: one per WhatsApp identity (a phone number, or a
//!   username-era id). `state` is who answers: `bot`, `needs_human` (the
//!   bot escalated and waits for a person) or `human` (an admin took it
//!   over). `handover_until` is the lease of either of the last two: past
//!   it, the conversation returns to the bot. `worker`/`worker_until` is
//!   the processing lease that keeps one worker per conversation across
//!   replicas.
//! - `chat_messages`: every message of a conversation: the shopper's
//!   (`user`, unique `message_sid` so a replayed webhook is stored once),
//!   the bot's (`assistant`, with model, tokens, latency and the passages
//!   it used), an admin's (`human`) and hand-over markers (`system`).
//!   `status` drives the worker: `received` (waiting for an answer,
//!   `queued` once its job is on the queue) → `answered`; `limited` and
//!   `to_human` are never answered by the bot; outbound rows go
//!   `pending` → `sent` (or `suppressed`, `failed`).
//! - `chat_missing_knowledge`: questions the evidence gate refused, for
//!   the admin to write documents for.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Conversations {
    Table,
    Id,
    Identity,
    Phone,
    ProfileName,
    CustomerId,
    State,
    StateReason,
    HandledBy,
    HandoverUntil,
    Dissatisfaction,
    Worker,
    WorkerUntil,
    LastInboundAt,
    LastMessageAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ChatMessages {
    Table,
    Id,
    ConversationId,
    Role,
    Kind,
    Body,
    MessageSid,
    Status,
    Queued,
    ReplyTo,
    Media,
    Model,
    InputTokens,
    OutputTokens,
    LatencyMs,
    Passages,
    OutboundId,
    Author,
    CreatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum ChatMissingKnowledge {
    Table,
    Id,
    ConversationId,
    MessageId,
    Question,
    BestScore,
    CreatedAt,
    ResolvedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Conversations::Id))
                    .col(string_len_uniq(Conversations::Identity, 64))
                    .col(string_len_null(Conversations::Phone, 32))
                    .col(string_len_null(Conversations::ProfileName, 128))
                    .col(big_integer_null(Conversations::CustomerId))
                    .col(string_len(Conversations::State, 16).default("bot"))
                    .col(string_len_null(Conversations::StateReason, 64))
                    .col(string_len_null(Conversations::HandledBy, 128))
                    .col(timestamp_with_time_zone_null(Conversations::HandoverUntil))
                    .col(integer(Conversations::Dissatisfaction).default(0))
                    .col(string_len_null(Conversations::Worker, 64))
                    .col(timestamp_with_time_zone_null(Conversations::WorkerUntil))
                    .col(timestamp_with_time_zone_null(Conversations::LastInboundAt))
                    .col(timestamp_with_time_zone(Conversations::LastMessageAt))
                    .col(timestamp_with_time_zone(Conversations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_conversations_state_last")
                    .table(Conversations::Table)
                    .col(Conversations::State)
                    .col(Conversations::LastMessageAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ChatMessages::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ChatMessages::Id))
                    .col(big_integer(ChatMessages::ConversationId))
                    .col(string_len(ChatMessages::Role, 16))
                    .col(string_len(ChatMessages::Kind, 16))
                    .col(text(ChatMessages::Body))
                    .col(string_len_null(ChatMessages::MessageSid, 64).unique_key())
                    .col(string_len(ChatMessages::Status, 16))
                    .col(boolean(ChatMessages::Queued).default(false))
                    .col(big_integer_null(ChatMessages::ReplyTo))
                    .col(text_null(ChatMessages::Media))
                    .col(string_len_null(ChatMessages::Model, 128))
                    .col(integer_null(ChatMessages::InputTokens))
                    .col(integer_null(ChatMessages::OutputTokens))
                    .col(integer_null(ChatMessages::LatencyMs))
                    .col(text_null(ChatMessages::Passages))
                    .col(string_len_null(ChatMessages::OutboundId, 64))
                    .col(string_len_null(ChatMessages::Author, 128))
                    .col(timestamp_with_time_zone(ChatMessages::CreatedAt))
                    .col(timestamp_with_time_zone_null(ChatMessages::SentAt))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "idx_chat_messages_conversation",
                vec![ChatMessages::ConversationId, ChatMessages::Id],
            ),
            (
                "idx_chat_messages_status",
                vec![ChatMessages::Status, ChatMessages::ConversationId],
            ),
            ("idx_chat_messages_created", vec![ChatMessages::CreatedAt]),
        ] {
            let mut index = Index::create();
            index.name(name).table(ChatMessages::Table).if_not_exists();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(ChatMissingKnowledge::Table)
                    .if_not_exists()
                    .col(big_pk_auto(ChatMissingKnowledge::Id))
                    .col(big_integer(ChatMissingKnowledge::ConversationId))
                    .col(big_integer_null(ChatMissingKnowledge::MessageId))
                    .col(text(ChatMissingKnowledge::Question))
                    .col(double_null(ChatMissingKnowledge::BestScore))
                    .col(timestamp_with_time_zone(ChatMissingKnowledge::CreatedAt))
                    .col(timestamp_with_time_zone_null(
                        ChatMissingKnowledge::ResolvedAt,
                    ))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            ChatMissingKnowledge::Table.into_iden(),
            ChatMessages::Table.into_iden(),
            Conversations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).if_exists().to_owned())
                .await?;
        }
        Ok(())
    }
}
