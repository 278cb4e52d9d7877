//! What one contender did at one size, as the JSON and the tables report it.

use std::time::Duration;

use serde::Serialize;

use crate::contenders::Kind;
use crate::requests::Requests;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunResult {
    pub(crate) contender: Kind,
    pub(crate) namespaces: usize,
    pub(crate) service_accounts: usize,
    pub(crate) cold: Cold,
    pub(crate) steady: Option<Steady>,
    pub(crate) new_namespaces: Option<NewNamespaces>,
    pub(crate) rotation: Option<Rotation>,
    pub(crate) ecr: Option<EcrRotation>,
    /// VmHWM of its process; `None` for the script way (many short kubectl processes).
    pub(crate) peak_rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Cold {
    /// From the process's start to the last Secret and entry seen by the bench's watches:
    /// the median of `samples_seconds`.
    pub(crate) seconds: f64,
    /// Every cold start timed, the first on fresh namespaces, the others after the bench
    /// undid the contender's work.
    pub(crate) samples_seconds: Vec<f64>,
    /// One Secret per namespace and one patch per ServiceAccount (requests: the first start).
    pub(crate) necessary_writes: usize,
    pub(crate) requests: Requests,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Steady {
    pub(crate) idle_seconds: u64,
    /// `None` for the script way: it does not run between runs.
    pub(crate) idle: Option<Requests>,
    /// A restart (the script: a second run), until it made no request for 3 s.
    pub(crate) restart: Requests,
    pub(crate) restart_seconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct NewNamespaces {
    pub(crate) count: usize,
    pub(crate) per_second: f64,
    /// From the `default` ServiceAccount appearing to it listing the Secret.
    pub(crate) entry_ms: Percentiles,
    /// From the `default` ServiceAccount appearing to the Secret existing (0 if before).
    pub(crate) secret_ms: Percentiles,
    /// Every namespace's entry latency, sorted, for the distribution plot.
    pub(crate) entry_samples_ms: Vec<f64>,
    pub(crate) requests: Requests,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rotation {
    /// From the source's change to every Secret carrying the new password.
    pub(crate) seconds: f64,
    pub(crate) namespaces: usize,
    pub(crate) requests: Requests,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EcrRotation {
    pub(crate) token_lifetime_seconds: u64,
    pub(crate) refreshes: usize,
    pub(crate) get_authorization_token_calls: usize,
    /// Per refresh: from the first namespace's new token to the last's.
    pub(crate) rewrite_seconds: Vec<f64>,
    /// The longest any namespace held only an expired token (must be 0).
    pub(crate) max_expired_only_ms: f64,
    pub(crate) requests: Requests,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Percentiles {
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles of `sorted` (ascending; not empty).
    pub(crate) fn of(sorted: &[f64]) -> Percentiles {
        let at =
            |p: f64| sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1];
        Percentiles {
            p50: at(0.50),
            p95: at(0.95),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
        }
    }
}

pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::Percentiles;

    #[test]
    fn nearest_rank_percentiles() {
        let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
        let p = Percentiles::of(&sorted);
        assert_eq!((p.p50, p.p95, p.p99, p.max), (100.0, 190.0, 198.0, 200.0));
        let one = Percentiles::of(&[7.0]);
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
    }
}
