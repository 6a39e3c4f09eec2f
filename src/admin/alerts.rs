//! The back-office's alerts page (`/admin/alerts`): open alerts first, then
//! the recently resolved ones, each with its times, text and a link to the
//! page that shows the problem. The alerts come from the `alerts` module's
//! rules; this page only reads them.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use time::OffsetDateTime;

use super::Permission;
use super::routes::{AdminLayout, admin, layout, page, require, when};
use crate::alerts::AlertRecord;
use crate::app::AppContext;
use crate::web::error::AppError;
use crate::web::visitor::Visitor;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/alerts", web::get().to(show_alerts));
}

/// Resolved alerts listed.
const RESOLVED_LISTED: u64 = 100;

struct AlertRow {
    rule: String,
    severity: String,
    title: String,
    text: String,
    link: Option<String>,
    opened: String,
    last_seen: String,
    resolved: Option<String>,
    /// How long it was (or has been) open.
    lasted: String,
}

#[derive(Template)]
#[template(path = "admin/alerts.html")]
struct AlertsPage<'a> {
    layout: AdminLayout<'a>,
    open: Vec<AlertRow>,
    resolved: Vec<AlertRow>,
    interval: String,
}

fn row(record: AlertRecord, offset: time::UtcOffset, now: OffsetDateTime) -> AlertRow {
    let end = record.resolved_at.unwrap_or(now);
    AlertRow {
        lasted: crate::alerts::rules::human((end - record.opened_at).unsigned_abs()),
        opened: when(record.opened_at.to_offset(offset)),
        last_seen: when(record.last_seen_at.to_offset(offset)),
        resolved: record.resolved_at.map(|at| when(at.to_offset(offset))),
        rule: record.rule,
        severity: record.severity,
        title: record.title,
        text: record.text,
        link: record.link,
    }
}

async fn show_alerts(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::View);
    let internal = |e: sea_orm::DbErr| AppError::Internal(e.into());
    let offset = ctx.settings.shop.offset();
    let now = OffsetDateTime::now_utc();
    let open = crate::alerts::open_alerts(&ctx.db)
        .await
        .map_err(internal)?;
    let resolved = crate::alerts::resolved_alerts(&ctx.db, RESOLVED_LISTED)
        .await
        .map_err(internal)?;
    let visitor = Visitor::of(&req);
    let mut template = AlertsPage {
        layout: layout(&ctx, &visitor, "Alerts", Some(&admin), "alerts"),
        open: open.into_iter().map(|r| row(r, offset, now)).collect(),
        resolved: resolved.into_iter().map(|r| row(r, offset, now)).collect(),
        interval: crate::alerts::rules::human(ctx.settings.alerts.interval),
    };
    template.layout.refresh = 60;
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}
