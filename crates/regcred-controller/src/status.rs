//! Builds the status from what a reconcile found (pure), and writes it only when it
//! changed. Events are published on transitions of the `Ready` condition only.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::runtime::events::{Event, EventType};
use kube::{Client, ResourceExt};
use regcred_api::condition_reasons as reasons;
use regcred_api::names::FIELD_MANAGER;
use regcred_api::{CredentialStatus, MAX_FAILURES, TargetCounts, TargetFailure};

use crate::credential::Credential;
use crate::error::Error;

pub(crate) const READY: &str = "Ready";

/// What one reconcile found.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) secret_name: String,
    pub(crate) registries: Vec<String>,
    pub(crate) namespaces: i32,
    pub(crate) secrets_ready: i32,
    pub(crate) service_accounts: i32,
    pub(crate) service_accounts_patched: i32,
    pub(crate) failures: Vec<TargetFailure>,
    /// A fault that stops every write (a source problem): reason and message.
    pub(crate) blocked: Option<(&'static str, String)>,
    /// Whether any Secret was written.
    pub(crate) wrote: bool,
    pub(crate) refresh_request: Option<String>,
    /// When the token in the Secrets expires, and when the next mint is planned.
    pub(crate) expires_at: Option<Timestamp>,
    pub(crate) next_refresh: Option<Timestamp>,
    /// When the tokens now written were minted, if in this reconcile.
    pub(crate) minted_at: Option<Timestamp>,
    pub(crate) refresh_failures: i32,
    /// Said in the `Ready` message (for example a renewBefore the token cannot honour).
    pub(crate) note: Option<String>,
}

impl Report {
    fn ready(&self) -> (bool, &'static str, String) {
        if let Some((reason, message)) = &self.blocked {
            let kept = if self.secrets_ready > 0 {
                "; the Secrets already written stay as they are"
            } else {
                ""
            };
            return (false, reason, format!("{message}{kept}"));
        }
        if self.namespaces == 0 {
            return (
                false,
                reasons::NO_TARGETS,
                "no live namespace is targeted".into(),
            );
        }
        // The first by namespace, not by completion: writes finish in any order, and the
        // message must not change (and be written again) with it.
        let first = self
            .failures
            .iter()
            .min_by(|a, b| a.namespace.cmp(&b.namespace));
        if let Some(first) = first {
            let all_conflicts = self.failures.iter().all(|f| f.reason == reasons::CONFLICT);
            let reason = if all_conflicts && self.secrets_ready == 0 {
                reasons::CONFLICT
            } else {
                reasons::PARTIALLY_SYNCED
            };
            let message = format!(
                "Secret {} is current in {} of {} namespaces; {} failed, first: {}: {}",
                self.secret_name,
                self.secrets_ready,
                self.namespaces,
                self.failures.len(),
                first.namespace,
                first.message
            );
            return (false, reason, message);
        }
        let mut message = format!(
            "Secret {} is current in {} namespace(s); {} of {} targeted ServiceAccounts list it",
            self.secret_name, self.namespaces, self.service_accounts_patched, self.service_accounts
        );
        if let Some(note) = &self.note {
            message.push_str("; ");
            message.push_str(note);
        }
        (true, reasons::READY, message)
    }
}

/// The status `report` calls for, keeping timestamps that did not change in meaning.
pub(crate) fn build(
    previous: Option<&CredentialStatus>,
    generation: Option<i64>,
    report: &Report,
    now: Timestamp,
) -> CredentialStatus {
    let (ready, reason, message) = report.ready();
    let status = if ready { "True" } else { "False" };
    let previous_ready = previous.and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
    let last_transition_time = match previous_ready {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => whole_seconds(now),
    };
    let mut failures = report.failures.clone();
    failures.sort_by(|a, b| a.namespace.cmp(&b.namespace));
    failures.truncate(MAX_FAILURES);
    CredentialStatus {
        observed_generation: generation,
        conditions: vec![Condition {
            type_: READY.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            observed_generation: generation,
            last_transition_time,
        }],
        registries: Some(report.registries.join(",")),
        targets: Some(TargetCounts {
            namespaces: report.namespaces,
            secrets_ready: report.secrets_ready,
            service_accounts: report.service_accounts,
            service_accounts_patched: report.service_accounts_patched,
            synced: format!("{}/{}", report.secrets_ready, report.namespaces),
        }),
        failures,
        last_refresh_time: match (report.minted_at, report.wrote) {
            (Some(minted), _) => Some(whole_seconds(minted)),
            (None, true) => Some(whole_seconds(now)),
            (None, false) => previous.and_then(|s| s.last_refresh_time.clone()),
        },
        expires_at: report.expires_at.map(whole_seconds),
        next_refresh_time: report.next_refresh.map(whole_seconds),
        refresh_failures: report.refresh_failures,
        last_refresh_request: report
            .refresh_request
            .clone()
            .or_else(|| previous.and_then(|s| s.last_refresh_request.clone())),
    }
}

