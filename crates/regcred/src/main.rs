//! The `regcred` command: the controller, and the CRDs it serves.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::prelude::*;

/// At trace level the AWS SDK logs whole HTTP bodies, ECR tokens and STS web identity
/// tokens among them: those events are dropped whatever `RUST_LOG` asks for.
fn not_an_sdk_body(metadata: &tracing::Metadata<'_>) -> bool {
    !(metadata.target().starts_with("aws_smithy") && *metadata.level() == tracing::Level::TRACE)
}

#[derive(Parser)]
#[command(
    name = "regcred",
    version,
    about = "Keeps private-registry pull credentials right across a cluster"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses the in-cluster config or KUBECONFIG).
    Run(RunArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Log format.
    #[arg(long, env = "REGCRED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// How many namespaces one credential writes to at once.
    #[arg(long, env = "REGCRED_NAMESPACE_CONCURRENCY", default_value_t = 16)]
    namespace_concurrency: usize,
    /// This replica's name, reported in Events (set from the Pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Let RegistryCredentials (tenants) use the controller's own AWS identity for ECR.
    /// Off by default: a tenant must not borrow the controller's permissions.
    #[arg(long, env = "REGCRED_ALLOW_CONTROLLER_AWS_IDENTITY")]
    allow_controller_aws_identity: bool,
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
        Command::Run(args) => run(args).await?,
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
                .with_filter(filter_fn(not_an_sdk_body)),
        )
        .init();
    let client = kube::Client::try_default().await?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "regcred controller starting"
    );
    let config = regcred_controller::Config {
        namespace_concurrency: args.namespace_concurrency,
        instance: args.instance,
        allow_controller_aws_identity: args.allow_controller_aws_identity,
    };
    regcred_controller::run(client, config).await;
    tracing::info!("regcred controller stopped");
    Ok(())
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
}
