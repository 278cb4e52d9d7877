//! Self-tests of the test bed: each proves that a part of it the regcred tests rely on is
//! real (controllers, admission, RBAC, kubelet's credential matching, the audit log), so a
//! regcred test that passes on it means something.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, LocalObjectReference, Namespace, Pod, PodSpec, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, PostParams};
use regcred_testkit::{
    ControllerProcess, NS_LABEL, RUN_LABEL, TestBed, dockerconfigjson_secret, wait_for,
};

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

fn refs(names: &[&str]) -> Vec<LocalObjectReference> {
    names
        .iter()
        .map(|name| LocalObjectReference {
            name: (*name).to_owned(),
        })
        .collect()
}

fn pod(name: &str, service_account: &str, pull_secrets: Option<&[&str]>) -> Pod {
    Pod {
        metadata: meta(name),
        spec: Some(PodSpec {
            service_account_name: Some(service_account.to_owned()),
            image_pull_secrets: pull_secrets.map(refs),
            containers: vec![Container {
                name: "hello".to_owned(),
                image: Some(TestBed::get().registry().image.clone()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pull_secret_names(pod: &Pod) -> Vec<String> {
    let spec = pod.spec.as_ref().expect("a pod spec");
    spec.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

#[tokio::test]
async fn a_new_namespace_gets_its_default_service_account_from_the_controller_manager() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let ns = bed.namespace("tb-sa").await;

    let namespace = Api::<Namespace>::all(bed.admin_client().await)
        .get(&ns.name)
        .await
        .unwrap();
    let labels = namespace.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get(RUN_LABEL), Some(&bed.run_id));
    assert_eq!(labels.get(NS_LABEL), Some(&ns.name));
    // The kit waited for it; this GET is the proof that a controller made it, as no test did.
    let default: ServiceAccount = ns.api().get("default").await.unwrap();
    assert_eq!(
        default.metadata.namespace.as_deref(),
        Some(ns.name.as_str())
    );
    // The CA publisher runs too: every namespace gets kube-root-ca.crt.
    let ca = wait_for(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            ns.api::<ConfigMap>()
                .get_opt("kube-root-ca.crt")
                .await
                .unwrap()
        },
    )
    .await;
    assert!(ca.data.unwrap_or_default().contains_key("ca.crt"));

    ns.delete().await;
}

#[tokio::test]
async fn admission_gives_a_pod_its_service_account_pull_secrets_unless_it_lists_its_own() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let ns = bed.namespace("tb-admission").await;
    let post = PostParams::default();

    let account = ServiceAccount {
        metadata: meta("puller"),
        image_pull_secrets: Some(refs(&["pull-a", "pull-b"])),
        ..Default::default()
    };
    ns.api::<ServiceAccount>()
        .create(&post, &account)
        .await
        .unwrap();
    let pods = ns.api::<Pod>();

    // No pull secrets of its own: the ServiceAccount admission plugin copies the account's.
    let inherits = pods
        .create(&post, &pod("inherits", "puller", None))
        .await
        .unwrap();
    assert_eq!(pull_secret_names(&inherits), ["pull-a", "pull-b"]);
    // Stored that way, not only returned.
    let stored = pods.get("inherits").await.unwrap();
    assert_eq!(pull_secret_names(&stored), ["pull-a", "pull-b"]);

    // Its own pull secrets: the account's are not added.
    let own = pods
        .create(&post, &pod("own", "puller", Some(&["mine"])))
        .await
        .unwrap();
    assert_eq!(pull_secret_names(&own), ["mine"]);

    ns.delete().await;
}

#[tokio::test]
async fn rbac_denies_an_unprivileged_service_account_what_the_admin_may_do() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let ns = bed.namespace("tb-rbac").await;
    let client = bed.service_account_client(&ns.name, "default").await;

    // The token really is the ServiceAccount's.
    let review = Api::<SelfSubjectReview>::all(client.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .unwrap();
    let user = review.status.and_then(|s| s.user_info).unwrap_or_default();
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:default", ns.name).as_str())
    );

    let denied = Api::<Secret>::namespaced(client, &ns.name)
        .list(&ListParams::default())
        .await;
    match denied {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other:?}"),
    }
    ns.api::<Secret>()
        .list(&ListParams::default())
        .await
        .expect("the admin may list Secrets");

    ns.delete().await;
}

#[tokio::test]
async fn pull_check_matches_like_kubelet_and_really_pulls() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let registry = bed.registry();
    let named = |name: &str, mut secret: Secret| {
        secret.metadata = ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some("tb-pull".to_owned()),
            ..Default::default()
        };
        secret
    };

    let right = named(
        "right",
        dockerconfigjson_secret(&registry.host, &registry.username, &registry.password),
    );
    let pulled = bed.pull_check(&right, &registry.image).await;
    assert_eq!(
        pulled,
        Ok(format!(
            "pulled {} with the credential for {}",
            registry.image, registry.host
        ))
    );

    // Kubelet picks it, the registry refuses it.
    let wrong = named(
        "wrong",
        dockerconfigjson_secret(&registry.host, &registry.username, "not-the-password"),
    );
    let refused = bed.pull_check(&wrong, &registry.image).await.unwrap_err();
    assert!(
        refused.starts_with(&format!("pullcheck: could not pull {}", registry.image)),
        "{refused}"
    );
    assert!(
        !refused.contains("not-the-password"),
        "pullcheck leaked a password"
    );

    // The right password for another port: kubelet never offers it to this registry.
    let port: u16 = registry.host.rsplit(':').next().unwrap().parse().unwrap();
    let elsewhere = format!("127.0.0.1:{}", if port == 65535 { 1 } else { port + 1 });
    let other_port = named(
        "other-port",
        dockerconfigjson_secret(&elsewhere, &registry.username, &registry.password),
    );
    let unmatched = bed
        .pull_check(&other_port, &registry.image)
        .await
        .unwrap_err();
    assert_eq!(
        unmatched,
        format!(
            "pullcheck: no credential in secret tb-pull/other-port matches image {} (kubelet's matching)",
            registry.image
        )
    );
}

