//! regcred's test kit: the shared ground of its end-to-end tests.
//!
//! regcred's job is to keep pull credentials right in a real cluster, so its tests run
//! against a real one: the test bed of `tests/testbed` (etcd, kube-apiserver with RBAC,
//! admission and an audit log, kube-controller-manager, and a TLS registry with auth). This
//! crate starts that bed once per test binary ([`TestBed::get`]) and gives tests what they
//! need around it:
//!
//! - clients as the admin or as any ServiceAccount (a real token, so RBAC really applies);
//! - fresh namespaces labelled with the test run;
//! - a pull check that chooses credentials with kubelet's own code and really pulls;
//! - an audit log reader that counts the API requests a user made, so tests can assert how
//!   much the controller asks of the API server and benchmarks can report it;
//! - the regcred controller binary as a child process, with its logs;
//! - polling and watching helpers, and component logs printed when a test fails;
//! - opt-in per test binary ([`TestBed::with_node`]), a real node (kubelet, containerd,
//!   runc, kube-proxy, kube-scheduler) and a helper that runs a Pod until it runs or fails
//!   to pull.
//!
//! [`TestBed::get`] is synchronous on purpose: every `#[tokio::test]` has its own runtime,
//! so nothing bound to a runtime may live in the process-wide bed. Clients are made anew
//! per call, inside the calling test's runtime.
//!
//! It is a dev-only crate (`publish = false`): it panics instead of returning errors,
//! since a test bed that misbehaves should stop the test with a clear message.
#![forbid(unsafe_code)]

mod audit;
mod aws;
mod bed;
mod clients;
mod controller;
mod logs;
mod namespace;
mod node;
mod pull;
mod random;
mod wait;

pub use audit::{Audit, AuditEvent, AuditMark, Counts};
pub use aws::{AwsCall, AwsControl, IssuedToken};
pub use bed::{AwsInfo, BedInfo, Component, Fault, RegistryInfo, TestBed, testbed_bin};
pub use controller::ControllerProcess;
pub use logs::FailureDump;
pub use namespace::{NS_LABEL, RUN_LABEL, TestNamespace};
pub use node::{NodeInfo, PodOutcome, PodRun, idle_pod};
pub use pull::dockerconfigjson_secret;
pub use wait::{wait_for, watch_until};
