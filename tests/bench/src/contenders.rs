//! The contenders, each a separate process under its own identity: regcred (the release
//! binary as the shipped manifests run it, admission webhook included), regcred with the
//! webhook off (the watch path alone), the limit (this binary's `limit` subcommand) and
//! the script way (a bash loop over the bed's `kubectl`, as docs/migrate-from-scripts.md
//! shows).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kube::Api;
use regcred_api::ClusterRegistryCredential;
use regcred_testkit::{ControllerProcess, TestBed};
use serde::Serialize;
use serde_json::json;
use tempfile::TempDir;
use tokio::process::{Child, ChildStdin, Command};

use crate::seed::{BENCH_NAMESPACE, TARGET_LABEL, kubeconfig};
use crate::webhook;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Kind {
    /// As `config/default` runs it: leader election, the ServiceAccount webhook.
    Regcred,
    /// The same with `--admission=off`: new ServiceAccounts are patched by the watch path.
    RegcredWatch,
    Limit,
    Script,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Regcred => "regcred",
            Kind::RegcredWatch => "regcred-watch",
            Kind::Limit => "limit",
            Kind::Script => "script",
        }
    }

    /// regcred, with its webhook or without: driven by a ClusterRegistryCredential.
    pub(crate) fn is_regcred(self) -> bool {
        matches!(self, Kind::Regcred | Kind::RegcredWatch)
    }

    /// Whether it runs at the memory sizes: regcred as shipped and the limit (the watch
    /// path alone caches the same; the script way keeps nothing).
    pub(crate) fn at_memory_sizes(self) -> bool {
        matches!(self, Kind::Regcred | Kind::Limit)
    }

    /// The identity the audit log names for its requests.
    pub(crate) fn user(self) -> &'static str {
        match self {
            Kind::Regcred | Kind::RegcredWatch => regcred_e2e::CONTROLLER_USER,
            Kind::Limit => "system:serviceaccount:regcred-bench:limit",
            Kind::Script => "system:serviceaccount:regcred-bench:script",
        }
    }

    /// Whether it acts by itself on changes (watches), or must be run again.
    pub(crate) fn watches(self) -> bool {
        self != Kind::Script
    }
}

/// What every contender is asked to keep: the Secret `secret` in the namespaces labelled
/// for `targets`, from the source `source_namespace/source`, listed by every ServiceAccount.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    /// `<contender>-<size>`: names its source and regcred's credential.
    pub(crate) run: String,
    /// The label value of the target namespaces, and their names' prefix: the contenders
    /// of one size share them, one after another.
    pub(crate) targets: String,
    pub(crate) secret: String,
    pub(crate) source_namespace: String,
    pub(crate) source: String,
    pub(crate) server: String,
    pub(crate) concurrency: usize,
}

impl Job {
    pub(crate) fn selector(&self) -> String {
        format!("{TARGET_LABEL}={}", self.targets)
    }

    /// The ClusterRegistryCredential that gives regcred this job.
    pub(crate) fn cluster_credential(&self) -> ClusterRegistryCredential {
        serde_json::from_value(json!({
            "apiVersion": "regcred.io/v1alpha1",
            "kind": "ClusterRegistryCredential",
            "metadata": {"name": self.run},
            "spec": {
                "registries": [{"server": self.server, "static": {"secretRef": {
                    "name": self.source, "namespace": self.source_namespace,
                }}}],
                "secretName": self.secret,
                "namespaces": {"selector": {"matchLabels": {TARGET_LABEL: self.targets}}},
            }
        }))
        .expect("a ClusterRegistryCredential")
    }
}

/// A contender's process, while it runs.
pub(crate) enum Running {
    Regcred(ControllerProcess),
    Limit {
        child: Child,
        /// The limit exits when this closes: it never outlives the bench.
        _lifeline: ChildStdin,
    },
    /// The script way runs to completion each time: nothing stays running.
    Script,
}

