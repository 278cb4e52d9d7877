//! Two replicas never fight: both run, exactly one writes (told apart by the User-Agent
//! each sends, from the API server's audit log), and when the leader is killed with
//! SIGKILL in the middle of a fan-out, the other takes over and converges with no lost or
//! duplicated `imagePullSecrets` entry.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::{Api, ResourceExt};
use regcred_api::ClusterRegistryCredential;
use regcred_e2e::{
    apply, cluster_credential, controller_kubeconfig, entries, is_controller_write, namespaces,
    source_namespace, wait_synced,
};
use regcred_testkit::{ControllerProcess, TestBed, wait_for};

const NAMESPACES: usize = 300;

/// The replica a User-Agent names: `regcred/VERSION (IDENTITY)`.
fn replica(user_agent: &str) -> Option<String> {
    let inner = user_agent.strip_prefix("regcred/")?;
    let start = inner.find('(')? + 1;
    let end = inner.rfind(')')?;
    Some(inner[start..end].to_owned())
}

#[tokio::test]
async fn one_replica_writes_and_the_other_takes_over_after_a_kill() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    let audit = bed.audit();
    let ops = source_namespace(bed).await;
    let names = namespaces(bed, "lead", NAMESPACES, ("fleet", "lead"), 2).await;
    let ours: BTreeSet<String> = names.iter().cloned().collect();

    let replica_of = |name: &str| {
        ControllerProcess::start(bed, controller_kubeconfig(bed), &["--instance", name])
    };
    let mut first = replica_of("replica-a");
    let mut second = replica_of("replica-b");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "regcred-system");
    let leader = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let lease = leases.get_opt("regcred-controller").await.ok()??;
            lease.spec?.holder_identity.filter(|h| !h.is_empty())
        },
    )
    .await;
    let (leading, standby) = if leader == "replica-a" {
        (&mut first, &mut second)
    } else {
        (&mut second, &mut first)
    };

    let mark = audit.mark();
    let credentials: Api<ClusterRegistryCredential> = Api::all(client.clone());
    let registry = bed.registry();
    apply(
        &credentials,
        &cluster_credential("lead", &registry.host, &ops, "lead-pull", ("fleet", "lead")),
    )
    .await;
    // Mid-fan-out: some Secrets are written, not all.
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(10),
        || async {
            let written = audit.count(&mark, |e| {
                is_controller_write(e)
                    && e.resource == "secrets"
                    && e.namespace.as_ref().is_some_and(|n| ours.contains(n))
            });
            (written >= 20).then_some(())
        },
    )
    .await;
    let at_kill = audit.mark();
    leading.kill();
    let killed = Instant::now();
    // Requests the API server received before the kill may reach the audit log a moment
    // later: count the new leader's writes from after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after_kill = audit.mark();
    wait_for(
        Duration::from_secs(60),
        Duration::from_millis(50),
        || async {
            let lease = leases.get_opt("regcred-controller").await.ok()??;
            let holder = lease.spec?.holder_identity?;
            (holder != leader && !holder.is_empty()).then_some(())
        },
    )
    .await;
    let took_over = killed.elapsed();
    let c = wait_synced(
        &credentials,
        "lead",
        &format!("{NAMESPACES}/{NAMESPACES}"),
        (NAMESPACES * 3) as i32,
        Duration::from_secs(120),
    )
    .await;
    let failover = killed.elapsed();
    assert!(c.status.is_some());

    // Writes that changed something: a replica starting on a loaded machine may still be
    // creating the signing key when the other already leads, and is refused (409).
    let changed = |e: &&regcred_testkit::AuditEvent| {
        is_controller_write(e) && e.code.is_none_or(|code| code < 400)
    };
    let writers = |events: &[regcred_testkit::AuditEvent]| -> BTreeSet<String> {
        events
            .iter()
            .filter(changed)
            .filter_map(|e| replica(&e.user_agent))
            .collect()
    };
    let standby_writes = |events: &[regcred_testkit::AuditEvent], leader: &str| -> Vec<String> {
        events
            .iter()
            .filter(changed)
            .filter(|e| replica(&e.user_agent).is_some_and(|r| r != leader))
            .map(|e| format!("{} {} {:?} {:?}", e.verb, e.resource_path(), e.name, e.code))
            .collect()
    };
    let all = audit.events_since(&mark);
    let before = &all[..all.len() - audit.events_since(&at_kill).len()];
    let after = audit.events_since(&after_kill);
    let new_leader = leases
        .get("regcred-controller")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    println!(
        "{NAMESPACES} namespaces: the standby took the lease {took_over:?} and converged {failover:?} after the leader was killed (lease 15 s)"
    );
    assert_eq!(
        writers(before),
        BTreeSet::from([leader.clone()]),
        "only the leader wrote; the other: {:?}",
        standby_writes(before, &leader)
    );
    assert_eq!(
        writers(&after),
        BTreeSet::from([new_leader.clone()]),
        "then only the new one"
    );
    assert_ne!(new_leader, leader);
    assert!(standby.try_status().is_none(), "the standby is alive");

    // Nothing lost, nothing duplicated.
    for ns in &names {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        for sa in accounts.list(&Default::default()).await.unwrap() {
            assert_eq!(entries(&sa), ["lead-pull"], "{ns}/{}", sa.name_any());
        }
    }
    let secret = Api::<Secret>::namespaced(client.clone(), &names[0])
        .get("lead-pull")
        .await
        .unwrap();
    bed.pull_check(&secret, &registry.image)
        .await
        .expect("the Secret pulls");

    // Settled: nothing more to write.
    let quiet = audit.mark();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        audit.count(&quiet, is_controller_write),
        0,
        "steady: no writes"
    );
    credentials
        .delete("lead", &Default::default())
        .await
        .unwrap();
}
