//! On the bed's real node (kubelet, containerd, runc): Pods pull with the Secrets regcred
//! wrote and reach `Running`; without them, the registry refuses the pull and the Pod
//! says so. For ECR, kubelet picks the token by the ECR host's name and containerd pulls
//! through the emulator's registry front, which refuses expired tokens: after a rotation
//! and the old token's expiry, a new Pod still pulls.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use regcred_e2e::{
    apply_bed_ecr_credential, controller_kubeconfig, create_bed_aws_keys, entries, password_in,
    source_secret, synced, wait_reason,
};
use regcred_testkit::{ControllerProcess, PodOutcome, TestBed, idle_pod, wait_for};
use sha2::{Digest, Sha256};

/// A cold first pull of the test image takes well under a second here; the margin is
/// for a loaded CI machine.
const POD_TIMEOUT: Duration = Duration::from_secs(60);
/// ECR token lifetime for the rotation test: short, so the old token really expires.
const TOKEN_LIFETIME: u64 = 30;

/// One controller for the binary (tests run in parallel on one bed; two controllers would
/// fight over the same objects). Its AWS identity is the bed's static one; the ECR test's
/// credential brings its own keys anyway.
fn controller(bed: &'static TestBed) -> &'static ControllerProcess {
    static CONTROLLER: OnceLock<ControllerProcess> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let aws = &bed.info.aws;
        ControllerProcess::start_with_env(
            bed,
            controller_kubeconfig(bed),
            &[],
            &[
                ("AWS_ACCESS_KEY_ID", aws.access_key_id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", aws.secret_access_key.as_str()),
            ],
        )
    })
}

/// Waits until the namespace's `default` ServiceAccount lists `secret`, so that a Pod
/// created next is admitted with it.
async fn default_sa_lists(bed: &TestBed, namespace: &str, secret: &str) {
    let accounts: Api<ServiceAccount> = Api::namespaced(bed.admin_client().await, namespace);
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async {
            let sa = accounts.get("default").await.ok()?;
            entries(&sa).iter().any(|e| e == secret).then_some(())
        },
    )
    .await;
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pull_secrets(run: &regcred_testkit::PodRun) -> Vec<String> {
    run.pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|r| r.name)
        .collect()
}

#[tokio::test]
async fn pod_runs_with_regcreds_secret_and_fails_to_pull_without_it() {
    let bed = TestBed::with_node();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let node = bed.node();
    let registry = bed.registry();

    // With regcred: its Secret reaches the ServiceAccount, admission copies it into the
    // Pod, kubelet pulls with it.
    let ns = bed.namespace("node-static").await;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    synced(&ns, &registry.host).await;
    default_sa_lists(bed, &ns.name, "pull").await;
    let run = bed
        .run_pod(&ns.name, &idle_pod("app", &node.image), POD_TIMEOUT)
        .await;
    assert_eq!(
        run.outcome,
        PodOutcome::Running,
        "events:\n{}",
        run.event_text()
    );
    assert_eq!(pull_secrets(&run), ["pull"]);
    assert!(
        run.events
            .iter()
            .any(|(r, m)| r == "Pulled" && m.contains(&node.image)),
        "kubelet pulled the image itself; events:\n{}",
        run.event_text()
    );
    eprintln!("Pod with regcred's Secret: Running after {:?}", run.elapsed);

    // The same Pod where no credential applies: the registry answers 401 with a Basic
    // challenge, which containerd reports as "no basic auth credentials".
    let bare = bed.namespace("node-bare").await;
    let run = bed
        .run_pod(&bare.name, &idle_pod("app", &node.image), POD_TIMEOUT)
        .await;
    assert!(pull_secrets(&run).is_empty());
    let failure = pull_failure(&run);
    assert!(
        failure.contains(&node.image) && failure.contains("no basic auth credentials"),
        "the registry's refusal is in the Event: {failure}"
    );
    eprintln!("Pod without a Secret: {:?}: {failure}", run.outcome);

    // regcred's Secret with a wrong password: kubelet sends it, the registry answers 401.
    let wrong = bed.namespace("node-wrong").await;
    wrong
        .api::<Secret>()
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, "not-the-password", true),
        )
        .await
        .unwrap();
    synced(&wrong, &registry.host).await;
    default_sa_lists(bed, &wrong.name, "pull").await;
    let run = bed
        .run_pod(&wrong.name, &idle_pod("app", &node.image), POD_TIMEOUT)
        .await;
    assert_eq!(pull_secrets(&run), ["pull"]);
    let failure = pull_failure(&run);
    assert!(
        failure.contains(&node.image) && failure.contains("401 Unauthorized"),
        "the registry's 401 is in the Event: {failure}"
    );
    assert!(!failure.contains("not-the-password"));
    eprintln!("Pod with a wrong password: {:?}: {failure}", run.outcome);
    for ns in [ns, bare, wrong] {
        ns.delete().await;
    }
}

/// Asserts that the Pod failed to pull, and returns the message of its pull's `Failed`
/// Event (kubelet's words, with containerd's error).
fn pull_failure(run: &regcred_testkit::PodRun) -> String {
    assert!(
        matches!(&run.outcome, PodOutcome::PullFailed(r) if r == "ErrImagePull" || r == "ImagePullBackOff"),
        "outcome {:?}; events:\n{}",
        run.outcome,
        run.event_text()
    );
    run.events
        .iter()
        .find(|(r, m)| r == "Failed" && m.starts_with("Failed to pull image"))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no pull failure Event; events:\n{}", run.event_text()))
}

