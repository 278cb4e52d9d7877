//! `kubectl-regcred` run as a process against the real bed: status across two contexts
//! (one of them dead), refresh --wait minting a new ECR token, an audit with known answers
//! that makes list calls only, and inspect that never prints a password or a token.
//!
//! Known answers hold because this binary has a bed of its own: no other test seeds
//! workloads or ClusterRegistryCredentials in it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use regcred_api::RegistryCredential;
use regcred_e2e::{
    CliRun, apply, aws_keys_secret, ecr_credential, ecr_source, keys_auth, password_in, run_cli,
    shared_controller, source_secret, synced, wait_reason,
};
use regcred_testkit::{TestBed, TestNamespace, wait_for};
use serde_json::{Value, json};

/// Keeps the kubeconfig's directory alive as long as the path is used.
struct Kubeconfig {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

/// The bed's admin kubeconfig with its context renamed `bed`, and a second context `dead`
/// whose server is a loopback port nothing listens on.
fn two_contexts(bed: &TestBed) -> Kubeconfig {
    let text = std::fs::read_to_string(&bed.info.kubeconfig).unwrap();
    let mut config: Value = serde_yaml_ng::from_str(&text).unwrap();
    let user = config["users"][0].clone();
    let cluster = config["clusters"][0].clone();
    let dead_port = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut dead = cluster.clone();
    dead["name"] = json!("dead");
    dead["cluster"]["server"] = json!(format!("https://127.0.0.1:{dead_port}"));
    let mut live = cluster;
    live["name"] = json!("bed");
    config["clusters"] = json!([live, dead]);
    config["users"] = json!([user.clone()]);
    let user_name = user["name"].clone();
    config["contexts"] = json!([
        {"name": "bed", "context": {"cluster": "bed", "user": user_name}},
        {"name": "dead", "context": {"cluster": "dead", "user": user_name}},
    ]);
    config["current-context"] = json!("bed");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, serde_json::to_vec(&config).unwrap()).unwrap();
    Kubeconfig { _dir: dir, path }
}

/// The usual static credential `reg` (source `login`, Secret `pull`) in `ns`, Synced and
/// listed by every ServiceAccount.
async fn static_synced(bed: &TestBed, ns: &TestNamespace) -> Api<RegistryCredential> {
    let registry = bed.registry();
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    let credentials = synced(ns, &registry.host).await;
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let t = credentials.get("reg").await.ok()?.status?.targets?;
            (t.service_accounts_patched == t.service_accounts).then_some(())
        },
    )
    .await;
    credentials
}

fn json_of(run: &CliRun) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {run:?}"))
}

