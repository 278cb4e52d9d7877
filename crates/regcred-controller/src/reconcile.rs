//! Reconciles one credential (either kind): read its sources once, write its Secret into
//! every target namespace with bounded concurrency, remove Secrets it no longer wants,
//! report.

use std::collections::BTreeMap;
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

use crate::cached_secret::PullSecret;
use crate::context::{Context, ObjectKey, RetryKey};
use crate::credential::{Credential, Kind};
use crate::error::Error;
use crate::metrics::ControllerName;
use crate::minting;
use crate::named_secrets::Seen;
use crate::namespace_writes;
use crate::refresh::{self, Decision};
use crate::secrets::{self, Outcome};
use crate::source_error::SourceError;
use crate::status::{self, Published, Report};
use crate::tokens::{Failure, Tokens};
use crate::{schedule, service_accounts, sources, targets};
use regcred_providers::RegistryAuth;

/// A safety net only: every change that matters arrives through a watch.
const RESYNC: Duration = Duration::from_secs(3600);

#[instrument(skip_all, fields(kind = C::kind(&()).as_ref(), namespace = credential.namespace(), name = %credential.name_any()))]
pub(crate) async fn reconcile<C: Credential>(
    credential: Arc<C>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.stores.wait_ready().await;
    if !ctx.is_leader() {
        // A standby replica keeps its caches warm and writes nothing.
        return Ok(Action::await_change());
    }
    let controller = match C::KIND {
        Kind::Namespaced => ControllerName::RegistryCredential,
        Kind::Cluster => ControllerName::ClusterRegistryCredential,
    };
    let metrics = ctx.metrics.clone();
    let result = metrics
        .reconcile(controller, sync(credential.clone(), ctx.clone()))
        .await;
    // Deleted while this ran: what it stored (a token, a failure) must not outlive it.
    if !ctx.stores.holds_credential(&*credential) {
        ctx.forget_credential(&*credential);
    }
    result
}

