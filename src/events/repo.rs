//! Outbox and idempotency-key queries.

use sea_orm::ActiveValue::{NotSet, Set};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DbErr, EntityTrait};
use time::{OffsetDateTime, UtcOffset};

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
        routed_at: Set(None),
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

// ---------------------------------------------------------------------------
// The dispatcher's queries.

use sea_orm::sea_query::{Expr, ExprTrait, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, Condition, DatabaseConnection, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
};
use serde::Serialize;

use super::entity::delivery;
use super::{Bus, DeliveryStatus, Event};
use crate::platform::db::Writer;

fn to_event(row: outbox::Model) -> Event {
    Event {
        id: row.event_id,
        event_type: row.event_type,
        version: row.version,
        occurred_at: row.occurred_at,
        payload: row.payload,
    }
}

fn new_delivery(event_id: &str, handler: &str, now: OffsetDateTime) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: NotSet,
        event_id: Set(event_id.to_string()),
        handler: Set(handler.to_string()),
        status: Set(DeliveryStatus::Pending.as_str().to_string()),
        attempts: Set(0),
        replays: Set(0),
        next_attempt_at: Set(now),
        locked_until: Set(None),
        locked_by: Set(None),
        last_error: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
        completed_at: Set(None),
    }
}

async fn insert_deliveries<C: ConnectionTrait>(
    db: &C,
    rows: Vec<delivery::ActiveModel>,
) -> Result<(), DbErr> {
    for chunk in rows.chunks(500) {
        delivery::Entity::insert_many(chunk.to_vec())
            .on_conflict(
                OnConflict::columns([delivery::Column::EventId, delivery::Column::Handler])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// One step's database work before the handlers run, in one transaction:
/// route new events, then lease due deliveries.
pub(crate) async fn route_and_claim(
    writer: &Writer,
    bus: &Bus,
    route_limit: u64,
    worker: &str,
    lease: std::time::Duration,
    claim_limit: u64,
) -> Result<(usize, Vec<(delivery::Model, Event)>), DbErr> {
    let (txn, _permit) = writer.begin().await?;
    let routed = route_pending(&txn, bus, route_limit).await?;
    let claimed = claim_due(&txn, &bus.handler_names(), worker, lease, claim_limit).await?;
    txn.commit().await?;
    Ok((routed, claimed))
}

/// Fans unrouted events out into one delivery per matching handler and
/// stamps them routed. Returns how many events it routed.
async fn route_pending<C: ConnectionTrait>(txn: &C, bus: &Bus, limit: u64) -> Result<usize, DbErr> {
    let now = OffsetDateTime::now_utc();
    let batch = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Id)
        .filter(outbox::Column::RoutedAt.is_null())
        .order_by_asc(outbox::Column::Id)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query();
    let events = outbox::Entity::update_many()
        .col_expr(outbox::Column::RoutedAt, Expr::value(now))
        .filter(outbox::Column::Id.in_subquery(batch))
        .exec_with_returning(txn)
        .await?;
    let routed = events.len();
    let mut rows = Vec::new();
    for row in events {
        let event = to_event(row);
        for handler in bus.matching(&event) {
            rows.push(new_delivery(&event.id, handler, now));
        }
    }
    insert_deliveries(txn, rows).await?;
    Ok(routed)
}

/// Leases up to `limit` due deliveries to `worker`: pending ones whose time
/// has come, and running ones whose lease ran out (their process died).
/// Only deliveries for `handlers` (this build's) are taken, so during a
/// rolling deploy an older replica leaves a newer handler's work alone.
async fn claim_due<C: ConnectionTrait>(
    txn: &C,
    handlers: &[&str],
    worker: &str,
    lease: std::time::Duration,
    limit: u64,
) -> Result<Vec<(delivery::Model, Event)>, DbErr> {
    let now = OffsetDateTime::now_utc();
    let due = Condition::any()
        .add(
            Condition::all()
                .add(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
                .add(delivery::Column::NextAttemptAt.lte(now)),
        )
        .add(
            Condition::all()
                .add(delivery::Column::Status.eq(DeliveryStatus::Running.as_str()))
                .add(delivery::Column::LockedUntil.lt(now)),
        );
    let batch = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Id)
        .filter(due)
        .filter(delivery::Column::Handler.is_in(handlers.iter().copied()))
        .order_by_asc(delivery::Column::NextAttemptAt)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query();
    let claimed = delivery::Entity::update_many()
        .col_expr(
            delivery::Column::Status,
            Expr::value(DeliveryStatus::Running.as_str()),
        )
        .col_expr(
            delivery::Column::Attempts,
            Expr::col(delivery::Column::Attempts).add(1),
        )
        .col_expr(delivery::Column::LockedUntil, Expr::value(now + lease))
        .col_expr(delivery::Column::LockedBy, Expr::value(worker))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::Id.in_subquery(batch))
        .exec_with_returning(txn)
        .await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = claimed.iter().map(|d| d.event_id.clone()).collect();
    let events: std::collections::HashMap<String, Event> = outbox::Entity::find()
        .filter(outbox::Column::EventId.is_in(ids))
        .all(txn)
        .await?
        .into_iter()
        .map(|row| (row.event_id.clone(), to_event(row)))
        .collect();
    Ok(claimed
        .into_iter()
        .filter_map(|d| {
            let event = events.get(&d.event_id)?.clone();
            Some((d, event))
        })
        .collect())
}

/// How a claimed delivery ended this time.
#[derive(Debug, Clone)]
pub(crate) enum Finish {
    Done,
    RetryAt {
        at: OffsetDateTime,
        error: String,
    },
    /// Due again at `until` without spending an attempt.
    Defer {
        until: OffsetDateTime,
        reason: String,
    },
    Dead {
        error: String,
    },
}

/// Extends a lease this worker still holds; false when it was lost.
pub(crate) async fn renew_lease(
    writer: &Writer,
    id: i64,
    worker: &str,
    lease: std::time::Duration,
) -> Result<bool, DbErr> {
    let _permit = writer.permit().await;
    let now = OffsetDateTime::now_utc();
    let renewed = delivery::Entity::update_many()
        .col_expr(delivery::Column::LockedUntil, Expr::value(now + lease))
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
        .filter(delivery::Column::Id.eq(id))
        .filter(delivery::Column::Status.eq(DeliveryStatus::Running.as_str()))
        .filter(delivery::Column::LockedBy.eq(worker))
        .exec(&writer.db)
        .await?
        .rows_affected;
    Ok(renewed == 1)
}

/// Records the outcomes of deliveries this worker holds, in one
/// transaction (successes in one statement). Returns the ids whose lease
/// was still held; a missing id was taken over by another process after its
/// lease ran out, and its outcome is not recorded.
pub(crate) async fn finish_all(
    writer: &Writer,
    worker: &str,
    outcomes: Vec<(i64, Finish)>,
) -> Result<std::collections::HashSet<i64>, DbErr> {
    let mut recorded = std::collections::HashSet::new();
    if outcomes.is_empty() {
        return Ok(recorded);
    }
    let (txn, _permit) = writer.begin().await?;
    let now = OffsetDateTime::now_utc();
    let held = |update: sea_orm::UpdateMany<delivery::Entity>| {
        update
            .col_expr(
                delivery::Column::LockedUntil,
                Expr::value(Option::<OffsetDateTime>::None),
            )
            .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
            .filter(delivery::Column::Status.eq(DeliveryStatus::Running.as_str()))
            .filter(delivery::Column::LockedBy.eq(worker))
    };
    let done: Vec<i64> = outcomes
        .iter()
        .filter(|(_, f)| matches!(f, Finish::Done))
        .map(|(id, _)| *id)
        .collect();
    if !done.is_empty() {
        let rows = held(delivery::Entity::update_many())
            .col_expr(
                delivery::Column::Status,
                Expr::value(DeliveryStatus::Done.as_str()),
            )
            .col_expr(delivery::Column::CompletedAt, Expr::value(now))
            .filter(delivery::Column::Id.is_in(done))
            .exec_with_returning(&txn)
            .await?;
        recorded.extend(rows.into_iter().map(|row| row.id));
    }
    for (id, outcome) in outcomes {
        let update = held(delivery::Entity::update_many()).filter(delivery::Column::Id.eq(id));
        let update = match outcome {
            Finish::Done => continue,
            Finish::RetryAt { at, error } => update
                .col_expr(
                    delivery::Column::Status,
                    Expr::value(DeliveryStatus::Pending.as_str()),
                )
                .col_expr(delivery::Column::NextAttemptAt, Expr::value(at))
                .col_expr(delivery::Column::LastError, Expr::value(error)),
            Finish::Defer { until, reason } => update
                .col_expr(
                    delivery::Column::Status,
                    Expr::value(DeliveryStatus::Pending.as_str()),
                )
                .col_expr(delivery::Column::NextAttemptAt, Expr::value(until))
                .col_expr(
                    delivery::Column::Attempts,
                    Expr::col(delivery::Column::Attempts).sub(1),
                )
                .col_expr(delivery::Column::LastError, Expr::value(reason)),
            Finish::Dead { error } => update
                .col_expr(
                    delivery::Column::Status,
                    Expr::value(DeliveryStatus::Dead.as_str()),
                )
                .col_expr(delivery::Column::CompletedAt, Expr::value(now))
                .col_expr(delivery::Column::LastError, Expr::value(error)),
        };
        if update.exec(&txn).await?.rows_affected == 1 {
            recorded.insert(id);
        }
    }
    txn.commit().await?;
    Ok(recorded)
}

// ---------------------------------------------------------------------------
// Replays.

fn replay_update() -> sea_orm::UpdateMany<delivery::Entity> {
    let now = OffsetDateTime::now_utc();
    delivery::Entity::update_many()
        .col_expr(
            delivery::Column::Status,
            Expr::value(DeliveryStatus::Pending.as_str()),
        )
        .col_expr(delivery::Column::Attempts, Expr::value(0))
        .col_expr(
            delivery::Column::Replays,
            Expr::col(delivery::Column::Replays).add(1),
        )
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(
            delivery::Column::LockedUntil,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .col_expr(
            delivery::Column::CompletedAt,
            Expr::value(Option::<OffsetDateTime>::None),
        )
        .col_expr(delivery::Column::UpdatedAt, Expr::value(now))
}

/// Sends one dead letter back to its handler. False when there is no dead
/// letter with that id.
pub async fn replay_delivery(writer: &Writer, id: i64) -> Result<bool, DbErr> {
    let replayed = {
        let _permit = writer.permit().await;
        replay_update()
            .filter(delivery::Column::Id.eq(id))
            .filter(delivery::Column::Status.eq(DeliveryStatus::Dead.as_str()))
            .exec(&writer.db)
            .await?
            .rows_affected
    };
    writer.outbox_committed();
    Ok(replayed == 1)
}

/// Sends every dead letter of one handler back to it. Returns how many.
pub async fn replay_dead(writer: &Writer, handler: &str) -> Result<u64, DbErr> {
    let replayed = {
        let _permit = writer.permit().await;
        replay_update()
            .filter(delivery::Column::Handler.eq(handler))
            .filter(delivery::Column::Status.eq(DeliveryStatus::Dead.as_str()))
            .exec(&writer.db)
            .await?
            .rows_affected
    };
    writer.outbox_committed();
    Ok(replayed)
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no handler is called {0:?}")]
    UnknownHandler(String),
    #[error("the time range is empty or reversed")]
    BadRange,
    #[error(transparent)]
    Database(#[from] DbErr),
}

/// Delivers every archived event in `[from, to)` that the handler's rule
/// matches to that handler again (or for the first time, when the handler
/// was added after the event). Deliveries running right now are left
/// alone. Effects stay exactly once: a handler that already acted on an
/// event recognises it by its effect key. Returns how many deliveries it
/// scheduled.
pub async fn replay_range(
    writer: &Writer,
    bus: &Bus,
    handler: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<u64, ReplayError> {
    let subscription = bus
        .handler(handler)
        .ok_or_else(|| ReplayError::UnknownHandler(handler.to_string()))?;
    if from >= to {
        return Err(ReplayError::BadRange);
    }
    // Stored times are UTC; SQLite compares them as text.
    let (from, to) = (from.to_offset(UtcOffset::UTC), to.to_offset(UtcOffset::UTC));
    let mut after_id = 0_i64;
    let mut scheduled = 0_u64;
    loop {
        let page = outbox::Entity::find()
            .filter(outbox::Column::OccurredAt.gte(from))
            .filter(outbox::Column::OccurredAt.lt(to))
            .filter(outbox::Column::Id.gt(after_id))
            .order_by_asc(outbox::Column::Id)
            .limit(500)
            .all(&writer.db)
            .await?;
        let Some(last) = page.last() else { break };
        after_id = last.id;
        let matching: Vec<String> = page
            .into_iter()
            .map(to_event)
            .filter(|e| subscription.rule.matches(&e.rule_document()))
            .map(|e| e.id)
            .collect();
        if matching.is_empty() {
            continue;
        }
        let (txn, _permit) = writer.begin().await?;
        let again = replay_update()
            .filter(delivery::Column::Handler.eq(handler))
            .filter(delivery::Column::EventId.is_in(matching.clone()))
            .filter(delivery::Column::Status.ne(DeliveryStatus::Running.as_str()))
            .exec(&txn)
            .await?
            .rows_affected;
        let existing: Vec<String> = delivery::Entity::find()
            .select_only()
            .column(delivery::Column::EventId)
            .filter(delivery::Column::Handler.eq(handler))
            .filter(delivery::Column::EventId.is_in(matching.clone()))
            .into_tuple()
            .all(&txn)
            .await?;
        let now = OffsetDateTime::now_utc();
        let fresh: Vec<delivery::ActiveModel> = matching
            .iter()
            .filter(|id| !existing.contains(id))
            .map(|id| new_delivery(id, handler, now))
            .collect();
        let added = fresh.len() as u64;
        insert_deliveries(&txn, fresh).await?;
        txn.commit().await?;
        scheduled += again + added;
    }
    writer.outbox_committed();
    Ok(scheduled)
}

// ---------------------------------------------------------------------------
// Reading the archive and the deliveries (admin, JSON API, CLI).

/// A delivery as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub event_id: String,
    pub event_type: Option<String>,
    pub handler: String,
    pub status: String,
    pub attempts: i32,
    pub replays: i32,
    #[serde(with = "time::serde::rfc3339")]
    pub next_attempt_at: OffsetDateTime,
    pub last_error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub completed_at: Option<OffsetDateTime>,
}

fn delivery_view(row: delivery::Model, event_type: Option<String>) -> DeliveryView {
    DeliveryView {
        id: row.id,
        event_id: row.event_id,
        event_type,
        handler: row.handler,
        status: row.status,
        attempts: row.attempts,
        replays: row.replays,
        next_attempt_at: row.next_attempt_at,
        last_error: row.last_error,
        created_at: row.created_at,
        updated_at: row.updated_at,
        completed_at: row.completed_at,
    }
}

/// An archived event with its deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct EventView {
    #[serde(flatten)]
    pub event: Event,
    #[serde(with = "time::serde::rfc3339::option")]
    pub routed_at: Option<OffsetDateTime>,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub event_type: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
    pub limit: u64,
}

/// The newest events matching the filter, with their deliveries.
pub async fn list_events(
    db: &DatabaseConnection,
    filter: &EventFilter,
) -> Result<Vec<EventView>, DbErr> {
    let mut query = outbox::Entity::find()
        .order_by_desc(outbox::Column::Id)
        .limit(filter.limit.clamp(1, 1000));
    if let Some(event_type) = &filter.event_type {
        query = query.filter(outbox::Column::EventType.eq(event_type.as_str()));
    }
    // Stored times are UTC; SQLite compares them as text.
    if let Some(from) = filter.from {
        query = query.filter(outbox::Column::OccurredAt.gte(from.to_offset(UtcOffset::UTC)));
    }
    if let Some(to) = filter.to {
        query = query.filter(outbox::Column::OccurredAt.lt(to.to_offset(UtcOffset::UTC)));
    }
    let rows = query.all(db).await?;
    with_deliveries(db, rows).await
}

/// One event by id, with its deliveries.
pub async fn find_event(
    db: &DatabaseConnection,
    event_id: &str,
) -> Result<Option<EventView>, DbErr> {
    let rows = outbox::Entity::find()
        .filter(outbox::Column::EventId.eq(event_id))
        .all(db)
        .await?;
    Ok(with_deliveries(db, rows).await?.into_iter().next())
}

async fn with_deliveries(
    db: &DatabaseConnection,
    rows: Vec<outbox::Model>,
) -> Result<Vec<EventView>, DbErr> {
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let mut deliveries: std::collections::HashMap<String, Vec<DeliveryView>> =
        std::collections::HashMap::new();
    for chunk in ids.chunks(500) {
        for row in delivery::Entity::find()
            .filter(delivery::Column::EventId.is_in(chunk.to_vec()))
            .order_by_asc(delivery::Column::Handler)
            .all(db)
            .await?
        {
            deliveries
                .entry(row.event_id.clone())
                .or_default()
                .push(delivery_view(row, None));
        }
    }
    Ok(rows
        .into_iter()
        .map(|row| {
            let routed_at = row.routed_at;
            let event = to_event(row);
            let mut own = deliveries.remove(&event.id).unwrap_or_default();
            for d in &mut own {
                d.event_type = Some(event.event_type.clone());
            }
            EventView {
                event,
                routed_at,
                deliveries: own,
            }
        })
        .collect())
}

#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub handler: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub limit: u64,
}

/// Deliveries matching the filter, most recently changed first (the dead
/// letters, with `status = dead`).
pub async fn list_deliveries(
    db: &DatabaseConnection,
    filter: &DeliveryFilter,
) -> Result<Vec<DeliveryView>, DbErr> {
    let mut query = delivery::Entity::find()
        .order_by_desc(delivery::Column::UpdatedAt)
        .order_by_desc(delivery::Column::Id)
        .limit(filter.limit.clamp(1, 1000));
    if let Some(handler) = &filter.handler {
        query = query.filter(delivery::Column::Handler.eq(handler.as_str()));
    }
    if let Some(status) = filter.status {
        query = query.filter(delivery::Column::Status.eq(status.as_str()));
    }
    let rows = query.all(db).await?;
    let ids: Vec<String> = rows.iter().map(|r| r.event_id.clone()).collect();
    let types: std::collections::HashMap<String, String> = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::EventId)
        .column(outbox::Column::EventType)
        .filter(outbox::Column::EventId.is_in(ids))
        .into_tuple::<(String, String)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    Ok(rows
        .into_iter()
        .map(|row| {
            let event_type = types.get(&row.event_id).cloned();
            delivery_view(row, event_type)
        })
        .collect())
}

