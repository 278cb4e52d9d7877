//! ECR through the strict AWS emulator: static keys, per-tenant web identity with a real
//! TokenRequest, the controller's own identity (cluster kind only), several accounts from
//! one call, and tokens that really pull through a registry that refuses unknown ones.

use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use regcred_api::{ClusterRegistryCredential, EcrAuth, RegistryCredential, ServiceAccountRef};
use regcred_e2e::{
    apply, aws_keys_secret, cluster_credential, cluster_ready, ecr_credential, ecr_source,
    keys_auth, ready, wait_reason,
};
use regcred_testkit::{ControllerProcess, TestBed, wait_for};
use serde_json::json;

const QUICK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// The controller, with its own AWS identity, logging at trace level including the AWS
/// SDK's own crates (so the log check below means something).
fn controller(bed: &'static TestBed) -> &'static ControllerProcess {
    static CONTROLLER: OnceLock<ControllerProcess> = OnceLock::new();
    CONTROLLER.get_or_init(|| {
        let aws = &bed.info.aws;
        ControllerProcess::start_with_env(
            bed,
            regcred_e2e::controller_kubeconfig(bed),
            &[],
            &[
                ("AWS_ACCESS_KEY_ID", aws.access_key_id.as_str()),
                ("AWS_SECRET_ACCESS_KEY", aws.secret_access_key.as_str()),
                (
                    "RUST_LOG",
                    "trace,h2=info,hyper=info,hyper_util=info,rustls=info,tower=info",
                ),
            ],
        )
    })
}

/// A distinct static identity per test, so calls can be counted per identity.
async fn identity(bed: &TestBed, name: &str) -> (String, String) {
    let key = format!(
        "AKIA{:0>12}",
        name.to_uppercase()
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(12)
            .collect::<String>()
    );
    let secret = format!("{name}-secret-key-0123456789abcdefghijklmnop");
    let arn = format!("arn:aws:iam::{}:user/{name}", bed.info.aws.account_id);
    bed.aws().add_identity(&key, &secret, &arn).await;
    (key, secret)
}

/// A namespace holding the labelled Secret `aws` with a fresh identity's access keys;
/// returns the keys (the emulator's calls are counted by the ID).
async fn namespace_with_keys(
    bed: &'static TestBed,
    namespace: &str,
    identity_name: &str,
) -> (regcred_testkit::TestNamespace, String, String) {
    let ns = bed.namespace(namespace).await;
    let (key, secret) = identity(bed, identity_name).await;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &aws_keys_secret("aws", &key, &secret),
        )
        .await
        .unwrap();
    (ns, key, secret)
}

async fn token_calls(bed: &TestBed, access_key_id: &str) -> usize {
    let calls = bed.aws().calls().await;
    calls
        .iter()
        .filter(|c| {
            c.operation == "GetAuthorizationToken"
                && c.access_key_id.as_deref() == Some(access_key_id)
        })
        .count()
}

