//! The namespaces, as cached: name → labels and whether it is being deleted. Every
//! namespace of the cluster is cached, and regcred reads nothing else of them; a kube-rs
//! store would keep a whole `ObjectMeta` (360 bytes, nearly all empty) and a key
//! repeating the name for each.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::Namespace;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use crate::credential::{NAME_LABEL, NamespaceView};

/// Read by every reconcile, written by the namespace watch. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Namespaces {
    inner: Arc<RwLock<Listed>>,
}

/// The namespaces, and the next set while a (re-)list arrives.
#[derive(Default)]
struct Listed {
    current: HashMap<String, Cached>,
    listing: Option<HashMap<String, Cached>>,
}

#[derive(Clone, Debug, PartialEq)]
struct Cached {
    /// Without [`NAME_LABEL`] (see [`NamespaceView::label`]); `None` when that was all.
    labels: Option<BTreeMap<String, String>>,
    deleting: bool,
}

impl Cached {
    fn of(ns: &PartialObjectMeta<Namespace>) -> Option<(String, Self)> {
        let meta = &ns.metadata;
        let mut labels = meta.labels.clone().unwrap_or_default();
        labels.remove(NAME_LABEL);
        let cached = Cached {
            labels: (!labels.is_empty()).then_some(labels),
            deleting: meta.deletion_timestamp.is_some(),
        };
        Some((meta.name.clone()?, cached))
    }
}

impl Namespaces {
    /// Follows the namespace watch: a (re-)list replaces the whole set once complete.
    pub(crate) fn apply(&self, event: &Event<PartialObjectMeta<Namespace>>) {
        let mut listed = self.inner.write().expect("namespace cache lock");
        match event {
            Event::Init => listed.listing = Some(HashMap::new()),
            Event::InitApply(ns) => {
                if let Some((name, cached)) = Cached::of(ns) {
                    listed.listing.get_or_insert_default().insert(name, cached);
                }
            }
            Event::InitDone => {
                let mut current = listed.listing.take().unwrap_or_default();
                current.shrink_to_fit();
                listed.current = current;
            }
            Event::Apply(ns) => {
                if let Some((name, cached)) = Cached::of(ns) {
                    listed.current.insert(name, cached);
                }
            }
            Event::Delete(ns) => {
                if let Some(name) = &ns.metadata.name {
                    listed.current.remove(name);
                }
            }
        }
    }

    /// Whether `name` exists and is not being deleted.
    pub(crate) fn is_live(&self, name: &str) -> bool {
        self.view(name, |_| ()).is_some()
    }

    /// `f` of the live namespace `name`; `None` if there is none.
    pub(crate) fn view<R>(&self, name: &str, f: impl FnOnce(&NamespaceView<'_>) -> R) -> Option<R> {
        let listed = self.inner.read().expect("namespace cache lock");
        let (name, cached) = listed.current.get_key_value(name)?;
        (!cached.deleting).then(|| f(&view(name, cached)))
    }

    /// The live namespaces `wanted` accepts.
    pub(crate) fn live_names(&self, wanted: impl Fn(&NamespaceView<'_>) -> bool) -> Vec<String> {
        let listed = self.inner.read().expect("namespace cache lock");
        listed
            .current
            .iter()
            .filter(|(name, cached)| !cached.deleting && wanted(&view(name, cached)))
            .map(|(name, _)| name.clone())
            .collect()
    }
}

fn view<'a>(name: &'a str, cached: &'a Cached) -> NamespaceView<'a> {
    NamespaceView {
        name,
        labels: cached.labels.as_ref(),
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube::core::{ObjectMeta, PartialObjectMetaExt};

    use super::*;

    fn namespace(name: &str, team: Option<&str>, deleting: bool) -> PartialObjectMeta<Namespace> {
        let mut labels = BTreeMap::from([(NAME_LABEL.to_owned(), name.to_owned())]);
        if let Some(team) = team {
            labels.insert("team".into(), team.into());
        }
        ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels),
            deletion_timestamp: deleting.then_some(Time(Timestamp::UNIX_EPOCH)),
            ..Default::default()
        }
        .into_response_partial()
    }

    fn sorted(mut names: Vec<String>) -> Vec<String> {
        names.sort();
        names
    }

    #[test]
    fn follows_events_and_a_relist_replaces_the_set_whole() {
        let cache = Namespaces::default();
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(namespace("a", Some("x"), false)));
        cache.apply(&Event::InitApply(namespace("b", None, false)));
        assert!(!cache.is_live("a"), "nothing until the list is complete");
        cache.apply(&Event::InitDone);
        assert!(cache.is_live("a") && cache.is_live("b"));
        assert_eq!(
            cache.view("a", |ns| (
                ns.label("team").map(str::to_owned),
                ns.label(NAME_LABEL).map(str::to_owned)
            )),
            Some((Some("x".to_owned()), Some("a".to_owned())))
        );
        assert_eq!(cache.view("b", |ns| ns.labels.is_none()), Some(true));

        cache.apply(&Event::Apply(namespace("c", Some("y"), false)));
        cache.apply(&Event::Apply(namespace("b", None, true)));
        assert!(!cache.is_live("b"), "being deleted");
        cache.apply(&Event::Delete(namespace("a", Some("x"), false)));
        assert_eq!(sorted(cache.live_names(|_| true)), ["c"]);
        assert_eq!(
            cache.live_names(|ns| ns.label("team") == Some("x")),
            Vec::<String>::new()
        );

        // A re-list: what it does not hold (deleted meanwhile) is gone.
        cache.apply(&Event::Init);
        cache.apply(&Event::InitApply(namespace("d", None, false)));
        assert!(
            cache.is_live("c"),
            "the old set stands while the list arrives"
        );
        cache.apply(&Event::InitDone);
        assert_eq!(sorted(cache.live_names(|_| true)), ["d"]);
    }
}
