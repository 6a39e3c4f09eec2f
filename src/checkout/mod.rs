//! Checkout: from a shopper's intent to pay to a paid order. Owns the
//! payment webhook and the sweeper that gives back the stock of checkouts
//! that expired unpaid. Orders themselves change only through `orders`.

pub mod routes;
pub mod views;
pub mod webhook;

use std::sync::Arc;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::config::{PaymentsKind, Settings, is_set};
use crate::platform::payments::stripe_api::StripeClient;

/// What the payment webhook needs: the secrets it accepts and the refund policy.
#[derive(Clone)]
pub struct Payments {
    inner: Arc<PaymentsInner>,
}

struct PaymentsInner {
    webhook_secrets: Vec<SecretString>,
    restock_on_refund: bool,
    stripe: Option<StripeClient>,
}

impl Payments {
    /// The configured webhook secrets (current first, then the previous one
    /// during a rotation). In test mode without a configured secret, one is
    /// generated for this process, so the same verification runs.
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Payments> {
        let mut webhook_secrets = Vec::new();
        if is_set(&settings.stripe.webhook_secret) {
            webhook_secrets.push(settings.stripe.webhook_secret.clone());
        } else if settings.payments.kind == PaymentsKind::Test {
            let generated = format!("whsec_test_{}", uuid::Uuid::new_v4().simple());
            webhook_secrets.push(SecretString::from(generated));
        }
        if is_set(&settings.stripe.previous_webhook_secret) {
            webhook_secrets.push(settings.stripe.previous_webhook_secret.clone());
        }
        let stripe = match settings.payments.kind {
            PaymentsKind::Stripe => Some(StripeClient::new(&settings.stripe)?),
            PaymentsKind::Test => None,
        };
        Ok(Payments {
            inner: Arc::new(PaymentsInner {
                webhook_secrets,
                restock_on_refund: settings.payments.restock_on_refund,
                stripe,
            }),
        })
    }

    /// The Stripe API client, when payments go through Stripe.
    pub fn stripe(&self) -> Option<&StripeClient> {
        self.inner.stripe.as_ref()
    }

    pub fn webhook_secrets(&self) -> Vec<&SecretString> {
        self.inner.webhook_secrets.iter().collect()
    }

    /// The secret outgoing test-mode events are signed with.
    pub fn signing_secret(&self) -> Option<&SecretString> {
        self.inner.webhook_secrets.first()
    }

    pub fn restock_on_refund(&self) -> bool {
        self.inner.restock_on_refund
    }
}

/// Releases expired reservations every `interval` until shutdown. Each
/// replica runs it; the conditional updates in `orders` make concurrent
/// sweeps safe.
pub async fn run_reservation_sweeper(
    writer: crate::platform::db::Writer,
    interval: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = ticker.tick() => {
                match crate::orders::sweep_expired(&writer, time::OffsetDateTime::now_utc(), 500).await {
                    Ok(0) => {}
                    Ok(released) => tracing::info!(released, "released the stock of expired checkouts"),
                    Err(error) => tracing::warn!(error = %error, "reservation sweep failed"),
                }
            }
        }
    }
}
