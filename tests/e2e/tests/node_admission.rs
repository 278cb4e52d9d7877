//! The Helm-like burst on the bed's real node (kubelet, containerd, runc): in a brand-new
//! namespace a ServiceAccount and 20 Pods using it, created with no waits, pulling the
//! bed's private image. With the admission webhook every Pod is admitted with the pull
//! Secret and reaches `Running`, ten times over; without it (the namespace does not call
//! the webhook) the share of Pods admitted without the Secret, which can never pull, is
//! reported.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use regcred_e2e::admission::{
    Mode, PULL_SECRET, Webhook, apiserver_webhook_latency, burst, delete_namespace, percentile,
    secret_arrivals,
};
use regcred_testkit::{TestBed, wait_for};

const ROUNDS: usize = 10;
const RACE_ROUNDS: usize = 3;
const PODS: usize = 20;
/// All 20 Pods of a burst pull and start within this (a cold pull takes well under a
/// second here; the margin is for a loaded machine).
const RUNNING_TIMEOUT: Duration = Duration::from_secs(180);

/// Pods of `namespace` in phase Running with their container running, and those stuck on
/// a pull (with the reason).
async fn states(pods: &Api<Pod>) -> (usize, Vec<String>) {
    let list = pods.list(&ListParams::default()).await.unwrap();
    let mut running = 0;
    let mut stuck = Vec::new();
    for pod in list.items {
        let status = pod.status.unwrap_or_default();
        let container = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .next();
        let state = container.and_then(|c| c.state);
        if status.phase.as_deref() == Some("Running")
            && state.as_ref().is_some_and(|s| s.running.is_some())
        {
            running += 1;
        } else if let Some(reason) = state
            .and_then(|s| s.waiting)
            .and_then(|w| w.reason)
            .filter(|r| r.contains("Pull") || r.contains("Image"))
        {
            stuck.push(format!(
                "{}: {reason}",
                pod.metadata.name.unwrap_or_default()
            ));
        }
    }
    (running, stuck)
}

/// Waits until no Pod of `namespace` is left (its deletion removes them), so the next
/// burst finds the node's Pod capacity free.
async fn gone(pods: &Api<Pod>) {
    wait_for(
        Duration::from_secs(120),
        Duration::from_millis(250),
        || async {
            pods.list(&ListParams::default())
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn helm_like_burst_on_a_real_node_every_pod_pulls_and_runs() {
    let bed = TestBed::with_node();
    let _dump = bed.dump_on_panic();
    let client = bed.admin_client().await;
    let image = bed.node().image.clone();
    let webhook = Webhook::start(
        bed,
        &format!("node{}", bed.run_id),
        Mode::ServiceAccounts,
        &[],
    )
    .await;
    let (arrivals, watch) = secret_arrivals(&client);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut to_running = Vec::new();
    let mut retried = 0;
    let mut dangling = Vec::new();
    for round in 0..ROUNDS {
        let ns = webhook
            .namespace(&client, &format!("nburst-{}-on-{round}", bed.run_id), true)
            .await;
        let b = burst(&client, &ns, PODS, &image).await;
        assert_eq!(b.account_list, [PULL_SECRET], "round {round}");
        assert_eq!(b.without_secret(), 0, "round {round}: {:?}", b.pod_lists);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let start = Instant::now();
        loop {
            let (running, stuck) = states(&pods).await;
            if running == PODS {
                break;
            }
            assert!(
                start.elapsed() < RUNNING_TIMEOUT,
                "round {round}: {running} of {PODS} Running after {RUNNING_TIMEOUT:?}; pulls failing: {stuck:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        to_running.push(b.started.elapsed());
        // Pods that pulled before the leader had written the Secret fail once and pull on
        // kubelet's retry: count them from their Events.
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        let failed: std::collections::BTreeSet<String> = events
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Failed"))
            .filter_map(|e| e.involved_object.name)
            .collect();
        retried += failed.len();
        let arrived = arrivals.lock().unwrap().get(&ns).copied().unwrap();
        dangling.push(arrived.saturating_duration_since(b.started));
        delete_namespace(&client, &ns).await;
        gone(&pods).await;
    }
    to_running.sort();
    dangling.sort();
    println!(
        "node, webhook on: {ROUNDS} bursts of {PODS} Pods, all Running; burst start → all {PODS} Running: p50 {:?}, max {:?}; {retried} Pods failed a pull first (before their Secret existed) and pulled on kubelet's retry",
        percentile(&to_running, 0.5),
        to_running.last().unwrap()
    );
    println!(
        "node: the Secret existed {:?} (p50) / {:?} (max) after the burst began",
        percentile(&dangling, 0.5),
        dangling.last().unwrap()
    );
    assert!(
        *dangling.last().unwrap() < Duration::from_secs(5),
        "a Pod named a Secret that did not exist for longer than 5 s: {dangling:?}"
    );

    // The race, on the node: the namespace does not call the webhook.
    let mut without = 0;
    let mut stuck_total = 0;
    for round in 0..RACE_ROUNDS {
        let ns = webhook
            .namespace(
                &client,
                &format!("nburst-{}-off-{round}", bed.run_id),
                false,
            )
            .await;
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(5),
            || async { arrivals.lock().unwrap().get(&ns).copied() },
        )
        .await;
        let b = burst(&client, &ns, PODS, &image).await;
        without += b.without_secret();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        // Give the node time to try: Pods admitted without the Secret cannot pull.
        tokio::time::sleep(Duration::from_secs(15)).await;
        let (_, stuck) = states(&pods).await;
        stuck_total += stuck.len();
        delete_namespace(&client, &ns).await;
        gone(&pods).await;
    }
    println!(
        "node, webhook off: {without} of {} Pods ({:.0}%) admitted without {PULL_SECRET}; {stuck_total} stuck on their pull 15 s later",
        RACE_ROUNDS * PODS,
        100.0 * without as f64 / (RACE_ROUNDS * PODS) as f64
    );
    let handler = webhook.handler_latencies();
    println!(
        "node: the controller's own review time n={}, p50 {:?}, p99 {:?}, max {:?}",
        handler.len(),
        percentile(&handler, 0.5),
        percentile(&handler, 0.99),
        handler.last().copied().unwrap_or_default()
    );
    println!("the controller's answers: {:?}", webhook.notes());
    let (count, p50, p99, _) = apiserver_webhook_latency(bed, &webhook.webhook_name);
    println!(
        "node: API server's webhook admission latency n={count}, p50 ≈ {:.2} ms, p99 ≈ {:.2} ms",
        p50 * 1e3,
        p99 * 1e3
    );
    watch.abort();
    webhook.cleanup().await;
}
