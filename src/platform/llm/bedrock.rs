//! Claude on Amazon Bedrock through the Converse API.
//!
//! Wire format: `POST /model/{model_id}/converse`, the model id
//! percent-encoded by the SDK (`:` travels as `%3A`, the `/` of an
//! inference-profile ARN as `%2F`), signed with SigV4 for the service
//! `bedrock`. The body is
//! `{"system":[{"text":...}],"messages":[{"role":"user","content":[{"text":...}]},...],
//! "inferenceConfig":{"maxTokens":N,"temperature":T}}`; the answer is
//! `{"output":{"message":{"role":"assistant","content":[{"text":...}]}},
//! "stopReason":"end_turn","usage":{"inputTokens":N,"outputTokens":M,"totalTokens":N+M},
//! "metrics":{"latencyMs":L}}`. The reply is the text blocks of the output
//! message joined together; an answer cut at `max_tokens` is still an
//! answer (logged), and an answer without any text is refused.
//!
//! Retry policy: as in the Titan embedder, the SDK's own retries are
//! switched off and this file is the one place that retries. Failures are
//! sorted by [`crate::platform::aws::classify`] (which codes and statuses
//! count as throttling, transient or permanent is listed there); every
//! failure to get a request through (dropped or refused connections, TLS)
//! counts as transient except one the SDK blames on its own configuration
//! ([`DispatchRetry::AllButMisconfiguration`]). Throttled and transient
//! failures are retried with [`super::backoff`] (exponential, jittered,
//! capped), up to `max_attempts` attempts in all. Then the caller gets
//! `LlmError::Throttled` when the last attempt was throttled, else
//! `LlmError::Unavailable`. A request Bedrock refuses (validation, access,
//! unknown model) is `LlmError::Rejected` at once: the same request would
//! be refused again.
//!
//! Metrics: `kedai_llm_calls_total{outcome = ok | throttled | unavailable
//! | rejected}` per `complete` call, `kedai_llm_retries_total{reason =
//! throttled | transient}` per retried attempt, `kedai_llm_tokens_total
//! {direction = input | output}` from Bedrock's usage, and the histogram
//! `kedai_llm_seconds`: how long `complete` took, retries and waits
//! included (what the shopper waits for).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use aws_sdk_bedrockruntime::operation::converse::ConverseOutput as ConverseResponse;
use aws_sdk_bedrockruntime::types::{
    ContentBlock, ConversationRole, ConverseOutput, InferenceConfiguration, Message, StopReason,
    SystemContentBlock,
};

use super::{Llm, LlmError, LlmReply, LlmRequest, Role, backoff};
use crate::platform::aws::{self, DispatchRetry, Failure, FailureKind};
use crate::platform::upstream::{Upstream, UpstreamSignals};

#[derive(Debug, Clone)]
pub struct BedrockLlmConfig {
    /// A model id (`anthropic.claude-sonnet-4-6`), an inference profile id
    /// (`apac.anthropic.claude-sonnet-4-20250514-v1:0`) or its ARN.
    pub model_id: String,
    pub region: String,
    /// Overrides the Bedrock runtime endpoint (test fakes, VPC endpoints).
    pub endpoint_url: Option<String>,
    /// Attempts per `complete` call, the first one included.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// The longest wait between two attempts.
    pub max_backoff: Duration,
    /// Longest one call may take before it counts as a transient failure.
    pub attempt_timeout: Duration,
    /// Access key id and secret. `None` uses the default AWS chain
    /// (environment, profile, web identity, container, instance metadata).
    pub static_credentials: Option<(String, String)>,
}

impl Default for BedrockLlmConfig {
    fn default() -> Self {
        BedrockLlmConfig {
            model_id: "anthropic.claude-sonnet-4-6".into(),
            region: "us-east-1".into(),
            endpoint_url: None,
            max_attempts: 4,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(30),
            static_credentials: None,
        }
    }
}

pub struct BedrockLlm {
    client: aws_sdk_bedrockruntime::Client,
    model_id: String,
    max_attempts: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    /// Throttled attempts and the last outcome, for alerts and health.
    signals: UpstreamSignals,
}

impl std::fmt::Debug for BedrockLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockLlm")
            .field("model_id", &self.model_id)
            .field("max_attempts", &self.max_attempts)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