/// Per handler: how many deliveries are in each state, and the oldest due
/// one (how far behind the handler is).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct HandlerStats {
    pub handler: String,
    pub pending: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
    #[serde(with = "time::serde::rfc3339::option")]
    pub oldest_pending_at: Option<OffsetDateTime>,
}

pub async fn delivery_stats(
    db: &DatabaseConnection,
    handlers: &[&str],
) -> Result<Vec<HandlerStats>, DbErr> {
    let counts: Vec<(String, String, i64)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Handler)
        .column(delivery::Column::Status)
        .column_as(delivery::Column::Id.count(), "n")
        .group_by(delivery::Column::Handler)
        .group_by(delivery::Column::Status)
        .into_tuple()
        .all(db)
        .await?;
    let oldest: Vec<(String, Option<OffsetDateTime>)> = delivery::Entity::find()
        .select_only()
        .column(delivery::Column::Handler)
        .column_as(delivery::Column::NextAttemptAt.min(), "oldest")
        .filter(delivery::Column::Status.eq(DeliveryStatus::Pending.as_str()))
        .group_by(delivery::Column::Handler)
        .into_tuple()
        .all(db)
        .await?;
    let mut stats: Vec<HandlerStats> = handlers
        .iter()
        .map(|h| HandlerStats {
            handler: h.to_string(),
            ..HandlerStats::default()
        })
        .collect();
    for (handler, status, n) in counts {
        let index = match stats.iter().position(|s| s.handler == handler) {
            Some(index) => index,
            None => {
                stats.push(HandlerStats {
                    handler: handler.clone(),
                    ..HandlerStats::default()
                });
                stats.len() - 1
            }
        };
        let entry = &mut stats[index];
        match DeliveryStatus::parse(&status) {
            Some(DeliveryStatus::Pending) => entry.pending = n,
            Some(DeliveryStatus::Running) => entry.running = n,
            Some(DeliveryStatus::Done) => entry.done = n,
            Some(DeliveryStatus::Dead) => entry.dead = n,
            None => {}
        }
    }
    for (handler, at) in oldest {
        if let Some(entry) = stats.iter_mut().find(|s| s.handler == handler) {
            entry.oldest_pending_at = at;
        }
    }
    Ok(stats)
}

/// How many dead letters there are, and how many became dead at or after
/// `since` (the alert rule's "new dead letters").
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct DeadLetterCounts {
    pub total: u64,
    pub since: u64,
}

pub async fn dead_letter_counts(
    db: &DatabaseConnection,
    since: OffsetDateTime,
) -> Result<DeadLetterCounts, DbErr> {
    use sea_orm::PaginatorTrait;
    let dead = || {
        delivery::Entity::find().filter(delivery::Column::Status.eq(DeliveryStatus::Dead.as_str()))
    };
    let total = dead().count(db).await?;
    // Stored times are UTC; SQLite compares them as text.
    let since = dead()
        .filter(delivery::Column::UpdatedAt.gte(since.to_offset(UtcOffset::UTC)))
        .count(db)
        .await?;
    Ok(DeadLetterCounts { total, since })
}
