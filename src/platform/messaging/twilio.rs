//! Twilio: the Messages API for sending, and the `X-Twilio-Signature`
//! scheme that signs every webhook Twilio sends us.
//!
//! Sending is `POST {api_base}/2010-04-01/Accounts/{AccountSid}/Messages.json`
//! with a form body (`From`/`To` as `whatsapp:+…`, then `Body`, or
//! `ContentSid` + `ContentVariables` for a template, and `StatusCallback`),
//! authenticated with HTTP basic auth (account SID, auth token). The call
//! goes through a tower stack: a concurrency limit, retries of what is safe
//! to retry (429 with a short `Retry-After`, 5xx, refused connections: none
//! of them created a message), and a timeout per attempt. A timeout is not
//! retried: Twilio may have accepted the message.
//!
//! Signatures: base64 of HMAC-SHA1, keyed with the auth token, over the full
//! URL Twilio called followed by every POST parameter sorted by name, each
//! as name then value. There is no timestamp; replays are stopped by the
//! receiver's unique keys (`MessageSid`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha1::Sha1;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder, ServiceExt};

use super::{Accepted, Content, Transport, TransportError, WireMessage};
use crate::platform::upstream::{Upstream, UpstreamSignals};

type HmacSha1 = Hmac<Sha1>;

/// The longest `Retry-After` waited for inside one call; longer waits go
/// back to the caller (the event dispatcher schedules them).
const INLINE_RETRY_LIMIT: Duration = Duration::from_secs(2);
/// Attempts per call, the first included.
const ATTEMPTS: usize = 3;

/// One HTTP call to Twilio.
#[derive(Debug, Clone)]
struct Call {
    url: String,
    form: Vec<(String, String)>,
}

/// What Twilio answered.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
    body: String,
}

#[derive(Clone)]
pub struct TwilioTransport {
    service: BoxCloneSyncService<Call, Reply, BoxError>,
    messages_url: String,
    from: String,
    signals: UpstreamSignals,
}

impl TwilioTransport {
    pub fn new(
        api_base: &str,
        account_sid: &str,
        auth_token: SecretString,
        from: &str,
        timeout: Duration,
        signals: UpstreamSignals,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let account = account_sid.to_string();
        let attempts = signals.clone();
        let send = tower::service_fn(move |call: Call| {
            let client = client.clone();
            let account = account.clone();
            let token = auth_token.clone();
            let attempts = attempts.clone();
            async move {
                let response = client
                    .post(&call.url)
                    .basic_auth(&account, Some(token.expose_secret()))
                    .form(&call.form)
                    .send()
                    .await?;
                let status = response.status().as_u16();
                if status == 429 {
                    // Every throttled attempt, retried inline or not.
                    attempts.throttled(Upstream::Twilio);
                }
                let retry_after = crate::platform::retry_after(response.headers());
                let body = response.text().await.unwrap_or_default();
                Ok::<_, BoxError>(Reply {
                    status,
                    retry_after,
                    body,
                })
            }
        });
        let service = ServiceBuilder::new()
            .concurrency_limit(32)
            .retry(RetryPolicy {
                attempts_left: ATTEMPTS - 1,
                backoff: Duration::from_millis(200),
            })
            .timeout(timeout)
            .service(send);
        let from = if from.starts_with("whatsapp:") {
            from.to_string()
        } else {
            format!("whatsapp:{from}")
        };
        Ok(TwilioTransport {
            service: BoxCloneSyncService::new(service),
            messages_url: format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                api_base.trim_end_matches('/'),
                account_sid
            ),
            from,
            signals,
        })
    }

    fn form(&self, message: &WireMessage) -> Vec<(String, String)> {
        let mut form = vec![
            ("From".to_string(), self.from.clone()),
            ("To".to_string(), format!("whatsapp:{}", message.to)),
        ];
        match &message.content {
            Content::Text(body) => form.push(("Body".into(), body.clone())),
            Content::Template {
                content_sid,
                variables,
            } => {
                form.push(("ContentSid".into(), content_sid.clone()));
                let variables = serde_json::to_string(variables).unwrap_or_else(|_| "{}".into());
                form.push(("ContentVariables".into(), variables));
            }
        }
        if let Some(url) = &message.status_callback {
            form.push(("StatusCallback".into(), url.clone()));
        }
        form
    }
}