impl BedrockLlm {
    /// Builds the client. With `static_credentials` nothing outside the
    /// config is read (no environment, profile or instance metadata);
    /// without them the default AWS chain is loaded, lazily: credentials are
    /// looked up on the first call, not here.
    pub async fn new(config: BedrockLlmConfig) -> anyhow::Result<Self> {
        if config.model_id.trim().is_empty() {
            bail!("llm.model_id is empty");
        }
        if config.max_attempts == 0 {
            bail!("llm.max_attempts must be at least 1");
        }
        if config.attempt_timeout.is_zero() {
            bail!("llm.timeout must be positive");
        }

        let client = aws::bedrock_client(
            &aws::ClientConfig {
                region: config.region,
                endpoint_url: config.endpoint_url,
                static_credentials: config.static_credentials,
            },
            config.attempt_timeout,
        )
        .await;
        Ok(BedrockLlm {
            client,
            model_id: config.model_id.trim().to_string(),
            max_attempts: config.max_attempts,
            initial_backoff: config.initial_backoff,
            max_backoff: config.max_backoff,
            signals: UpstreamSignals::default(),
        })
    }

    /// Reports throttling and outcomes to the application's signals.
    pub fn reporting_to(mut self, signals: UpstreamSignals) -> Self {
        self.signals = signals;
        self
    }

    /// The model `[llm]` and `[aws]` describe (whatever `llm.kind` says:
    /// choosing is `app.rs`'s job). An `llm.endpoint_url` wins over
    /// `aws.endpoint_url`. Credentials come from the default AWS chain, as
    /// for the embedder.
    pub async fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<BedrockLlm> {
        let llm = &settings.llm;
        let endpoint_url = [&llm.endpoint_url, &settings.aws.endpoint_url]
            .into_iter()
            .find(|u| !u.trim().is_empty())
            .map(|u| u.trim().to_string());
        BedrockLlm::new(BedrockLlmConfig {
            model_id: llm.model_id.clone(),
            region: settings.aws.region.clone(),
            endpoint_url,
            max_attempts: llm.max_attempts,
            attempt_timeout: llm.timeout,
            ..BedrockLlmConfig::default()
        })
        .await
        .context("could not set up the Bedrock chat model")
    }

    /// One Converse call: the answer, or what went wrong and what to do
    /// about it.
    async fn converse_once(&self, parts: &ConverseParts) -> Result<ConverseResponse, Failure> {
        self.client
            .converse()
            .model_id(&self.model_id)
            .set_system(Some(parts.system.clone()))
            .set_messages(Some(parts.messages.clone()))
            .inference_config(parts.inference.clone())
            .send()
            .await
            .map_err(|error| aws::classify(&error, DispatchRetry::AllButMisconfiguration))
    }

    /// `complete` without the metrics.
    async fn complete_with_retries(&self, request: &LlmRequest) -> Result<LlmReply, LlmError> {
        let parts = converse_parts(request)?;
        let mut attempt = 1;
        loop {
            let failure = match self.converse_once(&parts).await {
                Ok(response) => {
                    let answer = read_answer(&response)?;
                    metrics::counter!("kedai_llm_tokens_total", "direction" => "input")
                        .increment(answer.input_tokens.into());
                    metrics::counter!("kedai_llm_tokens_total", "direction" => "output")
                        .increment(answer.output_tokens.into());
                    if answer.text.is_empty() {
                        return Err(LlmError::Rejected(format!(
                            "empty answer (stop reason {})",
                            answer.stop_reason
                        )));
                    }
                    if answer.stop_reason == StopReason::MaxTokens {
                        tracing::warn!(
                            model = %self.model_id,
                            output_tokens = answer.output_tokens,
                            max_tokens = request.max_tokens,
                            "the model's answer was cut at max_tokens"
                        );
                    }
                    return Ok(LlmReply {
                        text: answer.text,
                        model: self.model_id.clone(),
                        input_tokens: answer.input_tokens,
                        output_tokens: answer.output_tokens,
                        attempts: attempt,
                    });
                }
                Err(failure) => failure,
            };
            tracing::debug!(
                model = %self.model_id,
                attempt,
                kind = ?failure.kind,
                error = %failure.message,
                "bedrock converse call failed"
            );
            if failure.kind == FailureKind::Permanent {
                return Err(LlmError::Rejected(failure.message));
            }
            if failure.kind == FailureKind::Throttled {
                self.signals.throttled(Upstream::BedrockModel);
            }
            if attempt >= self.max_attempts {
                tracing::warn!(
                    model = %self.model_id,
                    attempts = attempt,
                    error = %failure.message,
                    "bedrock converse gave up"
                );
                return Err(match failure.kind {
                    FailureKind::Throttled => LlmError::Throttled { attempts: attempt },
                    _ => LlmError::Unavailable {
                        attempts: attempt,
                        message: failure.message,
                    },
                });
            }
            let reason = match failure.kind {
                FailureKind::Throttled => "throttled",
                _ => "transient",
            };
            metrics::counter!("kedai_llm_retries_total", "reason" => reason).increment(1);
            tokio::time::sleep(backoff(attempt, self.initial_backoff, self.max_backoff)).await;
            attempt += 1;
        }
    }
}