/// The status while a refresh is still pending and the token in the Secrets has expired:
/// whatever the refresh is waiting for, status must not go on saying Synced.
pub(crate) fn expired_while_refreshing(
    previous: Option<&CredentialStatus>,
    generation: Option<i64>,
    expires_at: Timestamp,
    now: Timestamp,
) -> CredentialStatus {
    let mut status = previous.cloned().unwrap_or_default();
    status.observed_generation = generation;
    status.expires_at = Some(whole_seconds(expires_at));
    status.conditions.retain(|c| c.type_ != READY);
    status.conditions.push(Condition {
        type_: READY.into(),
        status: "False".into(),
        reason: reasons::EXPIRED.into(),
        message: format!(
            "the token in the Secrets EXPIRED at {}; the refresh started before has not finished yet",
            whole_seconds(expires_at).0
        ),
        observed_generation: generation,
        last_transition_time: whole_seconds(now),
    });
    status
}

/// Kubernetes stores times to the second: a finer one would never compare equal to what
/// was read back, and every reconcile would write the status again.
fn whole_seconds(t: Timestamp) -> Time {
    Time(Timestamp::from_second(t.as_second()).unwrap_or(t))
}

/// The Event for a change of the `Ready` condition, if it changed.
pub(crate) fn transition(
    previous: Option<&CredentialStatus>,
    next: &CredentialStatus,
) -> Option<Event> {
    let ready = |s: &CredentialStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == READY)
            .map(|c| (c.status.clone(), c.reason.clone()))
    };
    let now = next.conditions.iter().find(|c| c.type_ == READY)?;
    if previous.and_then(ready) == ready(next) {
        return None;
    }
    Some(Event {
        type_: if now.status == "True" {
            EventType::Normal
        } else {
            EventType::Warning
        },
        reason: now.reason.clone(),
        note: Some(now.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    })
}

/// The least time between two status writes of one credential that change only counts:
/// a fan-out to hundreds of namespaces must not write status once per namespace.
pub(crate) const MIN_STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// When each credential's status was last written, to space out writes, and what was
/// written at which resourceVersion: until the watch brings that version, the cache shows
/// an older status, and comparing with it would write (and announce) the same one again.
#[derive(Default)]
pub(crate) struct StatusWrites {
    last: Mutex<HashMap<String, Instant>>,
    written: Mutex<HashMap<String, (u64, CredentialStatus)>>,
}

impl StatusWrites {
    /// How long to wait before writing `key`'s status again, if `interval` has not passed.
    pub(crate) fn too_soon(&self, key: &str, interval: Duration) -> Option<Duration> {
        let last = self.last.lock().expect("status writes lock");
        let elapsed = last.get(key)?.elapsed();
        (elapsed < interval).then(|| interval - elapsed)
    }

    pub(crate) fn record(&self, key: &str) {
        self.last
            .lock()
            .expect("status writes lock")
            .insert(key.to_owned(), Instant::now());
    }

    pub(crate) fn forget(&self, key: &str) {
        self.last.lock().expect("status writes lock").remove(key);
        self.written.lock().expect("status writes lock").remove(key);
    }

    fn remember(&self, key: &str, version: Option<&str>, status: &CredentialStatus) {
        let mut written = self.written.lock().expect("status writes lock");
        match version.and_then(|v| v.parse().ok()) {
            Some(version) => written.insert(key.to_owned(), (version, status.clone())),
            None => written.remove(key),
        };
    }

