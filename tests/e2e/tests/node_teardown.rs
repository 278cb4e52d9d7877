//! The node changes the host (a bridge, cgroups, mounts, network namespaces, iptables
//! rules, sysctls, a few fixed paths), so its teardown is tested like a feature: a bed
//! crashed with a running Pod leaves things behind, the next `up --node` removes them, and
//! an ordinary teardown leaves the host as it found it.
//!
//! This binary runs `testbed up --node` itself (twice, one after the other) instead of
//! using the test kit's shared bed: it kills one.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
const FIXED_PATHS: [&str; 4] = [
    "/run/containerd",
    "/var/lib/kubelet",
    "/var/lib/cni",
    "/var/log/containers",
];

/// What the host looks like in the respects the node changes.
#[derive(Debug, PartialEq)]
struct HostState {
    sysctls: Vec<String>,
    fixed_paths: Vec<bool>,
    bridge: bool,
    cgroup: bool,
    kube_chains: Vec<String>,
    record: bool,
}

fn host_state() -> HostState {
    let iptables_chains = ["iptables-save", "ip6tables-save"]
        .iter()
        .flat_map(|tool| {
            let out = Command::new(tool).output().expect("iptables-save runs");
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("KUBE-"))
                .map(|l| format!("{tool}: {l}"))
                .collect::<Vec<_>>()
        })
        .collect();
    HostState {
        sysctls: SYSCTLS
            .iter()
            .map(|k| std::fs::read_to_string(Path::new("/proc/sys").join(k)).unwrap_or_default())
            .collect(),
        fixed_paths: FIXED_PATHS.iter().map(|p| Path::new(p).exists()).collect(),
        bridge: Path::new("/sys/class/net/regcred0").exists(),
        cgroup: Path::new("/sys/fs/cgroup/memory/regcred-testbed").exists(),
        kube_chains: iptables_chains,
        record: Path::new("/run/regcred-testbed/node.json").exists(),
    }
}

/// Mount points at or below `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| *p == dir || p.starts_with(&format!("{dir}/")))
        .map(str::to_owned)
        .collect()
}

/// Pids of runc shims serving the containerd at `socket`.
fn shims(socket: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && args
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == socket.as_bytes())
        })
        .collect()
}

/// A `testbed up --node` of this test's own, and what it printed.
struct Bed {
    child: Child,
    dir: PathBuf,
    stderr: PathBuf,
    info: Value,
}

fn up(bin: &Path, parent: &Path, name: &str) -> Bed {
    let dir = parent.join(name);
    let stderr = parent.join(format!("{name}.stderr"));
    let mut child = Command::new(bin.join("testbed"))
        .args(["up", "--node", "--keep", "--dir"])
        .arg(&dir)
        .arg("--bin")
        .arg(bin)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("testbed runs");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let json = line.trim().strip_prefix("ready ").unwrap_or_else(|| {
        panic!(
            "testbed up --node did not get ready: {}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        )
    });
    let info = serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    Bed {
        child,
        dir,
        stderr,
        info,
    }
}

impl Bed {
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = Command::new(self.info["kubectl"].as_str().unwrap())
            .env("KUBECONFIG", self.info["kubeconfig"].as_str().unwrap())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn socket(&self) -> String {
        self.info["node"]["criEndpoint"]
            .as_str()
            .unwrap()
            .trim_start_matches("unix://")
            .to_owned()
    }
}

#[test]
fn a_crashed_node_is_cleaned_up_by_the_next_and_teardown_leaves_the_host_as_it_was() {
    let bin = regcred_testkit::testbed_bin();
    // The previous test binary's bed may still be tearing its node down.
    let deadline = Instant::now() + Duration::from_secs(30);
    while (Path::new("/run/regcred-testbed/node.json").exists()
        || Path::new("/sys/class/net/regcred0").exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let before = host_state();
    assert!(
        !before.bridge && !before.record,
        "another node is running on this machine: {before:?}"
    );
    let parent = tempfile::Builder::new()
        .prefix("regcred-node-teardown-")
        .tempdir()
        .unwrap();

    // A bed with a running Pod, then SIGKILL: its children die with it (Pdeathsig), the
    // shim and the container do not.
    let mut crashed = up(&bin, parent.path(), "crashed");
    let registry = &crashed.info["registry"];
    let image = crashed.info["node"]["image"].as_str().unwrap().to_owned();
    crashed.kubectl(
        &[
            "create",
            "secret",
            "docker-registry",
            "pull",
            &format!("--docker-server={}", registry["host"].as_str().unwrap()),
            &format!(
                "--docker-username={}",
                registry["username"].as_str().unwrap()
            ),
            &format!(
                "--docker-password={}",
                registry["password"].as_str().unwrap()
            ),
        ],
        None,
    );
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
        "spec": {"imagePullSecrets": [{"name": "pull"}], "dnsPolicy": "Default",
                 "containers": [{"name": "app", "image": image}]}
    });
    crashed.kubectl(&["apply", "-f", "-"], Some(&pod.to_string()));
    crashed.kubectl(
        &["wait", "--for=condition=Ready", "pod/app", "--timeout=60s"],
        None,
    );
    crashed.child.kill().unwrap();
    crashed.child.wait().unwrap();
    let socket = crashed.socket();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{}", crashed.info["pids"]["kubelet"])).exists()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !shims(&socket).is_empty(),
        "the crash left the Pod's shim running"
    );
    assert!(host_state().bridge && host_state().record);
    assert!(!mounts_under(&crashed.dir).is_empty());

    // The next bed cleans up after it.
    let mut next = up(&bin, parent.path(), "next");
    let log = std::fs::read_to_string(&next.stderr).unwrap();
    assert!(
        log.contains("cleaning up after a previous bed's node"),
        "{log}"
    );
    assert_eq!(shims(&socket), Vec::<u32>::new());
    assert_eq!(mounts_under(&crashed.dir), Vec::<String>::new());

    // An ordinary teardown leaves the host as it was before either bed.
    let status = Command::new("kill")
        .args(["-TERM", &next.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(next.child.wait().unwrap().success(), "teardown succeeded");
    assert_eq!(shims(&next.socket()), Vec::<u32>::new());
    assert_eq!(mounts_under(&next.dir), Vec::<String>::new());
    assert_eq!(host_state(), before);
}
