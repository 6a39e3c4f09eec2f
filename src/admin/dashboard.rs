//! The back-office's dashboard (`/admin`): today's orders and revenue, the
//! last 30 days as a server-rendered SVG chart (no script), what needs a
//! person (escalations, orders needing attention, dead letters, open
//! alerts), this replica's 5xx rate and p99 latency from its rolling
//! window, and a health light per adapter. Every figure comes from the
//! module that owns it (`orders`, `chat`, `analytics`, `events`, `alerts`,
//! `ops`, the platform adapters); this file only lays them out.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use time::OffsetDateTime;

use super::Permission;
use super::routes::{AdminLayout, admin, layout, page, require};
use crate::analytics::DayFigures;
use crate::app::AppContext;
use crate::catalog::Money;
use crate::catalog::model::Currency;
use crate::chat::store::State;
use crate::config::{LlmKind, MessagingKind};
use crate::platform::upstream::Upstream;
use crate::web::error::AppError;
use crate::web::visitor::Visitor;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin", web::get().to(show_dashboard));
}

/// Days in the chart, today included.
const CHART_DAYS: i64 = 30;
/// How long one health check may take before its light goes red.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}

fn money(minor: i64, currency: &str) -> String {
    Money::new(minor, Currency::parse(currency).unwrap_or(Currency::Myr)).to_string()
}

/// One adapter's light.
pub struct Health {
    pub name: &'static str,
    pub ok: bool,
    /// One line: what it is, or why it fails.
    pub detail: String,
}

/// A bar of the chart (revenue of one day), in SVG user units.
struct Bar {
    x: String,
    y: String,
    width: String,
    height: String,
    /// The day's figures, as a tooltip (`<title>`).
    label: String,
}

struct Dot {
    x: String,
    y: String,
}

struct AxisLabel {
    x: String,
    text: String,
}

/// The last 30 days: revenue as bars, orders as a line.
struct Chart {
    bars: Vec<Bar>,
    /// `x,y x,y …` for the orders polyline.
    line: String,
    dots: Vec<Dot>,
    days: Vec<AxisLabel>,
    revenue_max: String,
    orders_max: i64,
    total_orders: i64,
    total_revenue: String,
    /// What the chart shows, for screen readers.
    summary: String,
}

/// The chart's frame: a 640 × 200 view box (in the template), the plot
/// inside the margins.
const PLOT_LEFT: f64 = 72.0;
const PLOT_RIGHT: f64 = 590.0;
const PLOT_TOP: f64 = 12.0;
const PLOT_BOTTOM: f64 = 168.0;

fn unit(value: f64) -> String {
    format!("{value:.1}")
}

/// The currency the chart shows: the one with the most revenue over the
/// days (the shop sells in one; a stray one is left out of the bars).
fn chart_currency(days: &[DayFigures]) -> String {
    let mut totals: BTreeMap<&str, i64> = BTreeMap::new();
    for day in days {
        for (currency, minor) in &day.revenue_minor {
            *totals.entry(currency.as_str()).or_default() += minor;
        }
    }
    totals
        .into_iter()
        .max_by_key(|(_, total)| *total)
        .map_or_else(|| "MYR".to_string(), |(currency, _)| currency.to_string())
}

fn chart(days: &[DayFigures]) -> Chart {
    let currency = chart_currency(days);
    let revenue = |day: &DayFigures| day.revenue_minor.get(&currency).copied().unwrap_or(0);
    let revenue_peak = days.iter().map(revenue).max().unwrap_or(0);
    let orders_peak = days.iter().map(|d| d.orders).max().unwrap_or(0);
    // The scales; a month without sales draws flat bars at zero.
    let revenue_max = revenue_peak.max(1);
    let orders_max = orders_peak.max(1);
    let slots = days.len().max(1) as f64;
    let slot = (PLOT_RIGHT - PLOT_LEFT) / slots;
    let plot_height = PLOT_BOTTOM - PLOT_TOP;
    let mut bars = Vec::new();
    let mut dots = Vec::new();
    let mut points = Vec::new();
    let mut labels = Vec::new();
    for (index, day) in days.iter().enumerate() {
        let left = PLOT_LEFT + slot * index as f64;
        let height = plot_height * revenue(day) as f64 / revenue_max as f64;
        bars.push(Bar {
            x: unit(left + slot * 0.15),
            y: unit(PLOT_BOTTOM - height),
            width: unit(slot * 0.7),
            height: unit(height),
            label: format!(
                "{}: {} order{}, {}",
                day.day,
                day.orders,
                if day.orders == 1 { "" } else { "s" },
                money(revenue(day), &currency)
            ),
        });
        let centre = left + slot / 2.0;
        let y = PLOT_BOTTOM - plot_height * day.orders as f64 / orders_max as f64;
        points.push(format!("{},{}", unit(centre), unit(y)));
        dots.push(Dot {
            x: unit(centre),
            y: unit(y),
        });
        // Every fifth day from the last one (today) back.
        if (days.len() - 1 - index).is_multiple_of(5) {
            labels.push(AxisLabel {
                x: unit(centre),
                text: day.day.get(5..).unwrap_or(&day.day).to_string(),
            });
        }
    }
    let total_orders: i64 = days.iter().map(|d| d.orders).sum();
    let total_revenue = money(days.iter().map(revenue).sum(), &currency);
    Chart {
        summary: format!(
            "Orders and revenue per day, {} to {}: {total_orders} orders, {total_revenue}.",
            days.first().map_or("", |d| d.day.as_str()),
            days.last().map_or("", |d| d.day.as_str()),
        ),
        bars,
        line: points.join(" "),
        dots,
        days: labels,
        revenue_max: money(revenue_peak, &currency),
        orders_max: orders_peak,
        total_orders,
        total_revenue,
    }
}

