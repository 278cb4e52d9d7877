//! The `regcred` command: the controller, and the CRDs it serves.
#![forbid(unsafe_code)]

mod admission;
mod endpoints;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// Caches hold tens of thousands of small objects at thousands of namespaces: mimalloc
/// packs them without glibc's per-allocation header (3.5 MiB less at 5,000 namespaces,
/// docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Below INFO the AWS SDK logs whole HTTP bodies (ECR tokens, STS web identity tokens),
/// signing inputs and resolved identities (access key IDs): those events are dropped
/// whatever `RUST_LOG` asks for.
fn not_an_sdk_secret(metadata: &tracing::Metadata<'_>) -> bool {
    let sdk = [
        "aws_smithy",
        "aws_sigv4",
        "aws_config",
        "aws_credential",
        "aws_runtime",
        "aws_sdk",
    ]
    .iter()
    .any(|prefix| metadata.target().starts_with(prefix));
    !(sdk && *metadata.level() > tracing::Level::INFO)
}

/// The git commit this binary was built from (build.rs).
const COMMIT: &str = env!("REGCRED_GIT_COMMIT");
/// `regcred --version`: the version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("REGCRED_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(
    name = "regcred",
    version = VERSION,
    about = "Keeps private-registry pull credentials right across a cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses the in-cluster config or KUBECONFIG).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Log format.
    #[arg(long, env = "REGCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How many namespaces one credential writes to at once (ServiceAccounts: twice that).
    #[arg(long, env = "REGCRED_NAMESPACE_CONCURRENCY", default_value_t = 16)]
    namespace_concurrency: usize,
    /// This replica's name, reported in Events (set from the Pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Let RegistryCredentials (tenants) use the controller's own AWS identity for ECR.
    /// Off by default: a tenant must not borrow the controller's permissions.
    #[arg(long, env = "REGCRED_ALLOW_CONTROLLER_AWS_IDENTITY")]
    allow_controller_aws_identity: bool,
    /// A host (or domain: it covers its subdomains) a RegistryCredential's `ecr.endpoint`
    /// may name besides AWS's own. Repeat for more. ClusterRegistryCredentials may name
    /// any https endpoint.
    #[arg(
        long = "allow-ecr-endpoint",
        env = "REGCRED_ALLOW_ECR_ENDPOINTS",
        value_delimiter = ','
    )]
    allowed_ecr_endpoints: Vec<String>,
    /// The controller's namespace: its signing key and leader lease live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "regcred-system")]
    namespace: String,
    /// Elect a leader among replicas on a Lease (only the leader writes). Turn it off only
    /// when exactly one controller runs.
    #[arg(long, env = "REGCRED_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// How long a leader's lease lasts without renewal before another replica takes over.
    #[arg(long, default_value = "15s", value_parser = humantime_secs)]
    lease_duration: Duration,
    /// A leader that could not renew for this long stops (and the process exits).
    #[arg(long, default_value = "10s", value_parser = humantime_secs)]
    lease_renew_deadline: Duration,
    /// How often the leader renews and the others try.
    #[arg(long, default_value = "2s", value_parser = humantime_secs)]
    lease_retry_period: Duration,
    /// Where `/healthz` (alive) and `/readyz` (caches listed) are served.
    #[arg(long, env = "REGCRED_PROBE_ADDR", default_value = "0.0.0.0:8081")]
    probe_addr: SocketAddr,
    /// Where `/metrics` is served.
    #[arg(long, env = "REGCRED_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    #[command(flatten)]
    admission: admission::AdmissionArgs,
}

/// `15s`, `2m`, `1h` (whole units).
pub(crate) fn humantime_secs(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 15s"))?;
    let secs = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("{text:?}: the unit must be s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crds => print!("{}", crds_yaml()?),
        Command::Run(args) => run(*args).await?,
    }
    Ok(())
}

