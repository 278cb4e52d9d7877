//! The regcred controller binary as a child process of the test, as it runs in a cluster:
//! its own process, its own identity (a kubeconfig), its own log.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::TestBed;
use crate::bed::workspace_root;
use crate::logs::tail;

/// Log filter unless the test process's `RUST_LOG` says otherwise.
const DEFAULT_RUST_LOG: &str = "regcred=trace,regcred_controller=trace,kube=debug";
/// How long [`ControllerProcess::stop`] waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Lines of the controller log printed when a test fails.
const DUMP_LINES: usize = 80;

/// `exec`s the controller (so it keeps this shell's pid), after starting a watcher that
/// sends it SIGTERM when its stdin, a pipe from the test, reaches EOF: when the test
/// process dies, however it dies, the controller goes down with it. Background jobs get
/// /dev/null as stdin, hence the copy on fd 3.
const LIFELINE_WRAPPER: &str = r#"exec 3<&0
{ cat <&3 >/dev/null; kill -TERM $$ 2>/dev/null; } &
exec "$@" </dev/null 3<&-"#;

/// A running `regcred run`. Dropping it kills the process; if the test is panicking, the
/// last lines of its log are printed first and the log is kept.
pub struct ControllerProcess {
    child: Child,
    _lifeline: ChildStdin,
    log_path: PathBuf,
    log_dir: Option<TempDir>,
}

impl ControllerProcess {
    /// Starts `<workspace>/target/debug/regcred run EXTRA_ARGS` (or `$REGCRED_BIN run ...`)
    /// with `KUBECONFIG=kubeconfig`, stdout and stderr to a log file.
    pub fn start(bed: &TestBed, kubeconfig: &Path, extra_args: &[&str]) -> ControllerProcess {
        let binary = std::env::var_os("REGCRED_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/debug/regcred"));
        if !binary.is_file() {
            panic!(
                "no regcred binary at {}: build it first: cargo build -p regcred (hack/test.sh does)",
                binary.display()
            );
        }
        ControllerProcess::start_binary(&binary, bed, kubeconfig, extra_args, &[])
    }

    /// Like [`ControllerProcess::start`], with extra environment variables (for example
    /// the controller's own AWS keys).
    pub fn start_with_env(
        bed: &TestBed,
        kubeconfig: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> ControllerProcess {
        let binary = std::env::var_os("REGCRED_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target/debug/regcred"));
        ControllerProcess::start_binary(&binary, bed, kubeconfig, extra_args, env)
    }

    /// Like [`ControllerProcess::start`], with another binary (`BINARY run EXTRA_ARGS`).
    ///
    /// AWS calls go to the bed's emulator (`AWS_ENDPOINT_URL`, `AWS_REGION`), the instance
    /// metadata service is never asked (it is not on loopback), and no AWS credential of
    /// the test process leaks in: only those in `env`.
    pub fn start_binary(
        binary: &Path,
        bed: &TestBed,
        kubeconfig: &Path,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> ControllerProcess {
        let log_dir = tempfile::Builder::new()
            .prefix("regcred-controller-")
            .tempdir()
            .expect("a temporary directory");
        let log_path = log_dir.path().join("regcred.log");
        let mut log = File::create(&log_path).expect("the controller log file");
        // A header, so a dumped log says what ran against what.
        writeln!(
            log,
            "# {} run {} (KUBECONFIG={}, API server {})",
            binary.display(),
            extra_args.join(" "),
            kubeconfig.display(),
            bed.info.server
        )
        .expect("the controller log file");
        let rust_log = std::env::var("RUST_LOG").unwrap_or_else(|_| DEFAULT_RUST_LOG.to_owned());
        let mut child = Command::new("sh")
            .args(["-c", LIFELINE_WRAPPER, "sh"])
            .arg(binary)
            .arg("run")
            .args(extra_args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", rust_log)
            // Plain text, so tests can search the log.
            .env("NO_COLOR", "1")
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env("AWS_ENDPOINT_URL", &bed.info.aws.endpoint)
            .env("AWS_REGION", &bed.info.aws.region)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            // Many controllers run at once: any free loopback port, not the fixed defaults.
            .env("REGCRED_PROBE_ADDR", "127.0.0.1:0")
            .env("REGCRED_METRICS_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("the controller log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
        let lifeline = child.stdin.take().expect("stdin is piped");
        ControllerProcess {
            child,
            _lifeline: lifeline,
            log_path,
            log_dir: Some(log_dir),
        }
    }

    /// The process id of the controller.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its log file (stdout and stderr).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything it has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log_path.display()))
    }

    /// How it exited, if it has.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting for the controller")
    }

    /// Stops it as Kubernetes would: SIGTERM, then SIGKILL if it is still running after
    /// 10 s. Returns its exit status (a clean shutdown is success). Its log stays readable
    /// until `self` is dropped.
    pub fn stop(&mut self) -> ExitStatus {
        if self.try_status().is_none() {
            // std can only SIGKILL; `kill` sends SIGTERM without unsafe code.
            let _ = Command::new("kill")
                .args(["-TERM", &self.id().to_string()])
                .status();
            let start = Instant::now();
            while self.try_status().is_none() && start.elapsed() < STOP_GRACE {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill()
    }

    /// SIGKILLs it (if still running) and returns its exit status.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().expect("waiting for the controller")
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Keep the whole log for a closer look.
            if let Some(dir) = self.log_dir.take() {
                let _ = dir.keep();
            }
            eprintln!(
                "==== last {DUMP_LINES} lines of the controller log {}",
                self.log_path.display()
            );
            eprintln!("{}", tail(&self.log_path, DUMP_LINES));
        }
    }
}
