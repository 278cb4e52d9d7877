//! The audit's answers from one cluster's lists (pure): which workloads and Pods pull
//! from the registry, whether their pull Secrets cover it as kubelet matches them, and
//! what to do about those that do not.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodSpec, PodTemplateSpec, Secret, ServiceAccount};
use kube::ResourceExt;
use regcred_api::names::{MANAGED_LABEL, OWNER_ANNOTATION};
use regcred_providers::keyring::{self, Keyring};

use super::{NamespaceReport, NewPods, PodReport, ServiceAccountReport, Summary, Workload};
use crate::pull_secrets;

/// What the lists of one cluster hold.
#[derive(Default)]
pub(super) struct Inventory {
    pub(super) secrets: Vec<Secret>,
    pub(super) service_accounts: Vec<ServiceAccount>,
    pub(super) deployments: Vec<Deployment>,
    pub(super) stateful_sets: Vec<StatefulSet>,
    pub(super) daemon_sets: Vec<DaemonSet>,
    pub(super) jobs: Vec<Job>,
    pub(super) cron_jobs: Vec<CronJob>,
    pub(super) pods: Vec<Pod>,
}

/// A Pod template (or a bare Pod) that may pull from the registry.
struct Template<'a> {
    namespace: String,
    kind: &'static str,
    name: String,
    spec: &'a PodSpec,
}

fn template<'a>(
    kind: &'static str,
    meta: &impl ResourceExt,
    t: Option<&'a PodTemplateSpec>,
) -> Option<Template<'a>> {
    Some(Template {
        namespace: meta.namespace()?,
        kind,
        name: meta.name_any(),
        spec: t?.spec.as_ref()?,
    })
}

/// Every image a Pod spec pulls.
fn images(spec: &PodSpec) -> impl Iterator<Item = &str> {
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(|c| c.image.as_deref());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter_map(|c| c.image.as_deref());
    spec.containers
        .iter()
        .filter_map(|c| c.image.as_deref())
        .chain(init)
        .chain(ephemeral)
}

