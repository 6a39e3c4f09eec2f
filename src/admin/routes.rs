//! The back-office pages under `/admin`. Every page checks the admin
//! session (its own cookie, never a shopper's) and the role's permission;
//! every form carries a CSRF token; every change is written to the audit
//! log with the state before and after.
//!
//! Anonymous visitors are sent to `/admin/login`; a signed-in shopper, or
//! an admin whose role does not allow the page, gets 403.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use askama::Template;
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;

use super::{AdminError, AdminUser, Permission};
use crate::app::AppContext;
use crate::chat::store as chat_store;
use crate::web::error::AppError;
use crate::web::http::{CachePolicy, client_address, render, see_other};
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/admin/login", web::get().to(show_login))
        .route("/admin/login", web::post().to(submit_login))
        .route("/admin/logout", web::post().to(logout))
        .route("/admin/setup/{token}", web::get().to(show_setup))
        .route("/admin/setup/{token}", web::post().to(submit_setup))
        .route("/admin/audit", web::get().to(audit))
        .route("/admin/simulator", web::get().to(simulator))
        .route("/admin/simulator", web::post().to(simulate));
    super::dashboard::configure(cfg);
    super::conversations::configure(cfg);
    super::operations::configure(cfg);
    super::orders::configure(cfg);
    super::knowledge::configure(cfg);
    super::catalog::configure(cfg);
    super::alerts::configure(cfg);
}

/// What every admin page shares.
pub struct AdminLayout<'a> {
    pub title: String,
    pub admin: Option<&'a AdminUser>,
    pub section: &'static str,
    pub csrf_token: String,
    pub can_own: bool,
    /// Show the WhatsApp simulator in the navigation.
    pub simulator: bool,
    /// Reload the page after this many seconds (0: never).
    pub refresh: u32,
}

impl AdminLayout<'_> {
    pub fn asset(&self, path: &str) -> std::borrow::Cow<'static, str> {
        crate::web::assets::url(path)
    }
}

pub(super) fn layout<'a>(
    ctx: &AppContext,
    visitor: &Visitor,
    title: &str,
    admin: Option<&'a AdminUser>,
    section: &'static str,
) -> AdminLayout<'a> {
    AdminLayout {
        title: title.to_string(),
        can_own: admin.is_some_and(|a| a.role.allows(Permission::Own)),
        admin,
        section,
        csrf_token: ctx.csrf.token_for(visitor),
        simulator: ctx.settings.admin.simulator,
        refresh: 0,
    }
}

/// Renders an admin page: never cached, visitor cookie kept (for CSRF).
pub(super) fn page(
    req: &HttpRequest,
    ctx: &AppContext,
    visitor: &Visitor,
    template: &impl Template,
    status: StatusCode,
) -> Result<HttpResponse, AppError> {
    let mut response = render(req, template, CachePolicy::NoStore)?;
    *response.status_mut() = status;
    visitor.remember(&mut response, ctx.secure_cookies())?;
    Ok(response)
}

/// Why a request may not see an admin page.
pub(super) enum Denied {
    /// Nobody is signed in to the back-office.
    Login,
    /// Signed in as a shopper, or the role does not allow it.
    Forbidden,
    Failed(AppError),
}

impl Denied {
    pub(super) fn respond(self) -> Result<HttpResponse, AppError> {
        match self {
            Denied::Login => Ok(see_other("/admin/login")),
            Denied::Forbidden => Err(AppError::Forbidden),
            Denied::Failed(error) => Err(error),
        }
    }
}

