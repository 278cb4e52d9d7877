//! Secrets that carry a name some credential writes, whoever made them, as metadata only:
//! one field-selected watch per distinct `secretName`.
//!
//! regcred caches its own Secrets by label. Without this, a same-named Secret someone
//! else made (the migration case: the old CronJob's Secret) could only be found by a
//! create the API server refuses: again on every restart, and every few minutes to notice
//! that it was deleted. With it, such a Secret costs no request, and its deletion hands
//! the name over at once.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use regcred_api::names::MANAGED_LABEL;
use tracing::{debug, warn};

/// At most this many names are watched (one watch each); further names fall back to a
/// create that may be refused.
pub(crate) const MAX_WATCHED_NAMES: usize = 32;

/// What the watch of a name knows of one namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seen {
    /// No Secret of that name.
    Absent,
    /// A Secret of that name without regcred's label: someone else's.
    Foreign,
    /// A Secret of that name labelled as regcred's that the labelled cache does not hold
    /// (yet, or any more): the two watches are a moment apart, ask again shortly.
    InFlight,
}

/// The watches, by Secret name.
#[derive(Clone, Default)]
pub(crate) struct NamedSecrets {
    watches: Arc<Mutex<HashMap<String, Watch>>>,
}

struct Watch {
    store: Arc<Mutex<Holders>>,
    listed: Arc<AtomicBool>,
    /// Failed before its first list (no permission, API errors): do not wait for it.
    failed: Arc<AtomicBool>,
    task: tokio::task::AbortHandle,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl NamedSecrets {
    /// What is known of a Secret `namespace/name` whose labelled copy regcred does not
    /// cache: `None` while `name` is not watched or its first list has not arrived (ask
    /// the API server then).
    pub(crate) fn seen(&self, namespace: &str, name: &str) -> Option<Seen> {
        let watches = self.watches.lock().expect("named secrets lock");
        let watch = watches.get(name)?;
        if !watch.listed.load(Ordering::Acquire) {
            return None;
        }
        let holders = watch.store.lock().expect("named secrets lock");
        Some(match holders.current.get(namespace) {
            None => Seen::Absent,
            Some(Holder::LabelledManaged) => Seen::InFlight,
            Some(Holder::Other) => Seen::Foreign,
        })
    }

    /// Whether `name` is watched and its watch may still list (not failed before it).
    fn pending(&self, name: &str) -> bool {
        let watches = self.watches.lock().expect("named secrets lock");
        watches
            .get(name)
            .is_some_and(|w| !w.failed.load(Ordering::Acquire))
    }

    /// Like [`Self::seen`], but waits (up to `patience`) for the first list of a name
    /// that is watched already: right after a start, the answer is a moment away and
    /// spares a create the API server would refuse.
    pub(crate) async fn seen_soon(
        &self,
        namespace: &str,
        name: &str,
        patience: std::time::Duration,
    ) -> Option<Seen> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match self.seen(namespace, name) {
                Some(known) => return Some(known),
                None if !self.pending(name) || tokio::time::Instant::now() >= deadline => {
                    return None;
                }
                None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    }

    /// Watches exactly `names`: starts the missing watches, stops the unneeded ones.
    /// `changed(namespace)` is called when a Secret of a watched name appears, changes or
    /// goes in `namespace`.
    pub(crate) fn watch_only(
        &self,
        client: &Client,
        names: BTreeSet<String>,
        changed: impl Fn(&str) + Clone + Send + Sync + 'static,
    ) {
        let mut watches = self.watches.lock().expect("named secrets lock");
        watches.retain(|name, _| names.contains(name));
        for name in names {
            if watches.contains_key(&name) {
                continue;
            }
            debug!(secret = %name, "watching Secrets of this name");
            watches.insert(name.clone(), start(client.clone(), &name, changed.clone()));
        }
    }
}

/// Who holds the name in a namespace: all that is kept of each Secret (one per namespace
/// for each watched name, so as many as the namespaces a credential covers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    LabelledManaged,
    Other,
}

impl Holder {
    fn of(secret: &PartialObjectMeta<Secret>) -> Self {
        if secret.labels().get(MANAGED_LABEL).map(String::as_str) == Some("true") {
            Holder::LabelledManaged
        } else {
            Holder::Other
        }
    }
}

/// The holders by namespace, and the next set while a (re-)list arrives.
#[derive(Default)]
struct Holders {
    current: HashMap<String, Holder>,
    listing: Option<HashMap<String, Holder>>,
}

