//! WhatsApp out. The embedded default records every message in the
//! `messages` table (and the log) instead of sending it; the Twilio
//! adapter arrives with the events issue and records what it sends in the
//! same table.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};
use time::OffsetDateTime;

use super::db::Writer;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub message_id: String,
        /// E.164 number.
        pub recipient: String,
        /// What the message is for, e.g. `password_reset`.
        pub kind: String,
        pub body: String,
        /// `recorded` for the embedded adapter; provider statuses later.
        pub status: String,
        pub created_at: time::OffsetDateTime,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An outbound message as the shop sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    pub message_id: String,
    pub recipient: String,
    pub kind: String,
    pub body: String,
    pub status: String,
    pub created_at: OffsetDateTime,
}

/// Records a message in the outbox (the embedded adapter's "send"). The
/// body is not logged: it may carry a secret link.
pub async fn record(
    writer: &Writer,
    recipient: &str,
    kind: &str,
    body: &str,
) -> Result<String, DbErr> {
    let _permit = writer.permit().await;
    let message_id = uuid::Uuid::now_v7().to_string();
    entity::Entity::insert(entity::ActiveModel {
        id: NotSet,
        message_id: Set(message_id.clone()),
        recipient: Set(recipient.to_string()),
        kind: Set(kind.to_string()),
        body: Set(body.to_string()),
        status: Set("recorded".to_string()),
        created_at: Set(OffsetDateTime::now_utc()),
    })
    .exec_without_returning(&writer.db)
    .await?;
    metrics::counter!("kedai_messages_total", "kind" => kind.to_string(), "status" => "recorded")
        .increment(1);
    Ok(message_id)
}

/// The newest messages, optionally to one number.
pub async fn list(
    db: &DatabaseConnection,
    recipient: Option<&str>,
    limit: u64,
) -> Result<Vec<OutboundMessage>, DbErr> {
    use sea_orm::QuerySelect;
    let mut query = entity::Entity::find()
        .order_by_desc(entity::Column::Id)
        .limit(limit);
    if let Some(recipient) = recipient {
        query = query.filter(entity::Column::Recipient.eq(recipient));
    }
    Ok(query
        .all(db)
        .await?
        .into_iter()
        .map(|m| OutboundMessage {
            message_id: m.message_id,
            recipient: m.recipient,
            kind: m.kind,
            body: m.body,
            status: m.status,
            created_at: m.created_at,
        })
        .collect())
}
