//! The in-process cache: a map behind a mutex, with lazy expiry and a
//! sweep when it grows. Right for one process; replicas need Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Cache, CacheError, RateDecision, gcra};

/// Entries beyond which every write first drops expired ones.
const SWEEP_ABOVE: usize = 100_000;

pub struct MemoryCache {
    started: Instant,
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    value: Vec<u8>,
    expires_at: Instant,
}

impl Default for MemoryCache {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryCache {
    pub fn new() -> Self {
        MemoryCache {
            started: Instant::now(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn sweep(map: &mut HashMap<String, Entry>, now: Instant) {
        if map.len() > SWEEP_ABOVE {
            map.retain(|_, entry| entry.expires_at > now);
        }
    }
}

#[async_trait::async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(key) {
            Some(entry) if entry.expires_at > now => Ok(Some(entry.value.clone())),
            Some(_) => {
                map.remove(key);
                Ok(None)
            }
            None => Ok(None),
        }
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        Self::sweep(&mut map, now);
        map.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                expires_at: now + ttl,
            },
        );
        Ok(())
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        Self::sweep(&mut map, now);
        if map.get(key).is_some_and(|entry| entry.expires_at > now) {
            return Ok(false);
        }
        map.insert(
            key.to_string(),
            Entry {
                value: value.to_vec(),
                expires_at: now + ttl,
            },
        );
        Ok(true)
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut map = self.lock();
        match map.get_mut(key) {
            Some(entry) if entry.expires_at > now => {
                entry.expires_at = now + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.lock().remove(key);
        Ok(())
    }

    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, CacheError> {
        let now_instant = Instant::now();
        let now = now_instant.duration_since(self.started).as_millis() as u64;
        let mut map = self.lock();
        Self::sweep(&mut map, now_instant);
        let stored = map
            .get(key)
            .filter(|entry| entry.expires_at > now_instant)
            .and_then(|entry| entry.value.as_slice().try_into().ok())
            .map(u64::from_be_bytes);
        match gcra(stored, now, limit, window) {
            Ok(new_tat) => {
                let ttl = Duration::from_millis(new_tat - now);
                map.insert(
                    key.to_string(),
                    Entry {
                        value: new_tat.to_be_bytes().to_vec(),
                        expires_at: now_instant + ttl,
                    },
                );
                Ok(RateDecision::Allowed)
            }
            Err(wait) => Ok(RateDecision::Limited {
                retry_after: Duration::from_millis(wait),
            }),
        }
    }

    async fn ping(&self) -> Result<(), CacheError> {
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "memory"
    }
}
