//! Storing inbound WhatsApp messages, many requests per commit.
//!
//! The webhook must answer 200 only once a message is durable, and a
//! commit per request would cap a small SQLite machine far below the
//! design's 10,000 webhooks/s. So requests hand their message to one
//! batcher task per process and wait: the batcher takes whatever has
//! queued up (up to [`MAX_BATCH`]), writes all of it in one transaction,
//! commits, then answers each request. Under light load a batch is one
//! message and nothing waits; under heavy load batches grow and the cost of
//! a commit is shared.
//!
//! One transaction per batch holds, for every message:
//!
//! - the conversation, created or touched (one multi-row upsert);
//! - the message, once per `MessageSid` (`ON CONFLICT DO NOTHING`: a
//!   replayed webhook is answered 200 and changes nothing);
//! - the shopper's last-inbound time, which opens WhatsApp's 24-hour
//!   window for replies;
//! - for a rate-limited sender's first message over the limit, the polite
//!   notice, as a pending outbound message;
//! - with the database queue, the conversation's job on the queue, so
//!   message and job commit together.
//!
//! With SQS the job cannot join the transaction. It is sent after the
//! commit and the messages marked `queued`; if SQS fails then, the
//! webhook still answers 200 (the message is durable) and the relay
//! ([`relay_unqueued`]) sends the job later. That is the outbox pattern:
//! the database row is the source of truth, the queue a wake-up call.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sea_orm::sea_query::{Expr, InsertStatement, OnConflict, Query, SubQueryStatement};
use sea_orm::{ColumnTrait, DbBackend, DbErr, EntityTrait, QueryFilter, QuerySelect, QueryTrait};
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use super::inbound::InboundMessage;
use super::store::{conversation, message};
use crate::platform::db::Writer;
use crate::platform::messaging::entity::contact;
use crate::platform::queue::Queue;

/// Most messages written in one transaction.
pub const MAX_BATCH: usize = 256;

/// Requests waiting for the batcher, at most (beyond it, `submit` waits).
const CHANNEL_CAPACITY: usize = 8192;

/// What the shopper gets once it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the rate limits: the bot answers.
    Answer,
    /// Over a limit: stored, not answered; `notice` for the first message
    /// over it, which gets the polite notice.
    Limited { notice: bool },
}

/// How a submitted message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now (and its job queued or left to the relay).
    New {
        conversation_id: i64,
        message_id: i64,
    },
    /// A message with this `MessageSid` was stored before.
    Duplicate,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum IntakeError {
    #[error("storing the message failed: {0}")]
    Database(String),
    #[error("the intake is shutting down")]
    Closed,
}

/// The text of the rate-limit notice.
pub const RATE_NOTICE: &str = "You're sending messages faster than we can answer them. \
We've kept everything you wrote and will get back to you; please give us a minute before writing again.";

struct Job {
    message: InboundMessage,
    admission: Admission,
    done: oneshot::Sender<Result<Stored, IntakeError>>,
}

/// The handle request handlers submit messages through.
#[derive(Clone)]
pub struct Intake {
    jobs: mpsc::Sender<Job>,
}

impl Intake {
    /// Starts the batcher task on the current runtime.
    pub fn start(writer: Writer, queue: Arc<dyn Queue>, burst_window: Duration) -> Intake {
        let (jobs, receiver) = mpsc::channel(CHANNEL_CAPACITY);
        tokio::spawn(run_batcher(
            Batcher {
                writer,
                queue,
                burst_window,
            },
            receiver,
        ));
        Intake { jobs }
    }

    /// Stores a message durably; returns once its transaction committed.
    pub async fn submit(
        &self,
        message: InboundMessage,
        admission: Admission,
    ) -> Result<Stored, IntakeError> {
        let (done, outcome) = oneshot::channel();
        self.jobs
            .send(Job {
                message,
                admission,
                done,
            })
            .await
            .map_err(|_| IntakeError::Closed)?;
        outcome.await.map_err(|_| IntakeError::Closed)?
    }
}