#[tokio::test]
async fn pods_reach_the_api_server_through_the_kubernetes_service() {
    let bed = TestBed::with_node();
    let _dump = bed.dump_on_panic();
    let node = bed.node();
    let registry = bed.registry();
    let ns = bed.namespace("node-api").await;
    // The test's own pull Secret: this test is about the network, not regcred.
    let mut secret = regcred_testkit::dockerconfigjson_secret(
        &registry.host,
        &registry.username,
        &registry.password,
    );
    secret.metadata.name = Some("pull".into());
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut pod = idle_pod("probe", &node.image);
    let spec = pod.spec.as_mut().unwrap();
    spec.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
        name: "pull".into(),
    }]);
    // In-cluster clients read the API server's CA from the ServiceAccount volume.
    spec.automount_service_account_token = Some(true);
    spec.containers[0].args = Some(vec!["probe-api".into()]);
    let run = bed.run_pod(&ns.name, &pod, POD_TIMEOUT).await;
    assert_eq!(
        run.outcome,
        PodOutcome::Running,
        "events:\n{}",
        run.event_text()
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = ns.api();
    // The probe prints "api: GET URL: STATUS BODY" once; the body spans lines.
    let answer = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            let log = pods.logs("probe", &Default::default()).await.ok()?;
            log.find("api: ").map(|at| log[at..].to_owned())
        },
    )
    .await;
    assert!(
        answer.starts_with("api: GET https://10.96.0.1:443/version: 200 OK")
            && answer.contains(&format!("\"gitVersion\": \"{}\"", bed.info.k8s_version)),
        "the Pod reached the API server through the kubernetes Service: {answer}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn ecr_pod_pulls_through_the_front_before_and_after_rotation() {
    let bed = TestBed::with_node();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let node = bed.node();
    let aws = &bed.info.aws;
    bed.aws().set_token_lifetime(TOKEN_LIFETIME).await;

    let ns = bed.namespace("node-ecr").await;
    create_bed_aws_keys(bed, &ns).await;
    let credentials = apply_bed_ecr_credential(bed, &ns).await;
    wait_reason(&credentials, "ecr", "Synced").await;
    default_sa_lists(bed, &ns.name, "ecr-pull").await;
    let secrets = ns.api::<Secret>();
    let first = secrets.get("ecr-pull").await.unwrap();
    let first_password = password_in(&first, &aws.ecr_registry).expect("an ECR host entry");

    let run = bed
        .run_pod(&ns.name, &idle_pod("first", &node.ecr_image), POD_TIMEOUT)
        .await;
    assert_eq!(
        run.outcome,
        PodOutcome::Running,
        "events:\n{}",
        run.event_text()
    );
    assert_eq!(pull_secrets(&run), ["ecr-pull"]);
    // The front served the manifest to that token: the pull went through it, with it.
    let served = |requests: &[(String, u16, Option<String>)], token: &str| {
        requests.iter().any(|(path, status, sha)| {
            path.contains("/manifests/") && *status == 200 && sha.as_deref() == Some(token)
        })
    };
    let first_sha = sha256(&first_password);
    assert!(
        served(&bed.front_requests().await, &first_sha),
        "the registry front served the first token"
    );

    // Rotation: regcred writes a new token; then the first one expires.
    let started = Instant::now();
    let rotated = wait_for(
        Duration::from_secs(TOKEN_LIFETIME * 2),
        Duration::from_millis(200),
        || async {
            let s = secrets.get("ecr-pull").await.ok()?;
            let p = password_in(&s, &aws.ecr_registry)?;
            (p != first_password).then_some(p)
        },
    )
    .await;
    let expires_at: Timestamp = bed
        .aws()
        .tokens()
        .await
        .iter()
        .find(|t| t.sha256 == first_sha)
        .expect("the emulator issued the first token")
        .expires_at
        .parse()
        .expect("an RFC 3339 time");
    let wait = expires_at.duration_since(Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait).unwrap() + Duration::from_millis(500)).await;
    }
    // The first token is really dead: the front refuses it.
    let refused = bed
        .pull_check_mapped(&first, &aws.ecr_image, &[(&aws.ecr_registry, &aws.front)])
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("expired")),
        "the expired token must not pull: {refused:?}"
    );

    let run = bed
        .run_pod(&ns.name, &idle_pod("second", &node.ecr_image), POD_TIMEOUT)
        .await;
    assert_eq!(
        run.outcome,
        PodOutcome::Running,
        "events:\n{}",
        run.event_text()
    );
    let current = secrets.get("ecr-pull").await.unwrap();
    let current_sha = sha256(&password_in(&current, &aws.ecr_registry).unwrap());
    assert_ne!(current_sha, first_sha);
    let requests = bed.front_requests().await;
    assert!(
        served(&requests, &current_sha) || served(&requests, &sha256(&rotated)),
        "the registry front served a rotated token"
    );
    eprintln!(
        "ECR: first Pod Running; rotated and expired after {:?}; second Pod Running after {:?}",
        started.elapsed(),
        run.elapsed
    );
    ns.delete().await;
}