/// The signed-in admin when their role allows `permission`.
pub(super) async fn require(
    req: &HttpRequest,
    ctx: &AppContext,
    permission: Permission,
) -> Result<AdminUser, Denied> {
    let failed = |error: anyhow::Error| Denied::Failed(AppError::Internal(error));
    let session = ctx
        .admin_sessions
        .current(req)
        .await
        .map_err(|e| failed(e.into()))?;
    let admin = match session {
        Some((_, data)) => super::find(&ctx.db, data.customer_id)
            .await
            .map_err(|e| failed(e.into()))?,
        None => None,
    };
    match admin {
        Some(admin) if admin.role.allows(permission) => Ok(admin),
        Some(admin) => {
            tracing::warn!(
                admin = admin.id,
                path = req.path(),
                "an admin was refused a page their role does not allow"
            );
            Err(Denied::Forbidden)
        }
        None => {
            let shopper = ctx.customer_id(req).await.map_err(Denied::Failed)?;
            if shopper.is_some() {
                Err(Denied::Forbidden)
            } else {
                Err(Denied::Login)
            }
        }
    }
}

macro_rules! admin {
    ($req:expr, $ctx:expr, $permission:expr) => {
        match require(&$req, &$ctx, $permission).await {
            Ok(admin) => admin,
            Err(denied) => return denied.respond(),
        }
    };
}
pub(super) use admin;

pub(super) fn when(at: OffsetDateTime) -> String {
    at.format(time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]"
    ))
    .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// Sign-in, sign-out, first-owner setup.

#[derive(Template)]
#[template(path = "admin/login.html")]
struct LoginPage<'a> {
    layout: AdminLayout<'a>,
    email: &'a str,
    error: Option<&'a str>,
}

async fn login_page(
    req: &HttpRequest,
    ctx: &AppContext,
    email: &str,
    error: Option<(&str, StatusCode)>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    let template = LoginPage {
        layout: layout(ctx, &visitor, "Sign in", None, "login"),
        email,
        error: error.map(|(message, _)| message),
    };
    page(
        req,
        ctx,
        &visitor,
        &template,
        error.map_or(StatusCode::OK, |(_, s)| s),
    )
}

async fn show_login(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    login_page(&req, &ctx, "", None).await
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn submit_login(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    match super::authenticate(
        &ctx.db,
        ctx.cache.as_ref(),
        &form.email,
        &form.password,
        &client_address(&req),
    )
    .await
    {
        Ok(Some(admin)) => {
            let id = ctx
                .admin_sessions
                .start(admin.id)
                .await
                .map_err(|e| AppError::Internal(e.into()))?;
            super::record(&ctx.writer, &admin, "sign_in", &admin.email, None, None)
                .await
                .map_err(|e| AppError::Internal(e.into()))?;
            let mut response = see_other("/admin");
            response
                .add_cookie(&ctx.admin_sessions.cookie(&id, ctx.secure_cookies()))
                .map_err(|e| AppError::Internal(e.into()))?;
            Ok(response)
        }
        Ok(None) => {
            login_page(
                &req,
                &ctx,
                &form.email,
                Some((
                    "That email and password do not match.",
                    StatusCode::UNAUTHORIZED,
                )),
            )
            .await
        }
        Err(AdminError::Throttled(seconds)) => {
            let message = format!(
                "Too many attempts. Please wait {} minutes and try again.",
                seconds.div_ceil(60)
            );
            login_page(
                &req,
                &ctx,
                &form.email,
                Some((&message, StatusCode::TOO_MANY_REQUESTS)),
            )
            .await
        }
        Err(error) => Err(AppError::Internal(error.into())),
    }
}

#[derive(Deserialize)]
pub(super) struct CsrfForm {
    #[serde(default)]
    pub(super) csrf_token: String,
    #[serde(default)]
    pub(super) text: String,
}

async fn logout(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    if let Some((id, _)) = ctx
        .admin_sessions
        .current(&req)
        .await
        .map_err(|e| AppError::Internal(e.into()))?
    {
        ctx.admin_sessions
            .end(&id)
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
    }
    let mut response = see_other("/admin/login");
    response
        .add_cookie(&ctx.admin_sessions.removal(ctx.secure_cookies()))
        .map_err(|e| AppError::Internal(e.into()))?;
    Ok(response)
}

#[derive(Template)]
#[template(path = "admin/setup.html")]
struct SetupPage<'a> {
    layout: AdminLayout<'a>,
    token: &'a str,
    name: &'a str,
    email: &'a str,
    error: Option<&'a str>,
}

