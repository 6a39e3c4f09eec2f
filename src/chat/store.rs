//! The conversation store: `conversations`, `chat_messages` and
//! `chat_missing_knowledge` (migration 000008 explains the columns), and
//! every query the chat module runs on them outside the webhook's batch
//! insert (`intake.rs`).

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait,
};
use serde::Serialize;
use time::OffsetDateTime;

use crate::platform::db::Writer;

pub mod conversation {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "conversations")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        /// The WhatsApp identity: E.164 phone, or a username-era id.
        #[sea_orm(unique)]
        pub identity: String,
        pub phone: Option<String>,
        pub profile_name: Option<String>,
        pub customer_id: Option<i64>,
        /// `bot`, `needs_human` or `human`.
        pub state: String,
        pub state_reason: Option<String>,
        /// The admin holding the takeover.
        pub handled_by: Option<String>,
        pub handover_until: Option<time::OffsetDateTime>,
        pub dissatisfaction: i32,
        #[serde(skip)]
        pub worker: Option<String>,
        #[serde(skip)]
        pub worker_until: Option<time::OffsetDateTime>,
        pub last_inbound_at: Option<time::OffsetDateTime>,
        pub last_message_at: time::OffsetDateTime,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod message {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "chat_messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub conversation_id: i64,
        /// `user`, `assistant`, `human` or `system`.
        pub role: String,
        /// `text`, `notice` (rate limit), `holding`, `handoff`, `note`.
        pub kind: String,
        pub body: String,
        #[sea_orm(unique)]
        pub message_sid: Option<String>,
        pub status: String,
        pub queued: bool,
        /// For a shopper's message: the reply that answered it.
        pub reply_to: Option<i64>,
        /// JSON list of attachments.
        pub media: Option<String>,
        pub model: Option<String>,
        pub input_tokens: Option<i32>,
        pub output_tokens: Option<i32>,
        pub latency_ms: Option<i32>,
        /// JSON list of the passages the answer used.
        pub passages: Option<String>,
        /// `messages.message_id` of the (first) WhatsApp message sent.
        pub outbound_id: Option<String>,
        pub author: Option<String>,
        pub created_at: time::OffsetDateTime,
        pub sent_at: Option<time::OffsetDateTime>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod missing {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize)]
    #[sea_orm(table_name = "chat_missing_knowledge")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub conversation_id: i64,
        pub message_id: Option<i64>,
        pub question: String,
        pub best_score: Option<f64>,
        pub created_at: time::OffsetDateTime,
        pub resolved_at: Option<time::OffsetDateTime>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Who answers a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Bot,
    NeedsHuman,
    Human,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Bot => "bot",
            State::NeedsHuman => "needs_human",
            State::Human => "human",
        }
    }

    pub fn parse(raw: &str) -> Option<State> {
        match raw {
            "bot" => Some(State::Bot),
            "needs_human" => Some(State::NeedsHuman),
            "human" => Some(State::Human),
            _ => None,
        }
    }
}

pub async fn conversation<C: ConnectionTrait>(
    db: &C,
    id: i64,
) -> Result<Option<conversation::Model>, DbErr> {
    conversation::Entity::find_by_id(id).one(db).await
}

/// Takes the processing lease of a conversation for `worker` until
/// `until`; false while another worker's lease runs.
pub async fn acquire_lease(
    writer: &Writer,
    id: i64,
    worker: &str,
    until: OffsetDateTime,
) -> Result<bool, DbErr> {
    let now = OffsetDateTime::now_utc();
    let _permit = writer.permit().await;
    let changed = conversation::Entity::update_many()
        .col_expr(conversation::Column::Worker, Expr::value(worker))
        .col_expr(conversation::Column::WorkerUntil, Expr::value(until))
        .filter(conversation::Column::Id.eq(id))
        .filter(
            Condition::any()
                .add(conversation::Column::WorkerUntil.is_null())
                .add(conversation::Column::WorkerUntil.lt(now))
                .add(conversation::Column::Worker.eq(worker)),
        )
        .exec(&writer.db)
        .await?;
    Ok(changed.rows_affected == 1)
}

/// Extends a lease `worker` holds; false when it no longer holds it.
pub async fn extend_lease(
    writer: &Writer,
    id: i64,
    worker: &str,
    until: OffsetDateTime,
) -> Result<bool, DbErr> {
    let _permit = writer.permit().await;
    let changed = conversation::Entity::update_many()
        .col_expr(conversation::Column::WorkerUntil, Expr::value(until))
        .filter(conversation::Column::Id.eq(id))
        .filter(conversation::Column::Worker.eq(worker))
        .exec(&writer.db)
        .await?;
    Ok(changed.rows_affected == 1)
}

