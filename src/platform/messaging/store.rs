//! The `messages` and `whatsapp_contacts` tables.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QueryOrder};
use serde::Serialize;
use time::OffsetDateTime;

use super::entity::{self, contact};
use super::{Accepted, Outgoing, TransportError};
use crate::platform::db::Writer;

/// An outbound message as operators see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OutboundMessage {
    pub message_id: String,
    pub recipient: String,
    pub kind: String,
    pub body: String,
    pub status: String,
    pub content_sid: Option<String>,
    pub provider_sid: Option<String>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

pub(super) enum Prepared {
    /// A `pending` row, ready to be submitted.
    Ready(entity::Model),
    /// The key was used before and its message is past `pending`.
    Finished(entity::Model),
}

/// Finds or creates the row for a message.
pub(super) async fn prepare(writer: &Writer, outgoing: &Outgoing) -> Result<Prepared, DbErr> {
    let _permit = writer.permit().await;
    let now = OffsetDateTime::now_utc();
    let row = entity::ActiveModel {
        id: NotSet,
        message_id: Set(uuid::Uuid::now_v7().to_string()),
        recipient: Set(outgoing.recipient.clone()),
        kind: Set(outgoing.kind.clone()),
        body: Set(outgoing.text.clone()),
        status: Set("pending".into()),
        created_at: Set(now),
        idempotency_key: Set(outgoing.idempotency_key.clone()),
        content_sid: Set(None),
        provider_sid: Set(None),
        error_code: Set(None),
        error_message: Set(None),
        updated_at: Set(Some(now)),
    };
    let Some(key) = &outgoing.idempotency_key else {
        let inserted = entity::Entity::insert(row)
            .exec_with_returning(&writer.db)
            .await?;
        return Ok(Prepared::Ready(inserted));
    };
    entity::Entity::insert(row)
        .on_conflict(
            OnConflict::column(entity::Column::IdempotencyKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&writer.db)
        .await?;
    let existing = entity::Entity::find()
        .filter(entity::Column::IdempotencyKey.eq(key.as_str()))
        .one(&writer.db)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("message {key} vanished")))?;
    match existing.status.as_str() {
        "pending" => Ok(Prepared::Ready(existing)),
        // Refused before the provider took it (bad credentials, a wrong
        // template): nothing went out, so a replay after the fix may send.
        "failed" if existing.provider_sid.is_none() => {
            entity::Entity::update_many()
                .col_expr(entity::Column::Status, Expr::value("pending"))
                .col_expr(entity::Column::UpdatedAt, Expr::value(now))
                .filter(entity::Column::Id.eq(existing.id))
                .filter(entity::Column::Status.eq("failed"))
                .exec(&writer.db)
                .await?;
            Ok(Prepared::Ready(entity::Model {
                status: "pending".into(),
                ..existing
            }))
        }
        "submitting" => {
            // A process died between handing the message over and hearing
            // back: whether it went out is unknown, so it is not sent again.
            entity::Entity::update_many()
                .col_expr(entity::Column::Status, Expr::value("unconfirmed"))
                .col_expr(
                    entity::Column::ErrorMessage,
                    Expr::value("interrupted while sending; not resent to avoid a duplicate"),
                )
                .col_expr(entity::Column::UpdatedAt, Expr::value(now))
                .filter(entity::Column::Id.eq(existing.id))
                .filter(entity::Column::Status.eq("submitting"))
                .exec(&writer.db)
                .await?;
            Ok(Prepared::Finished(entity::Model {
                status: "unconfirmed".into(),
                ..existing
            }))
        }
        _ => Ok(Prepared::Finished(existing)),
    }
}

/// Moves a `pending` row to `submitting`; false when another process got
/// there first.
pub(super) async fn begin_submit(
    writer: &Writer,
    id: i64,
    content_sid: Option<String>,
) -> Result<bool, DbErr> {
    let _permit = writer.permit().await;
    let changed = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value("submitting"))
        .col_expr(entity::Column::ContentSid, Expr::value(content_sid))
        .col_expr(
            entity::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(entity::Column::Id.eq(id))
        .filter(entity::Column::Status.eq("pending"))
        .exec(&writer.db)
        .await?
        .rows_affected;
    Ok(changed == 1)
}

/// Stores what the transport said.
pub(super) async fn record_result(
    writer: &Writer,
    id: i64,
    result: &Result<Accepted, TransportError>,
) -> Result<(), DbErr> {
    let (status, provider_sid, code, message) = match result {
        Ok(accepted) => (
            accepted.status.clone(),
            Some(accepted.provider_sid.clone()),
            None,
            None,
        ),
        Err(error @ (TransportError::Throttled { .. } | TransportError::Unavailable(_))) => {
            ("pending".to_string(), None, None, Some(error.to_string()))
        }
        Err(TransportError::Rejected { code, message }) => (
            "failed".to_string(),
            None,
            code.clone(),
            Some(message.clone()),
        ),
        Err(TransportError::Unconfirmed(reason)) => {
            ("unconfirmed".to_string(), None, None, Some(reason.clone()))
        }
    };
    let _permit = writer.permit().await;
    entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(status))
        .col_expr(entity::Column::ProviderSid, Expr::value(provider_sid))
        .col_expr(entity::Column::ErrorCode, Expr::value(code))
        .col_expr(entity::Column::ErrorMessage, Expr::value(message))
        .col_expr(
            entity::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        )
        .filter(entity::Column::Id.eq(id))
        .exec(&writer.db)
        .await?;
    Ok(())
}

