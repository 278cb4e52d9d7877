//! `audit --registry HOST`: before a registry goes private (or after), what pulls from it
//! and what would fail to. Read-only, with cluster-wide paginated list calls only (never a
//! GET per object), so it costs the same few requests on 5 namespaces as on 5,000.
//!
//! Kubelet pulls with the Pod's own `imagePullSecrets`, which the ServiceAccount admission
//! plugin fills from the Pod's ServiceAccount only when the Pod lists none itself, and
//! only when the Pod is created. So:
//! - a workload's *new* Pods are covered when its template's own `imagePullSecrets` (if
//!   any) or else its ServiceAccount's name a pull Secret whose servers match every image
//!   from HOST, by kubelet's rules ([`regcred_providers::keyring`]);
//! - an *existing* Pod is covered only by what its own spec lists now: one created before
//!   coverage fails on its next pull (a restart with `Always`, a reschedule) and needs a
//!   restart once its workload is covered.

use futures::future::join_all;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use kube::api::ListParams;
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::clusters::{self, Cluster, ContextsArgs, KubeconfigArg, Unusable, classify, list_all};
use crate::output::{self, Format, Progress};
use crate::pull_secrets::{DOCKER_CFG, DOCKER_CONFIG_JSON};

mod analysis;
mod table;

use analysis::{Inventory, analyze, summarize};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The registry, as a pull Secret's server names it: `host[:port][/path]`, a label may
    /// be a glob (`*.example.com`). Images "come from" it when kubelet would use a
    /// credential filed under it for them.
    #[arg(long, value_name = "HOST")]
    pub registry: String,

    #[command(flatten)]
    pub contexts: ContextsArgs,

    /// Audit one namespace only (default: all).
    #[arg(short, long)]
    pub namespace: Option<String>,

    /// Objects per list request.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..))]
    pub chunk_size: u32,

    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The whole audit (`-o json|yaml`).
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub registry: String,
    /// Whether a Pod would fail to pull once the registry is private: a workload whose new
    /// Pods are not covered, or an existing Pod that is not.
    pub would_break: bool,
    /// Whether every context could be audited.
    pub complete: bool,
    pub summary: Summary,
    pub contexts: Vec<ContextReport>,
}

#[derive(Serialize, Debug, Default, Clone, Copy)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Namespaces with a workload or Pod whose images come from the registry.
    pub namespaces: usize,
    /// Of those, namespaces where a regcred credential's Secret covers those images.
    pub namespaces_covered_by_regcred: usize,
    pub workloads: usize,
    /// Workloads whose new Pods would not get a Secret for the registry.
    pub workloads_not_covered: usize,
    /// ServiceAccounts used by such workloads whose pull Secrets do not cover it.
    pub service_accounts_lacking: usize,
    /// Existing Pods whose own `imagePullSecrets` do not cover it.
    pub pods_to_restart: usize,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.namespaces += o.namespaces;
        self.namespaces_covered_by_regcred += o.namespaces_covered_by_regcred;
        self.workloads += o.workloads;
        self.workloads_not_covered += o.workloads_not_covered;
        self.service_accounts_lacking += o.service_accounts_lacking;
        self.pods_to_restart += o.pods_to_restart;
    }
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct ContextReport {
    pub context: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// List requests made.
    pub requests: usize,
    pub summary: Summary,
    pub namespaces: Vec<NamespaceReport>,
}

#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceReport {
    pub namespace: String,
    /// regcred credentials whose Secret here covers the registry's images.
    pub regcred_credentials: Vec<String>,
    pub workloads: Vec<Workload>,
    pub service_accounts_lacking: Vec<ServiceAccountReport>,
    pub pods_to_restart: Vec<PodReport>,
}

/// Whether a workload's new Pods get a Secret for the registry.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum NewPods {
    /// Their pull Secrets cover every image from the registry.
    Covered,
    /// They get the ServiceAccount's `imagePullSecrets`, which do not cover it.
    ServiceAccountLacks,
    /// The template lists `imagePullSecrets` of its own (so the ServiceAccount's are not
    /// added), and those do not cover it.
    OwnPullSecretsLack,
    /// The ServiceAccount does not exist: no Pod can be created.
    ServiceAccountMissing,
}

#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Workload {
    pub kind: &'static str,
    pub name: String,
    pub service_account: String,
    /// Its images that come from the registry.
    pub images: Vec<String>,
    /// `imagePullSecrets` of the template itself.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub own_pull_secrets: Vec<String>,
    pub new_pods: NewPods,
    /// The Secrets that cover the registry for its new Pods.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub covered_by: Vec<String>,
}

#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountReport {
    pub name: String,
    pub exists: bool,
    pub pull_secrets: Vec<String>,
    /// `Kind/name` of the workloads that use it.
    pub used_by: Vec<String>,
}

#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// `Kind/name` of the workload that made it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub pull_secrets: Vec<String>,
    /// What to do once its workload is covered.
    pub fix: String,
}

