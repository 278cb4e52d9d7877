//! `status`: every credential of every cluster asked, with whether it is healthy. Clusters
//! are queried concurrently; one that cannot be reached is reported and the others still
//! listed. Unhealthy (exit 1): not Ready, status behind the spec, a token that expires
//! within the threshold, a cluster that cannot be asked.

use std::time::Duration;

use futures::future::join_all;
use jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use regcred_api::{ClusterRegistryCredential, CredentialStatus, RegistryCredential};
use serde::Serialize;

use crate::clusters::{self, Cluster, ContextsArgs, KubeconfigArg, Unusable, classify, list_all};
use crate::output::{self, Format, Progress, Table, human, or_dash, parse_duration, relative};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub contexts: ContextsArgs,

    /// RegistryCredentials of every namespace (ClusterRegistryCredentials are always listed).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,

    /// The namespace of the RegistryCredentials (default: the context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,

    /// A token that expires sooner than this is unhealthy (regcred renews ECR tokens 4h
    /// before they expire, so one this close means renewal is failing).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    pub expiring_within: Duration,

    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The whole report (`-o json|yaml`).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Whether everything is Ready, current and far from expiry, and every cluster answered.
    pub healthy: bool,
    pub expiring_within_seconds: u64,
    pub clusters: Vec<ClusterReport>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Whether every list succeeded.
    pub reachable: bool,
    /// `Unreachable`, `Forbidden`, `NotInstalled`, `Unauthorized`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What was left out, e.g. ClusterRegistryCredentials a tenant may not list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub credentials: Vec<CredentialReport>,
}

/// One credential, as a person or a script checks it.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct CredentialReport {
    /// `RegistryCredential` or `ClusterRegistryCredential`.
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The Ready condition's status: `True`, `False`, or `Unknown` without one.
    pub ready: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registries: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_in_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_refresh_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_time: Option<String>,
    /// Namespaces with a current Secret / namespaces targeted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub synced: Option<String>,
    /// ServiceAccounts that list the Secret / ServiceAccounts targeted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_accounts: Option<String>,
    pub refresh_failures: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh_request: Option<String>,
    pub healthy: bool,
    /// Why it is not healthy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

impl CredentialReport {
    /// The report of one credential at `now`.
    pub fn new(
        kind: &'static str,
        namespace: Option<String>,
        name: String,
        generation: Option<i64>,
        status: Option<&CredentialStatus>,
        expiring_within: Duration,
        now: Timestamp,
    ) -> Self {
        let ready = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
        let expires_at = status.and_then(|s| s.expires_at.as_ref()).map(|t| t.0);
        let expires_in = expires_at.map(|t| t.as_second() - now.as_second());
        let mut problems = Vec::new();
        match ready {
            None => problems.push("no Ready condition yet".to_owned()),
            Some(c) if c.status != "True" => {
                problems.push(format!("not Ready ({}): {}", c.reason, c.message))
            }
            Some(_) => {}
        }
        let observed = status.and_then(|s| s.observed_generation);
        if status.is_some() && generation.is_some() && observed != generation {
            problems.push(format!(
                "status describes generation {}, the spec is at {}: the controller has not caught up",
                or_dash(observed),
                or_dash(generation)
            ));
        }
        match expires_in {
            Some(s) if s <= 0 => problems.push("the token has EXPIRED".to_owned()),
            Some(s) if (s as u64) < expiring_within.as_secs() => problems.push(format!(
                "the token expires in {}, within {}",
                human(Duration::from_secs(s as u64)),
                human(expiring_within)
            )),
            _ => {}
        }
        let targets = status.and_then(|s| s.targets.as_ref());
        CredentialReport {
            kind,
            namespace,
            name,
            ready: ready.map_or_else(|| "Unknown".to_owned(), |c| c.status.clone()),
            reason: ready.map(|c| c.reason.clone()),
            message: ready.map(|c| c.message.clone()).filter(|m| !m.is_empty()),
            registries: status.and_then(|s| s.registries.clone()),
            expires_at: expires_at.map(|t| t.to_string()),
            expires_in_seconds: expires_in,
            next_refresh_time: status
                .and_then(|s| s.next_refresh_time.as_ref())
                .map(|t| t.0.to_string()),
            last_refresh_time: status
                .and_then(|s| s.last_refresh_time.as_ref())
                .map(|t| t.0.to_string()),
            synced: targets.map(|t| t.synced.clone()),
            service_accounts: targets
                .map(|t| format!("{}/{}", t.service_accounts_patched, t.service_accounts)),
            refresh_failures: status.map_or(0, |s| s.refresh_failures),
            last_refresh_request: status.and_then(|s| s.last_refresh_request.clone()),
            healthy: problems.is_empty(),
            problems,
        }
    }

