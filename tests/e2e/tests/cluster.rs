//! `ClusterRegistryCredential` across many namespaces, on the real test bed: fan-out
//! economy counted from the API server's audit log, watch-driven coverage of new
//! namespaces, relabelling, exclusions and conflicts. Numbers are printed for the notes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, ResourceExt};
use regcred_api::ClusterRegistryCredential;
use regcred_e2e::{
    CONTROLLER_USER, apply, cluster_credential, cluster_ready, entries, is_controller_write,
    namespaces, pod_pull_secrets, shared_controller, source_namespace, source_secret, wait_synced,
};
use regcred_testkit::{AuditEvent, TestBed, wait_for};
use serde_json::json;

const POLL: Duration = Duration::from_millis(100);

/// When a namespace's Secret, and then its `default` ServiceAccount's entry, were seen.
type Arrivals = (Option<Instant>, Option<Instant>);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::test]
async fn fan_out_to_300_namespaces_is_exact_and_then_silent() {
    const NAMESPACES: usize = 300;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let controller = shared_controller(bed);
    let client = bed.admin_client().await;
    let audit = bed.audit();
    let registry = bed.registry();
    let ops = source_namespace(bed).await;
    let started = Instant::now();
    let names = namespaces(bed, "fan", NAMESPACES, ("fleet", "fan"), 2).await;
    println!(
        "created {NAMESPACES} namespaces with 3 ServiceAccounts each in {:?}",
        started.elapsed()
    );
    let ours: BTreeSet<String> = names.iter().cloned().collect();

    let credentials: Api<ClusterRegistryCredential> = Api::all(client.clone());
    let mark = audit.mark();
    let started = Instant::now();
    apply(
        &credentials,
        &cluster_credential(
            "fleet",
            &registry.host,
            &ops,
            "fleet-pull",
            ("fleet", "fan"),
        ),
    )
    .await;
    let c = wait_synced(
        &credentials,
        "fleet",
        "300/300",
        900,
        Duration::from_secs(180),
    )
    .await;
    let converged = started.elapsed();
    assert_eq!(cluster_ready(&c).unwrap().1, "Synced");

    // Every ServiceAccount lists the Secret (checked on the API, not only in status).
    for ns in names.iter().step_by(37) {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        for sa in accounts.list(&Default::default()).await.unwrap() {
            assert_eq!(entries(&sa), ["fleet-pull"], "{ns}/{}", sa.name_any());
        }
        let secret = Api::<Secret>::namespaced(client.clone(), ns)
            .get("fleet-pull")
            .await
            .unwrap();
        bed.pull_check(&secret, &registry.image)
            .await
            .expect("pulls in a sampled namespace");
    }

    let in_ours = |e: &AuditEvent| e.namespace.as_ref().is_some_and(|n| ours.contains(n));
    let secret_creates = audit.count(&mark, |e| {
        is_controller_write(e) && in_ours(e) && e.resource == "secrets" && e.verb == "create"
    });
    let sa_patch = |e: &AuditEvent| {
        is_controller_write(e) && in_ours(e) && e.resource == "serviceaccounts" && e.verb == "patch"
    };
    // A patch refused for a stale resourceVersion (409) changes nothing; it is followed by
    // one GET and a recomputation. Counted apart from the writes.
    let sa_patches = audit.count(&mark, |e| sa_patch(e) && e.code != Some(409));
    let conflicts = audit.count(&mark, |e| sa_patch(e) && e.code == Some(409));
    let other_writes = audit.count(&mark, |e| {
        is_controller_write(e)
            && in_ours(e)
            && !(e.resource == "secrets" && e.verb == "create")
            && !(e.resource == "serviceaccounts" && e.verb == "patch")
    });
    let gets = audit.count(&mark, |e| {
        e.user == CONTROLLER_USER && e.verb == "get" && in_ours(e)
    });
    let status_writes = audit.count(&mark, |e| {
        e.user == CONTROLLER_USER
            && e.subresource.as_deref() == Some("status")
            && e.name.as_deref() == Some("fleet")
    });
    let summary = audit.summary(&mark, CONTROLLER_USER);
    println!("fan-out to {NAMESPACES} namespaces × 3 ServiceAccounts converged in {converged:?}");
    println!(
        "  Secret creates {secret_creates}, ServiceAccount patches {sa_patches} (+{conflicts} refused as stale), other writes {other_writes}, per-object GETs {gets}, status writes {status_writes}"
    );
    println!(
        "  all requests by the controller meanwhile (other tests run in parallel):\n{summary}"
    );
    assert_eq!(secret_creates, NAMESPACES, "exactly one write per Secret");
    assert_eq!(
        sa_patches,
        3 * NAMESPACES,
        "exactly one write per ServiceAccount"
    );
    assert_eq!(other_writes, 0);
    assert_eq!(
        gets, conflicts,
        "no per-object GETs but one after each conflict"
    );
    // Without the cache-lag guard, hundreds; with it, a few that two reconciles of one
    // ServiceAccount racing a watch event can still cause (harmless: GET and re-patch).
    assert!(
        conflicts <= 3 * NAMESPACES / 100,
        "{conflicts} stale patches of {sa_patches}: the cache-lag guard is not working"
    );
    assert!(
        status_writes as f64 <= converged.as_secs_f64() + 3.0,
        "status written at most about once a second: {status_writes} in {converged:?}"
    );

    // Memory of the controller process holding caches of 300+ namespaces, ~1000
    // ServiceAccounts and 300 managed Secrets (and what the other tests add).
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", controller.id())).unwrap_or_default();
    let memory: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM"))
        .collect();
    println!(
        "  controller memory: {}",
        memory
            .join(", ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    );

    // Steady state: a minute without a single write to these namespaces or the credential.
    let mark = audit.mark();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let writes = audit.count(&mark, |e| {
        is_controller_write(e) && (in_ours(e) || e.name.as_deref() == Some("fleet"))
    });
    println!("steady state, 60 s: {writes} writes");
    assert_eq!(writes, 0);
}

#[tokio::test]
async fn new_namespaces_are_covered_within_a_fraction_of_a_second() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let client = bed.admin_client().await;
    let ops = source_namespace(bed).await;
    let credentials: Api<ClusterRegistryCredential> = Api::all(client.clone());
    apply(
        &credentials,
        &cluster_credential(
            "late",
            &bed.registry().host,
            &ops,
            "late-pull",
            ("fleet", "late"),
        ),
    )
    .await;

    // Watch managed Secrets and ServiceAccounts cluster-wide; note when each arrives.
    let seen: Arc<std::sync::Mutex<BTreeMap<String, Arrivals>>> = Arc::default();
    let watch_secrets = {
        let seen = seen.clone();
        let api: Api<Secret> = Api::all(client.clone());
        let config = watcher::Config::default().labels("regcred.io/managed=true");
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                if let Event::Apply(s) = event
                    && s.name_any() == "late-pull"
                {
                    seen.lock()
                        .unwrap()
                        .entry(s.namespace().unwrap())
                        .or_default()
                        .0
                        .get_or_insert(Instant::now());
                }
            }
        })
    };
    let watch_accounts = {
        let seen = seen.clone();
        let api: Api<ServiceAccount> = Api::all(client.clone());
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default()).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                if let Event::Apply(sa) = event
                    && sa.name_any() == "default"
                    && entries(&sa).contains(&"late-pull".to_owned())
                {
                    seen.lock()
                        .unwrap()
                        .entry(sa.namespace().unwrap())
                        .or_default()
                        .1
                        .get_or_insert(Instant::now());
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut secret_latency = Vec::new();
    let mut account_latency = Vec::new();
    for i in 0..20 {
        let name = format!("late-{}-{i:02}", bed.run_id);
        let ns: Namespace = serde_json::from_value(
            json!({"metadata": {"name": name, "labels": {"fleet": "late"}}}),
        )
        .unwrap();
        let created = Instant::now();
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let (secret, account) = wait_for(
            Duration::from_secs(10),
            Duration::from_millis(5),
            || async {
                match seen.lock().unwrap().get(&name) {
                    Some((Some(s), Some(a))) => Some((*s, *a)),
                    _ => None,
                }
            },
        )
        .await;
        secret_latency.push(secret - created);
        account_latency.push(account - created);
    }
    watch_secrets.abort();
    watch_accounts.abort();
    secret_latency.sort();
    account_latency.sort();
    println!(
        "new namespace → Secret seen by a watch: p50 {:?}, p99 {:?}, max {:?}",
        percentile(&secret_latency, 0.5),
        percentile(&secret_latency, 0.99),
        secret_latency.last().unwrap()
    );
    println!(
        "new namespace → its default ServiceAccount lists the Secret: p50 {:?}, p99 {:?} (includes the controller manager creating the ServiceAccount)",
        percentile(&account_latency, 0.5),
        percentile(&account_latency, 0.99)
    );
    assert!(
        percentile(&secret_latency, 0.5) < Duration::from_millis(900),
        "{secret_latency:?}"
    );

    // A Pod created in a new namespace after coverage carries the Secret.
    let name = format!("late-{}-{:02}", bed.run_id, 0);
    let names = pod_pull_secrets(client, &name, &bed.registry().image).await;
    assert_eq!(names, ["late-pull"]);
}