/// Reconciles one credential (the leader, caches listed).
async fn sync<C: Credential>(credential: Arc<C>, ctx: Arc<Context>) -> Result<Action, Error> {
    if credential.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let id = credential.id();
    let secret_name = credential.secret_name();
    let refresh = credential.annotations().get(REFRESH_ANNOTATION).cloned();
    let uid = credential.meta().uid.clone().unwrap_or_default();
    // A request not yet acknowledged in status, nor acted on by this process: the status
    // write that acknowledges it may be held back or not yet in the cache, and the
    // reconciles regcred's own writes trigger meanwhile must not mint again.
    let force = refresh.as_deref().is_some_and(|request| {
        Some(request)
            != credential
                .status()
                .and_then(|s| s.last_refresh_request.as_deref())
            && !ctx.tokens.refresh_handled(&uid, request)
    });
    let namespaces = ctx.stores.target_namespaces(&*credential);
    // The first transient failure of the Secret writes: retried once status is out.
    let mut transient: Option<Error> = None;
    let mut report = Report {
        secret_name: secret_name.clone(),
        registries: registries_summary(credential.spec()),
        namespaces: namespaces.len() as i32,
        refresh_request: refresh,
        ..Default::default()
    };
    let now = Timestamp::now();
    // Before the sources are read: content from older sources never passes for newer.
    let inputs = namespace_writes::inputs(&ctx.stores, &*credential);
    let gathered = gather(&ctx, &*credential, force, now).await?;
    if force && let Some(request) = &report.refresh_request {
        ctx.tokens.mark_refresh_handled(&uid, request);
    }
    let gathered_interim = gathered.interim.clone();
    let mut requeue = RESYNC;
    match gathered.entries {
        Err(problem) => {
            warn!(
                reason = problem.reason(),
                "credentials unavailable: {problem}"
            );
            report.secrets_ready = count_current(&ctx, &*credential, &namespaces);
            let mut message = problem.to_string();
            let mut reason = problem.reason();
            if let Some(current) = &gathered.current {
                if current.expires_at <= now {
                    reason = reasons::EXPIRED;
                    message = format!(
                        "the token in the Secrets EXPIRED at {}; minting a new one failed: {message}",
                        current.expires_at
                    );
                } else {
                    message = format!(
                        "{message}; the token in the Secrets stays valid until {}",
                        current.expires_at
                    );
                }
                report.expires_at = Some(current.expires_at);
            }
            report.blocked = Some((reason, message));
            ctx.prepared.forget(&uid);
            if let Some(failure) = &gathered.failure {
                // Retry after the backoff; status shows when and how often it failed.
                report.refresh_failures = failure.failures;
                report.next_refresh = Some(failure.retry_at);
                requeue = failure
                    .retry_at
                    .duration_since(now)
                    .try_into()
                    .unwrap_or(Duration::from_secs(1));
            }
            // Come back when the token expires, if before the retry: status must turn to
            // Expired then, not after a backoff of up to five minutes.
            if let Some(current) = gathered.current.as_ref().filter(|c| c.expires_at > now) {
                let until_expiry: Duration = current
                    .expires_at
                    .duration_since(now)
                    .try_into()
                    .unwrap_or_default();
                requeue = requeue.min(until_expiry + Duration::from_millis(100));
            }
            // The token in place is still good: a new namespace or a deleted Secret gets
            // it (unchanged Secrets cost nothing), while status reports the failure.
            if let (Some(entries), Some(current)) = (&gathered.last_good, &gathered.current) {
                report.secrets_ready = 0;
                let config = regcred_providers::dockerconfig::encode(entries);
                let annotations = token_annotations(current);
                ctx.prepared.put(
                    &*credential,
                    inputs,
                    &config,
                    &annotations,
                    Some(current.expires_at),
                );
                transient = write_all(
                    &ctx,
                    &*credential,
                    &namespaces,
                    &Payload {
                        config: &config,
                        annotations: &annotations,
                        force: false,
                    },
                    &mut report,
                )
                .await;
            }
        }
        Ok(entries) => {
            let mut annotations = BTreeMap::new();
            if let Some(tokens) = &gathered.tokens {
                annotations = token_annotations(tokens);
                let renew_before = credential
                    .spec()
                    .renew_before
                    .as_deref()
                    .and_then(schedule::parse_duration);
                let uid = credential.meta().uid.clone().unwrap_or_default();
                let plan =
                    schedule::next_refresh(tokens.issued_at, tokens.expires_at, renew_before, &uid);
                report.expires_at = Some(tokens.expires_at);
                report.next_refresh = Some(plan.next);
                report.note = plan.warning;
                if gathered.freshly_minted {
                    report.minted_at = Some(tokens.issued_at);
                }
                requeue = plan
                    .next
                    .duration_since(now)
                    .try_into()
                    .unwrap_or(schedule::MIN_INTERVAL)
                    .min(RESYNC);
            }
            let config = regcred_providers::dockerconfig::encode(&entries);
            let expires_at = gathered.tokens.as_ref().map(|t| t.expires_at);
            ctx.prepared
                .put(&*credential, inputs, &config, &annotations, expires_at);
            transient = write_all(
                &ctx,
                &*credential,
                &namespaces,
                &Payload {
                    config: &config,
                    annotations: &annotations,
                    force,
                },
                &mut report,
            )
            .await;
        }
    }

    // Secrets this credential wrote where it no longer wants them (namespace dropped out,
    // secretName changed). Never while sources are broken: keep the last good state. A
    // renamed Secret goes only once no ServiceAccount lists it for this credential any
    // more (the new entry replaces it first), so a Pod is never admitted pointing at a
    // Secret that is gone.
    if report.blocked.is_none() && transient.is_none() {
        for stale in ctx.stores.secrets_owned_by(&id) {
            let ns = stale.metadata.namespace.as_deref().unwrap_or_default();
            let stale_name = stale.name_any();
            let targeted = namespaces.binary_search_by(|n| n.as_str().cmp(ns)).is_ok();
            let wanted = stale_name == secret_name && targeted;
            // Only for a Secret on its way out: the scan covers every ServiceAccount.
            let still_listed = !wanted
                && targeted
                && service_accounts::lists_entry(&ctx.stores, ns, &stale_name, &id);
            if !wanted && !still_listed {
                info!(
                    namespace = ns,
                    secret = stale.name_any(),
                    "removing a Secret no longer targeted"
                );
                if let Err(e) = secrets::remove(&ctx.client, &stale).await {
                    report.failures.push(TargetFailure {
                        namespace: ns.to_owned(),
                        reason: reasons::API_ERROR.into(),
                        message: format!("removing Secret {stale_name}: {e}"),
                    });
                    transient.get_or_insert(e);
                }
            }
        }
    }

    count_service_accounts(&ctx, &*credential, &namespaces, &secret_name, &mut report);
    // What this process last wrote, while the cache has not caught up with it.
    let written = ctx.status_writes.newer_than_cache(
        &credential.id().to_string(),
        credential.meta().resource_version.as_deref(),
    );
    let previous = gathered_interim
        .as_ref()
        .or(written.as_ref())
        .or(credential.status());
    let next = status::build(previous, credential.meta().generation, &report, now);
    let published = status::publish_over(&ctx.publisher(), &*credential, previous, next).await?;
    // Reported first (status names the namespaces that failed), then retried with backoff.
    if let Some(e) = transient {
        return Err(e);
    }
    ctx.backoff
        .reset(&RetryKey::Reconcile(ObjectKey::of(&*credential)));
    Ok(match published {
        Published::Deferred(wait) => Action::requeue(wait.min(requeue)),
        Published::Unchanged | Published::Written => Action::requeue(requeue),
    })
}

