//! The limit: a minimal writer on regcred's client stack (kube-rs, rustls), at the same
//! concurrency and under an identity of the same class, that writes exactly what must be
//! written — a Secret where it is missing or different, one patch where a ServiceAccount
//! lacks the entry — and nothing else: no status, no Events, no signatures, no cleanup,
//! no tenancy checks. What regcred costs above it is the price of what it does besides.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use futures::TryStreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{PartialObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::dockerconfig::dockerconfigjson;

/// The label on the Secrets the limit writes: its cache of them is selected by it.
pub(crate) const LIMIT_LABEL: &str = "regcred-bench/limit";

#[derive(Debug, Clone, clap::Args)]
pub(crate) struct LimitArgs {
    /// Target namespaces, by label selector.
    #[arg(long)]
    selector: String,
    /// The Secret written into each target namespace and listed by its ServiceAccounts.
    #[arg(long)]
    secret_name: String,
    /// `NAMESPACE/NAME` of the source Secret (keys `username`, `password`).
    #[arg(long)]
    source: String,
    /// The registry host.
    #[arg(long)]
    server: String,
    /// Namespaces worked on at once (regcred's `--namespace-concurrency` default).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// What the limit wrote and what the API server answered (its resourceVersion): while the
/// cache shows an older version, the write is in flight, not missing.
#[derive(Default)]
struct Written {
    secrets: HashMap<String, (Vec<u8>, u64)>,
    entries: HashMap<(String, String), u64>,
}

/// Namespaces waiting to be looked at, each at most once in the queue and never by two
/// workers at once (two would both see an entry missing and both write it).
#[derive(Default)]
struct Queue {
    order: VecDeque<String>,
    queued: HashSet<String>,
    active: HashSet<String>,
    /// Active namespaces that changed meanwhile: queued again once done.
    again: HashSet<String>,
}

struct Limit {
    args: LimitArgs,
    client: Client,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    accounts: Store<ServiceAccount>,
    secrets: Store<Secret>,
    sources: Store<Secret>,
    /// ServiceAccount names per namespace: a namespace's work looks at its own only.
    accounts_by_namespace: Mutex<HashMap<String, HashSet<String>>>,
    written: Mutex<Written>,
    queue: Mutex<Queue>,
    wake: Notify,
}

pub(crate) async fn run(args: LimitArgs) -> anyhow::Result<()> {
    let mut config = kube::Config::infer().await?;
    config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_static("regcred-bench-limit"),
    ));
    let client = Client::try_from(config)?;
    let (source_namespace, source_name) = args
        .source
        .split_once('/')
        .context("--source is NAMESPACE/NAME")?;
    let (namespaces, namespaces_writer) = reflector::store();
    let (accounts, accounts_writer) = reflector::store();
    let (secrets, secrets_writer) = reflector::store();
    let (sources, sources_writer) = reflector::store();
    let limit = Arc::new(Limit {
        args: args.clone(),
        client: client.clone(),
        namespaces: namespaces.clone(),
        accounts: accounts.clone(),
        secrets: secrets.clone(),
        sources: sources.clone(),
        accounts_by_namespace: Mutex::default(),
        written: Mutex::default(),
        queue: Mutex::default(),
        wake: Notify::new(),
    });

    let l = limit.clone();
    let namespace_watch = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        watcher::Config::default().labels(&args.selector),
    )
    .default_backoff()
    .reflect(namespaces_writer)
    .applied_objects()
    .try_for_each(move |ns| {
        l.enqueue(ns.name_any());
        futures::future::ok(())
    });
    let l = limit.clone();
    let account_watch = watcher(
        Api::<ServiceAccount>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(accounts_writer)
    .applied_objects()
    .try_for_each(move |sa| {
        let namespace = sa.namespace().unwrap_or_default();
        l.accounts_by_namespace
            .lock()
            .unwrap()
            .entry(namespace.clone())
            .or_default()
            .insert(sa.name_any());
        l.enqueue(namespace);
        futures::future::ok(())
    });
    let l = limit.clone();
    let secret_watch = watcher(
        Api::<Secret>::all(client.clone()),
        watcher::Config::default().labels(&format!("{LIMIT_LABEL}=true")),
    )
    .default_backoff()
    .reflect(secrets_writer)
    .try_for_each(move |event| {
        match event {
            watcher::Event::Apply(s) => l.enqueue(s.namespace().unwrap_or_default()),
            // Gone: what was written there is no longer on its way.
            watcher::Event::Delete(s) => {
                let namespace = s.namespace().unwrap_or_default();
                l.written.lock().unwrap().secrets.remove(&namespace);
                l.enqueue(namespace);
            }
            _ => {}
        }
        futures::future::ok(())
    });
    let l = limit.clone();
    let source_watch = watcher(
        Api::<Secret>::namespaced(client.clone(), source_namespace),
        watcher::Config::default().fields(&format!("metadata.name={source_name}")),
    )
    .default_backoff()
    .reflect(sources_writer)
    .applied_objects()
    .try_for_each(move |_| {
        l.enqueue_all();
        futures::future::ok(())
    });
    let watches = async {
        tokio::try_join!(namespace_watch, account_watch, secret_watch, source_watch)
            .map(|_| ())
            .context("a watch ended")
    };

    let workers = async {
        namespaces.wait_until_ready().await?;
        accounts.wait_until_ready().await?;
        secrets.wait_until_ready().await?;
        sources.wait_until_ready().await?;
        limit.enqueue_all();
        futures::future::join_all((0..args.concurrency.max(1)).map(|_| limit.clone().work())).await;
        anyhow::Ok(())
    };
    tokio::select! {
        r = watches => r,
        r = workers => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = terminated() => Ok(()),
        _ = stdin_closed() => Ok(()),
    }
}

