//! Wiring: one watch and one cache per kind, events fanned out to three reconcilers
//! (namespaced credentials, cluster credentials, ServiceAccounts).

use std::sync::Arc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use regcred_api::names::{FIELD_MANAGER, MANAGED_LABEL, SOURCE_LABEL};
use regcred_api::{ClusterRegistryCredential, RegistryCredential};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::account_queue::AccountQueue;
use crate::cached_account::CachedServiceAccount;
use crate::cached_secret::CachedSecret;
use crate::context::{
    Backoff as RetryBackoff, CacheLag, Context, ObjectKey, ReadyGate, Remembered, RetryKey, Stores,
};
use crate::credential::Credential;
use crate::error::Error;
use crate::lease::{self, LeaseSettings};
use crate::metrics::{CredentialSource, Metrics};
use crate::named_secrets::NamedSecrets;
use crate::namespace_cache::Namespaces;
use crate::namespace_writes::{self, Prepared, Writing};
use crate::signing::Signer;
use crate::triggers::Triggers;
use crate::watch_backoff::WatchBackoff;
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
    /// Host suffixes a `RegistryCredential`'s `ecr.endpoint` may name besides AWS's.
    pub allowed_ecr_endpoints: Vec<String>,
    /// The controller's own namespace, where its signing key lives.
    pub namespace: String,
    /// Leader election among replicas; `None`: this process always leads.
    pub leader_election: Option<LeaseSettings>,
    /// Set to true once every cache has had its first full list (the binary's `/readyz`),
    /// and the admission webhook, if on, serves a certificate.
    pub ready: Option<watch::Sender<bool>>,
    /// Where the controller's metrics are recorded (the binary serves them).
    pub metrics: Arc<Metrics>,
    /// The mutating admission webhook; `None`: off.
    pub admission: Option<crate::AdmissionSettings>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            namespace_concurrency: 16,
            instance: None,
            allow_controller_aws_identity: false,
            allowed_ecr_endpoints: Vec::new(),
            namespace: "regcred-system".into(),
            leader_election: None,
            ready: None,
            metrics: Arc::default(),
            admission: None,
        }
    }
}

