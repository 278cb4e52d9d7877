//! What regcred's end-to-end tests share: regcred installed on the test bed as a user
//! would install it (CRDs, the shipped RBAC), the controller running under its own
//! ServiceAccount token, and builders for the objects tests apply.
#![forbid(unsafe_code)]

pub mod admission;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use regcred_api::ClusterRegistryCredential;
use regcred_api::{
    CredentialSpec, DeletionPolicy, Registry, RegistryCredential, RegistryCredentialSpec,
    SourceSecretRef, StaticSource,
};
use regcred_testkit::{ControllerProcess, TestBed, TestNamespace, wait_for};
use serde_json::json;

/// The identity the controller runs as, as the audit log names it.
pub const CONTROLLER_USER: &str = "system:serviceaccount:regcred-system:regcred";

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn kubectl(bed: &TestBed, args: &[&str]) -> String {
    let out = bed.kubectl().args(args).output().expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs the CRDs from `crds/` and the RBAC from `config/` (once per test binary).
pub fn install(bed: &'static TestBed) {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let root = root();
        let crds = root.join("crds/regcred.io_crds.yaml");
        kubectl(
            bed,
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
        );
        kubectl(
            bed,
            &[
                "wait",
                "--for=condition=Established",
                "crd",
                "--all",
                "--timeout=30s",
            ],
        );
        let namespace = root.join("config/manager/namespace.yaml");
        kubectl(bed, &["apply", "-f", namespace.to_str().unwrap()]);
        kubectl(
            bed,
            &["apply", "-k", root.join("config/rbac").to_str().unwrap()],
        );
        // The guardrails a user installs: every test runs the controller under them.
        kubectl(
            bed,
            &["apply", "-k", root.join("config/policy").to_str().unwrap()],
        );
    });
}

/// A kubeconfig that authenticates as the controller's ServiceAccount, so the controller
/// has exactly the shipped RBAC and nothing more.
pub fn controller_kubeconfig(bed: &'static TestBed) -> &'static Path {
    static KUBECONFIG: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = KUBECONFIG.get_or_init(|| {
        install(bed);
        let token = kubectl(
            bed,
            &[
                "-n",
                "regcred-system",
                "create",
                "token",
                "regcred",
                "--duration=2h",
            ],
        );
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("regcred.kubeconfig");
        let kubeconfig = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "bed", "cluster": {
                "server": bed.info.server,
                "certificate-authority": bed.info.ca_file,
            }}],
            "users": [{"name": "regcred", "user": {"token": token.trim()}}],
            "contexts": [{"name": "regcred", "context": {"cluster": "bed", "user": "regcred"}}],
            "current-context": "regcred",
        });
        std::fs::write(&path, serde_json::to_vec(&kubeconfig).unwrap()).expect("write kubeconfig");
        (dir, path)
    });
    path
}

/// Starts a controller of its own for a test that stops or restarts it.
pub fn start_controller(bed: &'static TestBed) -> ControllerProcess {
    ControllerProcess::start(bed, controller_kubeconfig(bed), &[])
}

/// Log filter for controllers whose logs are checked for secrets: trace for every crate,
/// the controller's, kube's and the AWS SDK's, but the transport's frame dumps.
pub const VERBOSE_LOG: &str = "trace,h2=info,hyper=info,hyper_util=info,rustls=info,tower=info";

/// One controller shared by the tests of a binary that never stop it, logging at the most
/// verbose level.
pub fn shared_controller(bed: &'static TestBed) -> &'static ControllerProcess {
    static CONTROLLER: OnceLock<ControllerProcess> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        ControllerProcess::start_with_env(
            bed,
            controller_kubeconfig(bed),
            &[],
            &[("RUST_LOG", VERBOSE_LOG)],
        )
    })
}