/// Gives the lease back (only if `worker` still holds it).
/// Lets go of every lease a process (`worker` prefix) holds on a
/// conversation: a turn abandoned at shutdown must not keep the
/// conversation from the next worker until its lease runs out.
pub async fn release_leases_of(writer: &Writer, id: i64, process: &str) -> Result<(), DbErr> {
    clear_lease(
        writer,
        id,
        conversation::Column::Worker.starts_with(format!("{process}:")),
    )
    .await
}

pub async fn release_lease(writer: &Writer, id: i64, worker: &str) -> Result<(), DbErr> {
    clear_lease(writer, id, conversation::Column::Worker.eq(worker)).await
}

/// Clears the conversation's lease when its holder matches `holder`.
async fn clear_lease(
    writer: &Writer,
    id: i64,
    holder: sea_orm::sea_query::SimpleExpr,
) -> Result<(), DbErr> {
    let _permit = writer.permit().await;
    conversation::Entity::update_many()
        .col_expr(
            conversation::Column::Worker,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            conversation::Column::WorkerUntil,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .filter(conversation::Column::Id.eq(id))
        .filter(holder)
        .exec(&writer.db)
        .await?;
    Ok(())
}

/// The shopper's messages waiting for the bot, oldest first.
pub async fn waiting<C: ConnectionTrait>(
    db: &C,
    conversation_id: i64,
) -> Result<Vec<message::Model>, DbErr> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Role.eq("user"))
        .filter(message::Column::Status.eq("received"))
        .order_by_asc(message::Column::Id)
        .all(db)
        .await
}

/// Outbound messages stored but not sent yet, oldest first.
pub async fn unsent<C: ConnectionTrait>(
    db: &C,
    conversation_id: i64,
) -> Result<Vec<message::Model>, DbErr> {
    message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Role.is_in(["assistant", "human"]))
        .filter(message::Column::Status.eq("pending"))
        .order_by_asc(message::Column::Id)
        .all(db)
        .await
}