#[async_trait::async_trait]
impl Transport for TwilioTransport {
    fn name(&self) -> &'static str {
        "twilio"
    }

    fn needs_approved_templates(&self) -> bool {
        true
    }

    async fn send(&self, message: &WireMessage) -> Result<Accepted, TransportError> {
        let call = Call {
            url: self.messages_url.clone(),
            form: self.form(message),
        };
        let outcome = match self.service.clone().oneshot(call).await {
            Ok(reply) => interpret(reply),
            Err(error) => Err(classify_error(error)),
        };
        match &outcome {
            Ok(_) => self.signals.succeeded(Upstream::Twilio),
            // Twilio refusing one message (a bad number, no template) says
            // nothing about whether Twilio works; refusing our credentials
            // (error 20003) does.
            Err(TransportError::Rejected { code, .. }) if code.as_deref() != Some("20003") => {
                self.signals.succeeded(Upstream::Twilio)
            }
            Err(error) => self.signals.failed(Upstream::Twilio, error.to_string()),
        }
        outcome
    }
}

fn classify_error(error: BoxError) -> TransportError {
    if error.is::<tower::timeout::error::Elapsed>() {
        return TransportError::Unconfirmed("no answer from Twilio in time".into());
    }
    match error.downcast_ref::<reqwest::Error>() {
        Some(e) if e.is_connect() => TransportError::Unavailable(format!("cannot connect: {e}")),
        Some(e) if e.is_timeout() => {
            TransportError::Unconfirmed("no answer from Twilio in time".into())
        }
        _ => TransportError::Unconfirmed(format!("request failed: {error}")),
    }
}

#[derive(serde::Deserialize)]
struct Created {
    sid: String,
    status: String,
}

#[derive(serde::Deserialize, Default)]
struct Problem {
    code: Option<i64>,
    message: Option<String>,
}

fn interpret(reply: Reply) -> Result<Accepted, TransportError> {
    match reply.status {
        200..=299 => {
            let created: Created = serde_json::from_str(&reply.body).map_err(|e| {
                TransportError::Unconfirmed(format!("unreadable answer from Twilio: {e}"))
            })?;
            Ok(Accepted {
                provider_sid: created.sid,
                status: created.status,
            })
        }
        429 => Err(TransportError::Throttled {
            retry_after: reply.retry_after,
        }),
        500..=599 => Err(TransportError::Unavailable(format!(
            "Twilio answered {}",
            reply.status
        ))),
        status => {
            let problem: Problem = serde_json::from_str(&reply.body).unwrap_or_default();
            Err(TransportError::Rejected {
                code: problem.code.map(|c| c.to_string()),
                message: problem
                    .message
                    .unwrap_or_else(|| format!("Twilio answered {status}")),
            })
        }
    }
}

/// Retries what cannot have created a message, a bounded number of times.
#[derive(Clone)]
struct RetryPolicy {
    attempts_left: usize,
    backoff: Duration,
}

impl tower::retry::Policy<Call, Reply, BoxError> for RetryPolicy {
    type Future = Pin<Box<dyn Future<Output = ()> + Send>>;

    fn retry(
        &mut self,
        _call: &mut Call,
        result: &mut Result<Reply, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempts_left == 0 {
            return None;
        }
        let wait = match result {
            Ok(reply) if reply.status == 429 => match reply.retry_after {
                Some(wait) if wait <= INLINE_RETRY_LIMIT => wait,
                Some(_) => return None,
                None => self.backoff,
            },
            Ok(reply) if reply.status >= 500 => self.backoff,
            Ok(_) => return None,
            Err(error) => match error.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_connect() => self.backoff,
                _ => return None,
            },
        };
        self.attempts_left -= 1;
        self.backoff *= 2;
        Some(Box::pin(tokio::time::sleep(wait)))
    }

    fn clone_request(&mut self, call: &Call) -> Option<Call> {
        Some(call.clone())
    }
}

