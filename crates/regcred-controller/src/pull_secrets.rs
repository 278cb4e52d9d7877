//! Pure planning of a ServiceAccount's `imagePullSecrets`: add what is wanted, remove only
//! what regcred itself added (as recorded on the ServiceAccount), keep everything else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;

/// The list and the record regcred wants on a ServiceAccount.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Secret name → owner key of each entry regcred added.
    pub recorded: BTreeMap<String, String>,
}

/// Plans the ServiceAccount's list.
///
/// - `current`: the list as it is; `recorded`: what regcred noted it added;
/// - `wanted`: Secret name → owner key of every entry that should be there now;
/// - `orphaned(name, owner)`: whether a recorded entry whose credential is gone was left
///   behind on purpose (`deletionPolicy: Orphan`): it stays, unrecorded.
///
/// An entry a person added keeps its place and is never recorded, so regcred never
/// removes it, even when it has the same name as one regcred wants.
pub fn plan(
    current: &[LocalObjectReference],
    recorded: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
    orphaned: impl Fn(&str, &str) -> bool,
) -> Plan {
    let mut list = current.to_vec();
    let mut record = BTreeMap::new();
    for (name, owner) in recorded {
        if wanted.contains_key(name) {
            record.insert(name.clone(), wanted[name].clone());
        } else if !orphaned(name, owner) {
            // Remove the entry regcred appended (the last one of that name).
            if let Some(pos) = list.iter().rposition(|e| &e.name == name) {
                list.remove(pos);
            }
        }
    }
    for (name, owner) in wanted {
        if !list.iter().any(|e| &e.name == name) {
            list.push(LocalObjectReference { name: name.clone() });
            record.insert(name.clone(), owner.clone());
        }
    }
    Plan {
        image_pull_secrets: list,
        recorded: record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(names: &[&str]) -> Vec<LocalObjectReference> {
        names
            .iter()
            .map(|n| LocalObjectReference {
                name: n.to_string(),
            })
            .collect()
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const OWNER: &str = "RegistryCredential/app/harbor";

    #[test]
    fn appends_and_records_keeping_other_entries() {
        let p = plan(
            &refs(&["theirs"]),
            &map(&[]),
            &map(&[("regcred", OWNER)]),
            |_, _| false,
        );
        assert_eq!(p.image_pull_secrets, refs(&["theirs", "regcred"]));
        assert_eq!(p.recorded, map(&[("regcred", OWNER)]));
    }

    #[test]
    fn steady_state_plans_no_change() {
        let current = refs(&["theirs", "regcred"]);
        let recorded = map(&[("regcred", OWNER)]);
        let p = plan(&current, &recorded, &recorded, |_, _| false);
        assert_eq!(p.image_pull_secrets, current);
        assert_eq!(p.recorded, recorded);
    }

    #[test]
    fn a_persons_same_named_entry_is_neither_recorded_nor_removed() {
        let p = plan(
            &refs(&["regcred"]),
            &map(&[]),
            &map(&[("regcred", OWNER)]),
            |_, _| false,
        );
        assert_eq!(p.image_pull_secrets, refs(&["regcred"]));
        assert!(p.recorded.is_empty());
        let later = plan(&p.image_pull_secrets, &p.recorded, &map(&[]), |_, _| false);
        assert_eq!(later.image_pull_secrets, refs(&["regcred"]));
    }

    #[test]
    fn removes_only_what_it_recorded() {
        let p = plan(
            &refs(&["a", "regcred", "b"]),
            &map(&[("regcred", OWNER)]),
            &map(&[]),
            |_, _| false,
        );
        assert_eq!(p.image_pull_secrets, refs(&["a", "b"]));
        assert!(p.recorded.is_empty());
    }

    #[test]
    fn orphaned_entries_stay_unrecorded() {
        let p = plan(
            &refs(&["regcred"]),
            &map(&[("regcred", OWNER)]),
            &map(&[]),
            |name, owner| name == "regcred" && owner == OWNER,
        );
        assert_eq!(p.image_pull_secrets, refs(&["regcred"]));
        assert!(p.recorded.is_empty());
    }

    #[test]
    fn ownership_moves_to_the_current_winner() {
        let other = "ClusterRegistryCredential/global";
        let p = plan(
            &refs(&["regcred"]),
            &map(&[("regcred", OWNER)]),
            &map(&[("regcred", other)]),
            |_, _| false,
        );
        assert_eq!(p.image_pull_secrets, refs(&["regcred"]));
        assert_eq!(p.recorded, map(&[("regcred", other)]));
    }
}