pub(crate) struct Contender {
    pub(crate) kind: Kind,
    pub(crate) job: Job,
    bed: &'static TestBed,
    regcred_bin: PathBuf,
    dir: TempDir,
    running: Option<Running>,
    /// The script's last run: how long it took.
    pub(crate) last_script_run: Option<Duration>,
    /// The highest VmHWM seen over this contender's processes.
    pub(crate) peak_rss_kib: Option<u64>,
    /// regcred as shipped: the loopback port its webhook serves.
    webhook_port: Option<u16>,
    /// Whether its MutatingWebhookConfiguration is in place.
    webhook_configured: bool,
}

impl Contender {
    pub(crate) fn new(kind: Kind, job: Job, bed: &'static TestBed, regcred_bin: PathBuf) -> Self {
        Contender {
            kind,
            job,
            bed,
            regcred_bin,
            dir: tempfile::Builder::new()
                .prefix("regcred-bench-")
                .tempdir()
                .expect("a temporary directory"),
            running: None,
            last_script_run: None,
            peak_rss_kib: None,
            webhook_port: (kind == Kind::Regcred).then(regcred_e2e::admission::free_port),
            webhook_configured: false,
        }
    }

    /// Starts the process (the script: runs it once, to completion).
    pub(crate) async fn start(&mut self) {
        let config = self.dir.path().join("kubeconfig");
        match self.kind {
            Kind::Regcred | Kind::RegcredWatch => {
                kubeconfig(self.bed, "regcred-system", "regcred", &config).await;
                let mut args = vec![format!("--namespace-concurrency={}", self.job.concurrency)];
                match self.webhook_port {
                    Some(port) => {
                        if !self.webhook_configured {
                            let client = self.bed.admin_client().await;
                            webhook::configure(&client, &self.job, port).await;
                            self.webhook_configured = true;
                        }
                        args.extend(webhook::args(port));
                    }
                    // Said, not left to the default: REGCRED_ADMISSION could turn it on.
                    None => args.push("--admission=off".into()),
                }
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                let process = ControllerProcess::start_binary(
                    &self.regcred_bin,
                    self.bed,
                    &config,
                    &args,
                    // As the image runs it (hack/image.sh).
                    &[("RUST_LOG", "info"), ("MIMALLOC_PURGE_DELAY", "0")],
                );
                self.running = Some(Running::Regcred(process));
            }
            Kind::Limit => {
                kubeconfig(self.bed, BENCH_NAMESPACE, "limit", &config).await;
                let log = std::fs::File::create(self.dir.path().join("limit.log")).expect("log");
                let mut child = Command::new(std::env::current_exe().expect("own path"))
                    .arg("limit")
                    .args(["--selector", &self.job.selector()])
                    .args(["--secret-name", &self.job.secret])
                    .args([
                        "--source",
                        &format!("{}/{}", self.job.source_namespace, self.job.source),
                    ])
                    .args(["--server", &self.job.server])
                    .args(["--concurrency", &self.job.concurrency.to_string()])
                    .env("KUBECONFIG", &config)
                    .stdin(Stdio::piped())
                    .stdout(log.try_clone().expect("log"))
                    .stderr(log)
                    .kill_on_drop(true)
                    .spawn()
                    .expect("the limit runs");
                let lifeline = child.stdin.take().expect("piped");
                self.running = Some(Running::Limit {
                    child,
                    _lifeline: lifeline,
                });
            }
            Kind::Script => {
                kubeconfig(self.bed, BENCH_NAMESPACE, "script", &config).await;
                self.run_script(&config).await;
                self.running = Some(Running::Script);
            }
        }
    }

    /// regcred as shipped: waits until the API server can call its webhook (the caBundle
    /// published, the port open). The others have none.
    pub(crate) async fn until_admission(&self) {
        if let (Some(port), true) = (self.webhook_port, self.webhook_configured) {
            webhook::until_published(&self.bed.admin_client().await, port).await;
        }
    }

    /// Takes its MutatingWebhookConfiguration away (its next start puts it back), so that
    /// no other contender's ServiceAccounts call a webhook nobody serves.
    pub(crate) async fn remove_webhook(&mut self) {
        if self.webhook_configured {
            webhook::remove(&self.bed.admin_client().await).await;
            self.webhook_configured = false;
        }
    }

