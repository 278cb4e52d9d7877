//! The admission webhook on the real bed (docs/admission.md): the kube-apiserver calls the
//! controller over TLS on loopback (`url:` client config), with the CA bundle the
//! controller made and published itself.
//!
//! - The Helm-like burst: a brand-new namespace, a ServiceAccount and 20 Pods using it with
//!   no waits, 10 times: every Pod carries the pull Secret. The same burst with the webhook
//!   not called shows the race it closes (reported, not asserted).
//! - The Secret of a brand-new namespace: admission points at the name the leader is about
//!   to write; how long a Pod may name a Secret that does not exist yet is measured and
//!   bounded.
//! - Webhook down: ServiceAccounts are still created (failurePolicy Ignore), and the watch
//!   repairs them once the controller is back.
//! - Certificates rotated (serving certificate and CA, forced by the hidden timing flags)
//!   while ServiceAccounts are created: no admission goes without the patch.
//! - Pod mode: Pods that list no Secret of their own get it; the others are left alone,
//!   and so are ServiceAccounts.
//! - Latency: the API server's own histogram, and the controller's own timing, reported.
//!
//! The tests run one at a time (each has a controller of its own, leader election off).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use regcred_e2e::admission::{
    Mode, PULL_SECRET, Webhook, apiserver_webhook_latency, burst, burst_pod, delete_namespace,
    percentile, secret_arrivals,
};
use regcred_e2e::entries;
use regcred_testkit::{TestBed, wait_for};
use serde_json::json;

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ROUNDS: usize = 10;
const PODS: usize = 20;
/// How long a Pod may name a Secret the leader has not written yet. The controller covers
/// a new namespace within a fraction of a second (tests/e2e/tests/cluster.rs); this bound
/// is what docs/admission.md promises, with room for a loaded machine.
const MAX_DANGLING: Duration = Duration::from_secs(5);

#[tokio::test]
async fn helm_like_burst_every_pod_carries_the_secret() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    let webhook = Webhook::start(
        bed,
        &format!("burst{}", bed.run_id),
        Mode::ServiceAccounts,
        &[],
    )
    .await;
    let (arrivals, watch) = secret_arrivals(&client);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let image = bed.registry().image.clone();

    let mut with = Vec::new();
    let mut dangling = Vec::new();
    for round in 0..ROUNDS {
        let ns = webhook
            .namespace(&client, &format!("burst-{}-on-{round}", bed.run_id), true)
            .await;
        let b = burst(&client, &ns, PODS, &image).await;
        assert_eq!(
            b.account_list,
            [PULL_SECRET],
            "round {round}: the ServiceAccount is born with the Secret"
        );
        assert_eq!(
            b.without_secret(),
            0,
            "round {round}: every Pod carries the Secret: {:?}",
            b.pod_lists
        );
        // The Secret the Pods name: when did it exist? (Pods admitted before it name a
        // Secret the leader is about to write.)
        let arrived = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async { arrivals.lock().unwrap().get(&ns).copied() },
        )
        .await;
        let window = arrived.saturating_duration_since(b.started);
        dangling.push(window);
        with.push(b);
    }
    dangling.sort();
    println!(
        "webhook on: {} of {} Pods carry {PULL_SECRET} ({ROUNDS} bursts of {PODS})",
        with.iter()
            .map(|b| PODS - b.without_secret())
            .sum::<usize>(),
        ROUNDS * PODS
    );
    println!(
        "brand-new namespace: the Secret existed {:?} (p50) / {:?} (max) after the burst began; \
         Pods admitted meanwhile named it before it existed for at most that long",
        percentile(&dangling, 0.5),
        dangling.last().unwrap()
    );
    assert!(
        *dangling.last().unwrap() < MAX_DANGLING,
        "a Pod named a Secret that did not exist for longer than {MAX_DANGLING:?}: {dangling:?}"
    );

    // The same bursts with the webhook not called (the namespace lacks its label): the race.
    let mut without = 0;
    let mut accounts_without = 0;
    for round in 0..ROUNDS {
        let ns = webhook
            .namespace(&client, &format!("burst-{}-off-{round}", bed.run_id), false)
            .await;
        // A covered namespace whose Secret is already written, as in a cluster where the
        // credential has covered it for a while: only the ServiceAccount patch races.
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async { arrivals.lock().unwrap().get(&ns).copied() },
        )
        .await;
        let b = burst(&client, &ns, PODS, &image).await;
        without += b.without_secret();
        accounts_without += usize::from(b.account_list.is_empty());
    }
    println!(
        "webhook off: {without} of {} Pods ({:.0}%) admitted without {PULL_SECRET}; \
         {accounts_without} of {ROUNDS} ServiceAccounts created without it",
        ROUNDS * PODS,
        100.0 * without as f64 / (ROUNDS * PODS) as f64
    );

    // A steadier latency sample: 200 ServiceAccounts, one after another, in a covered
    // namespace whose Secret is in place.
    let sample = webhook
        .namespace(&client, &format!("burst-{}-sample", bed.run_id), true)
        .await;
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(5),
        || async { arrivals.lock().unwrap().get(&sample).copied() },
    )
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &sample);
    let mut round_trips = Vec::new();
    for i in 0..200 {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": format!("sa-{i:03}")}})).unwrap();
        let sent = Instant::now();
        let created = accounts.create(&PostParams::default(), &sa).await.unwrap();
        round_trips.push(sent.elapsed());
        assert_eq!(entries(&created), [PULL_SECRET]);
    }
    round_trips.sort();
    println!(
        "ServiceAccount create round trip (client side, webhook included): p50 {:?}, p99 {:?}",
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99)
    );
    delete_namespace(&client, &sample).await;
    let handler = webhook.handler_latencies();
    println!(
        "controller's own review time: n={}, p50 {:?}, p99 {:?}, max {:?}",
        handler.len(),
        percentile(&handler, 0.5),
        percentile(&handler, 0.99),
        handler.last().copied().unwrap_or_default()
    );
    println!("the controller's answers: {:?}", webhook.notes());
    let (count, p50, p99, buckets) = apiserver_webhook_latency(bed, &webhook.webhook_name);
    println!(
        "API server's apiserver_admission_webhook_admission_duration_seconds for {}: n={count}, \
         p50 ≈ {:.2} ms, p99 ≈ {:.2} ms (interpolated in buckets {buckets:?})",
        webhook.webhook_name,
        p50 * 1e3,
        p99 * 1e3
    );
    assert!(count > 0, "the API server called the webhook");
    watch.abort();
    for round in 0..ROUNDS {
        delete_namespace(&client, &format!("burst-{}-on-{round}", bed.run_id)).await;
        delete_namespace(&client, &format!("burst-{}-off-{round}", bed.run_id)).await;
    }
    webhook.cleanup().await;
}

