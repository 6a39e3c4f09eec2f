//! The chat queue on Amazon SQS (`queue.kind = "sqs"`), a standard queue.
//!
//! SQS does natively what the database queue imitates: long polling
//! (`WaitTimeSeconds`, at most 20 s), batches of at most 10, per-receive
//! visibility timeouts, and a redrive policy that moves a message received
//! `maxReceiveCount` times to a dead-letter queue. The redrive policy lives
//! on the queue in AWS, not in our config: `queue.max_receives` should say
//! the same number, and [`SqsQueue::create_with_dead_letter_queue`] sets
//! both up (tests, and a fresh environment).
//!
//! What SQS does differently from the database queue, and callers must not
//! rely on:
//! - A stale receipt handle is not always refused: AWS answers a delete
//!   with an old handle with success and keeps the message; moto (the test
//!   emulator) deletes the message. Only an invalid handle is refused.
//! - Durations are whole seconds (rounded up here).
//! - The age of the oldest message is a CloudWatch metric
//!   (`ApproximateAgeOfOldestMessage`), not a queue attribute, so
//!   [`QueueStats::oldest_age`] is `None`.
//! - The message group travels as the message attribute `group` (a
//!   standard queue does not order by group; a FIFO queue would need
//!   `MessageGroupId` and deduplication ids, which this adapter does not
//!   send).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use time::OffsetDateTime;

use super::{MAX_BATCH, Queue, QueueError, QueueMessage, QueueStats, batch_size};
use crate::config::Settings;

/// The message attribute that carries the ordering group.
const GROUP_ATTRIBUTE: &str = "group";

/// Longest long poll SQS accepts.
const MAX_WAIT_SECONDS: i32 = 20;

/// Longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY_SECONDS: i32 = 43_200;

/// How to reach SQS: region, endpoint (an emulator or a VPC endpoint) and
/// optional static credentials, as for any AWS client.
pub type SqsClientConfig = crate::platform::aws::ClientConfig;

/// Builds an SQS client.
pub async fn client(config: &SqsClientConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&crate::platform::aws::sdk_config(config).await)
}

#[derive(Debug, Clone)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    /// Read for the dead-letter count only; SQS moves the messages itself.
    dead_letter_url: Option<String>,
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: impl Into<String>,
        dead_letter_url: Option<String>,
    ) -> Self {
        SqsQueue {
            client,
            queue_url: queue_url.into(),
            dead_letter_url: dead_letter_url.filter(|u| !u.trim().is_empty()),
        }
    }

    /// The queue `[queue]` and `[aws]` describe, with the default AWS
    /// credential chain (looked up on the first call, not here).
    pub async fn from_settings(settings: &Settings) -> Self {
        let client = client(&SqsClientConfig {
            region: settings.aws.region.clone(),
            endpoint_url: Some(settings.aws.endpoint_url.clone()),
            static_credentials: None,
        })
        .await;
        SqsQueue::new(
            client,
            settings.queue.sqs_queue_url.clone(),
            Some(settings.queue.sqs_dlq_url.clone()),
        )
    }

    pub fn queue_url(&self) -> &str {
        &self.queue_url
    }

    pub fn dead_letter_url(&self) -> Option<&str> {
        self.dead_letter_url.as_deref()
    }

    /// Creates (or finds) the queue `name` and its dead-letter queue
    /// `<name>-dlq`, with a redrive policy that moves a message there once
    /// it has been received `max_receives` times.
    pub async fn create_with_dead_letter_queue(
        client: aws_sdk_sqs::Client,
        name: &str,
        max_receives: u32,
    ) -> anyhow::Result<SqsQueue> {
        let dead_letter_url = client
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .context("could not create the dead-letter queue")?
            .queue_url()
            .context("SQS returned no dead-letter queue URL")?
            .to_string();
        let attributes = client
            .get_queue_attributes()
            .queue_url(&dead_letter_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .context("could not read the dead-letter queue's ARN")?;
        let dead_letter_arn = attributes
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn))
            .context("SQS returned no dead-letter queue ARN")?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dead_letter_arn,
            "maxReceiveCount": max_receives.to_string(),
        })
        .to_string();
        let queue_url = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", DisplayErrorContext(e)))
            .context("could not create the queue")?
            .queue_url()
            .context("SQS returned no queue URL")?
            .to_string();
        Ok(SqsQueue::new(client, queue_url, Some(dead_letter_url)))
    }

    /// This queue's dead-letter queue, as a queue of its own (to inspect or
    /// re-drive dead letters). `None` without `queue.sqs_dlq_url`.
    pub fn dead_letters(&self) -> Option<SqsQueue> {
        self.dead_letter_url
            .as_ref()
            .map(|url| SqsQueue::new(self.client.clone(), url.clone(), None))
    }

    async fn approximate_counts(&self, url: &str) -> Result<(u64, u64), QueueError> {
        let output = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(sqs_error)?;
        let number = |name: QueueAttributeName| {
            output
                .attributes()
                .and_then(|a| a.get(&name))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            number(QueueAttributeName::ApproximateNumberOfMessages),
            number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        ))
    }
}

