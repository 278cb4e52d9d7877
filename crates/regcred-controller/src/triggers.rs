//! Maps watch events of every cached kind to the objects whose reconcile they affect.
//! Deletions count too (a deleted credential must lose its `imagePullSecrets` entries),
//! which is why this is not left to shared controller streams.

use futures::channel::mpsc::UnboundedSender;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use regcred_api::{ClusterRegistryCredential, RegistryCredential};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::account_queue::AccountQueue;
use crate::cached_account::CachedServiceAccount;
use crate::cached_secret::{CachedSecret, PullSecret};
use crate::context::{CacheLag, ObjectKey, Stores};
use crate::credential::{Credential, CredentialId, Kind};
use crate::recounts::{RECOUNT_INTERVAL, Recounts};
use crate::service_accounts;

/// Where reconcile requests go.
#[derive(Clone)]
pub(crate) struct Triggers {
    pub(crate) stores: Stores,
    /// Told when the watch delivers a version newer than regcred's own last write.
    pub(crate) cache_lag: Arc<CacheLag>,
    pub(crate) credentials: UnboundedSender<ObjectRef<RegistryCredential>>,
    pub(crate) cluster_credentials: UnboundedSender<ObjectRef<ClusterRegistryCredential>>,
    pub(crate) service_accounts: UnboundedSender<ObjectRef<CachedServiceAccount>>,
    /// Namespaces for the fast path ([`crate::namespace_writes`]).
    pub(crate) namespaces: UnboundedSender<String>,
    /// The generation and deletion state last seen of each credential: a status write
    /// changes neither, and must not recheck every ServiceAccount in the cluster.
    pub(crate) seen_credentials: Arc<Mutex<HashMap<ObjectKey, SeenCredential>>>,
    /// The ServiceAccounts of each namespace: an event about one namespace rechecks its
    /// own, without a scan of every ServiceAccount in the cluster.
    pub(crate) accounts_by_namespace: Arc<Mutex<AccountIndex>>,
    /// For the watches of same-named Secrets.
    pub(crate) client: kube::Client,
    /// False in admission's Pod mode: no ServiceAccount is ever queued.
    pub(crate) patch_service_accounts: bool,
    /// Namespaces whose ServiceAccounts wait to be judged.
    pub(crate) account_queue: Arc<AccountQueue>,
    /// Credentials whose status counts wait for a recount.
    pub(crate) recounts: Arc<Recounts>,
}

/// A credential's generation, and whether it is being deleted.
type SeenCredential = (Option<i64>, bool);

/// Namespace → names of its ServiceAccounts, as the watch delivered them.
pub(crate) type AccountIndex = HashMap<String, Names>;

/// A namespace's ServiceAccount names, sorted: a few per namespace, where a set's tree
/// node alone would cost hundreds of bytes each.
#[derive(Debug, Default)]
pub(crate) struct Names(Vec<String>);