#[tokio::test]
async fn the_audit_log_counts_exactly_the_requests_a_user_made() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let ns = bed.namespace("tb-audit").await;
    let client = bed.service_account_client(&ns.name, "default").await;
    let user = format!("system:serviceaccount:{}:default", ns.name);
    let audit = bed.audit();
    let is_user = |e: &regcred_testkit::AuditEvent| e.user == user;

    let mark = audit.mark();
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns.name);
    for _ in 0..3 {
        // Denied (403) or not, each is one request.
        let _ = config_maps.get("kube-root-ca.crt").await;
    }

    // Each request's RequestReceived event is written before its response is sent; poll
    // all the same, a few seconds at most.
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { (audit.count(&mark, is_user) >= 3).then_some(()) },
    )
    .await;
    assert_eq!(audit.count(&mark, is_user), 3);
    // Response codes follow a moment later.
    let events = wait_for(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async {
            let events: Vec<_> = audit
                .events_since(&mark)
                .into_iter()
                .filter(is_user)
                .collect();
            events.iter().all(|e| e.code.is_some()).then_some(events)
        },
    )
    .await;
    for event in &events {
        assert_eq!(
            (event.verb.as_str(), event.resource.as_str(), event.code),
            ("get", "configmaps", Some(403))
        );
        assert_eq!(event.namespace.as_deref(), Some(ns.name.as_str()));
        assert_eq!(event.name.as_deref(), Some("kube-root-ca.crt"));
    }
    // Nothing else arrives for that user.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let summary = audit.summary(&mark, &user);
    assert_eq!(
        *summary,
        BTreeMap::from([(("get".to_owned(), "configmaps".to_owned()), 3)])
    );
    eprintln!("requests by {user}:\n{summary}");

    ns.delete().await;
}

#[tokio::test]
async fn kubectl_and_the_server_report_the_pinned_version() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let output = bed
        .kubectl()
        .args(["version", "--output=json"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let version: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let expected = bed.info.k8s_version.as_str();
    assert_eq!(version["clientVersion"]["gitVersion"], expected);
    assert_eq!(version["serverVersion"]["gitVersion"], expected);
    assert_eq!(expected, "v1.37.2");

    let info = bed.admin_client().await.apiserver_version().await.unwrap();
    assert_eq!(info.git_version, expected);
}

#[tokio::test]
async fn controller_process_runs_a_binary_and_stops_it_with_sigterm() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    // A stand-in for the regcred binary: logs its arguments, exits cleanly on SIGTERM.
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("regcred");
    std::fs::write(
        &fake,
        "#!/bin/sh\ntrap 'echo terminated; exit 0' TERM\necho \"args: $* KUBECONFIG=$KUBECONFIG RUST_LOG=$RUST_LOG\"\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");

    let mut controller = ControllerProcess::start_binary(&fake, bed, &kubeconfig, &["--flag"], &[]);
    wait_for(
        Duration::from_secs(5),
        Duration::from_millis(20),
        || async { controller.logs().contains("args: run --flag").then_some(()) },
    )
    .await;
    assert!(
        controller
            .logs()
            .contains(&format!("KUBECONFIG={}", kubeconfig.display()))
    );
    let status = controller.stop();
    assert!(status.success(), "{status}");
    assert!(
        controller.logs().contains("terminated"),
        "{}",
        controller.logs()
    );
}
