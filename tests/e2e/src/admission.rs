//! The admission webhook on the bed: a controller serving it on a loopback port, a
//! MutatingWebhookConfiguration of the test's own (a `url:` client config, a namespace
//! selector that only the test's namespaces match), and the burst that Helm and GitOps
//! make: a ServiceAccount and its Pods created in the same second.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use regcred_api::ClusterRegistryCredential;
use regcred_testkit::{ControllerProcess, TestBed, wait_for};
use serde_json::json;

use crate::{
    VERBOSE_LOG, apply, cluster_credential, controller_kubeconfig, install, kubectl_output,
    source_namespace,
};

/// The Secret every admission test's credential writes.
pub const PULL_SECRET: &str = "adm-pull";
/// Label a namespace needs to be covered by the test's credential.
pub const FLEET_LABEL: &str = "regcred-e2e/fleet";
/// Label a namespace needs to call the test's webhook.
pub const ADMISSION_LABEL: &str = "regcred-e2e/admission";

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What the webhook of one test mutates.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    ServiceAccounts,
    Pods,
}

impl Mode {
    fn flag(self) -> &'static str {
        match self {
            Mode::ServiceAccounts => "service-accounts",
            Mode::Pods => "pods",
        }
    }
    fn resource(self) -> &'static str {
        match self {
            Mode::ServiceAccounts => "serviceaccounts",
            Mode::Pods => "pods",
        }
    }
}

/// One test's webhook: its configuration, credential and controller.
pub struct Webhook {
    pub bed: &'static TestBed,
    pub id: String,
    pub mode: Mode,
    pub port: u16,
    /// The MutatingWebhookConfiguration, and the name of its one webhook.
    pub configuration: String,
    pub webhook_name: String,
    pub tls_secret: String,
    pub controller: Option<ControllerProcess>,
    extra_args: Vec<String>,
}