/// Whole seconds for SQS, rounded up so a short visibility never becomes 0.
fn seconds(duration: Duration, max: i32) -> i32 {
    let mut secs = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        secs += 1;
    }
    i32::try_from(secs).unwrap_or(max).min(max)
}

fn group_attribute(group: &str) -> Result<MessageAttributeValue, QueueError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(group)
        .build()
        .map_err(|e| QueueError::Invalid(e.to_string()))
}

/// Maps an SDK error: a refused receipt handle is a stale receipt, anything
/// else carries the SDK's whole error chain.
fn sqs_error<E, R>(error: aws_sdk_sqs::error::SdkError<E, R>) -> QueueError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if is_stale_receipt_code(error.code()) {
        return QueueError::StaleReceipt;
    }
    QueueError::Sqs(DisplayErrorContext(error).to_string())
}

fn is_stale_receipt_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ReceiptHandleIsInvalid"
                | "InvalidReceiptHandle"
                | "MessageNotInflight"
                | "AWS.SimpleQueueService.MessageNotInflight"
        )
    )
}

fn to_message(message: &aws_sdk_sqs::types::Message) -> Option<QueueMessage> {
    let attributes = message.attributes();
    let system = |name: MessageSystemAttributeName| attributes.and_then(|a| a.get(&name));
    let sent_at = system(MessageSystemAttributeName::SentTimestamp)
        .and_then(|ms| ms.parse::<i128>().ok())
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000).ok())
        .unwrap_or_else(OffsetDateTime::now_utc);
    let receive_count = system(MessageSystemAttributeName::ApproximateReceiveCount)
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    let group = message
        .message_attributes()
        .and_then(|a: &HashMap<String, MessageAttributeValue>| a.get(GROUP_ATTRIBUTE))
        .and_then(|v| v.string_value())
        .map(str::to_string);
    Some(QueueMessage {
        id: message.message_id()?.to_string(),
        body: message.body().unwrap_or_default().to_string(),
        receipt: message.receipt_handle()?.to_string(),
        receive_count,
        sent_at,
        group,
    })
}

