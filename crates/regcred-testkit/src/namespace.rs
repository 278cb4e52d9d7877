//! A fresh namespace per test, so that tests sharing the bed never see each other's objects.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};

use crate::random::lower_alnum;
use crate::{TestBed, wait_for};

/// Label with the test process's [`TestBed::run_id`].
pub const RUN_LABEL: &str = "regcred-test/run";
/// Label with the namespace's own name, for selectors that pick exactly one namespace.
pub const NS_LABEL: &str = "regcred-test/ns";

/// A namespace made by [`TestBed::namespace`]. Call [`TestNamespace::delete`] at the end of
/// the test (there is no async `Drop`; a leftover dies with the bed anyway).
#[derive(Clone)]
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestBed {
    /// Creates the namespace `<prefix>-<6 random characters>`, labelled with this run and
    /// its own name, and waits until the controller manager has given it its `default`
    /// ServiceAccount.
    pub async fn namespace(&self, prefix: &str) -> TestNamespace {
        let client = self.admin_client().await;
        let name = format!("{prefix}-{}", lower_alnum(6));
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([
                    (RUN_LABEL.to_owned(), self.run_id.clone()),
                    (NS_LABEL.to_owned(), name.clone()),
                ])),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(
            Duration::from_secs(30),
            Duration::from_millis(50),
            || async { accounts.get_opt("default").await.ok().flatten() },
        )
        .await;
        TestNamespace { name, client }
    }
}

impl TestNamespace {
    /// The admin's API for namespaced objects of this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (the namespace controller then removes its content).
    pub async fn delete(self) {
        Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("cannot delete namespace {}: {e}", self.name));
    }
}
