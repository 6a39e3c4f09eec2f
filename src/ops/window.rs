//! In-process rolling metrics: what this replica saw in the last five
//! minutes, for the alert rules and the dashboard (Prometheus keeps the
//! long history; these answer "right now" without a query engine).
//!
//! A [`RollingWindow`] is a ring of time buckets (10 s × 30 by default).
//! Each bucket counts events, errors and a latency histogram with fixed
//! bounds; a bucket is reused, and cleared, once its time has passed out
//! of the window. Recording takes one short mutex (a handful of adds, no
//! allocation): it sits on every request and every database statement.
//!
//! Percentiles come from the histogram: the upper bound of the bucket the
//! rank falls in (never above the largest value seen). The bounds include
//! the thresholds the rules use (200 ms, 1 s), so "p99 above 200 ms" reads
//! exactly "more than 1 % took longer than 200 ms".

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::platform::upstream::UpstreamSignals;

/// Upper bounds of the latency buckets, in microseconds; a last bucket
/// holds everything slower.
const BOUNDS_US: [u64; 15] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 300_000, 500_000,
    1_000_000, 2_000_000, 5_000_000, 10_000_000,
];
const SLOTS: usize = BOUNDS_US.len() + 1;

/// The default ring: 30 buckets of 10 seconds.
pub const DEFAULT_BUCKET: Duration = Duration::from_secs(10);
pub const DEFAULT_BUCKETS: usize = 30;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Which tick (bucket-length period since the window's origin) the
    /// figures belong to; `u64::MAX` when never used.
    tick: u64,
    count: u64,
    errors: u64,
    latency: [u64; SLOTS],
    max_us: u64,
}

impl Bucket {
    const EMPTY: Bucket = Bucket {
        tick: u64::MAX,
        count: 0,
        errors: 0,
        latency: [0; SLOTS],
        max_us: 0,
    };
}

/// Counts, errors and latencies over the last `bucket × buckets`.
#[derive(Debug)]
pub struct RollingWindow {
    origin: Instant,
    bucket: Duration,
    ring: Mutex<Vec<Bucket>>,
}

impl Default for RollingWindow {
    fn default() -> Self {
        RollingWindow::new(DEFAULT_BUCKET, DEFAULT_BUCKETS)
    }
}

fn slot_of(latency: Duration) -> usize {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    BOUNDS_US
        .iter()
        .position(|bound| micros <= *bound)
        .unwrap_or(BOUNDS_US.len())
}

impl RollingWindow {
    /// A window of `buckets` buckets of `bucket` each (both at least 1).
    pub fn new(bucket: Duration, buckets: usize) -> Self {
        RollingWindow {
            origin: Instant::now(),
            bucket: bucket.max(Duration::from_millis(1)),
            ring: Mutex::new(vec![Bucket::EMPTY; buckets.max(1)]),
        }
    }

    /// How far back the window reaches.
    pub fn span(&self) -> Duration {
        let buckets = self.ring.lock().map_or(DEFAULT_BUCKETS, |ring| ring.len());
        self.bucket * u32::try_from(buckets).unwrap_or(u32::MAX)
    }

    fn tick(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / self.bucket.as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Records one event that took `latency`, now.
    pub fn record(&self, latency: Duration, error: bool) {
        self.record_at(Instant::now(), latency, error);
    }

    /// Records one event that took `latency` at `at` (tests pick the time).
    pub fn record_at(&self, at: Instant, latency: Duration, error: bool) {
        let tick = self.tick(at);
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        let len = ring.len() as u64;
        let bucket = &mut ring[(tick % len) as usize];
        if bucket.tick != tick {
            *bucket = Bucket {
                tick,
                ..Bucket::EMPTY
            };
        }
        bucket.count += 1;
        bucket.errors += u64::from(error);
        bucket.latency[slot_of(latency)] += 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        bucket.max_us = bucket.max_us.max(micros);
    }

    /// The figures of the whole window, now.
    pub fn snapshot(&self) -> WindowSnapshot {
        self.snapshot_at(Instant::now())
    }

    /// The figures of the window that ends at `at`.
    pub fn snapshot_at(&self, at: Instant) -> WindowSnapshot {
        let now = self.tick(at);
        let mut snapshot = WindowSnapshot::default();
        let Ok(ring) = self.ring.lock() else {
            return snapshot;
        };
        let len = ring.len() as u64;
        for bucket in ring.iter() {
            let live = bucket.tick <= now && now - bucket.tick < len;
            if !live {
                continue;
            }
            snapshot.count += bucket.count;
            snapshot.errors += bucket.errors;
            for (total, n) in snapshot.latency.iter_mut().zip(bucket.latency) {
                *total += n;
            }
            snapshot.max = snapshot.max.max(Duration::from_micros(bucket.max_us));
        }
        snapshot
    }
}

/// What a window held at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowSnapshot {
    pub count: u64,
    pub errors: u64,
    latency: [u64; SLOTS],
    /// The slowest event seen.
    pub max: Duration,
}

