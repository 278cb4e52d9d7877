use k8s_openapi::ByteString;
use serde_json::{Value, json};

use serde::de::DeserializeOwned;

use super::*;
use crate::pull_secrets::DOCKER_CONFIG_JSON;

const HOST: &str = "registry.example.com";

fn obj<T: DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn pull_secret(ns: &str, name: &str, servers: &[&str], owner: Option<&str>) -> Secret {
    let auths: serde_json::Map<String, Value> = servers
        .iter()
        .map(|s| (s.to_string(), json!({"username": "u", "password": "p"})))
        .collect();
    let mut s: Secret = obj(json!({
        "metadata": {"name": name, "namespace": ns},
        "type": DOCKER_CONFIG_JSON,
    }));
    s.data = Some(
        [(
            ".dockerconfigjson".to_owned(),
            ByteString(serde_json::to_vec(&json!({ "auths": auths })).unwrap()),
        )]
        .into(),
    );
    if let Some(owner) = owner {
        s.metadata.labels = Some([(MANAGED_LABEL.to_owned(), "true".to_owned())].into());
        s.metadata.annotations = Some([(OWNER_ANNOTATION.to_owned(), owner.to_owned())].into());
    }
    s
}

fn sa(ns: &str, name: &str, secrets: &[&str]) -> ServiceAccount {
    let refs: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
    obj(json!({"metadata": {"name": name, "namespace": ns}, "imagePullSecrets": refs}))
}

fn spec(image: &str, sa: Option<&str>, own: &[&str]) -> Value {
    let refs: Vec<Value> = own.iter().map(|s| json!({"name": s})).collect();
    let mut spec = json!({"containers": [{"name": "c", "image": image}]});
    if let Some(sa) = sa {
        spec["serviceAccountName"] = json!(sa);
    }
    if !own.is_empty() {
        spec["imagePullSecrets"] = json!(refs);
    }
    spec
}

fn deployment(ns: &str, name: &str, pod: Value) -> Deployment {
    obj(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"selector": {}, "template": {"spec": pod}},
    }))
}

fn pod(ns: &str, name: &str, pod: Value, owner: Option<(&str, &str)>, hash: Option<&str>) -> Pod {
    let mut meta = json!({"name": name, "namespace": ns});
    if let Some((kind, owner)) = owner {
        meta["ownerReferences"] = json!([{"apiVersion": "v1", "kind": kind, "name": owner, "uid": "u", "controller": true}]);
    }
    if let Some(hash) = hash {
        meta["labels"] = json!({"pod-template-hash": hash});
    }
    obj(json!({"metadata": meta, "spec": pod, "status": {"phase": "Pending"}}))
}

fn find<'a>(reports: &'a [NamespaceReport], ns: &str) -> &'a NamespaceReport {
    reports.iter().find(|r| r.namespace == ns).unwrap()
}

