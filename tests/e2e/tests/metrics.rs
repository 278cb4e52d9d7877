//! `/metrics` on the real bed: the per-credential series say what status says, counters
//! move with what really happened (checked against the API server's audit log and the AWS
//! emulator's call log), writes stay flat in a steady minute, and a deleted credential
//! leaves no series behind.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use regcred_e2e::{
    apply_bed_ecr_credential, create_bed_aws_keys, password_in, ready,
    start_controller_with_aws_identity_and, wait_reason,
};
use regcred_testkit::{TestBed, wait_for};
use serde_json::json;

const QUICK: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// promtool, built by hack/promtool.sh (hack/test.sh exports its path).
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("REGCRED_PROMTOOL") {
        return PathBuf::from(path);
    }
    let out = Command::new(regcred_e2e::root().join("hack/promtool.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("hack/promtool.sh runs");
    assert!(out.status.success(), "hack/promtool.sh failed");
    let text = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(text.lines().last().expect("a path").trim())
}

/// `promtool check metrics`: the exposition parses and follows Prometheus' naming rules.
fn lint(text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

async fn scrape(port: u16) -> String {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("the metrics port answers");
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

/// The samples of `name` whose labels include every pair of `labels`.
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| (series.to_owned(), value.parse().unwrap()))
        })
        .collect()
}

/// The one sample of `name` with `labels`, if any.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let found = samples(text, name, labels);
    assert!(
        found.len() <= 1,
        "{name} {labels:?} is ambiguous: {found:?}"
    );
    found.first().map(|(_, v)| *v)
}

/// Writes the controller made, by the metrics, leases aside (the leader renews its lease).
fn writes(text: &str) -> f64 {
    ["create", "update", "patch", "delete"]
        .iter()
        .flat_map(|verb| samples(text, "regcred_kube_requests_total", &[("verb", verb)]))
        .filter(|(series, _)| !series.contains("resource=\"leases\""))
        .map(|(_, v)| v)
        .sum()
}

