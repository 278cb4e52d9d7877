//! A namespace owner's view of `RegistryCredential`, on the real test bed, with the
//! controller running under its own ServiceAccount and exactly the shipped RBAC.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{LocalObjectReference, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt};
use regcred_api::DeletionPolicy;
use regcred_e2e::{
    CONTROLLER_USER, apply, credential, entries, kubectl_output, password_in, pod_pull_secrets,
    ready, root, shared_controller, source_secret, synced, wait_reason,
};
use regcred_testkit::{TestBed, TestNamespace, wait_for, watch_until};
use serde_json::json;

const QUICK: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// A namespace with a labelled source holding the registry's real login.
async fn setup(prefix: &str) -> (&'static TestBed, TestNamespace, kube::Client) {
    let bed = TestBed::get();
    shared_controller(bed);
    let ns = bed.namespace(prefix).await;
    let client = bed.admin_client().await;
    let registry = bed.registry();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    (bed, ns, client)
}

async fn sa_lists(api: &Api<ServiceAccount>, name: &str, secret: &str) -> ServiceAccount {
    wait_for(QUICK, POLL, || async {
        let sa = api.get_opt(name).await.ok().flatten()?;
        entries(&sa).iter().any(|e| e == secret).then_some(sa)
    })
    .await
}

#[tokio::test]
async fn samples_applied_with_kubectl_become_ready_and_pull() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let registry = bed.registry();
    let (ok, samples) = kubectl_output(
        bed,
        &["kustomize", root().join("config/samples").to_str().unwrap()],
        None,
    );
    assert!(ok, "{samples}");
    let samples = samples
        .replace("127.0.0.1:5000", &registry.host)
        .replace(
            "username: demo\n",
            &format!("username: {}\n", registry.username),
        )
        .replace(
            "password: change-me\n",
            &format!("password: {}\n", registry.password),
        );
    let (ok, out) = kubectl_output(bed, &["apply", "-f", "-"], Some(&samples));
    assert!(ok, "kubectl apply of config/samples failed: {out}");

    let client = bed.admin_client().await;
    let credentials: Api<regcred_api::RegistryCredential> =
        Api::namespaced(client.clone(), "regcred-demo");
    wait_reason(&credentials, "demo-registry", "Synced").await;
    let (ok, table) = kubectl_output(
        bed,
        &["-n", "regcred-demo", "get", "registrycredentials"],
        None,
    );
    assert!(ok, "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("demo-registry"))
        .expect("a row");
    assert!(
        row.contains("True") && row.contains("Synced") && row.contains("1/1"),
        "{table}"
    );
    assert!(
        table.lines().next().unwrap().contains("REGISTRIES"),
        "{table}"
    );

    // kubelet's matching picks the written credential for the image, and it really pulls.
    let secret = Api::<Secret>::namespaced(client.clone(), "regcred-demo")
        .get("demo-registry")
        .await
        .unwrap();
    bed.pull_check(&secret, &registry.image)
        .await
        .expect("the written Secret pulls the image");
    let wrong_port = registry.image.replacen(&registry.host, "127.0.0.1:1", 1);
    assert!(
        bed.pull_check(&secret, &wrong_port).await.is_err(),
        "kubelet would not match another port"
    );

    // A Pod created afterwards receives the Secret through its ServiceAccount (admission).
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "regcred-demo");
    sa_lists(&accounts, "default", "demo-registry").await;
    let names = pod_pull_secrets(client, "regcred-demo", &registry.image).await;
    assert_eq!(names, ["demo-registry"]);
}

