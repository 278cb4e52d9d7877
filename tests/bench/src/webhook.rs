//! regcred's admission webhook as `config/webhook` ships it, reached on loopback: the
//! shipped MutatingWebhookConfiguration with a `url:` client config (the bed runs the
//! controller as a process, not behind a Service) and its namespaces narrowed to one
//! size's targets, as docs/admission.md advises, so that no other namespace calls it.

use std::time::Duration;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::{Api, Client};
use serde_json::{Value, json};

use crate::contenders::Job;
use crate::seed::TARGET_LABEL;

/// The shipped configuration's name: the shipped RBAC lets the controller keep only it.
const CONFIGURATION: &str = "regcred";

/// `regcred run`'s flags for it, as `config/manager` sets them, on `port`.
pub(crate) fn args(port: u16) -> Vec<String> {
    vec![
        "--admission=service-accounts".into(),
        format!("--webhook-addr=127.0.0.1:{port}"),
        // The API server calls https://127.0.0.1:PORT: the certificate must name it.
        "--webhook-host=127.0.0.1".into(),
        format!("--webhook-configuration={CONFIGURATION}"),
    ]
}

/// Applies the shipped configuration, pointed at `port` and narrowed to `job`'s targets.
pub(crate) async fn configure(client: &Client, job: &Job, port: u16) {
    let path = regcred_e2e::root().join("config/webhook/mutating.yaml");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let shipped: Value = serde_yaml_ng::from_str(&text).expect("config/webhook/mutating.yaml");
    let configuration: MutatingWebhookConfiguration =
        serde_json::from_value(for_loopback(shipped, port, &job.targets))
            .expect("a MutatingWebhookConfiguration");
    regcred_e2e::apply(&Api::all(client.clone()), &configuration).await;
}

/// The shipped configuration with a `url:` to `port` and only `targets`' namespaces.
fn for_loopback(mut configuration: Value, port: u16, targets: &str) -> Value {
    let webhooks = configuration["webhooks"]
        .as_array_mut()
        .expect("the shipped configuration lists its webhooks");
    for webhook in webhooks {
        let path = webhook["clientConfig"]["service"]["path"]
            .as_str()
            .expect("the shipped webhook names its path")
            .to_owned();
        webhook["clientConfig"] = json!({"url": format!("https://127.0.0.1:{port}{path}")});
        webhook["namespaceSelector"]["matchLabels"] = json!({TARGET_LABEL: targets});
    }
    configuration
}

/// Waits until the controller has published its CA bundle and serves on `port`. The
/// configuration is applied afresh before a start that follows an undo (its bundle
/// empty), and the controller publishes the bundle of the certificate it serves.
pub(crate) async fn until_published(client: &Client, port: u16) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    for _ in 0..600 {
        let published = api.get(CONFIGURATION).await.ok().is_some_and(|c| {
            c.webhooks.unwrap_or_default().iter().all(|w| {
                w.client_config
                    .ca_bundle
                    .as_ref()
                    .is_some_and(|b| !b.0.is_empty())
            })
        });
        if published
            && tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("regcred's webhook was not published on port {port} within 60 s");
}

pub(crate) async fn remove(client: &Client) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let _ = api.delete(CONFIGURATION, &Default::default()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_configuration_is_pointed_at_loopback_and_the_targets() {
        let text =
            std::fs::read_to_string(regcred_e2e::root().join("config/webhook/mutating.yaml"))
                .unwrap();
        let shipped: Value = serde_yaml_ng::from_str(&text).unwrap();
        let out = for_loopback(shipped.clone(), 4443, "targets-10");
        let webhook = &out["webhooks"][0];
        assert_eq!(
            webhook["clientConfig"],
            json!({"url": "https://127.0.0.1:4443/mutate/serviceaccounts"})
        );
        assert_eq!(
            webhook["namespaceSelector"]["matchLabels"],
            json!({TARGET_LABEL: "targets-10"})
        );
        // The rest as shipped: rules, failure policy, the exclusions.
        for key in ["rules", "failurePolicy", "timeoutSeconds", "objectSelector"] {
            assert_eq!(webhook[key], shipped["webhooks"][0][key], "{key}");
        }
        assert_eq!(
            webhook["namespaceSelector"]["matchExpressions"],
            shipped["webhooks"][0]["namespaceSelector"]["matchExpressions"]
        );
    }
}
