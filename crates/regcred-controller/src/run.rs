//! Wiring: one watch and one cache per kind, events fanned out to three reconcilers
//! (namespaced credentials, cluster credentials, ServiceAccounts).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use regcred_api::names::{FIELD_MANAGER, MANAGED_LABEL, SOURCE_LABEL};
use regcred_api::{ClusterRegistryCredential, RegistryCredential};
use tracing::{debug, warn};

use crate::context::{
    Backoff, CacheLag, Context, ReadyGate, StatusWrites, Stores, UnmanagedSecrets,
};
use crate::error::Error;
use crate::triggers::Triggers;
use crate::{reconcile, service_accounts};

/// Controller settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// How many namespaces one credential writes to at once.
    pub namespace_concurrency: usize,
    /// Reported as the Events' reporting instance (the Pod name).
    pub instance: Option<String>,
    /// Whether a `RegistryCredential` may use the controller's own AWS identity.
    pub allow_controller_aws_identity: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace_concurrency: 16,
            instance: None,
            allow_controller_aws_identity: false,
        }
    }
}

/// Runs the controller until SIGINT or SIGTERM.
pub async fn run(client: Client, config: Config) {
    let (credentials, credentials_writer) = reflector::store();
    let (cluster_credentials, cluster_credentials_writer) = reflector::store();
    let (namespaces, namespaces_writer) = reflector::store();
    let (service_accounts, service_accounts_writer) = reflector::store();
    let (managed_secrets, managed_secrets_writer) = reflector::store();
    let (source_secrets, source_secrets_writer) = reflector::store();
    let (gate, ready) = ReadyGate::new(&CACHES);
    let stores = Stores {
        ready,
        credentials: credentials.clone(),
        cluster_credentials: cluster_credentials.clone(),
        namespaces,
        service_accounts: service_accounts.clone(),
        managed_secrets,
        source_secrets,
    };
    let (credentials_tx, credentials_rx) = mpsc::unbounded();
    let (cluster_tx, cluster_rx) = mpsc::unbounded();
    let (sa_tx, sa_rx) = mpsc::unbounded();
    let cache_lag = Arc::new(CacheLag::default());
    let triggers = Triggers {
        cache_lag: cache_lag.clone(),
        stores: stores.clone(),
        credentials: credentials_tx,
        cluster_credentials: cluster_tx,
        service_accounts: sa_tx,
    };
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores,
        recorder: Recorder::new(client.clone(), reporter),
        backoff: Backoff::default(),
        status_writes: StatusWrites::default(),
        unmanaged: UnmanagedSecrets::default(),
        cache_lag: cache_lag.clone(),
        namespace_concurrency: config.namespace_concurrency,
        ecr: regcred_providers::Ecr::default(),
        tokens: Default::default(),
        allow_controller_aws_identity: config.allow_controller_aws_identity,
    });

    let all = watcher::Config::default();
    let t = triggers.clone();
    let credential_events = watcher(Api::<RegistryCredential>::all(client.clone()), all.clone())
        .default_backoff()
        .reflect(credentials_writer)
        .inspect_ok(listed(&gate, "credentials"))
        .inspect_ok(move |e| t.on_credential(e));
    let t = triggers.clone();
    let cluster_events = watcher(
        Api::<ClusterRegistryCredential>::all(client.clone()),
        all.clone(),
    )
    .default_backoff()
    .reflect(cluster_credentials_writer)
    .inspect_ok(listed(&gate, "cluster-credentials"))
    .inspect_ok(move |e| t.on_credential(e));
    let t = triggers.clone();
    let sa_events = watcher(Api::<ServiceAccount>::all(client.clone()), all.clone())
        .default_backoff()
        .modify(|sa| sa.managed_fields_mut().clear())
        .reflect(service_accounts_writer)
        .inspect_ok(listed(&gate, "service-accounts"))
        .inspect_ok(move |e| t.on_service_account(e));
    let t = triggers.clone();
    let namespace_events = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        all.clone(),
    )
    .default_backoff()
    .modify(|ns| ns.managed_fields_mut().clear())
    .reflect(namespaces_writer)
    .inspect_ok(listed(&gate, "namespaces"))
    .inspect_ok(move |e| t.on_namespace(e));
    // Only the Secrets regcred wrote and the ones opted in as sources: never all Secrets.
    let t = triggers.clone();
    let managed_events = watcher(
        Api::<Secret>::all(client.clone()),
        all.clone().labels(&format!("{MANAGED_LABEL}=true")),
    )
    .default_backoff()
    .modify(|s| s.managed_fields_mut().clear())
    .reflect(managed_secrets_writer)
    .inspect_ok(listed(&gate, "managed-secrets"))
    .inspect_ok(move |e| t.on_managed_secret(e));
    let t = triggers;
    let source_events = watcher(
        Api::<Secret>::all(client.clone()),
        all.labels(&format!("{SOURCE_LABEL}=true")),
    )
    .default_backoff()
    .modify(|s| s.managed_fields_mut().clear())
    .reflect(source_secrets_writer)
    .inspect_ok(listed(&gate, "source-secrets"))
    .inspect_ok(move |e| t.on_source_secret(e));

    // Short debounce: a burst of events (a new namespace, its ServiceAccounts, the
    // Secret's own echo) becomes one reconcile.
    let credential_config = controller::Config::default().debounce(Duration::from_millis(100));
    let namespaced = Controller::for_stream(credential_events.applied_objects(), credentials)
        .reconcile_on(credentials_rx)
        .with_config(credential_config.clone())
        .shutdown_on_signal()
        .run(
            reconcile::reconcile::<RegistryCredential>,
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result);
    let cluster = Controller::for_stream(cluster_events.applied_objects(), cluster_credentials)
        .reconcile_on(cluster_rx)
        .with_config(credential_config)
        .shutdown_on_signal()
        .run(
            reconcile::reconcile::<ClusterRegistryCredential>,
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result);
    let accounts = Controller::for_stream(sa_events.applied_objects(), service_accounts)
        .reconcile_on(sa_rx)
        .shutdown_on_signal()
        .run(service_accounts::reconcile, error_policy, ctx)
        .for_each(log_result);

    let caches = future::join3(
        drain(namespace_events),
        drain(managed_events),
        drain(source_events),
    );
    tokio::select! {
        _ = future::join3(namespaced, cluster, accounts) => {}
        _ = caches => warn!("a cache watch ended unexpectedly"),
    }
}

