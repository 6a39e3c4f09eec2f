//! askama template of the cart page.

use askama::Template;

use super::{Cart, CartNotice};
use crate::web::layout::Layout;

#[derive(Template)]
#[template(path = "cart/cart.html")]
pub struct CartPage<'a> {
    pub layout: Layout<'a>,
    pub cart: &'a Cart,
    pub notice: Option<CartNotice>,
    pub csrf_token: &'a str,
}