/// A source Secret (labelled as a source unless `labelled` is false).
pub fn source_secret(name: &str, username: &str, password: &str, labelled: bool) -> Secret {
    let labels =
        labelled.then(|| BTreeMap::from([("regcred.io/source".to_owned(), "true".to_owned())]));
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels,
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "username".to_owned(),
                ByteString(username.as_bytes().to_vec()),
            ),
            (
                "password".to_owned(),
                ByteString(password.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

/// A `RegistryCredential` with one static registry.
pub fn credential(
    name: &str,
    server: &str,
    source: &str,
    secret_name: Option<&str>,
) -> RegistryCredential {
    RegistryCredential::new(
        name,
        RegistryCredentialSpec {
            credential: CredentialSpec {
                registries: vec![Registry {
                    server: Some(server.into()),
                    static_source: Some(StaticSource {
                        secret_ref: SourceSecretRef {
                            name: source.into(),
                            namespace: None,
                            username_key: "username".into(),
                            password_key: "password".into(),
                        },
                    }),
                    ecr: None,
                }],
                secret_name: secret_name.map(Into::into),
                service_accounts: None,
                deletion_policy: DeletionPolicy::Delete,
                renew_before: None,
            },
        },
    )
}

/// Server-side applies `object` as the test (field manager `e2e`).
pub async fn apply<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + serde::Serialize + serde::de::DeserializeOwned + Clone + std::fmt::Debug,
    K::DynamicType: Default,
{
    let name = object.meta().name.clone().expect("a name");
    let mut value = serde_json::to_value(object).unwrap();
    value["apiVersion"] = K::api_version(&Default::default()).into();
    value["kind"] = K::kind(&Default::default()).into();
    api.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(&value),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

/// The `Ready` condition's (status, reason, message), if any.
pub fn ready(credential: &RegistryCredential) -> Option<(String, String, String)> {
    let status = credential.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Waits until the credential's `Ready` condition has `reason` for the current generation.
pub async fn wait_reason(
    api: &Api<RegistryCredential>,
    name: &str,
    reason: &str,
) -> RegistryCredential {
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let c = api.get_opt(name).await.ok().flatten()?;
            let current = c.status.as_ref()?.observed_generation == c.metadata.generation;
            (current && ready(&c).is_some_and(|(_, r, _)| r == reason)).then_some(c)
        },
    )
    .await
}

/// The password the `.dockerconfigjson` of `secret` holds for `server`.
pub fn password_in(secret: &Secret, server: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(".dockerconfigjson")?.0;
    let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    doc["auths"][server]["password"].as_str().map(str::to_owned)
}

/// Runs `kubectl` as the admin and returns (success, stdout + stderr).
pub fn kubectl_output(bed: &TestBed, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    let mut cmd: Command = bed.kubectl();
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("kubectl runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A `ClusterRegistryCredential` with one static registry whose source lives in
/// `source_namespace`, targeting namespaces labelled `selector_label=selector_value`.
pub fn cluster_credential(
    name: &str,
    server: &str,
    source_namespace: &str,
    secret_name: &str,
    selector: (&str, &str),
) -> regcred_api::ClusterRegistryCredential {
    let mut spec = credential(name, server, "login", Some(secret_name))
        .spec
        .credential;
    if let Some(s) = spec.registries[0].static_source.as_mut() {
        s.secret_ref.namespace = Some(source_namespace.into());
    }
    regcred_api::ClusterRegistryCredential::new(
        name,
        regcred_api::ClusterRegistryCredentialSpec {
            credential: spec,
            namespaces: Some(regcred_api::NamespaceTargets {
                names: None,
                selector: Some(regcred_api::Selector {
                    match_labels: BTreeMap::from([(selector.0.to_owned(), selector.1.to_owned())]),
                    match_expressions: vec![],
                }),
                exclude: vec![],
            }),
        },
    )
}

/// The `Ready` condition of a cluster credential.
pub fn cluster_ready(
    c: &regcred_api::ClusterRegistryCredential,
) -> Option<(String, String, String)> {
    let status = c.status.as_ref()?;
    let c = status.conditions.iter().find(|c| c.type_ == "Ready")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// A `RegistryCredential` with one ECR registry.
pub fn ecr_credential(
    name: &str,
    ecr: regcred_api::EcrSource,
    secret_name: &str,
) -> RegistryCredential {
    let mut c = credential(name, "unused", "unused", Some(secret_name));
    c.spec.credential.registries = vec![Registry {
        server: None,
        static_source: None,
        ecr: Some(ecr),
    }];
    c
}

/// An `EcrSource` in the bed's region with these accounts and auth.
pub fn ecr_source(
    bed: &TestBed,
    registry_ids: &[&str],
    auth: Option<regcred_api::EcrAuth>,
) -> regcred_api::EcrSource {
    regcred_api::EcrSource {
        region: bed.info.aws.region.clone(),
        registry_ids: registry_ids.iter().map(|s| s.to_string()).collect(),
        auth,
        endpoint: None,
    }
}

/// A labelled Secret with AWS access keys under the default key names.
pub fn aws_keys_secret(name: &str, access_key_id: &str, secret_access_key: &str) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "regcred.io/source".to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                "AWS_ACCESS_KEY_ID".to_owned(),
                ByteString(access_key_id.as_bytes().to_vec()),
            ),
            (
                "AWS_SECRET_ACCESS_KEY".to_owned(),
                ByteString(secret_access_key.as_bytes().to_vec()),
            ),
        ])),
        ..Default::default()
    }
}

