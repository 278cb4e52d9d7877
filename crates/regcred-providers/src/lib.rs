//! Credential providers: where the user name and password for each registry come from.
//!
//! The controller resolves a provider's inputs (for example a source Secret's data, read
//! from its cache) and asks the provider for [`RegistryAuth`] entries. Static credentials
//! are pure; minted ones (ECR) call out and carry an expiry that drives the next refresh.
//!
//! [`keyring`] says which credentials kubelet uses for an image: regcred's tools share it.
//! The ECR provider (and its AWS SDK) is the default feature `ecr`; without it, this crate
//! is small enough for `kubectl-regcred` to depend on.
#![forbid(unsafe_code)]

mod auth;
#[cfg(feature = "ecr")]
pub mod ecr;
pub mod keyring;
mod static_source;

pub use auth::{Minted, RegistryAuth};
#[cfg(feature = "ecr")]
pub use ecr::{AwsIdentity, Ecr, EcrError, EcrRequest, endpoint_allowed, redact};
pub use static_source::{StaticError, StaticInput, from_static_secret};
