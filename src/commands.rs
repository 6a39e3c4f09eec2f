//! The operator subcommands of the `kedai` binary (`events`, `shipments`,
//! `analytics`): each connects, migrates, calls the module API and prints a
//! table or JSON. Replays only schedule deliveries; a running server's
//! dispatcher (any replica) delivers them.

use anyhow::{Context, bail};
use sea_orm::DatabaseConnection;
use time::format_description::well_known::Rfc3339;

use crate::cli::{AnalyticsCommand, EventsCommand, ShipmentsCommand};
use crate::config::Settings;
use crate::events::{self, DeliveryFilter, DeliveryStatus, EventFilter};
use crate::logistics::{self, MarkOutcome, ShipmentRef, ShipmentStatus};
use crate::platform::db::{self, Writer};

async fn open(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    let connection = db::connect(&settings.database).await?;
    db::migrate(&connection).await?;
    Ok(connection)
}

fn when(at: time::OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn time_arg(name: &str, raw: &str) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(raw, &Rfc3339)
        .with_context(|| format!("--{name} must be an RFC 3339 time such as 2026-11-24T00:00:00Z"))
}

/// Prints rows as one JSON array, or a line each, or `empty` when none.
fn print_rows<T: serde::Serialize>(
    json: bool,
    rows: &[T],
    empty: &str,
    line: impl Fn(&T) -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
    } else if rows.is_empty() {
        println!("{empty}");
    } else {
        for row in rows {
            println!("{}", line(row));
        }
    }
    Ok(())
}

pub async fn events(settings: &Settings, command: EventsCommand) -> anyhow::Result<()> {
    let connection = open(settings).await?;
    let writer = Writer::new(connection.clone());
    match command {
        EventsCommand::List {
            event_type,
            limit,
            json,
        } => {
            let filter = EventFilter {
                event_type,
                limit,
                ..EventFilter::default()
            };
            let list = events::list_events(&connection, &filter).await?;
            print_rows(json, &list, "no events", |view| {
                let deliveries: Vec<String> = view
                    .deliveries
                    .iter()
                    .map(|d| format!("{}={}", d.handler, d.status))
                    .collect();
                let deliveries = match (deliveries.is_empty(), view.routed_at) {
                    (false, _) => deliveries.join(" "),
                    (true, Some(_)) => "(no handler matched)".to_string(),
                    (true, None) => "(not routed yet)".to_string(),
                };
                format!(
                    "{}  {:<24} {}  {deliveries}",
                    when(view.event.occurred_at),
                    view.event.event_type,
                    view.event.id
                )
            })?;
        }
        EventsCommand::Stats { json } => {
            let bus = crate::app::standard_bus(settings, &writer)?;
            let stats = events::delivery_stats(&connection, &bus.handler_names()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&stats)?);
            } else {
                println!(
                    "{:<16} {:>8} {:>8} {:>8} {:>8}  oldest pending",
                    "handler", "pending", "running", "done", "dead"
                );
                for s in &stats {
                    println!(
                        "{:<16} {:>8} {:>8} {:>8} {:>8}  {}",
                        s.handler,
                        s.pending,
                        s.running,
                        s.done,
                        s.dead,
                        s.oldest_pending_at.map(when).unwrap_or_else(|| "-".into())
                    );
                }
            }
        }
        EventsCommand::Dead {
            handler,
            limit,
            json,
        } => {
            let filter = DeliveryFilter {
                handler,
                status: Some(DeliveryStatus::Dead),
                limit,
            };
            let dead = events::list_deliveries(&connection, &filter).await?;
            print_rows(json, &dead, "no dead letters", |d| {
                format!(
                    "#{:<6} {}  {:<10} {:<24} attempts={} {}",
                    d.id,
                    when(d.updated_at),
                    d.handler,
                    d.event_type.as_deref().unwrap_or("?"),
                    d.attempts,
                    d.last_error.as_deref().unwrap_or("")
                )
            })?;
        }
        EventsCommand::Replay { delivery } => {
            if !events::replay_delivery(&writer, delivery).await? {
                bail!("there is no dead letter #{delivery}");
            }
            println!("dead letter #{delivery} scheduled again");
        }
        EventsCommand::ReplayDead { handler } => {
            let count = events::replay_dead(&writer, &handler).await?;
            println!("{count} dead letters of {handler} scheduled again");
        }
        EventsCommand::ReplayRange { handler, from, to } => {
            let bus = crate::app::standard_bus(settings, &writer)?;
            let count = events::replay_range(
                &writer,
                &bus,
                &handler,
                time_arg("from", &from)?,
                time_arg("to", &to)?,
            )
            .await?;
            println!("{count} deliveries to {handler} scheduled");
        }
    }
    Ok(())
}

pub async fn shipments(settings: &Settings, command: ShipmentsCommand) -> anyhow::Result<()> {
    let connection = open(settings).await?;
    let writer = Writer::new(connection);
    match command {
        ShipmentsCommand::Mark {
            order,
            status,
            tracking,
            detail,
        } => {
            let Some(to) = ShipmentStatus::parse(&status) else {
                bail!("status must be shipped, out-for-delivery, delivered or exception");
            };
            match logistics::mark(
                &writer,
                ShipmentRef::Order(&order),
                to,
                tracking.as_deref(),
                detail.as_deref(),
                None,
            )
            .await?
            {
                MarkOutcome::Changed { from, to } => {
                    println!("shipment of order {order}: {from} -> {to}")
                }
                MarkOutcome::Unchanged { current } => {
                    bail!("the shipment of order {order} is {current} and cannot become {to}")
                }
                MarkOutcome::NoShipment | MarkOutcome::Duplicate => {
                    bail!("order {order} has no shipment (is it paid?)")
                }
            }
        }
    }
    Ok(())
}

pub async fn analytics(settings: &Settings, command: AnalyticsCommand) -> anyhow::Result<()> {
    let connection = open(settings).await?;
    let format = time::macros::format_description!("[year]-[month]-[day]");
    match command {
        AnalyticsCommand::Daily { from, to, json } => {
            let to = match to {
                Some(raw) => time::Date::parse(&raw, &format).context("--to must be YYYY-MM-DD")?,
                None => crate::analytics::today(settings.shop.offset()),
            };
            let from = match from {
                Some(raw) => {
                    time::Date::parse(&raw, &format).context("--from must be YYYY-MM-DD")?
                }
                None => to - time::Duration::days(6),
            };
            let days = crate::analytics::daily(&connection, from, to).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&days)?);
            } else {
                println!(
                    "{:<10} {:>7} {:>7} {:>14} {:>9} {:>9}",
                    "day", "orders", "units", "revenue", "shipped", "refunded"
                );
                for d in &days {
                    let revenue: Vec<String> = d
                        .revenue_minor
                        .iter()
                        .map(|(c, v)| format!("{c} {}.{:02}", v / 100, v % 100))
                        .collect();
                    println!(
                        "{:<10} {:>7} {:>7} {:>14} {:>9} {:>9}",
                        d.day,
                        d.orders,
                        d.units,
                        if revenue.is_empty() {
                            "-".into()
                        } else {
                            revenue.join(", ")
                        },
                        d.shipments,
                        d.payment_outcomes.get("refunded").copied().unwrap_or(0)
                    );
                }
            }
        }
    }
    Ok(())
}
