//! What every provider is: resolved inputs in, registry entries (and their lifetime) out.
//! The next provider (ECR Public, Artifact Registry, ACR) is one module implementing it.

use std::future::Future;

use crate::Minted;

/// A source of registry credentials.
pub trait Provider {
    /// What the caller resolved for it (Secret data, an AWS identity, ...).
    type Input<'a>;
    type Error: ProviderError;

    /// Reads or mints the entries. Calls out at most once per registry group, and is
    /// bounded in time when it calls out.
    fn provide(
        &self,
        input: Self::Input<'_>,
    ) -> impl Future<Output = Result<Minted, Self::Error>> + Send;
}

/// A provider's failure, as status reports it.
pub trait ProviderError: std::error::Error {
    /// The `Ready` condition's reason (one of the API's condition reasons; the controller
    /// pins each to them in a test, since this crate does not depend on the API crate).
    fn reason(&self) -> &'static str;
}
