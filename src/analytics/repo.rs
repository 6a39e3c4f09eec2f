//! The `analytics_daily` table.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict, Query};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, FromQueryResult};
use time::Date;

use crate::events;
use crate::platform::db::Writer;

const TABLE: &str = "analytics_daily";

pub(super) fn day_key(day: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

/// Adds the increments for one event, once: the claim and the additions
/// commit together.
pub(super) async fn add(
    writer: &Writer,
    event_id: &str,
    day: Date,
    increments: &[(String, String, i64)],
) -> Result<(), DbErr> {
    let (txn, _permit) = writer.begin().await?;
    if !events::claim(&txn, "analytics", event_id).await? {
        txn.rollback().await?;
        return Ok(());
    }
    // One row per key (two lines of one category add up first), then one
    // multi-row upsert: PostgreSQL refuses to update a row twice in one
    // statement.
    let mut summed: std::collections::BTreeMap<(&str, &str), i64> =
        std::collections::BTreeMap::new();
    for (metric, dimension, value) in increments {
        *summed.entry((metric, dimension)).or_default() += value;
    }
    let day = day_key(day);
    let mut insert = Query::insert();
    insert.into_table(Alias::new(TABLE)).columns([
        Alias::new("day"),
        Alias::new("metric"),
        Alias::new("dimension"),
        Alias::new("value"),
    ]);
    for ((metric, dimension), value) in summed {
        insert.values_panic([
            day.clone().into(),
            metric.into(),
            dimension.into(),
            value.into(),
        ]);
    }
    insert.on_conflict(
        OnConflict::columns([
            Alias::new("day"),
            Alias::new("metric"),
            Alias::new("dimension"),
        ])
        .value(
            Alias::new("value"),
            Expr::cust(format!("{TABLE}.value + excluded.value")),
        )
        .to_owned(),
    );
    txn.execute(&insert).await?;
    txn.commit().await?;
    Ok(())
}

#[derive(FromQueryResult)]
struct Row {
    day: String,
    metric: String,
    dimension: String,
    value: i64,
}

/// Every (day, metric, dimension, value) row from `from` to `to` inclusive.
pub async fn daily_rows(
    db: &DatabaseConnection,
    from: Date,
    to: Date,
) -> Result<Vec<(String, String, String, i64)>, DbErr> {
    let mut select = Query::select();
    select
        .columns([
            Alias::new("day"),
            Alias::new("metric"),
            Alias::new("dimension"),
            Alias::new("value"),
        ])
        .from(Alias::new(TABLE))
        .and_where(Expr::col(Alias::new("day")).gte(day_key(from)))
        .and_where(Expr::col(Alias::new("day")).lte(day_key(to)));
    let statement = db.get_database_backend().build(&select);
    Ok(Row::find_by_statement(statement)
        .all(db)
        .await?
        .into_iter()
        .map(|r| (r.day, r.metric, r.dimension, r.value))
        .collect())
}
