//! What a tenant can write must never steer the controller: tests run as a tenant, an
//! identity with rights on Secrets in its own namespace only, against a
//! `ClusterRegistryCredential` that also covers other tenants' namespaces.
//!
//! One test, one controller at a time: the scenario stops and restarts it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use regcred_api::{ClusterRegistryCredential, ClusterRegistryCredentialSpec, NamespaceTargets};
use regcred_e2e::{
    apply, cluster_ready, ecr_source, entries, password_in, start_controller_with_aws_identity,
};
use regcred_testkit::{TestBed, TestNamespace, wait_for};
use serde_json::json;

const QUICK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const SECRET: &str = "ecr-pull";

/// A ServiceAccount `tenant` in `ns` allowed everything on Secrets there and nothing else.
async fn tenant(bed: &TestBed, ns: &TestNamespace) -> Client {
    let client = bed.admin_client().await;
    let post = PostParams::default();
    ns.api::<ServiceAccount>()
        .create(
            &post,
            &serde_json::from_value(json!({"metadata": {"name": "tenant"}})).unwrap(),
        )
        .await
        .unwrap();
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), &ns.name);
    roles
        .create(
            &post,
            &serde_json::from_value(json!({
                "metadata": {"name": "tenant"},
                "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client, &ns.name);
    bindings
        .create(
            &post,
            &serde_json::from_value(json!({
                "metadata": {"name": "tenant"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tenant"},
                "subjects": [{"kind": "ServiceAccount", "name": "tenant", "namespace": ns.name}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    bed.service_account_client(&ns.name, "tenant").await
}

fn docker_config(host: &str, password: &str) -> ByteString {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("AWS:{password}"));
    ByteString(
        serde_json::to_vec(&json!({"auths": {host: {
            "username": "AWS", "password": password, "auth": auth
        }}}))
        .unwrap(),
    )
}

async fn secret(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

#[tokio::test]
async fn no_tenant_write_reaches_another_namespace_or_the_schedule() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let admin = bed.admin_client().await;
    let aws = &bed.info.aws;
    let label = format!("trust-{}", bed.run_id);
    let a = bed.namespace("tenant-a").await;
    let b = bed.namespace("tenant-b").await;
    let c = bed.namespace("tenant-c").await;
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin.clone());
    for ns in [&a, &b, &c] {
        namespaces
            .patch(
                &ns.name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {&label: "yes"}}})),
            )
            .await
            .unwrap();
    }
    let tenant_a = tenant(bed, &a).await;
    let tenant_c = tenant(bed, &c).await;
    // The tenant really has no rights elsewhere.
    let denied = Api::<Secret>::namespaced(tenant_a.clone(), &b.name)
        .list(&ListParams::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );

    // Finding 2: before the credential exists, tenant C makes an Opaque Secret with the
    // target name that claims to be regcred's, naming the credential as its owner.
    let name = format!("trust-{}", bed.run_id);
    let owner = format!("ClusterRegistryCredential/{name}");
    let look_alike = Api::<Secret>::namespaced(tenant_c.clone(), &c.name)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": SECRET,
                    "labels": {"regcred.io/managed": "true"},
                    "annotations": {"regcred.io/owner": owner}},
                "type": "Opaque",
                "data": {"x": "eA=="}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    let mut controller = start_controller_with_aws_identity(bed);
    let credentials: Api<ClusterRegistryCredential> = Api::all(admin.clone());
    let mut spec = regcred_e2e::credential("x", "unused", "unused", Some(SECRET))
        .spec
        .credential;
    spec.registries = vec![regcred_api::Registry {
        server: None,
        static_source: None,
        ecr: Some(ecr_source(bed, &[&aws.account_id], None)),
    }];
    let credential = ClusterRegistryCredential::new(
        &name,
        ClusterRegistryCredentialSpec {
            credential: spec,
            namespaces: Some(NamespaceTargets {
                names: None,
                selector: Some(regcred_api::Selector {
                    match_labels: BTreeMap::from([(label.clone(), "yes".to_owned())]),
                    match_expressions: vec![],
                }),
                exclude: vec![],
            }),
        },
    );
    apply(&credentials, &credential).await;
    let ready = wait_for(QUICK, POLL, || async {
        let c = credentials.get(&name).await.ok()?;
        let t = c.status.as_ref()?.targets.clone()?;
        (t.synced == "2/3").then_some(c)
    })
    .await;
    let (status, reason, message) = cluster_ready(&ready).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "PartiallySynced")
    );
    assert!(message.contains("not created by regcred"), "{message}");
    let untouched = secret(&admin, &c.name, SECRET).await.unwrap();
    assert_eq!(
        untouched.resource_version(),
        look_alike.resource_version(),
        "the look-alike is left untouched"
    );
    let default_c = Api::<ServiceAccount>::namespaced(admin.clone(), &c.name)
        .get("default")
        .await
        .unwrap();
    assert!(
        !entries(&default_c).contains(&SECRET.to_owned()),
        "no ServiceAccount points at a Secret kubelet would ignore"
    );
    let expires = ready.status.as_ref().unwrap().expires_at.clone().unwrap();
    let real_b = secret(&admin, &b.name, SECRET).await.unwrap();
    let real_password = password_in(&real_b, &aws.ecr_registry).unwrap();

    // Finding 1: while the controller is down, tenant A edits its copy and forges more
    // "managed" Secrets with the owner and inputs annotations it can read from its copy,
    // some with absurd times.
    controller.stop();
    let mine = Api::<Secret>::namespaced(tenant_a.clone(), &a.name);
    let copy = mine.get(SECRET).await.unwrap();
    let inputs = copy.annotations()["regcred.io/inputs"].clone();
    let far = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(11)).to_string();
    let now = jiff::Timestamp::now().to_string();
    mine.patch(
        SECRET,
        &PatchParams::default(),
        &Patch::Merge(json!({
            "metadata": {"annotations": {"regcred.io/issued-at": now, "regcred.io/expires-at": far}},
            "data": {".dockerconfigjson": docker_config(&aws.ecr_registry, "tenant-forged")}
        })),
    )
    .await
    .unwrap();
    let forged_versions = [
        ("forged-far", now.as_str(), far.as_str()),
        (
            "forged-extreme",
            "-009999-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ),
        ("forged-garbage", "yesterday", "99999999999999999999"),
    ];
    let mut forged = Vec::new();
    for (forged_name, issued, expires_at) in forged_versions {
        let mut s = copy.clone();
        s.metadata = kube::api::ObjectMeta {
            name: Some(forged_name.into()),
            labels: copy.metadata.labels.clone(),
            annotations: Some(BTreeMap::from([
                ("regcred.io/owner".to_owned(), owner.clone()),
                ("regcred.io/inputs".to_owned(), inputs.clone()),
                ("regcred.io/issued-at".to_owned(), issued.to_owned()),
                ("regcred.io/expires-at".to_owned(), expires_at.to_owned()),
            ])),
            ..Default::default()
        };
        s.data = Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            docker_config(&aws.ecr_registry, "tenant-forged"),
        )]));
        forged.push(mine.create(&PostParams::default(), &s).await.unwrap());
    }

    let calls_before = bed.aws().calls().await.len();
    let restarted = Instant::now();
    let mut controller = start_controller_with_aws_identity(bed);
    // A's copy is restored from the token regcred minted: the tenant's edit is undone.
    let restored = wait_for(QUICK, POLL, || async {
        let s = secret(&admin, &a.name, SECRET).await?;
        (password_in(&s, &aws.ecr_registry).as_deref() != Some("tenant-forged")).then_some(s)
    })
    .await;
    println!(
        "tenant A's copy restored {:?} after the restart",
        restarted.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let issued: Vec<String> = bed
        .aws()
        .tokens()
        .await
        .into_iter()
        .map(|t| t.sha256)
        .collect();
    let sha = |p: &str| {
        use sha2::Digest;
        hex_digest(&sha2::Sha256::digest(p.as_bytes()))
    };
    for (ns, s) in [
        (&a.name, restored),
        (&b.name, secret(&admin, &b.name, SECRET).await.unwrap()),
    ] {
        let password = password_in(&s, &aws.ecr_registry).unwrap();
        // assert!, not assert_ne!: a failure must not print a token.
        assert!(
            password != "tenant-forged",
            "{ns} holds the tenant's password"
        );
        assert!(
            issued.contains(&sha(&password)),
            "{ns} holds a token the emulator issued"
        );
        assert_ne!(
            s.annotations()["regcred.io/expires-at"],
            far,
            "{ns}: the forged expiry did not spread"
        );
    }
    assert!(
        password_in(
            &secret(&admin, &b.name, SECRET).await.unwrap(),
            &aws.ecr_registry
        )
        .unwrap()
            == real_password,
        "B keeps the token regcred minted: the intact copies were trusted, the edited one not"
    );
    assert_eq!(
        bed.aws().calls().await.len(),
        calls_before,
        "the intact copies were enough to resume: no AWS call"
    );
    let status = credentials.get(&name).await.unwrap().status.unwrap();
    assert_eq!(
        status.expires_at,
        Some(expires),
        "the schedule follows regcred's token, not the forged expiry"
    );
    // The forged Secrets are neither deleted nor written: they are not regcred's.
    for f in &forged {
        let now = secret(&admin, &a.name, &f.name_any()).await;
        assert_eq!(
            now.map(|s| s.resource_version()),
            Some(f.resource_version()),
            "{} is left alone",
            f.name_any()
        );
    }
    assert_eq!(
        secret(&admin, &c.name, SECRET)
            .await
            .unwrap()
            .resource_version(),
        look_alike.resource_version()
    );
    assert!(
        controller.try_status().is_none(),
        "the controller survived the forged annotations:\n{}",
        controller.logs()
    );
    credentials
        .delete(&name, &Default::default())
        .await
        .unwrap();
}

fn hex_digest(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
