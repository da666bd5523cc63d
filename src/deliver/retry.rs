//! Every retry decision, in one place (Vector's rule): 408, 429, 5xx and network failures retry;
//! other 4xx are permanent for the transactions they concern.

use std::time::Duration;

use super::client::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again later; `after` is the server's own `Retry-After`, if it gave one.
    Retry { after: Option<Duration> },
    /// The request itself is wrong: retrying the same transactions cannot succeed.
    Permanent,
}

pub fn decide(error: &ApiError) -> Decision {
    match error {
        // No answer, or an unreadable one: the batch may have landed, and a retry is safe because
        // Lunch Money skips an external_id it already has on the account.
        ApiError::Network(_) | ApiError::Protocol(_) => Decision::Retry { after: None },
        ApiError::Http {
            status,
            retry_after,
            ..
        } => match status {
            408 | 425 | 429 | 500..=599 => Decision::Retry {
                after: *retry_after,
            },
            // A bad or revoked token is not the transactions' fault: keep them until it is fixed.
            401 | 403 => Decision::Retry {
                after: *retry_after,
            },
            _ => Decision::Permanent,
        },
    }
}

/// Exponential backoff with jitter: 2 s doubled per earlier attempt, capped at `max`, then a
/// random point in its upper half so failing clients do not retry in step.
pub fn backoff(attempts: i64, max: Duration, random: f64) -> Duration {
    let exponent = u32::try_from(attempts.clamp(0, 30)).unwrap_or(30);
    let full = Duration::from_secs(2)
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(max);
    full.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
}

/// A small xorshift generator for jitter; no security role, so no dependency.
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        Jitter(nanos | 1)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16) -> ApiError {
        ApiError::Http {
            status,
            message: String::new(),
            retry_after: Some(Duration::from_secs(3)),
            item_errors: Vec::new(),
            invalid_properties: Vec::new(),
        }
    }

    #[test]
    fn retryable_and_permanent_statuses() {
        for status in [408, 425, 429, 500, 502, 503, 599, 401, 403] {
            assert_eq!(
                decide(&http(status)),
                Decision::Retry {
                    after: Some(Duration::from_secs(3))
                },
                "{status}"
            );
        }
        for status in [400, 404, 409, 413, 422] {
            assert_eq!(decide(&http(status)), Decision::Permanent, "{status}");
        }
        assert_eq!(
            decide(&ApiError::Network("cut".into())),
            Decision::Retry { after: None }
        );
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let max = Duration::from_secs(900);
        assert_eq!(backoff(0, max, 1.0), Duration::from_secs(2));
        assert_eq!(backoff(0, max, 0.0), Duration::from_secs(1));
        assert_eq!(backoff(3, max, 1.0), Duration::from_secs(16));
        assert_eq!(backoff(40, max, 1.0), max);
        let mut jitter = Jitter::seeded();
        let samples: Vec<f64> = (0..1000).map(|_| jitter.unit()).collect();
        assert!(samples.iter().all(|x| (0.0..1.0).contains(x)));
        assert!(samples.iter().any(|x| *x < 0.1) && samples.iter().any(|x| *x > 0.9));
    }
}
