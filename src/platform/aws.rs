//! What the AWS adapters share: the way to reach AWS ([`ClientConfig`]:
//! region, optional endpoint, optional static credentials) turned into an
//! SDK configuration, and, for the two Bedrock runtime adapters (Titan
//! embeddings in `embed/bedrock.rs`, Claude in `llm/bedrock.rs`), their
//! client and the sorting of their failed calls.
//!
//! Retry policy of the Bedrock adapters: the SDK's own retries are switched
//! off ([`bedrock_client`]), so each adapter's retry loop is the one place
//! that retries and the policy is visible and testable. [`classify`] sorts a
//! failed call into what to do about it:
//! - throttled (`ThrottlingException`, `ServiceQuotaExceededException`,
//!   `TooManyRequestsException`, any 429): Bedrock asks us to slow down;
//! - transient (`ServiceUnavailableException`, `ModelNotReadyException`,
//!   `InternalServerException`, `ModelTimeoutException`, any 5xx, attempt
//!   timeouts, dropped connections): worth another attempt;
//! - permanent (validation, access, unknown model, a request the SDK could
//!   not build): the same request would fail again, so it fails at once.
//!
//! The adapters differ in one point, on purpose: which failures to get a
//! request through count as transient ([`DispatchRetry`]).

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_sdk_bedrockruntime::config::retry::RetryConfig;
use aws_sdk_bedrockruntime::config::timeout::TimeoutConfig;
use aws_sdk_bedrockruntime::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;

/// How to reach an AWS service.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    pub region: String,
    /// An emulator, a test fake or a VPC endpoint; `None` (or blank) for AWS
    /// itself.
    pub endpoint_url: Option<String>,
    /// (access key id, secret). With them nothing outside this config is
    /// read; without them the default AWS chain is used (environment,
    /// profile, web identity, container, instance metadata), lazily:
    /// credentials are looked up on the first call, not here.
    pub static_credentials: Option<(String, String)>,
}

/// The shared SDK configuration for `config`, from which any service's
/// client is built (`aws_sdk_sqs::Client::new(&sdk_config)`).
pub async fn sdk_config(config: &ClientConfig) -> SdkConfig {
    let region = Region::new(config.region.clone());
    let endpoint_url = config
        .endpoint_url
        .as_deref()
        .map(str::trim)
        .filter(|u| !u.is_empty());
    match &config.static_credentials {
        Some((access_key, secret)) => {
            let credentials = Credentials::new(access_key, secret, None, None, "kedai-static");
            let mut builder = SdkConfig::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region)
                .credentials_provider(SharedCredentialsProvider::new(credentials));
            if let Some(url) = endpoint_url {
                builder = builder.endpoint_url(url);
            }
            builder.build()
        }
        None => {
            let mut loader = aws_config::defaults(BehaviorVersion::latest()).region(region);
            if let Some(url) = endpoint_url {
                loader = loader.endpoint_url(url);
            }
            loader.load().await
        }
    }
}

/// A Bedrock runtime client without the SDK's retries (the adapters retry
/// themselves), whose calls give up after `attempt_timeout` each, 5 seconds
/// at most of it spent connecting.
pub async fn bedrock_client(
    config: &ClientConfig,
    attempt_timeout: Duration,
) -> aws_sdk_bedrockruntime::Client {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(attempt_timeout))
        .operation_attempt_timeout(attempt_timeout)
        .build();
    let bedrock_config = aws_sdk_bedrockruntime::config::Builder::from(&sdk_config(config).await)
        .retry_config(RetryConfig::disabled())
        .timeout_config(timeouts)
        .build();
    aws_sdk_bedrockruntime::Client::from_conf(bedrock_config)
}

/// What to do about a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Bedrock asks us to slow down: retry later.
    Throttled,
    /// Bedrock or the network had a bad moment: retry.
    Transient,
    /// Retrying would get the same answer.
    Permanent,
}

/// A failed call, sorted, with a message fit for logs and errors.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// `HTTP <status>: <code>: <message>` when Bedrock answered, else the
    /// SDK error with its causes.
    pub message: String,
}

/// Which failures to get a request through (`SdkError::DispatchFailure`:
/// the connector's errors) count as transient. An attempt timeout is
/// transient either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchRetry {
    /// Every one (refused or dropped connections, TLS, an error the
    /// connector cannot name) except one the SDK blames on its own
    /// configuration. The chat model's choice.
    AllButMisconfiguration,
    /// I/O errors and connector timeouts only; anything else is permanent.
    /// The embedder's choice.
    IoAndTimeouts,
}

/// Sorts an error code and HTTP status into what to do about them.
pub fn classify_code(code: Option<&str>, status: Option<u16>) -> FailureKind {
    match code {
        Some(
            "ThrottlingException" | "ServiceQuotaExceededException" | "TooManyRequestsException",
        ) => FailureKind::Throttled,
        Some(
            "ServiceUnavailableException"
            | "ModelNotReadyException"
            | "InternalServerException"
            | "ModelTimeoutException",
        ) => FailureKind::Transient,
        _ => match status {
            Some(429) => FailureKind::Throttled,
            Some(s) if s >= 500 => FailureKind::Transient,
            _ => FailureKind::Permanent,
        },
    }
}

