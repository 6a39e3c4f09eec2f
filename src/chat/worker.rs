//! The chat queue's consumer: turns waiting shopper messages into replies.
//!
//! A queue job names a conversation, not a message. Whoever holds the
//! conversation's processing lease (`conversations.worker`) answers *all*
//! of its waiting messages as one turn, oldest first, so:
//!
//! - two messages of one shopper are never answered at once or out of
//!   order, across workers and replicas;
//! - a burst ("hi" / "I need help" / "order 1234") becomes one turn: a job
//!   is not acted on until `chat.burst_window` has passed since the
//!   shopper's last message;
//! - a job that finds the lease taken waits until the lease runs out and
//!   then usually finds nothing left: the holder releases the lease, then
//!   looks for waiting messages once more before it deletes its own job,
//!   so nothing that arrived meanwhile is missed. (Deleting a busy job
//!   at once would lose messages when the holder has just died.)
//!
//! A turn is stored before it is sent: one transaction writes the reply as
//! a `pending` outbound message and marks the shopper's messages
//! `answered`. Sending then goes through `platform::messaging` with an
//! idempotency key per reply part, and only after every pending outbound
//! message is sent is the job deleted. A process killed anywhere in
//! between leaves the job in the queue; whoever gets it next sends what is
//! pending (the key stops a second copy) or composes the turn afresh.
//! Every shopper message is therefore answered exactly once.
//!
//! While the model works the job's visibility and the lease are extended.
//! A taken-over conversation is never sent a bot message: the state is
//! read again right before every send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sea_orm::ActiveValue::Set;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::json;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Assistant;
use super::answer::{self, OrderFacts, OrderPick, Phrases};
use super::intake::parse_job;
use super::intent::{self, Intent, Language};
use super::store::{self, State, conversation, message, missing};
use crate::knowledge::Passage;
use crate::platform::llm::{LlmError, LlmRequest, Role, Turn};
use crate::platform::messaging::{Outgoing, SendError, Sent, TransportError};
use crate::platform::queue::{QueueError, QueueMessage};
use crate::platform::vectors::VectorFilter;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobOutcome {
    /// Done (answered, nothing to do, or another worker has it): deleted.
    Done,
    /// Try again after this long (burst window, model down, send failed).
    Later(Duration),
}

/// The reply a turn produced, before it is stored.
struct Reply {
    text: String,
    kind: &'static str,
    model: Option<String>,
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    passages: Vec<Passage>,
    escalate: Option<&'static str>,
    /// The question and best score, for the missing-knowledge list.
    missing: Option<f32>,
}

impl Reply {
    fn text(text: impl Into<String>) -> Reply {
        Reply {
            text: text.into(),
            kind: "text",
            model: None,
            input_tokens: None,
            output_tokens: None,
            passages: Vec::new(),
            escalate: None,
            missing: None,
        }
    }

    fn escalation(language: Language, reason: &'static str) -> Reply {
        Reply {
            kind: "handoff",
            escalate: Some(reason),
            ..Reply::text(Phrases::escalated(language))
        }
    }
}

/// Why a turn could not finish now.
enum TurnError {
    /// Retry after this long (the model or the messaging provider is down).
    Later(Duration),
    Failed(anyhow::Error),
}

impl From<sea_orm::DbErr> for TurnError {
    fn from(error: sea_orm::DbErr) -> Self {
        TurnError::Failed(error.into())
    }
}

impl From<anyhow::Error> for TurnError {
    fn from(error: anyhow::Error) -> Self {
        TurnError::Failed(error)
    }
}

