//! What the adapters tell operations about the vendors they call: how
//! often a vendor asked us to slow down (throttling: Bedrock's
//! `ThrottlingException`, Twilio's 429) and how the last call ended.
//!
//! One [`UpstreamSignals`] belongs to one application (built in `app.rs`,
//! handed to each adapter); the alert rules read the throttling counters,
//! the dashboard's health lights the last outcomes. Recording is a relaxed
//! atomic add, or a short mutex for the last outcome: it sits on every
//! vendor call. An adapter built without one (the CLI, tests) records into
//! a detached instance nobody reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use time::OffsetDateTime;

/// The vendors whose calls are observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// The chat model (Bedrock Converse).
    BedrockModel,
    /// The knowledge base's embeddings (Bedrock Titan).
    BedrockEmbeddings,
    /// WhatsApp messages out (Twilio's Messages API).
    Twilio,
}

impl Upstream {
    pub const ALL: [Upstream; 3] = [
        Upstream::BedrockModel,
        Upstream::BedrockEmbeddings,
        Upstream::Twilio,
    ];

    fn index(self) -> usize {
        match self {
            Upstream::BedrockModel => 0,
            Upstream::BedrockEmbeddings => 1,
            Upstream::Twilio => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Upstream::BedrockModel => "bedrock_model",
            Upstream::BedrockEmbeddings => "bedrock_embeddings",
            Upstream::Twilio => "twilio",
        }
    }

    /// How people call it.
    pub fn label(self) -> &'static str {
        match self {
            Upstream::BedrockModel => "Bedrock (chat model)",
            Upstream::BedrockEmbeddings => "Bedrock (embeddings)",
            Upstream::Twilio => "Twilio",
        }
    }
}

/// How one call to a vendor ended, as far as health is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// Empty when it went well; else why not, in one line.
    pub detail: String,
    pub at: OffsetDateTime,
}

#[derive(Default)]
struct Inner {
    /// Throttled attempts per upstream, since the process started.
    throttled: [AtomicU64; 3],
    last: [Mutex<Option<Outcome>>; 3],
}

/// Shared, cheap to clone; see the module note.
#[derive(Clone, Default)]
pub struct UpstreamSignals {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for UpstreamSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSignals")
            .field("throttled", &self.throttled_totals())
            .finish_non_exhaustive()
    }
}

impl UpstreamSignals {
    /// The vendor refused an attempt because we are too fast (whether or
    /// not a retry then got through).
    pub fn throttled(&self, upstream: Upstream) {
        self.inner.throttled[upstream.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A call got its answer.
    pub fn succeeded(&self, upstream: Upstream) {
        self.set_last(upstream, true, String::new());
    }

    /// A call failed in the end (after its retries).
    pub fn failed(&self, upstream: Upstream, detail: impl Into<String>) {
        let detail: String = detail.into().chars().take(200).collect();
        self.set_last(upstream, false, detail);
    }

    fn set_last(&self, upstream: Upstream, ok: bool, detail: String) {
        let outcome = Outcome {
            ok,
            detail,
            at: OffsetDateTime::now_utc(),
        };
        if let Ok(mut last) = self.inner.last[upstream.index()].lock() {
            *last = Some(outcome);
        }
    }

    /// Throttled attempts so far, per upstream (in [`Upstream::ALL`] order).
    pub fn throttled_totals(&self) -> [(Upstream, u64); 3] {
        Upstream::ALL.map(|u| (u, self.inner.throttled[u.index()].load(Ordering::Relaxed)))
    }

    /// How the last call to `upstream` ended; `None` before the first.
    pub fn last(&self, upstream: Upstream) -> Option<Outcome> {
        self.inner.last[upstream.index()]
            .lock()
            .ok()
            .and_then(|last| last.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_throttling_and_keeps_the_last_outcome_per_upstream() {
        let signals = UpstreamSignals::default();
        let shared = signals.clone();
        shared.throttled(Upstream::Twilio);
        shared.throttled(Upstream::Twilio);
        shared.throttled(Upstream::BedrockModel);
        assert_eq!(
            signals.throttled_totals(),
            [
                (Upstream::BedrockModel, 1),
                (Upstream::BedrockEmbeddings, 0),
                (Upstream::Twilio, 2)
            ]
        );
        assert_eq!(signals.last(Upstream::Twilio), None);
        shared.failed(Upstream::Twilio, "Twilio answered 503");
        assert!(!signals.last(Upstream::Twilio).unwrap().ok);
        shared.succeeded(Upstream::Twilio);
        let last = signals.last(Upstream::Twilio).unwrap();
        assert!(last.ok && last.detail.is_empty());
        assert_eq!(signals.last(Upstream::BedrockModel), None);
    }
}
