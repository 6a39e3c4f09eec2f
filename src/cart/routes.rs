//! Cart pages and forms. Every form carries the visitor's CSRF token; a
//! change answers with a redirect to the cart (post/redirect/get), whose
//! message is chosen by a fixed code, never by text from the request.

use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

use super::views::CartPage;
use super::{CartNotice, MAX_QUANTITY};
use crate::app::AppContext;
use crate::web::error::AppError;
use crate::web::http::{CachePolicy, render, see_other};
use crate::web::layout::Layout;
use crate::web::visitor::{Visitor, verified_visitor};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/cart", web::get().to(show_cart))
        .route("/cart/add", web::post().to(add_to_cart))
        .route("/cart/update", web::post().to(update_cart_line))
        .route("/cart/remove", web::post().to(remove_cart_line));
}

#[derive(Debug, Deserialize)]
pub struct CartQuery {
    notice: Option<String>,
}

pub async fn show_cart(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    query: web::Query<CartQuery>,
) -> Result<HttpResponse, AppError> {
    let visitor = Visitor::of(&req);
    let snapshot = ctx.catalog.snapshot();
    let cart = if visitor.is_new {
        super::Cart::default()
    } else {
        super::load(&ctx.db, &snapshot, &visitor.token).await?
    };
    let csrf_token = ctx.csrf.token_for(&visitor);
    let page = CartPage {
        layout: Layout::new("Your cart — Kedai", &snapshot.categories),
        cart: &cart,
        notice: query.notice.as_deref().and_then(CartNotice::parse),
        csrf_token: &csrf_token,
    };
    let mut response = render(&req, &page, CachePolicy::Private)?;
    visitor.remember(&mut response, ctx.secure_cookies())?;
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub struct LineForm {
    variant_id: i64,
    #[serde(default = "one")]
    quantity: i32,
    #[serde(default)]
    csrf_token: String,
}

fn one() -> i32 {
    1
}

fn back_to_cart(notice: CartNotice) -> HttpResponse {
    see_other(format!("/cart?notice={}", notice.code()))
}

pub async fn add_to_cart(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, AppError> {
    let visitor = verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let quantity = form.quantity.clamp(1, MAX_QUANTITY);
    let snapshot = ctx.catalog.snapshot();
    let notice = super::change(
        &ctx.writer,
        &snapshot,
        &visitor.token,
        form.variant_id,
        quantity,
        true,
    )
    .await?;
    Ok(back_to_cart(notice))
}

pub async fn update_cart_line(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, AppError> {
    let visitor = verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let quantity = form.quantity.clamp(0, MAX_QUANTITY);
    let snapshot = ctx.catalog.snapshot();
    let notice = super::change(
        &ctx.writer,
        &snapshot,
        &visitor.token,
        form.variant_id,
        quantity,
        false,
    )
    .await?;
    Ok(back_to_cart(notice))
}

pub async fn remove_cart_line(
    req: HttpRequest,
    ctx: web::Data<AppContext>,
    form: web::Form<LineForm>,
) -> Result<HttpResponse, AppError> {
    let visitor = verified_visitor(&req, &ctx.csrf, &form.csrf_token)?;
    let snapshot = ctx.catalog.snapshot();
    let notice = super::change(
        &ctx.writer,
        &snapshot,
        &visitor.token,
        form.variant_id,
        0,
        false,
    )
    .await?;
    Ok(back_to_cart(notice))
}