/// What a reconcile has to write, or why it cannot.
struct Gathered {
    /// Every registry entry (static and minted), or the first problem.
    entries: Result<Vec<RegistryAuth>, SourceError>,
    /// The minted tokens in use, fresh or current.
    tokens: Option<Tokens>,
    freshly_minted: bool,
    /// The tokens already in the Secrets when a mint failed.
    current: Option<Tokens>,
    /// When a mint failed but the token in place is still valid: every entry with that
    /// token, so new or damaged Secrets still get it while status reports the failure.
    last_good: Option<Vec<RegistryAuth>>,
    /// The failed mints in a row and when to try again.
    failure: Option<Failure>,
    /// A status written while the mint was pending (the token expired meanwhile).
    interim: Option<regcred_api::CredentialStatus>,
}

/// Mints; if the current token expires before the mint returns, says so in status at
/// that moment (the mint itself is bounded, but an expired token must never be reported
/// as Synced, not even for the seconds a hung endpoint takes to time out).
async fn mint_watching_expiry<C: Credential>(
    ctx: &Context,
    credential: &C,
    inputs: &str,
    current: Option<&Tokens>,
) -> Result<
    (
        Result<Tokens, SourceError>,
        Option<regcred_api::CredentialStatus>,
    ),
    Error,
> {
    let mint = minting::mint(ctx, credential, inputs);
    tokio::pin!(mint);
    let Some(expires_at) = current.map(|t| t.expires_at) else {
        return Ok((mint.await?, None));
    };
    let until_expiry = expires_at
        .duration_since(Timestamp::now())
        .try_into()
        .unwrap_or(Duration::ZERO);
    tokio::select! {
        minted = &mut mint => Ok((minted?, None)),
        () = tokio::time::sleep(until_expiry) => {
            warn!(%expires_at, "the token expired while its refresh is still pending");
            let interim = status::expired_while_refreshing(
                credential.status(),
                credential.meta().generation,
                expires_at,
                Timestamp::now(),
            );
            status::publish(&ctx.publisher(), credential, interim.clone()).await?;
            Ok((mint.await?, Some(interim)))
        }
    }
}

