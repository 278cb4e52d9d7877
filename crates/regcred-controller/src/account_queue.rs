//! Namespaces whose ServiceAccounts are to be judged, handed to the ServiceAccount
//! controller a bounded number of ServiceAccounts at a time.
//!
//! A cold start writes Secrets about four times faster than their namespaces'
//! ServiceAccounts can be patched, and each written Secret makes its ServiceAccounts due.
//! Queued in kube-runtime's controller, each waiting ServiceAccount costs about 800 bytes
//! (three collections hold it; at 5,000 namespaces 11 MB at the peak). Here a waiting
//! namespace costs its name, and only ServiceAccounts about to be reconciled are queued.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A ServiceAccount handed over and not yet reconciled counts for this long at most: one
/// that never reaches its reconcile (deleted meanwhile, a lost event) must not hold a slot
/// for ever.
const HANDED_OVER_FOR_AT_MOST: Duration = Duration::from_secs(60);

/// (namespace, name) of a ServiceAccount.
pub(crate) type AccountKey = (String, String);

pub(crate) struct AccountQueue {
    state: Mutex<State>,
    wake: Notify,
    /// ServiceAccounts handed over at once, at most (a namespace's are handed over
    /// together, so this may be passed by one namespace's count).
    bound: usize,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<String>,
    queued: HashSet<String>,
    handed_over: HashMap<AccountKey, Instant>,
}

impl AccountQueue {
    pub(crate) fn new(bound: usize) -> Self {
        AccountQueue {
            state: Mutex::default(),
            wake: Notify::new(),
            bound: bound.max(1),
        }
    }

    /// Asks for `namespace`'s ServiceAccounts to be judged (once, however often asked
    /// before that).
    pub(crate) fn namespace(&self, namespace: &str) {
        let mut state = self.lock();
        if state.queued.insert(namespace.to_owned()) {
            state.waiting.push_back(namespace.to_owned());
            drop(state);
            self.wake.notify_one();
        }
    }

    /// The next namespace to judge, once there is room; `handed_over` is then called for
    /// each ServiceAccount handed to the controller.
    pub(crate) async fn next(&self) -> String {
        loop {
            if let Some(namespace) = self.try_next(Instant::now()) {
                return namespace;
            }
            // Woken by a new namespace or a reconcile starting; the timeout lets stale
            // hand-overs expire.
            let _ = tokio::time::timeout(HANDED_OVER_FOR_AT_MOST, self.wake.notified()).await;
        }
    }

    fn try_next(&self, now: Instant) -> Option<String> {
        let mut state = self.lock();
        if state.handed_over.len() >= self.bound {
            state
                .handed_over
                .retain(|_, at| now.duration_since(*at) < HANDED_OVER_FOR_AT_MOST);
        }
        if state.handed_over.len() >= self.bound {
            return None;
        }
        let namespace = state.waiting.pop_front()?;
        state.queued.remove(&namespace);
        Some(namespace)
    }

    pub(crate) fn handed_over(&self, key: AccountKey) {
        self.lock().handed_over.insert(key, Instant::now());
    }

    /// A ServiceAccount's reconcile starts, or the ServiceAccount is gone: its slot is free.
    pub(crate) fn done(&self, key: &AccountKey) {
        if self.lock().handed_over.remove(key).is_some() {
            self.wake.notify_one();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: &str, name: &str) -> AccountKey {
        (namespace.into(), name.into())
    }

    #[test]
    fn namespaces_wait_while_the_controller_has_enough_and_once_each() {
        let queue = AccountQueue::new(2);
        let now = Instant::now();
        for namespace in ["a", "b", "a", "c"] {
            queue.namespace(namespace);
        }
        assert_eq!(queue.try_next(now).as_deref(), Some("a"));
        queue.handed_over(key("a", "default"));
        queue.handed_over(key("a", "builder"));
        assert_eq!(queue.try_next(now), None, "two handed over: full");
        queue.done(&key("a", "builder"));
        assert_eq!(queue.try_next(now).as_deref(), Some("b"));
        assert_eq!(
            queue.try_next(now).as_deref(),
            Some("c"),
            "asked twice, judged once"
        );
        assert_eq!(queue.try_next(now), None);
        // Asked again after it was taken: judged again.
        queue.namespace("a");
        assert_eq!(queue.try_next(now).as_deref(), Some("a"));
    }

    #[test]
    fn a_hand_over_that_never_reaches_its_reconcile_expires() {
        let queue = AccountQueue::new(1);
        queue.handed_over(key("a", "default"));
        queue.namespace("b");
        let now = Instant::now();
        assert_eq!(queue.try_next(now), None);
        let later = now + HANDED_OVER_FOR_AT_MOST + Duration::from_secs(1);
        assert_eq!(queue.try_next(later).as_deref(), Some("b"));
    }

    #[tokio::test]
    async fn next_waits_for_room_and_wakes_when_a_reconcile_starts() {
        let queue = std::sync::Arc::new(AccountQueue::new(1));
        queue.handed_over(key("a", "default"));
        queue.namespace("b");
        let waiting = tokio::spawn({
            let queue = queue.clone();
            async move { queue.next().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        queue.done(&key("a", "default"));
        let next = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(next, "b");
    }
}