/// Runs a check with the light's time limit.
async fn within<T, E: std::fmt::Display>(
    check: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {}s", CHECK_TIMEOUT.as_secs())),
    }
}

fn light(name: &'static str, outcome: Result<String, String>) -> Health {
    match outcome {
        Ok(detail) => Health {
            name,
            ok: true,
            detail,
        },
        Err(detail) => Health {
            name,
            ok: false,
            detail,
        },
    }
}

/// A vendor adapter's light from how its last call ended.
fn vendor_light(ctx: &AppContext, name: &'static str, upstream: Upstream, what: &str) -> Health {
    let at = |outcome: &crate::platform::upstream::Outcome| {
        super::routes::when(outcome.at.to_offset(ctx.settings.shop.offset()))
    };
    match ctx.signals.upstreams.last(upstream) {
        None => light(name, Ok(format!("{what}: no call yet"))),
        Some(outcome) if outcome.ok => {
            light(name, Ok(format!("{what}: last call ok ({})", at(&outcome))))
        }
        Some(outcome) => light(
            name,
            Err(format!(
                "{what}: last call failed ({}): {}",
                at(&outcome),
                outcome.detail
            )),
        ),
    }
}

/// A light per adapter: database, cache, queue, object store, model,
/// messaging.
pub async fn health(ctx: &AppContext) -> Vec<Health> {
    let (database, cache, queue, objects) = tokio::join!(
        within(crate::platform::db::ping(&ctx.db)),
        within(ctx.cache.ping()),
        within(ctx.queue.stats()),
        within(ctx.knowledge.store().probe()),
    );
    let database_kind = format!("{:?}", ctx.settings.database.kind).to_lowercase();
    let mut lights = vec![
        light("database", database.map(|()| database_kind)),
        light(
            "cache",
            cache.map(|()| match ctx.cache.kind() {
                "memory" => "in-process (embedded)".to_string(),
                kind => kind.to_string(),
            }),
        ),
        light(
            "chat queue",
            queue.map(|stats| {
                format!(
                    "{}: {} waiting, {} in flight",
                    ctx.queue.backend(),
                    stats.depth.saturating_sub(stats.in_flight),
                    stats.in_flight
                )
            }),
        ),
        light(
            "object store",
            objects.map(|()| {
                format!(
                    "{}: {} documents searchable",
                    ctx.knowledge.store().backend(),
                    ctx.knowledge.corpus().documents()
                )
            }),
        ),
    ];
    lights.push(match ctx.settings.llm.kind {
        LlmKind::Offline => light("model", Ok("offline responder (no model calls)".into())),
        LlmKind::Bedrock => vendor_light(
            ctx,
            "model",
            Upstream::BedrockModel,
            &format!("Bedrock {}", ctx.chat.responder()),
        ),
    });
    lights.push(match ctx.settings.messaging.kind {
        MessagingKind::Recorded => {
            light("messaging", Ok("recorded (embedded, nothing sent)".into()))
        }
        MessagingKind::Twilio => vendor_light(ctx, "messaging", Upstream::Twilio, "Twilio"),
    });
    lights
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or("—".into(), |rate| format!("{:.1} %", rate * 100.0))
}

fn latency(value: Option<Duration>) -> String {
    value.map_or("—".into(), crate::alerts::rules::human)
}

#[derive(Template)]
#[template(path = "admin/dashboard.html")]
struct DashboardPage<'a> {
    layout: AdminLayout<'a>,
    orders_today: u64,
    revenue_today: String,
    escalations: u64,
    queue_depth: u64,
    queue_oldest: String,
    queue_dead: u64,
    events_dead: u64,
    attention: u64,
    open_alerts: u64,
    requests: u64,
    error_rate: String,
    errors_high: bool,
    p99: String,
    database_p99: String,
    chart: Chart,
    health: Vec<Health>,
}

