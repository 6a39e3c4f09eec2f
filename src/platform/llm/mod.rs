//! The chat model port: one call, a system prompt plus the conversation,
//! one answer with its token usage. `bedrock.rs` implements it with Claude
//! through Bedrock's Converse API. The embedded default needs no model at
//! all: `chat::offline` composes answers from the retrieved passages.

pub mod bedrock;

use std::time::Duration;

use async_trait::async_trait;

/// Who wrote a message of the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

/// One message of the conversation sent to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    pub role: Role,
    pub text: String,
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmRequest {
    /// The system policy, sources and order data.
    pub system: String,
    /// Oldest first; starts with and ends with a user message, roles
    /// alternating (callers merge consecutive messages of one role).
    pub messages: Vec<Turn>,
    pub max_tokens: u32,
    pub temperature: f32,
}

/// The model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmReply {
    pub text: String,
    /// The model id that answered.
    pub model: String,
    pub input_tokens: u32,
    pub output_tokens: u32,
    /// Attempts it took (1 when the first call answered).
    pub attempts: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// Throttled on every attempt of the retry budget.
    #[error("the model is throttling us (after {attempts} attempts)")]
    Throttled { attempts: u32 },
    /// Unavailable, timing out or failing on every attempt.
    #[error("the model is unavailable (after {attempts} attempts): {message}")]
    Unavailable { attempts: u32, message: String },
    /// The request was refused (validation, access, unknown model):
    /// retrying the same request will not help.
    #[error("the model refused the request: {0}")]
    Rejected(String),
}

impl LlmError {
    /// True when the same turn may succeed later (throttling, outages).
    pub fn is_transient(&self) -> bool {
        !matches!(self, LlmError::Rejected(_))
    }
}

/// A chat model.
#[async_trait]
pub trait Llm: Send + Sync + 'static {
    /// The configured model id (for logs and the stored message).
    fn model(&self) -> &str;
    /// Answers, retrying throttling and transient failures within its own
    /// budget (attempts and backoff), so the caller sees one outcome.
    async fn complete(&self, request: &LlmRequest) -> Result<LlmReply, LlmError>;
}

/// Exponential backoff with full jitter: attempt 1 waits about `initial`,
/// each further attempt twice as long, capped at `max`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = exp.min(max);
    let jitter = fastrand::f64() * 0.5 + 0.5;
    capped.mul_f64(jitter)
}
