//! Reconciles one credential (either kind): read its sources once, write its Secret into
//! every target namespace with bounded concurrency, remove Secrets it no longer wants,
//! report.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, stream};
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use regcred_api::TargetFailure;
use regcred_api::condition_reasons as reasons;
use regcred_api::names::REFRESH_ANNOTATION;
use tracing::{info, instrument, warn};

use crate::context::{Context, owner_of};
use crate::credential::{Credential, CredentialId};
use crate::error::Error;
use crate::secrets::{self, Outcome};
use crate::status::{self, Report};
use crate::{dockerconfig, sources, targets};

/// A safety net only: every change that matters arrives through a watch.
const RESYNC: Duration = Duration::from_secs(3600);

#[instrument(skip_all, fields(kind = C::kind(&()).as_ref(), namespace = credential.namespace(), name = %credential.name_any()))]
pub async fn reconcile<C: Credential>(
    credential: Arc<C>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.stores.wait_ready().await;
    if credential.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let id = credential.id();
    let secret_name = credential.secret_name();
    let refresh = credential.annotations().get(REFRESH_ANNOTATION).cloned();
    let force = refresh.is_some()
        && refresh.as_ref()
            != credential
                .status()
                .and_then(|s| s.last_refresh_request.as_ref());
    let namespaces = ctx.stores.target_namespaces(&*credential);
    let mut report = Report {
        secret_name: secret_name.clone(),
        registries: credential
            .spec()
            .registries
            .iter()
            .filter_map(|r| r.server.clone())
            .collect(),
        namespaces: namespaces.len() as i32,
        refresh_request: refresh,
        ..Default::default()
    };

    match sources::resolve(&ctx, &*credential).await? {
        Err(problem) => {
            warn!(reason = problem.reason(), "sources unusable: {problem}");
            report.secrets_ready = count_current(&ctx, &*credential, &namespaces);
            report.blocked = Some((problem.reason(), problem.to_string()));
        }
        Ok(entries) => {
            let config = dockerconfig::encode(&entries);
            write_all(&ctx, &*credential, &namespaces, &config, force, &mut report).await?;
        }
    }

    // Secrets this credential wrote where it no longer wants them (namespace dropped out,
    // secretName changed). Never while sources are broken: keep the last good state.
    if report.blocked.is_none() {
        for stale in ctx.stores.secrets_owned_by(&id) {
            let ns = stale.metadata.namespace.as_deref().unwrap_or_default();
            let wanted = stale.metadata.name.as_deref() == Some(secret_name.as_str())
                && namespaces.binary_search_by(|n| n.as_str().cmp(ns)).is_ok();
            if !wanted {
                info!(
                    namespace = ns,
                    secret = stale.name_any(),
                    "removing a Secret no longer targeted"
                );
                secrets::remove(&ctx, &stale).await?;
            }
        }
    }

    count_service_accounts(&ctx, &*credential, &namespaces, &secret_name, &mut report);
    let next = status::build(
        credential.status(),
        credential.meta().generation,
        &report,
        Timestamp::now(),
    );
    status::publish(&ctx, &*credential, next).await?;
    ctx.backoff.reset(&id.to_string());
    Ok(Action::requeue(RESYNC))
}

/// Writes the Secret into each namespace this credential wins, a bounded number at once,
/// so one slow namespace does not hold up the rest.
async fn write_all<C: Credential>(
    ctx: &Context,
    credential: &C,
    namespaces: &[String],
    config: &[u8],
    force: bool,
    report: &mut Report,
) -> Result<(), Error> {
    let id = credential.id();
    let secret_name = credential.secret_name();
    let results: Vec<(String, Result<Outcome, WriteError>)> =
        stream::iter(namespaces.iter().cloned())
            .map(|ns| write_one(ctx, credential, &id, &secret_name, config, force, ns))
            .buffer_unordered(ctx.namespace_concurrency.max(1))
            .collect()
            .await;

    let mut transient = None;
    for (namespace, result) in results {
        match result {
            Ok(Outcome::Unchanged) => report.secrets_ready += 1,
            Ok(Outcome::Created | Outcome::Updated) => {
                report.secrets_ready += 1;
                report.wrote = true;
            }
            Ok(Outcome::Unmanaged) => report.failures.push(TargetFailure {
                namespace: namespace.clone(),
                reason: reasons::CONFLICT.into(),
                message: format!(
                    "Secret {namespace}/{secret_name} exists and was not created by regcred; it is left untouched (delete it or choose another secretName)"
                ),
            }),
            Err(WriteError::Conflict(winner)) => report.failures.push(TargetFailure {
                namespace: namespace.clone(),
                reason: reasons::CONFLICT.into(),
                message: format!("Secret {secret_name} is claimed by the older {winner}"),
            }),
            Err(WriteError::Api(e)) => {
                report.failures.push(TargetFailure {
                    namespace: namespace.clone(),
                    reason: reasons::API_ERROR.into(),
                    message: e.to_string(),
                });
                transient.get_or_insert(e);
            }
        }
    }
    // Report first, then retry with backoff.
    if let Some(e) = transient {
        count_service_accounts(ctx, credential, namespaces, &secret_name, report);
        let next = status::build(
            credential.status(),
            credential.meta().generation,
            report,
            Timestamp::now(),
        );
        status::publish(ctx, credential, next).await?;
        return Err(e);
    }
    Ok(())
}

/// Writes one namespace's Secret unless another credential wins the name there.
async fn write_one<C: Credential>(
    ctx: &Context,
    credential: &C,
    id: &CredentialId,
    secret_name: &str,
    config: &[u8],
    force: bool,
    namespace: String,
) -> (String, Result<Outcome, WriteError>) {
    if let Some(winner) = ctx
        .stores
        .winner(&namespace, secret_name)
        .filter(|w| w != id)
    {
        return (namespace, Err(WriteError::Conflict(winner.to_string())));
    }
    let desired = secrets::desired(credential, &namespace, config);
    let existing = ctx.stores.managed_secret(&namespace, secret_name);
    let written = secrets::ensure(ctx, &desired, existing.as_deref(), force).await;
    (namespace, written.map_err(WriteError::Api))
}

/// Why one namespace was not written.
enum WriteError {
    /// An older credential owns the Secret name there.
    Conflict(String),
    Api(Error),
}

/// Namespaces whose cached Secret belongs to this credential (used when sources are broken).
fn count_current<C: Credential>(ctx: &Context, credential: &C, namespaces: &[String]) -> i32 {
    let owner = credential.id().to_string();
    let secret_name = credential.secret_name();
    namespaces
        .iter()
        .filter(|ns| {
            ctx.stores
                .managed_secret(ns, &secret_name)
                .is_some_and(|s| owner_of(&s).as_deref() == Some(owner.as_str()))
        })
        .count() as i32
}

fn count_service_accounts<C: Credential>(
    ctx: &Context,
    credential: &C,
    namespaces: &[String],
    secret_name: &str,
    report: &mut Report,
) {
    let by_ns = ctx.stores.service_accounts_by_namespace();
    let (mut targeted, mut patched) = (0, 0);
    for sa in namespaces.iter().filter_map(|ns| by_ns.get(ns)).flatten() {
        if targets::covers_service_account(
            credential.spec(),
            &sa.name_any(),
            sa.metadata.labels.as_ref(),
        ) {
            targeted += 1;
            if sa
                .image_pull_secrets
                .iter()
                .flatten()
                .any(|r| r.name == secret_name)
            {
                patched += 1;
            }
        }
    }
    report.service_accounts = targeted;
    report.service_accounts_patched = patched;
}