impl Webhook {
    /// Sets up the webhook configuration (no caBundle: the controller publishes it), RBAC
    /// for the controller to keep that configuration's caBundle (the shipped role names
    /// only `regcred`), a ClusterRegistryCredential covering namespaces labelled
    /// `FLEET_LABEL=id`, and starts the controller with `extra_args`.
    pub async fn start(
        bed: &'static TestBed,
        id: &str,
        mode: Mode,
        extra_args: &[&str],
    ) -> Webhook {
        install(bed);
        let client = bed.admin_client().await;
        let port = free_port();
        let configuration = format!("regcred-e2e-{id}");
        let webhook_name = format!("{id}.{}.regcred.io", mode.resource());
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": configuration},
            "rules": [{
                "apiGroups": ["admissionregistration.k8s.io"],
                "resources": ["mutatingwebhookconfigurations"],
                "resourceNames": [configuration],
                "verbs": ["get", "list", "watch", "patch"],
            }],
        }))
        .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": configuration},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": configuration},
            "subjects": [{"kind": "ServiceAccount", "name": "regcred", "namespace": "regcred-system"}],
        }))
        .unwrap();
        apply(&Api::<ClusterRole>::all(client.clone()), &role).await;
        apply(&Api::<ClusterRoleBinding>::all(client.clone()), &binding).await;
        let mwc: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "metadata": {"name": configuration},
            "webhooks": [{
                "name": webhook_name,
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate/{}", mode.resource())},
                "rules": [{
                    "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                    "resources": [mode.resource()], "scope": "Namespaced",
                }],
                "failurePolicy": "Ignore",
                "matchPolicy": "Equivalent",
                "sideEffects": "None",
                "timeoutSeconds": 3,
                "reinvocationPolicy": "IfNeeded",
                "namespaceSelector": {"matchLabels": {ADMISSION_LABEL: id}},
            }],
        }))
        .unwrap();
        apply(
            &Api::<MutatingWebhookConfiguration>::all(client.clone()),
            &mwc,
        )
        .await;
        let ops = source_namespace(bed).await;
        apply(
            &Api::<ClusterRegistryCredential>::all(client.clone()),
            &cluster_credential(
                &format!("adm-{id}"),
                &bed.registry().host,
                &ops,
                PULL_SECRET,
                (FLEET_LABEL, id),
            ),
        )
        .await;
        let mut webhook = Webhook {
            bed,
            id: id.to_owned(),
            mode,
            port,
            configuration,
            webhook_name,
            tls_secret: format!("regcred-webhook-tls-{id}"),
            controller: None,
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
        };
        webhook.start_controller();
        webhook.wait_published().await;
        // Admission points at a Secret the leader is about to write only for a credential
        // whose status says its content is at hand: wait for its first status.
        let credentials = Api::<ClusterRegistryCredential>::all(client.clone());
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                let c = credentials.get(&format!("adm-{id}")).await.ok()?;
                crate::cluster_ready(&c).map(|_| ())
            },
        )
        .await;
        webhook
    }

    /// Starts (or restarts) the controller with the test's flags.
    pub fn start_controller(&mut self) {
        let addr = format!("127.0.0.1:{}", self.port);
        let mut args: Vec<String> = vec![
            "--admission".into(),
            self.mode.flag().into(),
            "--webhook-addr".into(),
            addr,
            "--webhook-host".into(),
            "127.0.0.1".into(),
            "--webhook-configuration".into(),
            self.configuration.clone(),
            "--webhook-secret".into(),
            self.tls_secret.clone(),
            // One controller per test, tests one at a time: no lease to wait for.
            "--leader-elect=false".into(),
        ];
        args.extend(self.extra_args.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.controller = Some(ControllerProcess::start_with_env(
            self.bed,
            controller_kubeconfig(self.bed),
            &args,
            &[("RUST_LOG", VERBOSE_LOG)],
        ));
    }

    /// Waits until the configuration carries a CA bundle and the webhook answers over TLS.
    pub async fn wait_published(&self) {
        let client = self.bed.admin_client().await;
        let api: Api<MutatingWebhookConfiguration> = Api::all(client);
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async {
                let c = api.get(&self.configuration).await.ok()?;
                c.webhooks?[0]
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .filter(|b| !b.0.is_empty())?;
                let up = std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok();
                up.then_some(())
            },
        )
        .await;
    }

    /// A fresh namespace covered by the credential; `admission`: also calls the webhook.
    /// Created and returned at once (nothing waits for its `default` ServiceAccount).
    pub async fn namespace(&self, client: &Client, name: &str, admission: bool) -> String {
        let mut labels = BTreeMap::from([
            (FLEET_LABEL.to_owned(), self.id.clone()),
            ("regcred-test/run".to_owned(), self.bed.run_id.clone()),
        ]);
        if admission {
            labels.insert(ADMISSION_LABEL.to_owned(), self.id.clone());
        }
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
        name.to_owned()
    }

    /// Removes what [`Webhook::start`] made (the controller stops when dropped).
    pub async fn cleanup(mut self) {
        if let Some(mut c) = self.controller.take() {
            c.stop();
        }
        let client = self.bed.admin_client().await;
        let dp = DeleteParams::default();
        let _ = Api::<MutatingWebhookConfiguration>::all(client.clone())
            .delete(&self.configuration, &dp)
            .await;
        let _ = Api::<ClusterRegistryCredential>::all(client.clone())
            .delete(&format!("adm-{}", self.id), &dp)
            .await;
        let _ = Api::<ClusterRoleBinding>::all(client.clone())
            .delete(&self.configuration, &dp)
            .await;
        let _ = Api::<ClusterRole>::all(client)
            .delete(&self.configuration, &dp)
            .await;
    }

    /// How often the controller answered each way (the `note` of its debug log).
    pub fn notes(&self) -> BTreeMap<String, usize> {
        let logs = self
            .controller
            .as_ref()
            .map(|c| c.logs())
            .unwrap_or_default();
        let mut out = BTreeMap::new();
        for line in logs.lines().filter(|l| l.contains("admission review")) {
            if let Some(note) = line
                .split("note=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
            {
                *out.entry(note.to_owned()).or_default() += 1;
            }
        }
        out
    }

    /// The controller's own timing of each review (`elapsed_us` in its debug log), sorted.
    pub fn handler_latencies(&self) -> Vec<Duration> {
        let logs = self
            .controller
            .as_ref()
            .map(|c| c.logs())
            .unwrap_or_default();
        let mut out: Vec<Duration> = logs
            .lines()
            .filter(|l| l.contains("admission review"))
            .filter_map(|l| {
                let rest = l.split("elapsed_us=").nth(1)?;
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok().map(Duration::from_micros)
            })
            .collect();
        out.sort();
        out
    }
}

/// One burst: a ServiceAccount `app` and `pods` Pods using it, created with no waits
/// in between (the Pods all at once, right after the ServiceAccount's create returns).
pub struct Burst {
    /// The ServiceAccount's list as its create returned it.
    pub account_list: Vec<String>,
    /// Each Pod's `imagePullSecrets`, as admitted.
    pub pod_lists: Vec<Vec<String>>,
    /// When the ServiceAccount create was sent.
    pub started: Instant,
    /// When the last Pod was admitted.
    pub admitted: Instant,
}

impl Burst {
    /// Pods whose list lacks [`PULL_SECRET`].
    pub fn without_secret(&self) -> usize {
        self.pod_lists
            .iter()
            .filter(|l| !l.iter().any(|n| n == PULL_SECRET))
            .count()
    }
}