struct Batcher {
    writer: Writer,
    queue: Arc<dyn Queue>,
    burst_window: Duration,
}

async fn run_batcher(batcher: Batcher, mut receiver: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let size = batch.len();
        let started = std::time::Instant::now();
        let result = batcher.write(&batch).await;
        metrics::histogram!("kedai_chat_intake_batch_size").record(size as f64);
        metrics::histogram!("kedai_chat_intake_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(outcomes) => {
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    let _ = job.done.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(error = %super::redact::redact(&error.to_string()), messages = size, "storing inbound messages failed");
                let error = IntakeError::Database(error.to_string());
                for job in batch.drain(..) {
                    let _ = job.done.send(Err(error.clone()));
                }
            }
        }
    }
}

/// The queue job of one conversation.
pub fn job_body(conversation_id: i64) -> (String, Option<String>) {
    (
        serde_json::json!({ "conversation": conversation_id }).to_string(),
        Some(format!("conversation-{conversation_id}")),
    )
}

/// The conversation a queue job is for.
pub fn parse_job(body: &str) -> Option<i64> {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()?
        .get("conversation")?
        .as_i64()
}

impl Batcher {
    /// Stores a batch in one transaction, sent as two groups of statements
    /// (see [`crate::platform::db::Batch`]): first the conversations, the
    /// messages and the contacts, whose inserted messages come back; then,
    /// knowing which messages are new, the notices and the queue jobs,
    /// with the commit.
    async fn write(&self, jobs: &[Job]) -> Result<Vec<Stored>, DbErr> {
        let now = OffsetDateTime::now_utc();
        let backend = self.writer.db.get_database_backend();
        let database_queue = self.queue.as_database();

        // Each MessageSid once: the first of a batch's copies is the one
        // stored (the others, and any stored before, are duplicates).
        let mut seen = HashSet::new();
        let firsts: Vec<&Job> = jobs
            .iter()
            .filter(|job| seen.insert(job.message.message_sid.as_str()))
            .collect();
        let mut identities: BTreeMap<&str, &InboundMessage> = BTreeMap::new();
        for job in jobs {
            identities.insert(job.message.from.key(), &job.message);
        }
        let queued = |admission: Admission| {
            database_queue.is_some() && matches!(admission, Admission::Answer)
        };
        let mut upsert = conversations_upsert(&identities, now);
        let mut batch = self.writer.batch().await?;

        // On SQLite a message finds its conversation in a subquery, so the
        // first group needs nothing back and is one call. PostgreSQL plans
        // that subquery once per row (batches took a fifth longer), and
        // there every statement is a round trip anyway: the upsert returns
        // the ids first.
        let mut first_group = Vec::with_capacity(3);
        let conversation_ids = if backend == DbBackend::Sqlite {
            first_group.push(backend.build(&upsert));
            None
        } else {
            upsert.returning(
                Query::returning()
                    .columns([conversation::Column::Id, conversation::Column::Identity]),
            );
            let rows = batch.run(&[backend.build(&upsert)]).await?;
            let mut ids = HashMap::with_capacity(rows[0].len());
            for row in &rows[0] {
                let id: i64 = row.try_get("", "id")?;
                let identity: String = row.try_get("", "identity")?;
                ids.insert(identity, id);
            }
            Some(ids)
        };
        let inserted = first_group.len();
        first_group.push(backend.build(&messages_insert(
            &firsts,
            conversation_ids.as_ref(),
            now,
            queued,
        )));
        first_group.push(backend.build(&contacts_upsert(&identities, now)));
        let rows = batch.run(&first_group).await?;
        let mut new_messages: HashMap<String, (i64, i64)> = HashMap::new();
        for row in &rows[inserted] {
            let id: i64 = row.try_get("", "id")?;
            let conversation_id: i64 = row.try_get("", "conversation_id")?;
            let sid: String = row.try_get("", "message_sid")?;
            new_messages.insert(sid, (conversation_id, id));
        }

        // Outcomes, notices and jobs.
        let mut outcomes = Vec::with_capacity(jobs.len());
        let mut to_queue: Vec<i64> = Vec::new();
        let mut notices = Vec::new();
        let mut claimed = HashSet::new();
        for job in jobs {
            let sid = job.message.message_sid.as_str();
            match new_messages.get(sid) {
                Some(&(conversation_id, message_id)) if claimed.insert(sid) => {
                    match job.admission {
                        Admission::Answer => to_queue.push(conversation_id),
                        Admission::Limited { notice: true } => {
                            notices.push(super::store::new_message(
                                conversation_id,
                                "assistant",
                                "notice",
                                RATE_NOTICE,
                                "pending",
                            ));
                            to_queue.push(conversation_id);
                        }
                        Admission::Limited { notice: false } => {}
                    }
                    outcomes.push(Stored::New {
                        conversation_id,
                        message_id,
                    });
                }
                _ => outcomes.push(Stored::Duplicate),
            }
        }
        to_queue.sort_unstable();
        to_queue.dedup();
        let jobs_to_send: Vec<(String, Option<String>)> =
            to_queue.iter().map(|&id| job_body(id)).collect();

        let mut last_group = Vec::new();
        if !notices.is_empty() {
            last_group.push(message::Entity::insert_many(notices).build(backend));
        }
        if let Some(queue) = database_queue
            && !jobs_to_send.is_empty()
        {
            last_group.extend(queue.send_statements(&jobs_to_send, self.burst_window));
        }
        batch.commit(&last_group).await?;

        if let Some(queue) = database_queue {
            queue.committed();
        } else if !jobs_to_send.is_empty() {
            // SQS: after the commit; the relay covers a failure here.
            match self.queue.send_batch(&jobs_to_send).await {
                Ok(_) => {
                    let ids: Vec<i64> = new_messages.values().map(|&(_, id)| id).collect();
                    mark_queued(&self.writer, &ids).await?;
                }
                Err(error) => {
                    tracing::warn!(error = %error, "could not queue chat jobs; the relay will retry")
                }
            }
        }
        Ok(outcomes)
    }
}

