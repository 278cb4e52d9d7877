//! What the cached forms of core kinds (`cached_account`, `cached_secret`) share: each is
//! a `kube::Resource` of its kind, so a watch reads that kind's API into it.

/// Implements `kube::Resource` for `$cached`, a cached form of the namespaced core/v1 kind
/// `$kind` (API plural `$plural`) that keeps its metadata in a field `metadata`.
macro_rules! core_v1_resource {
    ($cached:ty, $kind:literal, $plural:literal) => {
        impl kube::Resource for $cached {
            type DynamicType = ();
            type Scope = kube::core::NamespaceResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }

            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                "".into()
            }

            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                "v1".into()
            }

            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }

            fn meta(&self) -> &kube::core::ObjectMeta {
                &self.metadata
            }

            fn meta_mut(&mut self) -> &mut kube::core::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

pub(crate) use core_v1_resource;