#[async_trait::async_trait]
impl Llm for BedrockLlm {
    fn model(&self) -> &str {
        &self.model_id
    }

    /// One answer, after at most `max_attempts` Converse calls.
    async fn complete(&self, request: &LlmRequest) -> Result<LlmReply, LlmError> {
        let started = Instant::now();
        let outcome = self.complete_with_retries(request).await;
        let label = match &outcome {
            Ok(_) => "ok",
            Err(LlmError::Throttled { .. }) => "throttled",
            Err(LlmError::Unavailable { .. }) => "unavailable",
            Err(LlmError::Rejected(_)) => "rejected",
        };
        metrics::counter!("kedai_llm_calls_total", "outcome" => label).increment(1);
        match &outcome {
            Ok(_) => self.signals.succeeded(Upstream::BedrockModel),
            Err(error) => self
                .signals
                .failed(Upstream::BedrockModel, error.to_string()),
        }
        metrics::histogram!("kedai_llm_seconds").record(started.elapsed().as_secs_f64());
        outcome
    }
}

/// The parts of a Converse request, built once and sent on every attempt.
#[derive(Debug, Clone, PartialEq)]
struct ConverseParts {
    system: Vec<SystemContentBlock>,
    messages: Vec<Message>,
    inference: InferenceConfiguration,
}

