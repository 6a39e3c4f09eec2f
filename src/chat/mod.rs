//! The WhatsApp shopping assistant.
//!
//! ```text
//! Twilio ─POST /webhooks/twilio─► webhook.rs (verify signature, parse, rate limits)
//!                                   │ intake.rs: many requests per transaction:
//!                                   │ conversation + message (unique MessageSid) + queue job
//!                                   ▼
//!                        platform::queue (database | SQS) ─► worker.rs (lease per conversation,
//!                                   burst window, intent → orders | knowledge search → evidence gate
//!                                   → offline responder | model) ─► store reply ─► messaging ─► delete job
//! admins: handover.rs (take over, reply as a human, release) through routes.rs (JSON)
//! ```
//!
//! `inbound.rs` parses Twilio's fields, `intent.rs` reads what a turn asks
//! for, `answer.rs` composes replies, `store.rs` holds the conversation
//! tables, `redact.rs` keeps phone numbers and emails out of logs.

pub mod answer;
pub mod handover;
pub mod inbound;
pub mod intake;
pub mod intent;
pub mod redact;
pub mod routes;
pub mod store;
pub mod webhook;
pub mod worker;

use std::sync::Arc;

use crate::config::{LlmKind, Settings};
use crate::knowledge::Knowledge;
use crate::platform::db::Writer;
use crate::platform::llm::Llm;
use crate::platform::messaging::Messaging;
use crate::platform::queue::Queue;

pub use intake::{Admission, Intake, Stored};
pub use worker::JobOutcome;

/// The assistant: its intake, workers and hand-over functions.
#[derive(Clone)]
pub struct Assistant {
    inner: Arc<Inner>,
}

struct Inner {
    writer: Writer,
    queue: Arc<dyn Queue>,
    knowledge: Knowledge,
    messaging: Messaging,
    /// `None`: the offline responder.
    llm: Option<Arc<dyn Llm>>,
    settings: Arc<Settings>,
    intake: Intake,
    /// Names this process's processing leases.
    worker_id: String,
}

impl Assistant {
    /// Starts the intake's batcher on the current runtime.
    pub fn new(
        settings: Arc<Settings>,
        writer: Writer,
        queue: Arc<dyn Queue>,
        knowledge: Knowledge,
        messaging: Messaging,
        llm: Option<Arc<dyn Llm>>,
    ) -> Assistant {
        let intake = Intake::start(writer.clone(), queue.clone(), settings.chat.burst_window);
        Assistant {
            inner: Arc::new(Inner {
                writer,
                queue,
                knowledge,
                messaging,
                llm,
                settings,
                intake,
                worker_id: format!(
                    "{}-{}",
                    std::process::id(),
                    &uuid::Uuid::new_v4().simple().to_string()[..8]
                ),
            }),
        }
    }

    pub fn intake(&self) -> &Intake {
        &self.inner.intake
    }

    /// `offline` or the model id.
    pub fn responder(&self) -> &str {
        self.inner.llm.as_ref().map_or("offline", |llm| llm.model())
    }
}

/// The model `[llm]` names; `None` for the offline responder. A vendor's
/// model reports its throttling and outcomes to `upstreams`.
pub async fn llm_from_settings(
    settings: &Settings,
    upstreams: &crate::platform::upstream::UpstreamSignals,
) -> anyhow::Result<Option<Arc<dyn Llm>>> {
    Ok(match settings.llm.kind {
        LlmKind::Offline => None,
        LlmKind::Bedrock => Some(Arc::new(
            crate::platform::llm::bedrock::BedrockLlm::from_settings(settings)
                .await?
                .reporting_to(upstreams.clone()),
        )),
    })
}
