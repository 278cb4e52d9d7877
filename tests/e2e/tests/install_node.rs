//! regcred installed as a user installs it, running as Pods from its own image on the
//! bed's real node: once with the Helm chart, once with an overlay of the kustomize base.
//! Each time the Deployment becomes Available (two replicas, one leader), a credential
//! becomes Ready, a Pod using the Secret it wrote really pulls and runs, the admission
//! webhook (through its Service) gives a new ServiceAccount its entry as it is created, and
//! removal in the documented order leaves no Secret and no `imagePullSecrets` entry behind.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use regcred_api::RegistryCredential;
use regcred_e2e::{apply, credential, entries, kubectl_output, root, source_secret, wait_reason};
use regcred_testkit::{PodOutcome, TestBed, idle_pod, wait_for};

const NAMESPACE: &str = "regcred-system";
const IMAGE_PULL_SECRET: &str = "regcred-image";

/// The Helm CLI: `$REGCRED_HELM` (hack/test.sh sets it), or the one hack/helm.sh builds.
fn helm() -> PathBuf {
    if let Some(path) = std::env::var_os("REGCRED_HELM") {
        return PathBuf::from(path);
    }
    let out = Command::new(root().join("hack/helm.sh"))
        .output()
        .expect("hack/helm.sh runs");
    assert!(out.status.success(), "hack/helm.sh failed");
    PathBuf::from(
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .trim(),
    )
}

fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

fn kubectl(bed: &TestBed, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, out) = kubectl_output(bed, args, stdin);
    assert!(ok, "kubectl {}: {out}", args.join(" "));
    out
}

/// `../..` from `from` to the filesystem root, then `to`: kustomize takes bases outside
/// an overlay's directory only by relative path.
fn relative(from: &Path, to: &Path) -> String {
    let up = from.components().count() - 1;
    format!(
        "{}{}",
        "../".repeat(up),
        to.to_str().unwrap().trim_start_matches('/')
    )
}

enum Way {
    Helm,
    Kustomize(tempfile::TempDir),
}

