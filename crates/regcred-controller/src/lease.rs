//! Leader election on a `coordination.k8s.io` Lease, so that several replicas never fight:
//! every replica keeps its caches warm (and stays ready), only the leader reconciles and
//! writes. A leader that cannot renew within the renew deadline stops: the process exits
//! and is restarted, as linkerd's policy controller does. Leases do not fence, so writes
//! stay resourceVersion-preconditioned: a deposed leader's late write cannot undo the new
//! leader's.
//!
//! Expiry is judged by this replica's own clock from when it last saw the record change
//! (as client-go does), never by comparing another machine's timestamps with its own.

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::Error;

/// How the election runs.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    /// This replica (the Pod name).
    pub identity: String,
    /// How long a lease is valid without renewal: another replica takes over after that.
    pub duration: Duration,
    /// A leader that has not renewed for this long stops leading (shorter than duration).
    pub renew_deadline: Duration,
    /// How often the leader renews and the others try.
    pub retry_period: Duration,
}

/// What this replica last saw of someone else's lease, and when.
struct Observed {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// Runs the election until leadership is lost (an error) or `shutdown` fires (then the
/// lease is released, so the next replica takes over at once). `leading` says whether
/// this replica may write.
pub(crate) async fn elect(
    client: Client,
    settings: LeaseSettings,
    leading: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
    let mut observed: Option<Observed> = None;
    let mut last_renewal: Option<Instant> = None;
    loop {
        match try_acquire_or_renew(&api, &settings, &mut observed).await {
            Ok(true) => {
                if last_renewal.is_none() {
                    info!(lease = %settings.name, identity = %settings.identity, "became the leader");
                }
                last_renewal = Some(Instant::now());
                announce(&leading, true);
            }
            Ok(false) => {
                if last_renewal.is_some() {
                    announce(&leading, false);
                    return Err(Error::LeaseLost(format!(
                        "another replica holds lease {}",
                        settings.name
                    )));
                }
            }
            Err(e) => {
                warn!(error = %e, "could not read or renew the leader lease");
                if last_renewal.is_some_and(|at| at.elapsed() >= settings.renew_deadline) {
                    announce(&leading, false);
                    return Err(Error::LeaseLost(format!(
                        "lease {} not renewed within {:?}",
                        settings.name, settings.renew_deadline
                    )));
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(settings.retry_period) => {}
            _ = shutdown.changed() => {
                if last_renewal.is_some() {
                    announce(&leading, false);
                    release(&api, &settings).await;
                }
                return Ok(());
            }
        }
    }
}

/// Tells the controller about a change of leadership only: a renewal every `retry_period`
/// must not wake it (every receiver would recheck the whole cluster).
fn announce(leading: &watch::Sender<bool>, now_leading: bool) {
    leading.send_if_modified(|was| std::mem::replace(was, now_leading) != now_leading);
}

/// One round: `Ok(true)` if this replica holds the lease now.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    settings: &LeaseSettings,
    observed: &mut Option<Observed>,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Timestamp::now());
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(settings.name.clone()),
                namespace: Some(settings.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec_for(settings, now.clone(), now, 0)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(settings.identity.as_str());
    if !mine && holder.is_some() {
        // Someone else's: take it over only once it has not changed for a whole duration.
        let changed = observed
            .as_ref()
            .is_none_or(|o| o.holder != holder || o.renew_time != spec.renew_time);
        if changed {
            *observed = Some(Observed {
                holder,
                renew_time: spec.renew_time.clone(),
                at: Instant::now(),
            });
            return Ok(false);
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(settings.duration, Duration::from_secs);
        if observed.as_ref().is_some_and(|o| o.at.elapsed() < duration) {
            return Ok(false);
        }
        debug!(lease = %settings.name, "the leader's lease expired; taking over");
    }
    let (acquired, transitions) = if mine {
        (
            spec.acquire_time.clone().unwrap_or_else(|| now.clone()),
            spec.lease_transitions.unwrap_or(0),
        )
    } else {
        (now.clone(), spec.lease_transitions.unwrap_or(0) + 1)
    };
    lease.spec = Some(spec_for(settings, acquired, now, transitions));
    // The resourceVersion read above makes a concurrent taker's write and ours exclusive.
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn spec_for(
    settings: &LeaseSettings,
    acquired: MicroTime,
    renewed: MicroTime,
    transitions: i32,
) -> LeaseSpec {
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: i32::try_from(settings.duration.as_secs()).ok(),
        acquire_time: Some(acquired),
        renew_time: Some(renewed),
        lease_transitions: Some(transitions),
        ..Default::default()
    }
}

/// Gives the lease up on shutdown, so the next replica need not wait for it to expire.
async fn release(api: &Api<Lease>, settings: &LeaseSettings) {
    let Ok(Some(mut lease)) = api.get_opt(&settings.name).await else {
        return;
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(settings.identity.as_str()) {
        return;
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    match api
        .replace(&settings.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => info!(lease = %settings.name, "released the leader lease"),
        Err(e) => warn!(error = %e, "could not release the leader lease"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renewal_does_not_wake_the_controller_and_a_change_does() {
        let (leading, mut seen) = watch::channel(false);
        announce(&leading, true);
        assert!(seen.has_changed().unwrap(), "becoming the leader is news");
        seen.borrow_and_update();
        announce(&leading, true);
        assert!(!seen.has_changed().unwrap(), "a renewal is not");
        announce(&leading, false);
        assert!(seen.has_changed().unwrap(), "losing the lease is");
        assert!(!*seen.borrow_and_update());
    }
}
