//! API clients as the admin or as a ServiceAccount, and kubeconfigs for child processes.
//!
//! A new client per call: a `kube::Client` belongs to the runtime it was made in, and each
//! `#[tokio::test]` has its own.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::PostParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::json;

use crate::TestBed;

/// Lifetime of the ServiceAccount tokens the kit requests: longer than any test.
const TOKEN_SECONDS: i64 = 3600;

impl TestBed {
    /// A client as `regcred-admin` (`system:masters`), from the bed's kubeconfig.
    pub async fn admin_client(&self) -> Client {
        let kubeconfig = Kubeconfig::read_from(&self.info.kubeconfig)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.info.kubeconfig.display()));
        client_for(kubeconfig).await
    }

    /// A client authenticated as the ServiceAccount `namespace/name` with a bound token
    /// (TokenRequest, one hour): requests are authorized by RBAC like a pod's would be.
    pub async fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let kubeconfig = self.service_account_kubeconfig_value(namespace, name).await;
        let kubeconfig = serde_json::from_value(kubeconfig).expect("a well-formed kubeconfig");
        client_for(kubeconfig).await
    }

    /// Writes (mode 0600) a kubeconfig that authenticates as the ServiceAccount
    /// `namespace/name`, with `namespace` as its default: for running the controller binary
    /// under the identity it would have in a cluster.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str, path: &Path) {
        let kubeconfig = self.service_account_kubeconfig_value(namespace, name).await;
        let text = serde_json::to_vec_pretty(&kubeconfig).expect("JSON");
        // JSON is YAML: kubectl and kube read it as a kubeconfig.
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut file| file.write_all(&text))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// A bearer token for the ServiceAccount, requested by the admin.
    pub async fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let api: Api<ServiceAccount> = Api::namespaced(self.admin_client().await, namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(TOKEN_SECONDS),
                ..Default::default()
            },
            ..Default::default()
        };
        let response = api
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"));
        response
            .status
            .map(|status| status.token)
            .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{name}: no token returned"))
    }

    async fn service_account_kubeconfig_value(
        &self,
        namespace: &str,
        name: &str,
    ) -> serde_json::Value {
        let token = self.service_account_token(namespace, name).await;
        let ca = std::fs::read(&self.info.ca_file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.info.ca_file.display()));
        let user = format!("system:serviceaccount:{namespace}:{name}");
        json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "regcred-testbed",
                "cluster": {
                    "server": self.info.server,
                    "certificate-authority-data": STANDARD.encode(ca),
                },
            }],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{
                "name": "regcred-testbed",
                "context": {"cluster": "regcred-testbed", "user": user, "namespace": namespace},
            }],
            "current-context": "regcred-testbed",
        })
    }
}

async fn client_for(kubeconfig: Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("test bed kubeconfig: {e}"));
    Client::try_from(config).unwrap_or_else(|e| panic!("test bed client: {e}"))
}