#[test]
fn known_answers() {
    let image = format!("{HOST}/team/app:1");
    let inv = Inventory {
        secrets: vec![
            pull_secret(
                "covered",
                "regcred-pull",
                &[HOST],
                Some("ClusterRegistryCredential/reg"),
            ),
            pull_secret("own", "other", &["other.example.com"], None),
            pull_secret("own", "team", &[&format!("{HOST}/team")], None),
        ],
        service_accounts: vec![
            sa("covered", "default", &["regcred-pull"]),
            sa("covered", "app", &[]),
            sa("own", "default", &[]),
        ],
        deployments: vec![
            // Covered by its ServiceAccount.
            deployment("covered", "web", spec(&image, None, &[])),
            // Its ServiceAccount lacks the Secret.
            deployment("covered", "api", spec(&image, Some("app"), &[])),
            // Not from the registry: not listed.
            deployment("covered", "nginx", spec("nginx:1.27", None, &[])),
            // Its own list wins over the ServiceAccount's, and lacks it.
            deployment("own", "lists-other", spec(&image, None, &["other"])),
            // Its own list covers /team by path.
            deployment("own", "lists-team", spec(&image, None, &["team"])),
            // No such ServiceAccount.
            deployment("own", "ghost", spec(&image, Some("ghost"), &[])),
        ],
        pods: vec![
            // Made before coverage: no pull Secret of its own.
            pod(
                "covered",
                "web-abc12-x",
                spec(&image, None, &[]),
                Some(("ReplicaSet", "web-abc12")),
                Some("abc12"),
            ),
            // Made after: admission gave it the Secret.
            pod(
                "covered",
                "web-abc12-y",
                spec(&image, None, &["regcred-pull"]),
                Some(("ReplicaSet", "web-abc12")),
                Some("abc12"),
            ),
            // A bare Pod without it.
            pod("covered", "bare", spec(&image, None, &[]), None, None),
        ],
        ..Default::default()
    };
    let reports = analyze(HOST, &inv);
    assert_eq!(reports.len(), 2);

    let covered = find(&reports, "covered");
    assert_eq!(
        covered.regcred_credentials,
        ["ClusterRegistryCredential/reg"]
    );
    let verdicts: Vec<(&str, &str, NewPods)> = covered
        .workloads
        .iter()
        .map(|w| (w.kind, w.name.as_str(), w.new_pods))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("Deployment", "api", NewPods::ServiceAccountLacks),
            ("Deployment", "web", NewPods::Covered),
            ("Pod", "bare", NewPods::OwnPullSecretsLack),
        ]
    );
    assert_eq!(covered.workloads[1].covered_by, ["regcred-pull"]);
    assert_eq!(covered.service_accounts_lacking.len(), 1);
    assert_eq!(covered.service_accounts_lacking[0].name, "app");
    assert_eq!(
        covered.service_accounts_lacking[0].used_by,
        ["Deployment/api"]
    );
    let pods: Vec<(&str, Option<&str>)> = covered
        .pods_to_restart
        .iter()
        .map(|p| (p.name.as_str(), p.owner.as_deref()))
        .collect();
    assert_eq!(
        pods,
        [("bare", None), ("web-abc12-x", Some("Deployment/web"))]
    );
    assert_eq!(
        covered.pods_to_restart[1].fix,
        "kubectl -n covered rollout restart deployment/web"
    );

    let own = find(&reports, "own");
    assert!(own.regcred_credentials.is_empty());
    let verdicts: Vec<(&str, NewPods)> = own
        .workloads
        .iter()
        .map(|w| (w.name.as_str(), w.new_pods))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("ghost", NewPods::ServiceAccountMissing),
            ("lists-other", NewPods::OwnPullSecretsLack),
            ("lists-team", NewPods::Covered),
        ]
    );
    assert!(!own.service_accounts_lacking[0].exists);

    let summary = summarize(&reports);
    assert_eq!(summary.namespaces, 2);
    assert_eq!(summary.namespaces_covered_by_regcred, 1);
    assert_eq!(summary.workloads, 6);
    assert_eq!(summary.workloads_not_covered, 4);
    assert_eq!(summary.service_accounts_lacking, 2);
    assert_eq!(summary.pods_to_restart, 2);
}

#[test]
fn cron_jobs_stand_for_their_jobs_and_finished_pods_do_not_count() {
    let image = format!("{HOST}/batch:1");
    let cron: CronJob = obj(json!({
        "metadata": {"name": "nightly", "namespace": "b"},
        "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": {"spec": spec(&image, None, &[])}}}},
    }));
    let job: Job = obj(json!({
        "metadata": {"name": "nightly-123", "namespace": "b",
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "nightly", "uid": "u", "controller": true}]},
        "spec": {"template": {"spec": spec(&image, None, &[])}},
    }));
    let mut done = pod(
        "b",
        "old",
        spec(&image, None, &[]),
        Some(("Job", "nightly-122")),
        None,
    );
    done.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let inv = Inventory {
        service_accounts: vec![sa("b", "default", &[])],
        jobs: vec![job],
        cron_jobs: vec![cron],
        pods: vec![
            pod(
                "b",
                "nightly-123-x",
                spec(&image, None, &[]),
                Some(("Job", "nightly-123")),
                None,
            ),
            done,
        ],
        ..Default::default()
    };
    let reports = analyze(HOST, &inv);
    let b = find(&reports, "b");
    assert_eq!(b.workloads.len(), 1);
    assert_eq!(
        (b.workloads[0].kind, b.workloads[0].new_pods),
        ("CronJob", NewPods::ServiceAccountLacks)
    );
    assert_eq!(b.pods_to_restart.len(), 1);
    assert_eq!(
        b.pods_to_restart[0].owner.as_deref(),
        Some("CronJob/nightly")
    );
    assert!(
        b.pods_to_restart[0]
            .fix
            .starts_with("cover ServiceAccount default, then ")
    );
}

#[test]
fn registry_globs_and_ports_select_images_as_kubelet_would() {
    let inv = Inventory {
        service_accounts: vec![sa("g", "default", &[])],
        deployments: vec![
            deployment("g", "a", spec("eu.registry.example.com/a:1", None, &[])),
            deployment("g", "b", spec("registry.example.com:5000/b:1", None, &[])),
        ],
        ..Default::default()
    };
    let names = |host: &str| -> Vec<String> {
        analyze(host, &inv)
            .iter()
            .flat_map(|n| n.workloads.iter().map(|w| w.name.clone()))
            .collect()
    };
    assert_eq!(names("*.registry.example.com"), ["a"]);
    assert_eq!(names("registry.example.com:5000"), ["b"]);
    assert!(names("registry.example.com").is_empty());
}