    /// The status last written for `key`, while the cached credential (at
    /// `cached_version`) is older than that write; `None` once the cache has caught up.
    pub(crate) fn newer_than_cache(
        &self,
        key: &str,
        cached_version: Option<&str>,
    ) -> Option<CredentialStatus> {
        let written = self.written.lock().expect("status writes lock");
        let (version, status) = written.get(key)?;
        let cached: u64 = cached_version?.parse().ok()?;
        (cached < *version).then(|| status.clone())
    }
}

/// What publishing a status needs, and nothing more.
pub(crate) struct Publisher<'a> {
    pub(crate) client: &'a Client,
    pub(crate) recorder: &'a Recorder,
    pub(crate) writes: &'a StatusWrites,
}

/// What [`publish`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Published {
    Unchanged,
    Written,
    /// Only counts changed and the last write was too recent: retry after this long.
    Deferred(Duration),
}

/// Writes `next` if it differs from the credential's status, and publishes the Event of a
/// transition. A change of the `Ready` condition is written at once; a change of counts
/// alone at most once per [`MIN_STATUS_INTERVAL`].
pub(crate) async fn publish<C: Credential>(
    to: &Publisher<'_>,
    credential: &C,
    next: CredentialStatus,
) -> Result<Published, Error> {
    let written = to.writes.newer_than_cache(
        &credential.id().to_string(),
        credential.resource_version().as_deref(),
    );
    publish_over(
        to,
        credential,
        written.as_ref().or(credential.status()),
        next,
    )
    .await
}

