//! Static credentials read from a labelled source Secret.

use std::collections::BTreeMap;

use jiff::Timestamp;
use secrecy::SecretString;

use crate::{Minted, Provider, ProviderError, RegistryAuth};

/// Credentials that do not expire, read from a Secret the caller resolved.
pub struct Static;

impl Provider for Static {
    type Input<'a> = StaticInput<'a>;
    type Error = StaticError;

    async fn provide(&self, input: Self::Input<'_>) -> Result<Minted, StaticError> {
        Ok(Minted {
            entries: vec![from_static_secret(&input)?],
            issued_at: Timestamp::now(),
            expires_at: None,
        })
    }
}

impl ProviderError for StaticError {
    fn reason(&self) -> &'static str {
        "SourceInvalid"
    }
}

/// The parts of a source Secret the static provider reads, already resolved by the caller.
#[derive(Clone, Copy)]
pub struct StaticInput<'a> {
    pub server: &'a str,
    /// The Secret's `data`, decoded bytes by key.
    pub data: &'a BTreeMap<String, Vec<u8>>,
    pub username_key: &'a str,
    pub password_key: &'a str,
}

/// Why a source Secret cannot be used. Messages name keys, never values.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StaticError {
    #[error("key {0:?} is missing or empty")]
    MissingKey(String),
    #[error("key {0:?} is not valid UTF-8")]
    NotUtf8(String),
    #[error("user name in key {0:?} contains ':', which the registry auth format cannot carry")]
    ColonInUsername(String),
}

/// Reads a user name and password from a source Secret's data.
pub fn from_static_secret(input: &StaticInput<'_>) -> Result<RegistryAuth, StaticError> {
    let username = read(input.data, input.username_key)?;
    if username.contains(':') {
        return Err(StaticError::ColonInUsername(input.username_key.to_owned()));
    }
    let password = read(input.data, input.password_key)?;
    Ok(RegistryAuth {
        server: input.server.to_owned(),
        username,
        password: SecretString::from(password),
    })
}

fn read(data: &BTreeMap<String, Vec<u8>>, key: &str) -> Result<String, StaticError> {
    let bytes = data
        .get(key)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| StaticError::MissingKey(key.to_owned()))?;
    let text = std::str::from_utf8(bytes).map_err(|_| StaticError::NotUtf8(key.to_owned()))?;
    // A trailing newline is the usual accident of `kubectl create secret --from-file`.
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    fn input<'a>(data: &'a BTreeMap<String, Vec<u8>>) -> StaticInput<'a> {
        StaticInput {
            server: "harbor.example.com",
            data,
            username_key: "username",
            password_key: "password",
        }
    }

    #[test]
    fn reads_user_and_password() {
        let d = data(&[("username", b"robot$ci"), ("password", b"s3cret\n")]);
        let auth = from_static_secret(&input(&d)).unwrap();
        assert_eq!(auth.server, "harbor.example.com");
        assert_eq!(auth.username, "robot$ci");
        assert_eq!(auth.password.expose_secret(), "s3cret");
    }

    #[test]
    fn missing_or_empty_keys_are_named() {
        let d = data(&[("username", b"robot"), ("password", b"")]);
        assert_eq!(
            from_static_secret(&input(&d)).unwrap_err(),
            StaticError::MissingKey("password".into())
        );
        let d = data(&[("password", b"x")]);
        assert_eq!(
            from_static_secret(&input(&d)).unwrap_err(),
            StaticError::MissingKey("username".into())
        );
    }

    #[test]
    fn refuses_colon_in_username_and_binary() {
        let d = data(&[("username", b"a:b"), ("password", b"x")]);
        assert_eq!(
            from_static_secret(&input(&d)).unwrap_err(),
            StaticError::ColonInUsername("username".into())
        );
        let d = data(&[("username", b"a"), ("password", &[0xff, 0xfe])]);
        assert_eq!(
            from_static_secret(&input(&d)).unwrap_err(),
            StaticError::NotUtf8("password".into())
        );
    }

    #[test]
    fn debug_output_redacts_the_password() {
        let d = data(&[("username", b"robot"), ("password", b"hunter2")]);
        let auth = from_static_secret(&input(&d)).unwrap();
        assert!(!format!("{auth:?}").contains("hunter2"));
    }
}
