//! The dispatcher: one per process, stepping through route → claim →
//! handle → record. See the module note in `events/mod.rs` for the claim.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream;
use futures_util::{FutureExt, StreamExt};
use sea_orm::DbErr;
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::entity::delivery;
use super::repo::{self, Finish};
use super::retry::next_delay;
use super::{Bus, Event, HandlerError};
use crate::config::EventsSettings;
use crate::platform::db::Writer;

/// What one step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStep {
    /// Outbox events fanned out into deliveries.
    pub routed: usize,
    /// Deliveries whose handler succeeded.
    pub done: usize,
    /// Deliveries that failed and will be retried (or were deferred).
    pub retried: usize,
    /// Deliveries that became dead letters.
    pub dead: usize,
}

impl DispatchStep {
    /// True when the step found nothing to do.
    pub fn is_idle(&self) -> bool {
        self.routed == 0 && self.done == 0 && self.retried == 0 && self.dead == 0
    }
}

#[derive(Clone)]
pub struct Dispatcher {
    writer: Writer,
    bus: Bus,
    settings: EventsSettings,
    /// Identifies this process's leases, e.g. `host-1234-0193…`.
    worker: Arc<str>,
    wake: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(writer: Writer, bus: Bus, settings: EventsSettings) -> Self {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "kedai".into());
        let worker = format!("{host}-{}-{}", std::process::id(), uuid::Uuid::now_v7());
        let wake = writer.outbox_signal();
        Dispatcher {
            writer,
            bus,
            settings,
            worker: worker.chars().take(64).collect::<String>().into(),
            wake,
        }
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// One step: route new events and lease the due deliveries (at most
    /// `events.concurrency`, so each lease covers one handler call) in one
    /// transaction, run the handlers concurrently, then record every
    /// outcome in one transaction.
    pub async fn try_dispatch_once(&self) -> Result<DispatchStep, DbErr> {
        let limit = self
            .settings
            .batch_size
            .min(self.settings.concurrency as u64);
        let (routed, claimed) = repo::route_and_claim(
            &self.writer,
            &self.bus,
            self.settings.batch_size,
            &self.worker,
            self.settings.lease,
            limit,
        )
        .await?;
        let mut step = DispatchStep {
            routed,
            ..DispatchStep::default()
        };
        let attempts: Vec<Attempt> = stream::iter(self.in_order(claimed))
            .map(|group| self.attempt_in_order(group))
            .buffer_unordered(self.settings.concurrency)
            .collect::<Vec<Vec<Attempt>>>()
            .await
            .into_iter()
            .flatten()
            .collect();
        let outcomes = attempts
            .iter()
            .map(|a| (a.delivery.id, a.finish.clone()))
            .collect();
        let recorded = repo::finish_all(&self.writer, &self.worker, outcomes).await?;
        for attempt in &attempts {
            match self.report(attempt, recorded.contains(&attempt.delivery.id)) {
                Outcome::Done => step.done += 1,
                Outcome::Retried => step.retried += 1,
                Outcome::Dead => step.dead += 1,
                Outcome::LeaseLost => {}
            }
        }
        Ok(step)
    }

    /// Steps until there is nothing left that is due now. For tests and the
    /// CLI; returns the sum of the steps.
    pub async fn drain(&self) -> Result<DispatchStep, DbErr> {
        let mut total = DispatchStep::default();
        loop {
            let step = self.try_dispatch_once().await?;
            if step.is_idle() {
                return Ok(total);
            }
            total.routed += step.routed;
            total.done += step.done;
            total.retried += step.retried;
            total.dead += step.dead;
        }
    }

