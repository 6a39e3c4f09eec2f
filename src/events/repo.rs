//! Outbox and idempotency-key queries.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use time::OffsetDateTime;

use super::entity::{outbox, processed_event};

/// Writes a domain event in the caller's transaction. Returns its id.
pub async fn append<C: ConnectionTrait>(
    db: &C,
    event_type: &str,
    payload: serde_json::Value,
) -> Result<String, DbErr> {
    let event_id = uuid::Uuid::now_v7().to_string();
    outbox::Entity::insert(outbox::ActiveModel {
        id: NotSet,
        event_id: Set(event_id.clone()),
        event_type: Set(event_type.to_string()),
        version: Set(1),
        payload: Set(payload),
        occurred_at: Set(OffsetDateTime::now_utc()),
    })
    .exec_without_returning(db)
    .await?;
    Ok(event_id)
}

/// Records that a provider event is being processed, in the caller's
/// transaction. Returns false when it was recorded before: the caller must
/// then do nothing. Concurrent callers with the same key serialise on the
/// unique index; exactly one sees `true`.
pub async fn claim<C: ConnectionTrait>(
    db: &C,
    source: &str,
    event_id: &str,
) -> Result<bool, DbErr> {
    let inserted = processed_event::Entity::insert(processed_event::ActiveModel {
        id: NotSet,
        source: Set(source.to_string()),
        event_id: Set(event_id.to_string()),
        processed_at: Set(OffsetDateTime::now_utc()),
    })
    .on_conflict(
        OnConflict::columns([
            processed_event::Column::Source,
            processed_event::Column::EventId,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(inserted == 1)
}