#[tokio::test]
async fn relabelled_and_excluded_namespaces_lose_and_regain_coverage() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let client = bed.admin_client().await;
    let ops = source_namespace(bed).await;
    let names = namespaces(
        bed,
        &format!("relabel-{}", bed.run_id),
        3,
        ("fleet", "relabel"),
        0,
    )
    .await;
    let credentials: Api<ClusterRegistryCredential> = Api::all(client.clone());
    let mut c = cluster_credential(
        "relabel",
        &bed.registry().host,
        &ops,
        "relabel-pull",
        ("fleet", "relabel"),
    );
    apply(&credentials, &c).await;
    wait_synced(&credentials, "relabel", "3/3", 3, Duration::from_secs(30)).await;

    let has = |ns: String, want: bool| {
        let client = client.clone();
        println!("waiting for {ns} to be covered: {want}");
        async move {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
            let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns);
            wait_for(Duration::from_secs(20), POLL, || async {
                let secret = secrets.get_opt("relabel-pull").await.ok()?.is_some();
                let listed = entries(&accounts.get("default").await.ok()?)
                    .contains(&"relabel-pull".to_owned());
                (secret == want && listed == want).then_some(())
            })
            .await
        }
    };
    // Relabel out: the Secret and the entry go. Back: both return.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let out = json!({"metadata": {"labels": {"fleet": "elsewhere"}}});
    namespaces
        .patch(&names[0], &PatchParams::default(), &Patch::Merge(&out))
        .await
        .unwrap();
    has(names[0].clone(), false).await;
    let back = json!({"metadata": {"labels": {"fleet": "relabel"}}});
    namespaces
        .patch(&names[0], &PatchParams::default(), &Patch::Merge(&back))
        .await
        .unwrap();
    has(names[0].clone(), true).await;

    // Exclusion wins over the selector.
    c.spec.namespaces.as_mut().unwrap().exclude = vec![names[1].clone()];
    apply(&credentials, &c).await;
    has(names[1].clone(), false).await;
    has(names[2].clone(), true).await;
    wait_synced(&credentials, "relabel", "2/2", 2, Duration::from_secs(20)).await;
}

