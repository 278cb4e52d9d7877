//! The tables: every contender side by side, then regcred against each target, as measured,
//! the target, and the ratio to the limit in the same run.

use std::fmt::Write as _;

use crate::contenders::Kind;
use crate::results::{Cold, RunResult};

fn find(results: &[RunResult], kind: Kind, size: usize) -> Option<&RunResult> {
    results
        .iter()
        .find(|r| r.contender == kind && r.namespaces == size)
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// The median cold start, with the range of all of them when there were several.
fn convergence(cold: &Cold) -> String {
    let min = cold
        .samples_seconds
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let max = cold.samples_seconds.iter().copied().fold(0.0, f64::max);
    if cold.samples_seconds.len() > 1 {
        format!("{:.2} ({min:.2}–{max:.2})", cold.seconds)
    } else {
        format!("{:.2}", cold.seconds)
    }
}

fn conflicts(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" (+{n} refused)")
    }
}

/// Both tables, in Markdown.
pub(crate) fn markdown(results: &[RunResult]) -> String {
    let mut out = String::new();
    out.push_str(
        "| contender | namespaces × SAs | converge (s): median (range) | × limit | object writes / necessary | other writes | per-object GETs | unselected Secret lists | idle writes | restart: requests / writes | new ns: entry p50 / p95 / p99 (ms) | new ns: Secret p99 (ms) | rotation (s) | rotation writes | peak RSS (MiB) |\n",
    );
    out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let limit = find(results, Kind::Limit, r.namespaces);
        let ratio = limit.map(|l| r.cold.seconds / l.cold.seconds.max(0.001));
        let c = &r.cold.requests;
        let steady = r.steady.as_ref();
        let idle = steady
            .and_then(|s| s.idle.as_ref())
            .map_or("—".into(), |i| {
                (i.object_writes + i.other_writes).to_string()
            });
        let restart = steady.map_or("—".into(), |s| {
            format!(
                "{} / {}",
                s.restart.total,
                s.restart.object_writes + s.restart.other_writes
            )
        });
        let new = r.new_namespaces.as_ref();
        let entry = new.map_or("—".into(), |n| {
            format!(
                "{:.0} / {:.0} / {:.0}",
                n.entry_ms.p50, n.entry_ms.p95, n.entry_ms.p99
            )
        });
        let _ = writeln!(
            out,
            "| {} | {} × {} | {} | {} | {}{} / {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.contender.name(),
            r.namespaces,
            r.service_accounts,
            convergence(&r.cold),
            opt(ratio, 2),
            c.object_writes,
            conflicts(c.conflicts),
            r.cold.necessary_writes,
            c.other_writes,
            c.per_object_gets,
            c.unselected_secret_reads,
            idle,
            restart,
            entry,
            opt(new.map(|n| n.secret_ms.p99), 0),
            opt(r.rotation.as_ref().map(|x| x.seconds), 1),
            r.rotation
                .as_ref()
                .map_or("—".into(), |x| x.requests.object_writes.to_string()),
            opt(r.peak_rss_mib, 1),
        );
    }
    for r in results.iter().filter(|r| r.ecr.is_some()) {
        let e = r.ecr.as_ref().expect("filtered");
        let _ = writeln!(
            out,
            "\nECR rotation ({}, {} namespaces, {} s tokens): {} GetAuthorizationToken calls for {} refreshes; every Secret rewritten in {} s; longest time any namespace held only an expired token: {:.0} ms.",
            r.contender.name(),
            r.namespaces + r.new_namespaces.as_ref().map_or(0, |n| n.count),
            e.token_lifetime_seconds,
            e.get_authorization_token_calls,
            e.refreshes,
            e.rewrite_seconds
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(", "),
            e.max_expired_only_ms,
        );
    }
    out.push_str("\n| regcred against its targets | namespaces | measured | target | ratio to the limit |\n|---|---|---|---|---|\n");
    for r in results.iter().filter(|r| r.contender == Kind::Regcred) {
        let limit = find(results, Kind::Limit, r.namespaces);
        let n = r.namespaces;
        let c = &r.cold.requests;
        let mut row = |what: &str, measured: String, target: &str, ratio: Option<f64>| {
            let _ = writeln!(
                out,
                "| {what} | {n} | {measured} | {target} | {} |",
                opt(ratio, 2)
            );
        };
        row(
            "object writes, cold",
            c.object_writes.to_string(),
            &format!("= necessary ({})", r.cold.necessary_writes),
            limit.map(|l| c.object_writes as f64 / l.cold.requests.object_writes.max(1) as f64),
        );
        row("per-object GETs", c.per_object_gets.to_string(), "0", None);
        row(
            "Secret lists/watches without a selector",
            c.unselected_secret_reads.to_string(),
            "0",
            None,
        );
        row(
            "convergence (s), median (range)",
            convergence(&r.cold),
            "≤ 1.25 × limit",
            limit.map(|l| r.cold.seconds / l.cold.seconds.max(0.001)),
        );
        if let Some(s) = &r.steady {
            let idle = s
                .idle
                .as_ref()
                .map_or(0, |i| i.object_writes + i.other_writes);
            row(
                "writes, idle",
                format!("{idle} in {} s", s.idle_seconds),
                "0",
                None,
            );
            row(
                "writes after a restart",
                (s.restart.object_writes + s.restart.other_writes).to_string(),
                "0",
                None,
            );
        }
        let limit_new = limit.and_then(|l| l.new_namespaces.as_ref());
        let watch_only =
            find(results, Kind::RegcredWatch, n).and_then(|w| w.new_namespaces.as_ref());
        for (how, new) in [
            ("", r.new_namespaces.as_ref()),
            (", webhook off", watch_only),
        ] {
            let Some(new) = new else { continue };
            row(
                &format!("new namespace, entry p99 (ms){how}"),
                format!("{:.0}", new.entry_ms.p99),
                "< 50",
                limit_new.map(|l| new.entry_ms.p99 / l.entry_ms.p99.max(1.0)),
            );
            row(
                &format!("new namespace, Secret p99 (ms){how}"),
                format!("{:.0}", new.secret_ms.p99),
                "< 50",
                limit_new.map(|l| new.secret_ms.p99 / l.secret_ms.p99.max(1.0)),
            );
        }
        if let Some(e) = &r.ecr {
            row(
                "AWS calls per refresh",
                format!(
                    "{:.2}",
                    e.get_authorization_token_calls as f64 / (e.refreshes + 1) as f64
                ),
                "1",
                None,
            );
            row(
                "time holding only an expired token (ms)",
                format!("{:.0}", e.max_expired_only_ms),
                "0",
                None,
            );
        }
        if let Some(rss) = r.peak_rss_mib {
            let limit_rss = limit.and_then(|l| l.peak_rss_mib);
            row(
                "peak RSS (MiB)",
                format!("{rss:.1}"),
                if n >= 5000 { "< 64" } else { "—" },
                limit_rss.map(|l| rss / l),
            );
        }
    }
    out
}
