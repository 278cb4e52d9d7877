//! What every provider returns.

use jiff::Timestamp;
use secrecy::SecretString;

/// A user name and password for one registry server, as kubelet will use them.
#[derive(Clone, Debug)]
pub struct RegistryAuth {
    /// The key kubelet matches images against: `host[:port][/path]`.
    pub server: String,
    pub username: String,
    /// Never printed: `SecretString`'s `Debug` redacts it.
    pub password: SecretString,
}

/// The result of one provider call: entries, when they were issued and, for minted
/// tokens, when they expire.
#[derive(Clone, Debug)]
pub struct Minted {
    pub entries: Vec<RegistryAuth>,
    /// Taken before the call: a lifetime computed from it is never shorter than the real.
    pub issued_at: Timestamp,
    /// `None` for credentials that do not expire (static).
    pub expires_at: Option<Timestamp>,
}
