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

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
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
    store: Store<PartialObjectMeta<Secret>>,
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
        Some(
            match watch.store.get(&ObjectRef::new(name).within(namespace)) {
                None => Seen::Absent,
                Some(s) if s.labels().get(MANAGED_LABEL).map(String::as_str) == Some("true") => {
                    Seen::InFlight
                }
                Some(_) => Seen::Foreign,
            },
        )
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

fn start(client: Client, name: &str, changed: impl Fn(&str) + Send + Sync + 'static) -> Watch {
    let (store, writer) = reflector::store();
    let listed = Arc::new(AtomicBool::new(false));
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let events = watcher(Api::<PartialObjectMeta<Secret>>::all(client), config)
        .backoff(crate::watch_backoff::WatchBackoff::default())
        // Only the name, namespace and regcred's label are read: keep nothing else.
        .modify(|s| {
            let meta = &mut s.metadata;
            meta.managed_fields = None;
            meta.annotations = None;
            meta.owner_references = None;
            (meta.uid, meta.resource_version, s.types) = (None, None, None);
            if let Some(labels) = meta.labels.as_mut() {
                labels.retain(|k, _| k == MANAGED_LABEL);
            }
        })
        .reflect(writer);
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