/// Our request in the SDK's types: the system prompt as one text block,
/// each turn as a message with one text block.
fn converse_parts(request: &LlmRequest) -> Result<ConverseParts, LlmError> {
    if request.messages.is_empty() {
        return Err(LlmError::Rejected("no messages to answer".into()));
    }
    let system = if request.system.trim().is_empty() {
        Vec::new()
    } else {
        vec![SystemContentBlock::Text(request.system.clone())]
    };
    let messages = request
        .messages
        .iter()
        .map(|turn| {
            let role = match turn.role {
                Role::User => ConversationRole::User,
                Role::Assistant => ConversationRole::Assistant,
            };
            Message::builder()
                .role(role)
                .content(ContentBlock::Text(turn.text.clone()))
                .build()
                .map_err(|e| LlmError::Rejected(format!("could not build a message: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let inference = InferenceConfiguration::builder()
        .max_tokens(i32::try_from(request.max_tokens).unwrap_or(i32::MAX))
        .temperature(request.temperature)
        .build();
    Ok(ConverseParts {
        system,
        messages,
        inference,
    })
}

/// What we keep of a Converse answer.
#[derive(Debug, PartialEq)]
struct Answer {
    /// The text blocks of the output message, joined; may be empty.
    text: String,
    input_tokens: u32,
    output_tokens: u32,
    stop_reason: StopReason,
}

/// Reads a Converse answer. An output that is not a message (a newer
/// variant this SDK does not know) is refused.
fn read_answer(response: &ConverseResponse) -> Result<Answer, LlmError> {
    let message = match response.output() {
        Some(ConverseOutput::Message(message)) => message,
        _ => {
            return Err(LlmError::Rejected(
                "the answer carries no message".to_string(),
            ));
        }
    };
    let text: String = message
        .content()
        .iter()
        .filter_map(|block| block.as_text().ok())
        .map(String::as_str)
        .collect();
    let (input_tokens, output_tokens) = response
        .usage()
        .map(|usage| {
            (
                u32::try_from(usage.input_tokens()).unwrap_or(0),
                u32::try_from(usage.output_tokens()).unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    Ok(Answer {
        text,
        input_tokens,
        output_tokens,
        stop_reason: response.stop_reason().clone(),
    })
}

#[cfg(test)]
mod tests {
    use aws_sdk_bedrockruntime::types::TokenUsage;

    use super::super::Turn;
    use super::*;

    fn request() -> LlmRequest {
        LlmRequest {
            system: "You are the shop's assistant.".into(),
            messages: vec![
                Turn {
                    role: Role::User,
                    text: "Do you ship to Penang?".into(),
                },
                Turn {
                    role: Role::Assistant,
                    text: "Yes, in 2-3 days.".into(),
                },
                Turn {
                    role: Role::User,
                    text: "How much?".into(),
                },
            ],
            max_tokens: 700,
            temperature: 0.2,
        }
    }

    fn response(blocks: Vec<ContentBlock>, stop_reason: StopReason) -> ConverseResponse {
        let message = Message::builder()
            .role(ConversationRole::Assistant)
            .set_content(Some(blocks))
            .build()
            .expect("message");
        ConverseResponse::builder()
            .output(ConverseOutput::Message(message))
            .stop_reason(stop_reason)
            .usage(
                TokenUsage::builder()
                    .input_tokens(120)
                    .output_tokens(30)
                    .total_tokens(150)
                    .build()
                    .expect("usage"),
            )
            .build()
            .expect("response")
    }

    #[test]
    fn the_request_maps_to_one_system_block_and_one_text_block_per_turn() {
        let parts = converse_parts(&request()).expect("builds");
        assert_eq!(
            parts.system,
            vec![SystemContentBlock::Text(
                "You are the shop's assistant.".into()
            )]
        );
        let roles: Vec<_> = parts.messages.iter().map(|m| m.role().clone()).collect();
        assert_eq!(
            roles,
            vec![
                ConversationRole::User,
                ConversationRole::Assistant,
                ConversationRole::User
            ]
        );
        for (message, turn) in parts.messages.iter().zip(&request().messages) {
            assert_eq!(message.content(), &[ContentBlock::Text(turn.text.clone())]);
        }
        assert_eq!(parts.inference.max_tokens(), Some(700));
        assert_eq!(parts.inference.temperature(), Some(0.2));
    }

    #[test]
    fn odd_requests_are_refused_or_clamped_before_any_call() {
        let mut empty = request();
        empty.messages.clear();
        assert!(matches!(converse_parts(&empty), Err(LlmError::Rejected(_))));

        let mut huge = request();
        huge.max_tokens = u32::MAX;
        huge.system = "  ".into();
        let parts = converse_parts(&huge).expect("builds");
        assert_eq!(parts.inference.max_tokens(), Some(i32::MAX));
        assert!(parts.system.is_empty(), "a blank system prompt is left out");
    }

    #[test]
    fn the_answer_joins_the_text_blocks_and_reads_the_usage() {
        let answer = read_answer(&response(
            vec![
                ContentBlock::Text("RM8 to Penang, ".into()),
                ContentBlock::Text("free above RM100.".into()),
            ],
            StopReason::EndTurn,
        ))
        .expect("reads");
        assert_eq!(
            answer,
            Answer {
                text: "RM8 to Penang, free above RM100.".into(),
                input_tokens: 120,
                output_tokens: 30,
                stop_reason: StopReason::EndTurn,
            }
        );

        let cut = read_answer(&response(
            vec![ContentBlock::Text("RM8 to Pen".into())],
            StopReason::MaxTokens,
        ))
        .expect("reads");
        assert_eq!(cut.text, "RM8 to Pen");
        assert_eq!(cut.stop_reason, StopReason::MaxTokens);

        let empty = read_answer(&response(vec![], StopReason::ContentFiltered)).expect("reads");
        assert!(empty.text.is_empty());
    }

    #[test]
    fn an_answer_without_a_message_is_refused() {
        let response = ConverseResponse::builder()
            .stop_reason(StopReason::EndTurn)
            .build()
            .expect("response");
        assert!(matches!(read_answer(&response), Err(LlmError::Rejected(_))));
    }
}
