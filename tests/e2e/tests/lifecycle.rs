//! The controller's own lifecycle: a steady state and a restart cost no writes; removal
//! works when the controller was down at deletion time; a namespace is never held up.
//! One test, in sequence, since it stops and starts its own controller.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt};
use regcred_api::ClusterRegistryCredential;
use regcred_api::{DeletionPolicy, RegistryCredential};
use regcred_e2e::{
    CONTROLLER_USER, apply, cluster_credential, credential, entries, is_controller_request,
    is_controller_write, namespaces, source_namespace, source_secret, start_controller,
    until_controller_quiet, wait_reason, wait_synced,
};
use regcred_testkit::{AuditEvent, TestBed, TestNamespace, wait_for, watch_until};

const QUICK: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// A GET of one object: the controller answers "what exists" from its caches instead.
/// A per-object GET by the controller, but the one read of its signing key at start.
fn is_object_get(e: &AuditEvent) -> bool {
    is_controller_request(e) && e.verb == "get" && !is_signing_key_read(e)
}

fn is_signing_key_read(e: &AuditEvent) -> bool {
    e.user == CONTROLLER_USER
        && e.verb == "get"
        && e.resource == "secrets"
        && e.namespace.as_deref() == Some("regcred-system")
        && e.name.as_deref() == Some("regcred-signing-key")
}

async fn covered(bed: &'static TestBed, prefix: &str, policy: DeletionPolicy) -> TestNamespace {
    let ns = bed.namespace(prefix).await;
    let client = bed.admin_client().await;
    let registry = bed.registry();
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns.name);
    let app = serde_json::from_value(serde_json::json!({"metadata": {"name": "app"}})).unwrap();
    accounts.create(&PostParams::default(), &app).await.unwrap();
    let mut c = credential("reg", &registry.host, "login", Some("pull"));
    c.spec.credential.deletion_policy = policy;
    let credentials = ns.api::<RegistryCredential>();
    apply(&credentials, &c).await;
    wait_reason(&credentials, "reg", "Synced").await;
    for sa in ["default", "app"] {
        wait_for(QUICK, POLL, || async {
            let sa = accounts.get(sa).await.ok()?;
            (entries(&sa) == ["pull"]).then_some(())
        })
        .await;
    }
    // Status counts catch up with the patched ServiceAccounts.
    wait_for(QUICK, POLL, || async {
        let c = credentials.get("reg").await.ok()?;
        let t = c.status?.targets?;
        (t.service_accounts_patched == 2 && t.service_accounts == 2).then_some(())
    })
    .await;
    ns
}

#[tokio::test]
async fn steady_state_restart_and_removal_while_down() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let audit = bed.audit();
    let client = bed.admin_client().await;
    let mut controller = start_controller(bed);

    let deleted = covered(bed, "removed", DeletionPolicy::Delete).await;
    let orphaned = covered(bed, "orphaned", DeletionPolicy::Orphan).await;
    let doomed = covered(bed, "doomed", DeletionPolicy::Delete).await;
    // And a fleet: 300 namespaces × 3 ServiceAccounts under one cluster credential, so the
    // restart below proves "no write" at scale.
    let ops = source_namespace(bed).await;
    namespaces(bed, "fleet", 300, ("fleet", "restart"), 2).await;
    let fleet: Api<ClusterRegistryCredential> = Api::all(client.clone());
    let registry = bed.registry();
    apply(
        &fleet,
        &cluster_credential(
            "fleet",
            &registry.host,
            &ops,
            "fleet-pull",
            ("fleet", "restart"),
        ),
    )
    .await;
    wait_synced(&fleet, "fleet", "300/300", 900, Duration::from_secs(180)).await;

    // Steady state: nothing to do, nothing written, nothing fetched one by one.
    let mark = audit.mark();
    tokio::time::sleep(Duration::from_secs(15)).await;
    let steady = audit.summary(&mark, CONTROLLER_USER);
    println!("steady state, 15 s, requests by the controller:\n{steady}");
    assert_eq!(
        audit.count(&mark, is_controller_write),
        0,
        "writes in a steady state:\n{steady}"
    );
    assert_eq!(
        audit.count(&mark, is_object_get),
        0,
        "per-object GETs:\n{steady}"
    );

    // Restart: the new process lists, finds everything in place, and writes nothing.
    controller.stop();
    let mark = audit.mark();
    let mut controller = start_controller(bed);
    let settled = until_controller_quiet(&audit, &mark).await;
    let restart = audit.summary(&mark, CONTROLLER_USER);
    println!(
        "restart with 303 namespaces covered, requests by the controller until quiet ({settled}):\n{restart}"
    );
    assert!(
        restart.get("list", "secrets") >= 2,
        "the new process did start:\n{restart}"
    );
    assert_eq!(
        audit.count(&mark, is_controller_write),
        0,
        "writes after a restart:\n{restart}"
    );
    assert_eq!(
        audit.count(&mark, is_object_get),
        0,
        "per-object GETs after a restart:\n{restart}"
    );
    assert_eq!(
        audit.count(&mark, is_signing_key_read),
        1,
        "the signing key is read once, at start"
    );

    // Deletion while the controller is down: garbage collection removes the Secret, the
    // entries wait for the controller and go when it is back; Orphan keeps its entry.
    controller.stop();
    let secrets_removed: Api<Secret> = Api::namespaced(client.clone(), &deleted.name);
    let uid = secrets_removed
        .get("pull")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    deleted
        .api::<RegistryCredential>()
        .delete("reg", &DeleteParams::default())
        .await
        .unwrap();
    orphaned
        .api::<RegistryCredential>()
        .delete("reg", &DeleteParams::default())
        .await
        .unwrap();
    watch_until(
        secrets_removed,
        "pull",
        Duration::from_secs(90),
        conditions::is_deleted(&uid),
    )
    .await;

    // A namespace with a credential in it terminates without the controller: no finalizer.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let doomed_uid = namespaces
        .get(&doomed.name)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    namespaces
        .delete(&doomed.name, &DeleteParams::default())
        .await
        .unwrap();
    watch_until(
        namespaces,
        &doomed.name,
        Duration::from_secs(90),
        conditions::is_deleted(&doomed_uid),
    )
    .await;

    let controller = start_controller(bed);
    let removed_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &deleted.name);
    for sa in ["default", "app"] {
        wait_for(QUICK, POLL, || async {
            let sa = removed_accounts.get(sa).await.ok()?;
            (entries(&sa).is_empty()
                && !sa
                    .annotations()
                    .contains_key("regcred.io/image-pull-secrets"))
            .then_some(())
        })
        .await;
    }
    let orphan_accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &orphaned.name);
    for sa in ["default", "app"] {
        wait_for(QUICK, POLL, || async {
            let sa = orphan_accounts.get(sa).await.ok()?;
            (entries(&sa) == ["pull"]
                && !sa
                    .annotations()
                    .contains_key("regcred.io/image-pull-secrets"))
            .then_some(())
        })
        .await;
    }
    let orphan_secret = Api::<Secret>::namespaced(client, &orphaned.name)
        .get("pull")
        .await
        .unwrap();
    bed.pull_check(&orphan_secret, &bed.registry().image)
        .await
        .expect("the orphaned Secret still pulls");
    drop(controller);
    deleted.delete().await;
    orphaned.delete().await;
}
