//! Reconciles one ServiceAccount's `imagePullSecrets`: every Secret that a covering
//! credential has in place is listed; entries regcred added and no longer wants are
//! removed; everything else is kept. The list is atomic, so updates carry the
//! resourceVersion and are recomputed on conflict: a concurrent writer loses nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use regcred_api::names::{FIELD_MANAGER, SA_ENTRIES_ANNOTATION};
use tracing::{debug, info, instrument, warn};

use crate::context::{Context, Stores, owner_of};
use crate::credential::{Credential, CredentialId};
use crate::error::Error;
use crate::pull_secrets::{self, Plan};
use crate::targets;

/// Attempts before giving up to the backoff when other writers keep winning the race.
const CONFLICT_RETRIES: usize = 5;

#[instrument(skip_all, fields(namespace = sa.namespace(), name = %sa.name_any()))]
pub async fn reconcile(sa: Arc<ServiceAccount>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.stores.wait_ready().await;
    let namespace = sa.namespace().unwrap_or_default();
    if ctx.stores.live_namespace(&namespace).is_none() {
        return Ok(Action::await_change());
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &namespace);
    let key = format!("{namespace}/{}", sa.name_any());
    if ctx
        .cache_lag
        .is_stale(&key, sa.metadata.resource_version.as_deref())
    {
        // regcred just patched it; the watch brings the new version and another reconcile.
        return Ok(Action::await_change());
    }
    let mut current = sa;
    for _ in 0..CONFLICT_RETRIES {
        let plan = plan_for(&ctx.stores, &current);
        if !changes(&current, &plan) {
            return Ok(Action::await_change());
        }
        match api
            .patch(
                &current.name_any(),
                &PatchParams {
                    field_manager: Some(FIELD_MANAGER.into()),
                    ..Default::default()
                },
                &Patch::Merge(patch(&current, &plan)),
            )
            .await
        {
            Ok(_) => {
                ctx.cache_lag
                    .wrote(&key, current.metadata.resource_version.clone());
                info!(recorded = ?plan.recorded, list = ?plan.image_pull_secrets.iter().map(|r| &r.name).collect::<Vec<_>>(), "imagePullSecrets updated");
                return Ok(Action::await_change());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!("ServiceAccount changed meanwhile; recomputing from a fresh read");
                match api.get_opt(&current.name_any()).await? {
                    Some(fresh) => current = Arc::new(fresh),
                    None => return Ok(Action::await_change()),
                }
            }
            Err(kube::Error::Api(status)) if status.code == 404 => {
                return Ok(Action::await_change());
            }
            Err(e) => return Err(e.into()),
        }
    }
    warn!("ServiceAccount kept changing; retrying later");
    Err(Error::Contended(format!(
        "ServiceAccount {namespace}/{}",
        current.name_any()
    )))
}

/// The plan for one ServiceAccount, from the caches alone.
pub fn plan_for(stores: &Stores, sa: &ServiceAccount) -> Plan {
    let namespace = sa.namespace().unwrap_or_default();
    let name = sa.name_any();
    let labels = sa.metadata.labels.as_ref();
    let recorded = recorded(sa);
    let mut wanted = BTreeMap::new();
    let mut consider = |id: CredentialId, spec: &regcred_api::CredentialSpec, secret: String| {
        if !targets::covers_service_account(spec, &name, labels) {
            return;
        }
        let key = id.to_string();
        // Add an entry only once the winner's own Secret is in place (never point at a
        // Secret regcred does not manage); keep one already added while the credential
        // still wins, so a Secret deleted by hand and restored causes no churn here.
        let in_place = stores
            .managed_secret(&namespace, &secret)
            .is_some_and(|s| owner_of(&s).as_deref() == Some(key.as_str()));
        let kept = recorded.get(&secret) == Some(&key);
        if (in_place || kept) && stores.winner(&namespace, &secret).as_ref() == Some(&id) {
            wanted.insert(secret, key);
        }
    };
    for c in stores.credentials.state() {
        if c.metadata.namespace.as_deref() == Some(namespace.as_str())
            && stores.covers(&*c, &namespace)
        {
            consider(c.id(), c.spec(), c.secret_name());
        }
    }
    for c in stores.cluster_credentials.state() {
        if stores.covers(&*c, &namespace) {
            consider(c.id(), c.spec(), c.secret_name());
        }
    }
    let current = sa.image_pull_secrets.clone().unwrap_or_default();
    pull_secrets::plan(&current, &recorded, &wanted, |secret, owner| {
        orphaned(stores, &namespace, secret, owner)
    })
}

/// A recorded entry whose credential is gone is left in place only when its Secret was
/// orphaned on purpose: it still exists and carries no ownerReference.
fn orphaned(stores: &Stores, namespace: &str, secret: &str, owner: &str) -> bool {
    let owner_gone = CredentialId::parse(owner).is_none_or(|id| !stores.credential_exists(&id));
    owner_gone
        && stores.managed_secret(namespace, secret).is_some_and(|s| {
            s.metadata
                .owner_references
                .as_ref()
                .is_none_or(Vec::is_empty)
        })
}

/// What regcred recorded on the ServiceAccount; an unreadable record counts as empty.
fn recorded(sa: &ServiceAccount) -> BTreeMap<String, String> {
    let Some(raw) = sa.annotations().get(SA_ENTRIES_ANNOTATION) else {
        return BTreeMap::new();
    };
    serde_json::from_str(raw).unwrap_or_else(|e| {
        warn!(error = %e, "ignoring an unreadable {SA_ENTRIES_ANNOTATION} annotation");
        BTreeMap::new()
    })
}

fn changes(sa: &ServiceAccount, plan: &Plan) -> bool {
    sa.image_pull_secrets.clone().unwrap_or_default() != plan.image_pull_secrets
        || recorded(sa) != plan.recorded
}

/// A merge patch replacing the (atomic) list, guarded by the resourceVersion it was
/// computed from.
fn patch(sa: &ServiceAccount, plan: &Plan) -> serde_json::Value {
    let record = if plan.recorded.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_string(&plan.recorded)
            .expect("a map of strings serializes")
            .into()
    };
    let list = if plan.image_pull_secrets.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::to_value(&plan.image_pull_secrets).expect("references serialize")
    };
    serde_json::json!({
        "metadata": {
            "resourceVersion": sa.metadata.resource_version,
            "annotations": { SA_ENTRIES_ANNOTATION: record },
        },
        "imagePullSecrets": list,
    })
}
