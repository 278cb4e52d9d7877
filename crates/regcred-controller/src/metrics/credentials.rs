//! Per-credential series, read from the credentials' status at scrape time: what
//! `kubectl get` shows is what Prometheus sees, on every replica, and a deleted credential
//! disappears with its object.

use std::sync::{Arc, OnceLock};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Unit;
use regcred_api::{ClusterRegistryCredential, CredentialStatus, RegistryCredential};

use crate::credential::Credential;

/// The caches the series are read from.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) namespaced: Store<RegistryCredential>,
    pub(crate) cluster: Store<ClusterRegistryCredential>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Labels {
    kind: &'static str,
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConditionLabels {
    kind: &'static str,
    namespace: String,
    name: String,
    condition: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    kind: &'static str,
    namespace: String,
    name: String,
    state: &'static str,
}

/// One scrape's worth of per-credential gauges.
#[derive(Default)]
struct Snapshot {
    ready: Family<ConditionLabels, Gauge>,
    expiration: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    renewal: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    consecutive_failures: Family<Labels, Gauge>,
    namespaces: Family<StateLabels, Gauge>,
    service_accounts: Family<StateLabels, Gauge>,
}

impl Snapshot {
    fn add<C: Credential>(&mut self, credential: &C) {
        let labels = Labels {
            kind: C::KIND.as_str(),
            namespace: credential.namespace().unwrap_or_default(),
            name: credential.name_any(),
        };
        let status = credential.status().cloned().unwrap_or_default();
        let ready = ready_condition(&status);
        for condition in ["True", "False", "Unknown"] {
            self.ready
                .get_or_create(&ConditionLabels {
                    kind: labels.kind,
                    namespace: labels.namespace.clone(),
                    name: labels.name.clone(),
                    condition,
                })
                .set(i64::from(ready == condition));
        }
        if let Some(at) = &status.expires_at {
            self.expiration.get_or_create(&labels).set(seconds(at));
        }
        if let Some(at) = &status.next_refresh_time {
            self.renewal.get_or_create(&labels).set(seconds(at));
        }
        if credential.has_minted() {
            self.consecutive_failures
                .get_or_create(&labels)
                .set(i64::from(status.refresh_failures));
        }
        if let Some(targets) = &status.targets {
            let state = |state| StateLabels {
                kind: labels.kind,
                namespace: labels.namespace.clone(),
                name: labels.name.clone(),
                state,
            };
            self.namespaces
                .get_or_create(&state("targeted"))
                .set(i64::from(targets.namespaces));
            self.namespaces
                .get_or_create(&state("synced"))
                .set(i64::from(targets.secrets_ready));
            self.service_accounts
                .get_or_create(&state("targeted"))
                .set(i64::from(targets.service_accounts));
            self.service_accounts
                .get_or_create(&state("patched"))
                .set(i64::from(targets.service_accounts_patched));
        }
    }
}

/// The Ready condition's status, `Unknown` until the controller has reported.
fn ready_condition(status: &CredentialStatus) -> &'static str {
    match status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
    {
        Some("True") => "True",
        Some("False") => "False",
        _ => "Unknown",
    }
}

fn seconds(time: &Time) -> f64 {
    time.0.as_millisecond() as f64 / 1000.0
}

/// Encodes the per-credential series on each scrape.
#[derive(Debug)]
pub(super) struct Collector {
    source: Arc<OnceLock<Source>>,
}

impl Collector {
    pub(super) fn new(source: Arc<OnceLock<Source>>) -> Self {
        Collector { source }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").finish_non_exhaustive()
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut snapshot = Snapshot::default();
        if let Some(source) = self.source.get() {
            for c in source.namespaced.state() {
                snapshot.add(&*c);
            }
            for c in source.cluster.state() {
                snapshot.add(&*c);
            }
        }
        let series: [(&str, &str, Option<&Unit>, &dyn EncodeMetric); 6] = [
            (
                "credential_ready_status",
                "The credential's Ready condition: 1 for the condition it is in.",
                None,
                &snapshot.ready,
            ),
            (
                "credential_expiration_timestamp",
                "When the credential's current token expires (ECR), as status.expiresAt says.",
                Some(&Unit::Seconds),
                &snapshot.expiration,
            ),
            (
                "credential_renewal_timestamp",
                "When the credential's token is next refreshed (ECR), as status.nextRefreshTime says.",
                Some(&Unit::Seconds),
                &snapshot.renewal,
            ),
            (
                "credential_consecutive_refresh_failures",
                "Failed refreshes in a row since the last good one, as status.refreshFailures says.",
                None,
                &snapshot.consecutive_failures,
            ),
            (
                "credential_namespaces",
                "Namespaces the credential targets, and those whose Secret is in place.",
                None,
                &snapshot.namespaces,
            ),
            (
                "credential_service_accounts",
                "ServiceAccounts the credential targets, and those that list its Secret.",
                None,
                &snapshot.service_accounts,
            ),
        ];
        // The registry's `regcred_` prefix applies to collectors too.
        for (name, help, unit, metric) in series {
            let family = encoder.encode_descriptor(name, help, unit, metric.metric_type())?;
            metric.encode(family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    fn status(ready: &str) -> CredentialStatus {
        CredentialStatus {
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: "Synced".into(),
                message: String::new(),
                last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
                observed_generation: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn ready_is_read_from_the_condition_and_unknown_without_one() {
        assert_eq!(ready_condition(&status("True")), "True");
        assert_eq!(ready_condition(&status("False")), "False");
        assert_eq!(ready_condition(&CredentialStatus::default()), "Unknown");
    }

    #[test]
    fn timestamps_keep_their_milliseconds() {
        let t: jiff::Timestamp = "2026-12-01T12:00:00.250Z".parse().unwrap();
        assert_eq!(seconds(&Time(t)), t.as_second() as f64 + 0.25);
    }
}
