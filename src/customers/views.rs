//! askama templates of the account pages.

use askama::Template;

use super::{Customer, SignUp};
use crate::web::layout::Layout;

#[derive(Template)]
#[template(path = "account/signup.html")]
pub struct SignUpPage<'a> {
    pub layout: Layout<'a>,
    pub form: &'a SignUp,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "account/login.html")]
pub struct LoginPage<'a> {
    pub layout: Layout<'a>,
    pub email: &'a str,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
}

/// One row of the order history.
pub struct OrderRow {
    pub reference: String,
    pub url: String,
    pub placed: String,
    pub status: &'static str,
    pub total: String,
}

#[derive(Template)]
#[template(path = "account/account.html")]
pub struct AccountPage<'a> {
    pub layout: Layout<'a>,
    pub customer: &'a Customer,
    pub orders: Vec<OrderRow>,
    pub pagination: crate::catalog::views::Pagination,
    pub total_orders: u64,
    pub csrf_token: &'a str,
    pub notice: Option<&'a str>,
    pub error: Option<&'a str>,
    /// A fresh WhatsApp verification code, shown once.
    pub phone_code: Option<&'a str>,
    /// The shop's WhatsApp number (`+…`), when configured.
    pub shop_whatsapp: Option<String>,
}

#[derive(Template)]
#[template(path = "account/reset_request.html")]
pub struct ResetRequestPage<'a> {
    pub layout: Layout<'a>,
    pub sent: bool,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "account/reset.html")]
pub struct ResetPage<'a> {
    pub layout: Layout<'a>,
    pub token: &'a str,
    pub valid: bool,
    pub error: Option<&'a str>,
    pub csrf_token: &'a str,
}
