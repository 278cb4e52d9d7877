//! Prometheus metrics, in the text format on the binary's metrics port.
//!
//! Counters and histograms record what this process did (reconciles, refreshes, ECR
//! token requests, API requests, watch failures). What each credential looks like
//! (ready, expiry, next refresh, targets) is read from the credentials' status at scrape
//! time ([`credentials`]), so every replica reports the same and a deleted credential
//! leaves no series behind. No label names a target namespace: cardinality grows with the
//! number of credentials, never with the number of namespaces.

mod credentials;
mod kube_requests;

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::credential::CredentialId;
use crate::error::Error;

pub use kube_requests::KubeRequestsLayer;

/// The controllers, as the `controller` label names them.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub(crate) enum ControllerName {
    RegistryCredential,
    ClusterRegistryCredential,
    ServiceAccount,
}

impl ControllerName {
    fn as_str(self) -> &'static str {
        match self {
            ControllerName::RegistryCredential => "registrycredential",
            ControllerName::ClusterRegistryCredential => "clusterregistrycredential",
            ControllerName::ServiceAccount => "serviceaccount",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileErrorLabels {
    controller: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CredentialLabels {
    kind: &'static str,
    namespace: String,
    name: String,
}

impl CredentialLabels {
    fn of(id: &CredentialId) -> Self {
        CredentialLabels {
            kind: id.kind.as_str(),
            namespace: id.namespace.clone().unwrap_or_default(),
            name: id.name.clone(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshFailureLabels {
    kind: &'static str,
    namespace: String,
    name: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

/// Every metric regcred exports. Made once by the binary, shared with the controller.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    reconcile_duration: Family<ControllerLabels, Histogram>,
    refreshes: Family<CredentialLabels, Counter>,
    refresh_failures: Family<RefreshFailureLabels, Counter>,
    ecr_requests: Family<OutcomeLabels, Counter>,
    ecr_request_duration: Histogram,
    kube_requests: kube_requests::KubeRequests,
    watch_failures: Family<ResourceLabels, Counter>,
    leader: Gauge,
    ready: Gauge,
    credentials: Arc<OnceLock<credentials::Source>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(env!("CARGO_PKG_VERSION"), "unknown")
    }
}

impl Metrics {
    /// A registry with every regcred series; `version` and `commit` go to
    /// `regcred_build_info`.
    pub fn new(version: &str, commit: &str) -> Self {
        let mut registry = Registry::with_prefix("regcred");
        registry.register(
            "build",
            "The running regcred build",
            Info::new(vec![
                ("version".to_owned(), version.to_owned()),
                ("commit".to_owned(), commit.to_owned()),
            ]),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "Whether every cache has had its first full list (1) or not (0)",
            ready.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "Whether this replica holds the leader lease and reconciles (1) or stands by (0)",
            leader.clone(),
        );
        let reconciles = Family::default();
        registry.register(
            "reconciles",
            "Reconciles run, by controller",
            reconciles.clone(),
        );
        let reconcile_errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and will be retried, by controller and error kind",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.5, 12))
            });
        registry.register_with_unit(
            "reconcile_duration",
            "How long reconciles take, by controller",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let refreshes = Family::default();
        registry.register(
            "credential_refreshes",
            "Tokens minted for a credential (ECR), successfully",
            refreshes.clone(),
        );
        let refresh_failures = Family::default();
        registry.register(
            "credential_refresh_failures",
            "Failed attempts to mint a credential's token, by condition reason",
            refresh_failures.clone(),
        );
        let ecr_requests = Family::default();
        registry.register(
            "ecr_token_requests",
            "ECR GetAuthorizationToken requests (with their STS exchange), by outcome",
            ecr_requests.clone(),
        );
        let ecr_request_duration = Histogram::new(exponential_buckets(0.01, 2.5, 10));
        registry.register_with_unit(
            "ecr_token_request_duration",
            "How long ECR token requests take, with their STS exchange",
            Unit::Seconds,
            ecr_request_duration.clone(),
        );
        let kube_requests = kube_requests::KubeRequests::default();
        kube_requests.register(&mut registry);
        let watch_failures = Family::default();
        registry.register(
            "watch_failures",
            "Watches that failed and were restarted, by resource",
            watch_failures.clone(),
        );
        let credentials = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(credentials::Collector::new(credentials.clone())));
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            refreshes,
            refresh_failures,
            ecr_requests,
            ecr_request_duration,
            kube_requests,
            watch_failures,
            leader,
            ready,
            credentials,
        }
    }

    /// The Prometheus text exposition (format 0.0.4) of every series.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// The `Content-Type` of [`Metrics::encode`].
    pub const CONTENT_TYPE: &'static str =
        prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

    /// A layer for the Kubernetes client's service stack that counts every request by
    /// resource, verb and response code.
    pub fn kube_layer(&self) -> KubeRequestsLayer {
        self.kube_requests.layer()
    }

    /// Runs one reconcile, counting it and timing it.
    pub(crate) async fn reconcile<F, T>(
        &self,
        controller: ControllerName,
        run: F,
    ) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let labels = ControllerLabels {
            controller: controller.as_str(),
        };
        let started = Instant::now();
        let result = run.await;
        self.reconciles.get_or_create(&labels).inc();
        self.reconcile_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.reconcile_errors
                .get_or_create(&ReconcileErrorLabels {
                    controller: labels.controller,
                    reason: error.kind(),
                })
                .inc();
        }
        result
    }

    pub(crate) fn refreshed(&self, credential: &CredentialId) {
        self.refreshes
            .get_or_create(&CredentialLabels::of(credential))
            .inc();
    }

    pub(crate) fn refresh_failed(&self, credential: &CredentialId, reason: &str) {
        let CredentialLabels {
            kind,
            namespace,
            name,
        } = CredentialLabels::of(credential);
        self.refresh_failures
            .get_or_create(&RefreshFailureLabels {
                kind,
                namespace,
                name,
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// Forgets a deleted credential's counters.
    pub(crate) fn forget(&self, credential: &CredentialId) {
        let labels = CredentialLabels::of(credential);
        self.refreshes.remove(&labels);
        // Reasons are few; drop every series of this credential.
        let stale: Vec<RefreshFailureLabels> = REFRESH_FAILURE_REASONS
            .iter()
            .map(|reason| RefreshFailureLabels {
                kind: labels.kind,
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                reason: (*reason).to_owned(),
            })
            .collect();
        for labels in &stale {
            self.refresh_failures.remove(labels);
        }
    }

    /// Records one ECR token request: `outcome` is `success` or the failure's reason.
    pub(crate) fn ecr_request(&self, outcome: &'static str, took: std::time::Duration) {
        self.ecr_requests
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.ecr_request_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn watch_failed(&self, resource: &'static str) {
        self.watch_failures
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    pub(crate) fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// Where the per-credential series are read from, once the caches exist.
    pub(crate) fn read_credentials_from(&self, source: credentials::Source) {
        let _ = self.credentials.set(source);
    }
}

/// Every reason a refresh can fail with (the ECR and identity ones).
const REFRESH_FAILURE_REASONS: &[&str] = {
    use regcred_api::condition_reasons as r;
    &[
        r::AWS_ACCESS_DENIED,
        r::AWS_THROTTLED,
        r::AWS_UNREACHABLE,
        r::AWS_INVALID_IDENTITY,
        r::AWS_ERROR,
        r::AWS_NOT_ALLOWED,
        r::AWS_ENDPOINT_NOT_ALLOWED,
        r::TOKEN_REQUEST_FAILED,
        r::SOURCE_NOT_FOUND,
        r::SOURCE_NOT_LABELLED,
        r::SOURCE_INVALID,
    ]
};

pub(crate) use credentials::Source as CredentialSource;

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use super::*;
    use crate::credential::Kind;

    /// Every family's name as exposed, with each one given a sample first.
    fn exposed() -> BTreeSet<String> {
        let metrics = Metrics::new("1.2.3", "abc");
        let id = CredentialId {
            kind: Kind::Cluster,
            namespace: None,
            name: "ecr".into(),
        };
        metrics.refreshed(&id);
        metrics.refresh_failed(&id, "AwsThrottled");
        metrics.ecr_request("success", Duration::from_millis(5));
        metrics.watch_failed("secrets");
        let failed: Result<(), Error> = Err(Error::LeaseLost("test".into()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _ =
            runtime.block_on(metrics.reconcile(ControllerName::ServiceAccount, async { failed }));
        let mut client = tower::Layer::layer(
            &metrics.kube_layer(),
            tower::service_fn(|_: http::Request<()>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(()))
            }),
        );
        let request = http::Request::get("/api/v1/secrets").body(()).unwrap();
        runtime
            .block_on(tower::Service::call(&mut client, request))
            .unwrap();
        let text = metrics.encode();
        assert!(
            text.contains(
                "regcred_kube_requests_total{resource=\"secrets\",verb=\"list\",code=\"200\"} 1\n"
            ),
            "{text}"
        );
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap().to_owned())
            .collect()
    }

    /// The `regcred_*` names a file mentions, histogram suffixes folded.
    fn mentioned(path: &str) -> BTreeSet<String> {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../..")
                .join(path),
        )
        .unwrap();
        let mut names = BTreeSet::new();
        for (at, _) in text.match_indices("regcred_") {
            let name: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            let name = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name)
                .to_owned();
            names.insert(name);
        }
        names
    }

    #[test]
    fn docs_alerts_and_dashboard_name_exactly_the_exposed_series() {
        let exposed = exposed();
        assert!(exposed.len() >= 18, "{exposed:?}");
        assert_eq!(mentioned("docs/metrics.md"), exposed, "docs/metrics.md");
        for file in [
            "config/prometheus/alerts.yaml",
            "config/grafana/regcred-dashboard.json",
        ] {
            let unknown: Vec<_> = mentioned(file).difference(&exposed).cloned().collect();
            assert!(unknown.is_empty(), "{file} uses unknown series {unknown:?}");
        }
    }
}
