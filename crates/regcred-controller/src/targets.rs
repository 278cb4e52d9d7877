//! Pure decisions: which ServiceAccounts a credential covers, and which of several
//! credentials wins a contested Secret.

use std::collections::BTreeMap;

use jiff::Timestamp;
use regcred_api::CredentialSpec;

use crate::credential::CredentialId;
use crate::selector;

/// Whether a ServiceAccount is targeted by `spec` (all, by name, or by selector).
pub(crate) fn covers_service_account(
    spec: &CredentialSpec,
    name: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(targets) = &spec.service_accounts else {
        return true;
    };
    match (&targets.names, &targets.selector) {
        (Some(names), _) => names.iter().any(|n| n == name),
        (None, Some(sel)) => selector::matches(sel, labels),
        (None, None) => true,
    }
}

/// A credential's claim on a Secret name in a namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) id: CredentialId,
    pub(crate) created: Option<Timestamp>,
}

/// The winner among claims on one Secret: the oldest, then by kind, namespace and name.
/// Every replica and every reconcile computes the same answer, so nothing flaps.
pub(crate) fn winner(claims: &[Claim]) -> Option<&Claim> {
    claims.iter().min_by(|a, b| {
        let created = |c: &Claim| c.created.unwrap_or(Timestamp::MAX);
        created(a).cmp(&created(b)).then_with(|| a.id.cmp(&b.id))
    })
}

#[cfg(test)]
mod tests {
    use regcred_api::{DeletionPolicy, ServiceAccountTargets};

    use super::*;
    use crate::credential::Kind;

    fn spec(targets: Option<ServiceAccountTargets>) -> CredentialSpec {
        CredentialSpec {
            registries: vec![],
            secret_name: None,
            service_accounts: targets,
            deletion_policy: DeletionPolicy::Delete,
            renew_before: None,
        }
    }

    #[test]
    fn service_account_targeting() {
        assert!(covers_service_account(&spec(None), "anything", None));
        let by_name = spec(Some(ServiceAccountTargets {
            names: Some(vec!["app".into()]),
            selector: None,
        }));
        assert!(covers_service_account(&by_name, "app", None));
        assert!(!covers_service_account(&by_name, "default", None));
        let none = spec(Some(ServiceAccountTargets {
            names: Some(vec![]),
            selector: None,
        }));
        assert!(!covers_service_account(&none, "default", None));
    }

    fn claim(kind: Kind, ns: Option<&str>, name: &str, created: Option<i64>) -> Claim {
        Claim {
            id: CredentialId {
                kind,
                namespace: ns.map(Into::into),
                name: name.into(),
            },
            created: created.map(|s| Timestamp::from_second(s).unwrap()),
        }
    }

    #[test]
    fn oldest_wins_then_identity_breaks_ties() {
        let old = claim(Kind::Cluster, None, "zeta", Some(100));
        let new = claim(Kind::Namespaced, Some("a"), "alpha", Some(200));
        assert_eq!(winner(&[new.clone(), old.clone()]), Some(&old));
        let tie_a = claim(Kind::Namespaced, Some("a"), "x", Some(100));
        let tie_b = claim(Kind::Cluster, None, "a", Some(100));
        assert_eq!(winner(&[tie_b.clone(), tie_a.clone()]), Some(&tie_a));
        assert_eq!(winner(&[]), None);
        let unknown = claim(Kind::Namespaced, Some("a"), "a", None);
        assert_eq!(winner(&[unknown, new.clone()]), Some(&new));
    }
}
