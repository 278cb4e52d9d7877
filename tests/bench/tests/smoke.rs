//! The benchmark at a small size, so that it never rots: every contender covers every
//! namespace, the outputs are written, what the targets say of writes holds for regcred
//! (with its webhook and without) and the limit, and regcred's webhook gives new
//! ServiceAccounts their entry at admission. No timing is asserted (this is a debug build
//! on a shared machine) but that: the webhook answers within the API server's 3 s.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

#[test]
fn the_benchmark_runs_at_a_small_size() {
    let bench = Path::new(env!("CARGO_BIN_EXE_regcred-bench"));
    // hack/test.sh names the regcred binary; else the one cargo built beside the bench.
    let regcred = std::env::var_os("REGCRED_BIN")
        .unwrap_or_else(|| bench.with_file_name("regcred").into_os_string());
    let out = tempfile::tempdir().expect("a temporary directory");
    let status = Command::new(bench)
        .args(["--sizes", "10", "--memory-sizes", "10"])
        .args(["--new-namespaces", "4", "--new-namespace-rate", "4"])
        .args(["--idle-seconds", "3"])
        .args(["--ballast-secrets", "20", "--ballast-kib", "8"])
        .args(["--ballast-service-accounts", "20"])
        .args(["--ecr-lifetime", "30", "--ecr-refreshes", "1"])
        // A regression fails here in minutes, not after the default half hour.
        .args(["--timeout-seconds", "300"])
        .arg("--out")
        .arg(out.path())
        .env("REGCRED_BIN", regcred)
        .status()
        .expect("the bench runs");
    assert!(status.success(), "the bench failed: {status}");

    for chart in [
        "convergence.svg",
        "writes.svg",
        "memory.svg",
        "new-namespace-latency.svg",
    ] {
        let svg = std::fs::read_to_string(out.path().join(chart)).expect(chart);
        assert!(svg.contains("<polyline"), "{chart} has no line");
    }
    let table = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    assert!(table.contains("| regcred against its targets |"));
    let json: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).expect("json"))
            .expect("results.json is JSON");
    let results = json["results"].as_array().expect("results");
    let contenders: Vec<&str> = results
        .iter()
        .map(|r| r["contender"].as_str().unwrap())
        .collect();
    assert_eq!(contenders, ["regcred", "regcred-watch", "limit", "script"]);
    for r in results {
        let name = r["contender"].as_str().unwrap();
        let cold = &r["cold"]["requests"];
        let new = &r["new_namespaces"];
        assert_eq!(
            new["entry_samples_ms"].as_array().map(Vec::len),
            Some(4),
            "{name}"
        );
        assert_eq!(r["rotation"]["namespaces"], 14, "{name}");
        if name == "regcred" {
            // As shipped, the webhook gives a new namespace's `default` ServiceAccount its
            // entry at admission: the first version the bench's watch sees lists it.
            assert_eq!(
                new["entry_samples_ms"],
                serde_json::json!([0.0, 0.0, 0.0, 0.0]),
                "regcred: ServiceAccounts born with the entry"
            );
        }
        if name == "script" {
            continue;
        }
        assert_eq!(
            r["cold"]["samples_seconds"].as_array().map(Vec::len),
            Some(3),
            "{name}: three cold starts, the work undone between them"
        );
        assert_eq!(
            cold["object_writes"], r["cold"]["necessary_writes"],
            "{name}: cold writes are the necessary ones"
        );
        // One GET follows a patch refused as stale (a race with the watch), and only then.
        assert_eq!(
            cold["per_object_gets"], cold["conflicts"],
            "{name}: no per-object GETs"
        );
        assert_eq!(
            cold["unselected_secret_reads"], 0,
            "{name}: Secrets only by selector"
        );
        let steady = &r["steady"];
        assert_eq!(steady["idle"]["object_writes"], 0, "{name}: idle");
        assert_eq!(steady["idle"]["other_writes"], 0, "{name}: idle");
        assert_eq!(steady["restart"]["object_writes"], 0, "{name}: restart");
        assert_eq!(steady["restart"]["other_writes"], 0, "{name}: restart");
        // A new password: one write per namespace.
        assert_eq!(
            r["rotation"]["requests"]["object_writes"], r["rotation"]["namespaces"],
            "{name}: rotation"
        );
        assert!(r["peak_rss_mib"].as_f64().unwrap() > 1.0, "{name}: memory");
    }
    let ecr = &results[0]["ecr"];
    assert_eq!(
        ecr["max_expired_only_ms"], 0.0,
        "no namespace held only an expired token"
    );
    assert_eq!(
        ecr["get_authorization_token_calls"], 2,
        "one AWS call per refresh, whatever the namespace count"
    );
}