/// Runs the controller until SIGINT or SIGTERM. Fails only when the signing key can be
/// neither read nor created.
pub async fn run(client: Client, config: Config) -> Result<(), Error> {
    let signer = Signer::load_or_create(client.clone(), &config.namespace).await?;
    let (leading_tx, leading) = watch::channel(config.leader_election.is_none());
    let (credentials, credentials_writer) = reflector::store();
    let (cluster_credentials, cluster_credentials_writer) = reflector::store();
    let namespaces = Namespaces::default();
    let (service_accounts, service_accounts_writer) = reflector::store();
    let (managed_secrets, managed_secrets_writer) = reflector::store();
    let (source_secrets, source_secrets_writer) = reflector::store();
    let (gate, ready) = ReadyGate::new(&CACHES);
    let stores = Stores {
        ready: ready.clone(),
        credentials: credentials.clone(),
        cluster_credentials: cluster_credentials.clone(),
        namespaces: namespaces.clone(),
        service_accounts: service_accounts.clone(),
        managed_secrets,
        source_secrets,
        signer,
        named: NamedSecrets::default(),
    };
    // Every replica serves admission from its caches (no lease needed to read).
    let serving = match &config.admission {
        Some(settings) => {
            crate::admission::start(client.clone(), &config.namespace, settings, stores.clone())
                .await?
        }
        None => watch::channel(true).1,
    };
    let metrics = config.metrics.clone();
    metrics.read_credentials_from(CredentialSource {
        namespaced: credentials.clone(),
        cluster: cluster_credentials.clone(),
    });
    let report = config.ready.clone();
    let mut gate_open = ready.clone();
    let mut serving_now = serving.clone();
    let ready_metric = metrics.clone();
    tokio::spawn(async move {
        if gate_open.wait_for(|open| *open).await.is_ok()
            && serving_now.wait_for(|serving| *serving).await.is_ok()
        {
            ready_metric.set_ready(true);
            if let Some(report) = report {
                report.send_replace(true);
            }
        }
    });
    let (credentials_tx, credentials_rx) = mpsc::unbounded();
    let (cluster_tx, cluster_rx) = mpsc::unbounded();
    let (sa_tx, sa_rx) = mpsc::unbounded();
    let (namespaces_tx, namespaces_rx) = mpsc::unbounded();
    let cache_lag = Arc::new(CacheLag::default());
    let patch_service_accounts = config
        .admission
        .as_ref()
        .is_none_or(|a| a.mode != crate::AdmissionMode::Pods);
    // Bounded like a credential's fan-out: kube's default is unbounded, and a fan-out
    // woke hundreds of ServiceAccount patches at once, each on a connection of its own.
    let sa_concurrency =
        u16::try_from(config.namespace_concurrency.max(1).saturating_mul(2)).unwrap_or(u16::MAX);
    // Enough queued to keep every slot busy between two hand-overs.
    let account_queue = Arc::new(AccountQueue::new(4 * usize::from(sa_concurrency)));
    let triggers = Triggers {
        account_queue: account_queue.clone(),
        patch_service_accounts,
        cache_lag: cache_lag.clone(),
        stores: stores.clone(),
        credentials: credentials_tx,
        cluster_credentials: cluster_tx,
        service_accounts: sa_tx,
        namespaces: namespaces_tx,
        seen_credentials: Default::default(),
        accounts_by_namespace: Default::default(),
        client: client.clone(),
        recounts: Default::default(),
    };
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: config.instance.clone(),
    };
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores,
        recorder: Recorder::new(client.clone(), reporter),
        backoff: RetryBackoff::default(),
        status_writes: crate::status::StatusWrites::default(),
        unmanaged: Remembered::new(UNMANAGED_RETRY),
        missing_sources: Remembered::new(MISSING_SOURCE_RETRY),
        cache_lag: cache_lag.clone(),
        namespace_concurrency: config.namespace_concurrency,
        ecr: regcred_providers::Ecr::default(),
        tokens: Default::default(),
        allow_controller_aws_identity: config.allow_controller_aws_identity,
        allowed_ecr_endpoints: config.allowed_ecr_endpoints.clone(),
        leading: leading.clone(),
        metrics: metrics.clone(),
        patch_service_accounts,
        prepared: Prepared::default(),
        writing: Writing::default(),
        account_queue,
    });
    // Becoming the leader: everything is reconciled afresh (a standby replica's reconciles
    // did nothing but wait).
    let recheck = triggers.clone();
    let mut became_leader = leading.clone();
    let leader_metric = metrics.clone();
    leader_metric.set_leader(*became_leader.borrow());
    tokio::spawn(async move {
        while became_leader.changed().await.is_ok() {
            let leading = *became_leader.borrow_and_update();
            leader_metric.set_leader(leading);
            if leading {
                recheck.everything();
            }
        }
    });

    let all = watcher::Config::default();
    let t = triggers.clone();
    let credential_events = watcher(Api::<RegistryCredential>::all(client.clone()), all.clone())
        .backoff(WatchBackoff::default())
        .reflect(credentials_writer)
        .inspect_ok(listed(&gate, "credentials"))
        .inspect_ok(forget_deleted(&metrics, &ctx))
        .inspect_ok(move |e| t.on_credential(e));
    let t = triggers.clone();
    let cluster_events = watcher(
        Api::<ClusterRegistryCredential>::all(client.clone()),
        all.clone(),
    )
    .backoff(WatchBackoff::default())
    .reflect(cluster_credentials_writer)
    .inspect_ok(listed(&gate, "cluster-credentials"))
    .inspect_ok(forget_deleted(&metrics, &ctx))
    .inspect_ok(move |e| t.on_credential(e));
    let t = triggers.clone();
    let sa_events = watcher(
        Api::<CachedServiceAccount>::all(client.clone()),
        all.clone(),
    )
    .backoff(WatchBackoff::default())
    .reflect(service_accounts_writer)
    .inspect_ok(listed(&gate, "service-accounts"))
    .inspect_ok(move |e| t.on_service_account(e));
    let t = triggers.clone();
    let namespace_events = watcher(
        Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
        all.clone(),
    )
    .backoff(WatchBackoff::default())
    .inspect_ok(move |e| namespaces.apply(e))
    .inspect_ok(listed(&gate, "namespaces"))
    .inspect_ok(move |e| t.on_namespace(e));
    // Only the Secrets regcred wrote and the ones opted in as sources: never all Secrets.
    let t = triggers.clone();
    let managed_events = watcher(
        Api::<CachedSecret>::all(client.clone()),
        all.clone().labels(&format!("{MANAGED_LABEL}=true")),
    )
    .backoff(WatchBackoff::default())
    .reflect(managed_secrets_writer)
    .inspect_ok(listed(&gate, "managed-secrets"))
    .inspect_ok(move |e| t.on_managed_secret(e));
    let t = triggers.clone();
    let source_events = watcher(
        Api::<Secret>::all(client.clone()),
        all.labels(&format!("{SOURCE_LABEL}=true")),
    )
    .backoff(WatchBackoff::default())
    .modify(|s| s.managed_fields_mut().clear())
    .reflect(source_secrets_writer)
    .inspect_ok(listed(&gate, "source-secrets"))
    .inspect_ok(move |e| t.on_source_secret(e));

    // No debounce: a new namespace's Secret is written on its first event. kube's debounce
    // restarts with every event, so under a steady stream of namespaces it delayed every
    // one by 100 ms or more (the benchmark's new-namespace p99). Bursts still collapse:
    // while a credential's reconcile runs, its further triggers wait as one, and status
    // writes are paced by `StatusWrites`.
    let credential_config = controller::Config::default();
    let namespaced = Controller::for_stream(credential_events.applied_objects(), credentials)
        .reconcile_on(credentials_rx)
        .with_config(credential_config.clone())
        // kube's own default here grows to 30 s on top of the watch's: after a CRD
        // re-install that alone left new credentials unseen for over a minute.
        .trigger_backoff(WatchBackoff::default())
        .shutdown_on_signal()
        .run(
            reconcile::reconcile::<RegistryCredential>,
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result(&metrics, "registrycredentials"));
    let cluster = Controller::for_stream(cluster_events.applied_objects(), cluster_credentials)
        .reconcile_on(cluster_rx)
        .with_config(credential_config)
        .trigger_backoff(WatchBackoff::default())
        .shutdown_on_signal()
        .run(
            reconcile::reconcile::<ClusterRegistryCredential>,
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result(&metrics, "clusterregistrycredentials"));
    // Only ServiceAccounts a reconcile would change; the rest once the caches have listed.
    let wants = triggers.clone();
    let account_changes = sa_events
        .applied_objects()
        .try_filter(move |sa| future::ready(wants.wants_service_account(sa)));
    tokio::spawn(triggers.clone().judge_accounts());
    tokio::spawn(triggers.clone().pace_recounts());
    let listed_accounts = triggers.clone();
    let mut caches_listed = ready.clone();
    tokio::spawn(async move {
        if caches_listed.wait_for(|listed| *listed).await.is_ok() {
            listed_accounts.service_accounts_in(None);
        }
    });
    let accounts = Controller::for_stream(account_changes, service_accounts)
        .reconcile_on(sa_rx)
        .with_config(controller::Config::default().concurrency(sa_concurrency))
        .trigger_backoff(WatchBackoff::default())
        .shutdown_on_signal()
        .run(service_accounts::reconcile, error_policy, ctx.clone())
        .for_each(log_result(&metrics, "serviceaccounts"));
    let fast_path = namespaces_rx
        .map(|namespace| namespace_writes::write_namespace(ctx.clone(), namespace))
        .buffer_unordered(config.namespace_concurrency.max(1))
        .for_each(|()| future::ready(()));

    let caches = future::join3(
        drain(namespace_events, &metrics, "namespaces"),
        drain(managed_events, &metrics, "secrets"),
        drain(source_events, &metrics, "secrets"),
    );
    let (stop_election, stopped) = watch::channel(false);
    let election = async {
        match config.leader_election.clone() {
            Some(settings) => lease::elect(client.clone(), settings, leading_tx, stopped).await,
            // No election: just wait for the shutdown below (pending for ever here kept a
            // stopping --leader-elect=false controller from exiting).
            None => {
                let mut stopped = stopped;
                let _ = stopped.wait_for(|stop| *stop).await;
                Ok(())
            }
        }
    };
    tokio::pin!(election);
    tokio::select! {
        _ = future::join3(namespaced, cluster, accounts) => {}
        _ = caches => warn!("a cache watch ended unexpectedly"),
        () = fast_path => warn!("the namespace fast path ended unexpectedly"),
        lost = &mut election => return lost,
    }
    // Shutting down: give the lease up so another replica takes over at once.
    stop_election.send_replace(true);
    election.await
}

