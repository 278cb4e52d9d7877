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

/// Changes a label of the credential `times` times, 700 ms apart: each change is a
/// reconcile with nothing new to do.
async fn nudge(credentials: &Api<regcred_api::RegistryCredential>, name: &str, times: usize) {
    for i in 0..times {
        let patch = json!({"metadata": {"labels": {"nudge": i.to_string()}}});
        credentials
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
}

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
    // Once it is deleted, a refresh request makes regcred try the name at once (a tenant's
    // names open no watch; without the request it retries within 5 minutes).
    secrets
        .delete("pull", &DeleteParams::default())
        .await
        .unwrap();
    credentials
        .patch(
            "reg",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"regcred.io/refresh": "1"}}})),
        )
        .await
        .unwrap();
    wait_reason(&credentials, "reg", "Synced").await;
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
    // In the order their Secrets landed: the two credentials reconcile concurrently.
    let mut listed = entries(&sa);
    listed.sort();
    assert_eq!(listed, ["gone", "kept"]);
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

/// Renaming the Secret makes before it breaks: every version of the ServiceAccount lists
/// the old name or the new one, so a Pod admitted at any moment can pull; the old Secret
/// goes only once nothing lists it.
#[tokio::test]
async fn secret_name_change_never_leaves_a_service_account_without_an_entry() {
    use futures::StreamExt;
    use kube::runtime::watcher;
    let (bed, ns, client) = setup("rename").await;
    let _dump = bed.dump_on_panic();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    let host = bed.registry().host.clone();
    apply(
        &credentials,
        &credential("reg", &host, "login", Some("pull-a")),
    )
    .await;
    wait_reason(&credentials, "reg", "Synced").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    watch_until(
        accounts.clone(),
        "default",
        QUICK,
        |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| entries(sa) == ["pull-a"]),
    )
    .await;
    // Record every version the API server hands out from now on.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Vec<String>>::new()));
    let recorder = {
        let seen = seen.clone();
        let stream = watcher(
            accounts.clone(),
            watcher::Config::default().fields("metadata.name=default"),
        );
        let (listed, listed_rx) = tokio::sync::oneshot::channel();
        let mut listed = Some(listed);
        let task = tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(sa) | watcher::Event::InitApply(sa)) => {
                        seen.lock().unwrap().push(entries(&sa));
                    }
                    Ok(watcher::Event::InitDone) => {
                        if let Some(listed) = listed.take() {
                            let _ = listed.send(());
                        }
                    }
                    _ => {}
                }
            }
        });
        listed_rx.await.expect("the recorder listed");
        task
    };
    apply(
        &credentials,
        &credential("reg", &host, "login", Some("pull-b")),
    )
    .await;
    watch_until(
        accounts.clone(),
        "default",
        QUICK,
        |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| entries(sa) == ["pull-b"]),
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client, &ns.name);
    wait_for(QUICK, POLL, || async {
        secrets
            .get_opt("pull-a")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    recorder.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() >= 2, "the watch saw the change: {seen:?}");
    for version in &seen {
        assert!(
            version.iter().any(|e| e == "pull-a" || e == "pull-b"),
            "a version listed neither name: {seen:?}"
        );
    }
    assert!(secrets.get_opt("pull-b").await.unwrap().is_some());
    ns.delete().await;
}