async fn show_dashboard(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let offset = ctx.settings.shop.offset();
    let today = crate::analytics::today(offset);
    let local_midnight = today.midnight().assume_offset(offset);
    let sales = crate::orders::sales_since(&ctx.db, local_midnight)
        .await
        .map_err(internal)?;
    let attention = crate::orders::count_needing_attention(&ctx.db)
        .await
        .map_err(internal)?;
    let escalations = crate::chat::store::count_in_state(&ctx.db, State::NeedsHuman)
        .await
        .map_err(internal)?;
    let days =
        crate::analytics::daily(&ctx.db, today - time::Duration::days(CHART_DAYS - 1), today)
            .await
            .map_err(internal)?;
    let dead_since = OffsetDateTime::now_utc() - ctx.settings.alerts.dead_letter_window;
    let events_dead = crate::events::dead_letter_counts(&ctx.db, dead_since)
        .await
        .map_err(internal)?;
    let open_alerts = crate::alerts::count_open(&ctx.db).await.map_err(internal)?;
    let health = health(&ctx).await;
    let stats = within(ctx.queue.stats()).await.unwrap_or_default();
    let http = ctx.signals.http.snapshot();
    let database = ctx.signals.database.snapshot();

    let revenue_today = if sales.revenue_minor.is_empty() {
        money(0, "MYR")
    } else {
        sales
            .revenue_minor
            .iter()
            .map(|(currency, minor)| money(*minor, currency))
            .collect::<Vec<_>>()
            .join(" + ")
    };
    let visitor = Visitor::of(&req);
    let template = DashboardPage {
        layout: layout(&ctx, &visitor, "Dashboard", Some(&admin), "dashboard"),
        orders_today: sales.orders,
        revenue_today,
        escalations,
        queue_depth: stats.depth,
        queue_oldest: stats.oldest_age.map_or("empty".into(), |age| {
            format!("oldest {}", crate::alerts::rules::human(age))
        }),
        queue_dead: stats.dead,
        events_dead: events_dead.total,
        attention,
        open_alerts,
        requests: http.count,
        errors_high: http.error_rate().unwrap_or(0.0) > ctx.settings.alerts.http_error_rate,
        error_rate: percent(http.error_rate()),
        p99: latency(http.p99()),
        database_p99: latency(database.p99()),
        chart: chart(&days),
        health,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(date: &str, orders: i64, revenue: i64) -> DayFigures {
        let mut figures = DayFigures {
            day: date.into(),
            orders,
            ..DayFigures::default()
        };
        if revenue > 0 {
            figures.revenue_minor.insert("MYR".into(), revenue);
        }
        figures
    }

    #[test]
    fn the_chart_scales_bars_to_the_best_day_and_labels_every_fifth_day() {
        let days: Vec<DayFigures> = (1..=30)
            .map(|n| day(&format!("2026-11-{n:02}"), n % 3, 1000 * (n % 7)))
            .collect();
        let chart = chart(&days);
        assert_eq!(chart.bars.len(), 30);
        assert_eq!(chart.dots.len(), 30);
        assert_eq!(chart.days.len(), 6);
        assert_eq!(chart.days.last().unwrap().text, "11-30");
        assert_eq!(chart.orders_max, 2);
        assert_eq!(chart.revenue_max, "RM 60.00");
        // The best day's bar spans the plot; an empty day has no height.
        let tallest = chart
            .bars
            .iter()
            .map(|b| b.height.parse::<f64>().unwrap())
            .fold(0.0, f64::max);
        assert_eq!(tallest, PLOT_BOTTOM - PLOT_TOP);
        assert_eq!(chart.bars[6].height, "0.0", "the 7th is a multiple of 7");
        assert!(
            chart.bars[0]
                .label
                .starts_with("2026-11-01: 1 order, RM 10.00")
        );
        assert_eq!(chart.line.split(' ').count(), 30);
        assert!(
            chart.bars.iter().all(|b| {
                let x: f64 = b.x.parse().unwrap();
                (PLOT_LEFT..PLOT_RIGHT).contains(&x)
            }),
            "every bar inside the plot"
        );
    }

    #[test]
    fn an_empty_month_draws_flat_and_says_so() {
        let days: Vec<DayFigures> = (1..=30)
            .map(|n| day(&format!("2026-11-{n:02}"), 0, 0))
            .collect();
        let chart = chart(&days);
        assert!(chart.bars.iter().all(|b| b.height == "0.0"));
        assert_eq!(chart.total_orders, 0);
        assert!(chart.summary.contains("0 orders"), "{}", chart.summary);
    }
}