#[async_trait]
impl Queue for SqsQueue {
    fn backend(&self) -> &'static str {
        "sqs"
    }

    async fn send(&self, body: &str, group: Option<&str>) -> Result<String, QueueError> {
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body);
        if let Some(group) = group {
            request = request.message_attributes(GROUP_ATTRIBUTE, group_attribute(group)?);
        }
        let output = request.send().await.map_err(sqs_error)?;
        output
            .message_id()
            .map(str::to_string)
            .ok_or_else(|| QueueError::Sqs("SendMessage returned no message id".into()))
    }

    async fn send_batch(
        &self,
        messages: &[(String, Option<String>)],
    ) -> Result<Vec<String>, QueueError> {
        let mut ids = Vec::with_capacity(messages.len());
        for chunk in messages.chunks(MAX_BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (index, (body, group)) in chunk.iter().enumerate() {
                let mut entry = SendMessageBatchRequestEntry::builder()
                    .id(index.to_string())
                    .message_body(body);
                if let Some(group) = group {
                    entry = entry.message_attributes(GROUP_ATTRIBUTE, group_attribute(group)?);
                }
                entries.push(
                    entry
                        .build()
                        .map_err(|e| QueueError::Invalid(e.to_string()))?,
                );
            }
            let output = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            if let Some(failed) = output.failed().first() {
                return Err(QueueError::Sqs(format!(
                    "SendMessageBatch refused {} of {} messages ({}: {})",
                    output.failed().len(),
                    chunk.len(),
                    failed.code(),
                    failed.message().unwrap_or_default()
                )));
            }
            let by_entry: HashMap<&str, &str> = output
                .successful()
                .iter()
                .map(|s| (s.id(), s.message_id()))
                .collect();
            for index in 0..chunk.len() {
                let id = by_entry
                    .get(index.to_string().as_str())
                    .ok_or_else(|| QueueError::Sqs("SendMessageBatch left out a message".into()))?;
                ids.push((*id).to_string());
            }
        }
        Ok(ids)
    }

    async fn receive(
        &self,
        max: usize,
        visibility: Duration,
        wait: Duration,
    ) -> Result<Vec<QueueMessage>, QueueError> {
        let max = batch_size(max)?;
        let output = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(max as i32)
            .visibility_timeout(seconds(visibility, MAX_VISIBILITY_SECONDS))
            .wait_time_seconds(seconds(wait, MAX_WAIT_SECONDS))
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_attribute_names(GROUP_ATTRIBUTE)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(output.messages().iter().filter_map(to_message).collect())
    }

    async fn delete(&self, receipt: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    async fn delete_batch(&self, receipts: &[String]) -> Result<(), QueueError> {
        let mut refused = Vec::new();
        for chunk in receipts.chunks(MAX_BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(index, receipt)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(index.to_string())
                        .receipt_handle(receipt)
                        .build()
                        .map_err(|e| QueueError::Invalid(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let output = self
                .client
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sqs_error)?;
            refused.extend(
                output
                    .failed()
                    .iter()
                    .map(|f| (f.code().to_string(), f.message().map(str::to_string))),
            );
        }
        match refused.first() {
            None => Ok(()),
            Some(_)
                if refused
                    .iter()
                    .all(|(code, _)| is_stale_receipt_code(Some(code))) =>
            {
                Err(QueueError::StaleReceipt)
            }
            Some((code, message)) => Err(QueueError::Sqs(format!(
                "DeleteMessageBatch refused {} of {} receipts ({code}: {})",
                refused.len(),
                receipts.len(),
                message.as_deref().unwrap_or_default()
            ))),
        }
    }

    async fn change_visibility(
        &self,
        receipt: &str,
        visibility: Duration,
    ) -> Result<(), QueueError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt)
            .visibility_timeout(seconds(visibility, MAX_VISIBILITY_SECONDS))
            .send()
            .await
            .map_err(sqs_error)?;
        Ok(())
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        let (waiting, in_flight) = self.approximate_counts(&self.queue_url).await?;
        let dead = match &self.dead_letter_url {
            Some(url) => {
                let (waiting, in_flight) = self.approximate_counts(url).await?;
                waiting + in_flight
            }
            None => 0,
        };
        Ok(QueueStats {
            depth: waiting + in_flight,
            in_flight,
            oldest_age: None,
            dead,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_to_whole_seconds_within_limits() {
        assert_eq!(seconds(Duration::ZERO, 20), 0);
        assert_eq!(seconds(Duration::from_millis(1), 20), 1);
        assert_eq!(seconds(Duration::from_millis(1500), 20), 2);
        assert_eq!(seconds(Duration::from_secs(2), 20), 2);
        assert_eq!(seconds(Duration::from_secs(60), 20), 20);
    }

    #[test]
    fn refused_receipts_are_stale() {
        assert!(is_stale_receipt_code(Some("ReceiptHandleIsInvalid")));
        assert!(is_stale_receipt_code(Some(
            "AWS.SimpleQueueService.MessageNotInflight"
        )));
        assert!(!is_stale_receipt_code(Some("AccessDenied")));
        assert!(!is_stale_receipt_code(None));
    }
}
