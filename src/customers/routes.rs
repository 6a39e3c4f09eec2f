//! Sign-up, sign-in, sign-out and the account page with order history.

use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::views::{AccountPage, LoginPage, OrderRow, ResetPage, ResetRequestPage, SignUpPage};
use super::{AccountError, SignUp};
use crate::app::AppContext;
use crate::catalog::Money;
use crate::catalog::model::Currency;
use crate::catalog::views::Pagination;
use crate::orders::{self, OrderStatus};
use crate::web::error::AppError;
use crate::web::http::{CachePolicy, client_address, render, see_other};
use crate::web::layout::Layout;
use crate::web::visitor::{Visitor, verified_visitor};

const ORDERS_PER_PAGE: u64 = 10;

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/account", web::get().to(show_account))
        .route("/account/signup", web::get().to(show_sign_up))
        .route("/account/signup", web::post().to(submit_sign_up))
        .route("/account/login", web::get().to(show_login))
        .route("/account/login", web::post().to(submit_login))
        .route("/account/logout", web::post().to(submit_logout))
        .route("/account/profile", web::post().to(update_profile))
        .route("/account/password", web::post().to(change_password))
        .route("/account/whatsapp", web::post().to(verify_whatsapp))
        .route("/account/reset", web::get().to(show_reset_request))
        .route("/account/reset", web::post().to(submit_reset_request))
        .route("/account/reset/{token}", web::get().to(show_reset))
        .route("/account/reset/{token}", web::post().to(submit_reset));
}

/// Renders a personal page: never stored, with `status` when given, and
/// the visitor cookie set for a new visitor (the page's forms need it).
fn personal(
    req: &HttpRequest,
    ctx: &AppContext,
    visitor: &Visitor,
    page: &impl askama::Template,
    status: Option<StatusCode>,
) -> Result<HttpResponse, AppError> {
    let mut response = render(req, page, CachePolicy::NoStore)?;
    if let Some(status) = status {
        *response.status_mut() = status;
    }
    visitor.remember(&mut response, ctx.secure_cookies())?;
    Ok(response)
}

fn internal(error: impl std::error::Error + Send + Sync + 'static) -> AppError {
    AppError::Internal(anyhow::Error::new(error))
}

/// Starts a session, makes the visitor's cart the customer's (merging the
/// customer's carts from other browsers) and sends them to their account.
async fn signed_in(
    req: &HttpRequest,
    ctx: &AppContext,
    customer_id: i64,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    if !visitor.is_new {
        crate::cart::attach_to_customer(&ctx.writer, &visitor.token, customer_id).await?;
    }
    let id = ctx.sessions.start(customer_id).await.map_err(internal)?;
    let mut response = see_other("/account");
    response
        .add_cookie(&ctx.sessions.cookie(&id, ctx.secure_cookies()))
        .map_err(|error| AppError::Internal(anyhow::anyhow!("{error}")))?;
    Ok(response)
}

async fn sign_up_page(
    req: &HttpRequest,
    ctx: &AppContext,
    form: &SignUp,
    error: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    let snapshot = ctx.catalog.snapshot();
    let csrf_token = ctx.csrf.token_for(&visitor);
    let page = SignUpPage {
        layout: Layout::new("Create an account — Kedai", &snapshot.categories),
        form,
        error,
        csrf_token: &csrf_token,
    };
    personal(
        req,
        ctx,
        &visitor,
        &page,
        error.map(|_| StatusCode::UNPROCESSABLE_ENTITY),
    )
}

pub async fn show_sign_up(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    sign_up_page(&req, &ctx, &SignUp::default(), None).await
}

pub async fn submit_sign_up(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<SignUp>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    match super::sign_up(&ctx.writer, &form).await {
        Ok(id) => signed_in(&req, &ctx, id).await,
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(problem) => {
            let message = problem.to_string();
            let mut kept = form.into_inner();
            kept.password.clear();
            sign_up_page(&req, &ctx, &kept, Some(&message)).await
        }
    }
}

async fn login_page(
    req: &HttpRequest,
    ctx: &AppContext,
    email: &str,
    error: Option<(&str, StatusCode)>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    let snapshot = ctx.catalog.snapshot();
    let csrf_token = ctx.csrf.token_for(&visitor);
    let page = LoginPage {
        layout: Layout::new("Sign in — Kedai", &snapshot.categories),
        email,
        error: error.map(|(message, _)| message),
        csrf_token: &csrf_token,
    };
    personal(req, ctx, &visitor, &page, error.map(|(_, status)| status))
}

