//! Short-lived shared state: sessions, rate limits, small caches.
//!
//! Two backends behind one trait: in-process (the embedded default; state
//! lives and dies with the process) and Redis (production; shared by every
//! replica, keys under `redis.key_prefix`). The same contract tests run
//! against both.

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryCache;
pub use redis::RedisCache;

use crate::config::{RedisKind, RedisSettings};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("the cache backend is unavailable: {0}")]
    Unavailable(String),
}

/// The answer of a rate limiter for one hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Over the limit; the next hit is allowed after this long.
    Limited {
        retry_after: Duration,
    },
}

impl RateDecision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, RateDecision::Allowed)
    }
}

#[async_trait::async_trait]
pub trait Cache: Send + Sync {
    /// The value under `key`, unless it expired.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Stores `value` for `ttl`, replacing any previous value.
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    /// Stores `value` only when `key` is absent; true when it was stored.
    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, CacheError>;
    /// Extends the life of `key` (sliding expiry); false when it is gone.
    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, CacheError>;
    async fn delete(&self, key: &str) -> Result<(), CacheError>;
    /// One hit against a limit of `limit` hits per `window` for `key`,
    /// smoothed (GCRA): a burst of `limit` is allowed, then one hit every
    /// `window / limit`.
    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, CacheError>;
    /// Fails when the backend does not answer; used by `/readyz`.
    async fn ping(&self) -> Result<(), CacheError>;
    /// `memory` or `redis`, for logs and health output.
    fn kind(&self) -> &'static str;
}

/// Counts one hit against each `(key, limit)` per `window`, in order, and
/// stops at the first that is over its limit: `Some(wait)` in whole
/// seconds (at least one) until it allows another, or `None` when all
/// allow it. Sign-ins and reset requests throttle per account and per
/// client address this way.
pub async fn first_limit_reached(
    cache: &dyn Cache,
    limits: &[(String, u32)],
    window: Duration,
) -> Result<Option<u64>, CacheError> {
    for (key, limit) in limits {
        if let RateDecision::Limited { retry_after } = cache.hit(key, *limit, window).await? {
            return Ok(Some(retry_after.as_secs().max(1)));
        }
    }
    Ok(None)
}

/// Builds the configured backend.
pub fn from_settings(settings: &RedisSettings) -> Result<Arc<dyn Cache>, CacheError> {
    match settings.kind {
        RedisKind::None => Ok(Arc::new(MemoryCache::new())),
        RedisKind::Redis => Ok(Arc::new(RedisCache::connect(settings)?)),
    }
}

/// GCRA arithmetic shared by both backends, in milliseconds: given the
/// stored "theoretical arrival time" (or none) and now, returns the new one
/// to store, or how long to wait.
pub(crate) fn gcra(
    stored_tat: Option<u64>,
    now: u64,
    limit: u32,
    window: Duration,
) -> Result<u64, u64> {
    let window_ms = window.as_millis().max(1) as u64;
    let interval = (window_ms / u64::from(limit.max(1))).max(1);
    let tat = stored_tat.unwrap_or(now).max(now);
    let new_tat = tat + interval;
    let allow_at = new_tat.saturating_sub(window_ms);
    if allow_at > now {
        Err(allow_at - now)
    } else {
        Ok(new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gcra_allows_a_burst_then_one_per_interval() {
        let window = Duration::from_secs(60);
        let mut tat = None;
        // 20 per minute: 20 at once are fine, the 21st waits 3 s.
        for _ in 0..20 {
            tat = Some(gcra(tat, 1_000, 20, window).expect("within the burst"));
        }
        assert_eq!(gcra(tat, 1_000, 20, window), Err(3_000));
        // Three seconds later one more fits.
        assert!(gcra(tat, 4_000, 20, window).is_ok());
        // After a quiet minute the full burst is back.
        let mut later = tat;
        for _ in 0..20 {
            later = Some(gcra(later, 70_000, 20, window).expect("burst again"));
        }
    }
}
