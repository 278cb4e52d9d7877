//! What the bench sees, from watches of its own (as the admin, so its requests never count
//! against a contender): when each ServiceAccount appeared, each time it came to list a pull
//! Secret, and every version of the pull Secrets, with the digest of the password each held.
//! Latencies come from these watch events, never from creation timestamps.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tokio::task::JoinHandle;

use crate::dockerconfig::password_digest;

/// One version of a pull Secret, as the watch delivered it.
#[derive(Debug, Clone)]
pub(crate) struct Version {
    pub(crate) at: Instant,
    pub(crate) wall: Timestamp,
    /// SHA-256 of the password, `None` if the Secret held none for the registry.
    pub(crate) password: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) appeared: Instant,
    /// Pull Secret name → each time the account was seen coming to list it (an entry
    /// removed and added again counts again: the bench undoes a contender's work).
    pub(crate) entries: HashMap<String, Vec<Instant>>,
    /// What its latest version lists.
    listed: HashSet<String>,
}

#[derive(Default)]
struct Seen {
    /// Namespace → ServiceAccount name → what was seen of it.
    accounts: HashMap<String, HashMap<String, Account>>,
    /// (namespace, Secret name) → its versions in order.
    secrets: HashMap<(String, String), Vec<Version>>,
    /// The pull Secrets that exist, as last seen.
    present: HashSet<(String, String)>,
}

pub(crate) struct Observer {
    seen: Arc<Mutex<Seen>>,
    watches: Vec<JoinHandle<()>>,
}

impl Drop for Observer {
    fn drop(&mut self) {
        for watch in &self.watches {
            watch.abort();
        }
    }
}

impl Observer {
    /// Starts watching every ServiceAccount, and the pull Secrets named in `secrets`
    /// (name → registry host whose password is digested); returns once both are listed.
    pub(crate) async fn start(client: Client, secrets: &[(&str, &str)]) -> Observer {
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let mut watches = vec![];
        let (listed_tx, mut listed_rx) = tokio::sync::mpsc::unbounded_channel();
        {
            let seen = seen.clone();
            let listed = listed_tx.clone();
            let api = Api::<ServiceAccount>::all(client.clone());
            watches.push(tokio::spawn(async move {
                let events = watcher(api, watcher::Config::default()).default_backoff();
                let _ = events
                    .try_for_each(|event| {
                        match event {
                            watcher::Event::Apply(sa) | watcher::Event::InitApply(sa) => {
                                seen.lock().unwrap().account(&sa)
                            }
                            watcher::Event::InitDone => {
                                let _ = listed.send(());
                            }
                            _ => {}
                        }
                        futures::future::ok(())
                    })
                    .await;
            }));
        }
        for (name, server) in secrets {
            let seen = seen.clone();
            let listed = listed_tx.clone();
            let (name, server) = (name.to_string(), server.to_string());
            let api = Api::<Secret>::all(client.clone());
            let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
            watches.push(tokio::spawn(async move {
                let events = watcher(api, config).default_backoff();
                // The namespaces a (re-)list found it in: a re-list is the truth of which exist.
                let mut relisted = HashSet::new();
                let _ = events
                    .try_for_each(|event| {
                        match event {
                            watcher::Event::Apply(s) => seen.lock().unwrap().secret(&s, &server),
                            watcher::Event::InitApply(s) => {
                                relisted.insert(s.namespace().unwrap_or_default());
                                seen.lock().unwrap().secret(&s, &server)
                            }
                            watcher::Event::Delete(s) => {
                                let key = (s.namespace().unwrap_or_default(), s.name_any());
                                seen.lock().unwrap().present.remove(&key);
                            }
                            watcher::Event::Init => relisted.clear(),
                            watcher::Event::InitDone => {
                                seen.lock()
                                    .unwrap()
                                    .present
                                    .retain(|(ns, n)| *n != name || relisted.contains(ns));
                                let _ = listed.send(());
                            }
                        }
                        futures::future::ok(())
                    })
                    .await;
            }));
        }
        for _ in 0..watches.len() {
            listed_rx.recv().await;
        }
        Observer { seen, watches }
    }

    /// Per namespace, when its Secret `name` first held the password with this digest
    /// at or after `since` (`None`: not yet).
    pub(crate) fn password_arrivals(
        &self,
        namespaces: &[String],
        name: &str,
        digest: &str,
        since: Instant,
    ) -> Vec<Option<Instant>> {
        let seen = self.seen.lock().unwrap();
        namespaces
            .iter()
            .map(|ns| {
                seen.secrets
                    .get(&(ns.clone(), name.to_owned()))?
                    .iter()
                    .find(|v| v.at >= since && v.password.as_deref() == Some(digest))
                    .map(|v| v.at)
            })
            .collect()
    }