fn crds_yaml() -> anyhow::Result<String> {
    let mut out = String::new();
    for crd in regcred_api::crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd)?);
    }
    Ok(out)
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer().json().boxed(),
    };
    tracing_subscriber::registry()
        .with(
            format
                .with_filter(filter)
                .with_filter(filter_fn(not_an_sdk_secret)),
        )
        .init();
    // Registered before anything answers a probe: from here on a SIGTERM is ours to
    // handle, never the default that kills the process mid-start.
    let signals = Signals {
        terminate: signal(SignalKind::terminate())?,
        interrupt: signal(SignalKind::interrupt())?,
    };
    let identity = args.instance.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    // A User-Agent of its own, naming the replica: audit logs can attribute requests.
    let mut kube_config = kube::Config::infer().await?;
    let agent = format!("regcred/{} ({identity})", env!("CARGO_PKG_VERSION"));
    kube_config.headers.push((
        http::header::USER_AGENT,
        http::HeaderValue::from_str(&agent)?,
    ));
    let metrics = Arc::new(regcred_controller::Metrics::new(
        env!("CARGO_PKG_VERSION"),
        COMMIT,
    ));
    // Every API request is counted (`regcred_kube_requests_total`).
    let client = kube::client::ClientBuilder::try_from(kube_config)?
        .with_layer(&metrics.kube_layer())
        .build();
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        commit = COMMIT,
        "regcred controller starting"
    );
    let (ready, ready_rx) = watch::channel(false);
    let state = endpoints::State {
        ready: ready_rx.clone(),
        metrics: metrics.clone(),
    };
    let probes = endpoints::bind(args.probe_addr, "probes").await?;
    let metrics_listener = endpoints::bind(args.metrics_addr, "metrics").await?;
    tokio::spawn(endpoints::serve(probes, state.clone(), endpoints::probes));
    tokio::spawn(endpoints::serve(
        metrics_listener,
        state,
        endpoints::metrics,
    ));
    let config = regcred_controller::Config {
        namespace_concurrency: args.namespace_concurrency,
        instance: args.instance,
        allow_controller_aws_identity: args.allow_controller_aws_identity,
        allowed_ecr_endpoints: args.allowed_ecr_endpoints,
        leader_election: args
            .leader_elect
            .then(|| regcred_controller::LeaseSettings {
                name: "regcred-controller".into(),
                namespace: args.namespace.clone(),
                identity,
                duration: args.lease_duration,
                renew_deadline: args.lease_renew_deadline,
                retry_period: args.lease_retry_period,
            }),
        admission: args.admission.settings(&args.namespace)?,
        namespace: args.namespace,
        ready: Some(ready),
        metrics,
    };
    tokio::select! {
        done = regcred_controller::run(client, config) => done?,
        () = stopped_before_ready(signals, ready_rx) => {
            tracing::info!("stop requested before the caches were listed");
        }
    }
    tracing::info!("regcred controller stopped");
    Ok(())
}

/// Resolves on SIGTERM or SIGINT received before the caches are listed. Until then no
/// reconcile has begun (each waits for the caches), so stopping at once loses nothing;
/// afterwards the controllers' own handlers (`shutdown_on_signal`) let in-flight
/// reconciles finish and `run` returns.
async fn stopped_before_ready(mut signals: Signals, ready: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = signals.terminate.recv() => {}
            _ = signals.interrupt.recv() => {}
        }
        if !*ready.borrow() {
            return;
        }
    }
}

struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

#[cfg(test)]
mod tests {
    /// The committed CRDs are generated from the types; a stale file fails here.
    #[test]
    fn committed_crds_are_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../crds/regcred.io_crds.yaml"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        let generated = super::crds_yaml().unwrap();
        assert!(
            committed == generated,
            "crds/regcred.io_crds.yaml is stale: run `cargo run -p regcred -- crds > crds/regcred.io_crds.yaml`"
        );
    }

    /// The Helm chart carries its own copy of the CRDs (a chart cannot read outside itself).
    #[test]
    fn the_charts_crds_are_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../charts/regcred/files/crds.yaml"
        );
        let copy = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            copy == super::crds_yaml().unwrap(),
            "charts/regcred/files/crds.yaml is stale: run `cargo run -p regcred -- crds > charts/regcred/files/crds.yaml`"
        );
    }
}
