//! Bedrock Titan text embeddings through `InvokeModel`.
//!
//! Titan embeds one text per call, so `embed` fans the texts out with at
//! most `concurrency` calls in flight (a semaphore shared by every caller of
//! this embedder, so an ingest run and live questions together stay under
//! the limit) and puts the answers back in the order of the texts.
//!
//! Retry policy: the SDK's own retries are switched off and this file is the
//! one place that retries. Failures are sorted by
//! [`crate::platform::aws::classify`] (which codes and statuses count as
//! throttling, transient or permanent is listed there); of the failures to
//! get a request through, only I/O errors and timeouts count as transient
//! ([`DispatchRetry::IoAndTimeouts`]). Throttled and transient failures are
//! retried with exponential backoff and jitter, up to `max_attempts`
//! attempts per text in all; a request Bedrock refuses (validation, access,
//! unknown model) fails at once.
//!
//! Wire format: `POST /model/{model_id}/invoke` with
//! `{"inputText": "..."}`, plus `"dimensions"` and `"normalize": true` for
//! Titan v2 (v1 has a fixed 1536 and takes nothing else); the answer is
//! `{"embedding": [...], "inputTextTokenCount": N}`. Vectors are scaled to
//! unit length here whatever the model did (v1 does not normalise), and a
//! vector of another length than the configured one is an error, never
//! stored.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use aws_sdk_bedrockruntime::primitives::Blob;
use futures_util::{StreamExt, TryStreamExt};
use tokio::sync::Semaphore;

use super::{EmbedError, Embedder};
use crate::platform::aws::{self, DispatchRetry, FailureKind};
use crate::platform::upstream::{Upstream, UpstreamSignals};

/// Longest text sent, in characters. Titan v1 reads at most 8,192 tokens
/// (v2: 8,192 tokens or 50,000 characters); 30,000 characters of prose is
/// well under that. Passages are a few hundred tokens, so this only guards
/// against a caller passing a whole document.
pub const MAX_INPUT_CHARS: usize = 30_000;

/// The longest wait between two attempts, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct BedrockEmbedderConfig {
    /// e.g. `amazon.titan-embed-text-v1` or `amazon.titan-embed-text-v2:0`.
    pub model_id: String,
    /// Titan v1: 1536; Titan v2: 256, 512 or 1024.
    pub dimensions: usize,
    pub region: String,
    /// Overrides the Bedrock runtime endpoint (test fakes, VPC endpoints).
    pub endpoint_url: Option<String>,
    /// Calls in flight at once, across every caller of this embedder.
    pub concurrency: usize,
    /// Attempts per text, the first one included.
    pub max_attempts: u32,
    /// Wait before the second attempt; doubled for each further one.
    pub initial_backoff: Duration,
    /// Access key id and secret. `None` uses the default AWS chain
    /// (environment, profile, web identity, container, instance metadata).
    pub static_credentials: Option<(String, String)>,
    /// Longest one call may take before it counts as a transient failure.
    pub attempt_timeout: Duration,
}

