//! `refresh`: sets `regcred.io/refresh` to a new value, which makes the controller re-read
//! the sources (mint a new token) and rewrite the Secrets; with `--wait`, waits until the
//! status echoes the value in `lastRefreshRequest` and shows the new expiry.

use std::fmt::Debug;
use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, Resource, ResourceExt};
use regcred_api::names::REFRESH_ANNOTATION;
use regcred_api::{ClusterRegistryCredential, CredentialStatus, RegistryCredential};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::clusters::{self, ContextArg, KubeconfigArg, classify};
use crate::output::{self, Format, Progress, human, parse_duration, relative};
use crate::status::{CredentialReport, short_kind};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The credential's name.
    pub name: String,

    /// The RegistryCredential's namespace (default: the context's).
    #[arg(short, long, conflicts_with = "cluster")]
    pub namespace: Option<String>,

    /// NAME is a ClusterRegistryCredential.
    #[arg(long)]
    pub cluster: bool,

    #[command(flatten)]
    pub context: ContextArg,

    /// Wait until the controller has acted on the request, and show the new expiry.
    #[arg(long)]
    pub wait: bool,

    /// How long `--wait` waits.
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,

    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// What `-o json|yaml` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Outcome {
    /// The value set on `regcred.io/refresh`.
    refresh_request: String,
    /// Whether the controller acted on it (only known with `--wait`).
    acknowledged: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_expires_at: Option<String>,
    credential: CredentialReport,
}

/// The two kinds, alike for this command.
trait Credential:
    Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static
{
    fn status(&self) -> Option<&CredentialStatus>;
    fn report(&self, now: Timestamp) -> CredentialReport;
}

impl Credential for RegistryCredential {
    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }
    fn report(&self, now: Timestamp) -> CredentialReport {
        CredentialReport::from_namespaced(self, Duration::ZERO, now)
    }
}

impl Credential for ClusterRegistryCredential {
    fn status(&self) -> Option<&CredentialStatus> {
        self.status.as_ref()
    }
    fn report(&self, now: Timestamp) -> CredentialReport {
        CredentialReport::from_cluster(self, Duration::ZERO, now)
    }
}

pub async fn run(
    kubeconfig: &KubeconfigArg,
    args: Args,
    progress: Progress,
) -> anyhow::Result<i32> {
    let cluster = clusters::connect_one(kubeconfig, &args.context).await?;
    if args.cluster {
        let api: Api<ClusterRegistryCredential> = Api::all(cluster.client);
        refresh(api, &args, progress).await
    } else {
        let ns = args.namespace.as_deref().unwrap_or(&cluster.namespace);
        let api: Api<RegistryCredential> = Api::namespaced(cluster.client.clone(), ns);
        refresh(api, &args, progress).await
    }
}

async fn refresh<K: Credential>(
    api: Api<K>,
    args: &Args,
    progress: Progress,
) -> anyhow::Result<i32> {
    // Unique per request, readable, and what the Argo CD action writes too.
    let value = Timestamp::now().to_string();
    let patch = json!({"metadata": {"annotations": {REFRESH_ANNOTATION: value}}});
    let before = api
        .patch(&args.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(|e| describe(&e, args))?;
    let label = label(&before);
    let previous_expiry = before
        .status()
        .and_then(|s| s.expires_at.as_ref())
        .map(|t| t.0);
    if !args.wait {
        let outcome = Outcome {
            refresh_request: value.clone(),
            acknowledged: false,
            previous_expires_at: previous_expiry.map(|t| t.to_string()),
            credential: before.report(Timestamp::now()),
        };
        return match args.output {
            Format::Table => {
                println!("{label}: refresh requested ({REFRESH_ANNOTATION}={value})");
                Ok(0)
            }
            format => output::document(format, &outcome).map(|()| 0),
        };
    }
    progress.say(format!(
        "{label}: refresh requested, waiting up to {} for the controller",
        human(args.timeout)
    ));
    // Polled rather than watched: a watch outlives the per-request timeout, and a GET a
    // second for a minute or two costs the API server nothing.
    let after = match tokio::time::timeout(args.timeout, acknowledged(&api, &args.name, &value))
        .await
    {
        Err(_) => {
            eprintln!(
                "{label}: the controller has not acted on the refresh within {} (is it running?)",
                human(args.timeout)
            );
            return Ok(1);
        }
        Ok(Err(e)) => return Err(describe(&e, args)),
        Ok(Ok(after)) => after,
    };
    let now = Timestamp::now();
    let report = after.report(now);
    let ready = report.ready == "True";
    match args.output {
        Format::Table => {
            println!(
                "{label} refreshed: Ready {} ({})",
                report.ready,
                report.reason.as_deref().unwrap_or("-")
            );
            if !ready && let Some(message) = &report.message {
                println!("  {message}");
            }
            let expiry = after
                .status()
                .and_then(|s| s.expires_at.as_ref())
                .map(|t| t.0);
            match expiry {
                Some(at) => {
                    let was = match previous_expiry {
                        Some(p) if p == at => " (unchanged)".to_owned(),
                        Some(p) => format!(" (was {p})"),
                        None => String::new(),
                    };
                    println!("  expires at {at}, in {}{was}", relative(at, now));
                }
                None => println!("  no expiry (static credentials do not expire)"),
            }
            if let Some(next) = after.status().and_then(|s| s.next_refresh_time.as_ref()) {
                println!("  next refresh at {}, in {}", next.0, relative(next.0, now));
            }
        }
        format => output::document(
            format,
            &Outcome {
                refresh_request: value,
                acknowledged: true,
                previous_expires_at: previous_expiry.map(|t| t.to_string()),
                credential: report,
            },
        )?,
    }
    Ok(if ready { 0 } else { 1 })
}

/// The credential once its status echoes `value` for its current generation. A failed
/// GET is retried (the deadline is the caller's), except when the credential is gone.
async fn acknowledged<K: Credential>(
    api: &Api<K>,
    name: &str,
    value: &str,
) -> Result<K, kube::Error> {
    loop {
        match api.get(name).await {
            Ok(c) => {
                let done = c.status().is_some_and(|s| {
                    s.last_refresh_request.as_deref() == Some(value)
                        && s.observed_generation == c.meta().generation
                });
                if done {
                    return Ok(c);
                }
            }
            Err(e @ kube::Error::Api(_)) if classify(&e).0 == "NotFound" => return Err(e),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn label<K: Credential>(c: &K) -> String {
    let kind = short_kind(&K::kind(&()));
    match c.namespace() {
        Some(ns) => format!("{kind}/{ns}/{}", c.name_any()),
        None => format!("{kind}/{}", c.name_any()),
    }
}

fn describe(e: &kube::Error, args: &Args) -> anyhow::Error {
    let (reason, message) = classify(e);
    let kind = if args.cluster {
        "ClusterRegistryCredential"
    } else {
        "RegistryCredential"
    };
    match reason {
        "NotFound" => anyhow::anyhow!(
            "{kind} {} not found{}",
            args.name,
            if args.cluster {
                ""
            } else {
                " (a ClusterRegistryCredential? add --cluster)"
            }
        ),
        _ => anyhow::anyhow!("cannot refresh {kind} {}: {message}", args.name),
    }
}