/// A same-named Secret that is not regcred's is asked about again after this long.
const UNMANAGED_RETRY: Duration = Duration::from_secs(300);
/// A missing or unlabelled source is looked up again after this long (its labelling
/// arrives through the source watch at once).
const MISSING_SOURCE_RETRY: Duration = Duration::from_secs(60);

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
async fn drain<K>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    metrics: &Metrics,
    resource: &'static str,
) {
    events
        .for_each(|e| {
            if let Err(err) = e {
                metrics.watch_failed(resource);
                watch_failed(&err);
            }
            future::ready(())
        })
        .await;
}

/// Drops a deleted credential's counters, tokens and backoff.
fn forget_deleted<C: Credential>(
    metrics: &Arc<Metrics>,
    ctx: &Arc<Context>,
) -> impl Fn(&watcher::Event<C>) + use<C> {
    let (metrics, ctx) = (metrics.clone(), ctx.clone());
    move |event| {
        if let watcher::Event::Delete(credential) = event {
            metrics.forget(&credential.id());
            ctx.forget_credential(credential);
        }
    }
}

/// Logs a failed watch: at WARN at most once per [`WATCH_WARNING_INTERVAL`] (every
/// watch retries twice a second while the API server is away), at DEBUG otherwise.
fn watch_failed(error: &dyn std::fmt::Display) {
    static LAST_WARNING: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let mut last = LAST_WARNING.lock().unwrap_or_else(|e| e.into_inner());
    if last.is_none_or(|at| at.elapsed() >= WATCH_WARNING_INTERVAL) {
        *last = Some(std::time::Instant::now());
        warn!(%error, "watch failed; retrying (further failures within 10 s at debug)");
    } else {
        debug!(%error, "watch failed; retrying");
    }
}

