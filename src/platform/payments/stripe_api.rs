//! The slice of Stripe's API that checkout needs: create a Checkout
//! Session and read one back. Plain reqwest with form bodies, as Stripe's
//! API is; retries on 429, 5xx and connection errors with backoff, which
//! is safe because every create carries an idempotency key.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::config::StripeSettings;

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("could not reach Stripe: {0}")]
    Http(#[from] reqwest::Error),
    #[error("Stripe answered {status}: {message}")]
    Api { status: u16, message: String },
}

/// One line of the hosted payment page.
#[derive(Debug, Clone)]
pub struct CheckoutLine {
    pub name: String,
    pub unit_amount: i64,
    pub quantity: i32,
}

#[derive(Debug, Clone)]
pub struct NewCheckoutSession {
    /// Our order's public id: `client_reference_id` and the idempotency key.
    pub order_reference: String,
    pub email: String,
    pub currency: String,
    pub lines: Vec<CheckoutLine>,
    pub success_url: String,
    pub cancel_url: String,
    /// Unix time; Stripe accepts 30 minutes to 24 hours ahead.
    pub expires_at: i64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct CreatedSession {
    pub id: String,
    pub url: String,
}

/// A refund Stripe accepted (`succeeded`, or `pending` while the bank
/// confirms; either way the money is on its way back).
#[derive(Debug, Clone, Deserialize)]
pub struct CreatedRefund {
    pub id: String,
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetrievedSession {
    pub id: String,
    #[serde(default)]
    pub payment_status: Option<String>,
    #[serde(default)]
    pub payment_intent: Option<String>,
    #[serde(default)]
    pub client_reference_id: Option<String>,
}

impl RetrievedSession {
    pub fn is_paid(&self) -> bool {
        self.payment_status.as_deref() == Some("paid")
    }
}

#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    api_base: String,
    secret_key: SecretString,
}

const ATTEMPTS: u32 = 3;

impl StripeClient {
    pub fn new(settings: &StripeSettings) -> Result<StripeClient, StripeError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(3))
            .build()?;
        Ok(StripeClient {
            http,
            api_base: settings.api_base.trim_end_matches('/').to_string(),
            secret_key: settings.secret_key.clone(),
        })
    }

    /// The form fields of a session, in Stripe's bracket notation.
    fn session_form(session: &NewCheckoutSession) -> Vec<(String, String)> {
        let mut form = vec![
            ("mode".to_string(), "payment".to_string()),
            (
                "client_reference_id".to_string(),
                session.order_reference.clone(),
            ),
            ("customer_email".to_string(), session.email.clone()),
            ("success_url".to_string(), session.success_url.clone()),
            ("cancel_url".to_string(), session.cancel_url.clone()),
            ("expires_at".to_string(), session.expires_at.to_string()),
            (
                "metadata[order_id]".to_string(),
                session.order_reference.clone(),
            ),
        ];
        for (index, line) in session.lines.iter().enumerate() {
            let key = |field: &str| format!("line_items[{index}]{field}");
            form.push((key("[quantity]"), line.quantity.to_string()));
            form.push((
                key("[price_data][currency]"),
                session.currency.to_lowercase(),
            ));
            form.push((
                key("[price_data][unit_amount]"),
                line.unit_amount.to_string(),
            ));
            form.push((key("[price_data][product_data][name]"), line.name.clone()));
        }
        form
    }

    pub async fn create_checkout_session(
        &self,
        session: &NewCheckoutSession,
    ) -> Result<CreatedSession, StripeError> {
        let form = Self::session_form(session);
        let idempotency_key = format!("kedai-checkout-{}", session.order_reference);
        self.send(|| {
            self.http
                .post(format!("{}/v1/checkout/sessions", self.api_base))
                .bearer_auth(self.secret_key.expose_secret())
                .header("Idempotency-Key", &idempotency_key)
                .form(&form)
        })
        .await
    }

    pub async fn retrieve_checkout_session(
        &self,
        id: &str,
    ) -> Result<RetrievedSession, StripeError> {
        let id: String = url::form_urlencoded::byte_serialize(id.as_bytes()).collect();
        self.send(|| {
            self.http
                .get(format!("{}/v1/checkout/sessions/{id}", self.api_base))
                .bearer_auth(self.secret_key.expose_secret())
        })
        .await
    }

    /// Refunds a payment in full. The idempotency key is the order's, so
    /// a retry, a second click or a second admin refunds once.
    pub async fn create_refund(
        &self,
        payment_intent: &str,
        order_reference: &str,
    ) -> Result<CreatedRefund, StripeError> {
        let form = [
            ("payment_intent", payment_intent),
            ("metadata[order_id]", order_reference),
        ];
        let idempotency_key = format!("kedai-refund-{order_reference}");
        self.send(|| {
            self.http
                .post(format!("{}/v1/refunds", self.api_base))
                .bearer_auth(self.secret_key.expose_secret())
                .header("Idempotency-Key", &idempotency_key)
                .form(&form)
        })
        .await
    }

    /// Sends with retries: 429 (honouring `Retry-After` up to 5 s), 5xx and
    /// transport errors are retried; other errors are final.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, StripeError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let backoff = Duration::from_millis(100 * 4u64.pow(attempt - 1));
            match request().send().await {
                Ok(response) if response.status().is_success() => {
                    return Ok(response.json().await?);
                }
                Ok(response) => {
                    let status = response.status();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(|s| Duration::from_secs(s.min(5)));
                    let message = response.text().await.unwrap_or_default();
                    let retryable = status.as_u16() == 429 || status.is_server_error();
                    metrics::counter!("kedai_upstream_errors_total", "upstream" => "stripe", "status" => status.as_u16().to_string())
                        .increment(1);
                    if !retryable || attempt >= ATTEMPTS {
                        return Err(StripeError::Api {
                            status: status.as_u16(),
                            message: truncate(&message),
                        });
                    }
                    tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
                }
                Err(error) => {
                    if attempt >= ATTEMPTS {
                        return Err(error.into());
                    }
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    }
}

/// Stripe error bodies are JSON with a message; keep logs short.
fn truncate(text: &str) -> String {
    text.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_uses_stripes_bracket_notation() {
        let form = StripeClient::session_form(&NewCheckoutSession {
            order_reference: "ord-1".into(),
            email: "a@example.com".into(),
            currency: "MYR".into(),
            lines: vec![CheckoutLine {
                name: "Batik Shirt — M / Indigo".into(),
                unit_amount: 18900,
                quantity: 2,
            }],
            success_url: "https://shop/checkout/success?session_id={CHECKOUT_SESSION_ID}".into(),
            cancel_url: "https://shop/cart".into(),
            expires_at: 1_800_000_000,
        });
        let get = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("mode"), Some("payment"));
        assert_eq!(get("line_items[0][price_data][currency]"), Some("myr"));
        assert_eq!(get("line_items[0][price_data][unit_amount]"), Some("18900"));
        assert_eq!(get("line_items[0][quantity]"), Some("2"));
        assert_eq!(get("client_reference_id"), Some("ord-1"));
    }
}