#[tokio::test]
async fn service_account_created_later_is_patched_at_once() {
    let (bed, ns, client) = setup("late-sa").await;
    let _dump = bed.dump_on_panic();
    synced(&ns, &bed.registry().host).await;

    let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns.name);
    let mut latencies = Vec::new();
    for i in 0..5 {
        let name = format!("late-{i}");
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        let start = Instant::now();
        accounts.create(&PostParams::default(), &sa).await.unwrap();
        watch_until(
            accounts.clone(),
            &name,
            QUICK,
            |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| entries(sa) == ["pull"]),
        )
        .await;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    println!("ServiceAccount created → imagePullSecrets patched (watch): {latencies:?}");
    assert!(
        latencies[4] < Duration::from_secs(2),
        "coverage must be watch-driven: {latencies:?}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn password_change_in_the_source_reaches_the_pull_secret() {
    let (bed, ns, client) = setup("rotate").await;
    let _dump = bed.dump_on_panic();
    let registry = bed.registry();
    synced(&ns, &registry.host).await;
    let secrets: Api<Secret> = Api::namespaced(client, &ns.name);
    let before = secrets.get("pull").await.unwrap();
    bed.pull_check(&before, &registry.image)
        .await
        .expect("pulls with the right password");

    let patch = json!({"stringData": {"password": "not-the-password"}});
    secrets
        .patch("login", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let changed = wait_for(QUICK, POLL, || async {
        let s = secrets.get("pull").await.ok()?;
        (password_in(&s, &registry.host).as_deref() == Some("not-the-password")).then_some(s)
    })
    .await;
    assert_eq!(
        changed.metadata.uid, before.metadata.uid,
        "updated in place, never recreated"
    );
    assert!(
        bed.pull_check(&changed, &registry.image).await.is_err(),
        "a wrong password must not pull"
    );

    let patch = json!({"stringData": {"password": registry.password}});
    secrets
        .patch("login", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let restored = wait_for(QUICK, POLL, || async {
        let s = secrets.get("pull").await.ok()?;
        (password_in(&s, &registry.host).as_deref() == Some(registry.password.as_str()))
            .then_some(s)
    })
    .await;
    bed.pull_check(&restored, &registry.image)
        .await
        .expect("pulls again");
    ns.delete().await;
}

#[tokio::test]
async fn unlabelled_or_missing_source_is_refused_with_its_reason() {
    let (bed, ns, client) = setup("optin").await;
    let _dump = bed.dump_on_panic();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .create(
            &PostParams::default(),
            &source_secret("private", "u", "p", false),
        )
        .await
        .unwrap();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    apply(
        &credentials,
        &credential("reg", &bed.registry().host, "private", Some("pull")),
    )
    .await;
    let c = wait_reason(&credentials, "reg", "SourceNotLabelled").await;
    let (status, _, message) = ready(&c).unwrap();
    assert_eq!(status, "False");
    assert!(
        message.contains(&format!("{}/private", ns.name))
            && message.contains("regcred.io/source=true"),
        "{message}"
    );
    assert!(
        secrets.get_opt("pull").await.unwrap().is_none(),
        "an unlabelled source is never copied"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    wait_for(QUICK, POLL, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("SourceNotLabelled")
                    && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;

    // Labelling it is the fix, and the watch on labelled sources picks it up.
    let patch = json!({"metadata": {"labels": {"regcred.io/source": "true"}}});
    secrets
        .patch("private", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_reason(&credentials, "reg", "Synced").await;

    apply(
        &credentials,
        &credential("missing", &bed.registry().host, "nope", Some("other")),
    )
    .await;
    let c = wait_reason(&credentials, "missing", "SourceNotFound").await;
    assert!(ready(&c).unwrap().2.contains("nope"));
    ns.delete().await;
}

#[tokio::test]
async fn managed_secret_deleted_or_edited_by_hand_is_restored() {
    let (bed, ns, client) = setup("restore").await;
    let _dump = bed.dump_on_panic();
    let registry = bed.registry();
    synced(&ns, &registry.host).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let original = secrets.get("pull").await.unwrap();

    let edit = json!({"data": {".dockerconfigjson": ByteString(b"{\"auths\":{}}".to_vec())}});
    secrets
        .patch("pull", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    wait_for(QUICK, POLL, || async {
        let s = secrets.get("pull").await.ok()?;
        (password_in(&s, &registry.host).as_deref() == Some(registry.password.as_str()))
            .then_some(())
    })
    .await;

    secrets
        .delete("pull", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = wait_for(QUICK, POLL, || async {
        let s = secrets.get_opt("pull").await.ok().flatten()?;
        (s.metadata.uid != original.metadata.uid).then_some(s)
    })
    .await;
    bed.pull_check(&recreated, &registry.image)
        .await
        .expect("the restored Secret pulls");
    // The ServiceAccount entry never went away meanwhile: no churn for a restored Secret.
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns.name);
    assert_eq!(entries(&accounts.get("default").await.unwrap()), ["pull"]);
    ns.delete().await;
}

#[tokio::test]
async fn unmanaged_same_named_secret_is_never_touched() {
    let (bed, ns, client) = setup("unmanaged").await;
    let _dump = bed.dump_on_panic();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let theirs = secrets
        .create(
            &PostParams::default(),
            &source_secret("pull", "someone", "else", false),
        )
        .await
        .unwrap();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    apply(
        &credentials,
        &credential("reg", &bed.registry().host, "login", Some("pull")),
    )
    .await;
    let c = wait_reason(&credentials, "reg", "Conflict").await;
    assert!(
        ready(&c).unwrap().2.contains("not created by regcred"),
        "{:?}",
        ready(&c)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = secrets.get("pull").await.unwrap();
    assert_eq!(
        after.metadata.resource_version,
        theirs.metadata.resource_version
    );
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns.name);
    assert!(
        entries(&accounts.get("default").await.unwrap()).is_empty(),
        "no entry points at a Secret regcred does not manage"
    );
    ns.delete().await;
}

#[tokio::test]
async fn existing_entries_survive_including_a_persons_same_named_one() {
    let (bed, ns, client) = setup("keep").await;
    let _dump = bed.dump_on_panic();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let theirs: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "theirs"},
        "imagePullSecrets": [{"name": "other"}, {"name": "pull"}]
    }))
    .unwrap();
    accounts
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let credentials = synced(&ns, &bed.registry().host).await;
    let sa = sa_lists(&accounts, "default", "pull").await;
    assert_eq!(entries(&sa), ["pull"]);
    let theirs = accounts.get("theirs").await.unwrap();
    assert_eq!(
        entries(&theirs),
        ["other", "pull"],
        "kept as is, no duplicate"
    );
    assert!(
        !theirs
            .annotations()
            .contains_key("regcred.io/image-pull-secrets"),
        "a person's entry is not recorded as regcred's"
    );

    credentials
        .delete("reg", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(QUICK, POLL, || async {
        let sa = accounts.get("default").await.ok()?;
        entries(&sa).is_empty().then_some(())
    })
    .await;
    assert_eq!(
        entries(&accounts.get("theirs").await.unwrap()),
        ["other", "pull"],
        "the person's entry outlives the credential"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_concurrent_writer_loses_no_update() {
    let (bed, ns, client) = setup("concurrent").await;
    let _dump = bed.dump_on_panic();
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    // Another writer appends entries with read-modify-write, as kubectl edit would, while
    // regcred adds and (after deletion) removes its own.
    let writer = {
        let accounts = accounts.clone();
        tokio::spawn(async move {
            for i in 0..30 {
                loop {
                    let mut sa = accounts.get("default").await.unwrap();
                    sa.image_pull_secrets
                        .get_or_insert_with(Vec::new)
                        .push(LocalObjectReference {
                            name: format!("x-{i}"),
                        });
                    match accounts
                        .replace("default", &PostParams::default(), &sa)
                        .await
                    {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    apply(
        &credentials,
        &credential("reg", &bed.registry().host, "login", Some("pull")),
    )
    .await;
    sa_lists(&accounts, "default", "pull").await;
    writer.await.unwrap();
    let sa = accounts.get("default").await.unwrap();
    let names = entries(&sa);
    for i in 0..30 {
        assert!(names.contains(&format!("x-{i}")), "lost x-{i}: {names:?}");
    }
    assert_eq!(
        names.iter().filter(|n| *n == "pull").count(),
        1,
        "{names:?}"
    );
    credentials
        .delete("reg", &DeleteParams::default())
        .await
        .unwrap();
    let after = wait_for(QUICK, POLL, || async {
        let sa = accounts.get("default").await.ok()?;
        (!entries(&sa).contains(&"pull".to_owned())).then_some(sa)
    })
    .await;
    assert_eq!(
        entries(&after).len(),
        30,
        "only regcred's entry was removed"
    );
    ns.delete().await;
}

#[tokio::test]
async fn deletion_policy_delete_removes_and_orphan_leaves() {
    let (bed, ns, client) = setup("deletion").await;
    let _dump = bed.dump_on_panic();
    let registry = bed.registry();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);

    apply(
        &credentials,
        &credential("gone", &registry.host, "login", Some("gone")),
    )
    .await;
    let mut orphan = credential("kept", &registry.host, "login", Some("kept"));
    orphan.spec.credential.deletion_policy = DeletionPolicy::Orphan;
    apply(&credentials, &orphan).await;
    wait_reason(&credentials, "gone", "Synced").await;
    wait_reason(&credentials, "kept", "Synced").await;
    let sa = wait_for(QUICK, POLL, || async {
        let sa = accounts.get("default").await.ok()?;
        (entries(&sa).len() == 2).then_some(sa)
    })
    .await;
    assert_eq!(entries(&sa), ["gone", "kept"]);
    assert!(
        secrets
            .get("kept")
            .await
            .unwrap()
            .metadata
            .owner_references
            .is_none(),
        "Orphan: no ownerReference"
    );
    let owned = secrets.get("gone").await.unwrap();
    assert_eq!(owned.owner_references().len(), 1);
    assert!(
        credentials
            .get("gone")
            .await
            .unwrap()
            .finalizers()
            .is_empty(),
        "no finalizer ever"
    );

    credentials
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    credentials
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    // Garbage collection, not regcred, removes the Secret; the collector learns of a new
    // CRD through discovery every 30 s, hence the longer wait on a fresh bed.
    let collected = conditions::is_deleted(owned.metadata.uid.as_deref().unwrap());
    watch_until(secrets.clone(), "gone", Duration::from_secs(90), collected).await;
    let sa = wait_for(QUICK, POLL, || async {
        let sa = accounts.get("default").await.ok()?;
        (entries(&sa) == ["kept"]
            && !sa
                .annotations()
                .contains_key("regcred.io/image-pull-secrets"))
        .then_some(sa)
    })
    .await;
    assert_eq!(entries(&sa), ["kept"], "Orphan leaves its entry");
    let kept = secrets.get("kept").await.unwrap();
    bed.pull_check(&kept, &registry.image)
        .await
        .expect("the orphaned Secret still works");
    ns.delete().await;
}

#[tokio::test]
async fn switching_to_orphan_releases_the_secret() {
    let (bed, ns, client) = setup("switch").await;
    let _dump = bed.dump_on_panic();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    let mut c = credential("reg", &bed.registry().host, "login", Some("pull"));
    apply(&credentials, &c).await;
    wait_reason(&credentials, "reg", "Synced").await;
    let secrets: Api<Secret> = Api::namespaced(client, &ns.name);
    assert_eq!(
        secrets.get("pull").await.unwrap().owner_references().len(),
        1
    );
    c.spec.credential.deletion_policy = DeletionPolicy::Orphan;
    apply(&credentials, &c).await;
    wait_for(QUICK, POLL, || async {
        let s = secrets.get("pull").await.ok()?;
        s.owner_references().is_empty().then_some(())
    })
    .await;
    credentials
        .delete("reg", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        secrets.get_opt("pull").await.unwrap().is_some(),
        "garbage collection leaves an orphaned Secret"
    );
    ns.delete().await;
}

#[tokio::test]
async fn a_credential_stays_inside_its_namespace() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    shared_controller(bed);
    let client = bed.admin_client().await;
    let mine = bed.namespace("tenant-a").await;
    let other = bed.namespace("tenant-b").await;
    // The other tenant has a labelled source named like the one this tenant references.
    let registry = bed.registry();
    Api::<Secret>::namespaced(client.clone(), &other.name)
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    let audit = bed.audit();
    let mark = audit.mark();
    let credentials = mine.api::<regcred_api::RegistryCredential>();
    apply(
        &credentials,
        &credential("reg", &registry.host, "login", Some("pull")),
    )
    .await;
    wait_reason(&credentials, "reg", "SourceNotFound").await;
    // Its Secret then appears in its own namespace only.
    Api::<Secret>::namespaced(client.clone(), &mine.name)
        .create(
            &PostParams::default(),
            &source_secret("login", &registry.username, &registry.password, true),
        )
        .await
        .unwrap();
    wait_reason(&credentials, "reg", "Synced").await;
    let writes_elsewhere = audit.count(&mark, |e| {
        e.user == CONTROLLER_USER
            && matches!(e.verb.as_str(), "create" | "update" | "patch" | "delete")
            && e.resource == "secrets"
            && e.namespace.as_deref() == Some(other.name.as_str())
    });
    assert_eq!(writes_elsewhere, 0);
    assert!(
        Api::<Secret>::namespaced(client, &other.name)
            .get_opt("pull")
            .await
            .unwrap()
            .is_none()
    );
    mine.delete().await;
    other.delete().await;
}

#[tokio::test]
async fn refresh_annotation_rewrites_and_is_acknowledged() {
    let (bed, ns, _client) = setup("refresh").await;
    let _dump = bed.dump_on_panic();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    apply(
        &credentials,
        &credential("reg", &bed.registry().host, "login", Some("pull")),
    )
    .await;
    let before = wait_reason(&credentials, "reg", "Synced").await;
    let patch = json!({"metadata": {"annotations": {"regcred.io/refresh": "now-1"}}});
    credentials
        .patch("reg", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let after = wait_for(QUICK, POLL, || async {
        let c = credentials.get("reg").await.ok()?;
        (c.status.as_ref()?.last_refresh_request.as_deref() == Some("now-1")).then_some(c)
    })
    .await;
    let time = |c: &regcred_api::RegistryCredential| {
        c.status.as_ref().and_then(|s| s.last_refresh_time.clone())
    };
    assert!(time(&after) >= time(&before));
    ns.delete().await;
}

#[tokio::test]
async fn no_password_in_the_controller_logs_at_trace_level() {
    let (bed, ns, client) = setup("secret-logs").await;
    let _dump = bed.dump_on_panic();
    let controller = shared_controller(bed);
    let registry = bed.registry();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let distinctive = "Zq8-unlikely-password-7Hk";
    secrets
        .create(
            &PostParams::default(),
            &source_secret("distinct", "robot", distinctive, true),
        )
        .await
        .unwrap();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    apply(
        &credentials,
        &credential("reg", &registry.host, "login", Some("pull")),
    )
    .await;
    apply(
        &credentials,
        &credential("other", "other.example.com", "distinct", Some("other")),
    )
    .await;
    wait_reason(&credentials, "reg", "Synced").await;
    wait_reason(&credentials, "other", "Synced").await;
    let pull = secrets.get("pull").await.unwrap();
    let config = String::from_utf8(pull.data.unwrap()[".dockerconfigjson"].0.clone()).unwrap();
    let logs = controller.logs();
    assert!(logs.len() > 1000, "the controller logs at trace level");
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forbidden = BTreeMap::from([
        ("password", registry.password.clone()),
        ("distinctive password", distinctive.to_owned()),
        (
            "auth field",
            b64(&format!("{}:{}", registry.username, registry.password)),
        ),
        (
            "auth field (distinct)",
            b64(&format!("robot:{distinctive}")),
        ),
        ("password in base64", b64(&registry.password)),
        ("dockerconfigjson", config.clone()),
        ("dockerconfigjson in base64", b64(&config)),
    ]);
    for (what, value) in forbidden {
        assert!(
            !logs.contains(&value),
            "the controller log contains the {what}"
        );
    }
    ns.delete().await;
}