/// The signature Twilio sends for a request to `url` with these POST
/// parameters.
pub fn sign(auth_token: &SecretString, url: &str, params: &[(String, String)]) -> String {
    BASE64.encode(mac(auth_token, url, params).finalize().into_bytes())
}

fn mac(auth_token: &SecretString, url: &str, params: &[(String, String)]) -> HmacSha1 {
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut mac = HmacSha1::new_from_slice(auth_token.expose_secret().as_bytes())
        .expect("HMAC accepts keys of any length");
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    mac
}

/// True when `signature` matches under any of the tokens (several are
/// accepted while the auth token rotates). Constant-time comparison.
pub fn verify(
    tokens: &[SecretString],
    url: &str,
    params: &[(String, String)],
    signature: &str,
) -> bool {
    let Ok(expected) = BASE64.decode(signature.trim()) else {
        return false;
    };
    tokens
        .iter()
        .filter(|t| !t.expose_secret().is_empty())
        .any(|token| mac(token, url, params).verify_slice(&expected).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn signature_matches_twilios_documented_example() {
        // From Twilio's "Webhooks security" guide.
        let token = SecretString::from("12345");
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = params(&[
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+12349013030"),
            ("Digits", "1234"),
            ("From", "+12349013030"),
            ("To", "+18005551212"),
        ]);
        assert_eq!(sign(&token, url, &params), "0/KCTR6DLpKmkAf8muzZqo1nDgQ=");
        assert!(verify(
            &[token],
            url,
            &params,
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        ));
    }

    #[test]
    fn verification_refuses_changes_and_accepts_a_rotated_token() {
        let old = SecretString::from("old-token");
        let new = SecretString::from("new-token");
        let url = "https://shop.example/webhooks/twilio/status";
        let p = params(&[("MessageSid", "SM1"), ("MessageStatus", "delivered")]);
        let signature = sign(&old, url, &p);
        assert!(verify(&[new.clone(), old.clone()], url, &p, &signature));
        assert!(!verify(std::slice::from_ref(&new), url, &p, &signature));
        let tampered = params(&[("MessageSid", "SM1"), ("MessageStatus", "read")]);
        assert!(!verify(
            std::slice::from_ref(&old),
            url,
            &tampered,
            &signature
        ));
        assert!(!verify(
            std::slice::from_ref(&old),
            "https://other.example/webhooks/twilio/status",
            &p,
            &signature
        ));
        assert!(!verify(&[old], url, &p, "not base64 at all"));
        assert!(!verify(&[SecretString::from("")], url, &p, &signature));
    }

    #[test]
    fn replies_are_classified_by_what_they_mean_for_a_retry() {
        let ok = interpret(Reply {
            status: 201,
            retry_after: None,
            body: r#"{"sid":"SM123","status":"queued"}"#.into(),
        });
        assert_eq!(
            ok,
            Ok(Accepted {
                provider_sid: "SM123".into(),
                status: "queued".into()
            })
        );
        let throttled = interpret(Reply {
            status: 429,
            retry_after: Some(Duration::from_secs(30)),
            body: String::new(),
        });
        assert_eq!(
            throttled,
            Err(TransportError::Throttled {
                retry_after: Some(Duration::from_secs(30))
            })
        );
        let rejected = interpret(Reply {
            status: 400,
            retry_after: None,
            body: r#"{"code":63016,"message":"Failed to send freeform message because you are outside the allowed window.","status":400}"#.into(),
        });
        assert!(
            matches!(rejected, Err(TransportError::Rejected { code: Some(ref c), .. }) if c == "63016")
        );
        assert!(matches!(
            interpret(Reply {
                status: 503,
                retry_after: None,
                body: String::new()
            }),
            Err(TransportError::Unavailable(_))
        ));
    }
}