    /// Runs until shutdown: steps while there is work, then sleeps until a
    /// commit in this process wakes it or the poll interval passes (which is
    /// how retries come due and how other replicas' events are noticed).
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(worker = %self.worker, handlers = ?self.bus.handler_names(), "event dispatcher started");
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.try_dispatch_once().await {
                Ok(step) if !step.is_idle() => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error, "event dispatch step failed; retrying after the poll interval");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
        tracing::info!("event dispatcher stopped");
    }

    /// Groups claimed deliveries that must run one after another (same
    /// handler and ordering key), each group oldest first; the groups run
    /// concurrently.
    fn in_order(
        &self,
        claimed: Vec<(delivery::Model, Event)>,
    ) -> Vec<Vec<(delivery::Model, Event)>> {
        let mut groups: Vec<(Option<OrderingKey>, Vec<Claimed>)> = Vec::new();
        for (delivery, event) in claimed {
            let key = self
                .bus
                .handler(&delivery.handler)
                .and_then(|s| s.handler.ordering_key(&event))
                .map(|key| (delivery.handler.clone(), key));
            match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
                Some((_, group)) => group.push((delivery, event)),
                None => groups.push((key, vec![(delivery, event)])),
            }
        }
        groups
            .into_iter()
            .map(|(_, mut group)| {
                group.sort_by(|a, b| (a.1.occurred_at, &a.1.id).cmp(&(b.1.occurred_at, &b.1.id)));
                group
            })
            .collect()
    }

    /// Runs one ordering group oldest first. Each call after the first
    /// renews its lease (the group may take longer than one lease); once a
    /// delivery fails, the later ones wait for its retry instead of
    /// overtaking it.
    async fn attempt_in_order(&self, group: Vec<Claimed>) -> Vec<Attempt> {
        let mut attempts: Vec<Attempt> = Vec::with_capacity(group.len());
        let mut blocked_until: Option<OffsetDateTime> = None;
        for (index, (delivery, event)) in group.into_iter().enumerate() {
            if let Some(until) = blocked_until {
                attempts.push(Attempt {
                    delivery,
                    event,
                    finish: Finish::Defer {
                        until,
                        reason: "waiting for an earlier event of the same order".into(),
                    },
                    elapsed: Duration::ZERO,
                });
                continue;
            }
            if index > 0 {
                match repo::renew_lease(
                    &self.writer,
                    delivery.id,
                    &self.worker,
                    self.settings.lease,
                )
                .await
                {
                    Ok(true) => {}
                    // Lost or unknown: leave it to whoever holds it now.
                    _ => continue,
                }
            }
            let attempt = self.attempt(delivery, event).await;
            blocked_until = match &attempt.finish {
                Finish::Done => None,
                Finish::RetryAt { at, .. } => Some(*at),
                Finish::Defer { until, .. } => Some(*until),
                Finish::Dead { .. } => None,
            };
            attempts.push(attempt);
        }
        attempts
    }

    /// Runs the handler and decides what to record.
    async fn attempt(&self, delivery: delivery::Model, event: Event) -> Attempt {
        let Some(subscription) = self.bus.handler(&delivery.handler) else {
            // Not claimable (claims name this process's handlers); kept for safety.
            let finish = Finish::Dead {
                error: format!("no handler called {:?} in this process", delivery.handler),
            };
            return Attempt {
                delivery,
                event,
                finish,
                elapsed: Duration::ZERO,
            };
        };
        // A delivery claimed more often than the schedule allows attempts
        // kept killing its process (or losing its lease) before it could
        // record a failure: stop trying.
        if delivery.attempts as usize > self.settings.retry_schedule.len() + 1 {
            let error = format!(
                "claimed {} times without finishing (the handler may crash its process)",
                delivery.attempts
            );
            return Attempt {
                delivery,
                event,
                finish: Finish::Dead { error },
                elapsed: Duration::ZERO,
            };
        }
        let started = Instant::now();
        let call = std::panic::AssertUnwindSafe(subscription.handler.handle(&event)).catch_unwind();
        let result = match tokio::time::timeout(self.settings.handler_timeout, call).await {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err(HandlerError::retry("the handler panicked")),
            Err(_) => Err(HandlerError::retry(format!(
                "timed out after {:?}",
                self.settings.handler_timeout
            ))),
        };
        let elapsed = started.elapsed();
        let attempts = u32::try_from(delivery.attempts).unwrap_or(u32::MAX);
        let finish = match result {
            Ok(()) => Finish::Done,
            Err(HandlerError::Defer { until, reason }) => Finish::Defer { until, reason },
            Err(HandlerError::Permanent(error)) => Finish::Dead { error },
            Err(HandlerError::Retry {
                reason,
                retry_after,
            }) => match next_delay(
                &self.settings.retry_schedule,
                self.settings.retry_jitter,
                attempts,
                retry_after,
            ) {
                Some(delay) => Finish::RetryAt {
                    at: OffsetDateTime::now_utc() + delay,
                    error: reason,
                },
                None => Finish::Dead {
                    error: format!("{reason} (gave up after {attempts} attempts)"),
                },
            },
        };
        Attempt {
            delivery,
            event,
            finish,
            elapsed,
        }
    }

    /// Logs and counts a recorded attempt.
    fn report(&self, attempt: &Attempt, recorded: bool) -> Outcome {
        let Attempt {
            delivery,
            event,
            finish,
            elapsed,
        } = attempt;
        let handler = delivery.handler.clone();
        if !recorded {
            tracing::warn!(handler = %handler, event_id = %event.id,
                "the delivery's lease ran out before the handler finished; another process owns it now");
            return Outcome::LeaseLost;
        }
        let outcome = match finish {
            Finish::Done => Outcome::Done,
            Finish::RetryAt { error, .. } => {
                tracing::warn!(handler = %handler, event_id = %event.id, event_type = %event.event_type,
                    attempt = delivery.attempts, error = %error, "event handler failed; will retry");
                Outcome::Retried
            }
            Finish::Defer { reason, .. } => {
                tracing::info!(handler = %handler, event_id = %event.id, reason = %reason, "event delivery deferred");
                Outcome::Retried
            }
            Finish::Dead { error } => {
                tracing::error!(handler = %handler, event_id = %event.id, event_type = %event.event_type,
                    attempt = delivery.attempts, error = %error, "event delivery became a dead letter");
                Outcome::Dead
            }
        };
        let label = match outcome {
            Outcome::Done => "done",
            Outcome::Retried => "retry",
            Outcome::Dead => "dead",
            Outcome::LeaseLost => "lease_lost",
        };
        metrics::counter!("kedai_event_deliveries_total", "handler" => handler.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("kedai_event_handler_seconds", "handler" => handler.clone())
            .record(elapsed.as_secs_f64());
        if outcome == Outcome::Done {
            let lag = (OffsetDateTime::now_utc() - event.occurred_at).as_seconds_f64();
            metrics::histogram!("kedai_event_lag_seconds", "handler" => handler)
                .record(lag.max(0.0));
        }
        outcome
    }
}

/// A leased delivery and its event.
type Claimed = (delivery::Model, Event);

/// (handler, the handler's ordering key).
type OrderingKey = (String, String);

/// One handler call and what to record for it.
struct Attempt {
    delivery: delivery::Model,
    event: Event,
    finish: Finish,
    elapsed: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Done,
    Retried,
    Dead,
    LeaseLost,
}