/// Reconciles of every controller so far.
fn reconciles_of_all(text: &str) -> f64 {
    samples(text, "regcred_reconciles_total", &[])
        .iter()
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test]
async fn metrics_follow_status_and_what_really_happened() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let port = free_port();
    let audit = bed.audit();
    let mark = audit.mark();
    let mut controller = start_controller_with_aws_identity_and(
        bed,
        &["--metrics-addr", &format!("127.0.0.1:{port}")],
    );
    let ns = bed.namespace("metrics").await;
    create_bed_aws_keys(bed, &ns).await;
    let credentials = apply_bed_ecr_credential(bed, &ns).await;
    let synced = wait_reason(&credentials, "ecr", "Synced").await;
    let status = synced.status.clone().unwrap();
    let this = [
        ("kind", "RegistryCredential"),
        ("namespace", ns.name.as_str()),
        ("name", "ecr"),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut labels = this.to_vec();
        labels.push(extra);
        labels
    };

    // The status' own numbers, read at scrape time (the status may land just before).
    let text = wait_for(QUICK, POLL, || async {
        let text = scrape(port).await;
        sample(
            &text,
            "regcred_credential_expiration_timestamp_seconds",
            &this,
        )?;
        Some(text)
    })
    .await;
    let expires_at = status.expires_at.as_ref().unwrap().0;
    assert_eq!(
        sample(
            &text,
            "regcred_credential_expiration_timestamp_seconds",
            &this
        ),
        Some(expires_at.as_millisecond() as f64 / 1000.0),
        "the expiry gauge is status.expiresAt"
    );
    let next = status.next_refresh_time.as_ref().unwrap().0;
    assert_eq!(
        sample(&text, "regcred_credential_renewal_timestamp_seconds", &this),
        Some(next.as_millisecond() as f64 / 1000.0),
    );
    assert_eq!(
        sample(
            &text,
            "regcred_credential_ready_status",
            &with(("condition", "True"))
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "regcred_credential_ready_status",
            &with(("condition", "False"))
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            "regcred_credential_namespaces",
            &with(("state", "synced"))
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "regcred_credential_service_accounts",
            &with(("state", "patched"))
        ),
        Some(f64::from(
            status.targets.as_ref().unwrap().service_accounts_patched
        ))
    );
    assert_eq!(sample(&text, "regcred_leader", &[]), Some(1.0));
    assert_eq!(sample(&text, "regcred_ready", &[]), Some(1.0));
    assert_eq!(
        sample(&text, "regcred_credential_refreshes_total", &this),
        Some(1.0),
        "one mint"
    );
    let token_calls = |calls: Vec<regcred_testkit::AwsCall>| {
        calls
            .iter()
            .filter(|c| c.operation == "GetAuthorizationToken")
            .count() as f64
    };
    assert_eq!(
        sample(
            &text,
            "regcred_ecr_token_requests_total",
            &[("outcome", "success")]
        ),
        Some(token_calls(bed.aws().calls().await)),
        "one ECR token request counted per call the emulator saw"
    );
    // Every write the audit log shows, the metrics counted (and the other way round).
    let quiet = regcred_e2e::until_controller_quiet(&audit, &mark).await;
    assert!(quiet > 0);
    let text = scrape(port).await;
    let audited = audit
        .events_since(&mark)
        .into_iter()
        .filter(regcred_e2e::is_controller_write)
        .count() as f64;
    assert!(
        audited > 0.0,
        "the controller wrote the Secret and the status"
    );
    assert_eq!(writes(&text), audited, "writes counted = writes audited");
    lint(&text);
    // Counted as each reconcile ends, after its status write: checked once quiet.
    let reconciles = sample(
        &text,
        "regcred_reconciles_total",
        &[("controller", "registrycredential")],
    );
    assert!(reconciles >= Some(1.0), "{reconciles:?}");

    // A steady minute: nothing to do, nothing written.
    let before = writes(&text);
    let reconciles_before = reconciles_of_all(&text);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let text = scrape(port).await;
    assert_eq!(writes(&text), before, "no write in a steady minute");
    // Nor a reconcile: a lease renewal (every few seconds) must not wake the controllers.
    assert_eq!(
        reconciles_of_all(&text),
        reconciles_before,
        "no reconcile in a steady minute"
    );
    println!("writes after the sync: {before}; after a steady minute: the same, and no reconcile");

    // An AWS failure: the failure counters move, the expiry still says the current token.
    bed.aws()
        .inject_fault("GetAuthorizationToken", "AccessDenied", None)
        .await;
    credentials
        .patch(
            "ecr",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"regcred.io/refresh": "metrics"}}})),
        )
        .await
        .unwrap();
    wait_reason(&credentials, "ecr", "AwsAccessDenied").await;
    // Status and the gauge are read together at each poll: both must say the failure.
    let deadline = tokio::time::Instant::now() + QUICK;
    let text = loop {
        let credential = credentials.get("ecr").await.unwrap();
        let text = scrape(port).await;
        let (ready_status, reason, _) = ready(&credential).unwrap();
        let gauge = sample(
            &text,
            "regcred_credential_ready_status",
            &with(("condition", "False")),
        );
        if ready_status == "False" && reason == "AwsAccessDenied" && gauge == Some(1.0) {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "status says Ready={ready_status} ({reason}), the False gauge says {gauge:?}"
        );
        tokio::time::sleep(POLL).await;
    };
    // The failure stays reported until its retry succeeds: the next reconcile (the status
    // write's own echo) must not reuse the token in place and say Synced again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, reason, _) = ready(&credentials.get("ecr").await.unwrap()).unwrap();
    assert_eq!(reason, "AwsAccessDenied", "the failure is still reported");

    // Meanwhile the token in place is still good: a Secret deleted by hand comes back with
    // it, and status keeps reporting the failure.
    let secrets = ns.api::<Secret>();
    let before = secrets.get("ecr-pull").await.unwrap();
    secrets
        .delete("ecr-pull", &DeleteParams::default())
        .await
        .unwrap();
    let restored = wait_for(QUICK, POLL, || async {
        let s = secrets.get_opt("ecr-pull").await.unwrap()?;
        (s.metadata.uid != before.metadata.uid).then_some(s)
    })
    .await;
    let host = &bed.info.aws.ecr_registry;
    assert!(
        password_in(&restored, host).is_some()
            && password_in(&restored, host) == password_in(&before, host),
        "the restored Secret holds the token in place (not printed)"
    );
    let (_, reason, _) = ready(&credentials.get("ecr").await.unwrap()).unwrap();
    assert_eq!(
        reason, "AwsAccessDenied",
        "still reported after the restore"
    );
    assert!(
        sample(
            &text,
            "regcred_credential_refresh_failures_total",
            &with(("reason", "AwsAccessDenied"))
        )
        .unwrap_or_default()
            >= 1.0,
        "the failure counter moved"
    );
    assert!(
        sample(
            &text,
            "regcred_ecr_token_requests_total",
            &[("outcome", "AwsAccessDenied")]
        )
        .unwrap_or_default()
            >= 1.0
    );
    let failing = credentials.get("ecr").await.unwrap().status.unwrap();
    assert_eq!(
        sample(
            &text,
            "regcred_credential_expiration_timestamp_seconds",
            &this
        ),
        Some(failing.expires_at.unwrap().0.as_millisecond() as f64 / 1000.0),
        "the expiry gauge still says the token in place"
    );
    bed.aws().clear_faults().await;

    // A deleted credential leaves no series behind.
    credentials
        .delete("ecr", &DeleteParams::default())
        .await
        .unwrap();
    wait_for(QUICK, POLL, || async {
        let text = scrape(port).await;
        let left: Vec<_> = text
            .lines()
            .filter(|l| l.contains(&format!("namespace=\"{}\"", ns.name)) && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        left.is_empty().then_some(())
    })
    .await;
    controller.stop();
}