impl Assistant {
    /// Receives one batch without waiting and handles it; returns how many
    /// jobs were received. For tests and tools.
    pub async fn try_process_once(&self) -> anyhow::Result<usize> {
        let visibility = self.inner.settings.queue.visibility_timeout;
        let jobs = self
            .inner
            .queue
            .receive(
                crate::platform::queue::MAX_BATCH,
                visibility,
                Duration::ZERO,
            )
            .await?;
        let count = jobs.len();
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let this = self.clone();
                tokio::spawn(async move { this.handle(job).await })
            })
            .collect();
        for handle in handles {
            handle.await.context("a chat job panicked")?;
        }
        Ok(count)
    }

    /// Processes until every queued turn is answered or `limit` rounds
    /// passed (tests: waits out burst windows in between).
    pub async fn drain(&self, rounds: usize) -> anyhow::Result<()> {
        for _ in 0..rounds {
            let stats = self.inner.queue.stats().await?;
            if stats.depth == 0 {
                return Ok(());
            }
            if self.try_process_once().await? == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// The poller: receives batches (long polling) while fewer than
    /// `chat.workers` turns are in flight. On shutdown it stops receiving
    /// and lets in-flight turns finish; jobs received but not started are
    /// made visible again at once. Turns still running after half of
    /// `server.shutdown_grace` (the rest is left for the process's other
    /// steps) are abandoned, as if the process had died there (every step
    /// is idempotent), and their jobs and leases given back at once, so
    /// another replica answers them without waiting out the visibility
    /// timeout.
    pub async fn run(self, shutdown: CancellationToken) {
        let settings = self.inner.settings.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(settings.chat.workers));
        let tracker = TaskTracker::new();
        let abandon = CancellationToken::new();
        let maintenance = tokio::spawn(self.clone().maintain(shutdown.clone()));
        loop {
            let free = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_many_owned(1) => permit,
            };
            let Ok(first) = free else { break };
            let available = slots.available_permits();
            let max = (available + 1).min(crate::platform::queue::MAX_BATCH);
            let received = tokio::select! {
                _ = shutdown.cancelled() => break,
                received = self.inner.queue.receive(
                    max,
                    settings.queue.visibility_timeout,
                    settings.queue.wait_time,
                ) => received,
            };
            let jobs = match received {
                Ok(jobs) => jobs,
                Err(error) => {
                    tracing::warn!(error = %error, "receiving chat jobs failed");
                    drop(first);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            let mut first = Some(first);
            for job in jobs {
                let permit = match first.take() {
                    Some(permit) => permit,
                    None => match slots.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => {
                            self.give_back(&job).await;
                            continue;
                        }
                    },
                };
                if shutdown.is_cancelled() {
                    self.give_back(&job).await;
                    continue;
                }
                let this = self.clone();
                let abandon = abandon.clone();
                tracker.spawn(async move {
                    let receipt = job.receipt.clone();
                    let conversation = parse_job(&job.body);
                    tokio::select! {
                        _ = this.handle(job) => {}
                        _ = abandon.cancelled() => this.abandon(&receipt, conversation).await,
                    }
                    drop(permit);
                });
            }
        }
        tracker.close();
        let patience = settings.server.shutdown_grace / 2;
        if tokio::time::timeout(patience, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                turns = tracker.len(),
                "chat turns still running at shutdown are abandoned and given back to the queue"
            );
            abandon.cancel();
            tracker.wait().await;
        }
        maintenance.abort();
        tracing::info!("chat workers stopped");
    }

    /// Gives back the job and the conversation of a turn dropped at
    /// shutdown.
    async fn abandon(&self, receipt: &str, conversation: Option<i64>) {
        metrics::counter!("kedai_chat_turns_total", "outcome" => "abandoned").increment(1);
        if let Err(error) = self
            .inner
            .queue
            .change_visibility(receipt, Duration::ZERO)
            .await
        {
            tracing::debug!(error = %error, "could not give an abandoned chat job back; it reappears after its visibility timeout");
        }
        if let Some(id) = conversation
            && let Err(error) =
                store::release_leases_of(&self.inner.writer, id, &self.inner.worker_id).await
        {
            tracing::debug!(error = %error, "could not release an abandoned turn's lease; it runs out by itself");
        }
    }

    async fn give_back(&self, job: &QueueMessage) {
        if let Err(error) = self
            .inner
            .queue
            .change_visibility(&job.receipt, Duration::ZERO)
            .await
        {
            tracing::debug!(error = %error, "could not give a chat job back; it reappears after its visibility timeout");
        }
    }

    /// Handles one job: lease, turn(s), delete.
    pub async fn handle(&self, job: QueueMessage) {
        let queue = &self.inner.queue;
        let waited = (OffsetDateTime::now_utc() - job.sent_at)
            .as_seconds_f64()
            .max(0.0);
        metrics::histogram!("kedai_chat_stage_seconds", "stage" => "queue_wait").record(waited);
        let outcome = match parse_job(&job.body) {
            Some(conversation_id) => self.handle_conversation(conversation_id, &job).await,
            None => {
                tracing::warn!(
                    body_len = job.body.len(),
                    "dropping a chat job that is not a conversation job"
                );
                Ok(JobOutcome::Done)
            }
        };
        let result = match outcome {
            Ok(JobOutcome::Done) => queue.delete(&job.receipt).await,
            Ok(JobOutcome::Later(delay)) => queue.change_visibility(&job.receipt, delay).await,
            Err(error) => {
                tracing::error!(error = %super::redact::redact(&format!("{error:#}")), "a chat turn failed; it will be retried");
                metrics::counter!("kedai_chat_turns_total", "outcome" => "error").increment(1);
                queue
                    .change_visibility(&job.receipt, self.inner.settings.chat.retry_delay)
                    .await
            }
        };
        match result {
            Ok(()) | Err(QueueError::StaleReceipt) => {}
            Err(error) => tracing::warn!(error = %error, "could not settle a chat job"),
        }
    }

    async fn handle_conversation(
        &self,
        conversation_id: i64,
        job: &QueueMessage,
    ) -> anyhow::Result<JobOutcome> {
        let inner = &self.inner;
        let visibility = inner.settings.queue.visibility_timeout;
        let lease = |now: OffsetDateTime| now + visibility;
        // One lease per job, even within a process: two jobs of the same
        // conversation handled here at once must not both hold it.
        let holder = format!(
            "{}:{}",
            inner.worker_id,
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        if !store::acquire_lease(
            &inner.writer,
            conversation_id,
            &holder,
            lease(OffsetDateTime::now_utc()),
        )
        .await?
        {
            // Another worker has the conversation. It looks for waiting
            // messages after it lets go, so this job is usually redundant;
            // but the holder may have died, its own job not yet visible
            // again. So the job comes back just after the lease runs out
            // and is deleted then if nothing is left to answer.
            metrics::counter!("kedai_chat_jobs_total", "outcome" => "busy").increment(1);
            let now = OffsetDateTime::now_utc();
            let remaining = store::conversation(&inner.writer.db, conversation_id)
                .await?
                .and_then(|c| c.worker_until)
                .map(|until| Duration::try_from(until - now).unwrap_or(Duration::ZERO))
                .unwrap_or(Duration::ZERO);
            return Ok(JobOutcome::Later(
                (remaining + Duration::from_millis(200)).min(visibility),
            ));
        }
        // Keep the job hidden and the lease ours while we work (and not a
        // moment longer, even when this future is dropped at shutdown).
        let keep_alive = CancellationToken::new();
        let _stop_extending = keep_alive.clone().drop_guard();
        let extender = {
            let keep_alive = keep_alive.clone();
            let this = self.clone();
            let receipt = job.receipt.clone();
            let holder = holder.clone();
            tokio::spawn(async move {
                let every = (visibility / 3).max(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        _ = keep_alive.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                    let inner = &this.inner;
                    let _ = inner.queue.change_visibility(&receipt, visibility).await;
                    let _ = store::extend_lease(
                        &inner.writer,
                        conversation_id,
                        &holder,
                        OffsetDateTime::now_utc() + visibility,
                    )
                    .await;
                }
            })
        };
        let outcome = loop {
            let outcome = self.turn(conversation_id, job).await;
            store::release_lease(&inner.writer, conversation_id, &holder).await?;
            match outcome {
                Ok(JobOutcome::Done) => {}
                other => break other,
            }
            // Messages that arrived while we held the lease, whose own jobs
            // were dropped as busy.
            let waiting = store::waiting(&inner.writer.db, conversation_id).await?;
            if waiting.is_empty()
                || !store::acquire_lease(
                    &inner.writer,
                    conversation_id,
                    &holder,
                    lease(OffsetDateTime::now_utc()),
                )
                .await?
            {
                break Ok(JobOutcome::Done);
            }
        };
        keep_alive.cancel();
        let _ = extender.await;
        outcome
    }

    /// One turn of one conversation, under its lease.
    async fn turn(&self, conversation_id: i64, job: &QueueMessage) -> anyhow::Result<JobOutcome> {
        let inner = &self.inner;
        let chat = &inner.settings.chat;
        let now = OffsetDateTime::now_utc();
        let Some(mut conv) = store::conversation(&inner.writer.db, conversation_id).await? else {
            return Ok(JobOutcome::Done);
        };
        if conv.state != "bot" && conv.handover_until.is_some_and(|until| until < now) {
            super::handover::return_to_bot(&inner.writer, &conv, "after a time without activity")
                .await?;
            conv = match store::conversation(&inner.writer.db, conversation_id).await? {
                Some(conv) => conv,
                None => return Ok(JobOutcome::Done),
            };
        }
        // Anything stored but not sent goes first, in order.
        if let Err(delay) = self.flush(&conv).await? {
            return Ok(JobOutcome::Later(delay));
        }
        let waiting = store::waiting(&inner.writer.db, conversation_id).await?;
        if waiting.is_empty() {
            return Ok(JobOutcome::Done);
        }
        if conv.state != "bot" {
            // People answer this conversation: the messages go to the inbox.
            let ids: Vec<i64> = waiting.iter().map(|m| m.id).collect();
            mark_waiting(&inner.writer, &ids, "to_human", None).await?;
            return Ok(JobOutcome::Done);
        }
        if let Some(last) = conv.last_inbound_at {
            let quiet_since = (now - last).try_into().unwrap_or(Duration::ZERO);
            if quiet_since < chat.burst_window {
                return Ok(JobOutcome::Later(
                    (chat.burst_window - quiet_since).max(Duration::from_millis(100)),
                ));
            }
        }
        if let Some(phone) = conv.phone.as_deref() {
            // Checked every turn: the account's number may have changed or
            // been verified since.
            let verified = crate::customers::verified_by_phone(&inner.writer.db, phone).await?;
            if verified != conv.customer_id {
                set_customer(&inner.writer, conv.id, verified).await?;
                conv.customer_id = verified;
            }
        }
        let started = Instant::now();
        let reply = match self.compose(&conv, &waiting, job).await {
            Ok(reply) => reply,
            Err(TurnError::Later(delay)) => {
                self.holding_reply(&conv, &waiting).await?;
                if let Err(delay) = self.flush(&conv).await? {
                    return Ok(JobOutcome::Later(delay));
                }
                metrics::counter!("kedai_chat_turns_total", "outcome" => "deferred").increment(1);
                return Ok(JobOutcome::Later(delay));
            }
            Err(TurnError::Failed(error)) => return Err(error),
        };
        let latency = started.elapsed();
        self.store_turn(&conv, &waiting, reply, latency).await?;
        if let Err(delay) = self.flush(&conv).await? {
            return Ok(JobOutcome::Later(delay));
        }
        Ok(JobOutcome::Done)
    }

    /// Decides the reply of a turn.
    async fn compose(
        &self,
        conv: &conversation::Model,
        waiting: &[message::Model],
        job: &QueueMessage,
    ) -> Result<Reply, TurnError> {
        let inner = &self.inner;
        let chat = &inner.settings.chat;
        let text = waiting
            .iter()
            .map(|m| m.body.trim())
            .filter(|b| !b.is_empty())
            .collect::<Vec<_>>()
            .join("\n");
        let language = intent::language(&text);
        if text.is_empty() {
            // Media only: we cannot look at pictures yet.
            return Ok(Reply::escalation(language, "media"));
        }
        if let Some(code) = waiting.iter().find_map(|m| intent::link_code(&m.body)) {
            return Ok(self.link_account(conv, &code, language).await?);
        }
        let complaint = intent::is_complaint(&text);
        let dissatisfaction = if complaint {
            conv.dissatisfaction + 1
        } else {
            0
        };
        set_dissatisfaction(&inner.writer, conv.id, dissatisfaction).await?;
        let intent = intent::classify(&text);
        if intent == Intent::Human {
            return Ok(Reply::escalation(language, "asked_for_human"));
        }
        if complaint && dissatisfaction >= chat.dissatisfaction_limit {
            return Ok(Reply::escalation(language, "dissatisfied"));
        }
        if intent == Intent::Smalltalk {
            return Ok(Reply::text(Phrases::greeting(
                language,
                &inner.settings.shop.name,
            )));
        }
        let order_question = matches!(intent, Intent::OrderStatus { .. });
        let orders = if order_question || inner.llm.is_some() {
            answer::recent_orders(&inner.writer.db, conv.phone.as_deref(), conv.customer_id, 5)
                .await?
        } else {
            Vec::new()
        };

        let retrieval = Instant::now();
        let passages = inner
            .knowledge
            .search(&text, &VectorFilter::default(), chat.passages)
            .await
            .map_err(|e| {
                TurnError::Failed(anyhow::Error::new(e).context("searching the knowledge base"))
            })?;
        metrics::histogram!("kedai_chat_stage_seconds", "stage" => "retrieval")
            .record(retrieval.elapsed().as_secs_f64());
        let (evidence, best) = answer::evidence(&passages, chat);

        if !order_question && !evidence {
            return Ok(Reply {
                missing: Some(best),
                ..Reply::text(Phrases::not_sure(language))
            }
            .escalating("no_evidence"));
        }

        match &inner.llm {
            None => Ok(offline_reply(&text, language, intent, passages, &orders)),
            Some(llm) => {
                let system = answer::system_prompt(
                    &inner.settings.shop.name,
                    if evidence { &passages } else { &[] },
                    &orders,
                    language,
                );
                let history = store::history(
                    &inner.writer.db,
                    conv.id,
                    waiting[0].id,
                    chat.history_messages,
                )
                .await?;
                let request = LlmRequest {
                    system,
                    messages: conversation_turns(&history, &text),
                    max_tokens: inner.settings.llm.max_tokens,
                    temperature: inner.settings.llm.temperature,
                };
                let model_started = Instant::now();
                let result = llm.complete(&request).await;
                metrics::histogram!("kedai_chat_stage_seconds", "stage" => "model")
                    .record(model_started.elapsed().as_secs_f64());
                match result {
                    Ok(reply) if reply.text.trim() == "HANDOFF" || reply.text.trim().is_empty() => {
                        Ok(Reply {
                            model: Some(reply.model),
                            input_tokens: Some(reply.input_tokens),
                            output_tokens: Some(reply.output_tokens),
                            missing: (!order_question).then_some(best),
                            passages,
                            ..Reply::text(Phrases::not_sure(language))
                        }
                        .escalating("model_unsure"))
                    }
                    Ok(reply) => Ok(Reply {
                        text: reply.text,
                        kind: "text",
                        model: Some(reply.model),
                        input_tokens: Some(reply.input_tokens),
                        output_tokens: Some(reply.output_tokens),
                        passages: if evidence { passages } else { Vec::new() },
                        escalate: None,
                        missing: None,
                    }),
                    Err(error) if error.is_transient() => {
                        tracing::warn!(error = %super::redact::redact(&error.to_string()), conversation = conv.id, "the model could not answer; holding reply sent, turn retried");
                        let factor = job.receive_count.clamp(1, 8);
                        Err(TurnError::Later(chat.retry_delay * factor))
                    }
                    Err(LlmError::Rejected(message)) => {
                        tracing::error!(error = %super::redact::redact(&message), conversation = conv.id, "the model refused the request; handing over to a person");
                        Ok(Reply::escalation(language, "model_error"))
                    }
                    Err(error) => Err(TurnError::Failed(error.into())),
                }
            }
        }
    }

    /// A `LINK 123456` message: the code from the account page proves this
    /// WhatsApp number belongs to the account, which links the two.
    async fn link_account(
        &self,
        conv: &conversation::Model,
        code: &str,
        language: Language,
    ) -> Result<Reply, sea_orm::DbErr> {
        let Some(phone) = conv.phone.as_deref() else {
            return Ok(Reply::text(Phrases::link_unknown(language)));
        };
        let writer = &self.inner.writer;
        Ok(
            match crate::customers::verify_phone_code(writer, phone, code).await? {
                crate::customers::CodeCheck::Verified { customer_id, name } => {
                    set_customer(writer, conv.id, Some(customer_id)).await?;
                    metrics::counter!("kedai_chat_account_links_total", "outcome" => "verified")
                        .increment(1);
                    Reply::text(Phrases::linked(language, &name))
                }
                crate::customers::CodeCheck::Wrong { .. } => {
                    metrics::counter!("kedai_chat_account_links_total", "outcome" => "wrong_code")
                        .increment(1);
                    Reply::text(Phrases::link_wrong(language))
                }
                crate::customers::CodeCheck::NothingPending => {
                    metrics::counter!("kedai_chat_account_links_total", "outcome" => "nothing_pending")
                        .increment(1);
                    Reply::text(Phrases::link_unknown(language))
                }
            },
        )
    }

    /// Tells the shopper we are slow, once per turn.
    async fn holding_reply(
        &self,
        conv: &conversation::Model,
        waiting: &[message::Model],
    ) -> anyhow::Result<()> {
        let first = waiting[0].id;
        let already = message::Entity::find()
            .filter(message::Column::ConversationId.eq(conv.id))
            .filter(message::Column::Kind.eq("holding"))
            .filter(message::Column::Id.gt(first))
            .one(&self.inner.writer.db)
            .await?;
        if already.is_some() {
            return Ok(());
        }
        let text: String = waiting
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let row = store::new_message(
            conv.id,
            "assistant",
            "holding",
            Phrases::holding(intent::language(&text)),
            "pending",
        );
        let _permit = self.inner.writer.permit().await;
        message::Entity::insert(row)
            .exec_without_returning(&self.inner.writer.db)
            .await?;
        Ok(())
    }

    /// Stores the reply as pending and the shopper's messages as answered,
    /// in one transaction (with the escalation and missing knowledge).
    async fn store_turn(
        &self,
        conv: &conversation::Model,
        waiting: &[message::Model],
        reply: Reply,
        latency: Duration,
    ) -> anyhow::Result<()> {
        let inner = &self.inner;
        let now = OffsetDateTime::now_utc();
        let passages = (!reply.passages.is_empty()).then(|| {
            json!(
                reply
                    .passages
                    .iter()
                    .map(|p| json!({
                        "citation": p.citation, "title": p.title, "section": p.section,
                        "url": p.url, "document": p.document, "score": p.score,
                        "keyword_score": p.keyword_score, "vector_score": p.vector_score,
                    }))
                    .collect::<Vec<_>>()
            )
            .to_string()
        });
        let mut row = store::new_message(conv.id, "assistant", reply.kind, &reply.text, "pending");
        row.model = Set(reply.model.clone());
        row.input_tokens = Set(reply.input_tokens.map(|t| t as i32));
        row.output_tokens = Set(reply.output_tokens.map(|t| t as i32));
        row.latency_ms = Set(Some(latency.as_millis().min(i32::MAX as u128) as i32));
        row.passages = Set(passages);
        let question: String = waiting
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>()
            .join("\n");

        let (txn, _permit) = inner.writer.begin().await?;
        let reply_id = message::Entity::insert(row)
            .exec(&txn)
            .await?
            .last_insert_id;
        let ids: Vec<i64> = waiting.iter().map(|m| m.id).collect();
        message::Entity::update_many()
            .col_expr(message::Column::Status, Expr::value("answered"))
            .col_expr(message::Column::ReplyTo, Expr::value(reply_id))
            .filter(message::Column::Id.is_in(ids))
            .filter(message::Column::Status.eq("received"))
            .exec(&txn)
            .await?;
        let mut update = conversation::Entity::update_many()
            .col_expr(conversation::Column::LastMessageAt, Expr::value(now))
            .filter(conversation::Column::Id.eq(conv.id));
        if let Some(reason) = reply.escalate {
            update = update
                .col_expr(
                    conversation::Column::State,
                    Expr::value(State::NeedsHuman.as_str()),
                )
                .col_expr(conversation::Column::StateReason, Expr::value(reason))
                .col_expr(
                    conversation::Column::HandoverUntil,
                    Expr::value(now + inner.settings.chat.handover_idle),
                )
                .col_expr(conversation::Column::Dissatisfaction, Expr::value(0));
        }
        update.exec(&txn).await?;
        if let Some(best) = reply.missing {
            missing::Entity::insert(missing::ActiveModel {
                conversation_id: Set(conv.id),
                message_id: Set(Some(waiting[waiting.len() - 1].id)),
                question: Set(question),
                best_score: Set(Some(f64::from(best))),
                created_at: Set(now),
                ..Default::default()
            })
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        let outcome = match reply.escalate {
            Some(reason) => {
                tracing::info!(
                    conversation = conv.id,
                    reason,
                    "the assistant handed a conversation to people"
                );
                reason
            }
            None => "answered",
        };
        metrics::counter!("kedai_chat_turns_total", "outcome" => outcome).increment(1);
        Ok(())
    }

    /// Sends every pending outbound message of the conversation, in order.
    /// `Ok(Err(delay))` when the provider failed transiently.
    pub(super) async fn flush(
        &self,
        conv: &conversation::Model,
    ) -> anyhow::Result<Result<(), Duration>> {
        let inner = &self.inner;
        for pending in store::unsent(&inner.writer.db, conv.id).await? {
            let parts = answer::split_reply(&pending.body, inner.settings.chat.max_reply_chars);
            let mut first_id = None;
            let mut outcome = "sent";
            for (index, part) in parts.iter().enumerate() {
                if pending.role == "assistant" {
                    // Checked again right before every send.
                    let state = store::conversation(&inner.writer.db, conv.id)
                        .await?
                        .map(|c| c.state);
                    if state.as_deref() == Some("human") {
                        outcome = "suppressed";
                        break;
                    }
                }
                let send_started = Instant::now();
                let sent = inner
                    .messaging
                    .send(Outgoing {
                        idempotency_key: Some(format!("chat:{}:{index}", pending.id)),
                        kind: if pending.role == "human" {
                            "chat_human"
                        } else {
                            "chat_reply"
                        }
                        .into(),
                        recipient: conv.identity.clone(),
                        text: part.clone(),
                        variables: vec![part.clone()],
                    })
                    .await;
                metrics::histogram!("kedai_chat_stage_seconds", "stage" => "send")
                    .record(send_started.elapsed().as_secs_f64());
                match sent {
                    Ok(Sent::Now { message_id, .. }) | Ok(Sent::Before { message_id, .. }) => {
                        first_id.get_or_insert(message_id);
                    }
                    Err(SendError::Transport(TransportError::Throttled { retry_after })) => {
                        return Ok(Err(retry_after.unwrap_or(inner.settings.chat.retry_delay)));
                    }
                    Err(SendError::Transport(TransportError::Unavailable(error))) => {
                        tracing::warn!(error = %super::redact::redact(&error), conversation = conv.id, "WhatsApp is unavailable; the reply will be retried");
                        return Ok(Err(inner.settings.chat.retry_delay));
                    }
                    Err(SendError::Database(error)) => return Err(error.into()),
                    Err(error) => {
                        tracing::warn!(error = %super::redact::redact(&error.to_string()), conversation = conv.id, "a reply could not be sent");
                        outcome = "failed";
                        break;
                    }
                }
            }
            store::mark_outbound(&inner.writer, pending.id, outcome, first_id).await?;
        }
        Ok(Ok(()))
    }

    /// Retention, expired hand-overs and the SQS relay, every little while.
    async fn maintain(self, shutdown: CancellationToken) {
        let inner = &self.inner;
        let mut last_purge: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(5)) => {}
            }
            if inner.queue.as_database().is_none()
                && let Err(error) = super::intake::relay_unqueued(
                    &inner.writer,
                    inner.queue.as_ref(),
                    inner.settings.chat.relay_after,
                )
                .await
            {
                tracing::warn!(error = %format!("{error:#}"), "relaying chat jobs failed");
            }
            if let Err(error) = super::handover::return_expired(&inner.writer).await {
                tracing::warn!(error = %error, "returning idle conversations to the bot failed");
            }
            if last_purge.is_none_or(|at| at.elapsed() >= inner.settings.chat.purge_interval) {
                last_purge = Some(Instant::now());
                let before = OffsetDateTime::now_utc() - inner.settings.chat.retention;
                match store::purge(&inner.writer, before).await {
                    Ok((messages, conversations)) if messages + conversations > 0 => {
                        tracing::info!(
                            messages,
                            conversations,
                            "purged chat history past its retention"
                        )
                    }
                    Ok(_) => {}
                    Err(error) => tracing::warn!(error = %error, "purging chat history failed"),
                }
            }
        }
    }
}

