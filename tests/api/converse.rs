//! Claude on Bedrock (`Converse`) against a wiremock fake that checks what
//! goes on the wire (path, SigV4 scope, JSON body) and answers in Bedrock's
//! own formats: answers, throttling, outages and validation errors. No
//! database, no network beyond loopback.

use std::time::{Duration, Instant};

use kedai::platform::llm::bedrock::{BedrockLlm, BedrockLlmConfig};
use kedai::platform::llm::{Llm, LlmError, LlmRequest, Role, Turn};
use serde_json::{Value, json};
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const REGION: &str = "ap-southeast-1";
/// An inference-profile id: its `:` shows how the SDK encodes the path.
const MODEL_ID: &str = "apac.anthropic.claude-sonnet-4-20250514-v1:0";
/// The path the SDK sends for `MODEL_ID` (`:` percent-encoded).
const CONVERSE_PATH: &str = "/model/apac.anthropic.claude-sonnet-4-20250514-v1%3A0/converse";
const ANY_CONVERSE: &str = r"^/model/[^/]+/converse$";

fn config(server: &MockServer, max_attempts: u32) -> BedrockLlmConfig {
    BedrockLlmConfig {
        model_id: MODEL_ID.into(),
        region: REGION.into(),
        endpoint_url: Some(server.uri()),
        max_attempts,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        attempt_timeout: Duration::from_secs(5),
        static_credentials: Some(("test".into(), "test-secret".into())),
    }
}

async fn llm(server: &MockServer, max_attempts: u32) -> BedrockLlm {
    BedrockLlm::new(config(server, max_attempts))
        .await
        .expect("the model client builds")
}

fn request() -> LlmRequest {
    LlmRequest {
        system: "You are Kedai's shop assistant. Answer from the sources.".into(),
        messages: vec![
            Turn {
                role: Role::User,
                text: "Do you ship to Penang?".into(),
            },
            Turn {
                role: Role::Assistant,
                text: "Yes, in 2-3 working days.".into(),
            },
            Turn {
                role: Role::User,
                text: "How much is shipping?".into(),
            },
        ],
        max_tokens: 700,
        temperature: 0.2,
    }
}

/// A Converse answer in Bedrock's wire format.
fn answer(texts: &[&str], stop_reason: &str, input_tokens: u32, output_tokens: u32) -> Value {
    let content: Vec<Value> = texts.iter().map(|t| json!({ "text": t })).collect();
    json!({
        "output": { "message": { "role": "assistant", "content": content } },
        "stopReason": stop_reason,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens
        },
        "metrics": { "latencyMs": 123 }
    })
}

fn success(texts: &[&str]) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_raw(
        answer(texts, "end_turn", 812, 41).to_string(),
        "application/json",
    )
}

/// A Bedrock error in the restJson1 format the SDK reads.
fn bedrock_error(status: u16, error_type: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("x-amzn-ErrorType", error_type)
        .set_body_raw(
            json!({ "message": message }).to_string(),
            "application/json",
        )
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.expect("recorded")
}

fn assert_signed_for_bedrock(request: &Request) {
    let authorization = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .expect("an Authorization header");
    assert!(
        authorization.starts_with("AWS4-HMAC-SHA256 Credential=test/"),
        "{authorization}"
    );
    assert!(
        authorization.contains(&format!("/{REGION}/bedrock/aws4_request")),
        "{authorization}"
    );
    assert!(authorization.contains("SignedHeaders="), "{authorization}");
    assert!(authorization.contains("Signature="), "{authorization}");
    assert!(!authorization.contains("test-secret"), "{authorization}");
    assert!(request.headers.get("x-amz-date").is_some(), "no x-amz-date");
}

/// Every request received is the same well-formed Converse call.
async fn assert_all_are_the_converse_call(server: &MockServer, expected: usize) {
    let received = requests(server).await;
    assert_eq!(received.len(), expected, "requests received");
    for request in &received {
        assert_eq!(request.method.as_str(), "POST");
        assert_eq!(request.url.path(), CONVERSE_PATH);
        assert_signed_for_bedrock(request);
    }
}

#[tokio::test]
async fn converse_is_signed_and_carries_the_system_the_turns_and_the_limits() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(success(&[
            "Shipping to Penang is RM8, ",
            "free above RM100.",
        ]))
        .expect(1)
        .mount(&server)
        .await;
    let model = llm(&server, 4).await;
    assert_eq!(model.model(), MODEL_ID);

    let reply = model.complete(&request()).await.expect("answers");

    assert_eq!(reply.text, "Shipping to Penang is RM8, free above RM100.");
    assert_eq!(reply.model, MODEL_ID);
    assert_eq!(reply.input_tokens, 812);
    assert_eq!(reply.output_tokens, 41);
    assert_eq!(reply.attempts, 1);

    assert_all_are_the_converse_call(&server, 1).await;
    let request = &requests(&server).await[0];
    let content_type = request.headers["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = serde_json::from_slice(&request.body).expect("a JSON body");
    assert_eq!(
        body["system"],
        json!([{ "text": "You are Kedai's shop assistant. Answer from the sources." }]),
        "{body}"
    );
    assert_eq!(
        body["messages"],
        json!([
            { "role": "user", "content": [{ "text": "Do you ship to Penang?" }] },
            { "role": "assistant", "content": [{ "text": "Yes, in 2-3 working days." }] },
            { "role": "user", "content": [{ "text": "How much is shipping?" }] },
        ]),
        "{body}"
    );
    assert_eq!(body["inferenceConfig"]["maxTokens"], 700, "{body}");
    let temperature = body["inferenceConfig"]["temperature"]
        .as_f64()
        .expect("a temperature");
    assert!((temperature - 0.2).abs() < 1e-6, "{body}");
    // The model id travels in the path only.
    assert!(body.get("modelId").is_none(), "{body}");
}