/// Every identity's conversation, created or touched.
fn conversations_upsert(
    identities: &BTreeMap<&str, &InboundMessage>,
    now: OffsetDateTime,
) -> InsertStatement {
    let mut upsert = Query::insert();
    upsert
        .into_table(conversation::Entity)
        .columns([
            conversation::Column::Identity,
            conversation::Column::Phone,
            conversation::Column::ProfileName,
            conversation::Column::State,
            conversation::Column::Dissatisfaction,
            conversation::Column::LastInboundAt,
            conversation::Column::LastMessageAt,
            conversation::Column::CreatedAt,
        ])
        .on_conflict(
            OnConflict::column(conversation::Column::Identity)
                .update_columns([
                    conversation::Column::LastInboundAt,
                    conversation::Column::LastMessageAt,
                ])
                .value(
                    conversation::Column::ProfileName,
                    Expr::cust("COALESCE(excluded.profile_name, conversations.profile_name)"),
                )
                .to_owned(),
        );
    for (identity, message) in identities {
        upsert.values_panic([
            (*identity).into(),
            message.from.phone().map(str::to_string).into(),
            message.profile_name.clone().into(),
            "bot".into(),
            0i32.into(),
            Some(now).into(),
            now.into(),
            now.into(),
        ]);
    }
    upsert
}

