//! The test bed process: built and started once per test binary, down when the binary exits.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::logs::tail;
use crate::random::lower_alnum;

/// How long `testbed up` may take to print `ready` (it takes a few seconds when warm).
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// `DIR/testbed.json`, written by `testbed up`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BedInfo {
    /// Admin kubeconfig (`regcred-admin` in `system:masters`).
    pub kubeconfig: PathBuf,
    /// API server URL, `https://127.0.0.1:PORT`.
    pub server: String,
    /// CA of the API server's certificate.
    pub ca_file: PathBuf,
    pub kubectl: PathBuf,
    pub testbed: PathBuf,
    /// Component logs, `<component>.log`.
    pub log_dir: PathBuf,
    pub audit_log: PathBuf,
    pub service_account_issuer: String,
    /// Kubernetes version of the binaries, e.g. `v1.37.2`.
    pub k8s_version: String,
    pub registry: RegistryInfo,
    /// The strict AWS emulator (ECR, STS) and its registry front.
    pub aws: AwsInfo,
    pub pids: BTreeMap<String, u32>,
    /// The node, when the bed was started with one ([`TestBed::with_node`]).
    #[serde(default)]
    pub node: Option<crate::node::NodeInfo>,
}

/// The bed's AWS emulator: ECR and STS at `endpoint`, its control API at `control`, and
/// `front`, the registry that accepts only unexpired ECR tokens it issued.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsInfo {
    /// `http://127.0.0.1:PORT`: give it to the SDK as `AWS_ENDPOINT_URL`.
    pub endpoint: String,
    pub control: String,
    /// `127.0.0.1:PORT` of the ECR registry front (TLS, the bed's CA).
    pub front: String,
    pub region: String,
    pub account_id: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub identity_arn: String,
    pub audience: String,
    /// `<account>.dkr.ecr.<region>.amazonaws.com`: pull with `--map` to `front`.
    pub ecr_registry: String,
    pub ecr_image: String,
}

// Hand-written so that the secret key never reaches a panic message or a log.
impl fmt::Debug for AwsInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsInfo")
            .field("endpoint", &self.endpoint)
            .field("control", &self.control)
            .field("front", &self.front)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The bed's OCI registry: TLS with htpasswd auth, holding one image.
#[derive(Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegistryInfo {
    /// `127.0.0.1:PORT`.
    pub host: String,
    pub username: String,
    pub password: String,
    /// `HOST/regcred/hello:1`.
    pub image: String,
    /// Directory whose `*.crt` are the registry's CAs (for `testbed pullcheck`).
    pub ca_dir: PathBuf,
}

// Hand-written so that the password never reaches a panic message or a log.
impl fmt::Debug for RegistryInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryInfo")
            .field("host", &self.host)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("image", &self.image)
            .field("ca_dir", &self.ca_dir)
            .finish()
    }
}

/// The running test bed, shared by every test of the binary.
pub struct TestBed {
    /// What `testbed up` reported.
    pub info: BedInfo,
    /// Directory with `testbed`, `kubectl`, `kube-apiserver`, etc.
    pub bin: PathBuf,
    /// Random id of this test process, the value of the `regcred-test/run` namespace label.
    pub run_id: String,
    /// `testbed up`'s stderr (progress and errors).
    pub(crate) stderr_log: PathBuf,
    /// Never dropped: the bed tears down when the process exits, for whatever reason,
    /// because the kernel then closes this pipe (`--lifeline`). Fault tests write
    /// commands to it (see [`TestBed::control`]), answered on `replies`.
    lifeline: Mutex<(ChildStdin, mpsc::Receiver<String>)>,
    process: Mutex<Child>,
}

/// A component of the bed that fault tests restart, kill or pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    ApiServer,
    ControllerManager,
    /// The AWS emulator: ECR, STS, its control API and its registry front.
    Aws,
}

impl Component {
    fn name(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::ApiServer => "kube-apiserver",
            Component::ControllerManager => "kube-controller-manager",
            Component::Aws => "aws-emulator",
        }
    }
}

/// What to do to a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// SIGTERM, start again, wait until ready.
    Restart,
    /// SIGKILL, start again, wait until ready.
    Kill,
    /// SIGSTOP: connections are accepted and never answered.
    Pause,
    /// SIGCONT.
    Resume,
}

impl TestBed {
    /// The test bed, started on first use in this process. Panics (in every test that asks)
    /// if it could not be started.
    pub fn get() -> &'static TestBed {
        Self::started(false)
    }

    /// The process-wide bed; `node` only matters to the call that starts it.
    pub(crate) fn started(node: bool) -> &'static TestBed {
        match BED.get_or_init(|| start(node)) {
            Ok(bed) => bed,
            Err(message) => panic!("{message}"),
        }
    }

    /// The registry's address, credentials, image and CA directory.
    pub fn registry(&self) -> &RegistryInfo {
        &self.info.registry
    }

    /// `kubectl` as the admin.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.info.kubectl);
        cmd.env("KUBECONFIG", &self.info.kubeconfig);
        cmd
    }

    /// Restarts, kills or pauses one component, and returns once the bed says it is done
    /// (a restarted component is ready again). Panics if the bed refuses.
    pub fn control(&self, fault: Fault, component: Component) {
        let verb = match fault {
            Fault::Restart => "restart",
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Resume => "resume",
        };
        let line = format!("{verb} {}", component.name());
        let mut lifeline = self.lifeline.lock().unwrap_or_else(|e| e.into_inner());
        let (stdin, replies) = &mut *lifeline;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .expect("the test bed's stdin");
        let reply = replies
            .recv_timeout(READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("test bed: no answer to {line:?}: {e}"));
        assert_eq!(reply, format!("ok {line}"), "test bed: {line:?} failed");
    }

    /// How `testbed up` ended, if it has: a component that died takes the bed down.
    pub fn exit_status(&self) -> Option<std::process::ExitStatus> {
        let mut process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        process.try_wait().ok().flatten()
    }
}

