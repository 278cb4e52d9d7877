//! Paces the credential reconciles that ServiceAccount events ask for.
//!
//! A ServiceAccount event changes what a credential's status counts and, rarely, more:
//! whether a renamed Secret may go, or (an ECR `serviceAccountRef`) the role to mint with.
//! None of that needs to be immediate. During a fan-out every patch asked for a reconcile of
//! every credential covering its namespace, and each reconcile compares every target
//! namespace: a 300-namespace cold start ran 40 of them back to back, beside the patches.
//! Here the first request goes out at once and later ones at most once per interval,
//! merged: a steady stream of events never postpones a recount (unlike a debounce).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Status counts lag ServiceAccount changes by this much at most.
pub(crate) const RECOUNT_INTERVAL: Duration = Duration::from_millis(500);

/// What waits for the next recount.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Namespaces whose RegistryCredentials are due.
    pub(crate) namespaces: BTreeSet<String>,
    /// Whether every ClusterRegistryCredential is due.
    pub(crate) cluster: bool,
}

impl Due {
    fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && !self.cluster
    }
}

#[derive(Default)]
pub(crate) struct Recounts {
    due: Mutex<Due>,
    wake: Notify,
}

impl Recounts {
    /// Asks for the credentials covering `namespace` (both kinds) to be reconciled.
    pub(crate) fn ask(&self, namespace: &str) {
        let mut due = self.due.lock().expect("recounts lock");
        due.cluster = true;
        if !due.namespaces.contains(namespace) {
            due.namespaces.insert(namespace.to_owned());
        }
        drop(due);
        // Stores a permit when no one waits: a request is never lost.
        self.wake.notify_one();
    }

    /// What is due, once something is; then call again only after [`RECOUNT_INTERVAL`].
    pub(crate) async fn next(&self) -> Due {
        loop {
            let due = std::mem::take(&mut *self.due.lock().expect("recounts lock"));
            if !due.is_empty() {
                return due;
            }
            self.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn requests_are_merged_until_taken() {
        let recounts = Recounts::default();
        recounts.ask("a");
        recounts.ask("b");
        recounts.ask("a");
        let due = recounts.next().await;
        assert_eq!(
            due,
            Due {
                namespaces: ["a".to_owned(), "b".to_owned()].into(),
                cluster: true,
            }
        );
        // Nothing more is due until asked again.
        let waiting = tokio::time::timeout(Duration::from_millis(50), recounts.next()).await;
        assert!(waiting.is_err(), "nothing was asked: {waiting:?}");
        recounts.ask("c");
        let due = tokio::time::timeout(Duration::from_secs(1), recounts.next())
            .await
            .expect("asked after the last take");
        assert_eq!(due.namespaces, BTreeSet::from(["c".to_owned()]));
    }
}