    /// For the script way: runs it again (what its users do for new namespaces or a new
    /// password). The others watch, so this does nothing for them.
    pub(crate) async fn nudge(&mut self) {
        if self.kind == Kind::Script {
            let config = self.dir.path().join("kubeconfig");
            self.run_script(&config).await;
        }
    }

    async fn run_script(&mut self, config: &std::path::Path) {
        let started = Instant::now();
        let out = Command::new("bash")
            .args(["-c", crate::script::SCRIPT])
            .env("KUBECTL", &self.bed.info.kubectl)
            .env("KUBECONFIG", config)
            // kubectl keeps its discovery cache under HOME: the script's own.
            .env("HOME", self.dir.path())
            .env("SELECTOR", self.job.selector())
            .env("SECRET", &self.job.secret)
            .env("SERVER", &self.job.server)
            .env("SOURCE_NAMESPACE", &self.job.source_namespace)
            .env("SOURCE", &self.job.source)
            .output()
            .await
            .expect("bash runs");
        assert!(
            out.status.success(),
            "the script failed ({}): {}",
            out.status,
            redacted(&String::from_utf8_lossy(&out.stderr))
        );
        self.last_script_run = Some(started.elapsed());
    }

    /// Stops it as Kubernetes would (SIGTERM, then SIGKILL), noting its peak memory first.
    pub(crate) async fn stop(&mut self) {
        self.sample_memory();
        match self.running.take() {
            Some(Running::Regcred(mut process)) => {
                tokio::task::spawn_blocking(move || process.stop())
                    .await
                    .expect("stopping regcred");
            }
            Some(Running::Limit { mut child, .. }) => {
                if let Some(pid) = child.id() {
                    let _ = Command::new("kill")
                        .args(["-TERM", &pid.to_string()])
                        .status()
                        .await;
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait())
                    .await
                    .is_err()
                {
                    let _ = child.kill().await;
                }
            }
            Some(Running::Script) | None => {}
        }
    }

    fn pid(&self) -> Option<u32> {
        match self.running.as_ref()? {
            Running::Regcred(process) => Some(process.id()),
            Running::Limit { child, .. } => child.id(),
            Running::Script => None,
        }
    }

    /// Reads VmHWM (peak resident memory) of the running process into `peak_rss_kib`.
    pub(crate) fn sample_memory(&mut self) {
        let Some(pid) = self.pid() else { return };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return;
        };
        let hwm = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
        if let Some(hwm) = hwm {
            self.peak_rss_kib = Some(self.peak_rss_kib.unwrap_or(0).max(hwm));
        }
    }

    /// Whether its process is still up (the script: always).
    pub(crate) fn alive(&mut self) -> bool {
        match self.running.as_mut() {
            Some(Running::Regcred(process)) => process.try_status().is_none(),
            Some(Running::Limit { child, .. }) => matches!(child.try_wait(), Ok(None)),
            Some(Running::Script) | None => true,
        }
    }

    /// The log of its process, for a failure message.
    pub(crate) fn log_tail(&self) -> String {
        let text = match self.running.as_ref() {
            Some(Running::Regcred(process)) => process.logs(),
            Some(Running::Limit { .. }) => {
                std::fs::read_to_string(self.dir.path().join("limit.log")).unwrap_or_default()
            }
            _ => String::new(),
        };
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// kubectl's errors can quote the object it sent (the Secret's data, base64): long
/// unbroken words are left out.
fn redacted(text: &str) -> String {
    text.split(' ')
        .map(|word| if word.len() > 40 { "<redacted>" } else { word })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Applies regcred's ClusterRegistryCredential for `job` (as the admin).
pub(crate) async fn apply_credential(client: &kube::Client, job: &Job) {
    let api = Api::<ClusterRegistryCredential>::all(client.clone());
    regcred_e2e::apply(&api, &job.cluster_credential()).await;
}

/// Deletes it (regcred is stopped by then: the bench removes the rest).
pub(crate) async fn delete_credential(client: &kube::Client, job: &Job) {
    let api = Api::<ClusterRegistryCredential>::all(client.clone());
    let _ = api.delete(&job.run, &Default::default()).await;
}
