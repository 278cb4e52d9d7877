//! The shipped ValidatingAdmissionPolicy holds the controller's identity to its job, where
//! RBAC cannot (it cannot scope Secrets by label): tried here as that identity, on the
//! real API server. Every end-to-end test runs with the policy installed.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use regcred_e2e::install;
use regcred_testkit::{TestBed, wait_for};
use serde_json::json;
use std::time::Duration;

fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("regcred controller") => {}
        other => panic!("{what}: expected the policy's 403, got {other:?}"),
    }
}

#[tokio::test]
async fn the_controller_identity_is_held_to_its_job() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    install(bed);
    let ns = bed.namespace("guardrails").await;
    let admin = bed.admin_client().await;
    let controller = bed
        .service_account_client("regcred-system", "regcred")
        .await;
    let post = PostParams::default();
    let theirs: Secret = serde_json::from_value(json!({
        "metadata": {"name": "theirs"}, "type": "Opaque", "data": {"k": "dg=="}
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), &ns.name)
        .create(&post, &theirs)
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(controller.clone(), &ns.name);

    // The policy takes a moment to be in force after install: wait for the first refusal.
    let opaque: Secret = serde_json::from_value(json!({
        "metadata": {"name": "opaque", "labels": {"regcred.io/managed": "true"}},
        "type": "Opaque", "data": {"k": "dg=="}
    }))
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        Duration::from_millis(200),
        || async {
            match secrets.create(&post, &opaque).await {
                Err(kube::Error::Api(s)) if s.code == 403 => Some(()),
                Ok(_) => {
                    let _ = secrets.delete("opaque", &DeleteParams::default()).await;
                    None
                }
                Err(_) => None,
            }
        },
    )
    .await;
    refused(
        secrets
            .patch(
                "theirs",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"regcred.io/managed": "true"}}})),
            )
            .await,
        "labelling someone else's Secret",
    );
    refused(
        secrets.delete("theirs", &DeleteParams::default()).await,
        "deleting someone else's Secret",
    );

    // Its own kind of Secret: allowed, and so is deleting it.
    let pull: Secret = serde_json::from_value(json!({
        "metadata": {"name": "pull", "labels": {"regcred.io/managed": "true"}},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}
    }))
    .unwrap();
    secrets
        .create(&post, &pull)
        .await
        .expect("a managed pull Secret");
    secrets
        .delete("pull", &DeleteParams::default())
        .await
        .expect("deleting it");

    // The webhook's certificate: a TLS Secret of that name in its own namespace only.
    let tls = |name: &str, type_: &str| -> Secret {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "type": type_,
            "data": {"tls.crt": "", "tls.key": ""}
        }))
        .unwrap()
    };
    let own: Api<Secret> = Api::namespaced(controller.clone(), "regcred-system");
    let name = format!("regcred-webhook-tls-guardrails-{}", ns.name);
    own.create(&post, &tls(&name, "kubernetes.io/tls"))
        .await
        .expect("its webhook certificate");
    own.patch(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"ca.crt": ""}})),
    )
    .await
    .expect("rotating it");
    Api::<Secret>::namespaced(admin.clone(), "regcred-system")
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    refused(
        own.create(&post, &tls(&format!("{name}-x"), "Opaque"))
            .await,
        "an Opaque Secret named like the webhook certificate",
    );
    refused(
        secrets
            .create(&post, &tls("regcred-webhook-tls", "kubernetes.io/tls"))
            .await,
        "a webhook certificate outside its own namespace",
    );
    refused(
        own.create(&post, &tls("other-tls", "kubernetes.io/tls"))
            .await,
        "another TLS Secret in its own namespace",
    );

    // ServiceAccounts: imagePullSecrets and regcred's annotation only.
    let accounts: Api<ServiceAccount> = Api::namespaced(controller.clone(), &ns.name);
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "app", "annotations": {"team": "a"}}}))
            .unwrap();
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns.name)
        .create(&post, &sa)
        .await
        .unwrap();
    accounts
        .patch(
            "app",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": {"annotations": {"regcred.io/image-pull-secrets": "{\"pull\":\"x\"}"}},
                "imagePullSecrets": [{"name": "pull"}]
            })),
        )
        .await
        .expect("its own entry and record");
    for (what, patch) in [
        ("the secrets list", json!({"secrets": [{"name": "other"}]})),
        ("a label", json!({"metadata": {"labels": {"x": "y"}}})),
        (
            "another annotation",
            json!({"metadata": {"annotations": {"team": "b"}}}),
        ),
        (
            "automounting",
            json!({"automountServiceAccountToken": false}),
        ),
    ] {
        refused(
            accounts
                .patch("app", &PatchParams::default(), &Patch::Merge(patch))
                .await,
            what,
        );
    }
    // Deleting a ServiceAccount is refused by RBAC already (no delete verb); the policy's
    // rule stands behind it should the role ever be widened.
    assert!(matches!(
        accounts.delete("app", &DeleteParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));

    // Tokens: never for the API server.
    let request = |audience: &str| TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![audience.into()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    for audience in ["https://kubernetes.default.svc.cluster.local", "kubernetes"] {
        refused(
            accounts
                .create_token_request("app", &post, &request(audience))
                .await,
            audience,
        );
    }
    accounts
        .create_token_request("app", &post, &request("sts.amazonaws.com"))
        .await
        .expect("a token for STS");
    ns.delete().await;
}