impl WindowSnapshot {
    /// A snapshot of these figures (tests and rule examples).
    pub fn from_latencies(latencies: &[(Duration, bool)]) -> WindowSnapshot {
        let mut snapshot = WindowSnapshot::default();
        for (latency, error) in latencies {
            snapshot.count += 1;
            snapshot.errors += u64::from(*error);
            snapshot.latency[slot_of(*latency)] += 1;
            snapshot.max = snapshot.max.max(*latency);
        }
        snapshot
    }

    /// Errors per event; `None` when nothing happened.
    pub fn error_rate(&self) -> Option<f64> {
        (self.count > 0).then(|| self.errors as f64 / self.count as f64)
    }

    /// The latency below which a share `q` (0–1) of events fell, as the
    /// upper bound of its histogram bucket (at most the slowest seen);
    /// `None` when nothing happened.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (slot, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(match BOUNDS_US.get(slot) {
                    Some(bound) => Duration::from_micros(*bound).min(self.max),
                    None => self.max,
                });
            }
        }
        Some(self.max)
    }

    pub fn p99(&self) -> Option<Duration> {
        self.quantile(0.99)
    }
}

/// What this replica observes about itself: HTTP requests, database
/// statements and the vendors' throttling. One per application (never a
/// global, so tests run many apps in one process).
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Every HTTP request: latency, and whether it answered 5xx.
    pub http: Arc<RollingWindow>,
    /// Every database statement (sea-orm's metric callback): latency, and
    /// whether it failed.
    pub database: Arc<RollingWindow>,
    pub upstreams: UpstreamSignals,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn the_error_rate_counts_errors_per_event() {
        let window = RollingWindow::default();
        assert_eq!(window.snapshot().error_rate(), None);
        for i in 0..200 {
            window.record(ms(3), i < 3);
        }
        let snapshot = window.snapshot();
        assert_eq!((snapshot.count, snapshot.errors), (200, 3));
        assert_eq!(snapshot.error_rate(), Some(0.015));
    }

    #[test]
    fn p99_is_the_bucket_bound_of_the_99th_percentile() {
        // 98 fast, 2 slow: the 99th of 100 is slow.
        let mut events = vec![(ms(3), false); 98];
        events.extend([(ms(250), false), (ms(260), false)]);
        let snapshot = WindowSnapshot::from_latencies(&events);
        assert_eq!(
            snapshot.p99(),
            Some(ms(260)),
            "the 300 ms bound, capped by the max"
        );
        assert_eq!(snapshot.quantile(0.5), Some(ms(5)), "the 5 ms bound");
        // 99 fast, 1 slow: the 99th is still fast.
        let mut events = vec![(ms(3), false); 99];
        events.push((ms(900), false));
        let snapshot = WindowSnapshot::from_latencies(&events);
        assert_eq!(snapshot.p99(), Some(ms(5)));
        assert_eq!(snapshot.max, ms(900));
        // Slower than every bound: the largest value seen.
        let snapshot = WindowSnapshot::from_latencies(&[(Duration::from_secs(42), false)]);
        assert_eq!(snapshot.p99(), Some(Duration::from_secs(42)));
        // Exactly on a bound stays in it: 200 ms is not above 200 ms.
        let snapshot = WindowSnapshot::from_latencies(&[(ms(200), false); 10]);
        assert!(snapshot.p99().unwrap() <= ms(200));
        assert_eq!(WindowSnapshot::default().p99(), None);
    }

    #[test]
    fn buckets_expire_as_time_moves_past_the_window() {
        let window = RollingWindow::new(Duration::from_secs(10), 30);
        let start = Instant::now();
        window.record_at(start, ms(400), true);
        window.record_at(start + Duration::from_secs(125), ms(2), false);
        let at = |secs| window.snapshot_at(start + Duration::from_secs(secs));
        assert_eq!(at(0).count, 1);
        assert_eq!(at(299).count, 2, "both inside five minutes");
        assert_eq!(at(299).p99(), Some(ms(400)));
        let later = at(301);
        assert_eq!((later.count, later.errors), (1, 0), "the first has expired");
        assert_eq!(later.p99(), Some(ms(2)));
        assert_eq!(at(430).count, 0, "both have expired");
        assert_eq!(window.span(), Duration::from_secs(300));
    }

    #[test]
    fn a_reused_bucket_starts_from_zero() {
        let window = RollingWindow::new(Duration::from_secs(1), 3);
        let start = Instant::now();
        for _ in 0..5 {
            window.record_at(start, ms(1), true);
        }
        // Tick 3 lands in the ring slot of tick 0.
        window.record_at(start + Duration::from_secs(3), ms(1), false);
        let snapshot = window.snapshot_at(start + Duration::from_secs(3));
        assert_eq!((snapshot.count, snapshot.errors), (1, 0));
    }

    #[test]
    fn recording_from_many_threads_loses_nothing() {
        let window = Arc::new(RollingWindow::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let window = window.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        window.record(ms(1), false);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(window.snapshot().count, 4000);
    }
}
