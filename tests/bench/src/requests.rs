//! A contender's API requests, from the API server's audit log, sorted into what the
//! targets speak of: writes to the objects it keeps, other writes, per-object reads, and
//! Secret lists or watches without a selector (a cache of every Secret in the cluster).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use regcred_testkit::{Audit, AuditEvent, AuditMark};
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Requests {
    /// Every request but Lease renewals (leader election), as `verb resource`.
    pub(crate) by_verb: BTreeMap<String, usize>,
    pub(crate) total: usize,
    /// Creates, updates, patches and deletes of Secrets and ServiceAccounts in the target
    /// namespaces that the API server accepted.
    pub(crate) object_writes: usize,
    /// Writes refused as conflicting (409: a stale resourceVersion, or already there).
    pub(crate) conflicts: usize,
    /// Other writes that failed, or whose answer is not in the log.
    pub(crate) failed_writes: usize,
    /// Other writes: status, Events, objects outside the targets (regcred's signing key).
    pub(crate) other_writes: usize,
    /// GETs of one Secret, ServiceAccount or Namespace of the targets (regcred reads its
    /// signing key once at start, outside them).
    pub(crate) per_object_gets: usize,
    /// Secret lists and watches with neither a label nor a field selector.
    pub(crate) unselected_secret_reads: usize,
    /// Lease requests (leader election), counted apart.
    pub(crate) leases: usize,
}

fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete")
}

impl Requests {
    /// `user`'s requests; target namespaces are those named `<run>-...`.
    pub(crate) fn of(events: &[AuditEvent], user: &str, run: &str) -> Requests {
        let prefix = format!("{run}-");
        let mut r = Requests::default();
        for e in events.iter().filter(|e| e.user == user) {
            if e.resource == "leases" {
                r.leases += 1;
                continue;
            }
            r.total += 1;
            let resource = e.resource_path();
            let resource = if resource.is_empty() {
                "(discovery)".to_owned()
            } else {
                resource
            };
            *r.by_verb
                .entry(format!("{} {resource}", e.verb))
                .or_default() += 1;
            let in_targets = e
                .namespace
                .as_deref()
                .is_some_and(|ns| ns.starts_with(&prefix))
                || (e.resource == "namespaces"
                    && e.name.as_deref().is_some_and(|ns| ns.starts_with(&prefix)));
            let object = matches!(e.resource.as_str(), "secrets" | "serviceaccounts")
                && e.subresource.is_none()
                && in_targets;
            let accepted = e.code.is_some_and(|c| (200..300).contains(&c));
            if is_write(&e.verb) && e.code == Some(409) {
                r.conflicts += 1;
            } else if is_write(&e.verb) && !accepted {
                r.failed_writes += 1;
            } else if is_write(&e.verb) {
                if object {
                    r.object_writes += 1;
                } else {
                    r.other_writes += 1;
                }
            }
            if e.verb == "get"
                && in_targets
                && e.subresource.is_none()
                && matches!(
                    e.resource.as_str(),
                    "secrets" | "serviceaccounts" | "namespaces"
                )
            {
                r.per_object_gets += 1;
            }
            if e.resource == "secrets"
                && matches!(e.verb.as_str(), "list" | "watch")
                && !e.uri.contains("labelSelector=")
                && !e.uri.contains("fieldSelector=")
            {
                r.unselected_secret_reads += 1;
            }
        }
        r
    }

    pub(crate) fn since(audit: &Audit, mark: &AuditMark, user: &str, run: &str) -> Requests {
        Requests::of(&audit.events_since(mark), user, run)
    }
}

/// Waits until `user` has made no request but Lease renewals for `quiet` (polling once a
/// second), at most `timeout`; returns when its last request was seen.
pub(crate) async fn until_quiet(
    audit: &Audit,
    mark: &AuditMark,
    user: &str,
    quiet: Duration,
    timeout: Duration,
) -> Instant {
    let started = Instant::now();
    let count = || audit.count(mark, |e| e.user == user && e.resource != "leases");
    let mut last = count();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = count();
        if now != last {
            (last, since) = (now, Instant::now());
        } else if since.elapsed() >= quiet || started.elapsed() > timeout {
            return since;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(user: &str, verb: &str, resource: &str, uri: &str) -> AuditEvent {
        let namespace = uri
            .strip_prefix("/api/v1/namespaces/")
            .and_then(|rest| rest.split('/').next())
            .map(str::to_owned);
        AuditEvent {
            user: user.into(),
            verb: verb.into(),
            resource: resource.into(),
            subresource: None,
            namespace,
            name: None,
            api_group: String::new(),
            uri: uri.into(),
            code: Some(200),
            user_agent: String::new(),
        }
    }

    #[test]
    fn sorts_requests_into_what_the_targets_count() {
        let events = [
            event(
                "me",
                "create",
                "secrets",
                "/api/v1/namespaces/run-1/secrets",
            ),
            event(
                "me",
                "patch",
                "serviceaccounts",
                "/api/v1/namespaces/run-1/serviceaccounts/d",
            ),
            event(
                "me",
                "create",
                "events",
                "/apis/events.k8s.io/v1/namespaces/a/events",
            ),
            event("me", "get", "secrets", "/api/v1/namespaces/run-1/secrets/s"),
            event(
                "me",
                "get",
                "secrets",
                "/api/v1/namespaces/elsewhere/secrets/key",
            ),
            event(
                "me",
                "list",
                "secrets",
                "/api/v1/secrets?labelSelector=x%3Dtrue",
            ),
            event("me", "watch", "secrets", "/api/v1/secrets?watch=true"),
            event(
                "me",
                "update",
                "leases",
                "/apis/coordination.k8s.io/v1/leases/l",
            ),
            event(
                "someone else",
                "create",
                "secrets",
                "/api/v1/namespaces/run-1/secrets",
            ),
            event(
                "me",
                "create",
                "secrets",
                "/api/v1/namespaces/elsewhere/secrets",
            ),
            AuditEvent {
                code: Some(403),
                ..event(
                    "me",
                    "create",
                    "secrets",
                    "/api/v1/namespaces/run-1/secrets",
                )
            },
            AuditEvent {
                code: Some(409),
                ..event(
                    "me",
                    "patch",
                    "serviceaccounts",
                    "/api/v1/namespaces/run-1/serviceaccounts/d",
                )
            },
        ];
        let r = Requests::of(&events, "me", "run");
        assert_eq!(r.total, 10);
        assert_eq!(r.failed_writes, 1);
        assert_eq!(r.object_writes, 2);
        assert_eq!(r.conflicts, 1);
        assert_eq!(r.other_writes, 2);
        assert_eq!(r.per_object_gets, 1);
        assert_eq!(r.unselected_secret_reads, 1);
        assert_eq!(r.leases, 1);
        assert_eq!(r.by_verb["create secrets"], 3);
    }
}
