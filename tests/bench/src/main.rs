//! regcred's benchmark: regcred, the limit (a minimal writer) and the script way, each a
//! separate process under its own identity, on the real test bed; requests from the API
//! server's audit log, latencies from watch events, memory from VmHWM. Prints the tables
//! and writes `results.json`, `results.md` and SVG charts. `hack/bench.sh` runs it on
//! release builds; docs/benchmarks.md says what each number means.
#![forbid(unsafe_code)]

mod contenders;
mod dockerconfig;
mod limit;
mod observe;
mod plot;
mod report;
mod requests;
mod results;
mod scenarios;
mod script;
mod seed;
mod webhook;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use regcred_testkit::TestBed;
use serde_json::json;

use crate::contenders::Kind;
use crate::observe::Observer;
use crate::scenarios::{Bench, ECR_SECRET, PULL_SECRET, Scope};

#[derive(Parser)]
#[command(about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Command {
    /// The minimal writer, as the bench runs it (a contender, not a tool).
    Limit(limit::LimitArgs),
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Namespace counts for every scenario.
    #[arg(long, value_delimiter = ',', default_value = "300,1000")]
    sizes: Vec<usize>,
    /// More namespace counts, for cold convergence and memory only (regcred as shipped and
    /// the limit).
    #[arg(long, value_delimiter = ',', default_value = "5000")]
    memory_sizes: Vec<usize>,
    /// regcred (as shipped, its webhook on), regcred-watch (the webhook off), limit,
    /// script.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "regcred,regcred-watch,limit,script"
    )]
    contenders: Vec<Kind>,
    /// The script way runs up to this many namespaces (it takes about 0.5 s per namespace).
    #[arg(long, default_value_t = 300)]
    script_max: usize,
    /// ServiceAccounts per namespace, `default` included.
    #[arg(long, default_value_t = 3)]
    service_accounts: usize,
    /// Namespaces created while each contender runs.
    #[arg(long, default_value_t = 200)]
    new_namespaces: usize,
    /// Their creation rate, per second.
    #[arg(long, default_value_t = 10.0)]
    new_namespace_rate: f64,
    /// Seconds of steady state watched for writes.
    #[arg(long, default_value_t = 60)]
    idle_seconds: u64,
    /// Unmanaged Secrets seeded (ballast no contender should cache)...
    #[arg(long, default_value_t = 2000)]
    ballast_secrets: usize,
    /// ...of this many KiB each...
    #[arg(long, default_value_t = 50)]
    ballast_kib: usize,
    /// ...and unrelated ServiceAccounts.
    #[arg(long, default_value_t = 2000)]
    ballast_service_accounts: usize,
    /// Cold starts timed per contender and size (the median is reported): one alone is
    /// at the mercy of a noisy 2-core machine.
    #[arg(long, default_value_t = 3)]
    cold_starts: usize,
    /// Namespaces each contender works on at once (regcred's default).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Lifetime of the ECR tokens in the ECR scenario (regcred, largest size).
    #[arg(long, default_value_t = 60)]
    ecr_lifetime: u64,
    /// Refreshes watched in the ECR scenario (0: skip it).
    #[arg(long, default_value_t = 2)]
    ecr_refreshes: usize,
    /// No scenario may take longer than this (seconds): the bench fails instead.
    #[arg(long, default_value_t = 1800)]
    timeout_seconds: u64,
    /// Where results.json, results.md and the charts go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new()?;
    match cli.command {
        Some(Command::Limit(args)) => runtime.block_on(limit::run(args)),
        None => {
            // Before the runtime: starting the bed blocks.
            let bed = TestBed::get();
            runtime.block_on(bench(bed, cli.bench))
        }
    }
}

async fn bench(bed: &'static TestBed, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.service_accounts >= 1,
        "--service-accounts counts `default`: at least 1"
    );
    anyhow::ensure!(args.cold_starts >= 1, "--cold-starts: at least 1");
    let regcred_bin = std::env::var_os("REGCRED_BIN")
        .map(PathBuf::from)
        .ok_or_else(|| {
            anyhow::anyhow!("REGCRED_BIN must name the regcred binary (hack/bench.sh sets it)")
        })?;
    let started = Instant::now();
    let client = bed.admin_client().await;
    seed::identities(bed);
    let t = Instant::now();
    seed::ballast(
        &client,
        args.ballast_secrets,
        args.ballast_kib,
        args.ballast_service_accounts,
    )
    .await;
    println!(
        "ballast: {} Secrets × {} KiB and {} ServiceAccounts in {:.1}s",
        args.ballast_secrets,
        args.ballast_kib,
        args.ballast_service_accounts,
        t.elapsed().as_secs_f64()
    );
    let observer = Observer::start(
        client.clone(),
        &[
            (PULL_SECRET, &bed.registry().host),
            (ECR_SECRET, &bed.info.aws.ecr_registry),
        ],
    )
    .await;
    let bench = Bench {
        bed,
        client,
        audit: bed.audit(),
        observer,
        regcred_bin,
        service_accounts: args.service_accounts,
        concurrency: args.concurrency,
        cold_starts: args.cold_starts,
        idle: Duration::from_secs(args.idle_seconds),
        new_namespaces: args.new_namespaces,
        new_namespace_rate: args.new_namespace_rate,
        ecr_lifetime: args.ecr_lifetime,
        ecr_refreshes: args.ecr_refreshes,
        timeout: Duration::from_secs(args.timeout_seconds),
    };
    let mut sizes = args.sizes.clone();
    sizes.sort();
    sizes.dedup();
    let largest = sizes.last().copied();
    let mut memory_sizes: Vec<usize> = args
        .memory_sizes
        .iter()
        .copied()
        .filter(|s| !sizes.contains(s))
        .collect();
    memory_sizes.sort();
    memory_sizes.dedup();
    let mut contenders = args.contenders.clone();
    contenders.sort();
    contenders.dedup();

    let machine = json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kubernetes": bed.info.k8s_version,
    });
    let mut results = vec![];
    // The outputs are written after every run: a long run stopped early keeps what it has.
    let write = |results: &[results::RunResult]| -> anyhow::Result<String> {
        let table = report::markdown(results);
        std::fs::create_dir_all(&args.out)?;
        let document = json!({
            "machine": machine,
            "arguments": format!("{args:?}"),
            "seconds": started.elapsed().as_secs(),
            "results": results,
        });
        std::fs::write(
            args.out.join("results.json"),
            serde_json::to_vec_pretty(&document)?,
        )?;
        std::fs::write(args.out.join("results.md"), &table)?;
        for (name, svg) in plot::charts(results) {
            std::fs::write(args.out.join(name), svg)?;
        }
        Ok(table)
    };
    for &size in &sizes {
        let kinds: Vec<Kind> = contenders
            .iter()
            .copied()
            .filter(|&k| k != Kind::Script || size <= args.script_max)
            .collect();
        let ecr = args.ecr_refreshes > 0 && Some(size) == largest;
        results.extend(bench.run(&kinds, size, Scope::Full { ecr }).await);
        write(&results)?;
    }
    for &size in &memory_sizes {
        let kinds: Vec<Kind> = contenders
            .iter()
            .copied()
            .filter(|&k| k.at_memory_sizes())
            .collect();
        results.extend(bench.run(&kinds, size, Scope::ColdOnly).await);
        write(&results)?;
    }
    let table = write(&results)?;
    println!("\n{table}");
    println!(
        "wrote {}/results.json, results.md and the charts in {:.0}s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
