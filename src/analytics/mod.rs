//! Analytics: daily aggregates for the admin dashboard, kept by a bus
//! handler.
//!
//! The [`Analytics`] handler receives every event. In one transaction it
//! claims the event (`processed_events` with source `analytics`) and adds
//! to `analytics_daily` rows keyed by (shop-local day, metric, dimension),
//! so a redelivered event is never counted twice. Metrics:
//!
//! | metric | dimension | from |
//! |---|---|---|
//! | `events` | event type | every event |
//! | `orders`, `units` | — | `order.paid` |
//! | `revenue` | currency | `order.paid` (minor units) |
//! | `category_units`, `category_revenue` | category slug | `order.paid` lines |
//! | `payment_outcome` | paid, cancelled, refunded, needs_attention | order events |
//! | `refunds` | currency | `order.refunded` |
//! | `shipments` | — | `shipment.created` |
//! | `deliveries` | — | `shipment.status_changed` to delivered |

mod repo;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::json;
use time::{Date, UtcOffset};

use crate::events::{Event, Handler, HandlerError, types};
use crate::platform::db::Writer;

pub use repo::daily_rows;

pub struct Analytics {
    writer: Writer,
    offset: UtcOffset,
}

impl Analytics {
    pub fn new(writer: Writer, offset: UtcOffset) -> Self {
        Analytics { writer, offset }
    }
}

/// The increments one event makes: (metric, dimension, amount).
pub fn increments(event: &Event) -> Vec<(String, String, i64)> {
    let mut out = vec![("events".to_string(), event.event_type.clone(), 1)];
    let payload = &event.payload;
    let currency = event.text("currency").unwrap_or("MYR").to_string();
    let outcome = |word: &str| ("payment_outcome".to_string(), word.to_string(), 1);
    match event.event_type.as_str() {
        types::ORDER_PAID => {
            out.push(("orders".into(), String::new(), 1));
            out.push(outcome("paid"));
            out.push((
                "revenue".into(),
                currency,
                payload["total_minor"].as_i64().unwrap_or(0),
            ));
            let mut units = 0;
            for line in payload["lines"].as_array().into_iter().flatten() {
                let category = line["category"]
                    .as_str()
                    .unwrap_or("uncategorised")
                    .to_string();
                let quantity = line["quantity"].as_i64().unwrap_or(0);
                let total = line["line_total_minor"]
                    .as_i64()
                    .unwrap_or_else(|| quantity * line["unit_price_minor"].as_i64().unwrap_or(0));
                units += quantity;
                out.push(("category_units".into(), category.clone(), quantity));
                out.push(("category_revenue".into(), category, total));
            }
            out.push(("units".into(), String::new(), units));
        }
        types::ORDER_CANCELLED => out.push(outcome("cancelled")),
        types::ORDER_REFUNDED => {
            out.push(outcome("refunded"));
            out.push((
                "refunds".into(),
                currency,
                payload["total_minor"].as_i64().unwrap_or(0),
            ));
        }
        types::ORDER_NEEDS_ATTENTION => out.push(outcome("needs_attention")),
        types::SHIPMENT_CREATED => out.push(("shipments".into(), String::new(), 1)),
        types::SHIPMENT_STATUS_CHANGED if event.text("status") == Some("delivered") => {
            out.push(("deliveries".into(), String::new(), 1));
        }
        _ => {}
    }
    out
}

#[async_trait::async_trait]
impl Handler for Analytics {
    fn name(&self) -> &'static str {
        "analytics"
    }

    fn rule(&self) -> serde_json::Value {
        json!({ "type": [{ "prefix": "order." }, { "prefix": "shipment." }] })
    }

    async fn handle(&self, event: &Event) -> Result<(), HandlerError> {
        let day = event.occurred_at.to_offset(self.offset).date();
        repo::add(&self.writer, &event.id, day, &increments(event)).await?;
        Ok(())
    }
}

/// One category's figures on a day.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CategoryFigures {
    pub units: i64,
    pub revenue_minor: i64,
}