/// How far along each status is. Callbacks may arrive out of order; a
/// status only replaces one of lower rank. Statuses not listed are ignored.
/// The recorded transport's final word ranks as "sent": the admin's
/// simulator may still report deliveries and reads.
const RANKS: [(&str, u8); 14] = [
    ("pending", 0),
    ("submitting", 1),
    ("unconfirmed", 1),
    ("accepted", 2),
    ("scheduled", 2),
    ("queued", 3),
    ("sending", 4),
    ("sent", 5),
    ("recorded", 5),
    ("delivered", 6),
    ("undelivered", 6),
    ("failed", 6),
    ("canceled", 6),
    ("read", 7),
];

fn rank(status: &str) -> Option<u8> {
    RANKS.iter().find(|(s, _)| *s == status).map(|(_, r)| *r)
}

/// What a status callback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusUpdate {
    Applied,
    /// The message is already at this status or further along.
    Stale,
    UnknownMessage,
}

/// Applies a provider status callback, forward only.
pub async fn apply_status(
    writer: &Writer,
    provider_sid: &str,
    status: &str,
    error_code: Option<&str>,
    error_message: Option<&str>,
) -> Result<StatusUpdate, DbErr> {
    let Some(new_rank) = rank(status) else {
        return Ok(StatusUpdate::Stale);
    };
    let lower: Vec<&str> = RANKS
        .iter()
        .filter(|(_, r)| *r < new_rank)
        .map(|(s, _)| *s)
        .collect();
    let failed = matches!(status, "failed" | "undelivered");
    let mut update = entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(status))
        .col_expr(
            entity::Column::UpdatedAt,
            Expr::value(OffsetDateTime::now_utc()),
        );
    if failed {
        update = update
            .col_expr(
                entity::Column::ErrorCode,
                Expr::value(error_code.map(str::to_string)),
            )
            .col_expr(
                entity::Column::ErrorMessage,
                Expr::value(error_message.map(str::to_string)),
            );
    }
    let changed = {
        let _permit = writer.permit().await;
        update
            .filter(entity::Column::ProviderSid.eq(provider_sid))
            .filter(entity::Column::Status.is_in(lower))
            .exec(&writer.db)
            .await?
            .rows_affected
    };
    if changed == 1 {
        return Ok(StatusUpdate::Applied);
    }
    let known = entity::Entity::find()
        .filter(entity::Column::ProviderSid.eq(provider_sid))
        .one(&writer.db)
        .await?
        .is_some();
    Ok(if known {
        StatusUpdate::Stale
    } else {
        StatusUpdate::UnknownMessage
    })
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
            content_sid: m.content_sid,
            provider_sid: m.provider_sid,
            error_code: m.error_code,
            error_message: m.error_message,
            created_at: m.created_at,
        })
        .collect())
}

/// A WhatsApp number's standing with us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contact {
    pub phone: String,
    pub last_inbound_at: Option<OffsetDateTime>,
    pub opted_out_at: Option<OffsetDateTime>,
}

pub async fn contact(db: &DatabaseConnection, phone: &str) -> Result<Option<Contact>, DbErr> {
    Ok(contact::Entity::find_by_id(phone.to_string())
        .one(db)
        .await?
        .map(|c| Contact {
            phone: c.phone,
            last_inbound_at: c.last_inbound_at,
            opted_out_at: c.opted_out_at,
        }))
}

/// Notes a message from the shopper: it opens the 24-hour window.
pub async fn record_inbound(writer: &Writer, phone: &str, at: OffsetDateTime) -> Result<(), DbErr> {
    upsert_contact(writer, phone, Some(at), None).await
}

/// Opts a number out of (or back into) proactive messages.
pub async fn set_opted_out(writer: &Writer, phone: &str, opted_out: bool) -> Result<(), DbErr> {
    let now = OffsetDateTime::now_utc();
    upsert_contact(writer, phone, None, Some(opted_out.then_some(now))).await
}

async fn upsert_contact(
    writer: &Writer,
    phone: &str,
    last_inbound_at: Option<OffsetDateTime>,
    opted_out_at: Option<Option<OffsetDateTime>>,
) -> Result<(), DbErr> {
    let now = OffsetDateTime::now_utc();
    let mut update_columns = vec![contact::Column::UpdatedAt];
    if last_inbound_at.is_some() {
        update_columns.push(contact::Column::LastInboundAt);
    }
    if opted_out_at.is_some() {
        update_columns.push(contact::Column::OptedOutAt);
    }
    let _permit = writer.permit().await;
    contact::Entity::insert(contact::ActiveModel {
        phone: Set(phone.to_string()),
        last_inbound_at: Set(last_inbound_at),
        opted_out_at: Set(opted_out_at.flatten()),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(contact::Column::Phone)
            .update_columns(update_columns)
            .to_owned(),
    )
    .exec_without_returning(&writer.db)
    .await?;
    Ok(())
}
