//! The bed's node: a real kubelet with containerd and runc, so a Pod really pulls with the
//! Secrets regcred wrote and really runs, or really fails to pull and says why.
//!
//! A node costs start-up time and needs root, so it is opt-in per test binary: call
//! [`TestBed::with_node`] (instead of [`TestBed::get`]) in every test of that binary.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde::Deserialize;
use serde_json::json;

use crate::TestBed;

/// `testbed.json`'s `node`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    /// The Node object's name (`127.0.0.1`).
    pub name: String,
    /// containerd's CRI socket, `unix://...`, for `crictl --runtime-endpoint`.
    pub cri_endpoint: String,
    pub crictl: std::path::PathBuf,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: String,
    /// The bridge's address: the API server is reachable there from Pods.
    pub gateway: String,
    pub pause_image: String,
    /// `REGISTRY/regcred/idle:1`: private (the registry refuses anonymous pulls), and its
    /// process stays up, so a Pod running it reaches `Running` only if it pulled.
    pub image: String,
    /// The same image under the ECR registry host, which containerd reaches at the AWS
    /// emulator's registry front; kubelet picks credentials by this name.
    pub ecr_image: String,
}

/// How a Pod run by [`TestBed::run_pod`] ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodOutcome {
    /// Phase `Running` with its container running.
    Running,
    /// The container waits with `ErrImagePull` or `ImagePullBackOff` (the reason).
    PullFailed(String),
    /// Anything else that stops it: another waiting reason, or phase `Failed`.
    Other(String),
}

/// A Pod run by [`TestBed::run_pod`]: its outcome, its last state and its Events.
#[derive(Debug, Clone)]
pub struct PodRun {
    pub outcome: PodOutcome,
    pub pod: Pod,
    /// `(reason, message)` of the Pod's Events, oldest first.
    pub events: Vec<(String, String)>,
    /// From creation to the outcome.
    pub elapsed: Duration,
}

impl PodRun {
    /// Every Event message, one per line, for assertions and failure messages.
    pub fn event_text(&self) -> String {
        self.events
            .iter()
            .map(|(reason, message)| format!("{reason}: {message}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A Pod `name` with one container `app` running `image`, pulled on every start
/// (`imagePullPolicy: Always`: a cached image must not stand in for a pull with the
/// Pod's own credentials), stopped within a second when deleted.
pub fn idle_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}],
            "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            // The bed has no cluster DNS; this spares an Event saying so.
            "dnsPolicy": "Default",
        }
    }))
    .expect("a Pod")
}

impl TestBed {
    /// The test bed with a node, started on first use in this process. Panics if this
    /// process already started a bed without one (every test of a binary that needs the
    /// node must call this rather than [`TestBed::get`]), or if the node cannot start
    /// (it needs root, runc and the CNI plugins; see `.ci/run`).
    pub fn with_node() -> &'static TestBed {
        let bed = Self::started(true);
        assert!(
            bed.info.node.is_some(),
            "this test binary started the bed without a node: call TestBed::with_node() in each of its tests"
        );
        bed
    }

    /// The node (panics if the bed has none).
    pub fn node(&self) -> &NodeInfo {
        self.info
            .node
            .as_ref()
            .expect("the bed has no node: start it with TestBed::with_node()")
    }

    /// Creates `pod` in `namespace` and waits (at most `timeout`) until it runs or its
    /// pull fails; returns which, with the Pod and its Events. Events are written a moment
    /// after the status: it waits (up to 10 s) for the one that explains the outcome
    /// (`Started`, or `Failed` for a pull).
    pub async fn run_pod(&self, namespace: &str, pod: &Pod, timeout: Duration) -> PodRun {
        let client = self.admin_client().await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let name = pod.metadata.name.clone().expect("the Pod has a name");
        let began = Instant::now();
        pods.create(&PostParams::default(), pod)
            .await
            .unwrap_or_else(|e| panic!("cannot create Pod {namespace}/{name}: {e}"));
        let (outcome, pod) = loop {
            let current = pods
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("cannot read Pod {namespace}/{name}: {e}"));
            if let Some(outcome) = outcome(&current) {
                break (outcome, current);
            }
            if began.elapsed() > timeout {
                let events = pod_events(&client, namespace, &name).await;
                panic!(
                    "Pod {namespace}/{name} neither ran nor failed to pull within {timeout:?}; status: {}\nevents:\n{}",
                    serde_json::to_string(&current.status).unwrap_or_default(),
                    events
                        .iter()
                        .map(|(r, m)| format!("{r}: {m}"))
                        .collect::<Vec<_>>()
                        .join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let elapsed = began.elapsed();
        let wanted = match outcome {
            PodOutcome::Running => "Started",
            _ => "Failed",
        };
        let mut events = pod_events(&client, namespace, &name).await;
        let waited = Instant::now();
        while !events.iter().any(|(r, _)| r == wanted) && waited.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
            events = pod_events(&client, namespace, &name).await;
        }
        PodRun {
            outcome,
            pod,
            events,
            elapsed,
        }
    }

    /// Every request the AWS emulator's registry front answered: `(path, status,
    /// tokenSha256)`.
    pub async fn front_requests(&self) -> Vec<(String, u16, Option<String>)> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Request {
            path: String,
            status: u16,
            token_sha256: Option<String>,
        }
        let url = format!("{}/registry", self.info.aws.control.trim_end_matches('/'));
        let value: serde_json::Value = reqwest::get(&url)
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let list = value.get("requests").cloned().unwrap_or(value);
        let requests: Vec<Request> =
            serde_json::from_value(list).expect("the front's request record");
        requests
            .into_iter()
            .map(|r| (r.path, r.status, r.token_sha256))
            .collect()
    }
}

/// The outcome the Pod's status shows, if it shows one yet.
fn outcome(pod: &Pod) -> Option<PodOutcome> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(PodOutcome::Other(format!(
            "phase Failed: {}",
            status.reason.clone().unwrap_or_default()
        )));
    }
    let container = status.container_statuses.as_ref()?.first()?;
    let state = container.state.as_ref()?;
    if state.running.is_some() && status.phase.as_deref() == Some("Running") {
        return Some(PodOutcome::Running);
    }
    let reason = state.waiting.as_ref()?.reason.clone()?;
    match reason.as_str() {
        "ErrImagePull" | "ImagePullBackOff" => Some(PodOutcome::PullFailed(reason)),
        "ContainerCreating" | "PodInitializing" => None,
        _ => Some(PodOutcome::Other(reason)),
    }
}

/// `(reason, message)` of the Events about Pod `name`, oldest first.
async fn pod_events(client: &kube::Client, namespace: &str, name: &str) -> Vec<(String, String)> {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={name}"
    ));
    let mut list = events
        .list(&params)
        .await
        .unwrap_or_else(|e| panic!("cannot list the Events of Pod {namespace}/{name}: {e}"))
        .items;
    list.sort_by_key(|e| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or_else(|| e.event_time.as_ref().map(|t| t.0))
    });
    list.into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}