impl Default for BedrockEmbedderConfig {
    fn default() -> Self {
        BedrockEmbedderConfig {
            model_id: "amazon.titan-embed-text-v1".into(),
            dimensions: 1536,
            region: "us-east-1".into(),
            endpoint_url: None,
            concurrency: 8,
            max_attempts: 6,
            initial_backoff: Duration::from_millis(250),
            static_credentials: None,
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

pub struct BedrockEmbedder {
    client: aws_sdk_bedrockruntime::Client,
    model_id: String,
    dimensions: usize,
    /// Titan v2 takes `dimensions` and `normalize`; v1 refuses them.
    sends_dimensions: bool,
    concurrency: usize,
    permits: Arc<Semaphore>,
    max_attempts: u32,
    initial_backoff: Duration,
    /// Throttled attempts and the last outcome, for alerts and health.
    signals: UpstreamSignals,
}

impl std::fmt::Debug for BedrockEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BedrockEmbedder")
            .field("model_id", &self.model_id)
            .field("dimensions", &self.dimensions)
            .field("concurrency", &self.concurrency)
            .field("max_attempts", &self.max_attempts)
            .finish_non_exhaustive()
    }
}

/// Whether the model is Titan Text Embeddings v2 (which takes a dimension).
fn is_titan_v2(model_id: &str) -> bool {
    model_id.contains("titan-embed-text-v2")
}

impl BedrockEmbedder {
    /// Builds the client. With `static_credentials` nothing outside the
    /// config is read (no environment, profile or instance metadata);
    /// without them the default AWS chain is loaded, lazily: credentials are
    /// looked up on the first call, not here.
    pub async fn new(config: BedrockEmbedderConfig) -> anyhow::Result<Self> {
        if config.model_id.trim().is_empty() {
            bail!("embeddings.model_id is empty");
        }
        if config.concurrency == 0 || config.max_attempts == 0 {
            bail!("embeddings.concurrency and embeddings.max_attempts must be at least 1");
        }
        let sends_dimensions = is_titan_v2(&config.model_id);
        if sends_dimensions {
            if ![256, 512, 1024].contains(&config.dimensions) {
                bail!(
                    "embeddings.dimensions = {} but {} takes 256, 512 or 1024",
                    config.dimensions,
                    config.model_id
                );
            }
        } else if config.model_id.contains("titan-embed-text-v1") && config.dimensions != 1536 {
            bail!(
                "embeddings.dimensions = {} but {} always answers 1536",
                config.dimensions,
                config.model_id
            );
        }
        if config.dimensions == 0 {
            bail!("embeddings.dimensions must be positive");
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
        Ok(BedrockEmbedder {
            client,
            model_id: config.model_id,
            dimensions: config.dimensions,
            sends_dimensions,
            concurrency: config.concurrency,
            permits: Arc::new(Semaphore::new(config.concurrency)),
            max_attempts: config.max_attempts,
            initial_backoff: config.initial_backoff,
            signals: UpstreamSignals::default(),
        })
    }

    /// Reports throttling and outcomes to the application's signals.
    pub fn reporting_to(mut self, signals: UpstreamSignals) -> Self {
        self.signals = signals;
        self
    }

    /// The embedder `[embeddings]` and `[aws]` describe (whatever
    /// `embeddings.kind` says: choosing is `app.rs`'s job). An
    /// `embeddings.endpoint_url` wins over `aws.endpoint_url`. Credentials
    /// come from the default AWS chain.
    pub async fn from_settings(settings: &crate::config::Settings) -> anyhow::Result<Self> {
        let embeddings = &settings.embeddings;
        let endpoint_url = [&embeddings.endpoint_url, &settings.aws.endpoint_url]
            .into_iter()
            .find(|u| !u.trim().is_empty())
            .map(|u| u.trim().to_string());
        BedrockEmbedder::new(BedrockEmbedderConfig {
            model_id: embeddings.model_id.clone(),
            dimensions: usize::try_from(embeddings.dimensions)
                .context("embeddings.dimensions does not fit")?,
            region: settings.aws.region.clone(),
            endpoint_url,
            concurrency: embeddings.concurrency,
            max_attempts: embeddings.max_attempts,
            ..BedrockEmbedderConfig::default()
        })
        .await
        .context("could not set up the Bedrock embedder")
    }

    /// The request body for one text.
    fn request_body(&self, text: &str) -> Vec<u8> {
        let body = if self.sends_dimensions {
            serde_json::json!({
                "inputText": text,
                "dimensions": self.dimensions,
                "normalize": true,
            })
        } else {
            serde_json::json!({ "inputText": text })
        };
        body.to_string().into_bytes()
    }

    /// One text's vector, with retries.
    async fn embed_one(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let body = self.request_body(truncate(text, MAX_INPUT_CHARS));
        let mut attempt = 1;
        loop {
            let outcome = {
                // Held for the call only, not while waiting to retry.
                let _permit = self
                    .permits
                    .acquire()
                    .await
                    .map_err(|_| EmbedError::Failed("the embedder is shut down".into()))?;
                self.client
                    .invoke_model()
                    .model_id(&self.model_id)
                    .content_type("application/json")
                    .accept("application/json")
                    .body(Blob::new(body.clone()))
                    .send()
                    .await
            };
            let failure = match outcome {
                Ok(output) => {
                    self.signals.succeeded(Upstream::BedrockEmbeddings);
                    return parse_embedding(output.body().as_ref(), self.dimensions);
                }
                Err(error) => aws::classify(&error, DispatchRetry::IoAndTimeouts),
            };
            if failure.kind == FailureKind::Throttled {
                self.signals.throttled(Upstream::BedrockEmbeddings);
            }
            tracing::debug!(
                model = %self.model_id,
                attempt,
                kind = ?failure.kind,
                error = %failure.message,
                "bedrock embedding call failed"
            );
            if failure.kind == FailureKind::Permanent {
                self.signals
                    .failed(Upstream::BedrockEmbeddings, failure.message.clone());
                return Err(EmbedError::Failed(failure.message));
            }
            if attempt >= self.max_attempts {
                self.signals
                    .failed(Upstream::BedrockEmbeddings, failure.message.clone());
                tracing::warn!(
                    model = %self.model_id,
                    attempts = attempt,
                    error = %failure.message,
                    "bedrock embedding gave up"
                );
                return Err(match failure.kind {
                    FailureKind::Throttled => EmbedError::Throttled,
                    _ => EmbedError::Failed(format!(
                        "{} (after {attempt} attempts)",
                        failure.message
                    )),
                });
            }
            tokio::time::sleep(backoff(self.initial_backoff, attempt)).await;
            attempt += 1;
        }
    }
}

#[async_trait::async_trait]
impl Embedder for BedrockEmbedder {
    /// `bedrock:<model id>:<dimensions>`: identifies the vector space.
    fn name(&self) -> String {
        format!("bedrock:{}:{}", self.model_id, self.dimensions)
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// One vector per text, in order. A text that is empty or only
    /// whitespace is the caller's mistake (Bedrock refuses it): the whole
    /// call fails with `EmbedError::Failed("empty text ...")` before any
    /// request is made. The first text that fails fails the call.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        if let Some(position) = texts.iter().position(|t| t.trim().is_empty()) {
            return Err(EmbedError::Failed(format!(
                "empty text at position {position}"
            )));
        }
        // Collected first: a lazy `map` here trips the compiler's `Send`
        // check of the boxed future (a higher-ranked lifetime).
        let calls: Vec<_> = texts.iter().map(|text| self.embed_one(text)).collect();
        // `try_collect` stops at the first failure and drops the calls
        // still in flight or waiting.
        futures_util::stream::iter(calls)
            .buffered(self.concurrency)
            .try_collect()
            .await
    }
}

/// The wait after failed attempt `attempt` (1-based): `initial * 2^(attempt-1)`,
/// capped, then a random point in its upper half ("equal jitter"), so
/// callers that were throttled together do not come back together.
fn backoff(initial: Duration, attempt: u32) -> Duration {
    let exponential = initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(MAX_BACKOFF);
    exponential.mul_f64(0.5 + fastrand::f64() * 0.5)
}

/// At most `max_chars` characters of `text`, cut on a character boundary.
fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((byte, _)) => &text[..byte],
        None => text,
    }
}