#[tokio::test]
async fn access_keys_mint_one_token_for_several_accounts_that_really_pulls() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let (ns, key, secret) = namespace_with_keys(bed, "ecr-keys", "keys").await;
    let aws = &bed.info.aws;
    let other_account = "210987654321";
    let credentials = ns.api::<RegistryCredential>();
    let ecr = ecr_source(
        bed,
        &[&aws.account_id, other_account],
        Some(keys_auth("aws")),
    );
    apply(&credentials, &ecr_credential("ecr", ecr, "ecr-pull")).await;
    let c = wait_reason(&credentials, "ecr", "Synced").await;
    let status = c.status.unwrap();
    assert!(
        status.expires_at.is_some() && status.next_refresh_time.is_some(),
        "{status:?}"
    );
    assert!(status.next_refresh_time < status.expires_at);

    let pull = ns.api::<Secret>().get("ecr-pull").await.unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&pull.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
    let hosts: Vec<&String> = config["auths"].as_object().unwrap().keys().collect();
    assert_eq!(
        hosts,
        [
            &aws.ecr_registry,
            &format!("{other_account}.dkr.ecr.{}.amazonaws.com", aws.region),
        ]
    );
    assert_eq!(config["auths"][&aws.ecr_registry]["username"], "AWS");
    assert_eq!(
        token_calls(bed, &key).await,
        1,
        "one GetAuthorizationToken for both accounts"
    );
    bed.pull_check_mapped(&pull, &aws.ecr_image, &[(&aws.ecr_registry, &aws.front)])
        .await
        .expect("the minted token pulls through the registry front");
    // Neither the token nor the keys appear in the trace-level log (AWS SDK included).
    let token = config["auths"][&aws.ecr_registry]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    let logs = controller(bed).logs();
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for (what, value) in [
        ("ECR token", token.clone()),
        ("ECR token in base64", b64(&format!("AWS:{token}"))),
        ("secret access key", secret.clone()),
        (
            "the controller's secret access key",
            aws.secret_access_key.clone(),
        ),
        ("access key ID", key.clone()),
        ("the controller's access key ID", aws.access_key_id.clone()),
    ] {
        assert!(
            !logs.contains(&value),
            "the controller log contains the {what}"
        );
    }
    assert!(logs.contains("TRACE"), "the controller logs at trace level");
    assert!(
        !logs
            .lines()
            .any(|l| (l.contains("TRACE") || l.contains("DEBUG")) && l.contains(" aws_")),
        "the AWS SDK's events below INFO (bodies, signing inputs, identities) are dropped"
    );
    // Rotating the access keys reaches the next mint at once (the keys Secret is watched).
    let (key2, secret2) = identity(bed, "keys2").await;
    let rotated = aws_keys_secret("aws", &key2, &secret2);
    ns.api::<Secret>()
        .replace("aws", &PostParams::default(), &{
            let mut s = rotated;
            s.metadata.resource_version = ns
                .api::<Secret>()
                .get("aws")
                .await
                .unwrap()
                .metadata
                .resource_version;
            s
        })
        .await
        .unwrap();
    wait_for(QUICK, POLL, || async {
        (token_calls(bed, &key2).await == 1).then_some(())
    })
    .await;
    let garbage = regcred_testkit::dockerconfigjson_secret(&aws.ecr_registry, "AWS", "not-a-token");
    assert!(
        bed.pull_check_mapped(&garbage, &aws.ecr_image, &[(&aws.ecr_registry, &aws.front)])
            .await
            .is_err()
    );
    ns.delete().await;
}

