//! Pure planning of a ServiceAccount's `imagePullSecrets`: add what is wanted, remove only
//! what regcred itself added (as recorded on the ServiceAccount), keep everything else.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::LocalObjectReference;

/// The list and the record regcred wants on a ServiceAccount.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub(crate) image_pull_secrets: Vec<LocalObjectReference>,
    /// Secret name → owner key of each entry regcred added.
    pub(crate) recorded: BTreeMap<String, String>,
}

/// What becomes of a recorded entry that is no longer wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Removed.
    No,
    /// Kept and still recorded: its credential's replacement is not in place yet (a
    /// renamed Secret), so removing it now would leave nothing to pull with.
    Recorded,
    /// Kept, no longer recorded: left behind on purpose (`deletionPolicy: Orphan`).
    Unrecorded,
}

/// Plans the ServiceAccount's list.
///
/// - `current`: the list as it is; `recorded`: what regcred noted it added;
/// - `wanted`: Secret name → owner key of every entry that should be there now;
/// - `keep(name, owner)`: what becomes of a recorded entry that is not wanted.
///
/// An entry a person added keeps its place and is never recorded, so regcred never
/// removes it, even when it has the same name as one regcred wants.
pub(crate) fn plan(
    current: &[LocalObjectReference],
    recorded: &BTreeMap<String, String>,
    wanted: &BTreeMap<String, String>,
    keep: impl Fn(&str, &str) -> Keep,
) -> Plan {
    let mut list = current.to_vec();
    let mut record = BTreeMap::new();
    for (name, owner) in recorded {
        if wanted.contains_key(name) {
            record.insert(name.clone(), wanted[name].clone());
            continue;
        }
        match keep(name, owner) {
            Keep::Recorded => {
                record.insert(name.clone(), owner.clone());
            }
            Keep::Unrecorded => {}
            Keep::No => {
                // Remove the entry regcred appended (the last one of that name).
                if let Some(pos) = list.iter().rposition(|e| &e.name == name) {
                    list.remove(pos);
                }
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
            |_, _| Keep::No,
        );
        assert_eq!(p.image_pull_secrets, refs(&["theirs", "regcred"]));
        assert_eq!(p.recorded, map(&[("regcred", OWNER)]));
    }

    #[test]
    fn steady_state_plans_no_change() {
        let current = refs(&["theirs", "regcred"]);
        let recorded = map(&[("regcred", OWNER)]);
        let p = plan(&current, &recorded, &recorded, |_, _| Keep::No);
        assert_eq!(p.image_pull_secrets, current);
        assert_eq!(p.recorded, recorded);
    }

    #[test]
    fn a_persons_same_named_entry_is_neither_recorded_nor_removed() {
        let p = plan(
            &refs(&["regcred"]),
            &map(&[]),
            &map(&[("regcred", OWNER)]),
            |_, _| Keep::No,
        );
        assert_eq!(p.image_pull_secrets, refs(&["regcred"]));
        assert!(p.recorded.is_empty());
        let later = plan(&p.image_pull_secrets, &p.recorded, &map(&[]), |_, _| {
            Keep::No
        });
        assert_eq!(later.image_pull_secrets, refs(&["regcred"]));
    }

    #[test]
    fn removes_only_what_it_recorded() {
        let p = plan(
            &refs(&["a", "regcred", "b"]),
            &map(&[("regcred", OWNER)]),
            &map(&[]),
            |_, _| Keep::No,
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
            |name, owner| {
                if name == "regcred" && owner == OWNER {
                    Keep::Unrecorded
                } else {
                    Keep::No
                }
            },
        );
        assert_eq!(p.image_pull_secrets, refs(&["regcred"]));
        assert!(p.recorded.is_empty());
    }

    #[test]
    fn a_renamed_secret_s_entry_stays_until_the_new_one_is_added() {
        let waiting = plan(
            &refs(&["theirs", "old"]),
            &map(&[("old", OWNER)]),
            &map(&[]),
            |_, _| Keep::Recorded,
        );
        assert_eq!(waiting.image_pull_secrets, refs(&["theirs", "old"]));
        assert_eq!(waiting.recorded, map(&[("old", OWNER)]));
        let replaced = plan(
            &waiting.image_pull_secrets,
            &waiting.recorded,
            &map(&[("new", OWNER)]),
            |_, _| Keep::No,
        );
        assert_eq!(
            replaced.image_pull_secrets,
            refs(&["theirs", "new"]),
            "added and removed in one write"
        );
        assert_eq!(replaced.recorded, map(&[("new", OWNER)]));
    }

    #[test]
    fn ownership_moves_to_the_current_winner() {
        let other = "ClusterRegistryCredential/global";
        let p = plan(
            &refs(&["regcred"]),
            &map(&[("regcred", OWNER)]),
            &map(&[("regcred", other)]),
            |_, _| Keep::No,
        );
        assert_eq!(p.image_pull_secrets, refs(&["regcred"]));
        assert_eq!(p.recorded, map(&[("regcred", other)]));
    }
}