impl Holders {
    fn apply(&mut self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let namespace = |s: &PartialObjectMeta<Secret>| s.namespace().unwrap_or_default();
        match event {
            watcher::Event::Init => self.listing = Some(HashMap::new()),
            watcher::Event::InitApply(s) => {
                let listing = self.listing.get_or_insert_default();
                listing.insert(namespace(s), Holder::of(s));
            }
            watcher::Event::InitDone => {
                self.current = self.listing.take().unwrap_or_default();
            }
            watcher::Event::Apply(s) => {
                self.current.insert(namespace(s), Holder::of(s));
            }
            watcher::Event::Delete(s) => {
                self.current.remove(&namespace(s));
            }
        }
    }
}

fn start(client: Client, name: &str, changed: impl Fn(&str) + Send + Sync + 'static) -> Watch {
    let store = Arc::new(Mutex::new(Holders::default()));
    let writer = store.clone();
    let listed = Arc::new(AtomicBool::new(false));
    // Listed from the API server's watch cache (resourceVersion 0), not as a consistent
    // read: this watch starts after the credentials' lists, by when the controller's own
    // Lease write has usually moved etcd past the Secrets cache, and a consistent list
    // then waits for etcd's next progress notification (up to 100 ms: the benchmark saw
    // 87 and 98 ms before the first write of a cold start). The view may be stale (a
    // lagging API server, a re-list). That is safe: regcred only ever creates where no
    // Secret is known (the API server refuses a same-named one: 409, unmanaged), and
    // admission may point at the name early, as before the first list.
    let mut config = watcher::Config::default()
        .fields(&format!("metadata.name={name}"))
        .any_semantic();
    // kube sends no resourceVersion=0 with a page size: one list, as client-go's informers
    // make it (at most one small metadata object per namespace).
    config.page_size = None;
    let events = watcher(Api::<PartialObjectMeta<Secret>>::all(client), config)
        .backoff(crate::watch_backoff::WatchBackoff::default())
        .inspect_ok(move |event| writer.lock().expect("named secrets lock").apply(event));
    let failed = Arc::new(AtomicBool::new(false));
    let (seen, failing) = (listed.clone(), failed.clone());
    let task = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            if event.is_err() && !seen.load(Ordering::Acquire) {
                failing.store(true, Ordering::Release);
            }
            match event {
                Ok(watcher::Event::InitDone) => {
                    failing.store(false, Ordering::Release);
                    seen.store(true, Ordering::Release);
                }
                // A Secret of regcred's that appears or changes arrives through the
                // labelled watch already (a fan-out must not trigger twice); someone else's,
                // and any deletion (this store may be the later of the two to see it), is
                // news here.
                Ok(watcher::Event::Apply(s))
                    if s.labels().get(MANAGED_LABEL).map(String::as_str) == Some("true") => {}
                Ok(watcher::Event::Apply(s) | watcher::Event::Delete(s)) => {
                    changed(&s.namespace().unwrap_or_default());
                }
                Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                Err(e) => warn!(error = %e, "watch of same-named Secrets failed; retrying"),
            }
        }
    });
    Watch {
        store,
        listed,
        failed,
        task: task.abort_handle(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use kube::core::{ObjectMeta, PartialObjectMetaExt};
    use watcher::Event;

    use super::*;

    fn secret(namespace: &str, managed: bool) -> PartialObjectMeta<Secret> {
        let labels = managed.then(|| BTreeMap::from([(MANAGED_LABEL.into(), "true".into())]));
        ObjectMeta {
            name: Some("pull".into()),
            namespace: Some(namespace.into()),
            labels,
            ..Default::default()
        }
        .into_response_partial()
    }

    #[test]
    fn holders_follow_events_and_a_relist_replaces_them_whole() {
        let mut holders = Holders::default();
        holders.apply(&Event::Init);
        holders.apply(&Event::InitApply(secret("a", true)));
        holders.apply(&Event::InitApply(secret("b", false)));
        assert!(
            holders.current.is_empty(),
            "nothing until the list is complete"
        );
        holders.apply(&Event::InitDone);
        assert_eq!(holders.current["a"], Holder::LabelledManaged);
        assert_eq!(holders.current["b"], Holder::Other);

        holders.apply(&Event::Apply(secret("c", false)));
        holders.apply(&Event::Delete(secret("a", true)));
        assert_eq!(holders.current.get("a"), None);
        assert_eq!(holders.current["c"], Holder::Other);

        // A re-list: what it does not hold (deleted meanwhile) is gone.
        holders.apply(&Event::Init);
        holders.apply(&Event::InitApply(secret("c", true)));
        holders.apply(&Event::InitDone);
        assert_eq!(
            holders.current,
            HashMap::from([("c".to_owned(), Holder::LabelledManaged)])
        );
    }
}