/// Every cache the reconcilers read.
const CACHES: [&str; 6] = [
    "credentials",
    "cluster-credentials",
    "service-accounts",
    "namespaces",
    "managed-secrets",
    "source-secrets",
];

/// Reports a cache's end of initial list to the gate.
fn listed<K>(gate: &Arc<ReadyGate>, cache: &'static str) -> impl Fn(&watcher::Event<K>) + use<K> {
    let gate = gate.clone();
    move |event| {
        if matches!(event, watcher::Event::InitDone) {
            gate.listed(cache);
        }
    }
}

/// Drives a cache's watch, logging (and surviving) errors; the watcher backs off itself.
async fn drain<K>(events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>) {
    events
        .for_each(|e| {
            if let Err(err) = e {
                warn!(error = %err, "watch failed; retrying");
            }
            future::ready(())
        })
        .await;
}

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectRef::from_obj(&*object).to_string();
    let wait = ctx.backoff.next(&key);
    warn!(object = %key, error = %error, kind = error.kind(), retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

fn log_result<K: Resource, E: Debug>(
    result: Result<(ObjectRef<K>, Action), E>,
) -> future::Ready<()> {
    match result {
        Ok((object, _)) => debug!(object = %object.name, "reconciled"),
        Err(e) => debug!(error = ?e, "reconcile error"),
    }
    future::ready(())
}
