//! How failed token requests are retried: bounded attempts, exponential back-off with full jitter,
//! `Retry-After` honoured up to a cap, and a bound on the total time.

use std::time::Duration;

/// Retry policy for transient token request failures (connection errors, timeouts, 5xx, 429).
///
/// Attempt `n` (from 1) that fails transiently is followed, after a delay, by attempt `n + 1`, up to
/// [`max_attempts`](Self::max_attempts). The delay is the server's `Retry-After` when it sent one
/// (a `Retry-After` longer than [`max_retry_after`](Self::max_retry_after) ends the retries), and
/// otherwise a random duration between zero and `min(max_backoff, initial_backoff * 2^(n-1))` ("full
/// jitter", so a fleet does not retry in lockstep). No retry starts once
/// [`max_elapsed`](Self::max_elapsed) would be exceeded. Errors a retry cannot fix (`invalid_client`,
/// `invalid_scope`, other 4xx, an invalid response) are never retried.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Most requests per token request, the first included (default 3; 1 disables retries).
    pub max_attempts: u32,
    /// Upper bound of the first back-off (default 200 ms).
    pub initial_backoff: Duration,
    /// Upper bound of any back-off (default 5 s).
    pub max_backoff: Duration,
    /// Longest `Retry-After` waited for (default 30 s).
    pub max_retry_after: Duration,
    /// Longest time from the first attempt to the start of the last (default 30 s).
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(30),
            max_elapsed: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt per token request.
    pub fn none() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The delay before the attempt after failed attempt `attempt` (from 1), or `None` when the
    /// policy gives up. `elapsed` is the time since the first attempt started; `retry_after` the
    /// server's request, if any.
    pub(crate) fn delay_after(
        &self,
        attempt: u32,
        elapsed: Duration,
        retry_after: Option<Duration>,
    ) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        let delay = match retry_after {
            Some(asked) if asked > self.max_retry_after => return None,
            Some(asked) => asked,
            None => {
                let ceiling = self
                    .initial_backoff
                    .saturating_mul(1u32 << (attempt - 1).min(20))
                    .min(self.max_backoff);
                random_up_to(ceiling)
            }
        };
        (elapsed.saturating_add(delay) <= self.max_elapsed).then_some(delay)
    }
}

/// A uniformly random duration in `[0, ceiling]`.
pub(crate) fn random_up_to(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(fastrand::u64(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_full_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            ..RetryPolicy::default()
        };
        for attempt in 1..10 {
            let ceiling =
                (Duration::from_millis(200) * (1 << (attempt - 1))).min(policy.max_backoff);
            for _ in 0..100 {
                let delay = policy.delay_after(attempt, Duration::ZERO, None).unwrap();
                assert!(
                    delay <= ceiling,
                    "attempt {attempt}: {delay:?} > {ceiling:?}"
                );
            }
        }
        assert_eq!(policy.delay_after(10, Duration::ZERO, None), None);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_cap_and_the_total_bound() {
        let policy = RetryPolicy::default();
        let two = Duration::from_secs(2);
        assert_eq!(policy.delay_after(1, Duration::ZERO, Some(two)), Some(two));
        assert_eq!(
            policy.delay_after(1, Duration::ZERO, Some(Duration::from_secs(31))),
            None
        );
        assert_eq!(
            policy.delay_after(1, Duration::from_secs(29), Some(two)),
            None,
            "past max_elapsed"
        );
        assert_eq!(
            RetryPolicy::none().delay_after(1, Duration::ZERO, None),
            None
        );
    }
}