    pub fn from_namespaced(c: &RegistryCredential, within: Duration, now: Timestamp) -> Self {
        Self::new(
            "RegistryCredential",
            c.namespace(),
            c.name_any(),
            c.metadata.generation,
            c.status.as_ref(),
            within,
            now,
        )
    }

    pub fn from_cluster(c: &ClusterRegistryCredential, within: Duration, now: Timestamp) -> Self {
        Self::new(
            "ClusterRegistryCredential",
            None,
            c.name_any(),
            c.metadata.generation,
            c.status.as_ref(),
            within,
            now,
        )
    }
}

pub async fn run(
    kubeconfig: &KubeconfigArg,
    args: Args,
    progress: Progress,
) -> anyhow::Result<i32> {
    let clusters = clusters::connect_many(kubeconfig, &args.contexts).await?;
    let count = clusters.len();
    if count > 1 {
        progress.say(format!("querying {count} clusters"));
    }
    let args = &args;
    let timeout = kubeconfig.request_timeout;
    let reports = join_all(clusters.into_iter().map(|cluster| async move {
        match cluster {
            Ok(cluster) => {
                // A cluster that accepts connections and never answers must not hold up
                // the others: each request has its timeout, and so has the whole.
                let report =
                    match tokio::time::timeout(timeout * 3, one_cluster(&cluster, args)).await {
                        Ok(report) => report,
                        Err(_) => failed(
                            &cluster,
                            "Unreachable",
                            format!("no answer within {}", human(timeout * 3)),
                        ),
                    };
                if count > 1 {
                    progress.say(progress_line(&cluster.context, &report));
                }
                report
            }
            Err(Unusable { context, error }) => ClusterReport {
                context,
                server: None,
                reachable: false,
                error_reason: Some("BadContext".into()),
                error: Some(error),
                notes: vec![],
                credentials: vec![],
            },
        }
    }))
    .await;
    let healthy = reports
        .iter()
        .all(|r| r.reachable && r.credentials.iter().all(|c| c.healthy));
    let report = Report {
        healthy,
        expiring_within_seconds: args.expiring_within.as_secs(),
        clusters: reports,
    };
    match args.output {
        Format::Table => print_table(&report),
        format => output::document(format, &report)?,
    }
    Ok(if healthy { 0 } else { 1 })
}

fn progress_line(context: &str, report: &ClusterReport) -> String {
    match &report.error {
        Some(error) => format!("context {context}: {error}"),
        None => format!(
            "context {context}: {} credentials",
            report.credentials.len()
        ),
    }
}

fn failed(cluster: &Cluster, reason: &str, error: String) -> ClusterReport {
    ClusterReport {
        context: cluster.context.clone(),
        server: Some(cluster.server.clone()),
        reachable: false,
        error_reason: Some(reason.to_owned()),
        error: Some(error),
        notes: vec![],
        credentials: vec![],
    }
}

async fn one_cluster(cluster: &Cluster, args: &Args) -> ClusterReport {
    let namespaced: Api<RegistryCredential> = if args.all_namespaces {
        Api::all(cluster.client.clone())
    } else {
        let ns = args.namespace.as_deref().unwrap_or(&cluster.namespace);
        Api::namespaced(cluster.client.clone(), ns)
    };
    let cluster_wide: Api<ClusterRegistryCredential> = Api::all(cluster.client.clone());
    let params = ListParams::default();
    let (namespaced, cluster_wide) = futures::join!(
        list_all(&namespaced, &params, 500),
        list_all(&cluster_wide, &params, 500)
    );
    let now = Timestamp::now();
    let within = args.expiring_within;
    let mut credentials = Vec::new();
    let mut error = None;
    let mut notes = Vec::new();
    match cluster_wide {
        Ok((items, _)) => credentials.extend(
            items
                .iter()
                .map(|c| CredentialReport::from_cluster(c, within, now)),
        ),
        // A tenant may read its namespace's credentials and not the cluster's: that is
        // what it may see, not a failure.
        Err(e) if classify(&e).0 == "Forbidden" => {
            notes.push("ClusterRegistryCredentials not listed: forbidden".to_owned())
        }
        Err(e) => error = Some(e),
    }
    match namespaced {
        Ok((items, _)) => credentials.extend(
            items
                .iter()
                .map(|c| CredentialReport::from_namespaced(c, within, now)),
        ),
        Err(e) => error = error.or(Some(e)),
    }
    credentials
        .sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    let (error_reason, error) = match error.as_ref().map(classify) {
        None => (None, None),
        // Listing a kind answers 404 only when the kind is not served.
        Some(("NotFound", _)) => (
            Some("NotInstalled".to_owned()),
            Some("regcred's CRDs are not installed".to_owned()),
        ),
        Some((reason, message)) => (Some(reason.to_owned()), Some(message)),
    };
    ClusterReport {
        context: cluster.context.clone(),
        server: Some(cluster.server.clone()),
        reachable: error.is_none(),
        error_reason,
        error,
        notes,
        credentials,
    }
}