#[tokio::test]
async fn status_reports_a_dead_cluster_and_still_lists_the_live_one() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let ns = bed.namespace("cli-status").await;
    static_synced(bed, &ns).await;
    let kubeconfig = two_contexts(bed);
    let path = kubeconfig.path.as_path();

    let run = run_cli(
        path,
        &["status", "--all-contexts", "-n", &ns.name, "-o", "json"],
    )
    .await;
    assert_eq!(run.code, Some(1), "a dead cluster is unhealthy: {run:?}");
    let report = json_of(&run);
    assert_eq!(report["healthy"], false);
    let clusters = report["clusters"].as_array().unwrap();
    let context = |name: &str| {
        clusters
            .iter()
            .find(|c| c["context"] == name)
            .unwrap_or_else(|| panic!("no context {name}: {report}"))
    };
    let dead = context("dead");
    assert_eq!(dead["reachable"], false);
    assert_eq!(dead["errorReason"], "Unreachable", "{dead}");
    let live = context("bed");
    assert_eq!(live["reachable"], true, "{live}");
    let ours: Vec<&Value> = live["credentials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["namespace"] == ns.name.as_str())
        .collect();
    assert_eq!(ours.len(), 1, "{live}");
    assert_eq!(ours[0]["name"], "reg");
    assert_eq!(ours[0]["healthy"], true, "{}", ours[0]);

    // The table: both contexts, the dead one as such; progress only on stderr.
    let run = run_cli(path, &["status", "--all-contexts", "-n", &ns.name]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    let rows: Vec<&str> = run.stdout.lines().collect();
    assert!(rows[0].starts_with("CONTEXT"), "{}", run.stdout);
    assert!(
        rows.iter()
            .any(|r| r.starts_with("bed ") && r.contains(" reg ") && r.contains("True")),
        "{}",
        run.stdout
    );
    assert!(
        rows.iter()
            .any(|r| r.starts_with("dead ") && r.contains("Unreachable")),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("querying 2 clusters"), "{}", run.stderr);
    assert!(!run.stdout.contains("querying"), "{}", run.stdout);

    // The live context alone: Ready, exit 0.
    let run = run_cli(
        path,
        &["status", "--context", "bed", "-n", &ns.name, "-o", "json"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = json_of(&run);
    assert_eq!(report["healthy"], true);
    let credential = &report["clusters"][0]["credentials"][0];
    assert_eq!(credential["kind"], "RegistryCredential");
    assert_eq!(credential["ready"], "True");
    assert_eq!(credential["reason"], "Synced");
    assert_eq!(credential["synced"], "1/1");
    assert_eq!(credential["serviceAccounts"], "1/1");
    assert_eq!(credential["registries"], bed.registry().host.as_str());

    // A source gone: not Ready, so exit 1 even with every cluster reachable.
    ns.api::<Secret>()
        .delete("login", &Default::default())
        .await
        .unwrap();
    wait_reason(&ns.api::<RegistryCredential>(), "reg", "SourceNotFound").await;
    let run = run_cli(path, &["status", "--context", "bed", "-n", &ns.name]).await;
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stdout.contains("SourceNotFound"), "{}", run.stdout);
    ns.delete().await;
}

/// A distinct static AWS identity, so GetAuthorizationToken calls can be counted per test.
async fn identity(bed: &TestBed, name: &str) -> (String, String) {
    let key = format!("AKIA{:0>12}", name.to_uppercase().replace('-', ""));
    let secret = format!("{name}-secret-key-0123456789abcdefghijklmnop");
    let arn = format!("arn:aws:iam::{}:user/{name}", bed.info.aws.account_id);
    bed.aws().add_identity(&key, &secret, &arn).await;
    (key, secret)
}

async fn token_calls(bed: &TestBed, access_key_id: &str) -> usize {
    bed.aws()
        .calls()
        .await
        .iter()
        .filter(|c| {
            c.operation == "GetAuthorizationToken"
                && c.access_key_id.as_deref() == Some(access_key_id)
        })
        .count()
}

/// An ECR credential `ecr` (Secret `ecr-pull`) with its own keys, Synced.
async fn ecr_synced(
    bed: &TestBed,
    ns: &TestNamespace,
    key: &str,
    secret: &str,
) -> RegistryCredential {
    ns.api::<Secret>()
        .create(&PostParams::default(), &aws_keys_secret("aws", key, secret))
        .await
        .unwrap();
    let credentials = ns.api::<RegistryCredential>();
    let source = ecr_source(bed, &[&bed.info.aws.account_id], Some(keys_auth("aws")));
    apply(&credentials, &ecr_credential("ecr", source, "ecr-pull")).await;
    wait_reason(&credentials, "ecr", "Synced").await
}

fn expires_at(c: &RegistryCredential) -> jiff::Timestamp {
    c.status.as_ref().unwrap().expires_at.as_ref().unwrap().0
}

#[tokio::test]
async fn refresh_wait_mints_a_new_ecr_token_and_shows_its_expiry() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let ns = bed.namespace("cli-refresh").await;
    let (key, secret) = identity(bed, "cli-refresh").await;
    let before = ecr_synced(bed, &ns, &key, &secret).await;
    let calls = token_calls(bed, &key).await;
    let kubeconfig = &bed.info.kubeconfig;
    // Status times are whole seconds: a token minted in the same second has the same one.
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let run = run_cli(
        kubeconfig,
        &["refresh", "ecr", "-n", &ns.name, "--wait", "-o", "json"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let outcome = json_of(&run);
    assert_eq!(outcome["acknowledged"], true);
    let previous: jiff::Timestamp = outcome["previousExpiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let new: jiff::Timestamp = outcome["credential"]["expiresAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(previous, expires_at(&before));
    assert!(new > previous, "{outcome}");
    assert_eq!(outcome["credential"]["ready"], "True");
    assert_eq!(
        token_calls(bed, &key).await,
        calls + 1,
        "one GetAuthorizationToken for one request"
    );
    let now = ns.api::<RegistryCredential>().get("ecr").await.unwrap();
    assert_eq!(expires_at(&now), new);
    assert_eq!(
        now.status.as_ref().unwrap().last_refresh_request.as_deref(),
        outcome["refreshRequest"].as_str()
    );

    // The table says it for a person.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let run = run_cli(kubeconfig, &["refresh", "ecr", "-n", &ns.name, "--wait"]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let latest = expires_at(&ns.api::<RegistryCredential>().get("ecr").await.unwrap());
    assert!(latest > new);
    assert!(
        run.stdout.contains("refreshed: Ready True (Synced)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("expires at {latest}"))
            && run.stdout.contains(&format!("(was {new})")),
        "{}",
        run.stdout
    );
    assert_eq!(
        token_calls(bed, &key).await,
        calls + 2,
        "one more for the second request"
    );

    // Unknown names fail plainly.
    let run = run_cli(kubeconfig, &["refresh", "nope", "-n", &ns.name]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("RegistryCredential nope not found"),
        "{}",
        run.stderr
    );
    ns.delete().await;
}

fn spec(image: &str, service_account: Option<&str>, pull_secrets: &[&str]) -> Value {
    let mut spec = json!({"containers": [{"name": "app", "image": image}]});
    if let Some(sa) = service_account {
        spec["serviceAccountName"] = json!(sa);
    }
    if !pull_secrets.is_empty() {
        let refs: Vec<Value> = pull_secrets.iter().map(|n| json!({"name": n})).collect();
        spec["imagePullSecrets"] = json!(refs);
    }
    spec
}

/// Jobs' Pods must not restart forever.
fn never_restart(mut spec: Value) -> Value {
    spec["restartPolicy"] = json!("Never");
    spec
}

/// Creates an object of any kind from JSON with kubectl (as the admin).
fn create(bed: &TestBed, ns: &str, object: Value) {
    let (ok, out) = regcred_e2e::kubectl_output(
        bed,
        &["-n", ns, "create", "-f", "-"],
        Some(&object.to_string()),
    );
    assert!(ok, "kubectl create: {out}");
}

fn labelled(mut template: Value, app: &str) -> Value {
    let spec = template["spec"].clone();
    template = json!({"metadata": {"labels": {"app": app}}, "spec": spec});
    template
}

fn deployment(name: &str, pod: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "template": labelled(json!({"spec": pod}), name)},
    })
}

async fn pod(ns: &TestNamespace, name: &str, pod: Value) -> Pod {
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": pod})).unwrap();
    ns.api::<Pod>()
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
}

#[tokio::test]
async fn audit_knows_what_would_break_and_only_lists() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let host = bed.registry().host.clone();
    let image = format!("{host}/regcred/hello:1");
    let elsewhere = "other.example.com/tools/agent:1";

    // A namespace regcred covers, with a Pod created before the credential and one after.
    let covered = bed.namespace("cli-covered").await;
    let early = pod(&covered, "early", spec(&image, None, &[])).await;
    assert!(early.spec.unwrap().image_pull_secrets.is_none());
    static_synced(bed, &covered).await;
    let late = pod(&covered, "late", spec(&image, None, &[])).await;
    let late_secrets: Vec<String> = late
        .spec
        .unwrap()
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(
        late_secrets,
        ["pull"],
        "admission copied the ServiceAccount's entry"
    );
    create(
        bed,
        &covered.name,
        deployment("web", spec(&image, None, &[])),
    );
    create(
        bed,
        &covered.name,
        deployment("sidecar", spec(elsewhere, None, &[])),
    );

    // A namespace nobody covers yet.
    let bare = bed.namespace("cli-bare").await;
    // A pull Secret for another registry only.
    let mut other = regcred_testkit::dockerconfigjson_secret("other.example.com", "u", "p");
    other.metadata.name = Some("other-registry".into());
    bare.api::<Secret>()
        .create(&PostParams::default(), &other)
        .await
        .unwrap();
    create(bed, &bare.name, deployment("api", spec(&image, None, &[])));
    create(
        bed,
        &bare.name,
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
            "spec": {"selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
                     "template": labelled(json!({"spec": spec(&image, None, &["other-registry"])}), "db")},
        }),
    );
    create(
        bed,
        &bare.name,
        json!({
            "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": labelled(json!({"spec": spec(elsewhere, None, &[])}), "agent")},
        }),
    );
    create(
        bed,
        &bare.name,
        json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "migrate"},
            "spec": {"template": {"spec": never_restart(spec(&image, Some("migrator"), &[]))}},
        }),
    );
    create(
        bed,
        &bare.name,
        json!({
            "apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": {"spec": never_restart(spec(&image, None, &[]))}}}},
        }),
    );
    pod(&bare, "one-off", spec(&image, None, &[])).await;
    // The namespace's default ServiceAccount exists; "migrator" does not.
    assert!(
        bare.api::<ServiceAccount>()
            .get_opt("migrator")
            .await
            .unwrap()
            .is_none()
    );

    // The audit runs as a ServiceAccount that may only list: what docs/cli.md says it
    // needs, and an identity of its own in the audit log (other tests run the CLI too).
    let auditor = bed.namespace("cli-auditor").await;
    let dir = tempfile::tempdir().unwrap();
    let auditor_kubeconfig = dir.path().join("auditor.kubeconfig");
    list_only_auditor(bed, &auditor.name, &auditor_kubeconfig).await;
    let audit = bed.audit();
    let mark = audit.mark();
    let kubeconfig = &bed.info.kubeconfig;
    let run = run_cli(
        &auditor_kubeconfig,
        &[
            "audit",
            "--registry",
            &host,
            "-o",
            "json",
            "--chunk-size",
            "2",
        ],
    )
    .await;
    assert_eq!(run.code, Some(1), "something would break: {run:?}");
    let report = json_of(&run);
    let context = &report["contexts"][0];
    let namespace = |name: &str| {
        context["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["namespace"] == name)
            .unwrap_or_else(|| panic!("no namespace {name}: {report}"))
            .clone()
    };
    let verdicts = |n: &Value| -> Vec<String> {
        n["workloads"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                format!(
                    "{}/{} {}",
                    w["kind"].as_str().unwrap(),
                    w["name"].as_str().unwrap(),
                    w["newPods"].as_str().unwrap()
                )
            })
            .collect()
    };
    let c = namespace(&covered.name);
    assert_eq!(
        verdicts(&c),
        [
            "Deployment/web Covered",
            "Pod/early OwnPullSecretsLack",
            "Pod/late Covered"
        ]
    );
    assert_eq!(
        c["regcredCredentials"],
        json!([format!("RegistryCredential/{}/reg", covered.name)])
    );
    assert_eq!(c["serviceAccountsLacking"], json!([]));
    assert_eq!(c["podsToRestart"].as_array().unwrap().len(), 1);
    assert_eq!(c["podsToRestart"][0]["name"], "early");

    let b = namespace(&bare.name);
    assert_eq!(
        verdicts(&b),
        [
            "CronJob/nightly ServiceAccountLacks",
            "Deployment/api ServiceAccountLacks",
            "Job/migrate ServiceAccountMissing",
            "Pod/one-off OwnPullSecretsLack",
            "StatefulSet/db OwnPullSecretsLack",
        ]
    );
    assert_eq!(b["regcredCredentials"], json!([]));
    let lacking: Vec<(String, bool, Value)> = b["serviceAccountsLacking"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["exists"].as_bool().unwrap(),
                s["usedBy"].clone(),
            )
        })
        .collect();
    assert_eq!(
        lacking,
        [
            (
                "default".to_owned(),
                true,
                json!(["CronJob/nightly", "Deployment/api"])
            ),
            ("migrator".to_owned(), false, json!(["Job/migrate"])),
        ]
    );
    assert_eq!(b["podsToRestart"][0]["name"], "one-off");

    assert_eq!(
        report["summary"],
        json!({
            "namespaces": 2, "namespacesCoveredByRegcred": 1, "workloads": 8,
            "workloadsNotCovered": 6, "serviceAccountsLacking": 2, "podsToRestart": 2,
        })
    );
    assert_eq!(report["wouldBreak"], true);

    // Lists only, every one of them paginated at 2 per page, as the CLI counted them.
    let requests: Vec<_> = audit
        .events_since(&mark)
        .into_iter()
        .filter(|e| e.user == format!("system:serviceaccount:{}:auditor", auditor.name))
        .collect();
    assert!(!requests.is_empty());
    assert!(
        requests
            .iter()
            .all(|e| e.user_agent.starts_with("kubectl-regcred/") && e.code == Some(200)),
        "{requests:?}"
    );
    assert!(
        requests.iter().all(|e| e.verb == "list"),
        "{:?}",
        requests
            .iter()
            .map(|e| (&e.verb, &e.uri))
            .collect::<Vec<_>>()
    );
    assert_eq!(requests.len() as u64, context["requests"].as_u64().unwrap());
    let resources: std::collections::BTreeSet<&str> =
        requests.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(
        resources.into_iter().collect::<Vec<_>>(),
        [
            "cronjobs",
            "daemonsets",
            "deployments",
            "jobs",
            "pods",
            "secrets",
            "serviceaccounts",
            "statefulsets"
        ]
    );
    assert!(
        requests
            .iter()
            .any(|e| e.resource == "pods" && e.uri.contains("continue=")),
        "pages followed: {:?}",
        requests.iter().map(|e| &e.uri).collect::<Vec<_>>()
    );
    assert!(
        requests
            .iter()
            .filter(|e| e.resource == "secrets")
            .all(|e| e.uri.contains("fieldSelector=type")),
        "only pull Secrets are read"
    );

    // The table, for a person, and the summary line.
    let run = run_cli(kubeconfig, &["audit", "--registry", &host]).await;
    assert_eq!(run.code, Some(1));
    assert!(
        run.stdout.contains("Summary: 8 workloads in 2 namespaces"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.lines().any(|l| l.contains(&bare.name)
            && l.contains("migrator")
            && l.contains("(does not exist)")),
        "{}",
        run.stdout
    );

    // A registry nothing pulls from: nothing would break.
    let run = run_cli(
        kubeconfig,
        &["audit", "--registry", "nothing.example.invalid"],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(run.stdout.contains("Nothing would break"), "{}", run.stdout);
    covered.delete().await;
    bare.delete().await;
    auditor.delete().await;
}

/// A ServiceAccount `auditor` in `namespace` that may list what the audit reads and do
/// nothing else, and a kubeconfig for it at `path`.
async fn list_only_auditor(bed: &TestBed, namespace: &str, path: &Path) {
    let name = format!("regcred-cli-audit-{namespace}");
    create(
        bed,
        namespace,
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "auditor"}}),
    );
    create(
        bed,
        namespace,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "serviceaccounts", "secrets"], "verbs": ["list"]},
                {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets", "daemonsets"], "verbs": ["list"]},
                {"apiGroups": ["batch"], "resources": ["jobs", "cronjobs"], "verbs": ["list"]},
            ],
        }),
    );
    create(
        bed,
        namespace,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "auditor", "namespace": namespace}],
        }),
    );
    bed.service_account_kubeconfig(namespace, "auditor", path)
        .await;
}

