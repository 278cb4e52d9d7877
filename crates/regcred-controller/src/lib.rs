//! regcred's controller.
//!
//! Resources in → credentials read → Secrets and ServiceAccounts written → status out:
//! - [`credential`] gives both kinds one face;
//! - [`targets`] decides, purely, which namespaces and ServiceAccounts a credential covers
//!   and which credential wins a contested Secret;
//! - [`sources`] (static) and [`minting`] with [`schedule`] (ECR) gather credentials,
//!   [`dockerconfig`] turns them into Secret content;
//! - [`secrets`] writes the pull Secrets, [`service_accounts`] keeps `imagePullSecrets`;
//! - [`status`] reports; [`run`] wires watches, caches and the two reconcilers.
#![forbid(unsafe_code)]

pub mod context;
pub mod credential;
pub mod dockerconfig;
pub mod error;
pub mod minting;
pub mod pull_secrets;
pub mod reconcile;
pub mod run;
pub mod schedule;
pub mod secrets;
pub mod selector;
pub mod service_accounts;
pub mod sources;
pub mod status;
pub mod targets;
pub mod triggers;

pub use run::{Config, run};
