//! `kubectl regcred`: is every cluster's pull credential healthy, renew one now, what would
//! break if a registry went private, and what a pull Secret holds (never its password).
//!
//! A kubectl plugin: installed as `kubectl-regcred` on the PATH, kubectl runs it for
//! `kubectl regcred ...`. Tables and documents go to stdout, progress to stderr.
//!
//! Exit codes: 0 all is well; 1 something was found (a credential not healthy, a cluster
//! that could not be asked, something that would break, a refresh that did not end Ready);
//! 2 the command could not do its job (bad arguments, no kubeconfig, an audit that could
//! not list everything).
#![forbid(unsafe_code)]

mod audit;
mod clusters;
mod inspect;
mod output;
mod pull_secrets;
mod refresh;
mod status;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "kubectl-regcred",
    bin_name = "kubectl regcred",
    version,
    about = "regcred's kubectl plugin: credential status across clusters, refresh, audit before going private, pull Secret inspection"
)]
struct Cli {
    #[command(flatten)]
    kubeconfig: clusters::KubeconfigArg,

    /// No progress on stderr.
    #[arg(short, long, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every credential's health, per cluster; exits 1 when anything is not healthy.
    Status(status::Args),
    /// Renew a credential now (sets regcred.io/refresh); --wait shows the new expiry.
    Refresh(refresh::Args),
    /// What pulls from a registry and what would fail if it went private (read-only).
    Audit(audit::Args),
    /// Show what an object holds, without secrets.
    #[command(subcommand)]
    Inspect(inspect::What),
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    let progress = output::Progress { quiet: cli.quiet };
    let kubeconfig = &cli.kubeconfig;
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Status(args) => status::run(kubeconfig, args, progress).await,
            Command::Refresh(args) => refresh::run(kubeconfig, args, progress).await,
            Command::Audit(args) => audit::run(kubeconfig, args, progress).await,
            Command::Inspect(what) => inspect::run(kubeconfig, what).await,
        }
    });
    let code = match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    };
    std::process::exit(code);
}