/// The messages, each under its conversation (its id from
/// `conversation_ids`, else looked up by identity in the same statement),
/// once per `MessageSid`; returns the ones inserted.
fn messages_insert(
    firsts: &[&Job],
    conversation_ids: Option<&HashMap<String, i64>>,
    now: OffsetDateTime,
    queued: impl Fn(Admission) -> bool,
) -> InsertStatement {
    let mut insert = Query::insert();
    insert
        .into_table(message::Entity)
        .columns([
            message::Column::ConversationId,
            message::Column::Role,
            message::Column::Kind,
            message::Column::Body,
            message::Column::MessageSid,
            message::Column::Status,
            message::Column::Queued,
            message::Column::Media,
            message::Column::CreatedAt,
        ])
        .on_conflict(
            OnConflict::column(message::Column::MessageSid)
                .do_nothing()
                .to_owned(),
        )
        .returning(Query::returning().columns([
            message::Column::Id,
            message::Column::ConversationId,
            message::Column::MessageSid,
        ]));
    for job in firsts {
        let message = &job.message;
        let status = match job.admission {
            Admission::Answer => "received",
            Admission::Limited { .. } => "limited",
        };
        let media = (!message.media.is_empty())
            .then(|| serde_json::to_string(&message.media).unwrap_or_default());
        let identity = message.from.key();
        let conversation_id: Expr = match conversation_ids.and_then(|ids| ids.get(identity)) {
            Some(&id) => id.into(),
            None => SubQueryStatement::from(
                Query::select()
                    .column(conversation::Column::Id)
                    .from(conversation::Entity)
                    .and_where(conversation::Column::Identity.eq(identity))
                    .to_owned(),
            )
            .into(),
        };
        insert.values_panic([
            conversation_id,
            "user".into(),
            "text".into(),
            message.text().to_string().into(),
            message.message_sid.clone().into(),
            status.into(),
            queued(job.admission).into(),
            media.into(),
            now.into(),
        ]);
    }
    insert
}

/// WhatsApp's customer-service window opens with each message.
fn contacts_upsert(
    identities: &BTreeMap<&str, &InboundMessage>,
    now: OffsetDateTime,
) -> InsertStatement {
    let mut contacts = Query::insert();
    contacts
        .into_table(contact::Entity)
        .columns([
            contact::Column::Phone,
            contact::Column::LastInboundAt,
            contact::Column::UpdatedAt,
        ])
        .on_conflict(
            OnConflict::column(contact::Column::Phone)
                .update_columns([contact::Column::LastInboundAt, contact::Column::UpdatedAt])
                .to_owned(),
        );
    for identity in identities.keys() {
        contacts.values_panic([(*identity).into(), Some(now).into(), now.into()]);
    }
    contacts
}

async fn mark_queued(writer: &Writer, ids: &[i64]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    let _permit = writer.permit().await;
    for chunk in ids.chunks(500) {
        message::Entity::update_many()
            .col_expr(message::Column::Queued, Expr::value(true))
            .filter(message::Column::Id.is_in(chunk.to_vec()))
            .exec(&writer.db)
            .await?;
    }
    Ok(())
}

/// Sends the jobs of messages stored but never queued (SQS failed after
/// their commit) once they are older than `after`. Returns how many
/// conversations were queued.
pub async fn relay_unqueued(
    writer: &Writer,
    queue: &dyn Queue,
    after: Duration,
) -> anyhow::Result<usize> {
    let cutoff = OffsetDateTime::now_utc() - after;
    let rows: Vec<(i64, i64)> = message::Entity::find()
        .select_only()
        .column(message::Column::Id)
        .column(message::Column::ConversationId)
        .filter(message::Column::Status.eq("received"))
        .filter(message::Column::Queued.eq(false))
        .filter(message::Column::CreatedAt.lt(cutoff))
        .limit(500)
        .into_tuple()
        .all(&writer.db)
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut conversations: Vec<i64> = rows.iter().map(|(_, c)| *c).collect();
    conversations.sort_unstable();
    conversations.dedup();
    for chunk in conversations.chunks(crate::platform::queue::MAX_BATCH) {
        let jobs: Vec<_> = chunk.iter().map(|&id| job_body(id)).collect();
        queue.send_batch(&jobs).await?;
    }
    let ids: Vec<i64> = rows.iter().map(|(id, _)| *id).collect();
    mark_queued(writer, &ids).await?;
    metrics::counter!("kedai_chat_relayed_total").increment(conversations.len() as u64);
    Ok(conversations.len())
}