pub async fn show_login(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    login_page(&req, &ctx, "", None).await
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

pub async fn submit_login(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let client = client_address(&req);
    match super::authenticate(
        &ctx.db,
        ctx.cache.as_ref(),
        &form.email,
        &form.password,
        &client,
    )
    .await
    {
        Ok(Some(id)) => signed_in(&req, &ctx, id).await,
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
        Err(AccountError::Throttled(seconds)) => {
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
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(other) => Err(AppError::BadRequest(other.to_string())),
    }
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    #[serde(default)]
    csrf_token: String,
}

pub async fn submit_logout(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    if let Some((id, _)) = ctx.sessions.current(&req).await.map_err(internal)? {
        ctx.sessions.end(&id).await.map_err(internal)?;
    }
    let mut response = see_other("/");
    response
        .add_cookie(&ctx.sessions.removal(ctx.secure_cookies()))
        .map_err(|error| AppError::Internal(anyhow::anyhow!("{error}")))?;
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct AccountQuery {
    page: Option<u64>,
    notice: Option<String>,
}

/// Fixed messages for `?notice=`; anything else shows nothing.
fn notice_message(code: Option<&str>) -> Option<&'static str> {
    match code {
        Some("profile_saved") => Some("Your details are saved."),
        Some("password_changed") => Some("Your password is changed."),
        _ => None,
    }
}

async fn require_customer(
    req: &HttpRequest,
    ctx: &AppContext,
) -> Result<Result<i64, HttpResponse>, AppError> {
    Ok(match ctx.customer_id(req).await? {
        Some(id) => Ok(id),
        None => Err(see_other("/account/login")),
    })
}

pub async fn update_profile(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<super::Profile>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let id = match require_customer(&req, &ctx).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    match super::update_profile(&ctx.writer, id, &form).await {
        Ok(()) => Ok(see_other("/account?notice=profile_saved")),
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(problem) => account_page(&req, &ctx, id, 1, None, Some(&problem.to_string())).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
}

pub async fn change_password(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<PasswordForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let id = match require_customer(&req, &ctx).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    let client = client_address(&req);
    match super::change_password(
        &ctx.writer,
        ctx.cache.as_ref(),
        id,
        &form.current_password,
        &form.new_password,
        &client,
    )
    .await
    {
        Ok(()) => Ok(see_other("/account?notice=password_changed")),
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(problem) => account_page(&req, &ctx, id, 1, None, Some(&problem.to_string())).await,
    }
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// Makes a code that proves the account's WhatsApp number when the shopper
/// sends it from there; the page shows it once (it is stored hashed).
pub async fn verify_whatsapp(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let id = match require_customer(&req, &ctx).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    match super::start_phone_verification(&ctx.writer, id).await {
        Ok(code) => account_page_with_code(&req, &ctx, id, 1, None, None, Some(&code)).await,
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(problem) => account_page(&req, &ctx, id, 1, None, Some(&problem.to_string())).await,
    }
}

/// The shop's WhatsApp number as a shopper dials it, when one is set.
fn shop_whatsapp(ctx: &AppContext) -> Option<String> {
    let from = ctx.settings.twilio.from.trim();
    let number = from.strip_prefix("whatsapp:").unwrap_or(from);
    number.starts_with('+').then(|| number.to_string())
}

pub async fn show_account(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<AccountQuery>,
) -> Result<HttpResponse, AppError> {
    let id = match require_customer(&req, &ctx).await? {
        Ok(id) => id,
        Err(redirect) => return Ok(redirect),
    };
    let page = query.page.unwrap_or(1).clamp(1, 10_000);
    account_page(
        &req,
        &ctx,
        id,
        page,
        notice_message(query.notice.as_deref()),
        None,
    )
    .await
}

async fn account_page(
    req: &HttpRequest,
    ctx: &AppContext,
    customer_id: i64,
    page: u64,
    notice: Option<&str>,
    error: Option<&str>,
) -> Result<HttpResponse, AppError> {
    account_page_with_code(req, ctx, customer_id, page, notice, error, None).await
}

async fn account_page_with_code(
    req: &HttpRequest,
    ctx: &AppContext,
    customer_id: i64,
    page: u64,
    notice: Option<&str>,
    error: Option<&str>,
    phone_code: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let Some(customer) = super::find(&ctx.db, customer_id).await? else {
        return Ok(see_other("/account/login"));
    };
    let (orders, total) =
        orders::list_for_customer(&ctx.db, customer_id, page, ORDERS_PER_PAGE).await?;
    let date = time::macros::format_description!("[day] [month repr:short] [year]");
    let rows = orders
        .into_iter()
        .map(|order| OrderRow {
            reference: order.public_id[..8].to_string(),
            url: ctx.links.url(&order.public_id),
            placed: order.created_at.format(&date).unwrap_or_default(),
            status: order
                .status
                .parse::<OrderStatus>()
                .map(|s| s.label())
                .unwrap_or("Updated"),
            total: Money::new(
                order.total_minor,
                Currency::parse(&order.currency).unwrap_or(Currency::Myr),
            )
            .to_string(),
        })
        .collect();
    let total_pages = total.div_ceil(ORDERS_PER_PAGE).max(1);
    let visitor = Visitor::of(req);
    let csrf_token = ctx.csrf.token_for(&visitor);
    let snapshot = ctx.catalog.snapshot();
    let view = AccountPage {
        layout: Layout::new("Your account — Kedai", &snapshot.categories),
        customer: &customer,
        orders: rows,
        pagination: Pagination::new(page, total_pages, |n| format!("/account?page={n}")),
        total_orders: total,
        csrf_token: &csrf_token,
        notice,
        error,
        phone_code,
        shop_whatsapp: shop_whatsapp(ctx),
    };
    personal(
        req,
        ctx,
        &visitor,
        &view,
        error.map(|_| StatusCode::UNPROCESSABLE_ENTITY),
    )
}

async fn reset_request_page(
    req: &HttpRequest,
    ctx: &AppContext,
    sent: bool,
    error: Option<(&str, StatusCode)>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    let snapshot = ctx.catalog.snapshot();
    let csrf_token = ctx.csrf.token_for(&visitor);
    let page = ResetRequestPage {
        layout: Layout::new("Reset your password — Kedai", &snapshot.categories),
        sent,
        error: error.map(|(message, _)| message),
        csrf_token: &csrf_token,
    };
    personal(req, ctx, &visitor, &page, error.map(|(_, status)| status))
}

pub async fn show_reset_request(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
) -> Result<HttpResponse, AppError> {
    reset_request_page(&req, &ctx, false, None).await
}

#[derive(Debug, Deserialize)]
pub struct ResetRequestForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    contact: String,
}

pub async fn submit_reset_request(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<ResetRequestForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let client = client_address(&req);
    let log_links = ctx.settings.messaging.kind == crate::config::MessagingKind::Recorded;
    match super::request_password_reset(
        &ctx.writer,
        ctx.cache.as_ref(),
        &form.contact,
        &client,
        ctx.settings.server.public_url.as_str(),
        log_links,
    )
    .await
    {
        Ok(()) => reset_request_page(&req, &ctx, true, None).await,
        Err(AccountError::Throttled(seconds)) => {
            let message = format!(
                "Too many requests. Please wait {} minutes.",
                seconds.div_ceil(60)
            );
            reset_request_page(
                &req,
                &ctx,
                false,
                Some((&message, StatusCode::TOO_MANY_REQUESTS)),
            )
            .await
        }
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(problem) => {
            reset_request_page(
                &req,
                &ctx,
                false,
                Some((&problem.to_string(), StatusCode::UNPROCESSABLE_ENTITY)),
            )
            .await
        }
    }
}

async fn reset_page(
    req: &HttpRequest,
    ctx: &AppContext,
    token: &str,
    error: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(req);
    let snapshot = ctx.catalog.snapshot();
    let csrf_token = ctx.csrf.token_for(&visitor);
    let valid = super::reset_token_is_valid(&ctx.db, token).await?;
    let page = ResetPage {
        layout: Layout::new("Choose a new password — Kedai", &snapshot.categories),
        token,
        valid,
        error,
        csrf_token: &csrf_token,
    };
    let status = if !valid {
        Some(StatusCode::GONE)
    } else {
        error.map(|_| StatusCode::UNPROCESSABLE_ENTITY)
    };
    let mut response = personal(req, ctx, &visitor, &page, status)?;
    // The token is in the URL: keep it out of Referer headers.
    response.headers_mut().insert(
        actix_web::http::header::REFERRER_POLICY,
        actix_web::http::header::HeaderValue::from_static("no-referrer"),
    );
    Ok(response)
}

pub async fn show_reset(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    token: web::Path<String>,
) -> Result<HttpResponse, AppError> {
    reset_page(&req, &ctx, &token, None).await
}

#[derive(Debug, Deserialize)]
pub struct ResetForm {
    #[serde(default)]
    csrf_token: String,
    #[serde(default)]
    new_password: String,
}

pub async fn submit_reset(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    token: web::Path<String>,
    form: web::Form<ResetForm>,
) -> Result<HttpResponse, AppError> {
    verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    match super::reset_password(&ctx.writer, &token, &form.new_password).await {
        Ok(customer_id) => {
            let mut response = signed_in(&req, &ctx, customer_id).await?;
            response.headers_mut().insert(
                actix_web::http::header::LOCATION,
                actix_web::http::header::HeaderValue::from_static(
                    "/account?notice=password_changed",
                ),
            );
            Ok(response)
        }
        Err(AccountError::Internal(error)) => Err(AppError::Internal(error)),
        Err(problem) => reset_page(&req, &ctx, &token, Some(&problem.to_string())).await,
    }
}
