//! The retry schedule: how long a failed delivery waits before its next
//! attempt, and when it becomes a dead letter.

use std::time::Duration;

/// The delay before the next attempt after `attempts` failed ones, or
/// `None` when the schedule is spent (a dead letter). Each delay is spread
/// by ±`jitter` so that deliveries failing together do not retry together;
/// an upstream's `Retry-After` wins when it asks for longer.
pub fn next_delay(
    schedule: &[Duration],
    jitter: f64,
    attempts: u32,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    let index = usize::try_from(attempts).ok()?.checked_sub(1)?;
    let base = *schedule.get(index)?;
    let spread = jitter.clamp(0.0, 1.0) * (fastrand::f64() * 2.0 - 1.0);
    let delay = base.mul_f64(1.0 + spread);
    Some(match retry_after {
        Some(wanted) if wanted > delay => wanted,
        _ => delay,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEDULE: [Duration; 3] = [
        Duration::from_secs(5),
        Duration::from_secs(30),
        Duration::from_secs(120),
    ];

    #[test]
    fn delays_follow_the_schedule_then_stop() {
        assert_eq!(next_delay(&SCHEDULE, 0.0, 1, None), Some(SCHEDULE[0]));
        assert_eq!(next_delay(&SCHEDULE, 0.0, 2, None), Some(SCHEDULE[1]));
        assert_eq!(next_delay(&SCHEDULE, 0.0, 3, None), Some(SCHEDULE[2]));
        assert_eq!(next_delay(&SCHEDULE, 0.0, 4, None), None);
        assert_eq!(next_delay(&SCHEDULE, 0.0, 0, None), None);
        assert_eq!(next_delay(&[], 0.0, 1, None), None);
    }

    #[test]
    fn jitter_stays_within_its_spread_and_varies() {
        let delays: Vec<Duration> = (0..200)
            .map(|_| next_delay(&SCHEDULE, 0.2, 2, None).unwrap())
            .collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(24) && *d <= Duration::from_secs(36))
        );
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "jitter should spread the delays");
    }

    #[test]
    fn a_longer_retry_after_wins_and_a_shorter_one_does_not() {
        let long = Some(Duration::from_secs(90));
        assert_eq!(next_delay(&SCHEDULE, 0.0, 1, long), long);
        let short = Some(Duration::from_secs(1));
        assert_eq!(next_delay(&SCHEDULE, 0.0, 1, short), Some(SCHEDULE[0]));
        // The schedule still decides when to give up.
        assert_eq!(next_delay(&SCHEDULE, 0.0, 4, long), None);
    }
}