/// Sorts an SDK error: Bedrock's answers by [`classify_code`], failures to
/// get the request through as `dispatch` says, timeouts as transient, and
/// anything else (a request the SDK could not build) as permanent.
pub fn classify<E>(error: &SdkError<E, HttpResponse>, dispatch: DispatchRetry) -> Failure
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let status = error.raw_response().map(|r| r.status().as_u16());
    let kind = match error {
        SdkError::TimeoutError(_) => FailureKind::Transient,
        SdkError::DispatchFailure(failure) => {
            let retried = match dispatch {
                DispatchRetry::AllButMisconfiguration => !failure.is_user(),
                DispatchRetry::IoAndTimeouts => failure.is_io() || failure.is_timeout(),
            };
            if retried {
                FailureKind::Transient
            } else {
                FailureKind::Permanent
            }
        }
        SdkError::ServiceError(_) | SdkError::ResponseError(_) => {
            classify_code(error.code(), status)
        }
        _ => FailureKind::Permanent,
    };
    let message = match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => DisplayErrorContext(error).to_string(),
    };
    let message = match status {
        Some(status) => format!("HTTP {status}: {message}"),
        None => message,
    };
    Failure { kind, message }
}

#[cfg(test)]
mod tests {
    use aws_sdk_bedrockruntime::error::ErrorMetadata;
    use aws_sdk_bedrockruntime::operation::converse::ConverseError;
    use aws_sdk_bedrockruntime::types::error::{ThrottlingException, ValidationException};
    use aws_smithy_runtime_api::client::result::ConnectorError;
    use aws_smithy_runtime_api::http::StatusCode;

    use super::*;

    fn service_error(status: u16, error: ConverseError) -> SdkError<ConverseError, HttpResponse> {
        let status = StatusCode::try_from(status).expect("status");
        SdkError::service_error(error, HttpResponse::new(status, "{}".into()))
    }

    #[test]
    fn error_codes_are_sorted_into_throttling_transient_and_permanent() {
        use FailureKind::*;
        let cases = [
            (Some("ThrottlingException"), Some(429), Throttled),
            (Some("ServiceQuotaExceededException"), Some(400), Throttled),
            (None, Some(429), Throttled),
            (Some("ModelNotReadyException"), Some(429), Transient),
            (Some("ModelTimeoutException"), Some(408), Transient),
            (Some("InternalServerException"), Some(500), Transient),
            (Some("ServiceUnavailableException"), Some(503), Transient),
            (None, Some(502), Transient),
            (Some("ValidationException"), Some(400), Permanent),
            (Some("AccessDeniedException"), Some(403), Permanent),
            (Some("ResourceNotFoundException"), Some(404), Permanent),
            (None, Some(404), Permanent),
        ];
        for (code, status, kind) in cases {
            assert_eq!(classify_code(code, status), kind, "{code:?} {status:?}");
        }
    }

    #[test]
    fn sdk_errors_are_classified_with_their_code_and_status() {
        for dispatch in [
            DispatchRetry::AllButMisconfiguration,
            DispatchRetry::IoAndTimeouts,
        ] {
            let throttled = classify(
                &service_error(
                    429,
                    ConverseError::ThrottlingException(
                        ThrottlingException::builder()
                            .message("Too many requests")
                            .meta(
                                ErrorMetadata::builder()
                                    .code("ThrottlingException")
                                    .message("Too many requests")
                                    .build(),
                            )
                            .build(),
                    ),
                ),
                dispatch,
            );
            assert_eq!(throttled.kind, FailureKind::Throttled);
            assert_eq!(
                throttled.message,
                "HTTP 429: ThrottlingException: Too many requests"
            );

            let refused = classify(
                &service_error(
                    400,
                    ConverseError::ValidationException(
                        ValidationException::builder()
                            .message("bad")
                            .meta(ErrorMetadata::builder().code("ValidationException").build())
                            .build(),
                    ),
                ),
                dispatch,
            );
            assert_eq!(refused.kind, FailureKind::Permanent);

            let timed_out: SdkError<ConverseError, HttpResponse> =
                SdkError::timeout_error("attempt timeout");
            assert_eq!(classify(&timed_out, dispatch).kind, FailureKind::Transient);

            let unbuildable: SdkError<ConverseError, HttpResponse> =
                SdkError::construction_failure("no model id");
            assert_eq!(
                classify(&unbuildable, dispatch).kind,
                FailureKind::Permanent
            );
        }
    }

    #[test]
    fn failures_to_get_through_are_retried_as_the_adapter_chose() {
        let dispatch_failure = |error: ConnectorError| -> SdkError<ConverseError, HttpResponse> {
            SdkError::dispatch_failure(error)
        };
        let kinds = |error: fn() -> ConnectorError| {
            (
                classify(
                    &dispatch_failure(error()),
                    DispatchRetry::AllButMisconfiguration,
                )
                .kind,
                classify(&dispatch_failure(error()), DispatchRetry::IoAndTimeouts).kind,
            )
        };
        use FailureKind::*;
        assert_eq!(
            kinds(|| ConnectorError::io("connection refused".into())),
            (Transient, Transient)
        );
        assert_eq!(
            kinds(|| ConnectorError::timeout("connect timeout".into())),
            (Transient, Transient)
        );
        assert_eq!(
            kinds(|| ConnectorError::other("unnamed".into(), None)),
            (Transient, Permanent)
        );
        assert_eq!(
            kinds(|| ConnectorError::user("bad endpoint".into())),
            (Permanent, Permanent)
        );
    }
}