#[tokio::test]
async fn webhook_down_creates_still_succeed_and_the_watch_repairs() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    let mut webhook = Webhook::start(
        bed,
        &format!("down{}", bed.run_id),
        Mode::ServiceAccounts,
        &[],
    )
    .await;
    let ns = webhook
        .namespace(&client, &format!("down-{}", bed.run_id), true)
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { secrets.get_opt(PULL_SECRET).await.ok().flatten() },
    )
    .await;

    let status = webhook.controller.as_mut().unwrap().stop();
    assert!(status.success(), "{status}");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "while-down"}})).unwrap();
    let started = Instant::now();
    let created = accounts
        .create(&PostParams::default(), &sa)
        .await
        .expect("failurePolicy Ignore: the create succeeds with the webhook down");
    println!(
        "webhook down: ServiceAccount created in {:?}, list {:?}",
        started.elapsed(),
        entries(&created)
    );
    assert!(entries(&created).is_empty(), "nobody could have added it");

    webhook.start_controller();
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async {
            let sa = accounts.get("while-down").await.ok()?;
            entries(&sa).contains(&PULL_SECRET.to_owned()).then_some(())
        },
    )
    .await;
    println!("webhook back: the watch repaired the ServiceAccount");
    // And admission works again once the controller is ready.
    webhook.wait_published().await;
    let again = wait_for(
        Duration::from_secs(30),
        Duration::from_millis(100),
        || async {
            let name = format!("after-{}", Instant::now().elapsed().as_nanos() % 1_000_000);
            let sa: ServiceAccount =
                serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
            let created = accounts.create(&PostParams::default(), &sa).await.ok()?;
            entries(&created)
                .contains(&PULL_SECRET.to_owned())
                .then_some(created)
        },
    )
    .await;
    assert_eq!(entries(&again), [PULL_SECRET]);
    delete_namespace(&client, &ns).await;
    webhook.cleanup().await;
}