#[derive(serde::Deserialize)]
struct TitanAnswer {
    embedding: Vec<f32>,
}

/// Reads Titan's answer, checks its length and scales it to unit length.
fn parse_embedding(body: &[u8], dimensions: usize) -> Result<Vec<f32>, EmbedError> {
    let answer: TitanAnswer = serde_json::from_slice(body)
        .map_err(|e| EmbedError::Failed(format!("unreadable Titan answer: {e}")))?;
    if answer.embedding.len() != dimensions {
        return Err(EmbedError::Failed(format!(
            "Titan answered {} dimensions, {dimensions} expected",
            answer.embedding.len()
        )));
    }
    let mut vector = answer.embedding;
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if !norm.is_finite() || norm == 0.0 {
        return Err(EmbedError::Failed(
            "Titan answered a zero or non-finite vector".into(),
        ));
    }
    vector.iter_mut().for_each(|x| *x /= norm);
    Ok(vector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_cuts_on_a_character_boundary() {
        assert_eq!(truncate("héllo", 2), "hé");
        assert_eq!(truncate("héllo", 5), "héllo");
        assert_eq!(truncate("héllo", 50), "héllo");
        let long = "ü".repeat(MAX_INPUT_CHARS + 10);
        assert_eq!(
            truncate(&long, MAX_INPUT_CHARS).chars().count(),
            MAX_INPUT_CHARS
        );
    }

    #[test]
    fn answers_are_checked_and_scaled_to_unit_length() {
        let vector = parse_embedding(br#"{"embedding":[3.0,4.0],"inputTextTokenCount":2}"#, 2)
            .expect("parses");
        assert!((vector[0] - 0.6).abs() < 1e-6 && (vector[1] - 0.8).abs() < 1e-6);
        assert!(matches!(
            parse_embedding(br#"{"embedding":[3.0,4.0,1.0]}"#, 2),
            Err(EmbedError::Failed(_))
        ));
        assert!(matches!(
            parse_embedding(br#"{"embedding":[0.0,0.0]}"#, 2),
            Err(EmbedError::Failed(_))
        ));
        assert!(matches!(
            parse_embedding(b"not json", 2),
            Err(EmbedError::Failed(_))
        ));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let initial = Duration::from_millis(100);
        for attempt in 1..=4 {
            let full = initial * 2u32.pow(attempt - 1);
            let wait = backoff(initial, attempt);
            assert!(
                wait >= full / 2 && wait <= full,
                "{wait:?} for attempt {attempt}"
            );
        }
        assert!(backoff(initial, 40) <= MAX_BACKOFF);
    }

    #[test]
    fn only_titan_v2_takes_a_dimension() {
        assert!(is_titan_v2("amazon.titan-embed-text-v2:0"));
        assert!(!is_titan_v2("amazon.titan-embed-text-v1"));
    }
}