impl Reply {
    fn escalating(mut self, reason: &'static str) -> Reply {
        self.escalate = Some(reason);
        self.kind = "handoff";
        self
    }
}

/// The offline responder's reply.
fn offline_reply(
    text: &str,
    language: Language,
    intent: Intent,
    passages: Vec<Passage>,
    orders: &[OrderFacts],
) -> Reply {
    if let Intent::OrderStatus { reference } = intent {
        return match answer::pick_order(orders, reference.as_deref()) {
            OrderPick::Found(order) => Reply::text(answer::describe_order(order, language)),
            OrderPick::NoOrders => Reply::text(Phrases::no_orders(language)),
            OrderPick::NotTheirs => {
                tracing::warn!("a shopper asked about an order number not theirs (or mistyped)");
                Reply::text(Phrases::unknown_order(language))
            }
        };
    }
    match answer::offline_answer(text, &passages, language) {
        Some(answer) => Reply {
            passages: passages.into_iter().take(1).collect(),
            ..Reply::text(answer)
        },
        None => Reply::text(Phrases::not_sure(language)).escalating("no_evidence"),
    }
}

/// History plus this turn as alternating user/assistant turns, starting
/// with the shopper (the Converse API's rule).
fn conversation_turns(history: &[message::Model], current: &str) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    let items = history
        .iter()
        .map(|m| {
            let role = if m.role == "user" {
                Role::User
            } else {
                Role::Assistant
            };
            (role, m.body.as_str())
        })
        .chain(std::iter::once((Role::User, current)));
    for (role, text) in items {
        if text.trim().is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(last) if last.role == role => {
                last.text.push('\n');
                last.text.push_str(text);
            }
            _ => turns.push(Turn {
                role,
                text: text.to_string(),
            }),
        }
    }
    while turns.first().is_some_and(|t| t.role == Role::Assistant) {
        turns.remove(0);
    }
    turns
}

