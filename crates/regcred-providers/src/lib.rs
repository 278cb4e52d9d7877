//! Credential providers: where the user name and password for each registry come from.
//!
//! The controller resolves a provider's inputs (for example a source Secret's data, read
//! from its cache) and asks the provider for [`RegistryAuth`] entries. Static credentials
//! are pure; minted ones (ECR) call out and carry an expiry that drives the next refresh.
#![forbid(unsafe_code)]

mod auth;
pub mod ecr;
mod static_source;

pub use auth::{Minted, RegistryAuth};
pub use ecr::{AwsIdentity, Ecr, EcrError, EcrRequest};
pub use static_source::{StaticError, StaticInput, from_static_secret};
