//! A carrier's REST API. The contract (what we send and accept):
//!
//! - **Book:** `POST {base_url}/v1/shipments` with `Authorization: Bearer
//!   {api_key}`, `Idempotency-Key: {order id}` and a JSON
//!   [`ShipmentRequest`]. `200`/`201` answers `{"id", "tracking_number",
//!   "label_url", "tracking_url"?}`; `429` (with `Retry-After`) and `5xx`
//!   are retried by the caller, which is safe because of the idempotency
//!   key; other `4xx` are a refusal. Timeouts are retried for the same
//!   reason.
//! - **Status updates:** the carrier posts JSON to `/webhooks/carrier`
//!   (`{"id", "tracking_number", "reference", "status", "detail"?}` with
//!   `status` one of `in_transit`, `out_for_delivery`, `delivered`,
//!   `exception`), signed in `X-Carrier-Signature: t=<unix>,v1=<hex>`:
//!   HMAC-SHA256 keyed with `carrier.webhook_secret` over `"{t}.{body}"`,
//!   five minutes' tolerance (the same scheme as Stripe's).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

use super::{BookedShipment, Carrier, CarrierError, ShipmentRequest};

pub const SIGNATURE_HEADER: &str = "X-Carrier-Signature";

pub struct HttpCarrier {
    client: reqwest::Client,
    shipments_url: String,
    api_key: SecretString,
}

impl HttpCarrier {
    pub fn new(base_url: &str, api_key: SecretString, timeout: Duration) -> anyhow::Result<Self> {
        Ok(HttpCarrier {
            client: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(timeout)
                .build()?,
            shipments_url: format!("{}/v1/shipments", base_url.trim_end_matches('/')),
            api_key,
        })
    }
}

#[derive(serde::Deserialize)]
struct Booked {
    id: Option<String>,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
    label_url: Option<String>,
}

#[async_trait::async_trait]
impl Carrier for HttpCarrier {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn book(&self, request: &ShipmentRequest) -> Result<BookedShipment, CarrierError> {
        let response = self
            .client
            .post(&self.shipments_url)
            .bearer_auth(self.api_key.expose_secret())
            .header("Idempotency-Key", &request.reference)
            .json(request)
            .send()
            .await
            .map_err(|e| CarrierError::Unavailable(e.to_string()))?;
        let status = response.status().as_u16();
        let retry_after = crate::platform::retry_after(response.headers());
        let body = response.text().await.unwrap_or_default();
        match status {
            200..=299 => {
                let booked: Booked = serde_json::from_str(&body).map_err(|e| {
                    CarrierError::Unavailable(format!("unreadable answer from the carrier: {e}"))
                })?;
                Ok(BookedShipment {
                    carrier_ref: booked.id,
                    tracking_number: booked.tracking_number,
                    tracking_url: booked.tracking_url,
                    label_url: booked.label_url,
                })
            }
            429 => Err(CarrierError::Throttled { retry_after }),
            500..=599 => Err(CarrierError::Unavailable(format!(
                "the carrier answered {status}"
            ))),
            _ => Err(CarrierError::Rejected(format!(
                "the carrier answered {status}: {}",
                body.chars().take(300).collect::<String>()
            ))),
        }
    }
}

/// A status update posted by the carrier.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct StatusNotice {
    /// The carrier's id for this notice (deduplicates redeliveries).
    pub id: String,
    pub tracking_number: Option<String>,
    /// Our order id, as booked.
    pub reference: Option<String>,
    pub status: String,
    #[serde(default)]
    pub detail: Option<String>,
}

/// Parses a verified webhook body.
pub fn parse_status_notice(body: &[u8]) -> Result<StatusNotice, String> {
    let notice: StatusNotice = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a status notice: {e}"))?;
    if notice.id.trim().is_empty() {
        return Err("the notice has no id".into());
    }
    if notice.reference.is_none() && notice.tracking_number.is_none() {
        return Err("the notice names neither a reference nor a tracking number".into());
    }
    Ok(notice)
}
