//! Labels, annotations and field-manager names shared by the controller, the manifests and
//! the tests. Changing one is an API change.

/// API group of regcred's resources.
pub const GROUP: &str = "regcred.io";

/// A Secret may be read as a credential source only when it carries this label set to
/// `"true"`: a credential must not become a way to copy an arbitrary Secret into a
/// readable pull Secret. It also lets the controller watch sources by label alone.
pub const SOURCE_LABEL: &str = "regcred.io/source";

/// Marks a Secret as written by regcred; the controller caches only Secrets with it.
pub const MANAGED_LABEL: &str = "regcred.io/managed";

/// On a managed Secret: the credential that owns it (see [`crate::names::owner_key`]).
pub const OWNER_ANNOTATION: &str = "regcred.io/owner";

/// On a ServiceAccount: JSON object mapping each `imagePullSecrets` entry regcred added to
/// the credential that wanted it, so removal never takes an entry a person added.
pub const SA_ENTRIES_ANNOTATION: &str = "regcred.io/image-pull-secrets";

/// On a credential: any new value asks for an immediate re-read of the sources and rewrite.
pub const REFRESH_ANNOTATION: &str = "regcred.io/refresh";

/// `app.kubernetes.io/managed-by` value on everything regcred writes.
pub const MANAGED_BY: &str = "regcred";

/// Field manager for server-side apply and the name Events are reported under.
pub const FIELD_MANAGER: &str = "regcred";

/// The identity string recorded in [`OWNER_ANNOTATION`] and [`SA_ENTRIES_ANNOTATION`]:
/// `RegistryCredential/<namespace>/<name>` or `ClusterRegistryCredential/<name>`.
pub fn owner_key(kind: &str, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    }
}