async fn mark_waiting(
    writer: &crate::platform::db::Writer,
    ids: &[i64],
    status: &str,
    reply_to: Option<i64>,
) -> Result<(), sea_orm::DbErr> {
    let _permit = writer.permit().await;
    message::Entity::update_many()
        .col_expr(message::Column::Status, Expr::value(status))
        .col_expr(message::Column::ReplyTo, Expr::value(reply_to))
        .filter(message::Column::Id.is_in(ids.to_vec()))
        .filter(message::Column::Status.eq("received"))
        .exec(&writer.db)
        .await?;
    Ok(())
}

async fn set_dissatisfaction(
    writer: &crate::platform::db::Writer,
    id: i64,
    value: i32,
) -> Result<(), sea_orm::DbErr> {
    let _permit = writer.permit().await;
    conversation::Entity::update_many()
        .col_expr(conversation::Column::Dissatisfaction, Expr::value(value))
        .filter(conversation::Column::Id.eq(id))
        .filter(conversation::Column::Dissatisfaction.ne(value))
        .exec(&writer.db)
        .await?;
    Ok(())
}

/// Links the conversation to the customer account with this phone number
/// (WhatsApp has verified that the sender owns the number).
/// Points a conversation at the account whose verified number it is (or at
/// none).
async fn set_customer(
    writer: &crate::platform::db::Writer,
    conversation_id: i64,
    customer_id: Option<i64>,
) -> Result<(), sea_orm::DbErr> {
    let _permit = writer.permit().await;
    conversation::Entity::update_many()
        .col_expr(conversation::Column::CustomerId, Expr::value(customer_id))
        .filter(conversation::Column::Id.eq(conversation_id))
        .exec(&writer.db)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: i64, role: &str, body: &str) -> message::Model {
        message::Model {
            id,
            conversation_id: 1,
            role: role.into(),
            kind: "text".into(),
            body: body.into(),
            message_sid: None,
            status: "answered".into(),
            queued: true,
            reply_to: None,
            media: None,
            model: None,
            input_tokens: None,
            output_tokens: None,
            latency_ms: None,
            passages: None,
            outbound_id: None,
            author: None,
            created_at: OffsetDateTime::now_utc(),
            sent_at: None,
        }
    }

    #[test]
    fn turns_alternate_and_start_with_the_shopper() {
        let history = [
            msg(1, "assistant", "Hi!"),
            msg(2, "user", "hello"),
            msg(3, "user", "do you ship to sabah"),
            msg(4, "assistant", "Yes."),
            msg(5, "human", "Also: 4-7 days."),
        ];
        let turns = conversation_turns(&history, "thanks, and returns?");
        let roles: Vec<Role> = turns.iter().map(|t| t.role).collect();
        assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
        assert_eq!(turns[0].text, "hello\ndo you ship to sabah");
        assert_eq!(turns[1].text, "Yes.\nAlso: 4-7 days.");
        assert_eq!(turns[2].text, "thanks, and returns?");
    }
}