/// A Secret someone else made look like regcred's (label, owner annotation, even naming
/// a credential that does not exist) is not taken over: not patched, not listed in any
/// ServiceAccount, not counted; reported as a conflict.
#[tokio::test]
async fn a_look_alike_managed_secret_is_never_taken_over() {
    let (bed, ns, client) = setup("look-alike").await;
    let _dump = bed.dump_on_panic();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let mut theirs = source_secret("pull", "someone", "else", false);
    theirs.metadata.labels = Some(BTreeMap::from([(
        "regcred.io/managed".to_owned(),
        "true".to_owned(),
    )]));
    theirs.metadata.annotations = Some(BTreeMap::from([(
        "regcred.io/owner".to_owned(),
        format!("RegistryCredential/{}/reg", ns.name),
    )]));
    let theirs = secrets
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let mut stray = source_secret("stray", "someone", "else", false);
    stray.metadata.labels = theirs.metadata.labels.clone();
    stray.metadata.annotations = Some(BTreeMap::from([(
        "regcred.io/owner".to_owned(),
        format!("RegistryCredential/{}/reg", ns.name),
    )]));
    let stray = secrets
        .create(&PostParams::default(), &stray)
        .await
        .unwrap();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    let audit = bed.audit();
    let mark = audit.mark();
    apply(
        &credentials,
        &credential("reg", &bed.registry().host, "login", Some("pull")),
    )
    .await;
    let c = wait_reason(&credentials, "reg", "Conflict").await;
    assert!(ready(&c).unwrap().2.contains("not created by regcred"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (before, name) in [(&theirs, "pull"), (&stray, "stray")] {
        let after = secrets.get(name).await.unwrap();
        assert_eq!(
            after.resource_version(),
            before.resource_version(),
            "{name}"
        );
    }
    let accounts: Api<ServiceAccount> = Api::namespaced(client, &ns.name);
    assert!(entries(&accounts.get("default").await.unwrap()).is_empty());
    let secret_writes = audit
        .events_since(&mark)
        .into_iter()
        .filter(|e| {
            e.user == CONTROLLER_USER
                && e.resource == "secrets"
                && e.namespace.as_deref() == Some(ns.name.as_str())
                && e.verb != "get"
        })
        .count();
    assert_eq!(
        secret_writes, 0,
        "known from the cache: not even a refused create"
    );
    ns.delete().await;
}

/// Someone else's ownerReference on regcred's Secret (a GitOps tool adopting it, say) is
/// kept and is no reason to write: before, every reconcile patched the Secret again.
#[tokio::test]
async fn a_foreign_owner_reference_causes_no_write() {
    let (bed, ns, client) = setup("foreign-owner").await;
    let _dump = bed.dump_on_panic();
    let credentials = synced(&ns, &bed.registry().host).await;
    let holder: k8s_openapi::api::core::v1::ConfigMap = ns
        .api()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "holder"}})).unwrap(),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(client, &ns.name);
    let mut owners = secrets
        .get("pull")
        .await
        .unwrap()
        .owner_references()
        .to_vec();
    owners.push(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            name: "holder".into(),
            uid: holder.uid().unwrap(),
            ..Default::default()
        },
    );
    let audit = bed.audit();
    let mark = audit.mark();
    secrets
        .patch(
            "pull",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"ownerReferences": owners}})),
        )
        .await
        .unwrap();
    // Something else makes the credential reconcile a few times meanwhile.
    nudge(&credentials, "reg", 3).await;
    let writes = audit.count(&mark, |e| {
        e.user == CONTROLLER_USER
            && e.resource == "secrets"
            && e.namespace.as_deref() == Some(ns.name.as_str())
            && matches!(e.verb.as_str(), "patch" | "update" | "create")
    });
    assert_eq!(
        writes, 0,
        "someone else's ownerReference is not fought over"
    );
    assert_eq!(
        secrets.get("pull").await.unwrap().owner_references().len(),
        2
    );
    ns.delete().await;
}

/// With `deletionPolicy: Orphan`, entries stay when the credential goes, also while
/// someone else's finalizer holds its deletion (before, they were removed then).
#[tokio::test]
async fn orphan_entries_stay_while_another_finalizer_holds_the_deletion() {
    let (bed, ns, client) = setup("orphan-held").await;
    let _dump = bed.dump_on_panic();
    let credentials = ns.api::<regcred_api::RegistryCredential>();
    let mut c = credential("reg", &bed.registry().host, "login", Some("pull"));
    c.spec.credential.deletion_policy = DeletionPolicy::Orphan;
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    apply(&credentials, &c).await;
    wait_reason(&credentials, "reg", "Synced").await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    watch_until(
        accounts.clone(),
        "default",
        QUICK,
        |sa: Option<&ServiceAccount>| sa.is_some_and(|sa| entries(sa) == ["pull"]),
    )
    .await;
    credentials
        .delete("reg", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        entries(&accounts.get("default").await.unwrap()),
        ["pull"],
        "the entry stays while the deletion is held"
    );
    credentials
        .patch(
            "reg",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(entries(&accounts.get("default").await.unwrap()), ["pull"]);
    let secrets: Api<Secret> = Api::namespaced(client, &ns.name);
    assert!(secrets.get_opt("pull").await.unwrap().is_some());
    ns.delete().await;
}

/// An unlabelled source is looked up (metadata only) once, not on every reconcile.
#[tokio::test]
async fn an_unlabelled_source_is_not_looked_up_on_every_reconcile() {
    let (bed, ns, client) = setup("lookups").await;
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
    let audit = bed.audit();
    let mark = audit.mark();
    apply(
        &credentials,
        &credential("reg", &bed.registry().host, "private", Some("pull")),
    )
    .await;
    wait_reason(&credentials, "reg", "SourceNotLabelled").await;
    nudge(&credentials, "reg", 4).await;
    let lookups = audit.count(&mark, |e| {
        e.user == CONTROLLER_USER
            && e.verb == "get"
            && e.resource == "secrets"
            && e.name.as_deref() == Some("private")
    });
    assert_eq!(lookups, 1, "one metadata GET, remembered");
    ns.delete().await;
}