/// The test bed of this process: one per test binary, with or without a node.
static BED: OnceLock<Result<TestBed, String>> = OnceLock::new();

/// The workspace root, from this crate's location (`crates/regcred-testkit`).
pub(crate) fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .ancestors()
        .nth(2)
        .expect("the test kit lives two levels below the workspace root")
        .to_path_buf()
}

fn start(node: bool) -> Result<TestBed, String> {
    let begin = Instant::now();
    let bin = match std::env::var_os("REGCRED_TESTBED_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build()?,
    };
    // The bed's DIR must be empty or absent; its stderr goes beside it so that it outlives
    // a DIR removed at teardown, and the wrapper removes both after a clean teardown (a
    // failed bed keeps DIR, whose logs its error line names).
    let parent = tempfile::Builder::new()
        .prefix("regcred-testbed-")
        .tempdir()
        .map_err(|e| format!("test bed: cannot make a temporary directory: {e}"))?
        .keep();
    let dir = parent.join("bed");
    let stderr_log = parent.join("testbed.stderr");
    let mut child = Command::new("sh")
        .args([
            "-c",
            r#"p=$1; shift; "$@" 2>"$p/testbed.stderr" && rm -rf "$p""#,
            "sh",
        ])
        .arg(&parent)
        .arg(bin.join("testbed"))
        .args(["up", "--lifeline", "--dir"])
        .arg(&dir)
        .arg("--bin")
        .arg(&bin)
        .args(node.then_some("--node"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            format!(
                "test bed: cannot run {}: {e}",
                bin.join("testbed").display()
            )
        })?;
    let lifeline = child.stdin.take().expect("stdin is piped");
    let stdout = child.stdout.take().expect("stdout is piped");

    // A thread reads stdout for the whole life of the bed, so that it never writes to a
    // closed pipe.
    let (ready_tx, ready_rx) = mpsc::channel();
    let (reply_tx, reply_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(json) = line.strip_prefix("ready ") {
                let _ = ready_tx.send(PathBuf::from(json));
            } else if line.starts_with("ok ") || line.starts_with("error ") {
                let _ = reply_tx.send(line);
            }
        }
    });
    let built = begin.elapsed();
    let failure = |what: String| {
        format!(
            "test bed: {what}; last lines of {}:\n{}",
            stderr_log.display(),
            tail(&stderr_log, 20)
        )
    };
    let json = match ready_rx.recv_timeout(READY_TIMEOUT) {
        Ok(json) => json,
        Err(RecvTimeoutError::Timeout) => {
            drop(lifeline); // tears the half-started bed down
            return Err(failure(format!("not ready within {READY_TIMEOUT:?}")));
        }
        Err(RecvTimeoutError::Disconnected) => {
            let status = child.wait().map(|s| s.to_string()).unwrap_or_default();
            return Err(failure(format!(
                "testbed up exited before ready ({status})"
            )));
        }
    };
    let text = std::fs::read_to_string(&json)
        .map_err(|e| failure(format!("cannot read {}: {e}", json.display())))?;
    let info: BedInfo = serde_json::from_str(&text)
        .map_err(|e| failure(format!("cannot parse {}: {e}", json.display())))?;
    eprintln!(
        "test bed: Kubernetes {} at {} ready in {:.1}s (build.sh {:.1}s) in {}",
        info.k8s_version,
        info.server,
        begin.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        dir.display()
    );
    Ok(TestBed {
        info,
        bin,
        run_id: lower_alnum(8),
        stderr_log,
        lifeline: Mutex::new((lifeline, reply_rx)),
        process: Mutex::new(child),
    })
}

/// The directory of the bed's binaries: `REGCRED_TESTBED_BIN`, or what `build.sh` builds.
/// For tests that run `testbed` themselves (e.g. to crash it).
pub fn testbed_bin() -> PathBuf {
    match std::env::var_os("REGCRED_TESTBED_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build().unwrap_or_else(|e| panic!("{e}")),
    }
}

/// Runs `tests/testbed/build.sh` (fast when its cache is warm) and returns its BIN.
fn build() -> Result<PathBuf, String> {
    let script = workspace_root().join("tests/testbed/build.sh");
    // Its progress goes straight to the terminal: a cold build takes minutes.
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("test bed: cannot run {}: {e}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "test bed: {} failed ({}); its messages are above",
            script.display(),
            output.status
        ));
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .last()
        .map(|line| PathBuf::from(line.trim()))
        .ok_or_else(|| format!("test bed: {} printed no directory", script.display()))
}