fn print_table(report: &Report) {
    let now = Timestamp::now();
    let many = report.clusters.len() > 1;
    let mut header = vec![];
    if many {
        header.push("CONTEXT");
    }
    header.extend([
        "KIND",
        "NAMESPACE",
        "NAME",
        "READY",
        "REASON",
        "EXPIRES IN",
        "NEXT REFRESH",
        "SYNCED",
        "SAS",
    ]);
    let mut table = Table::new(&header);
    for cluster in &report.clusters {
        let mut cells = |rest: Vec<String>| {
            let mut row = vec![];
            if many {
                row.push(cluster.context.clone());
            }
            row.extend(rest);
            table.row(row);
        };
        if let Some(reason) = &cluster.error_reason {
            let mut row = vec!["-".to_owned(); 9];
            row[4] = reason.clone();
            cells(row);
            continue;
        }
        for c in &cluster.credentials {
            let at = |t: &Option<String>| {
                t.as_deref()
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .map(|t| relative(t, now))
            };
            let mut reason = or_dash(c.reason.clone());
            if c.healthy {
            } else if c.ready == "True" {
                // Ready, but stale or close to expiry: say so in the table too.
                reason = format!("{reason} (!)");
            }
            cells(vec![
                short_kind(c.kind).to_owned(),
                or_dash(c.namespace.clone()),
                c.name.clone(),
                c.ready.clone(),
                reason,
                or_dash(at(&c.expires_at)),
                or_dash(at(&c.next_refresh_time)),
                or_dash(c.synced.clone()),
                or_dash(c.service_accounts.clone()),
            ]);
        }
    }
    if !table.is_empty() {
        table.print();
    }
    // Why each unhealthy thing is unhealthy: after the table, still on stdout, so a cron
    // mail says it all.
    let mut notes = Vec::new();
    for cluster in &report.clusters {
        let prefix = if many {
            format!("{}: ", cluster.context)
        } else {
            String::new()
        };
        if let Some(error) = &cluster.error {
            match &cluster.server {
                Some(server) => notes.push(format!("{prefix}cluster {server}: {error}")),
                None => notes.push(format!("{prefix}{error}")),
            }
        } else if cluster.credentials.is_empty() {
            notes.push(format!("{prefix}no credentials"));
        }
        notes.extend(cluster.notes.iter().map(|n| format!("{prefix}{n}")));
        for c in cluster.credentials.iter().filter(|c| !c.healthy) {
            let name = match &c.namespace {
                Some(ns) => format!("{}/{ns}/{}", short_kind(c.kind), c.name),
                None => format!("{}/{}", short_kind(c.kind), c.name),
            };
            notes.push(format!("{prefix}{name}: {}", c.problems.join("; ")));
        }
    }
    if !notes.is_empty() {
        if !table.is_empty() {
            println!();
        }
        for note in notes {
            println!("{note}");
        }
    }
}

/// The kinds' short names, as `kubectl get` takes them.
pub fn short_kind(kind: &str) -> &'static str {
    match kind {
        "ClusterRegistryCredential" => "cregcred",
        _ => "regcred",
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn status(ready: &str, expires_in: Option<i64>, now: Timestamp) -> CredentialStatus {
        CredentialStatus {
            observed_generation: Some(1),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ready.into(),
                reason: if ready == "True" {
                    "Synced"
                } else {
                    "SourceNotFound"
                }
                .into(),
                message: "m".into(),
                observed_generation: Some(1),
                last_transition_time: Time(now),
            }],
            expires_at: expires_in
                .map(|s| Time(Timestamp::from_second(now.as_second() + s).unwrap())),
            ..Default::default()
        }
    }

    fn report(s: &CredentialStatus, generation: i64, now: Timestamp) -> CredentialReport {
        CredentialReport::new(
            "RegistryCredential",
            Some("ns".into()),
            "c".into(),
            Some(generation),
            Some(s),
            Duration::from_secs(3600),
            now,
        )
    }

    #[test]
    fn health_is_ready_current_and_far_from_expiry() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        assert!(report(&status("True", None, now), 1, now).healthy);
        assert!(report(&status("True", Some(7200), now), 1, now).healthy);
        let close = report(&status("True", Some(600), now), 1, now);
        assert!(!close.healthy);
        assert!(
            close.problems[0].contains("expires in 10m0s"),
            "{:?}",
            close.problems
        );
        assert!(!report(&status("True", Some(-1), now), 1, now).healthy);
        assert!(!report(&status("False", None, now), 1, now).healthy);
        let stale = report(&status("True", None, now), 2, now);
        assert!(!stale.healthy && stale.problems[0].contains("generation 1"));
        let none = CredentialReport::new(
            "RegistryCredential",
            None,
            "c".into(),
            Some(1),
            None,
            Duration::ZERO,
            now,
        );
        assert_eq!((none.ready.as_str(), none.healthy), ("Unknown", false));
    }
}
