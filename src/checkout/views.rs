//! askama templates of checkout, the test-mode payment page and the order page.

use askama::Template;

use crate::cart::Cart;
use crate::orders::OrderView;
use crate::web::layout::Layout;

/// What the shopper typed, shown back with the problems found.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct CheckoutForm {
    #[serde(default)]
    pub csrf_token: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
    /// Present (as "on") when the box "send me order updates" is ticked.
    #[serde(default)]
    pub whatsapp_opt_in: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub line1: String,
    #[serde(default)]
    pub line2: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub postcode: String,
    #[serde(default)]
    pub state: String,
}

#[derive(Template)]
#[template(path = "checkout/checkout.html")]
pub struct CheckoutPage<'a> {
    pub layout: Layout<'a>,
    pub cart: &'a Cart,
    pub form: &'a CheckoutForm,
    pub errors: &'a [String],
    pub csrf_token: &'a str,
    pub shipping: String,
    pub total: String,
}

#[derive(Template)]
#[template(path = "checkout/test_payment.html")]
pub struct TestPaymentPage<'a> {
    pub layout: Layout<'a>,
    pub view: &'a OrderView,
    pub session: &'a str,
    pub total: String,
    pub csrf_token: &'a str,
}

#[derive(Template)]
#[template(path = "checkout/order.html")]
pub struct OrderPage<'a> {
    pub layout: Layout<'a>,
    pub view: &'a OrderView,
    pub status_label: &'static str,
    pub subtotal: String,
    pub shipping: String,
    pub total: String,
    pub lines: Vec<(String, String, String, i32, String)>,
    pub history: Vec<(String, &'static str, String)>,
}
