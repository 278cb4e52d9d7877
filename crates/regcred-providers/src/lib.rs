//! Credential providers: where the user name and password for each registry come from.
//!
//! The controller resolves a provider's inputs (for example a source Secret's data, read
//! from its cache) and asks the [`Provider`] for [`RegistryAuth`] entries. Static
//! credentials are pure; minted ones (ECR) call out and carry an expiry that drives the
//! next refresh. What is true of a provider lives here: the reason each failure reports
//! ([`ProviderError`]), the `.dockerconfigjson` codec ([`dockerconfig`]), ECR's host rules
//! and what makes a token read back after a restart plausible ([`ecr`]).
//!
//! [`keyring`] says which credentials kubelet uses for an image: regcred's tools share it.
//! The ECR provider (and its AWS SDK) is the default feature `ecr`; without it, this crate
//! is small enough for `kubectl-regcred` to depend on.
#![forbid(unsafe_code)]

mod auth;
pub mod dockerconfig;
#[cfg(feature = "ecr")]
pub mod ecr;
pub mod keyring;
mod provider;
mod static_source;

pub use auth::{Minted, RegistryAuth};
#[cfg(feature = "ecr")]
pub use ecr::{AwsIdentity, Ecr, EcrError, EcrRequest, endpoint_allowed, redact};
pub use provider::{Provider, ProviderError};
pub use static_source::{Static, StaticError, StaticInput, from_static_secret};