#[tokio::test]
async fn installed_with_helm_and_with_kustomize_it_runs_and_serves_pods() {
    let bed = TestBed::with_node();
    let _dump = bed.dump_on_panic();
    let registry = bed.registry();
    let node = bed.node();
    let client = bed.admin_client().await;

    // The image, as a release pipeline builds and pushes it.
    let repository = format!("{}/regcred/controller", registry.host);
    let started = Instant::now();
    run(
        "hack/image.sh",
        Command::new(root().join("hack/image.sh"))
            .args(["--tag", "e2e", "--push", &format!("{repository}:e2e")])
            .arg("--dest-creds")
            .arg(format!("{}:{}", registry.username, registry.password))
            .arg("--dest-cert-dir")
            .arg(&registry.ca_dir),
    );
    eprintln!("image built and pushed in {:?}", started.elapsed());

    let mut ways = vec![Way::Helm];
    let overlay = tempfile::tempdir().unwrap();
    let base = root().join("config/default").canonicalize().unwrap();
    std::fs::write(
        overlay.path().join("kustomization.yaml"),
        format!(
            r#"resources: ["{base}"]
images:
  - {{name: ghcr.io/regcred/regcred, newName: "{repository}", newTag: e2e}}
patches:
  - target: {{kind: Deployment, name: regcred}}
    patch: |-
      - op: add
        path: /spec/template/spec/imagePullSecrets
        value: [{{name: {IMAGE_PULL_SECRET}}}]
"#,
            base = relative(&overlay.path().canonicalize().unwrap(), &base),
        ),
    )
    .unwrap();
    ways.push(Way::Kustomize(overlay));

    for way in &ways {
        let name = match way {
            Way::Helm => "helm",
            Way::Kustomize(_) => "kustomize",
        };
        // The namespace and the Secret the controller's own image is pulled with.
        let _ = kubectl_output(bed, &["create", "namespace", NAMESPACE], None);
        let _ = kubectl_output(
            bed,
            &[
                "-n",
                NAMESPACE,
                "delete",
                "secret",
                IMAGE_PULL_SECRET,
                "--ignore-not-found",
            ],
            None,
        );
        kubectl(
            bed,
            &[
                "-n",
                NAMESPACE,
                "create",
                "secret",
                "docker-registry",
                IMAGE_PULL_SECRET,
                &format!("--docker-server={}", registry.host),
                &format!("--docker-username={}", registry.username),
                &format!("--docker-password={}", registry.password),
            ],
            None,
        );
        let started = Instant::now();
        match way {
            Way::Helm => {
                run(
                    "helm install",
                    Command::new(helm())
                        .env("KUBECONFIG", &bed.info.kubeconfig)
                        .args(["install", "regcred"])
                        .arg(root().join("charts/regcred"))
                        .args(["--namespace", NAMESPACE])
                        .args(["--set", &format!("image.repository={repository}")])
                        .args(["--set", "image.tag=e2e"])
                        .args([
                            "--set",
                            &format!("imagePullSecrets[0].name={IMAGE_PULL_SECRET}"),
                        ]),
                );
            }
            Way::Kustomize(dir) => {
                let rendered = kubectl(bed, &["kustomize", dir.path().to_str().unwrap()], None);
                kubectl(
                    bed,
                    &["apply", "--server-side", "--force-conflicts", "-f", "-"],
                    Some(&rendered),
                );
            }
        }
        kubectl(
            bed,
            &[
                "-n",
                NAMESPACE,
                "rollout",
                "status",
                "deployment/regcred",
                "--timeout=180s",
            ],
            None,
        );
        eprintln!(
            "{name}: the Deployment was Available {:?} after install",
            started.elapsed()
        );
        let leases: Api<Lease> = Api::namespaced(client.clone(), NAMESPACE);
        let leader = wait_for(
            Duration::from_secs(60),
            Duration::from_millis(200),
            || async {
                let lease = leases.get_opt("regcred-controller").await.ok()??;
                lease
                    .spec?
                    .holder_identity
                    .filter(|h| h.starts_with("regcred-"))
            },
        )
        .await;
        eprintln!("{name}: leader {leader}");

        // A tenant's credential, served by the controller in its Pod.
        let ns = bed.namespace(&format!("installed-{name}")).await;
        ns.api::<Secret>()
            .create(
                &PostParams::default(),
                &source_secret("login", &registry.username, &registry.password, true),
            )
            .await
            .unwrap();
        let credentials = ns.api::<RegistryCredential>();
        apply(
            &credentials,
            &credential("reg", &registry.host, "login", Some("pull")),
        )
        .await;
        wait_reason(&credentials, "reg", "Synced").await;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
        wait_for(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                let sa = accounts.get("default").await.ok()?;
                (entries(&sa) == ["pull"]).then_some(())
            },
        )
        .await;
        let pod = bed
            .run_pod(
                &ns.name,
                &idle_pod("app", &node.image),
                Duration::from_secs(60),
            )
            .await;
        assert_eq!(
            pod.outcome,
            PodOutcome::Running,
            "{name}: {}",
            pod.event_text()
        );

        // The admission webhook, called by the API server through its Service with the CA
        // bundle the controller published: a ServiceAccount is born with the Secret.
        let mut attempts = 0;
        wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
            attempts += 1;
            let name = format!("born-{attempts}");
            let accounts = accounts.clone();
            async move {
                let sa: ServiceAccount =
                    serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))
                        .unwrap();
                let created = accounts.create(&PostParams::default(), &sa).await.ok()?;
                (entries(&created) == ["pull"]).then_some(())
            }
        })
        .await;
        eprintln!("{name}: a ServiceAccount was born with its pull Secret (attempt {attempts})");

        // Removal in the documented order: credentials first, while the controller runs.
        credentials
            .delete("reg", &Default::default())
            .await
            .unwrap();
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        wait_for(
            Duration::from_secs(90),
            Duration::from_millis(200),
            || async {
                let sa = accounts.get("default").await.ok()?;
                let managed = secrets
                    .list(&ListParams::default().labels("regcred.io/managed=true"))
                    .await
                    .ok()?;
                (entries(&sa).is_empty() && managed.items.is_empty()).then_some(())
            },
        )
        .await;
        match way {
            Way::Helm => {
                run(
                    "helm uninstall",
                    Command::new(helm())
                        .env("KUBECONFIG", &bed.info.kubeconfig)
                        .args(["uninstall", "regcred", "--namespace", NAMESPACE, "--wait"]),
                );
            }
            Way::Kustomize(dir) => {
                let rendered = kubectl(bed, &["kustomize", dir.path().to_str().unwrap()], None);
                kubectl(
                    bed,
                    &["delete", "--ignore-not-found", "--wait=true", "-f", "-"],
                    Some(&rendered),
                );
            }
        }
        eprintln!("{name}: installed, served a Pod and uninstalled cleanly");
    }
}
