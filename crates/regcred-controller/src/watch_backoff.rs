//! The backoff of every watch and controller trigger stream.

use std::time::Duration;

use kube::runtime::utils::Backoff;

/// How soon a failed watch lists again: quickly, and never more than half a second apart,
/// so that after an API server restart or a CRD re-install the caches (and the namespaces
/// and credentials created meanwhile) are back within a second of the server being ready.
/// kube's default grows to 30 s, which left new namespaces uncovered for a minute.
#[derive(Default)]
pub(crate) struct WatchBackoff {
    failures: u32,
}

impl WatchBackoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_millis(500);
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = Self::FIRST.saturating_mul(1 << self.failures.min(4));
        self.failures = self.failures.saturating_add(1);
        Some(wait.min(Self::CAP))
    }
}

impl Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.failures = 0;
    }
}