impl Names {
    fn insert(&mut self, name: String) {
        if let Err(at) = self.0.binary_search(&name) {
            self.0.insert(at, name);
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(at) = self.0.binary_search_by(|n| n.as_str().cmp(name)) {
            self.0.remove(at);
        }
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> IntoIterator for &'a Names {
    type Item = &'a String;
    type IntoIter = std::slice::Iter<'a, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// The object an event is about; a re-list's end is reported as `None`.
fn touched<K>(event: &Event<K>) -> Option<Option<&K>> {
    match event {
        Event::Apply(o) | Event::Delete(o) => Some(Some(o)),
        // The initial list: every controller reconciles everything anyway.
        Event::Init | Event::InitApply(_) => None,
        // A re-list may have hidden deletions: recheck broadly.
        Event::InitDone => Some(None),
    }
}

impl Triggers {
    /// Has the ServiceAccounts of `namespace` (of every namespace for `None`) judged, and
    /// those a reconcile would change queued, through [`AccountQueue`].
    pub(crate) fn service_accounts_in(&self, namespace: Option<&str>) {
        if let Some(namespace) = namespace {
            self.account_queue.namespace(namespace);
            return;
        }
        let namespaces: Vec<String> = self
            .accounts_by_namespace
            .lock()
            .expect("account index lock")
            .keys()
            .cloned()
            .collect();
        for namespace in namespaces {
            self.account_queue.namespace(&namespace);
        }
    }

    /// Judges the namespaces [`AccountQueue`] hands out, for as long as the controller runs.
    pub(crate) async fn judge_accounts(self) {
        loop {
            let namespace = self.account_queue.next().await;
            let names: Vec<String> = {
                let index = self
                    .accounts_by_namespace
                    .lock()
                    .expect("account index lock");
                index
                    .get(&namespace)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect()
            };
            for name in names {
                let key = ObjectRef::new(&name).within(&namespace);
                if let Some(sa) = self.stores.service_accounts.get(&key)
                    && self.wants_service_account(&sa)
                {
                    self.account_queue
                        .handed_over((namespace.clone(), name.clone()));
                    let _ = self.service_accounts.unbounded_send(key);
                }
            }
            // Many namespaces may be waiting: let the watches in between.
            tokio::task::yield_now().await;
        }
    }

    /// Sends the reconciles [`Recounts`] paces, for as long as the controller runs.
    pub(crate) async fn pace_recounts(self) {
        loop {
            let due = self.recounts.next().await;
            for c in self.stores.credentials.state() {
                if c.metadata
                    .namespace
                    .as_ref()
                    .is_some_and(|ns| due.namespaces.contains(ns))
                {
                    let _ = self.credentials.unbounded_send(ObjectRef::from_obj(&*c));
                }
            }
            if due.cluster {
                self.all_cluster_credentials();
            }
            tokio::time::sleep(RECOUNT_INTERVAL).await;
        }
    }

    /// Whether the ServiceAccount controller should see this watch event's object.
    pub(crate) fn wants_service_account(&self, sa: &CachedServiceAccount) -> bool {
        self.patch_service_accounts && service_accounts::needs_reconcile(&self.stores, sa)
    }

    /// Keeps [`Triggers::accounts_by_namespace`] in step with the ServiceAccount watch; a
    /// re-list rebuilds it from the store (deletions missed meanwhile go with it).
    fn index_service_account(&self, event: &Event<CachedServiceAccount>) {
        let mut index = self
            .accounts_by_namespace
            .lock()
            .expect("account index lock");
        match event {
            Event::Apply(sa) | Event::InitApply(sa) => {
                index
                    .entry(sa.namespace().unwrap_or_default())
                    .or_default()
                    .insert(sa.name_any());
            }
            Event::Delete(sa) => {
                let namespace = sa.namespace().unwrap_or_default();
                if let Some(names) = index.get_mut(&namespace) {
                    names.remove(&sa.name_any());
                    if names.is_empty() {
                        index.remove(&namespace);
                    }
                }
            }
            Event::InitDone => {
                index.clear();
                for sa in self.stores.service_accounts.state() {
                    index
                        .entry(sa.namespace().unwrap_or_default())
                        .or_default()
                        .insert(sa.name_any());
                }
            }
            Event::Init => {}
        }
    }

    fn credentials_in(&self, namespace: &str) {
        for c in self.stores.credentials.state() {
            if c.metadata.namespace.as_deref() == Some(namespace) {
                let _ = self.credentials.unbounded_send(ObjectRef::from_obj(&*c));
            }
        }
    }

    fn all_cluster_credentials(&self) {
        for c in self.stores.cluster_credentials.state() {
            let _ = self
                .cluster_credentials
                .unbounded_send(ObjectRef::from_obj(&*c));
        }
    }

    fn credential(&self, id: &CredentialId) {
        match (id.kind, &id.namespace) {
            (Kind::Namespaced, Some(ns)) => {
                let _ = self
                    .credentials
                    .unbounded_send(ObjectRef::new(&id.name).within(ns));
            }
            (Kind::Cluster, None) => {
                let _ = self
                    .cluster_credentials
                    .unbounded_send(ObjectRef::new(&id.name));
            }
            _ => {}
        }
    }

    /// A credential changed or went: its ServiceAccounts need their entries rechecked, and
    /// competing credentials may now win or lose.
    pub(crate) fn on_credential<C: Credential>(&self, event: &Event<C>) {
        self.watch_secret_names();
        match touched(event) {
            Some(Some(c)) if !self.credential_changed(c, matches!(event, Event::Delete(_))) => {}
            Some(Some(c)) => match c.namespace() {
                Some(ns) => {
                    self.service_accounts_in(Some(&ns));
                    self.credentials_in(&ns);
                }
                None => {
                    self.service_accounts_in(None);
                    self.all_cluster_credentials();
                }
            },
            Some(None) => self.service_accounts_in(None),
            None => {}
        }
    }

    /// Every credential of both kinds and every ServiceAccount (a new leader's start).
    pub(crate) fn everything(&self) {
        for c in self.stores.credentials.state() {
            let _ = self.credentials.unbounded_send(ObjectRef::from_obj(&*c));
        }
        self.all_cluster_credentials();
        self.service_accounts_in(None);
    }

    /// Keeps one watch per Secret name that cluster credentials write (see
    /// [`crate::named_secrets`]); a change there rechecks the credentials that may write
    /// that namespace. Only the cluster kind's names: a tenant creating credentials must
    /// not be able to open cluster-wide watches (a RegistryCredential's same-named Secret
    /// is found by a refused create, remembered for a while).
    fn watch_secret_names(&self) {
        let names: std::collections::BTreeSet<String> = self
            .stores
            .cluster_credentials
            .state()
            .iter()
            .map(|c| c.secret_name())
            .take(crate::named_secrets::MAX_WATCHED_NAMES)
            .collect();
        let triggers = self.clone();
        self.stores
            .named
            .watch_only(&self.client, names, move |namespace| {
                triggers.credentials_in(namespace);
                triggers.all_cluster_credentials();
            });
    }

    /// Whether what a credential's ServiceAccounts and competitors depend on changed since
    /// its last event (its spec, through the generation, or its deletion).
    fn credential_changed<C: Credential>(&self, c: &C, deleted: bool) -> bool {
        let key = ObjectKey::of(c);
        let mut seen = self.seen_credentials.lock().expect("seen credentials lock");
        if deleted {
            seen.remove(&key);
            return true;
        }
        let state = (c.meta().generation, c.meta().deletion_timestamp.is_some());
        seen.insert(key, state) != Some(state)
    }

    /// A namespace appeared, changed labels or started terminating. After a re-list (an
    /// API server restart, an expired watch) namespaces that arrived meanwhile came in
    /// the list, not as events: recheck everything once the list is complete.
    pub(crate) fn on_namespace(&self, event: &Event<PartialObjectMeta<Namespace>>) {
        match touched(event) {
            Some(Some(ns)) => {
                let name = ns.name_any();
                if matches!(event, Event::Apply(_)) {
                    let _ = self.namespaces.unbounded_send(name.clone());
                }
                self.credentials_in(&name);
                self.all_cluster_credentials();
                self.service_accounts_in(Some(&name));
            }
            Some(None) => self.everything(),
            None => {}
        }
    }

    /// A ServiceAccount changed: the counts in status of the credentials covering it
    /// (paced, see [`Recounts`]).
    pub(crate) fn on_service_account(&self, event: &Event<CachedServiceAccount>) {
        self.index_service_account(event);
        if matches!(event, Event::InitDone) {
            // A re-list's objects were judged before the store held them, and a reconcile
            // reads the store: judge them again now that it does.
            self.service_accounts_in(None);
        }
        if let Some(Some(sa)) = touched(event)
            && let Some(ns) = sa.namespace()
        {
            let deleted = matches!(event, Event::Delete(_));
            if deleted {
                self.account_queue.done(&(ns.clone(), sa.name_any()));
            }
            let version = sa.metadata.resource_version.as_deref().filter(|_| !deleted);
            self.cache_lag
                .seen(&ObjectKey::service_account(&ns, &sa.name_any()), version);
            self.recounts.ask(&ns);
        }
    }

    /// A managed Secret changed or was deleted: restore it, let a waiting credential take
    /// the name over, and recheck the ServiceAccounts that list it.
    pub(crate) fn on_managed_secret(&self, event: &Event<CachedSecret>) {
        match touched(event) {
            Some(Some(secret)) => {
                let ns = secret.namespace().unwrap_or_default();
                let deleted = matches!(event, Event::Delete(_));
                let version = secret
                    .metadata
                    .resource_version
                    .as_deref()
                    .filter(|_| !deleted);
                self.cache_lag
                    .seen(&ObjectKey::secret(&ns, &secret.name_any()), version);
                if deleted {
                    let _ = self.namespaces.unbounded_send(ns.clone());
                }
                if let Some(owner) = secret.owner().and_then(CredentialId::parse) {
                    self.credential(&owner);
                }
                self.credentials_in(&ns);
                self.all_cluster_credentials();
                self.service_accounts_in(Some(&ns));
            }
            Some(None) => self.service_accounts_in(None),
            None => {}
        }
    }

    /// A labelled source changed: the credentials that read it.
    pub(crate) fn on_source_secret(&self, event: &Event<Secret>) {
        let Some(Some(secret)) = touched(event) else {
            return;
        };
        let (ns, name) = (secret.namespace().unwrap_or_default(), secret.name_any());
        for c in self.stores.credentials.state() {
            if reads_source(&*c, &ns, &name) {
                let _ = self.credentials.unbounded_send(ObjectRef::from_obj(&*c));
            }
        }
        for c in self.stores.cluster_credentials.state() {
            if reads_source(&*c, &ns, &name) {
                let _ = self
                    .cluster_credentials
                    .unbounded_send(ObjectRef::from_obj(&*c));
            }
        }
    }
}

/// Whether `credential` reads the source Secret `namespace/name`.
fn reads_source<C: Credential>(credential: &C, namespace: &str, name: &str) -> bool {
    let registries = &credential.spec().registries;
    let statics = registries
        .iter()
        .filter_map(|r| r.static_source.as_ref())
        .any(|s| {
            s.secret_ref.name == name
                && credential.source_namespace(&s.secret_ref) == Some(namespace)
        });
    // ECR access keys are sources too: a rotated key must reach the next mint.
    let keys = registries
        .iter()
        .filter_map(|r| r.ecr.as_ref()?.auth.as_ref()?.secret_ref.as_ref())
        .any(|k| {
            k.name == name
                && crate::minting::namespace_of(credential, k.namespace.as_deref())
                    == Some(namespace)
        });
    statics || keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_sorted_and_unique() {
        let mut names = Names::default();
        for name in ["c", "a", "b", "a"] {
            names.insert(name.to_owned());
        }
        names.remove("b");
        names.remove("missing");
        let listed: Vec<&String> = names.into_iter().collect();
        assert_eq!(listed, ["a", "c"]);
        names.remove("a");
        names.remove("c");
        assert!(names.is_empty());
    }
}