/// `auth.secretRef` to a keys Secret in the credential's namespace.
pub fn keys_auth(secret: &str) -> regcred_api::EcrAuth {
    regcred_api::EcrAuth {
        secret_ref: Some(regcred_api::AwsKeysRef {
            name: secret.into(),
            namespace: None,
            access_key_id_key: "AWS_ACCESS_KEY_ID".into(),
            secret_access_key_key: "AWS_SECRET_ACCESS_KEY".into(),
            session_token_key: "AWS_SESSION_TOKEN".into(),
        }),
        service_account_ref: None,
        role_arn: None,
    }
}

/// Starts a controller whose own AWS identity is the bed's static one.
pub fn start_controller_with_aws_identity(bed: &'static TestBed) -> ControllerProcess {
    start_controller_with_aws_identity_and(bed, &[])
}

/// [`start_controller_with_aws_identity`], with more arguments to `regcred run`.
pub fn start_controller_with_aws_identity_and(
    bed: &'static TestBed,
    extra_args: &[&str],
) -> ControllerProcess {
    let aws = &bed.info.aws;
    ControllerProcess::start_with_env(
        bed,
        controller_kubeconfig(bed),
        extra_args,
        &[
            ("AWS_ACCESS_KEY_ID", aws.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", aws.secret_access_key.as_str()),
        ],
    )
}

/// Applies the usual test credential `reg` (server `server`, source `login`, Secret
/// `pull`) in `ns` and waits until it is Synced.
pub async fn synced(ns: &regcred_testkit::TestNamespace, server: &str) -> Api<RegistryCredential> {
    let credentials = ns.api::<RegistryCredential>();
    apply(
        &credentials,
        &credential("reg", server, "login", Some("pull")),
    )
    .await;
    wait_reason(&credentials, "reg", "Synced").await;
    credentials
}

/// The names in a ServiceAccount's `imagePullSecrets`, in order.
pub fn entries(sa: &k8s_openapi::api::core::v1::ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

/// A write by the controller, as the audit log records it; leader-lease renewals (every
/// 2 s, in the controller's own namespace) are not what these counts are about.
pub fn is_controller_write(e: &regcred_testkit::AuditEvent) -> bool {
    is_controller_request(e) && matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete")
}

/// A request by the controller, leader-lease renewals aside.
pub fn is_controller_request(e: &regcred_testkit::AuditEvent) -> bool {
    e.user == CONTROLLER_USER && e.resource != "leases"
}

/// A namespace holding the labelled source, for cluster credentials to read from.
pub async fn source_namespace(bed: &'static TestBed) -> String {
    let ns = bed.namespace("ops").await;
    let registry = bed.registry();
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    ns.name
}

/// Creates `count` namespaces labelled `label=value`, each with `extra` ServiceAccounts
/// besides `default`, 16 at a time; waits for their `default` ServiceAccounts.
pub async fn namespaces(
    bed: &'static TestBed,
    prefix: &str,
    count: usize,
    label: (&str, &str),
    extra: usize,
) -> Vec<String> {
    let client = bed.admin_client().await;
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i:03}")).collect();
    futures::stream::iter(names.clone())
        .map(|name| {
            let client = client.clone();
            async move {
                let ns: Namespace = serde_json::from_value(json!({
                    "metadata": {"name": name, "labels": {label.0: label.1, "regcred-test/run": bed.run_id}}
                }))
                .unwrap();
                Api::<Namespace>::all(client.clone()).create(&PostParams::default(), &ns).await.unwrap();
                let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
                for i in 0..extra {
                    let sa = serde_json::from_value(json!({"metadata": {"name": format!("app-{i}")}})).unwrap();
                    accounts.create(&PostParams::default(), &sa).await.unwrap();
                }
                wait_for(Duration::from_secs(60), Duration::from_millis(100), || async { accounts.get_opt("default").await.ok().flatten() }).await;
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<()>>()
        .await;
    names
}

/// Waits until a cluster credential shows `synced` and `patched` ServiceAccounts.
pub async fn wait_synced(
    api: &Api<ClusterRegistryCredential>,
    name: &str,
    synced: &str,
    patched: i32,
    timeout: Duration,
) -> ClusterRegistryCredential {
    wait_for(timeout, Duration::from_millis(100), || async {
        let c = api.get(name).await.ok()?;
        let targets = c.status.as_ref()?.targets.clone()?;
        (targets.synced == synced && targets.service_accounts_patched == patched).then_some(c)
    })
    .await
}

/// Creates a Pod `app` running `image` in `namespace` under its `default` ServiceAccount
/// and returns the `imagePullSecrets` admission gave it.
pub async fn pod_pull_secrets(client: kube::Client, namespace: &str, image: &str) -> Vec<String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, namespace);
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "app"},
        "spec": {"containers": [{"name": "app", "image": image}]}
    }))
    .expect("a Pod");
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .expect("the Pod is admitted");
    let secrets = pod
        .spec
        .and_then(|s| s.image_pull_secrets)
        .unwrap_or_default();
    secrets.into_iter().map(|r| r.name).collect()
}

