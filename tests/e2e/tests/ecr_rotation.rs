//! ECR tokens over time, against the strict emulator with 24-second tokens: rotation
//! without a gap and never an expired password, faults that keep the last good Secret and
//! recover by themselves, and a restart that costs no AWS call and no write.
//! One test in sequence: it owns the emulator's global settings and its own controller.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::watcher::{self, Event};
use regcred_e2e::{
    CONTROLLER_USER, apply_bed_ecr_credential, create_bed_aws_keys, is_controller_write, ready,
    start_controller_with_aws_identity, until_controller_quiet, wait_reason,
};
use regcred_testkit::{TestBed, wait_for};
use serde_json::json;
use sha2::{Digest, Sha256};

const LIFETIME: u64 = 24;
const ROTATIONS: usize = 10;

fn password(secret: &Secret, host: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(".dockerconfigjson")?.0;
    let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    doc["auths"][host]["password"].as_str().map(str::to_owned)
}

async fn token_calls(bed: &TestBed) -> usize {
    let calls = bed.aws().calls().await;
    calls
        .iter()
        .filter(|c| c.operation == "GetAuthorizationToken")
        .count()
}

fn sha256(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn rotation_faults_and_restart() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let aws = &bed.info.aws;
    let mut controller = start_controller_with_aws_identity(bed);
    bed.aws().set_token_lifetime(LIFETIME).await;
    let ns = bed.namespace("rotate").await;
    create_bed_aws_keys(bed, &ns).await;

    // Every version of the Secret a watcher sees: when, which password, or a deletion.
    type Seen = Vec<(Timestamp, Option<String>)>;
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let watch = {
        let seen = seen.clone();
        let api = ns.api::<Secret>();
        let host = aws.ecr_registry.clone();
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=ecr-pull");
            let mut events = watcher::watcher(api, config).boxed();
            while let Ok(Some(event)) = events.try_next().await {
                match event {
                    Event::Apply(s) | Event::InitApply(s) => seen
                        .lock()
                        .unwrap()
                        .push((Timestamp::now(), password(&s, &host))),
                    Event::Delete(_) => seen.lock().unwrap().push((Timestamp::now(), None)),
                    _ => {}
                }
            }
        })
    };
    let credentials = apply_bed_ecr_credential(bed, &ns).await;
    wait_reason(&credentials, "ecr", "Synced").await;

    // Rotations: after each, the new password pulls.
    let started = Instant::now();
    let mut pulled = std::collections::BTreeSet::new();
    while pulled.len() < ROTATIONS + 1 {
        assert!(
            started.elapsed() < Duration::from_secs(LIFETIME * (ROTATIONS as u64 + 4)),
            "too few rotations: {}",
            pulled.len()
        );
        let secret = ns.api::<Secret>().get("ecr-pull").await.unwrap();
        let current = password(&secret, &aws.ecr_registry).expect("an entry for the account");
        if pulled.insert(sha256(&current)) {
            bed.pull_check_mapped(&secret, &aws.ecr_image, &[(&aws.ecr_registry, &aws.front)])
                .await
                .unwrap_or_else(|e| panic!("rotation {} does not pull: {e}", pulled.len() - 1));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    watch.abort();
    let rotation_time = started.elapsed();

    // The emulator's own record: no version the watcher saw held an expired password.
    let issued = bed.aws().tokens().await;
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|(_, p)| p.is_some()),
        "the Secret was never missing"
    );
    let mut distinct = 0;
    let mut last = None;
    for (at, p) in &seen {
        let digest = sha256(p.as_ref().unwrap());
        let token = issued
            .iter()
            .find(|t| t.sha256 == digest)
            .expect("every password was issued by the emulator");
        let expires: Timestamp = token.expires_at.parse().expect("RFC 3339");
        assert!(
            *at < expires,
            "the watcher saw a password {}s after its expiry",
            at.duration_since(expires).as_secs()
        );
        if last.as_ref() != Some(&digest) {
            distinct += 1;
            last = Some(digest);
        }
    }
    println!(
        "{ROTATIONS} rotations of {LIFETIME}s tokens in {rotation_time:?}; {distinct} passwords in {} watched versions, none expired, never missing",
        seen.len()
    );

    // Faults: the last good Secret stays, the condition names the fault, retries back off,
    // and recovery needs nobody.
    let pull_before = ns.api::<Secret>().get("ecr-pull").await.unwrap();
    for (fault, reason) in [
        ("AccessDenied", "AwsAccessDenied"),
        ("Throttling", "AwsThrottled"),
        ("Unavailable", "AwsUnreachable"),
    ] {
        bed.aws()
            .inject_fault("GetAuthorizationToken", fault, None)
            .await;
        let request =
            json!({"metadata": {"annotations": {"regcred.io/refresh": format!("fault-{fault}")}}});
        credentials
            .patch("ecr", &PatchParams::default(), &Patch::Merge(&request))
            .await
            .unwrap();
        let c = wait_reason(&credentials, "ecr", reason).await;
        let (status, _, message) = ready(&c).unwrap();
        assert_eq!(status, "False");
        assert!(
            message.contains("stays valid until") || message.contains("EXPIRED"),
            "{message}"
        );
        let failing = wait_for(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                let c = credentials.get("ecr").await.ok()?;
                (c.status.as_ref()?.refresh_failures >= 2).then_some(c)
            },
        )
        .await;
        let s = failing.status.unwrap();
        assert!(
            s.next_refresh_time.is_some(),
            "backoff shows when the next attempt is"
        );
        if fault == "AccessDenied" {
            // Backoff, not a retry per reconcile: regcred's own status writes trigger
            // reconciles, which must wait out the backoff.
            let before = token_calls(bed).await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            let during = token_calls(bed).await - before;
            println!("AccessDenied for 10 s: {during} GetAuthorizationToken calls");
            assert!(
                during <= 4,
                "{during} calls in 10 s: the backoff is not honoured"
            );
        }
        bed.aws().clear_faults().await;
        wait_reason(&credentials, "ecr", "Synced").await;
    }
    let events = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap();
    for reason in ["AwsAccessDenied", "AwsThrottled", "AwsUnreachable"] {
        assert!(
            events
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some(reason)),
            "an Event for {reason}"
        );
    }
    assert_eq!(
        pull_before.metadata.uid,
        ns.api::<Secret>()
            .get("ecr-pull")
            .await
            .unwrap()
            .metadata
            .uid
    );

    // Restart with a fresh 12-hour token in place: no AWS call, no write.
    bed.aws().set_token_lifetime(43200).await;
    let request = json!({"metadata": {"annotations": {"regcred.io/refresh": "long-lived"}}});
    credentials
        .patch("ecr", &PatchParams::default(), &Patch::Merge(&request))
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            let c = credentials.get("ecr").await.ok()?;
            let s = c.status.as_ref()?;
            let long = s
                .expires_at
                .as_ref()?
                .0
                .duration_since(Timestamp::now())
                .as_secs()
                > 3600;
            (long
                && s.last_refresh_request.as_deref() == Some("long-lived")
                && ready(&c)?.1 == "Synced")
                .then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    controller.stop();
    let calls_before = bed.aws().calls().await.len();
    let audit = bed.audit();
    let mark = audit.mark();
    let _controller = start_controller_with_aws_identity(bed);
    until_controller_quiet(&audit, &mark).await;
    let writes = audit.count(&mark, is_controller_write);
    let calls_after = bed.aws().calls().await.len();
    println!(
        "restart with a fresh token: {} AWS calls, {writes} writes",
        calls_after - calls_before
    );
    assert_eq!(
        calls_after, calls_before,
        "no AWS call after a restart while the token is fresh"
    );
    assert_eq!(
        writes,
        0,
        "no write after a restart:\n{}",
        audit.summary(&mark, CONTROLLER_USER)
    );

    // No secret in the logs, the Events or the status.
    let secret = ns.api::<Secret>().get("ecr-pull").await.unwrap();
    let token = password(&secret, &aws.ecr_registry).unwrap();
    let c = credentials.get("ecr").await.unwrap();
    let visible = format!(
        "{}\n{}\n{:?}",
        controller.logs(),
        serde_json::to_string(&c.status).unwrap(),
        events.items
    );
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for (what, value) in [
        ("token", token.clone()),
        ("token in base64", b64(&format!("AWS:{token}"))),
        ("secret access key", aws.secret_access_key.clone()),
    ] {
        assert!(
            !visible.contains(&value),
            "the {what} appears in logs, status or Events"
        );
    }
    ns.delete().await;
}