#[tokio::test]
async fn an_answer_cut_at_max_tokens_is_still_an_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            answer(&["Shipping to Penang is"], "max_tokens", 812, 700).to_string(),
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let reply = llm(&server, 4)
        .await
        .complete(&request())
        .await
        .expect("answers");
    assert_eq!(reply.text, "Shipping to Penang is");
    assert_eq!(reply.output_tokens, 700);
    assert_all_are_the_converse_call(&server, 1).await;
}

#[tokio::test]
async fn an_answer_without_text_is_rejected_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            answer(&[], "content_filtered", 812, 0).to_string(),
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    match llm(&server, 4).await.complete(&request()).await {
        Err(LlmError::Rejected(message)) => {
            assert!(message.contains("empty answer"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_all_are_the_converse_call(&server, 1).await;
}

#[tokio::test]
async fn throttling_is_retried_until_it_passes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests",
        ))
        .up_to_n_times(2)
        .with_priority(1)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(success(&["RM8."]))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;

    let reply = llm(&server, 4)
        .await
        .complete(&request())
        .await
        .expect("the third attempt answers");

    assert_eq!(reply.text, "RM8.");
    assert_eq!(reply.attempts, 3);
    // Every attempt is the same request, signed afresh.
    assert_all_are_the_converse_call(&server, 3).await;
    let bodies: Vec<_> = requests(&server)
        .await
        .into_iter()
        .map(|r| r.body)
        .collect();
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
}

#[tokio::test]
async fn throttling_on_every_attempt_gives_up_after_max_attempts() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests",
        ))
        .expect(3)
        .mount(&server)
        .await;
    let started = Instant::now();

    let outcome = llm(&server, 3).await.complete(&request()).await;

    assert_eq!(outcome, Err(LlmError::Throttled { attempts: 3 }));
    assert!(outcome.unwrap_err().is_transient());
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_all_are_the_converse_call(&server, 3).await;
}

#[tokio::test]
async fn a_validation_error_is_rejected_after_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            400,
            "ValidationException",
            "messages: roles must alternate between user and assistant",
        ))
        .expect(1)
        .mount(&server)
        .await;

    match llm(&server, 4).await.complete(&request()).await {
        Err(error @ LlmError::Rejected(_)) => {
            assert!(!error.is_transient());
            let message = error.to_string();
            assert!(message.contains("ValidationException"), "{message}");
            assert!(message.contains("roles must alternate"), "{message}");
            assert!(!message.contains("test-secret"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_all_are_the_converse_call(&server, 1).await;
}

#[tokio::test]
async fn an_unknown_model_is_rejected_after_one_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            404,
            "ResourceNotFoundException",
            "Model not found",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let outcome = llm(&server, 4).await.complete(&request()).await;
    assert!(matches!(outcome, Err(LlmError::Rejected(_))), "{outcome:?}");
    assert_all_are_the_converse_call(&server, 1).await;
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            500,
            "InternalServerException",
            "internal error",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            503,
            "ServiceUnavailableException",
            "try later",
        ))
        .up_to_n_times(1)
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(success(&["RM8."]))
        .with_priority(3)
        .expect(1)
        .mount(&server)
        .await;

    let reply = llm(&server, 4)
        .await
        .complete(&request())
        .await
        .expect("the third attempt answers");

    assert_eq!(reply.text, "RM8.");
    assert_eq!(reply.attempts, 3);
    assert_all_are_the_converse_call(&server, 3).await;
}

#[tokio::test]
async fn an_outage_on_every_attempt_is_unavailable_with_the_last_error() {
    let server = MockServer::start().await;
    // Throttled first, then an outage: the last failure decides the error.
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            429,
            "ThrottlingException",
            "Too many requests",
        ))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(bedrock_error(
            503,
            "ServiceUnavailableException",
            "try later",
        ))
        .with_priority(2)
        .expect(2)
        .mount(&server)
        .await;

    match llm(&server, 3).await.complete(&request()).await {
        Err(LlmError::Unavailable { attempts, message }) => {
            assert_eq!(attempts, 3);
            assert!(message.contains("ServiceUnavailableException"), "{message}");
            assert!(message.contains("503"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_all_are_the_converse_call(&server, 3).await;
}

#[tokio::test]
async fn a_call_slower_than_the_attempt_timeout_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(success(&["too late"]).set_delay(Duration::from_secs(3)))
        .up_to_n_times(1)
        .with_priority(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(ANY_CONVERSE))
        .respond_with(success(&["RM8."]))
        .with_priority(2)
        .expect(1)
        .mount(&server)
        .await;
    let model = BedrockLlm::new(BedrockLlmConfig {
        attempt_timeout: Duration::from_millis(300),
        ..config(&server, 2)
    })
    .await
    .expect("the model client builds");

    let reply = model.complete(&request()).await.expect("the retry answers");

    assert_eq!(reply.text, "RM8.");
    assert_eq!(reply.attempts, 2);
    assert_all_are_the_converse_call(&server, 2).await;
}

#[tokio::test]
async fn nothing_is_sent_for_an_empty_conversation_or_a_bad_config() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(success(&["never"]))
        .expect(0)
        .mount(&server)
        .await;
    let empty = LlmRequest {
        messages: Vec::new(),
        ..request()
    };
    let outcome = llm(&server, 4).await.complete(&empty).await;
    assert!(matches!(outcome, Err(LlmError::Rejected(_))), "{outcome:?}");

    for bad in [
        BedrockLlmConfig {
            model_id: " ".into(),
            ..config(&server, 4)
        },
        config(&server, 0),
    ] {
        assert!(BedrockLlm::new(bad).await.is_err());
    }
    assert!(requests(&server).await.is_empty());
}