/// The latest `limit` messages (shopper, bot and people) before
/// `before_id`, oldest first: the history a model sees.
pub async fn history<C: ConnectionTrait>(
    db: &C,
    conversation_id: i64,
    before_id: i64,
    limit: u64,
) -> Result<Vec<message::Model>, DbErr> {
    let mut rows = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .filter(message::Column::Id.lt(before_id))
        .filter(message::Column::Role.is_in(["user", "assistant", "human"]))
        .filter(message::Column::Kind.eq("text"))
        .order_by_desc(message::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// Every message of a conversation, oldest first (at most `limit`, the newest).
pub async fn messages(
    db: &DatabaseConnection,
    conversation_id: i64,
    limit: u64,
) -> Result<Vec<message::Model>, DbErr> {
    let mut rows = message::Entity::find()
        .filter(message::Column::ConversationId.eq(conversation_id))
        .order_by_desc(message::Column::Id)
        .limit(limit)
        .all(db)
        .await?;
    rows.reverse();
    Ok(rows)
}

/// The delivery status (from the messaging store) of each sent message,
/// by its `outbound_id`.
pub async fn delivery_statuses(
    db: &DatabaseConnection,
    messages: &[message::Model],
) -> Result<std::collections::HashMap<String, String>, DbErr> {
    use crate::platform::messaging::entity as outbound;
    let ids: Vec<String> = messages
        .iter()
        .filter_map(|m| m.outbound_id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(Default::default());
    }
    Ok(outbound::Entity::find()
        .filter(outbound::Column::MessageId.is_in(ids))
        .all(db)
        .await?
        .into_iter()
        .map(|r| (r.message_id, r.status))
        .collect())
}

/// Marks an outbound message's fate.
pub async fn mark_outbound(
    writer: &Writer,
    id: i64,
    status: &str,
    outbound_id: Option<String>,
) -> Result<(), DbErr> {
    let now = OffsetDateTime::now_utc();
    let _permit = writer.permit().await;
    let mut update = message::Entity::update_many()
        .col_expr(message::Column::Status, Expr::value(status))
        .filter(message::Column::Id.eq(id))
        .filter(message::Column::Status.eq("pending"));
    if status == "sent" {
        update = update.col_expr(message::Column::SentAt, Expr::value(now));
    }
    if let Some(outbound_id) = outbound_id {
        update = update.col_expr(message::Column::OutboundId, Expr::value(outbound_id));
    }
    update.exec(&writer.db).await?;
    Ok(())
}

/// A new message row (not yet inserted).
pub fn new_message(
    conversation_id: i64,
    role: &str,
    kind: &str,
    body: &str,
    status: &str,
) -> message::ActiveModel {
    message::ActiveModel {
        conversation_id: Set(conversation_id),
        role: Set(role.into()),
        kind: Set(kind.into()),
        body: Set(body.into()),
        status: Set(status.into()),
        queued: Set(false),
        created_at: Set(OffsetDateTime::now_utc()),
        ..Default::default()
    }
}

/// Which conversations an inbox shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbox {
    All,
    /// In one state.
    In(State),
    /// Taken over by this admin (by email).
    HeldBy(String),
    /// Waiting for an answer: a shopper message the assistant has not
    /// answered yet or that arrived while people hold the conversation and
    /// no person has replied to, or handed to people (the assistant's
    /// holding reply is not an answer) and not yet taken over.
    Unanswered,
}

/// Shopper message statuses that still wait for an answer: the
/// assistant's turn has not run, or a person was asked for. (Messages over
/// a rate limit got their one notice and are not waiting.)
const UNANSWERED: [&str; 2] = ["received", "to_human"];

/// Conversations in an inbox, most recent first.
pub async fn list(
    db: &DatabaseConnection,
    inbox: &Inbox,
    limit: u64,
) -> Result<Vec<conversation::Model>, DbErr> {
    let query = conversation::Entity::find();
    let query = match inbox {
        Inbox::All => query,
        Inbox::In(state) => query.filter(conversation::Column::State.eq(state.as_str())),
        Inbox::HeldBy(email) => query
            .filter(conversation::Column::State.eq(State::Human.as_str()))
            .filter(conversation::Column::HandledBy.eq(email.as_str())),
        Inbox::Unanswered => query.filter(
            Condition::any()
                .add(conversation::Column::State.eq(State::NeedsHuman.as_str()))
                .add(
                    conversation::Column::Id.in_subquery(
                        message::Entity::find()
                            .select_only()
                            .column(message::Column::ConversationId)
                            .filter(message::Column::Role.eq("user"))
                            .filter(message::Column::Status.is_in(UNANSWERED))
                            .into_query(),
                    ),
                ),
        ),
    };
    query
        .order_by_desc(conversation::Column::LastMessageAt)
        .order_by_desc(conversation::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// The conversation of a WhatsApp identity, if it has written.
pub async fn by_identity(
    db: &DatabaseConnection,
    identity: &str,
) -> Result<Option<conversation::Model>, DbErr> {
    conversation::Entity::find()
        .filter(conversation::Column::Identity.eq(identity))
        .one(db)
        .await
}

/// How many conversations are in `state` (the dashboard's escalations).
pub async fn count_in_state(db: &DatabaseConnection, state: State) -> Result<u64, DbErr> {
    use sea_orm::PaginatorTrait;
    conversation::Entity::find()
        .filter(conversation::Column::State.eq(state.as_str()))
        .count(db)
        .await
}

/// The open "missing knowledge" list, newest first.
pub async fn missing_knowledge(
    db: &DatabaseConnection,
    limit: u64,
) -> Result<Vec<missing::Model>, DbErr> {
    missing::Entity::find()
        .filter(missing::Column::ResolvedAt.is_null())
        .order_by_desc(missing::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

/// Deletes messages older than `before`, then conversations with no
/// message left that were last active before it. Returns (messages,
/// conversations) deleted.
pub async fn purge(writer: &Writer, before: OffsetDateTime) -> Result<(u64, u64), DbErr> {
    let _permit = writer.permit().await;
    let messages = message::Entity::delete_many()
        .filter(message::Column::CreatedAt.lt(before))
        .exec(&writer.db)
        .await?
        .rows_affected;
    missing::Entity::delete_many()
        .filter(missing::Column::CreatedAt.lt(before))
        .exec(&writer.db)
        .await?;
    let live = message::Entity::find()
        .select_only()
        .column(message::Column::ConversationId)
        .distinct()
        .into_query();
    let conversations = conversation::Entity::delete_many()
        .filter(conversation::Column::LastMessageAt.lt(before))
        .filter(conversation::Column::Id.not_in_subquery(live))
        .exec(&writer.db)
        .await?
        .rows_affected;
    Ok((messages, conversations))
}
