//! The audit as tables for a person: per context, the workloads, the ServiceAccounts and
//! Pods that lack the registry, the namespaces, and a summary line.

use super::{NewPods, Report, Summary, Workload};
use crate::output::Table;

fn new_pods_text(w: &Workload) -> String {
    match (w.new_pods, w.kind) {
        (NewPods::Covered, _) => "covered".to_owned(),
        (NewPods::OwnPullSecretsLack, "Pod") => "NOT COVERED (its imagePullSecrets)".to_owned(),
        (NewPods::OwnPullSecretsLack, _) => "NOT COVERED (own imagePullSecrets)".to_owned(),
        (NewPods::ServiceAccountLacks, _) => "NOT COVERED (ServiceAccount)".to_owned(),
        (NewPods::ServiceAccountMissing, _) => "NOT COVERED (no such ServiceAccount)".to_owned(),
    }
}

fn list_or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

pub(super) fn print(report: &Report) {
    let registry = &report.registry;
    let many = report.contexts.len() > 1;
    for (i, c) in report.contexts.iter().enumerate() {
        if many {
            if i > 0 {
                println!();
            }
            println!("=== context {}", c.context);
        }
        if let Some(error) = &c.error {
            println!("could not audit: {error}");
            continue;
        }
        let mut workloads = Table::new(&[
            "NAMESPACE",
            "KIND",
            "NAME",
            "SERVICE ACCOUNT",
            "NEW PODS",
            "PULL SECRETS",
        ]);
        let mut accounts = Table::new(&["NAMESPACE", "SERVICE ACCOUNT", "PULL SECRETS", "USED BY"]);
        let mut pods = Table::new(&["NAMESPACE", "POD", "PHASE", "OWNER", "FIX"]);
        let mut namespaces = Table::new(&[
            "NAMESPACE",
            "WORKLOADS",
            "NOT COVERED",
            "PODS TO RESTART",
            "REGCRED",
        ]);
        for n in &c.namespaces {
            for w in &n.workloads {
                let secrets = if w.covered_by.is_empty() {
                    &w.own_pull_secrets
                } else {
                    &w.covered_by
                };
                workloads.row(vec![
                    n.namespace.clone(),
                    w.kind.to_owned(),
                    w.name.clone(),
                    w.service_account.clone(),
                    new_pods_text(w),
                    list_or_dash(secrets),
                ]);
            }
            for sa in &n.service_accounts_lacking {
                let secrets = if sa.exists {
                    list_or_dash(&sa.pull_secrets)
                } else {
                    "(does not exist)".to_owned()
                };
                accounts.row(vec![
                    n.namespace.clone(),
                    sa.name.clone(),
                    secrets,
                    sa.used_by.join(","),
                ]);
            }
            for p in &n.pods_to_restart {
                pods.row(vec![
                    n.namespace.clone(),
                    p.name.clone(),
                    p.phase.clone().unwrap_or_else(|| "-".into()),
                    p.owner.clone().unwrap_or_else(|| "-".into()),
                    p.fix.clone(),
                ]);
            }
            namespaces.row(vec![
                n.namespace.clone(),
                n.workloads.len().to_string(),
                n.workloads
                    .iter()
                    .filter(|w| w.new_pods != NewPods::Covered)
                    .count()
                    .to_string(),
                n.pods_to_restart.len().to_string(),
                list_or_dash(&n.regcred_credentials),
            ]);
        }
        if workloads.is_empty() && pods.is_empty() {
            println!("No workload or Pod pulls from {registry}.");
        } else {
            for (title, table) in [
                (format!("Workloads pulling from {registry}:"), &workloads),
                (
                    format!("ServiceAccounts without a pull Secret for {registry}:"),
                    &accounts,
                ),
                (
                    format!(
                        "Pods whose own imagePullSecrets lack {registry} (they fail on their next pull):"
                    ),
                    &pods,
                ),
                ("Namespaces:".to_owned(), &namespaces),
            ] {
                if !table.is_empty() {
                    println!("{title}");
                    table.print();
                    println!();
                }
            }
        }
        print_summary(&c.summary, registry, true);
    }
    if many {
        println!();
        println!("=== all {} contexts", report.contexts.len());
        print_summary(&report.summary, registry, report.complete);
        let failed: Vec<&str> = report
            .contexts
            .iter()
            .filter(|c| c.error.is_some())
            .map(|c| c.context.as_str())
            .collect();
        if !failed.is_empty() {
            println!("not audited: {}", failed.join(", "));
        }
    }
}

/// `complete`: every context was audited, so "nothing would break" may be said.
fn print_summary(s: &Summary, registry: &str, complete: bool) {
    println!(
        "Summary: {} workloads in {} namespaces pull from {registry}; {} would fail on new Pods; {} ServiceAccounts lack a pull Secret for it; {} existing Pods need a restart; regcred covers {} of the {} namespaces.",
        s.workloads,
        s.namespaces,
        s.workloads_not_covered,
        s.service_accounts_lacking,
        s.pods_to_restart,
        s.namespaces_covered_by_regcred,
        s.namespaces
    );
    if complete && s.workloads_not_covered == 0 && s.pods_to_restart == 0 {
        println!("Nothing would break if {registry} went private.");
    }
}
