//! A channel's send-rate limit: sends are spaced evenly at the configured rate
//! (GCRA, no burst), so a batch handled concurrently stays under the API's limit
//! instead of collecting 429s. The limit holds per process, that is per Lambda
//! instance: the function's concurrency times the rate is the bound overall.

use crate::config::ConfigError;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone)]
pub struct SendPacer {
    per_second: f64,
    limiter: Arc<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for SendPacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendPacer")
            .field("per_second", &self.per_second)
            .finish()
    }
}

impl SendPacer {
    /// At most `per_second` sends a second (fractions allowed: 0.5 is one every
    /// two seconds), `what` naming the setting in the error.
    pub fn new(what: &str, per_second: f64) -> Result<Self, ConfigError> {
        let period = (per_second.is_finite() && per_second > 0.0)
            .then(|| Duration::try_from_secs_f64(1.0 / per_second).ok())
            .flatten()
            .and_then(Quota::with_period)
            .ok_or_else(|| {
                ConfigError::invalid(
                    what,
                    format!("{per_second} is not a number of sends per second above 0"),
                )
            })?;
        Ok(SendPacer {
            per_second,
            limiter: Arc::new(RateLimiter::direct(period)),
        })
    }

    /// Waits for this send's turn.
    pub async fn until_ready(&self) {
        while let Err(not_until) = self.limiter.check() {
            let at = tokio::time::Instant::from_std(not_until.earliest_possible());
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_that_is_not_positive_is_refused_with_the_setting_named() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let error = SendPacer::new("TELEGRAM_MAX_SENDS_PER_SECOND", bad).unwrap_err();
            assert!(
                error.to_string().contains("TELEGRAM_MAX_SENDS_PER_SECOND"),
                "{error}"
            );
        }
    }

    #[tokio::test]
    async fn sends_are_spaced_at_the_rate_without_a_burst() {
        let pacer = SendPacer::new("rate", 100.0).unwrap();
        let started = std::time::Instant::now();
        let mut turns = Vec::new();
        for _ in 0..5 {
            pacer.until_ready().await;
            turns.push(started.elapsed());
        }
        // Lower bounds only (a slow machine only widens the gaps): each send
        // 10 ms after the one before at the earliest.
        for pair in turns.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(9), "{turns:?}");
        }
        assert!(
            turns[4] - turns[0] >= Duration::from_millis(39),
            "{turns:?}"
        );
    }
}