#[tokio::test]
async fn web_identity_uses_a_real_service_account_token_and_a_bad_one_is_refused() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let ns = bed.namespace("ecr-irsa").await;
    let aws = &bed.info.aws;
    let role = format!("arn:aws:iam::{}:role/ecr-pull-{}", aws.account_id, ns.name);
    let accounts = ns.api::<ServiceAccount>();
    let sa = serde_json::from_value(json!({
        "metadata": {"name": "ecr-puller", "annotations": {"eks.amazonaws.com/role-arn": role}}
    }))
    .unwrap();
    accounts.create(&PostParams::default(), &sa).await.unwrap();
    let subject = format!("system:serviceaccount:{}:ecr-puller", ns.name);
    bed.aws().trust(&role, &[&subject]).await;

    let auth = |audience: &str| EcrAuth {
        secret_ref: None,
        service_account_ref: Some(ServiceAccountRef {
            name: "ecr-puller".into(),
            namespace: None,
            audience: audience.into(),
        }),
        role_arn: None,
    };
    let credentials = ns.api::<RegistryCredential>();
    apply(
        &credentials,
        &ecr_credential(
            "irsa",
            ecr_source(bed, &[&aws.account_id], Some(auth(&aws.audience))),
            "irsa-pull",
        ),
    )
    .await;
    wait_reason(&credentials, "irsa", "Synced").await;
    let pull = ns.api::<Secret>().get("irsa-pull").await.unwrap();
    bed.pull_check_mapped(&pull, &aws.ecr_image, &[(&aws.ecr_registry, &aws.front)])
        .await
        .expect("pulls");
    let calls = bed.aws().calls().await;
    let exchange = calls.iter().find(|c| {
        c.operation == "AssumeRoleWithWebIdentity"
            && c.identity.as_deref().is_some_and(|i| i.contains(&ns.name))
    });
    assert!(
        exchange.is_some(),
        "the token was exchanged for the role: {calls:?}"
    );

    // A token for the wrong audience is refused by STS, and the condition says so.
    apply(
        &credentials,
        &ecr_credential(
            "bad",
            ecr_source(bed, &[&aws.account_id], Some(auth("sts.example.com"))),
            "bad-pull",
        ),
    )
    .await;
    let c = wait_reason(&credentials, "bad", "AwsInvalidIdentity").await;
    assert!(
        ready(&c).unwrap().2.contains("InvalidIdentityToken"),
        "{:?}",
        ready(&c)
    );
    assert!(
        ns.api::<Secret>()
            .get_opt("bad-pull")
            .await
            .unwrap()
            .is_none()
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_tenant_cannot_borrow_the_controllers_identity_but_the_cluster_kind_can() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let aws = &bed.info.aws;
    let calls_before = token_calls(bed, &aws.access_key_id).await;
    let ns = bed.namespace("ecr-tenant").await;
    let credentials = ns.api::<RegistryCredential>();
    apply(
        &credentials,
        &ecr_credential("mine", ecr_source(bed, &[&aws.account_id], None), "mine"),
    )
    .await;
    let c = wait_reason(&credentials, "mine", "AwsIdentityNotAllowed").await;
    assert!(
        ready(&c)
            .unwrap()
            .2
            .contains("--allow-controller-aws-identity")
    );
    assert_eq!(
        token_calls(bed, &aws.access_key_id).await,
        calls_before,
        "no AWS call on a tenant's behalf"
    );

    // The platform team's cluster credential uses the controller's own chain.
    let client = bed.admin_client().await;
    let targets = [
        bed.namespace("ecr-fleet").await,
        bed.namespace("ecr-fleet").await,
    ];
    let label = ("regcred-test/ecr-fleet", bed.run_id.as_str());
    for t in &targets {
        let patch = json!({"metadata": {"labels": {label.0: label.1}}});
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .patch(
                &t.name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap();
    }
    let mut fleet = cluster_credential("ecr-fleet", "unused", "unused", "fleet-ecr", label);
    fleet.spec.credential.registries = vec![regcred_api::Registry {
        server: None,
        static_source: None,
        ecr: Some(ecr_source(bed, &[&aws.account_id], None)),
    }];
    let cluster: Api<ClusterRegistryCredential> = Api::all(client.clone());
    apply(&cluster, &fleet).await;
    wait_for(QUICK, POLL, || async {
        let c = cluster.get("ecr-fleet").await.ok()?;
        (cluster_ready(&c)?.1 == "Synced" && c.status?.targets?.synced == "2/2").then_some(())
    })
    .await;
    assert_eq!(
        token_calls(bed, &aws.access_key_id).await,
        calls_before + 1,
        "one call for two namespaces"
    );
    for t in &targets {
        let pull = Api::<Secret>::namespaced(client.clone(), &t.name)
            .get("fleet-ecr")
            .await
            .unwrap();
        bed.pull_check_mapped(&pull, &aws.ecr_image, &[(&aws.ecr_registry, &aws.front)])
            .await
            .expect("pulls");
    }
    ns.delete().await;
}

/// A TokenRequest the API server refuses (here: a policy denies it with 403) becomes a
/// condition and an Event, not a silent retry.
#[tokio::test]
async fn a_refused_token_request_is_a_condition_and_an_event() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let ns = bed.namespace("ecr-denied").await;
    let aws = &bed.info.aws;
    let policy = format!("deny-token-{}", ns.name);
    let manifest = format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {{name: {policy}}}
spec:
  failurePolicy: Fail
  matchConstraints:
    resourceRules:
      - {{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [serviceaccounts/token]}}
  validations:
    - {{expression: "false", message: "token requests are denied here by the test", reason: Forbidden}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {{name: {policy}}}
spec:
  policyName: {policy}
  validationActions: [Deny]
  matchResources:
    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}
"#,
        ns = ns.name
    );
    let (ok, out) = regcred_e2e::kubectl_output(bed, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{out}");
    let role = format!("arn:aws:iam::{}:role/ecr-pull-{}", aws.account_id, ns.name);
    let sa = serde_json::from_value(json!({
        "metadata": {"name": "ecr-puller", "annotations": {"eks.amazonaws.com/role-arn": role}}
    }))
    .unwrap();
    ns.api::<ServiceAccount>()
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    // The policy takes a moment to be in force: until the admin's own request is refused.
    wait_for(QUICK, POLL, || async {
        let (ok, out) = regcred_e2e::kubectl_output(
            bed,
            &["-n", &ns.name, "create", "token", "ecr-puller"],
            None,
        );
        (!ok && out.contains("denied here by the test")).then_some(())
    })
    .await;
    let auth = EcrAuth {
        secret_ref: None,
        service_account_ref: Some(ServiceAccountRef {
            name: "ecr-puller".into(),
            namespace: None,
            audience: aws.audience.clone(),
        }),
        role_arn: None,
    };
    let credentials = ns.api::<RegistryCredential>();
    apply(
        &credentials,
        &ecr_credential(
            "denied",
            ecr_source(bed, &[&aws.account_id], Some(auth)),
            "denied-pull",
        ),
    )
    .await;
    let c = wait_reason(&credentials, "denied", "TokenRequestFailed").await;
    let message = ready(&c).unwrap().2;
    assert!(message.contains("403"), "{message}");
    assert!(message.contains("ecr-puller"), "{message}");
    let events: Api<k8s_openapi::api::events::v1::Event> = ns.api();
    wait_for(QUICK, POLL, || async {
        let list = events.list(&Default::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("TokenRequestFailed"))
    })
    .await;
    let _ = regcred_e2e::kubectl_output(
        bed,
        &[
            "delete",
            "validatingadmissionpolicybinding,validatingadmissionpolicy",
            &policy,
        ],
        None,
    );
    ns.delete().await;
}