    /// Per namespace, when its Secret `name` was first seen at all.
    pub(crate) fn secret_arrivals(
        &self,
        namespaces: &[String],
        name: &str,
    ) -> Vec<Option<Instant>> {
        let seen = self.seen.lock().unwrap();
        namespaces
            .iter()
            .map(|ns| {
                let versions = seen.secrets.get(&(ns.clone(), name.to_owned()))?;
                versions.first().map(|v| v.at)
            })
            .collect()
    }

    /// Per ServiceAccount of these namespaces (at least `accounts_per_namespace` each),
    /// when it came to list `entry` at or after `since`; `None` for one not yet listing it,
    /// or not yet seen.
    pub(crate) fn entry_arrivals(
        &self,
        namespaces: &[String],
        accounts_per_namespace: usize,
        entry: &str,
        since: Instant,
    ) -> Vec<Option<Instant>> {
        let seen = self.seen.lock().unwrap();
        let mut arrivals = vec![];
        for ns in namespaces {
            let accounts = seen.accounts.get(ns);
            let count = accounts.map_or(0, HashMap::len);
            arrivals.extend(accounts.into_iter().flat_map(HashMap::values).map(|a| {
                a.entries
                    .get(entry)?
                    .iter()
                    .copied()
                    .find(|at| *at >= since)
            }));
            arrivals.extend((count..accounts_per_namespace).map(|_| None));
        }
        arrivals
    }

    /// When the ServiceAccount `namespace/name` appeared, and when it first listed `entry`.
    pub(crate) fn account(
        &self,
        namespace: &str,
        name: &str,
        entry: &str,
    ) -> Option<(Instant, Option<Instant>)> {
        let seen = self.seen.lock().unwrap();
        let account = seen.accounts.get(namespace)?.get(name)?;
        let first = account.entries.get(entry).and_then(|times| times.first());
        Some((account.appeared, first.copied()))
    }

    /// The names of the ServiceAccounts seen in `namespace`.
    pub(crate) fn account_names(&self, namespace: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap();
        seen.accounts
            .get(namespace)
            .map(|accounts| accounts.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Whether any ServiceAccount of these namespaces lists `entry` (as last seen).
    pub(crate) fn any_listing(&self, namespaces: &[String], entry: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        namespaces
            .iter()
            .filter_map(|ns| seen.accounts.get(ns))
            .flat_map(HashMap::values)
            .any(|a| a.listed.contains(entry))
    }

    /// Whether the Secret `name` exists in any of these namespaces (as last seen).
    pub(crate) fn any_secret(&self, namespaces: &[String], name: &str) -> bool {
        let seen = self.seen.lock().unwrap();
        namespaces
            .iter()
            .any(|ns| seen.present.contains(&(ns.clone(), name.to_owned())))
    }

    /// How many ServiceAccounts these namespaces hold so far.
    pub(crate) fn account_count(&self, namespaces: &[String]) -> usize {
        let seen = self.seen.lock().unwrap();
        namespaces
            .iter()
            .map(|ns| seen.accounts.get(ns).map_or(0, HashMap::len))
            .sum()
    }

    /// Every version of `namespace/name` seen so far.
    pub(crate) fn versions(&self, namespace: &str, name: &str) -> Vec<Version> {
        let seen = self.seen.lock().unwrap();
        seen.secrets
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (polling the record, 100 ms) until `done` holds; `None` after `timeout`.
    pub(crate) async fn until<T>(
        &self,
        timeout: Duration,
        mut done: impl FnMut(&Observer) -> Option<T>,
    ) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(t) = done(self) {
                return Some(t);
            }
            if start.elapsed() > timeout {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Seen {
    fn account(&mut self, sa: &ServiceAccount) {
        let now = Instant::now();
        let account = self
            .accounts
            .entry(sa.namespace().unwrap_or_default())
            .or_default()
            .entry(sa.name_any())
            .or_insert_with(|| Account {
                appeared: now,
                entries: HashMap::new(),
                listed: HashSet::new(),
            });
        let listed: HashSet<String> = sa
            .image_pull_secrets
            .iter()
            .flatten()
            .map(|entry| entry.name.clone())
            .collect();
        for name in listed.difference(&account.listed) {
            account.entries.entry(name.clone()).or_default().push(now);
        }
        account.listed = listed;
    }

    fn secret(&mut self, secret: &Secret, server: &str) {
        let key = (secret.namespace().unwrap_or_default(), secret.name_any());
        self.present.insert(key.clone());
        self.secrets.entry(key).or_default().push(Version {
            at: Instant::now(),
            wall: Timestamp::now(),
            password: password_digest(secret, server),
        });
    }
}

/// The latest arrival, if every one has arrived.
pub(crate) fn all_arrived(arrivals: &[Option<Instant>]) -> Option<Instant> {
    arrivals
        .iter()
        .copied()
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .max()
}
