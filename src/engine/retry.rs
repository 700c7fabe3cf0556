//! Retry delays: the policy's backoff ([`RetryPolicy::delay_before`]), optional ±50 %
//! jitter from a tiny PRNG (no crate for eight lines of arithmetic), capped by `max_delay`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::plan::RetryPolicy;

/// SplitMix64: small, fast, good enough to spread retries; not for anything secret.
#[derive(Debug, Clone)]
pub(crate) struct Prng(u64);

impl Prng {
    /// Seeded from the clock, the process id and the address of a local.
    pub(crate) fn from_entropy() -> Prng {
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let local = 0u8;
        let addr = &local as *const u8 as u64;
        Prng(t ^ (u64::from(std::process::id()) << 32) ^ addr.rotate_left(17))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The wait before attempt `next` (2 for the first retry).
pub(crate) fn delay(policy: &RetryPolicy, next: u32, rng: &mut Prng) -> Duration {
    let base = policy.delay_before(next);
    let d = if policy.jitter {
        base.mul_f64(0.5 + rng.unit())
    } else {
        base
    };
    match policy.max_delay {
        Some(m) => d.min(m),
        None => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model::Backoff;

    fn policy(backoff: Backoff, jitter: bool, max: Option<u64>) -> RetryPolicy {
        RetryPolicy {
            max_attempts: 10,
            backoff,
            delay: Duration::from_millis(100),
            max_delay: max.map(Duration::from_millis),
            jitter,
            on: crate::plan::default_retry_classes(),
        }
    }

    #[test]
    fn exponential_doubles_and_caps() {
        let mut rng = Prng::from_entropy();
        let p = policy(Backoff::Exponential, false, Some(350));
        let got: Vec<u128> = (2..6).map(|n| delay(&p, n, &mut rng).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
    }

    #[test]
    fn jitter_stays_within_half() {
        let mut rng = Prng::from_entropy();
        let p = policy(Backoff::Fixed, true, None);
        let all: Vec<u128> = (0..500)
            .map(|_| delay(&p, 2, &mut rng).as_millis())
            .collect();
        assert!(all.iter().all(|&d| (50..150).contains(&d)), "{all:?}");
        // Not constant: jitter actually spreads.
        assert!(all.iter().min() != all.iter().max());
    }
}