pub async fn run(
    kubeconfig: &KubeconfigArg,
    args: Args,
    progress: Progress,
) -> anyhow::Result<i32> {
    let clusters = clusters::connect_many(kubeconfig, &args.contexts).await?;
    let args = &args;
    let contexts = join_all(clusters.into_iter().map(|cluster| async move {
        match cluster {
            Ok(cluster) => audit_cluster(&cluster, args, progress).await,
            Err(Unusable { context, error }) => ContextReport {
                context,
                server: None,
                error: Some(error),
                requests: 0,
                summary: Summary::default(),
                namespaces: vec![],
            },
        }
    }))
    .await;
    let mut summary = Summary::default();
    for c in &contexts {
        summary.add(&c.summary);
    }
    let report = Report {
        registry: args.registry.clone(),
        would_break: summary.workloads_not_covered > 0 || summary.pods_to_restart > 0,
        complete: contexts.iter().all(|c| c.error.is_none()),
        summary,
        contexts,
    };
    match args.output {
        Format::Table => table::print(&report),
        format => output::document(format, &report)?,
    }
    Ok(if !report.complete {
        2
    } else if report.would_break {
        1
    } else {
        0
    })
}

async fn audit_cluster(cluster: &Cluster, args: &Args, progress: Progress) -> ContextReport {
    let mut report = ContextReport {
        context: cluster.context.clone(),
        server: Some(cluster.server.clone()),
        error: None,
        requests: 0,
        summary: Summary::default(),
        namespaces: vec![],
    };
    match gather(cluster, args, progress).await {
        Ok((inventory, requests)) => {
            report.requests = requests;
            report.namespaces = analyze(&args.registry, &inventory);
            report.summary = summarize(&report.namespaces);
            progress.say(format!(
                "context {}: audited in {requests} list requests",
                cluster.context
            ));
        }
        Err(e) => {
            let (reason, message) = classify(&e);
            progress.say(format!("context {}: {message}", cluster.context));
            report.error = Some(format!("{reason}: {message}"));
        }
    }
    report
}

async fn gather(
    cluster: &Cluster,
    args: &Args,
    progress: Progress,
) -> kube::Result<(Inventory, usize)> {
    let page = args.chunk_size;
    let namespace = args.namespace.as_deref();
    let all = ListParams::default();
    // Pull Secrets only (a field selector on the type): the audit never reads others.
    let config_json_params = all.clone().fields(&format!("type={DOCKER_CONFIG_JSON}"));
    let dockercfg_params = all.clone().fields(&format!("type={DOCKER_CFG}"));
    let (
        config_json,
        dockercfg,
        service_accounts,
        deployments,
        stateful_sets,
        daemon_sets,
        jobs,
        cron_jobs,
        pods,
    ) = futures::try_join!(
        list::<Secret>(
            cluster,
            namespace,
            &config_json_params,
            page,
            progress,
            "pull Secrets"
        ),
        list::<Secret>(
            cluster,
            namespace,
            &dockercfg_params,
            page,
            progress,
            "legacy pull Secrets"
        ),
        list::<ServiceAccount>(cluster, namespace, &all, page, progress, "ServiceAccounts"),
        list::<Deployment>(cluster, namespace, &all, page, progress, "Deployments"),
        list::<StatefulSet>(cluster, namespace, &all, page, progress, "StatefulSets"),
        list::<DaemonSet>(cluster, namespace, &all, page, progress, "DaemonSets"),
        list::<Job>(cluster, namespace, &all, page, progress, "Jobs"),
        list::<CronJob>(cluster, namespace, &all, page, progress, "CronJobs"),
        list::<Pod>(cluster, namespace, &all, page, progress, "Pods"),
    )?;
    let requests = [
        config_json.1,
        dockercfg.1,
        service_accounts.1,
        deployments.1,
        stateful_sets.1,
        daemon_sets.1,
        jobs.1,
        cron_jobs.1,
        pods.1,
    ]
    .iter()
    .sum();
    let mut secrets = config_json.0;
    secrets.extend(dockercfg.0);
    Ok((
        Inventory {
            secrets,
            service_accounts: service_accounts.0,
            deployments: deployments.0,
            stateful_sets: stateful_sets.0,
            daemon_sets: daemon_sets.0,
            jobs: jobs.0,
            cron_jobs: cron_jobs.0,
            pods: pods.0,
        },
        requests,
    ))
}

async fn list<K>(
    cluster: &Cluster,
    namespace: Option<&str>,
    params: &ListParams,
    page: u32,
    progress: Progress,
    what: &str,
) -> kube::Result<(Vec<K>, usize)>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(cluster.client.clone(), ns),
        None => Api::all(cluster.client.clone()),
    };
    let (items, requests) = list_all(&api, params, page).await?;
    progress.say(format!(
        "context {}: {} {what} ({requests} requests)",
        cluster.context,
        items.len()
    ));
    Ok((items, requests))
}
