//! The controller process as the kubelet sees it: `/healthz` answers while it runs,
//! `/readyz` only once every cache has listed, and SIGTERM ends it with exit status 0,
//! before and after the caches are ready.
//!
//! Readiness is held back for real: the controller runs as a ServiceAccount bound to the
//! shipped ClusterRole minus its namespaces rule, so the namespaces watch is refused
//! until the test binds the whole role.

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use regcred_e2e::{install, root};
use regcred_testkit::{ControllerProcess, TestBed, wait_for};
use serde_json::json;

const QUICK: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Status and body of `GET http://127.0.0.1:port/path`, or None if nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// The shipped controller ClusterRole, as committed.
fn shipped_role() -> ClusterRole {
    let text = std::fs::read_to_string(root().join("config/rbac/role.yaml")).unwrap();
    let first = text.split("\n---").next().unwrap();
    serde_yaml_ng::from_str(first).expect("config/rbac/role.yaml starts with the ClusterRole")
}

fn binding(name: &str, role: &str, namespace: &str, account: &str) -> ClusterRoleBinding {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }))
    .unwrap()
}

/// Stops `controller` with SIGTERM and checks it exits 0, well within a Pod's default
/// 30 s grace period.
fn stops_cleanly(controller: &mut ControllerProcess) {
    let start = Instant::now();
    let status = controller.stop();
    assert!(
        status.success(),
        "SIGTERM should end the controller with status 0, got {status}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        start.elapsed()
    );
}

/// Polls `done` until it holds; panics after [`QUICK`].
async fn until(mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < QUICK,
            "condition not met within {QUICK:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn start(bed: &'static TestBed, kubeconfig: &Path, probe: u16, metrics: u16) -> ControllerProcess {
    let probe = format!("127.0.0.1:{probe}");
    let metrics = format!("127.0.0.1:{metrics}");
    ControllerProcess::start(
        bed,
        kubeconfig,
        &["--probe-addr", &probe, "--metrics-addr", &metrics],
    )
}

#[tokio::test]
async fn probes_follow_the_caches_and_sigterm_exits_zero() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    install(bed);
    let client = bed.admin_client().await;
    let ns = bed.namespace("probes").await;

    // The shipped role without the namespaces rule, for a ServiceAccount of the test's own.
    let partial = format!("regcred-no-namespaces-{}", ns.name);
    let mut role = shipped_role();
    role.metadata = serde_json::from_value(json!({"name": partial})).unwrap();
    let rules = role.rules.as_mut().unwrap();
    let before = rules.len();
    rules.retain(|r| !r.resources.iter().flatten().any(|r| r == "namespaces"));
    assert_eq!(
        rules.len(),
        before - 1,
        "the shipped role has one namespaces rule"
    );
    let roles: Api<ClusterRole> = Api::all(client.clone());
    let bindings: Api<ClusterRoleBinding> = Api::all(client.clone());
    roles.create(&PostParams::default(), &role).await.unwrap();
    let accounts: Api<ServiceAccount> = ns.api();
    let dir = tempfile::tempdir().unwrap();
    let mut kubeconfigs = Vec::new();
    for account in ["early", "late"] {
        let sa = serde_json::from_value(json!({"metadata": {"name": account}})).unwrap();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
        let name = format!("{partial}-{account}");
        let b = binding(&name, &partial, &ns.name, account);
        bindings.create(&PostParams::default(), &b).await.unwrap();
        let path = dir.path().join(format!("{account}.kubeconfig"));
        bed.service_account_kubeconfig(&ns.name, account, &path)
            .await;
        kubeconfigs.push(path);
    }

    // Alive but not ready: the namespaces watch is refused.
    let (probe, metrics) = (free_port(), free_port());
    let mut controller = start(bed, &kubeconfigs[1], probe, metrics);
    let health = wait_for(QUICK, POLL, || get(probe, "/healthz")).await;
    assert_eq!(health, (200, "ok\n".to_owned()));
    until(|| controller.logs().contains("namespaces is forbidden")).await;
    // Several refused re-lists later (they come every 0.5 s), still not ready.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body) = get(probe, "/readyz").await.expect("/readyz answers");
    assert_eq!((status, body.as_str()), (503, "caches not yet listed\n"));
    let (_, scrape) = get(metrics, "/metrics").await.expect("/metrics answers");
    assert!(scrape.contains("\nregcred_ready 0\n"), "{scrape}");

    // The whole role: the next re-list succeeds and the process becomes ready.
    let full = format!("{partial}-full");
    let b = binding(&full, "regcred-controller", &ns.name, "late");
    bindings.create(&PostParams::default(), &b).await.unwrap();
    wait_for(QUICK, POLL, || async move {
        (get(probe, "/readyz").await? == (200, "ok\n".to_owned())).then_some(())
    })
    .await;
    let (_, scrape) = get(metrics, "/metrics").await.expect("/metrics answers");
    assert!(scrape.contains("\nregcred_ready 1\n"), "{scrape}");
    assert!(scrape.contains("regcred_build_info{version=\""), "{scrape}");
    assert!(controller.try_status().is_none(), "still running");
    stops_cleanly(&mut controller);
    assert!(
        controller.logs().contains("graceful shutdown requested"),
        "a ready controller stops through kube's graceful shutdown"
    );
    assert!(get(probe, "/healthz").await.is_none(), "the port is closed");

    // SIGTERM before the caches are listed: no reconcile has begun, stop at once.
    let (probe, metrics) = (free_port(), free_port());
    let mut controller = start(bed, &kubeconfigs[0], probe, metrics);
    wait_for(QUICK, POLL, || async move {
        (get(probe, "/readyz").await?.0 == 503).then_some(())
    })
    .await;
    stops_cleanly(&mut controller);
    assert!(
        controller
            .logs()
            .contains("stop requested before the caches were listed"),
        "{}",
        controller.logs()
    );

    // Two controllers cannot share a probe port: the second fails at start, not later.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut controller = start(bed, &kubeconfigs[1], port, free_port());
    until(|| controller.try_status().is_some()).await;
    let status = controller.kill();
    assert!(!status.success(), "a taken probe port fails the start");
    assert!(
        controller.logs().contains("cannot listen on"),
        "{}",
        controller.logs()
    );

    for name in [format!("{partial}-early"), format!("{partial}-late"), full] {
        bindings
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap();
    }
    roles
        .delete(&partial, &DeleteParams::default())
        .await
        .unwrap();
    ns.delete().await;
}