#[tokio::test]
async fn certificate_rotation_while_accounts_are_created_fails_no_admission() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    // A CA that lives 60 s (a new one staged 30 s before its end, signing 3 s after every
    // configuration carries it) and serving certificates renewed every ~6 s.
    let timing = [
        "--webhook-ca-validity=60s",
        "--webhook-ca-rotate-before=30s",
        "--webhook-ca-overlap=3s",
        "--webhook-cert-validity=12s",
        "--webhook-cert-rotate-before=6s",
        "--webhook-check-interval=1s",
    ];
    let webhook = Webhook::start(
        bed,
        &format!("rot{}", bed.run_id),
        Mode::ServiceAccounts,
        &timing,
    )
    .await;
    let ns = webhook
        .namespace(&client, &format!("rotation-{}", bed.run_id), true)
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { secrets.get_opt(PULL_SECRET).await.ok().flatten() },
    )
    .await;
    let tls: Api<Secret> = Api::namespaced(client.clone(), "regcred-system");
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let state = |s: &Secret| -> (String, String) {
        let raw = &s.data.as_ref().unwrap()["regcred-state.json"].0;
        let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
        (
            v["ca"]["name"].as_str().unwrap().to_owned(),
            v["leaf"]["cert"].as_str().unwrap().to_owned(),
        )
    };
    let mut cas = std::collections::BTreeSet::new();
    let mut leaves = std::collections::BTreeSet::new();
    let mut missing = Vec::new();
    let start = Instant::now();
    let mut created = 0;
    while start.elapsed() < Duration::from_secs(75) {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": format!("sa-{created:04}")}}))
                .unwrap();
        let sa = accounts.create(&PostParams::default(), &sa).await.unwrap();
        if !entries(&sa).contains(&PULL_SECRET.to_owned()) {
            missing.push((start.elapsed(), sa.metadata.name.clone().unwrap()));
        }
        created += 1;
        if let Ok(s) = tls.get(&webhook.tls_secret).await {
            let (ca, leaf) = state(&s);
            cas.insert(ca);
            leaves.insert(leaf);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "rotation: {created} ServiceAccounts created over 75 s while {} CAs and {} serving certificates took turns; {} without the patch",
        cas.len(),
        leaves.len(),
        missing.len()
    );
    let logs = webhook.controller.as_ref().unwrap().logs();
    assert!(cas.len() >= 2, "the CA rotated at least once: {cas:?}");
    assert!(
        leaves.len() >= 5,
        "the serving certificate rotated repeatedly"
    );
    assert!(
        !logs.contains("webhook TLS handshake failed"),
        "a handshake failed during rotation"
    );
    assert!(
        missing.is_empty(),
        "admissions without the patch: {missing:?}"
    );
    delete_namespace(&client, &ns).await;
    webhook.cleanup().await;
}

#[tokio::test]
async fn pod_mode_mutates_pods_that_name_no_secret_of_their_own() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    let webhook = Webhook::start(bed, &format!("pods{}", bed.run_id), Mode::Pods, &[]).await;
    let image = bed.registry().image.clone();
    let mut without = 0;
    let mut accounts_touched = 0;
    for round in 0..3 {
        let ns = webhook
            .namespace(&client, &format!("podmode-{}-{round}", bed.run_id), true)
            .await;
        let b = burst(&client, &ns, PODS, &image).await;
        without += b.without_secret();
        accounts_touched += usize::from(!b.account_list.is_empty());
        // A Pod with a Secret of its own is left as it is.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let mut own = burst_pod("own", &image);
        own.spec.as_mut().unwrap().image_pull_secrets =
            Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
                name: "theirs".into(),
            }]);
        let own = pods.create(&PostParams::default(), &own).await.unwrap();
        let names: Vec<String> = own
            .spec
            .unwrap()
            .image_pull_secrets
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["theirs"], "a Pod's own list is left alone");
        // Nor does the watch path touch the ServiceAccount (it would within ~0.2 s).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let app = accounts.get("app").await.unwrap();
        assert!(
            entries(&app).is_empty(),
            "Pod mode leaves ServiceAccounts alone"
        );
        assert!(
            app.metadata
                .annotations
                .is_none_or(|a| !a.contains_key("regcred.io/image-pull-secrets"))
        );
        delete_namespace(&client, &ns).await;
    }
    println!(
        "Pod mode: {without} of {} Pods without {PULL_SECRET}",
        3 * PODS
    );
    assert_eq!(without, 0, "every Pod carries the Secret");
    assert_eq!(
        accounts_touched, 0,
        "ServiceAccounts are not mutated at admission in Pod mode"
    );
    webhook.cleanup().await;
}