/// Reads static sources and, for ECR registries, reuses the current token until its
/// planned refresh (recovering it from the written Secrets after a restart) or mints.
async fn gather<C: Credential>(
    ctx: &Context,
    credential: &C,
    force: bool,
    now: Timestamp,
) -> Result<Gathered, Error> {
    let mut gathered = Gathered {
        entries: Ok(vec![]),
        tokens: None,
        freshly_minted: false,
        current: None,
        last_good: None,
        failure: None,
        interim: None,
    };
    let mut entries = match sources::resolve(ctx, credential).await? {
        Ok(entries) => entries,
        Err(problem) => {
            gathered.entries = Err(problem);
            return Ok(gathered);
        }
    };
    if credential.has_minted() {
        let uid = credential.meta().uid.clone().unwrap_or_default();
        let inputs = minting::inputs(&ctx.stores, credential);
        let current = ctx
            .tokens
            .get(&uid, &inputs)
            .or_else(|| minting::recover(ctx, credential, &inputs));
        let renew_before = credential
            .spec()
            .renew_before
            .as_deref()
            .and_then(schedule::parse_duration);
        let failure = ctx.tokens.failure(&uid);
        let decision = refresh::decide(&refresh::Facts {
            current: current.as_ref(),
            failure: failure.as_ref(),
            inputs: &inputs,
            force,
            now,
            renew_before,
            seed: &uid,
        });
        let tokens = match decision {
            Decision::Reuse => {
                let tokens = current.expect("reused means there is a current token");
                ctx.tokens.put(&uid, tokens.clone());
                tokens
            }
            Decision::WaitOutBackoff => {
                let failure = failure.expect("backing off means a failure");
                gathered.entries = Err(failure.problem.clone());
                gathered.last_good = last_good(entries, current.as_ref(), now);
                gathered.current = current;
                gathered.failure = Some(failure);
                return Ok(gathered);
            }
            Decision::Mint => {
                info!("minting a new token");
                let minted =
                    mint_watching_expiry(ctx, credential, &inputs, current.as_ref()).await?;
                gathered.interim = minted.1;
                match minted.0 {
                    Ok(tokens) => {
                        ctx.metrics.refreshed(&credential.id());
                        ctx.tokens.put(&uid, tokens.clone());
                        ctx.tokens.clear_failure(&uid);
                        ctx.backoff.reset(&RetryKey::Mint(credential.id()));
                        gathered.freshly_minted = true;
                        tokens
                    }
                    Err(problem) => {
                        ctx.metrics
                            .refresh_failed(&credential.id(), problem.reason());
                        if failure.as_ref().is_some_and(|f| f.inputs != inputs) {
                            // A changed spec or key starts the backoff afresh.
                            ctx.backoff.reset(&RetryKey::Mint(credential.id()));
                        }
                        let wait = ctx.backoff.next(&RetryKey::Mint(credential.id()));
                        let failure = Failure {
                            retry_at: now
                                .checked_add(
                                    jiff::SignedDuration::try_from(wait).unwrap_or_default(),
                                )
                                .unwrap_or(now),
                            failures: refresh::failures_in_a_row(failure.as_ref(), &inputs),
                            problem: problem.clone(),
                            inputs: inputs.clone(),
                        };
                        ctx.tokens.fail(&uid, failure.clone());
                        gathered.failure = Some(failure);
                        gathered.last_good = last_good(entries, current.as_ref(), now);
                        gathered.current = current;
                        gathered.entries = Err(problem);
                        return Ok(gathered);
                    }
                }
            }
        };
        entries.extend(tokens.entries.iter().cloned());
        gathered.tokens = Some(tokens);
    }
    gathered.entries = Ok(entries);
    Ok(gathered)
}

/// The static entries with the token in place, if it is still valid.
fn last_good(
    mut static_entries: Vec<RegistryAuth>,
    current: Option<&Tokens>,
    now: Timestamp,
) -> Option<Vec<RegistryAuth>> {
    let current = current.filter(|c| c.expires_at > now)?;
    static_entries.extend(current.entries.iter().cloned());
    Some(static_entries)
}

/// The annotations a Secret carries for minted tokens: they let a restarted controller
/// resume the schedule (and the content signature covers them).
fn token_annotations(tokens: &Tokens) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            minting::ISSUED_AT_ANNOTATION.to_owned(),
            tokens.issued_at.to_string(),
        ),
        (
            minting::EXPIRES_AT_ANNOTATION.to_owned(),
            tokens.expires_at.to_string(),
        ),
        (minting::INPUTS_ANNOTATION.to_owned(), tokens.inputs.clone()),
    ])
}

/// The registries for `kubectl get`: static servers, and ECR as `<accounts> (ECR <region>)`.
fn registries_summary(spec: &regcred_api::CredentialSpec) -> Vec<String> {
    spec.registries
        .iter()
        .map(|r| match (&r.server, &r.ecr) {
            (Some(server), _) => server.clone(),
            (None, Some(ecr)) if ecr.registry_ids.is_empty() => format!("ECR {}", ecr.region),
            (None, Some(ecr)) => format!("{} (ECR {})", ecr.registry_ids.join(","), ecr.region),
            (None, None) => String::new(),
        })
        .collect()
}

/// Writes the Secret into each namespace this credential wins, a bounded number at once,
/// so one slow namespace does not hold up the rest. Every outcome goes into `report`;
/// the first transient API failure is returned, for a retry once status is published.
async fn write_all<C: Credential>(
    ctx: &Context,
    credential: &C,
    namespaces: &[String],
    payload: &Payload<'_>,
    report: &mut Report,
) -> Option<Error> {
    let secret_name = credential.secret_name();
    let results: Vec<(String, Result<Outcome, WriteError>)> =
        stream::iter(namespaces.iter().cloned())
            .map(|ns| write_one(ctx, credential, payload, ns))
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
    transient
}

