//! The Redis cache, shared by every replica, over a deadpool-redis pool.
//! Rate limiting runs GCRA as one Lua script with Redis's own clock, so
//! replicas with skewed clocks still agree.

use std::time::Duration;

use deadpool_redis::redis::{self, AsyncCommands, Script};
use deadpool_redis::{Config, Connection, Pool, Runtime};
use secrecy::ExposeSecret;

use super::{Cache, CacheError, RateDecision};
use crate::config::RedisSettings;

/// GCRA in Redis; mirrors `super::gcra`. Returns {allowed, wait_ms}.
const GCRA_SCRIPT: &str = r#"
local interval = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - window
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', new_tat - now)
return {1, 0}
"#;

pub struct RedisCache {
    pool: Pool,
    prefix: String,
    gcra: Script,
}

fn unavailable(error: impl std::fmt::Display) -> CacheError {
    CacheError::Unavailable(error.to_string())
}

fn millis(duration: Duration) -> u64 {
    (duration.as_millis() as u64).max(1)
}

impl RedisCache {
    /// Creates the pool; connections are opened on first use.
    pub fn connect(settings: &RedisSettings) -> Result<Self, CacheError> {
        let pool = Config::from_url(settings.url.expose_secret())
            .create_pool(Some(Runtime::Tokio1))
            .map_err(unavailable)?;
        Ok(Self::with_pool(pool, &settings.key_prefix))
    }

    pub fn with_pool(pool: Pool, prefix: &str) -> Self {
        RedisCache {
            pool,
            prefix: prefix.to_string(),
            gcra: Script::new(GCRA_SCRIPT),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    async fn connection(&self) -> Result<Connection, CacheError> {
        self.pool.get().await.map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut connection = self.connection().await?;
        connection.get(self.key(key)).await.map_err(unavailable)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut connection = self.connection().await?;
        connection
            .pset_ex::<_, _, ()>(self.key(key), value, millis(ttl))
            .await
            .map_err(unavailable)
    }

    async fn set_if_absent(
        &self,
        key: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let mut connection = self.connection().await?;
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(reply.is_some())
    }

    async fn touch(&self, key: &str, ttl: Duration) -> Result<bool, CacheError> {
        let mut connection = self.connection().await?;
        connection
            .pexpire(self.key(key), millis(ttl) as i64)
            .await
            .map_err(unavailable)
    }

    async fn delete(&self, key: &str) -> Result<(), CacheError> {
        let mut connection = self.connection().await?;
        connection
            .del::<_, ()>(self.key(key))
            .await
            .map_err(unavailable)
    }

    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, CacheError> {
        let mut connection = self.connection().await?;
        let window_ms = millis(window);
        let interval = (window_ms / u64::from(limit.max(1))).max(1);
        let (allowed, wait): (i64, i64) = self
            .gcra
            .key(self.key(key))
            .arg(interval)
            .arg(window_ms)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(if allowed == 1 {
            RateDecision::Allowed
        } else {
            RateDecision::Limited {
                retry_after: Duration::from_millis(wait.max(0) as u64),
            }
        })
    }

    async fn ping(&self) -> Result<(), CacheError> {
        let mut connection = self.connection().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
