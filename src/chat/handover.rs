//! People in the loop: an admin takes a conversation over, replies as a
//! human, and releases it back to the bot. A takeover is a lease: every
//! admin action renews it, and after `chat.handover_idle` without one the
//! conversation returns to the bot on its own. The same lease bounds the
//! wait after the bot escalated (`needs_human`). Every change of hands is a
//! `system` message, so the history shows who answered when.

use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter};
use time::OffsetDateTime;

use super::Assistant;
use super::store::{self, State, conversation, message};
use crate::platform::db::Writer;

#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("no such conversation")]
    NotFound,
    #[error("the conversation is taken over by {0}")]
    HeldBy(String),
    #[error("take the conversation over first")]
    NotTakenOver,
    #[error("the reply is empty")]
    Empty,
    #[error("the reply is longer than {0} characters")]
    TooLong(usize),
    #[error(transparent)]
    Database(#[from] sea_orm::DbErr),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Longest reply an admin may send in one go (split into WhatsApp-sized
/// messages like the bot's).
pub const MAX_HUMAN_REPLY: usize = 4000;

async fn system_note(
    writer: &Writer,
    conversation_id: i64,
    text: &str,
    author: Option<&str>,
) -> Result<(), sea_orm::DbErr> {
    let mut row = store::new_message(conversation_id, "system", "handoff", text, "recorded");
    row.author = sea_orm::ActiveValue::Set(author.map(str::to_string));
    let _permit = writer.permit().await;
    message::Entity::insert(row)
        .exec_without_returning(&writer.db)
        .await?;
    Ok(())
}

/// Returns a conversation to the bot (after `why`), with a note in its history.
pub async fn return_to_bot(
    writer: &Writer,
    conv: &conversation::Model,
    why: &str,
) -> Result<bool, sea_orm::DbErr> {
    let changed = {
        let _permit = writer.permit().await;
        conversation::Entity::update_many()
            .col_expr(
                conversation::Column::State,
                Expr::value(State::Bot.as_str()),
            )
            .col_expr(
                conversation::Column::StateReason,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                conversation::Column::HandledBy,
                Expr::value(Option::<String>::None),
            )
            .col_expr(
                conversation::Column::HandoverUntil,
                Expr::value(Option::<OffsetDateTime>::None),
            )
            .col_expr(conversation::Column::Dissatisfaction, Expr::value(0))
            .filter(conversation::Column::Id.eq(conv.id))
            .filter(conversation::Column::State.eq(conv.state.as_str()))
            .exec(&writer.db)
            .await?
            .rows_affected
            == 1
    };
    if changed {
        system_note(
            writer,
            conv.id,
            &format!("Returned to the assistant {why}."),
            None,
        )
        .await?;
    }
    Ok(changed)
}

/// Returns every conversation whose hand-over lease ran out to the bot.
pub async fn return_expired(writer: &Writer) -> Result<usize, sea_orm::DbErr> {
    let now = OffsetDateTime::now_utc();
    let expired = conversation::Entity::find()
        .filter(conversation::Column::State.ne(State::Bot.as_str()))
        .filter(conversation::Column::HandoverUntil.lt(now))
        .all(&writer.db)
        .await?;
    let mut count = 0;
    for conv in expired {
        if return_to_bot(writer, &conv, "after a time without activity").await? {
            count += 1;
        }
    }
    Ok(count)
}

impl Assistant {
    /// `admin` takes the conversation over: the bot stays silent until it
    /// is released or the lease runs out. Messages waiting for the bot go
    /// to the admin instead.
    pub async fn take_over(
        &self,
        conversation_id: i64,
        admin: &str,
    ) -> Result<conversation::Model, HandoverError> {
        let writer = &self.inner.writer;
        let now = OffsetDateTime::now_utc();
        let until = now + self.inner.settings.chat.handover_idle;
        let changed = {
            let _permit = writer.permit().await;
            conversation::Entity::update_many()
                .col_expr(
                    conversation::Column::State,
                    Expr::value(State::Human.as_str()),
                )
                .col_expr(conversation::Column::StateReason, Expr::value("taken_over"))
                .col_expr(conversation::Column::HandledBy, Expr::value(admin))
                .col_expr(conversation::Column::HandoverUntil, Expr::value(until))
                .filter(conversation::Column::Id.eq(conversation_id))
                .filter(
                    Condition::any()
                        .add(conversation::Column::State.ne(State::Human.as_str()))
                        .add(conversation::Column::HandledBy.eq(admin))
                        .add(conversation::Column::HandoverUntil.lt(now)),
                )
                .exec(&writer.db)
                .await?
                .rows_affected
        };
        let conv = store::conversation(&writer.db, conversation_id)
            .await?
            .ok_or(HandoverError::NotFound)?;
        if changed == 0 {
            return Err(HandoverError::HeldBy(conv.handled_by.unwrap_or_default()));
        }
        {
            let _permit = writer.permit().await;
            message::Entity::update_many()
                .col_expr(message::Column::Status, Expr::value("to_human"))
                .filter(message::Column::ConversationId.eq(conversation_id))
                .filter(message::Column::Status.eq("received"))
                .exec(&writer.db)
                .await?;
        }
        system_note(
            writer,
            conversation_id,
            &format!("Taken over by {admin}."),
            Some(admin),
        )
        .await?;
        tracing::info!(
            conversation = conversation_id,
            "an admin took a conversation over"
        );
        Ok(conv)
    }

    /// Sends `text` as `admin` (who must hold the takeover) through the
    /// messaging adapter, stored in the history; renews the lease.
    pub async fn reply_as_human(
        &self,
        conversation_id: i64,
        admin: &str,
        text: &str,
    ) -> Result<message::Model, HandoverError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(HandoverError::Empty);
        }
        if text.chars().count() > MAX_HUMAN_REPLY {
            return Err(HandoverError::TooLong(MAX_HUMAN_REPLY));
        }
        let writer = &self.inner.writer;
        let conv = store::conversation(&writer.db, conversation_id)
            .await?
            .ok_or(HandoverError::NotFound)?;
        let now = OffsetDateTime::now_utc();
        let holds = conv.state == State::Human.as_str()
            && conv.handled_by.as_deref() == Some(admin)
            && conv.handover_until.is_some_and(|until| until >= now);
        if !holds {
            return Err(HandoverError::NotTakenOver);
        }
        let mut row = store::new_message(conversation_id, "human", "text", text, "pending");
        row.author = sea_orm::ActiveValue::Set(Some(admin.to_string()));
        let id = {
            let (txn, _permit) = writer.begin().await?;
            let id = message::Entity::insert(row)
                .exec(&txn)
                .await?
                .last_insert_id;
            conversation::Entity::update_many()
                .col_expr(
                    conversation::Column::HandoverUntil,
                    Expr::value(now + self.inner.settings.chat.handover_idle),
                )
                .col_expr(conversation::Column::LastMessageAt, Expr::value(now))
                .filter(conversation::Column::Id.eq(conversation_id))
                .exec(&txn)
                .await?;
            // The person's reply answers what the shopper asked meanwhile.
            message::Entity::update_many()
                .col_expr(message::Column::Status, Expr::value("answered"))
                .filter(message::Column::ConversationId.eq(conversation_id))
                .filter(message::Column::Role.eq("user"))
                .filter(message::Column::Status.is_in(["received", "to_human"]))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            id
        };
        // Sent now; if the provider is down the row stays pending and the
        // next job of the conversation sends it.
        if let Err(delay) = self.flush(&conv).await? {
            tracing::warn!(retry_in = ?delay, "an admin's reply could not be sent yet");
        }
        message::Entity::find_by_id(id)
            .one(&writer.db)
            .await?
            .ok_or(HandoverError::NotFound)
    }

    /// A private note in the conversation's history (never sent).
    pub async fn add_note(
        &self,
        conversation_id: i64,
        admin: &str,
        text: &str,
    ) -> Result<message::Model, HandoverError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(HandoverError::Empty);
        }
        if text.chars().count() > MAX_HUMAN_REPLY {
            return Err(HandoverError::TooLong(MAX_HUMAN_REPLY));
        }
        let writer = &self.inner.writer;
        store::conversation(&writer.db, conversation_id)
            .await?
            .ok_or(HandoverError::NotFound)?;
        let mut row = store::new_message(conversation_id, "human", "note", text, "recorded");
        row.author = sea_orm::ActiveValue::Set(Some(admin.to_string()));
        let id = {
            let _permit = writer.permit().await;
            message::Entity::insert(row)
                .exec(&writer.db)
                .await?
                .last_insert_id
        };
        message::Entity::find_by_id(id)
            .one(&writer.db)
            .await?
            .ok_or(HandoverError::NotFound)
    }

    /// Hands the conversation back to the bot.
    pub async fn release(
        &self,
        conversation_id: i64,
        admin: &str,
    ) -> Result<conversation::Model, HandoverError> {
        let writer = &self.inner.writer;
        let conv = store::conversation(&writer.db, conversation_id)
            .await?
            .ok_or(HandoverError::NotFound)?;
        if conv.state == State::Human.as_str()
            && conv.handled_by.as_deref().is_some_and(|by| by != admin)
            && conv
                .handover_until
                .is_some_and(|until| until >= OffsetDateTime::now_utc())
        {
            return Err(HandoverError::HeldBy(conv.handled_by.unwrap_or_default()));
        }
        if conv.state != State::Bot.as_str() {
            return_to_bot(writer, &conv, &format!("by {admin}")).await?;
        }
        tracing::info!(
            conversation = conversation_id,
            "a conversation was returned to the bot"
        );
        store::conversation(&writer.db, conversation_id)
            .await?
            .ok_or(HandoverError::NotFound)
    }
}
