//! The `.dockerconfigjson` document, written as `kubectl create secret docker-registry`
//! writes it: per server `username`, `password` and `auth` (base64 of `user:password`).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use regcred_providers::RegistryAuth;
use secrecy::ExposeSecret;
use serde::Serialize;

#[derive(Serialize)]
struct DockerConfig<'a> {
    auths: BTreeMap<&'a str, Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    username: &'a str,
    password: &'a str,
    auth: String,
}

/// Encodes the entries as `.dockerconfigjson` bytes. Servers are sorted, so the same
/// credentials always give the same bytes and an unchanged Secret is never rewritten.
pub(crate) fn encode(entries: &[RegistryAuth]) -> Vec<u8> {
    let auths = entries
        .iter()
        .map(|entry| {
            let password = entry.password.expose_secret();
            let auth = STANDARD.encode(format!("{}:{}", entry.username, password));
            (
                entry.server.as_str(),
                Entry {
                    username: &entry.username,
                    password,
                    auth,
                },
            )
        })
        .collect();
    serde_json::to_vec(&DockerConfig { auths }).expect("a map of strings always serializes")
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    fn auth(server: &str, user: &str, password: &str) -> RegistryAuth {
        RegistryAuth {
            server: server.into(),
            username: user.into(),
            password: SecretString::from(password),
        }
    }

    #[test]
    fn matches_kubectl_create_secret_docker_registry() {
        let bytes = encode(&[auth("harbor.example.com", "robot", "s3cret")]);
        let doc: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let entry = &doc["auths"]["harbor.example.com"];
        assert_eq!(entry["username"], "robot");
        assert_eq!(entry["password"], "s3cret");
        assert_eq!(entry["auth"], STANDARD.encode("robot:s3cret"));
    }

    #[test]
    fn output_is_deterministic_whatever_the_input_order() {
        let a = encode(&[
            auth("b.example.com", "u", "p"),
            auth("a.example.com", "u", "p"),
        ]);
        let b = encode(&[
            auth("a.example.com", "u", "p"),
            auth("b.example.com", "u", "p"),
        ]);
        assert_eq!(a, b);
        assert!(
            String::from_utf8(a)
                .unwrap()
                .starts_with(r#"{"auths":{"a.example.com""#)
        );
    }
}