/// One day's figures, zeros included, for charts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DayFigures {
    /// Shop-local date, `YYYY-MM-DD`.
    pub day: String,
    pub orders: i64,
    pub units: i64,
    /// Revenue per currency, in minor units.
    pub revenue_minor: BTreeMap<String, i64>,
    pub refunds_minor: BTreeMap<String, i64>,
    pub by_category: BTreeMap<String, CategoryFigures>,
    pub payment_outcomes: BTreeMap<String, i64>,
    pub shipments: i64,
    pub deliveries: i64,
    /// Events of each type seen that day.
    pub events: BTreeMap<String, i64>,
}

/// Figures for every day from `from` to `to`, inclusive (at most 366).
pub async fn daily(
    db: &sea_orm::DatabaseConnection,
    from: Date,
    to: Date,
) -> Result<Vec<DayFigures>, sea_orm::DbErr> {
    let mut days = Vec::new();
    let mut day = from;
    while day <= to && days.len() < 366 {
        days.push(DayFigures {
            day: repo::day_key(day),
            ..DayFigures::default()
        });
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    let rows = repo::daily_rows(db, from, to).await?;
    for (day, metric, dimension, value) in rows {
        let Some(figures) = days.iter_mut().find(|d| d.day == day) else {
            continue;
        };
        match metric.as_str() {
            "orders" => figures.orders += value,
            "units" => figures.units += value,
            "revenue" => *figures.revenue_minor.entry(dimension).or_default() += value,
            "refunds" => *figures.refunds_minor.entry(dimension).or_default() += value,
            "category_units" => figures.by_category.entry(dimension).or_default().units += value,
            "category_revenue" => {
                figures
                    .by_category
                    .entry(dimension)
                    .or_default()
                    .revenue_minor += value
            }
            "payment_outcome" => *figures.payment_outcomes.entry(dimension).or_default() += value,
            "shipments" => figures.shipments += value,
            "deliveries" => figures.deliveries += value,
            "events" => *figures.events.entry(dimension).or_default() += value,
            _ => {}
        }
    }
    Ok(days)
}

/// Today's date in the shop's time zone.
pub fn today(offset: UtcOffset) -> Date {
    time::OffsetDateTime::now_utc().to_offset(offset).date()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, payload: serde_json::Value) -> Event {
        Event {
            id: "e1".into(),
            event_type: event_type.into(),
            version: 1,
            occurred_at: time::OffsetDateTime::now_utc(),
            payload,
        }
    }

    #[test]
    fn a_paid_order_counts_orders_revenue_units_and_categories() {
        let paid = event(
            types::ORDER_PAID,
            json!({ "currency": "MYR", "total_minor": 15000, "lines": [
                { "category": "shoes", "quantity": 2, "line_total_minor": 10000 },
                { "category": "bags", "quantity": 1, "line_total_minor": 4000 },
            ]}),
        );
        let got = increments(&paid);
        let find = |m: &str, d: &str| {
            got.iter()
                .find(|(metric, dim, _)| metric == m && dim == d)
                .map(|(_, _, v)| *v)
        };
        assert_eq!(find("events", "order.paid"), Some(1));
        assert_eq!(find("orders", ""), Some(1));
        assert_eq!(find("revenue", "MYR"), Some(15000));
        assert_eq!(find("units", ""), Some(3));
        assert_eq!(find("category_units", "shoes"), Some(2));
        assert_eq!(find("category_revenue", "bags"), Some(4000));
        assert_eq!(find("payment_outcome", "paid"), Some(1));
    }

    #[test]
    fn other_events_count_their_outcome_only() {
        let refunded = increments(&event(
            types::ORDER_REFUNDED,
            json!({ "currency": "MYR", "total_minor": 500 }),
        ));
        assert!(refunded.contains(&("payment_outcome".into(), "refunded".into(), 1)));
        assert!(refunded.contains(&("refunds".into(), "MYR".into(), 500)));
        let moving = increments(&event(
            types::SHIPMENT_STATUS_CHANGED,
            json!({ "status": "in_transit" }),
        ));
        assert_eq!(
            moving,
            vec![("events".into(), "shipment.status_changed".into(), 1)]
        );
        let delivered = increments(&event(
            types::SHIPMENT_STATUS_CHANGED,
            json!({ "status": "delivered" }),
        ));
        assert!(delivered.contains(&("deliveries".into(), String::new(), 1)));
    }
}
