//! WhatsApp out, through one of two transports chosen by
//! `messaging.kind`: `recorded` (the embedded default: the message is
//! stored and shown in the admin and by `kedai messages list`, nothing
//! leaves the machine) or `twilio` (the Messages API).
//!
//! Either way every message is a row in `messages`, written *before* the
//! transport is called, so a send is never lost and never repeated:
//!
//! - A message with an idempotency key (one notification per order and
//!   status) is inserted once; a second `send` with the key finds the row
//!   and does nothing more.
//! - The row is `submitting` while the transport works. A process that dies
//!   there leaves it `submitting`; the next attempt cannot know whether
//!   Twilio accepted it, so it marks the row `unconfirmed` instead of
//!   sending again (at most once, visibly). A request that timed out is
//!   treated the same way. Throttling, 5xx and connection failures happen
//!   before Twilio accepted anything: the row goes back to `pending` and
//!   the caller retries.
//!
//! WhatsApp's 24-hour rule lives here too: free text is allowed only within
//! `notify.session_window` of the shopper's last inbound message; outside
//! it, the message must be an approved template (`ContentSid` +
//! `ContentVariables`), configured per notification kind.

mod recorded;
mod store;
pub mod twilio;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sea_orm::DbErr;
use time::OffsetDateTime;

pub use recorded::RecordedTransport;
pub use store::{
    Contact, OutboundMessage, StatusUpdate, apply_status, contact, list, record_inbound,
    set_opted_out,
};
pub use twilio::TwilioTransport;

use crate::config::NotifySettings;
use crate::platform::db::Writer;

pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "messages")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub message_id: String,
        /// E.164 number.
        pub recipient: String,
        /// What the message is for, e.g. `order_paid`, `password_reset`.
        pub kind: String,
        /// The text (for a template, its rendering for the admin).
        pub body: String,
        /// A [`super::MessageStatus`]-like string: ours (`pending`,
        /// `submitting`, `unconfirmed`, `recorded`) or Twilio's.
        pub status: String,
        pub created_at: time::OffsetDateTime,
        /// One message per key, ever (e.g. `order:<id>:paid`).
        pub idempotency_key: Option<String>,
        /// The template used, when outside the session window.
        pub content_sid: Option<String>,
        /// Twilio's `SM…` id (or the recorded adapter's id).
        pub provider_sid: Option<String>,
        pub error_code: Option<String>,
        pub error_message: Option<String>,
        pub updated_at: Option<time::OffsetDateTime>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}

    pub mod contact {
        use sea_orm::entity::prelude::*;

        /// Per WhatsApp number: the shopper's last message to us (the
        /// customer-service window) and whether they opted out.
        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "whatsapp_contacts")]
        pub struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub phone: String,
            pub last_inbound_at: Option<time::OffsetDateTime>,
            pub opted_out_at: Option<time::OffsetDateTime>,
            pub updated_at: time::OffsetDateTime,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }
}

/// What a message carries on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Free text: only inside the customer-service window.
    Text(String),
    /// An approved template and its numbered variables.
    Template {
        content_sid: String,
        variables: BTreeMap<String, String>,
    },
}

/// One message as a transport sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireMessage {
    /// E.164, without the `whatsapp:` prefix.
    pub to: String,
    pub content: Content,
    /// Where the provider posts delivery status updates.
    pub status_callback: Option<String>,
}

/// The provider took the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub provider_sid: String,
    pub status: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// 429: nothing was sent; try again after `retry_after`.
    #[error("throttled by the provider")]
    Throttled { retry_after: Option<Duration> },
    /// 5xx or no connection: nothing was sent; try again.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this message; sending it again will not help.
    #[error("rejected by the provider ({code:?}): {message}")]
    Rejected {
        code: Option<String>,
        message: String,
    },
    /// The request may or may not have been accepted (a timeout after
    /// sending). Not retried, so the shopper never gets it twice.
    #[error("outcome unknown: {0}")]
    Unconfirmed(String),
}

/// A way to get a message to WhatsApp.
#[async_trait::async_trait]
pub trait Transport: Send + Sync + 'static {
    /// `recorded` or `twilio`; stored with each message's status.
    fn name(&self) -> &'static str;
    /// True when templates must be real approved Content SIDs.
    fn needs_approved_templates(&self) -> bool;
    async fn send(&self, message: &WireMessage) -> Result<Accepted, TransportError>;
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// At most one message per key, ever; `None` for one-off messages.
    pub idempotency_key: Option<String>,
    /// The notification kind, which also names its template.
    pub kind: String,
    /// E.164 number.
    pub recipient: String,
    /// Free text, used inside the session window (and stored).
    pub text: String,
    /// Template variables `1`, `2`, … used outside the window.
    pub variables: Vec<String>,
}