#[tokio::test]
async fn competing_credentials_settle_without_a_write_storm() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let client = bed.admin_client().await;
    let audit = bed.audit();
    let ops = source_namespace(bed).await;
    let names = namespaces(
        bed,
        &format!("contest-{}", bed.run_id),
        10,
        ("fleet", "contest"),
        0,
    )
    .await;
    let ours: BTreeSet<String> = names.iter().cloned().collect();
    // An unmanaged Secret with the contested name in one namespace.
    let theirs = Api::<Secret>::namespaced(client.clone(), &names[9])
        .create(
            &PostParams::default(),
            &source_secret("contested", "someone", "else", false),
        )
        .await
        .unwrap();
    let credentials: Api<ClusterRegistryCredential> = Api::all(client.clone());
    let mark = audit.mark();
    apply(
        &credentials,
        &cluster_credential(
            "first",
            &bed.registry().host,
            &ops,
            "contested",
            ("fleet", "contest"),
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // creation timestamps have 1 s resolution
    apply(
        &credentials,
        &cluster_credential(
            "second",
            &bed.registry().host,
            &ops,
            "contested",
            ("fleet", "contest"),
        ),
    )
    .await;

    let first = wait_for(Duration::from_secs(30), POLL, || async {
        let c = credentials.get("first").await.ok()?;
        (c.status.as_ref()?.targets.as_ref()?.synced == "9/10").then_some(c)
    })
    .await;
    assert_eq!(cluster_ready(&first).unwrap().1, "PartiallySynced");
    assert!(
        first
            .status
            .as_ref()
            .unwrap()
            .failures
            .iter()
            .any(|f| f.namespace == names[9] && f.reason == "Conflict")
    );
    let second = wait_for(Duration::from_secs(30), POLL, || async {
        let c = credentials.get("second").await.ok()?;
        (cluster_ready(&c)?.1 == "Conflict").then_some(c)
    })
    .await;
    assert!(
        second
            .status
            .unwrap()
            .failures
            .iter()
            .all(|f| f.reason == "Conflict")
    );
    // Settled: the winner's counts include every ServiceAccount it patched.
    wait_for(Duration::from_secs(30), POLL, || async {
        let c = credentials.get("first").await.ok()?;
        (c.status
            .as_ref()?
            .targets
            .as_ref()?
            .service_accounts_patched
            == 9)
            .then_some(())
    })
    .await;

    // A minute of coexistence: no flapping, no storm.
    let settled = audit.mark();
    tokio::time::sleep(Duration::from_secs(60)).await;
    let in_ours = |e: &AuditEvent| e.namespace.as_ref().is_some_and(|n| ours.contains(n));
    let unmanaged_ns = |e: &AuditEvent| e.namespace.as_deref() == Some(names[9].as_str());
    let total = audit.count(&mark, |e| {
        is_controller_write(e) && in_ours(e) && !unmanaged_ns(e)
    });
    let refused = audit.count(&mark, |e| is_controller_write(e) && unmanaged_ns(e));
    let after = audit.count(&settled, |e| {
        is_controller_write(e)
            && (in_ours(e) || matches!(e.name.as_deref(), Some("first" | "second")))
    });
    println!(
        "two credentials contesting 10 namespaces: {total} writes to them, {refused} attempt(s) on the namespace with an unmanaged Secret, {after} writes in the minute after settling"
    );
    for e in audit.events_since(&settled).iter().filter(|e| {
        is_controller_write(e)
            && (in_ours(e) || matches!(e.name.as_deref(), Some("first" | "second")))
    }) {
        println!(
            "  after settling: {} {} {:?} {:?}",
            e.verb,
            e.resource_path(),
            e.namespace,
            e.name
        );
    }
    assert_eq!(after, 0, "contested Secrets must not flap");
    assert_eq!(total, 9 + 9, "9 Secrets and 9 ServiceAccounts, once each");
    assert_eq!(
        refused, 0,
        "the watch of Secrets of that name knows the unmanaged one: not even a refused create"
    );
    for ns in &names[..9] {
        let s = Api::<Secret>::namespaced(client.clone(), ns)
            .get("contested")
            .await
            .unwrap();
        assert_eq!(
            s.annotations()["regcred.io/owner"],
            "ClusterRegistryCredential/first"
        );
    }
    let untouched = Api::<Secret>::namespaced(client.clone(), &names[9])
        .get("contested")
        .await
        .unwrap();
    assert_eq!(
        untouched.metadata.resource_version,
        theirs.metadata.resource_version
    );

    // The winner goes: the other takes over (after garbage collection removes the Secrets).
    credentials
        .delete("first", &Default::default())
        .await
        .unwrap();
    wait_for(Duration::from_secs(120), POLL, || async {
        let s = Api::<Secret>::namespaced(client.clone(), &names[0])
            .get_opt("contested")
            .await
            .ok()??;
        (s.annotations().get("regcred.io/owner")? == "ClusterRegistryCredential/second")
            .then_some(())
    })
    .await;

    // The unmanaged Secret goes: the name is taken over at once (regcred watches Secrets of
    // the names cluster credentials write), not on a retry minutes later.
    Api::<Secret>::namespaced(client.clone(), &names[9])
        .delete("contested", &Default::default())
        .await
        .unwrap();
    let deleted = Instant::now();
    wait_for(Duration::from_secs(20), POLL, || async {
        let s = Api::<Secret>::namespaced(client.clone(), &names[9])
            .get_opt("contested")
            .await
            .ok()??;
        s.annotations().get("regcred.io/owner").map(|_| ())
    })
    .await;
    println!(
        "the name was taken over {:?} after the unmanaged Secret was deleted",
        deleted.elapsed()
    );
}