const WATCH_WARNING_INTERVAL: Duration = Duration::from_secs(10);

fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = ObjectKey::of(&*object);
    let wait = ctx.backoff.next(&RetryKey::Reconcile(key));
    let object = ObjectRef::from_obj(&*object);
    warn!(%object, error = %error, kind = error.kind(), retry_in = ?wait, "reconcile failed");
    Action::requeue(wait)
}

/// What a controller's stream yields for each reconcile.
type Reconciled<K, E, Q> = Result<(ObjectRef<K>, Action), controller::Error<E, Q>>;

/// Logs each reconcile's result; a failed watch is also counted against `resource`.
fn log_result<K: Resource, E: std::error::Error, Q: std::error::Error>(
    metrics: &Arc<Metrics>,
    resource: &'static str,
) -> impl FnMut(Reconciled<K, E, Q>) -> future::Ready<()> + use<K, E, Q> {
    let metrics = metrics.clone();
    move |result| {
        match result {
            Ok((object, _)) => debug!(object = %object.name, "reconciled"),
            // Already logged by the error policy.
            Err(controller::Error::ReconcilerFailed(..)) => {}
            // A watch failed: a deleted CRD, an API server restart, lost permissions. Worth
            // seeing at the default level; the watch retries by itself.
            Err(controller::Error::QueueError(e)) => {
                metrics.watch_failed(resource);
                watch_failed(&e);
            }
            Err(e) => debug!(error = %e, "reconcile error"),
        }
        future::ready(())
    }
}
