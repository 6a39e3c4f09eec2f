//! Contract tests of the cache adapter, run against the in-process backend
//! and against Redis when `KEDAI_TEST_REDIS_URL` is set (each test under its
//! own key prefix, deleted afterwards).

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use kedai::platform::cache::{Cache, MemoryCache, RateDecision, RedisCache};

use crate::helpers::service_url;

/// A Redis cache under a fresh prefix; the prefix's keys are deleted on drop.
struct RedisUnderTest {
    cache: Arc<RedisCache>,
    pool: deadpool_redis::Pool,
    prefix: String,
}

impl RedisUnderTest {
    fn create() -> Option<RedisUnderTest> {
        let url = service_url("KEDAI_TEST_REDIS_URL")?;
        let pool = deadpool_redis::Config::from_url(url)
            .create_pool(Some(deadpool_redis::Runtime::Tokio1))
            .expect("a Redis pool");
        let prefix = format!("kedai-test-{}:", uuid::Uuid::now_v7().simple());
        Some(RedisUnderTest {
            cache: Arc::new(RedisCache::with_pool(pool.clone(), &prefix)),
            pool,
            prefix,
        })
    }

    async fn cleanup(&self) {
        let mut connection = self.pool.get().await.unwrap();
        let keys: Vec<String> = connection.keys(format!("{}*", self.prefix)).await.unwrap();
        if !keys.is_empty() {
            connection.del::<_, ()>(keys).await.unwrap();
        }
    }
}

macro_rules! cache_contract {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name(std::sync::Arc::new(kedai::platform::cache::MemoryCache::new())).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(redis) = super::RedisUnderTest::create() else { return };
                    super::$name(redis.cache.clone()).await;
                    redis.cleanup().await;
                }
            )*
        }
    };
}

cache_contract!(
    values_round_trip_and_expire,
    set_if_absent_stores_once,
    touch_extends_life_and_fails_on_missing_keys,
    rate_limits_allow_a_burst_then_say_when_to_retry,
    rate_limits_are_per_key,
    it_answers_ping,
);

async fn values_round_trip_and_expire(cache: Arc<impl Cache + ?Sized>) {
    assert_eq!(cache.get("session:a").await.unwrap(), None);
    cache
        .set("session:a", b"hello", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get("session:a").await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    cache
        .set("session:a", b"again", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(
        cache.get("session:a").await.unwrap().as_deref(),
        Some(&b"again"[..])
    );
    cache.delete("session:a").await.unwrap();
    assert_eq!(cache.get("session:a").await.unwrap(), None);

    cache
        .set("short", b"x", Duration::from_millis(150))
        .await
        .unwrap();
    assert!(cache.get("short").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(cache.get("short").await.unwrap(), None, "expired");
}

async fn set_if_absent_stores_once(cache: Arc<impl Cache + ?Sized>) {
    assert!(
        cache
            .set_if_absent("sid:1", b"first", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert!(
        !cache
            .set_if_absent("sid:1", b"second", Duration::from_secs(60))
            .await
            .unwrap()
    );
    assert_eq!(
        cache.get("sid:1").await.unwrap().as_deref(),
        Some(&b"first"[..])
    );
}

async fn touch_extends_life_and_fails_on_missing_keys(cache: Arc<impl Cache + ?Sized>) {
    cache
        .set("slide", b"v", Duration::from_millis(250))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(cache.touch("slide", Duration::from_secs(5)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        cache.get("slide").await.unwrap().is_some(),
        "the touch extended it"
    );
    assert!(
        !cache
            .touch("never-set", Duration::from_secs(5))
            .await
            .unwrap()
    );
}

async fn rate_limits_allow_a_burst_then_say_when_to_retry(cache: Arc<impl Cache + ?Sized>) {
    let window = Duration::from_secs(60);
    for i in 0..5 {
        assert_eq!(
            cache.hit("rl:+60123", 5, window).await.unwrap(),
            RateDecision::Allowed,
            "hit {i}"
        );
    }
    match cache.hit("rl:+60123", 5, window).await.unwrap() {
        RateDecision::Limited { retry_after } => {
            assert!(
                retry_after > Duration::from_secs(10) && retry_after <= Duration::from_secs(12),
                "{retry_after:?}"
            );
        }
        RateDecision::Allowed => panic!("the sixth hit in a minute must be limited"),
    }
    // A limit of 20 per second refills quickly.
    for _ in 0..20 {
        assert!(
            cache
                .hit("rl:fast", 20, Duration::from_secs(1))
                .await
                .unwrap()
                .is_allowed()
        );
    }
    assert!(
        !cache
            .hit("rl:fast", 20, Duration::from_secs(1))
            .await
            .unwrap()
            .is_allowed()
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        cache
            .hit("rl:fast", 20, Duration::from_secs(1))
            .await
            .unwrap()
            .is_allowed()
    );
}

async fn rate_limits_are_per_key(cache: Arc<impl Cache + ?Sized>) {
    let window = Duration::from_secs(60);
    assert!(cache.hit("rl:a", 1, window).await.unwrap().is_allowed());
    assert!(!cache.hit("rl:a", 1, window).await.unwrap().is_allowed());
    assert!(cache.hit("rl:b", 1, window).await.unwrap().is_allowed());
}

async fn it_answers_ping(cache: Arc<impl Cache + ?Sized>) {
    cache.ping().await.unwrap();
    assert!(["memory", "redis"].contains(&cache.kind()));
}

#[tokio::test]
async fn an_unreachable_redis_is_reported_not_hung() {
    let pool = deadpool_redis::Config::from_url("redis://127.0.0.1:1")
        .create_pool(Some(deadpool_redis::Runtime::Tokio1))
        .unwrap();
    let cache = RedisCache::with_pool(pool, "x:");
    let result = tokio::time::timeout(Duration::from_secs(10), cache.ping())
        .await
        .expect("fails fast");
    assert!(result.is_err());
    let _ = MemoryCache::new();
}