fn service_account(spec: &PodSpec) -> String {
    spec.service_account_name
        .clone()
        .or_else(|| spec.service_account.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

fn pull_secret_names(spec: &PodSpec) -> Vec<String> {
    spec.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .filter(|n| !n.is_empty())
        .collect()
}

/// A Job that will make no more Pods.
fn finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

fn controller_of(meta: &impl ResourceExt) -> Option<(String, String)> {
    let refs = meta.owner_references();
    refs.iter()
        .find(|o| o.controller == Some(true))
        .or(refs.first())
        .map(|o| (o.kind.clone(), o.name.clone()))
}

/// What the audit needs of a pull Secret.
struct PullSecret {
    servers: Vec<String>,
    /// The regcred credential its annotation names, when it carries regcred's label.
    owner: Option<String>,
}

/// The audit of one cluster's inventory, by namespace (pure).
pub(super) fn analyze(registry: &str, inv: &Inventory) -> Vec<NamespaceReport> {
    // Pull Secrets by namespace and name: their servers, and the regcred credential that
    // owns them (from its annotation).
    let mut secrets: HashMap<(&str, &str), PullSecret> = HashMap::new();
    for s in &inv.secrets {
        let (Some(ns), Some(name)) = (s.metadata.namespace.as_deref(), s.metadata.name.as_deref())
        else {
            continue;
        };
        let owner = (s.labels().get(MANAGED_LABEL).map(String::as_str) == Some("true"))
            .then(|| s.annotations().get(OWNER_ANNOTATION).cloned())
            .flatten();
        let servers = pull_secrets::servers(s);
        secrets.insert((ns, name), PullSecret { servers, owner });
    }
    let accounts: HashMap<(String, String), Vec<String>> = inv
        .service_accounts
        .iter()
        .filter_map(|sa| {
            let names = sa
                .image_pull_secrets
                .iter()
                .flatten()
                .map(|r| r.name.clone())
                .collect();
            Some(((sa.namespace()?, sa.name_any()), names))
        })
        .collect();
    // The Secrets among `names` in `ns` that cover every one of `repos`.
    let covering = |ns: &str, names: &[String], repos: &[String]| -> (bool, Vec<String>) {
        let mut keyring = Keyring::default();
        let mut useful = Vec::new();
        for name in names {
            if let Some(secret) = secrets.get(&(ns, name.as_str())) {
                let own = Keyring::new(&secret.servers);
                if repos.iter().any(|r| own.covers(r)) {
                    useful.push(name.clone());
                }
                keyring.extend(&secret.servers);
            }
        }
        (repos.iter().all(|r| keyring.covers(r)), useful)
    };
    let from_registry = |spec: &PodSpec| -> (Vec<String>, Vec<String>) {
        let mut shown = BTreeSet::new();
        let mut repos = BTreeSet::new();
        for image in images(spec) {
            if let Some(repo) = keyring::repository(image)
                && keyring::matches(registry, &repo)
            {
                shown.insert(image.to_owned());
                repos.insert(repo);
            }
        }
        (shown.into_iter().collect(), repos.into_iter().collect())
    };

    let jobs_of_cron_jobs: HashMap<(String, String), String> = inv
        .jobs
        .iter()
        .filter_map(|j| {
            let (kind, owner) = controller_of(j)?;
            (kind == "CronJob").then_some(((j.namespace()?, j.name_any()), owner))
        })
        .collect();

    let mut templates: Vec<Template> = Vec::new();
    templates.extend(
        inv.deployments
            .iter()
            .filter_map(|d| template("Deployment", d, d.spec.as_ref().map(|s| &s.template))),
    );
    templates.extend(
        inv.stateful_sets
            .iter()
            .filter_map(|d| template("StatefulSet", d, d.spec.as_ref().map(|s| &s.template))),
    );
    templates.extend(
        inv.daemon_sets
            .iter()
            .filter_map(|d| template("DaemonSet", d, d.spec.as_ref().map(|s| &s.template))),
    );
    templates.extend(
        inv.jobs
            .iter()
            // A CronJob's Jobs have its template; finished Jobs make no more Pods.
            .filter(|j| controller_of(*j).is_none_or(|(kind, _)| kind != "CronJob") && !finished(j))
            .filter_map(|j| template("Job", j, j.spec.as_ref().map(|s| &s.template))),
    );
    templates.extend(inv.cron_jobs.iter().filter_map(|c| {
        template(
            "CronJob",
            c,
            c.spec
                .as_ref()
                .and_then(|s| s.job_template.spec.as_ref())
                .map(|s| &s.template),
        )
    }));
    let live = |p: &&Pod| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    };
    templates.extend(
        inv.pods
            .iter()
            .filter(live)
            .filter(|p| p.owner_references().is_empty())
            .filter_map(|p| {
                Some(Template {
                    namespace: p.namespace()?,
                    kind: "Pod",
                    name: p.name_any(),
                    spec: p.spec.as_ref()?,
                })
            }),
    );

    let mut namespaces: BTreeMap<String, NamespaceReport> = BTreeMap::new();
    let mut repos_by_namespace: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut lacking: BTreeMap<(String, String), ServiceAccountReport> = BTreeMap::new();
    let mut verdicts: HashMap<(String, &'static str, String), (NewPods, String)> = HashMap::new();
    for t in &templates {
        let (shown, repos) = from_registry(t.spec);
        if shown.is_empty() {
            continue;
        }
        let ns = t.namespace.as_str();
        repos_by_namespace
            .entry(ns.to_owned())
            .or_default()
            .extend(repos.iter().cloned());
        let sa = service_account(t.spec);
        let own = pull_secret_names(t.spec);
        let (new_pods, covered_by) = if !own.is_empty() || t.kind == "Pod" {
            // A Pod's list is what admission gave it; a template's own list wins over the
            // ServiceAccount's.
            match covering(ns, &own, &repos) {
                (true, by) => (NewPods::Covered, by),
                (false, _) => (NewPods::OwnPullSecretsLack, vec![]),
            }
        } else {
            match accounts.get(&(ns.to_owned(), sa.clone())) {
                None => (NewPods::ServiceAccountMissing, vec![]),
                Some(names) => match covering(ns, names, &repos) {
                    (true, by) => (NewPods::Covered, by),
                    (false, _) => (NewPods::ServiceAccountLacks, vec![]),
                },
            }
        };
        if matches!(
            new_pods,
            NewPods::ServiceAccountLacks | NewPods::ServiceAccountMissing
        ) {
            let entry = lacking
                .entry((ns.to_owned(), sa.clone()))
                .or_insert_with(|| ServiceAccountReport {
                    name: sa.clone(),
                    exists: new_pods == NewPods::ServiceAccountLacks,
                    pull_secrets: accounts
                        .get(&(ns.to_owned(), sa.clone()))
                        .cloned()
                        .unwrap_or_default(),
                    used_by: vec![],
                });
            entry.used_by.push(format!("{}/{}", t.kind, t.name));
        }
        verdicts.insert(
            (ns.to_owned(), t.kind, t.name.clone()),
            (new_pods, sa.clone()),
        );
        namespaces
            .entry(ns.to_owned())
            .or_insert_with(|| NamespaceReport {
                namespace: ns.to_owned(),
                ..Default::default()
            })
            .workloads
            .push(Workload {
                kind: t.kind,
                name: t.name.clone(),
                service_account: sa,
                images: shown,
                own_pull_secrets: if t.kind == "Pod" { vec![] } else { own },
                new_pods,
                covered_by,
            });
    }

    // Existing Pods: only their own list counts.
    for pod in inv.pods.iter().filter(live) {
        let (Some(ns), Some(spec)) = (pod.namespace(), pod.spec.as_ref()) else {
            continue;
        };
        let (shown, repos) = from_registry(spec);
        if shown.is_empty() {
            continue;
        }
        repos_by_namespace
            .entry(ns.clone())
            .or_default()
            .extend(repos.iter().cloned());
        let own = pull_secret_names(spec);
        if covering(&ns, &own, &repos).0 {
            continue;
        }
        let owner = controller_of(pod).map(|(kind, name)| match kind.as_str() {
            // A ReplicaSet's Pods carry its template hash, the suffix of its name after
            // the Deployment's.
            "ReplicaSet" => match pod
                .labels()
                .get("pod-template-hash")
                .and_then(|h| name.strip_suffix(&format!("-{h}")))
            {
                Some(deployment) => ("Deployment".to_owned(), deployment.to_owned()),
                None => (kind, name),
            },
            "Job" => match jobs_of_cron_jobs.get(&(ns.clone(), name.clone())) {
                Some(cron_job) => ("CronJob".to_owned(), cron_job.clone()),
                None => (kind, name),
            },
            _ => (kind, name),
        });
        let fix = fix(&ns, owner.as_ref(), &verdicts);
        namespaces
            .entry(ns.clone())
            .or_insert_with(|| NamespaceReport {
                namespace: ns.clone(),
                ..Default::default()
            })
            .pods_to_restart
            .push(PodReport {
                name: pod.name_any(),
                phase: pod.status.as_ref().and_then(|s| s.phase.clone()),
                owner: owner.map(|(kind, name)| format!("{kind}/{name}")),
                pull_secrets: own,
                fix,
            });
    }

    for ((ns, _), mut sa) in lacking {
        sa.used_by.sort();
        if let Some(report) = namespaces.get_mut(&ns) {
            report.service_accounts_lacking.push(sa);
        }
    }
    // A regcred credential covers the namespace when its Secret there covers every image
    // from the registry that the namespace uses.
    let mut owners: HashMap<&str, Vec<(&str, &Vec<String>)>> = HashMap::new();
    for ((ns, _), secret) in &secrets {
        if let Some(owner) = &secret.owner {
            owners
                .entry(ns)
                .or_default()
                .push((owner.as_str(), &secret.servers));
        }
    }
    for (ns, report) in namespaces.iter_mut() {
        let repos = repos_by_namespace.get(ns).cloned().unwrap_or_default();
        let mut credentials: Vec<String> = owners
            .get(ns.as_str())
            .into_iter()
            .flatten()
            .filter(|(_, servers)| {
                let keyring = Keyring::new(*servers);
                repos.iter().all(|r| keyring.covers(r))
            })
            .map(|(owner, _)| owner.to_string())
            .collect();
        credentials.sort();
        credentials.dedup();
        report.regcred_credentials = credentials;
        report
            .workloads
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
        report.pods_to_restart.sort_by(|a, b| a.name.cmp(&b.name));
    }
    namespaces.into_values().collect()
}

/// What to do about an existing Pod that lacks the Secret.
fn fix(
    ns: &str,
    owner: Option<&(String, String)>,
    verdicts: &HashMap<(String, &'static str, String), (NewPods, String)>,
) -> String {
    let Some((kind, name)) = owner else {
        return "recreate the Pod once its ServiceAccount is covered".to_owned();
    };
    let verdict = ["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"]
        .into_iter()
        .find(|k| k == kind)
        .and_then(|k| verdicts.get(&(ns.to_owned(), k, name.clone())));
    let first = match verdict {
        Some((NewPods::Covered, _)) | None => String::new(),
        Some((NewPods::OwnPullSecretsLack, _)) => {
            format!("add the Secret to {kind}/{name}'s imagePullSecrets, then ")
        }
        Some((_, sa)) => format!("cover ServiceAccount {sa}, then "),
    };
    let then = match kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" => format!(
            "kubectl -n {ns} rollout restart {}/{name}",
            kind.to_lowercase()
        ),
        "CronJob" => "its next run is covered; delete this Pod if it must not wait".to_owned(),
        _ => "recreate the Pod".to_owned(),
    };
    format!("{first}{then}")
}

pub(super) fn summarize(namespaces: &[NamespaceReport]) -> Summary {
    let mut s = Summary {
        namespaces: namespaces.len(),
        ..Default::default()
    };
    for n in namespaces {
        s.namespaces_covered_by_regcred += usize::from(!n.regcred_credentials.is_empty());
        s.workloads += n.workloads.len();
        s.workloads_not_covered += n
            .workloads
            .iter()
            .filter(|w| w.new_pods != NewPods::Covered)
            .count();
        s.service_accounts_lacking += n.service_accounts_lacking.len();
        s.pods_to_restart += n.pods_to_restart.len();
    }
    s
}

#[cfg(test)]
mod tests;