/// How a send ended, when it did not fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// Handed to the transport now.
    Now { message_id: String, template: bool },
    /// A message with this key was sent (or given up on) before.
    Before { message_id: String, status: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the shopper opted out of WhatsApp messages")]
    OptedOut,
    #[error(
        "no approved template is configured for {0:?} (notify.template_{0}) and the shopper's session window is closed"
    )]
    NoTemplate(String),
    #[error(transparent)]
    Transport(#[from] TransportError),
    #[error(transparent)]
    Database(#[from] DbErr),
}

/// The messaging service: routing (window, templates), the store and the
/// transport.
#[derive(Clone)]
pub struct Messaging {
    writer: Writer,
    transport: Arc<dyn Transport>,
    notify: Arc<NotifySettings>,
    status_callback: Option<String>,
}

impl Messaging {
    pub fn new(
        writer: Writer,
        transport: Arc<dyn Transport>,
        notify: NotifySettings,
        status_callback: Option<String>,
    ) -> Self {
        Messaging {
            writer,
            transport,
            notify: Arc::new(notify),
            status_callback,
        }
    }

    /// True when the shopper wrote to us within the session window.
    fn within_window(&self, contact: Option<&Contact>) -> bool {
        let window =
            time::Duration::try_from(self.notify.session_window).unwrap_or(time::Duration::DAY);
        contact
            .and_then(|c| c.last_inbound_at)
            .is_some_and(|at| OffsetDateTime::now_utc() - at < window)
    }

    /// Sends a message at most once per idempotency key, as free text
    /// inside the session window and as the kind's template outside it.
    pub async fn send(&self, outgoing: Outgoing) -> Result<Sent, SendError> {
        let contact = store::contact(&self.writer.db, &outgoing.recipient).await?;
        if contact.as_ref().is_some_and(|c| c.opted_out_at.is_some()) {
            return Err(SendError::OptedOut);
        }
        let content = if self.within_window(contact.as_ref()) {
            Content::Text(outgoing.text.clone())
        } else {
            let content_sid = match self.notify.template_for(&outgoing.kind) {
                Some(sid) => sid.to_string(),
                None if !self.transport.needs_approved_templates() => {
                    format!("template:{}", outgoing.kind)
                }
                None => return Err(SendError::NoTemplate(outgoing.kind.clone())),
            };
            let variables = outgoing
                .variables
                .iter()
                .enumerate()
                .map(|(i, v)| ((i + 1).to_string(), v.clone()))
                .collect();
            Content::Template {
                content_sid,
                variables,
            }
        };
        let row = match store::prepare(&self.writer, &outgoing).await? {
            store::Prepared::Ready(row) => row,
            store::Prepared::Finished(row) => {
                return Ok(Sent::Before {
                    message_id: row.message_id,
                    status: row.status,
                });
            }
        };
        let template = matches!(content, Content::Template { .. });
        let content_sid = match &content {
            Content::Template { content_sid, .. } => Some(content_sid.clone()),
            Content::Text(_) => None,
        };
        if !store::begin_submit(&self.writer, row.id, content_sid).await? {
            return Ok(Sent::Before {
                message_id: row.message_id,
                status: "submitting".into(),
            });
        }
        let wire = WireMessage {
            to: outgoing.recipient.clone(),
            content,
            status_callback: self.status_callback.clone(),
        };
        let result = self.transport.send(&wire).await;
        let label = match &result {
            Ok(_) => "sent",
            Err(TransportError::Throttled { .. }) => "throttled",
            Err(TransportError::Unavailable(_)) => "unavailable",
            Err(TransportError::Rejected { .. }) => "rejected",
            Err(TransportError::Unconfirmed(_)) => "unconfirmed",
        };
        metrics::counter!("kedai_messages_total", "kind" => outgoing.kind.clone(),
            "transport" => self.transport.name(), "outcome" => label)
        .increment(1);
        store::record_result(&self.writer, row.id, &result).await?;
        match result {
            Ok(_) => Ok(Sent::Now {
                message_id: row.message_id,
                template,
            }),
            Err(error) => Err(error.into()),
        }
    }
}
