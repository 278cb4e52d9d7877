//! regcred's controller.
//!
//! Resources in → credentials read → Secrets and ServiceAccounts written → status out:
//! - [`credential`] gives both kinds one face;
//! - [`targets`] decides, purely, which namespaces and ServiceAccounts a credential covers
//!   and which credential wins a contested Secret;
//! - [`sources`] (static) and [`minting`] with [`refresh`] and [`schedule`] (ECR) gather
//!   credentials from the providers (`regcred_providers`, which also owns the
//!   `.dockerconfigjson` codec and ECR's rules);
//! - [`secrets`] writes the pull Secrets, [`service_accounts`] keeps `imagePullSecrets`;
//! - [`status`] reports, [`metrics`] counts; [`run`] wires watches, caches and the
//!   reconcilers;
//! - [`admission`] mutates ServiceAccounts (or Pods) on create with the same plan, over
//!   TLS that [`webhook_tls`] keeps.
#![forbid(unsafe_code)]

mod account_queue;
mod admission;
#[cfg(test)]
mod api_mock;
mod cached_account;
mod cached_resource;
mod cached_secret;
mod context;
mod credential;
mod error;
mod lease;
mod metrics;
mod minting;
mod named_secrets;
mod namespace_cache;
mod namespace_writes;
mod pull_secrets;
mod reconcile;
mod recounts;
mod refresh;
mod run;
mod schedule;
mod secrets;
mod selector;
mod service_accounts;
mod signing;
mod source_error;
mod sources;
mod status;
mod targets;
mod tokens;
mod triggers;
mod watch_backoff;
mod webhook_tls;

pub use admission::{AdmissionMode, AdmissionSettings};
pub use error::Error;
pub use lease::LeaseSettings;
pub use metrics::{KubeRequestsLayer, Metrics};
pub use run::{Config, run};
pub use webhook_tls::WebhookTlsSettings;