/// The bench holds the limit's stdin: when the bench goes, however it goes, so does the
/// limit. (A thread: reading stdin blocks.)
async fn stdin_closed() {
    let (closed_tx, closed) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = closed_tx.send(());
    });
    let _ = closed.await;
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut signal) => {
            signal.recv().await;
        }
        Err(_) => futures::future::pending().await,
    }
}

fn resource_version(object: &impl ResourceExt) -> u64 {
    object
        .resource_version()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

impl Limit {
    fn enqueue(&self, namespace: String) {
        let mut queue = self.queue.lock().unwrap();
        if queue.active.contains(&namespace) {
            queue.again.insert(namespace);
        } else if queue.queued.insert(namespace.clone()) {
            queue.order.push_back(namespace);
            self.wake.notify_one();
        }
    }

    fn enqueue_all(&self) {
        for ns in self.namespaces.state() {
            self.enqueue(ns.name_any());
        }
    }

    async fn work(self: Arc<Self>) {
        loop {
            let next = {
                let mut queue = self.queue.lock().unwrap();
                let next = queue.order.pop_front();
                if let Some(ns) = &next {
                    queue.queued.remove(ns);
                    queue.active.insert(ns.clone());
                }
                next
            };
            match next {
                Some(ns) => {
                    let result = self.converge(&ns).await;
                    if let Err(e) = &result {
                        eprintln!("limit: {ns}: {e:#}; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    }
                    let again = {
                        let mut queue = self.queue.lock().unwrap();
                        queue.active.remove(&ns);
                        queue.again.remove(&ns) || result.is_err()
                    };
                    if again {
                        self.enqueue(ns);
                    }
                }
                None => self.wake.notified().await,
            }
        }
    }

    /// The login's `.dockerconfigjson`, if the source is there.
    fn desired(&self) -> Option<Vec<u8>> {
        let source = self.sources.state().into_iter().next()?;
        let data = source.data.as_ref()?;
        let user = String::from_utf8_lossy(&data.get("username")?.0).into_owned();
        let password = String::from_utf8_lossy(&data.get("password")?.0).into_owned();
        Some(dockerconfigjson(&self.args.server, &user, &password))
    }

    async fn converge(&self, namespace: &str) -> anyhow::Result<()> {
        if self.namespaces.get(&ObjectRef::new(namespace)).is_none() {
            return Ok(());
        }
        let Some(desired) = self.desired() else {
            return Ok(());
        };
        self.converge_secret(namespace, desired).await?;
        self.converge_accounts(namespace).await
    }

    /// Writes the Secret if the cache shows it missing or different, and no write of the
    /// same content is still on its way to the cache.
    async fn converge_secret(&self, namespace: &str, desired: Vec<u8>) -> anyhow::Result<()> {
        let name = &self.args.secret_name;
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        let cached = self.secrets.get(&ObjectRef::new(name).within(namespace));
        let in_place = cached
            .as_ref()
            .and_then(|s| s.data.as_ref()?.get(".dockerconfigjson"))
            .is_some_and(|d| d.0 == desired);
        let in_flight = self
            .written
            .lock()
            .unwrap()
            .secrets
            .get(namespace)
            .is_some_and(|(data, rv)| {
                *data == desired
                    && cached
                        .as_ref()
                        .is_none_or(|c| resource_version(&**c) <= *rv)
            });
        if in_place || in_flight {
            return Ok(());
        }
        let data = ByteString(desired.clone());
        let written = match cached {
            None => {
                let secret: Secret = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {LIMIT_LABEL: "true"}},
                    "type": "kubernetes.io/dockerconfigjson",
                    "data": {".dockerconfigjson": data},
                }))?;
                secrets.create(&PostParams::default(), &secret).await?
            }
            Some(_) => {
                let patch = json!({"data": {".dockerconfigjson": data}});
                secrets
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?
            }
        };
        self.written
            .lock()
            .unwrap()
            .secrets
            .insert(namespace.to_owned(), (desired, resource_version(&written)));
        Ok(())
    }

    /// One patch per ServiceAccount that lacks the entry (and has no patch in flight).
    async fn converge_accounts(&self, namespace: &str) -> anyhow::Result<()> {
        let name = &self.args.secret_name;
        let names: Vec<String> = self
            .accounts_by_namespace
            .lock()
            .unwrap()
            .get(namespace)
            .map(|names| names.iter().cloned().collect())
            .unwrap_or_default();
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        for account in names {
            let Some(sa) = self
                .accounts
                .get(&ObjectRef::new(&account).within(namespace))
            else {
                continue;
            };
            let listed = sa
                .image_pull_secrets
                .iter()
                .flatten()
                .any(|r| &r.name == name);
            let key = (namespace.to_owned(), account.clone());
            let in_flight = self
                .written
                .lock()
                .unwrap()
                .entries
                .get(&key)
                .is_some_and(|rv| resource_version(&*sa) <= *rv);
            if listed || in_flight {
                continue;
            }
            // Strategic merge on `imagePullSecrets` (merge key `name`): others' entries stay.
            let patch = json!({"imagePullSecrets": [{"name": name}]});
            let patched = accounts
                .patch(&account, &PatchParams::default(), &Patch::Strategic(&patch))
                .await?;
            self.written
                .lock()
                .unwrap()
                .entries
                .insert(key, resource_version(&patched));
        }
        Ok(())
    }
}
