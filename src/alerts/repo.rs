//! The `alerts` table: open one (at most one open per rule, enforced by a
//! partial unique index), note that it is still firing, resolve it, list.
//! Every write says whether *this* call changed the row, because only the
//! replica whose write won sends the notice.

use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, SqlErr,
};
use time::OffsetDateTime;

use super::entity::alert;
use crate::platform::db::Writer;

/// What a rule says while it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAlert {
    pub rule: String,
    pub severity: String,
    pub title: String,
    pub text: String,
    pub link: Option<String>,
}

/// What [`open`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// This call opened the alert (its id): its caller sends the firing
    /// notice.
    New(i64),
    /// An alert of this rule was open already (its `last_seen_at`, title
    /// and text were brought up to date).
    AlreadyOpen,
}

/// Opens an alert for the rule unless one is open.
pub async fn open(
    writer: &Writer,
    new: &NewAlert,
    replica: &str,
    now: OffsetDateTime,
) -> Result<Opened, DbErr> {
    // The common case (still firing) is one UPDATE, no failed INSERT.
    if touch(writer, new, now).await? {
        return Ok(Opened::AlreadyOpen);
    }
    let row = alert::ActiveModel {
        rule: Set(new.rule.clone()),
        severity: Set(new.severity.clone()),
        title: Set(clip(&new.title, 255)),
        text: Set(new.text.clone()),
        link: Set(new.link.clone()),
        opened_at: Set(now),
        opened_by: Set(clip(replica, 64)),
        last_seen_at: Set(now),
        resolved_at: Set(None),
        resolved_by: Set(None),
        ..Default::default()
    };
    let inserted = {
        let _permit = writer.permit().await;
        alert::Entity::insert(row).exec(&writer.db).await
    };
    match inserted {
        Ok(done) => Ok(Opened::New(done.last_insert_id)),
        // Another replica opened it between our UPDATE and INSERT.
        Err(error) if matches!(error.sql_err(), Some(SqlErr::UniqueConstraintViolation(_))) => {
            touch(writer, new, now).await?;
            Ok(Opened::AlreadyOpen)
        }
        Err(error) => Err(error),
    }
}

/// Notes that the open alert of the rule is still firing, with its latest
/// figures. False when none is open.
async fn touch(writer: &Writer, new: &NewAlert, now: OffsetDateTime) -> Result<bool, DbErr> {
    let _permit = writer.permit().await;
    let done = alert::Entity::update_many()
        .col_expr(alert::Column::LastSeenAt, Expr::value(now))
        .col_expr(alert::Column::Title, Expr::value(clip(&new.title, 255)))
        .col_expr(alert::Column::Text, Expr::value(new.text.clone()))
        .col_expr(alert::Column::Severity, Expr::value(new.severity.clone()))
        .filter(alert::Column::Rule.eq(new.rule.as_str()))
        .filter(alert::Column::ResolvedAt.is_null())
        .exec(&writer.db)
        .await?;
    Ok(done.rows_affected > 0)
}

/// Resolves the open alert of `rule`, if there is one and no replica has
/// seen it firing since `unseen_since` (`None`: whenever seen). Returns the
/// resolved alert when this call resolved it.
pub async fn resolve(
    writer: &Writer,
    rule: &str,
    unseen_since: Option<OffsetDateTime>,
    replica: &str,
    now: OffsetDateTime,
) -> Result<Option<alert::Model>, DbErr> {
    let Some(open) = alert::Entity::find()
        .filter(alert::Column::Rule.eq(rule))
        .filter(alert::Column::ResolvedAt.is_null())
        .one(&writer.db)
        .await?
    else {
        return Ok(None);
    };
    if unseen_since.is_some_and(|since| open.last_seen_at >= since) {
        return Ok(None);
    }
    let mut update = alert::Entity::update_many()
        .col_expr(alert::Column::ResolvedAt, Expr::value(now))
        .col_expr(alert::Column::ResolvedBy, Expr::value(clip(replica, 64)))
        .filter(alert::Column::Id.eq(open.id))
        .filter(alert::Column::ResolvedAt.is_null());
    if let Some(since) = unseen_since {
        // A replica that saw it firing meanwhile keeps it open.
        update = update.filter(alert::Column::LastSeenAt.lt(since));
    }
    let done = {
        let _permit = writer.permit().await;
        update.exec(&writer.db).await?
    };
    if done.rows_affected != 1 {
        return Ok(None);
    }
    Ok(Some(alert::Model {
        resolved_at: Some(now),
        resolved_by: Some(clip(replica, 64)),
        ..open
    }))
}

/// Open alerts, newest first.
pub async fn open_alerts(db: &DatabaseConnection) -> Result<Vec<alert::Model>, DbErr> {
    alert::Entity::find()
        .filter(alert::Column::ResolvedAt.is_null())
        .order_by_desc(alert::Column::OpenedAt)
        .order_by_desc(alert::Column::Id)
        .all(db)
        .await
}

/// The most recently resolved alerts, newest first.
pub async fn resolved_alerts(
    db: &DatabaseConnection,
    limit: u64,
) -> Result<Vec<alert::Model>, DbErr> {
    alert::Entity::find()
        .filter(alert::Column::ResolvedAt.is_not_null())
        .order_by_desc(alert::Column::ResolvedAt)
        .order_by_desc(alert::Column::Id)
        .limit(limit)
        .all(db)
        .await
}

pub async fn count_open(db: &DatabaseConnection) -> Result<u64, DbErr> {
    alert::Entity::find()
        .filter(alert::Column::ResolvedAt.is_null())
        .count(db)
        .await
}

fn clip(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}