/// Waits until the controller has made no request for 3 s (at most a minute) since `mark`,
/// and returns how many requests it made: a restarted controller has then finished its
/// initial lists and reconciles.
pub async fn until_controller_quiet(
    audit: &regcred_testkit::Audit,
    mark: &regcred_testkit::AuditMark,
) -> usize {
    let quiet = Duration::from_secs(3);
    audit
        .settled_count(mark, is_controller_request, quiet, Duration::from_secs(60))
        .await
}

/// The `kubectl-regcred` binary: `$REGCRED_CLI_BIN` (hack/test.sh sets it), else the one
/// beside this test executable (`<target>/debug/deps/..` → `<target>/debug`), which is where
/// `cargo build --workspace` puts it whatever `CARGO_TARGET_DIR` says.
pub fn cli_bin() -> PathBuf {
    let binary = std::env::var_os("REGCRED_CLI_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            Some(exe.parent()?.parent()?.join("kubectl-regcred"))
        })
        .unwrap_or_else(|| root().join("target/debug/kubectl-regcred"));
    assert!(
        binary.is_file(),
        "no kubectl-regcred binary at {}: build it first: cargo build -p kubectl-regcred (hack/test.sh does)",
        binary.display()
    );
    binary
}

/// What a run of `kubectl-regcred` printed, and how it exited.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `kubectl-regcred ARGS` with `kubeconfig` (and no other) and waits for it.
pub async fn run_cli(kubeconfig: &Path, args: &[&str]) -> CliRun {
    let out = tokio::process::Command::new(cli_bin())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("HOME")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("kubectl-regcred runs");
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The bed's AWS access keys, as the Secret `aws` in `ns`.
pub async fn create_bed_aws_keys(bed: &TestBed, ns: &TestNamespace) {
    let aws = &bed.info.aws;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &aws_keys_secret("aws", &aws.access_key_id, &aws.secret_access_key),
        )
        .await
        .unwrap();
}

/// Applies the RegistryCredential `ecr` in `ns`: the bed's account, the keys Secret
/// `aws` (see [`create_bed_aws_keys`]), writing `ecr-pull`.
pub async fn apply_bed_ecr_credential(
    bed: &TestBed,
    ns: &TestNamespace,
) -> Api<regcred_api::RegistryCredential> {
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    let source = ecr_source(bed, &[&bed.info.aws.account_id], Some(keys_auth("aws")));
    apply(&credentials, &ecr_credential("ecr", source, "ecr-pull")).await;
    credentials
}