/// The Pod every burst creates: `image`, under the ServiceAccount `app`.
pub fn burst_pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "burst"}},
        "spec": {
            "serviceAccountName": "app",
            "containers": [{"name": "app", "image": image, "imagePullPolicy": "Always"}],
            "terminationGracePeriodSeconds": 0,
        }
    }))
    .unwrap()
}

pub async fn burst(client: &Client, namespace: &str, pods: usize, image: &str) -> Burst {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let pod_api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let sa: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "app"}})).unwrap();
    let created = accounts
        .create(&PostParams::default(), &sa)
        .await
        .unwrap_or_else(|e| panic!("ServiceAccount in {namespace}: {e}"));
    let creates = (0..pods).map(|i| {
        let pod_api = pod_api.clone();
        let pod = burst_pod(&format!("app-{i:02}"), image);
        async move {
            // The ServiceAccount admission plugin may not see a just-created account in
            // its informer yet; it then reads it, or refuses with a retryable error.
            for attempt in 0.. {
                match pod_api.create(&PostParams::default(), &pod).await {
                    Ok(p) => return p,
                    Err(e) if attempt < 20 => {
                        eprintln!("Pod create retried: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("Pod in {namespace}: {e}"),
                }
            }
            unreachable!()
        }
    });
    let admitted_pods = futures::future::join_all(creates).await;
    let admitted = Instant::now();
    Burst {
        account_list: names(created.image_pull_secrets.as_deref()),
        pod_lists: admitted_pods
            .iter()
            .map(|p| {
                names(
                    p.spec
                        .as_ref()
                        .and_then(|s| s.image_pull_secrets.as_deref()),
                )
            })
            .collect(),
        started,
        admitted,
    }
}

fn names(list: Option<&[k8s_openapi::api::core::v1::LocalObjectReference]>) -> Vec<String> {
    list.unwrap_or_default()
        .iter()
        .map(|r| r.name.clone())
        .collect()
}

/// When each namespace's [`PULL_SECRET`] was first seen by a watch (started now).
pub fn secret_arrivals(
    client: &Client,
) -> (
    Arc<Mutex<BTreeMap<String, Instant>>>,
    tokio::task::JoinHandle<()>,
) {
    let seen: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::default();
    let api: Api<Secret> = Api::all(client.clone());
    let config = watcher::Config::default().labels("regcred.io/managed=true");
    let task = {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut events = watcher::watcher(api, config).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                if let Event::Apply(s) | Event::InitApply(s) = event
                    && s.name_any() == PULL_SECRET
                {
                    seen.lock()
                        .unwrap()
                        .entry(s.namespace().unwrap_or_default())
                        .or_insert_with(Instant::now);
                }
            }
        })
    };
    (seen, task)
}

/// `p` of a sorted list.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// The API server's own histogram of this webhook's admission latency
/// (`apiserver_admission_webhook_admission_duration_seconds`): (count, p50, p99),
/// interpolated within buckets as Prometheus' histogram_quantile does, and the buckets.
pub fn apiserver_webhook_latency(
    bed: &TestBed,
    webhook_name: &str,
) -> (u64, f64, f64, Vec<(f64, u64)>) {
    let (ok, text) = kubectl_output(bed, &["get", "--raw", "/metrics"], None);
    assert!(ok, "the API server's /metrics: {text}");
    let mut buckets: BTreeMap<u64, (f64, u64)> = BTreeMap::new();
    for line in text.lines() {
        if !line.starts_with("apiserver_admission_webhook_admission_duration_seconds_bucket{")
            || !line.contains(&format!("name=\"{webhook_name}\""))
        {
            continue;
        }
        let Some(le) = line.split("le=\"").nth(1).and_then(|r| r.split('"').next()) else {
            continue;
        };
        let bound: f64 = if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap()
        };
        let count: u64 = line.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64;
        // Several series (operation, rejected, type) may exist: add them up per bound.
        let key = if bound.is_infinite() {
            u64::MAX
        } else {
            (bound * 1e6) as u64
        };
        let entry = buckets.entry(key).or_insert((bound, 0));
        entry.1 += count;
    }
    let buckets: Vec<(f64, u64)> = buckets.into_values().collect();
    let total = buckets.last().map_or(0, |b| b.1);
    let quantile = |q: f64| -> f64 {
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, count) in &buckets {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    return lower.0;
                }
                let inside = (count - lower.1) as f64;
                let fraction = if inside == 0.0 {
                    0.0
                } else {
                    (rank - lower.1 as f64) / inside
                };
                return lower.0 + (bound - lower.0) * fraction;
            }
            lower = (bound, count);
        }
        f64::NAN
    };
    (total, quantile(0.5), quantile(0.99), buckets)
}

/// Waits until every Pod named in `pods` has gone, so a namespace can be deleted quietly.
pub async fn delete_namespace(client: &Client, name: &str) {
    let _ = Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}