#[tokio::test]
async fn inspect_shows_hosts_users_and_expiry_never_a_password_or_token() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let ns = bed.namespace("cli-inspect").await;
    let (key, secret) = identity(bed, "cli-inspect").await;
    ecr_synced(bed, &ns, &key, &secret).await;
    let registry = bed.registry();
    static_synced(bed, &ns).await;
    let kubeconfig: &Path = &bed.info.kubeconfig;
    let aws = &bed.info.aws;

    let ecr_pull = ns.api::<Secret>().get("ecr-pull").await.unwrap();
    let token = password_in(&ecr_pull, &aws.ecr_registry).expect("an ECR token");
    let expires = ecr_pull.metadata.annotations.as_ref().unwrap()["regcred.io/expires-at"].clone();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forbidden = [
        ("the ECR token", token.clone()),
        ("the ECR auth field", b64(&format!("AWS:{token}"))),
        ("the registry password", registry.password.clone()),
        (
            "the registry auth field",
            b64(&format!("{}:{}", registry.username, registry.password)),
        ),
        ("the AWS secret key", secret.clone()),
    ];
    let clean = |run: &CliRun| {
        for (what, value) in &forbidden {
            assert!(
                !run.stdout.contains(value.as_str()) && !run.stderr.contains(value.as_str()),
                "inspect printed {what}"
            );
        }
    };

    let run = run_cli(
        kubeconfig,
        &["inspect", "secret", "ecr-pull", "-n", &ns.name],
    )
    .await;
    clean(&run);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(run.stdout.contains(&aws.ecr_registry), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("Token expires:   {expires}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("regcred (RegistryCredential/{}/ecr)", ns.name)),
        "{}",
        run.stdout
    );
    let row = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&aws.ecr_registry))
        .unwrap();
    assert!(row.contains(" AWS ") && row.contains(" set "), "{row}");

    let run = run_cli(
        kubeconfig,
        &["inspect", "secret", "pull", "-n", &ns.name, "-o", "json"],
    )
    .await;
    clean(&run);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let doc = json_of(&run);
    assert_eq!(doc["entries"][0]["server"], registry.host.as_str());
    assert_eq!(doc["entries"][0]["username"], registry.username.as_str());
    assert_eq!(doc["entries"][0]["passwordSet"], true);

    let run = run_cli(
        kubeconfig,
        &[
            "inspect", "secret", "ecr-pull", "-n", &ns.name, "-o", "yaml",
        ],
    )
    .await;
    clean(&run);
    assert!(run.stdout.contains("username: AWS"), "{}", run.stdout);

    // A Secret that is no pull Secret: said so, without its values.
    let run = run_cli(kubeconfig, &["inspect", "secret", "aws", "-n", &ns.name]).await;
    clean(&run);
    assert_eq!(run.code, Some(1));
    assert!(run.stdout.contains("not a pull Secret"), "{}", run.stdout);
    // There is no flag to show a secret.
    let run = run_cli(
        kubeconfig,
        &[
            "inspect",
            "secret",
            "pull",
            "-n",
            &ns.name,
            "--show-password",
        ],
    )
    .await;
    assert_eq!(run.code, Some(2));
    clean(&run);
    ns.delete().await;
}