async fn show_setup(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    token: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    if !super::setup_token_valid(&ctx.db, &token)
        .await
        .map_err(|e| AppError::Internal(e.into()))?
    {
        return Err(AppError::NotFound);
    }
    let visitor = Visitor::of(&req);
    let template = SetupPage {
        layout: layout(&ctx, &visitor, "Set up", None, "setup"),
        token: &token,
        name: "",
        email: "",
        error: None,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

#[derive(Deserialize)]
struct SetupForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

async fn submit_setup(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    token: web::Path<String>,
    form: web::Form<SetupForm>,
) -> Result<HttpResponse, AppError> {
    let visitor = verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    match super::complete_setup(&ctx.writer, &token, &form.email, &form.name, &form.password).await
    {
        Ok(admin) => {
            super::record(
                &ctx.writer,
                &admin,
                "create_owner",
                &admin.email,
                None,
                Some(json!({"role": "owner"})),
            )
            .await
            .map_err(|e| AppError::Internal(e.into()))?;
            tracing::info!(
                admin = admin.id,
                "the shop's first owner account was created"
            );
            Ok(see_other("/admin/login"))
        }
        Err(error @ (AdminError::Invalid(_) | AdminError::Taken)) => {
            let message = error.to_string();
            let template = SetupPage {
                layout: layout(&ctx, &visitor, "Set up", None, "setup"),
                token: &token,
                name: &form.name,
                email: &form.email,
                error: Some(&message),
            };
            page(
                &req,
                &ctx,
                &visitor,
                &template,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
        }
        Err(error) => Err(AppError::Internal(error.into())),
    }
}

// ---------------------------------------------------------------------------
// Audit log (owners).

struct AuditRow {
    at: String,
    who: String,
    action: String,
    target: String,
    before: String,
    after: String,
}

#[derive(Template)]
#[template(path = "admin/audit.html")]
struct AuditPage<'a> {
    layout: AdminLayout<'a>,
    entries: Vec<AuditRow>,
}

async fn audit(req: HttpRequest, ctx: web::Data<AppContext>) -> Result<HttpResponse, AppError> {
    let admin = admin!(req, ctx, Permission::Own);
    let entries = super::audit_log(&ctx.db, 200)
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .into_iter()
        .map(|e| AuditRow {
            at: when(e.created_at),
            who: e.admin_email,
            action: e.action,
            target: e.target,
            before: e.before.unwrap_or_default(),
            after: e.after.unwrap_or_default(),
        })
        .collect();
    let visitor = Visitor::of(&req);
    let template = AuditPage {
        layout: layout(&ctx, &visitor, "Audit log", Some(&admin), "audit"),
        entries,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

// ---------------------------------------------------------------------------
// The WhatsApp simulator: the real webhook, signed as Twilio signs it.

const SIMULATOR_DEFAULT_PHONE: &str = "+60123450000";

struct SimulatedMessage {
    role: String,
    kind: String,
    who: String,
    at: String,
    body: String,
}

#[derive(Template)]
#[template(path = "admin/simulator.html")]
struct SimulatorPage<'a> {
    layout: AdminLayout<'a>,
    phone: String,
    /// `phone`, encoded for a link's query.
    phone_query: String,
    waiting: bool,
    messages: Vec<SimulatedMessage>,
}

#[derive(Deserialize)]
struct PhoneQuery {
    phone: Option<String>,
}

fn simulator_phone(raw: Option<&str>) -> Option<String> {
    match raw.map(str::trim).filter(|p| !p.is_empty()) {
        None => Some(SIMULATOR_DEFAULT_PHONE.to_string()),
        Some(raw) => crate::customers::normalise_phone(raw),
    }
}

async fn simulator(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<PhoneQuery>,
) -> Result<HttpResponse, AppError> {
    if !ctx.settings.admin.simulator {
        return Err(AppError::NotFound);
    }
    let admin = admin!(req, ctx, Permission::Converse);
    let phone = simulator_phone(query.phone.as_deref())
        .ok_or_else(|| AppError::BadRequest("That is not a phone number.".into()))?;
    let internal = |e: sea_orm::DbErr| AppError::Internal(e.into());
    let conv = chat_store::by_identity(&ctx.db, &phone)
        .await
        .map_err(internal)?;
    let messages = match &conv {
        Some(conv) => chat_store::messages(&ctx.db, conv.id, 100)
            .await
            .map_err(internal)?,
        None => Vec::new(),
    };
    let waiting = conv.as_ref().is_some_and(|c| c.state == "bot")
        && messages
            .iter()
            .any(|m| m.status == "received" || (m.role == "assistant" && m.status == "pending"));
    let views = messages
        .into_iter()
        .filter(|m| m.kind != "note")
        .map(|m| SimulatedMessage {
            who: match m.role.as_str() {
                "user" => "you".to_string(),
                "assistant" => "assistant".to_string(),
                _ => m.author.clone().unwrap_or_else(|| m.role.clone()),
            },
            at: when(m.created_at),
            role: m.role,
            kind: m.kind,
            body: m.body,
        })
        .collect();
    let visitor = Visitor::of(&req);
    let mut layout = layout(
        &ctx,
        &visitor,
        "WhatsApp simulator",
        Some(&admin),
        "simulator",
    );
    if waiting {
        layout.refresh = 2;
    }
    let template = SimulatorPage {
        layout,
        phone_query: urlencoding(&phone),
        phone,
        waiting,
        messages: views,
    };
    page(&req, &ctx, &visitor, &template, StatusCode::OK)
}

#[derive(Deserialize)]
struct SimulateForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    text: String,
}

async fn simulate(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<SimulateForm>,
) -> Result<HttpResponse, AppError> {
    if !ctx.settings.admin.simulator {
        return Err(AppError::NotFound);
    }
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let admin = admin!(req, ctx, Permission::Converse);
    let phone = simulator_phone(Some(&form.phone))
        .ok_or_else(|| AppError::BadRequest("That is not a phone number.".into()))?;
    let text = form.text.trim();
    if text.is_empty() {
        return Ok(see_other(format!(
            "/admin/simulator?phone={}",
            urlencoding(&phone)
        )));
    }
    let path = crate::chat::webhook::INBOUND_PATH;
    let public = ctx
        .settings
        .server
        .public_url
        .as_str()
        .trim_end_matches('/');
    let params: Vec<(String, String)> = vec![
        (
            "MessageSid".into(),
            format!("SM{}", uuid::Uuid::new_v4().simple()),
        ),
        ("AccountSid".into(), "ACsimulator".into()),
        ("From".into(), format!("whatsapp:{phone}")),
        (
            "To".into(),
            format!(
                "whatsapp:{}",
                ctx.settings.twilio.from.trim_start_matches("whatsapp:")
            ),
        ),
        ("Body".into(), text.to_string()),
        ("ProfileName".into(), "Simulator".into()),
        ("WaId".into(), phone.trim_start_matches('+').to_string()),
        ("NumMedia".into(), "0".into()),
    ];
    let signature = crate::platform::messaging::twilio::sign(
        &ctx.twilio_tokens[0],
        &format!("{public}{path}"),
        &params,
    );
    let response = reqwest::Client::new()
        .post(format!("{}{path}", ctx.self_url))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .map_err(|e| {
            AppError::Internal(anyhow::Error::new(e).context("posting the simulated webhook"))
        })?;
    if !response.status().is_success() {
        return Err(AppError::Internal(anyhow::anyhow!(
            "the webhook answered {} to the simulator",
            response.status()
        )));
    }
    super::record(
        &ctx.writer,
        &admin,
        "simulator_message",
        &phone,
        None,
        Some(json!({"text": text})),
    )
    .await
    .map_err(|e| AppError::Internal(e.into()))?;
    Ok(see_other(format!(
        "/admin/simulator?phone={}",
        urlencoding(&phone)
    )))
}

fn urlencoding(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
