//! Lunch Money allows about 100 requests in any minute, v1 and v2 together. A sliding window of
//! send times keeps every rolling minute under the limit (a token bucket with a burst would not),
//! and a `Retry-After` from the server pauses everything.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(60);

pub struct RateLimiter {
    per_minute: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sent: VecDeque<Instant>,
    paused_until: Option<Instant>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        RateLimiter {
            per_minute: usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX),
            state: Mutex::new(State::default()),
        }
    }

    /// Waits until one more request fits, and counts it.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut state = self
                    .state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let now = Instant::now();
                while state
                    .sent
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= WINDOW)
                {
                    state.sent.pop_front();
                }
                match state.paused_until {
                    Some(until) if until > now => until - now,
                    _ if state.sent.len() < self.per_minute => {
                        state.sent.push_back(now);
                        return;
                    }
                    _ => (state.sent[0] + WINDOW) - now,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The server said to wait: no request goes out before `after` has passed.
    pub fn pause(&self, after: Duration) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let until = Instant::now() + after;
        if state.paused_until.is_none_or(|current| current < until) {
            state.paused_until = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_rolling_minute_exceeds_the_limit() {
        let limiter = RateLimiter::new(5);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..12 {
            limiter.acquire().await;
            times.push(start.elapsed());
        }
        assert!(
            times[..5].iter().all(|t| *t < Duration::from_millis(1)),
            "first five at once: {times:?}"
        );
        assert!(
            times[5] >= Duration::from_secs(60) && times[10] >= Duration::from_secs(120),
            "{times:?}"
        );
        for (i, t) in times.iter().enumerate().skip(5) {
            assert!(
                *t >= times[i - 5] + WINDOW,
                "request {i} inside the window of request {}",
                i - 5
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_pauses_everything() {
        let limiter = RateLimiter::new(100);
        limiter.pause(Duration::from_secs(30));
        limiter.pause(Duration::from_secs(5));
        let start = Instant::now();
        limiter.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(30),
            "the longer pause wins"
        );
    }
}