/// Writes one namespace's Secret unless another credential wins the name there.
async fn write_one<C: Credential>(
    ctx: &Context,
    credential: &C,
    payload: &Payload<'_>,
    namespace: String,
) -> (String, Result<Outcome, WriteError>) {
    let secret_name = credential.secret_name();
    // The loser of a name need not wait for the winner's claim (checked again after it).
    let id = credential.id();
    if let Some(winner) = ctx
        .stores
        .winner(&namespace, &secret_name)
        .filter(|w| *w != id)
    {
        return (namespace, Err(WriteError::Conflict(winner.to_string())));
    }
    let key = ObjectKey::secret(&namespace, &secret_name);
    // Read the cache only once no one else is writing this Secret (see `namespace_writes`).
    let _claim = ctx.writing.claim(&key).await;
    let written = write_claimed(ctx, credential, payload, &namespace).await;
    (namespace, written)
}

/// [`write_one`] for a caller that holds the Secret's claim in [`Context::writing`].
pub(crate) async fn write_claimed<C: Credential>(
    ctx: &Context,
    credential: &C,
    payload: &Payload<'_>,
    namespace: &str,
) -> Result<Outcome, WriteError> {
    let (id, secret_name) = (credential.id(), credential.secret_name());
    let (id, secret_name, force) = (&id, secret_name.as_str(), payload.force);
    if let Some(winner) = ctx
        .stores
        .winner(namespace, secret_name)
        .filter(|w| w != id)
    {
        return Err(WriteError::Conflict(winner.to_string()));
    }
    let key = ObjectKey::secret(namespace, secret_name);
    let labelled = ctx.stores.labelled_secret(namespace, secret_name);
    let version = labelled
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone());
    let version = version.as_deref();
    if ctx.cache_lag.is_stale(&key, version) {
        // regcred just wrote it; the watch brings the new version and another reconcile.
        return Ok(Outcome::Unchanged);
    }
    let existing = labelled.filter(|s| ctx.stores.signer.is_managed(&**s));
    if existing.is_none() && version.is_some() {
        // Labelled as regcred's but not written by regcred: someone else's, whatever it
        // says. Known from the cache, so no request is needed to find out.
        return Ok(Outcome::Unmanaged);
    }
    if existing.is_none() {
        // Someone else's Secret of that name, unlabelled: known from the watch of that
        // name, or (until it has listed) from a refused create remembered for a while.
        let patience = Duration::from_secs(2);
        match ctx
            .stores
            .named
            .seen_soon(namespace, secret_name, patience)
            .await
        {
            Some(Seen::Foreign) => return Ok(Outcome::Unmanaged),
            // regcred's own, deleted or created a moment ago: the labelled watch's event
            // brings another reconcile. Never a false Conflict meanwhile.
            Some(Seen::InFlight) => return Ok(Outcome::Unchanged),
            Some(Seen::Absent) => {}
            None if !force && ctx.unmanaged.get(&key).is_some() => {
                return Ok(Outcome::Unmanaged);
            }
            None => {}
        }
    }
    let desired = secrets::desired(
        credential,
        namespace,
        payload.config,
        payload.annotations,
        &ctx.stores.signer,
    );
    let written = secrets::ensure(&ctx.client, &desired, existing.as_deref(), force).await;
    match &written {
        Ok(Outcome::Created | Outcome::Updated) => {
            ctx.unmanaged.forget(&key);
            ctx.cache_lag.wrote(&key, version.map(str::to_owned))
        }
        Ok(Outcome::Unmanaged) => ctx.unmanaged.record(key, ()),
        Ok(Outcome::Unchanged) | Err(_) => {}
    }
    written.map_err(WriteError::Api)
}

/// What goes into every target namespace's Secret.
pub(crate) struct Payload<'a> {
    pub(crate) config: &'a [u8],
    pub(crate) annotations: &'a BTreeMap<String, String>,
    /// Write even when the cached Secret matches (a refresh request).
    pub(crate) force: bool,
}

/// Why one namespace was not written.
pub(crate) enum WriteError {
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
                .is_some_and(|s| s.owner() == Some(owner.as_str()))
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
            if sa.image_pull_secrets.iter().any(|r| r.name == secret_name) {
                patched += 1;
            }
        }
    }
    report.service_accounts = targeted;
    report.service_accounts_patched = patched;
}