/// [`publish`], over a status this reconcile already wrote (`previous`).
pub(crate) async fn publish_over<C: Credential>(
    to: &Publisher<'_>,
    credential: &C,
    previous: Option<&CredentialStatus>,
    next: CredentialStatus,
) -> Result<Published, Error> {
    if previous == Some(&next) {
        return Ok(Published::Unchanged);
    }
    let event = transition(previous, &next);
    let key = credential.id().to_string();
    if event.is_none()
        && let Some(wait) = to.writes.too_soon(&key, MIN_STATUS_INTERVAL)
    {
        return Ok(Published::Deferred(wait));
    }
    let api = C::api(to.client.clone(), credential.namespace().as_deref());
    let patch = serde_json::json!({
        "apiVersion": C::api_version(&()),
        "kind": C::kind(&()),
        "status": next,
    });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let written = api
        .patch_status(&credential.name_any(), &params, &Patch::Apply(&patch))
        .await?;
    to.writes.record(&key);
    to.writes
        .remember(&key, written.resource_version().as_deref(), &next);
    if let Some(event) = event {
        let reference = credential.object_ref(&());
        if let Err(e) = to.recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "could not publish an Event");
        }
    }
    Ok(Published::Written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_written_stands_until_the_cache_has_caught_up() {
        let writes = StatusWrites::default();
        let status = CredentialStatus {
            registries: Some("r.example".into()),
            ..Default::default()
        };
        writes.remember("k", Some("10"), &status);
        assert_eq!(writes.newer_than_cache("k", Some("9")), Some(status));
        assert_eq!(writes.newer_than_cache("k", Some("10")), None);
        assert_eq!(writes.newer_than_cache("other", Some("9")), None);
        writes.forget("k");
        assert_eq!(writes.newer_than_cache("k", Some("9")), None);
    }

    #[test]
    fn status_writes_are_spaced() {
        let writes = StatusWrites::default();
        assert_eq!(writes.too_soon("a", Duration::from_secs(1)), None);
        writes.record("a");
        let wait = writes
            .too_soon("a", Duration::from_secs(1))
            .expect("too soon");
        assert!(wait <= Duration::from_secs(1) && wait > Duration::from_millis(500));
        assert_eq!(writes.too_soon("a", Duration::ZERO), None);
        assert_eq!(writes.too_soon("b", Duration::from_secs(1)), None);
    }

    mod publishing {
        use http::{Method, StatusCode};
        use kube::runtime::events::Reporter;
        use regcred_api::RegistryCredential;
        use serde_json::{Value, json};

        use super::*;
        use crate::api_mock;

        fn credential(status: Option<CredentialStatus>) -> RegistryCredential {
            let mut c: RegistryCredential = serde_json::from_value(json!({
                "apiVersion": "regcred.io/v1alpha1",
                "kind": "RegistryCredential",
                "metadata": {"name": "harbor", "namespace": "app", "uid": "u1", "generation": 1},
                "spec": {"registries": [{"server": "harbor.example.com",
                    "static": {"secretRef": {"name": "robot"}}}]},
            }))
            .unwrap();
            c.status = status;
            c
        }

        async fn publish_with(
            credential: &RegistryCredential,
            previous: Option<&CredentialStatus>,
            next: CredentialStatus,
            writes: &StatusWrites,
        ) -> (Result<Published, Error>, Vec<api_mock::Sent>) {
            let (client, mut server) = api_mock::client();
            let answering = async {
                let mut sent = Vec::new();
                // Answers whatever comes until the code under test drops its client.
                // A status apply gets the object back; a create, what it sent.
                let object = serde_json::to_value(credential).unwrap();
                while let Some(s) = server
                    .try_answer_by(|s| {
                        let body = if s.method == Method::POST {
                            s.body.clone()
                        } else {
                            object.clone()
                        };
                        (StatusCode::OK, body)
                    })
                    .await
                {
                    sent.push(s);
                }
                sent
            };
            // The client and recorder live only inside: dropped, they end `answering`.
            let publishing = async move {
                let recorder = Recorder::new(client.clone(), Reporter::from("regcred"));
                let to = Publisher {
                    client: &client,
                    recorder: &recorder,
                    writes,
                };
                publish_over(&to, credential, previous, next).await
            };
            tokio::join!(publishing, answering)
        }

        #[tokio::test]
        async fn an_unchanged_status_sends_nothing() {
            let now = at(1000);
            let synced = build(None, Some(1), &report(), now);
            let c = credential(Some(synced.clone()));
            let (published, sent) =
                publish_with(&c, c.status.as_ref(), synced, &StatusWrites::default()).await;
            assert_eq!(published.unwrap(), Published::Unchanged);
            assert!(sent.is_empty(), "{} requests", sent.len());
        }

        #[tokio::test]
        async fn a_ready_change_is_one_status_apply_then_one_event() {
            let now = at(1000);
            let c = credential(None);
            let next = build(None, Some(1), &report(), now);
            let (published, sent) =
                publish_with(&c, None, next.clone(), &StatusWrites::default()).await;
            assert_eq!(published.unwrap(), Published::Written);
            assert_eq!(
                sent.len(),
                2,
                "{:?}",
                sent.iter().map(|s| &s.uri).collect::<Vec<_>>()
            );
            let apply = &sent[0];
            assert_eq!(apply.method, Method::PATCH);
            assert_eq!(
                apply.uri,
                "/apis/regcred.io/v1alpha1/namespaces/app/registrycredentials/harbor/status?&force=true&fieldManager=regcred"
            );
            assert_eq!(
                apply.content_type.as_deref(),
                Some("application/apply-patch+yaml")
            );
            assert_eq!(
                apply.body,
                json!({
                    "apiVersion": "regcred.io/v1alpha1",
                    "kind": "RegistryCredential",
                    "status": serde_json::to_value(&next).unwrap(),
                })
            );
            let event = &sent[1];
            assert_eq!(event.method, Method::POST);
            assert_eq!(event.uri, "/apis/events.k8s.io/v1/namespaces/app/events?");
            assert_eq!(event.body["reason"], Value::from("Synced"));
            assert_eq!(event.body["regarding"]["name"], Value::from("harbor"));
        }

        #[tokio::test]
        async fn counts_alone_wait_for_the_interval_and_send_nothing() {
            let now = at(1000);
            let synced = build(None, Some(1), &report(), now);
            let c = credential(Some(synced.clone()));
            let mut more = report();
            more.namespaces = 3;
            more.secrets_ready = 3;
            let next = build(Some(&synced), Some(1), &more, now);
            assert_ne!(next, synced, "the counts changed");
            let writes = StatusWrites::default();
            writes.record(&c.id().to_string());
            let (published, sent) = publish_with(&c, c.status.as_ref(), next, &writes).await;
            assert!(matches!(published.unwrap(), Published::Deferred(_)));
            assert!(sent.is_empty(), "{} requests", sent.len());
        }
    }

    fn report() -> Report {
        Report {
            secret_name: "pull".into(),
            registries: vec!["harbor.example.com".into()],
            namespaces: 2,
            secrets_ready: 2,
            service_accounts: 3,
            service_accounts_patched: 3,
            ..Default::default()
        }
    }

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn an_expired_token_with_a_pending_refresh_is_not_ready() {
        let now = Timestamp::from_second(1000).unwrap();
        let synced = build(None, Some(1), &report(), now);
        let expired = expired_while_refreshing(
            Some(&synced),
            Some(1),
            Timestamp::from_second(990).unwrap(),
            now,
        );
        let ready = &expired.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reasons::EXPIRED)
        );
        assert_eq!(expired.targets, synced.targets, "counts are kept");
        assert!(transition(Some(&synced), &expired).is_some(), "an Event");
    }

    #[test]
    fn ready_when_every_namespace_is_current() {
        let s = build(None, Some(4), &report(), at(10));
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reasons::READY)
        );
        assert_eq!(s.targets.as_ref().unwrap().synced, "2/2");
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.registries.as_deref(), Some("harbor.example.com"));
    }

    #[test]
    fn unchanged_report_builds_an_identical_status() {
        let first = build(None, Some(1), &report(), at(10));
        let again = build(Some(&first), Some(1), &report(), at(99));
        assert_eq!(first, again, "a steady state must not cause a status write");
        assert!(transition(Some(&first), &again).is_none());
    }

    #[test]
    fn blocked_source_is_false_with_its_reason_and_an_event() {
        let ok = build(None, Some(1), &report(), at(10));
        let mut r = report();
        r.blocked = Some((reasons::SOURCE_NOT_LABELLED, "label it".into()));
        let s = build(Some(&ok), Some(1), &r, at(20));
        let c = &s.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", reasons::SOURCE_NOT_LABELLED)
        );
        assert!(c.message.contains("stay as they are"));
        assert_eq!(c.last_transition_time, Time(at(20)));
        let event = transition(Some(&ok), &s).unwrap();
        assert_eq!(
            (event.type_, event.reason.as_str()),
            (EventType::Warning, reasons::SOURCE_NOT_LABELLED)
        );
    }

    #[test]
    fn failures_are_bounded_sorted_and_classified() {
        let mut r = report();
        r.secrets_ready = 0;
        r.namespaces = 30;
        r.failures = (0..30)
            .rev()
            .map(|i| TargetFailure {
                namespace: format!("ns-{i:02}"),
                reason: reasons::CONFLICT.into(),
                message: "taken".into(),
            })
            .collect();
        let s = build(None, None, &r, at(1));
        assert_eq!(s.failures.len(), MAX_FAILURES);
        assert_eq!(s.failures[0].namespace, "ns-00");
        assert_eq!(s.conditions[0].reason, reasons::CONFLICT);
        // Whatever order the writes finished in, the message names the same namespace.
        assert!(s.conditions[0].message.contains("first: ns-00: taken"));
        r.failures.reverse();
        assert_eq!(
            build(None, None, &r, at(1)).conditions[0].message,
            s.conditions[0].message
        );
        r.secrets_ready = 1;
        assert_eq!(
            build(None, None, &r, at(1)).conditions[0].reason,
            reasons::PARTIALLY_SYNCED
        );
    }

    #[test]
    fn times_are_whole_seconds_as_the_api_server_keeps_them() {
        let mut r = report();
        let precise = Timestamp::from_second(100).unwrap() + jiff::SignedDuration::from_millis(750);
        r.expires_at = Some(precise);
        r.next_refresh = Some(precise);
        let s = build(None, None, &r, precise);
        assert_eq!(s.expires_at, Some(Time(at(100))));
        assert_eq!(s.next_refresh_time, Some(Time(at(100))));
        assert_eq!(s.conditions[0].last_transition_time, Time(at(100)));
    }

    #[test]
    fn refresh_time_moves_only_when_something_was_written() {
        let mut r = report();
        r.wrote = true;
        let first = build(None, None, &r, at(10));
        assert_eq!(first.last_refresh_time, Some(Time(at(10))));
        let quiet = build(Some(&first), None, &report(), at(50));
        assert_eq!(quiet.last_refresh_time, Some(Time(at(10))));
    }
}