/// A tenant may not point the controller at any https host it likes: ECR endpoints of a
/// RegistryCredential must be AWS's unless the operator allows more.
#[tokio::test]
async fn a_tenant_s_ecr_endpoint_must_be_an_aws_host() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let ns = bed.namespace("ecr-endpoint").await;
    let aws = &bed.info.aws;
    let (key, secret) = identity(bed, "endpoint").await;
    ns.api::<Secret>()
        .create(
            &PostParams::default(),
            &aws_keys_secret("aws", &key, &secret),
        )
        .await
        .unwrap();
    let mut source = ecr_source(bed, &[&aws.account_id], Some(keys_auth("aws")));
    source.endpoint = Some("https://collector.example.com".into());
    let credentials = ns.api::<RegistryCredential>();
    apply(
        &credentials,
        &ecr_credential("elsewhere", source, "elsewhere"),
    )
    .await;
    let c = wait_reason(&credentials, "elsewhere", "AwsEndpointNotAllowed").await;
    assert!(ready(&c).unwrap().2.contains("--allow-ecr-endpoint"));
    ns.delete().await;
}

#[tokio::test]
async fn one_refresh_request_mints_one_token() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    controller(bed);
    let (ns, key, _) = namespace_with_keys(bed, "ecr-refresh", "refresh").await;
    let aws = &bed.info.aws;
    let credentials = ns.api::<RegistryCredential>();
    let ecr = ecr_source(bed, &[&aws.account_id], Some(keys_auth("aws")));
    apply(&credentials, &ecr_credential("ecr", ecr, "ecr-pull")).await;
    wait_reason(&credentials, "ecr", "Synced").await;
    assert_eq!(token_calls(bed, &key).await, 1);
    for (request, calls) in [("first", 2), ("second", 3)] {
        credentials
            .patch(
                "ecr",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    serde_json::json!({"metadata": {"annotations": {"regcred.io/refresh": request}}}),
                ),
            )
            .await
            .unwrap();
        wait_for(
            Duration::from_secs(20),
            Duration::from_millis(100),
            || async {
                let c = credentials.get("ecr").await.ok()?;
                (c.status?.last_refresh_request.as_deref() == Some(request)).then_some(())
            },
        )
        .await;
        // The reconciles regcred's own Secret and status writes trigger come and go.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(
            token_calls(bed, &key).await,
            calls,
            "refresh request {request:?}: one GetAuthorizationToken"
        );
    }
}