/// GitOps tools apply server-side (Flux always, Argo CD with `ServerSideApply=true`).
/// What a mutating webhook adds is owned by no field manager, so re-applying the same
/// manifest (which does not list the Secret) keeps it: no flap between the tool and
/// regcred. Checked, with the owners reported.
#[tokio::test]
async fn server_side_apply_by_a_gitops_tool_and_the_webhook() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    let webhook = Webhook::start(
        bed,
        &format!("ssa{}", bed.run_id),
        Mode::ServiceAccounts,
        &[],
    )
    .await;
    let ns = webhook
        .namespace(&client, &format!("ssa-{}", bed.run_id), true)
        .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || async { secrets.get_opt(PULL_SECRET).await.ok().flatten() },
    )
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let manifest = json!({
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "app", "labels": {"app": "gitops"}},
    });
    let apply = kube::api::PatchParams::apply("gitops-tool");
    let first = accounts
        .patch("app", &apply, &kube::api::Patch::Apply(&manifest))
        .await
        .unwrap();
    let owners = |sa: &ServiceAccount| -> Vec<String> {
        sa.metadata
            .managed_fields
            .iter()
            .flatten()
            .filter(|m| {
                m.fields_v1
                    .as_ref()
                    .is_some_and(|f| f.0.get("f:imagePullSecrets").is_some())
            })
            .filter_map(|m| m.manager.clone())
            .collect()
    };
    println!(
        "created by server-side apply: list {:?}, imagePullSecrets owned by {:?}",
        entries(&first),
        owners(&first)
    );
    assert_eq!(entries(&first), [PULL_SECRET], "admission added it");
    let second = accounts
        .patch("app", &apply, &kube::api::Patch::Apply(&manifest))
        .await
        .unwrap();
    println!(
        "the same manifest applied again at once: list {:?}",
        entries(&second)
    );
    assert_eq!(
        entries(&second),
        [PULL_SECRET],
        "a re-apply keeps what admission added"
    );
    let restored = wait_for(
        Duration::from_secs(20),
        Duration::from_millis(20),
        || async {
            let sa = accounts.get("app").await.ok()?;
            entries(&sa).contains(&PULL_SECRET.to_owned()).then_some(sa)
        },
    )
    .await;
    println!(
        "after the watch path: list {:?}, owned by {:?}",
        entries(&restored),
        owners(&restored)
    );
    let third = accounts
        .patch("app", &apply, &kube::api::Patch::Apply(&manifest))
        .await
        .unwrap();
    println!("applied once more: list {:?}", entries(&third));
    assert_eq!(
        entries(&third),
        [PULL_SECRET],
        "once regcred owns it, re-applies keep it"
    );
    delete_namespace(&client, &ns).await;
    webhook.cleanup().await;
}

/// Readiness waits for the webhook's certificate, and `--webhook-certs external` (the
/// chart's cert-manager mode) serves a Secret someone else writes: until it exists the
/// controller is alive but not ready, and it writes neither the Secret nor a caBundle.
#[tokio::test]
async fn readiness_waits_for_an_external_certificate() {
    let _one = ONE_AT_A_TIME.lock().await;
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    // A certificate to hand over: the one a self-managing controller made.
    let mut source = Webhook::start(
        bed,
        &format!("ext{}", bed.run_id),
        Mode::ServiceAccounts,
        &[],
    )
    .await;
    source.controller.as_mut().unwrap().stop();
    let tls: Api<Secret> = Api::namespaced(client.clone(), "regcred-system");
    let made = tls.get(&source.tls_secret).await.unwrap();

    let external = format!("regcred-webhook-tls-external-{}", bed.run_id);
    let probe = regcred_e2e::admission::free_port();
    let port = regcred_e2e::admission::free_port();
    let (webhook_addr, probe_addr) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{probe}"));
    let mut controller = regcred_testkit::ControllerProcess::start(
        bed,
        regcred_e2e::controller_kubeconfig(bed),
        &[
            "--admission=service-accounts",
            "--webhook-addr",
            &webhook_addr,
            "--webhook-certs=external",
            "--webhook-secret",
            &external,
            "--webhook-configuration=",
            "--probe-addr",
            &probe_addr,
            "--leader-elect=false",
        ],
    );
    let get = |path: &'static str| async move {
        let r = reqwest::get(format!("http://127.0.0.1:{probe}{path}"))
            .await
            .ok()?;
        Some(r.status().as_u16())
    };
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (get("/healthz").await == Some(200)).then_some(()) },
    )
    .await;
    // Caches list within a second; without its certificate it stays unready.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert_eq!(
            get("/readyz").await,
            Some(503),
            "ready without a certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        tls.get_opt(&external).await.unwrap().is_none(),
        "external: the controller writes no Secret"
    );
    let handed: Secret = serde_json::from_value(json!({
        "metadata": {"name": external},
        "type": "kubernetes.io/tls",
        "data": {
            "tls.crt": made.data.as_ref().unwrap()["tls.crt"],
            "tls.key": made.data.as_ref().unwrap()["tls.key"],
        },
    }))
    .unwrap();
    tls.create(&PostParams::default(), &handed).await.unwrap();
    let served = Instant::now();
    wait_for(
        Duration::from_secs(90),
        Duration::from_millis(50),
        || async { (get("/readyz").await == Some(200)).then_some(()) },
    )
    .await;
    println!(
        "external certificate: ready {:?} after its Secret was created",
        served.elapsed()
    );
    assert!(
        controller
            .logs()
            .contains("serving the webhook certificate")
    );
    controller.stop();
    let _ = tls.delete(&external, &Default::default()).await;
    source.cleanup().await;
}
