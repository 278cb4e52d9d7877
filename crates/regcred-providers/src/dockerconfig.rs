//! The `.dockerconfigjson` document, encoded as `kubectl create secret docker-registry`
//! writes it (per server `username`, `password` and `auth`, base64 of `user:password`),
//! and decoded back: one codec for what regcred writes and what it reads after a restart.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::RegistryAuth;

/// The Secret key that holds the document.
pub const SECRET_KEY: &str = ".dockerconfigjson";
/// The Secret type kubelet reads it from.
pub const SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";

#[derive(Serialize)]
struct Written<'a> {
    auths: BTreeMap<&'a str, WrittenEntry<'a>>,
}

#[derive(Serialize)]
struct WrittenEntry<'a> {
    username: &'a str,
    password: &'a str,
    auth: String,
}

#[derive(Deserialize)]
struct Read {
    auths: BTreeMap<String, ReadEntry>,
}

#[derive(Deserialize)]
struct ReadEntry {
    username: String,
    password: String,
}

/// Encodes the entries as `.dockerconfigjson` bytes. Servers are sorted, so the same
/// credentials always give the same bytes and an unchanged Secret is never rewritten.
pub fn encode(entries: &[RegistryAuth]) -> Vec<u8> {
    let auths = entries
        .iter()
        .map(|entry| {
            let password = entry.password.expose_secret();
            let auth = STANDARD.encode(format!("{}:{}", entry.username, password));
            (
                entry.server.as_str(),
                WrittenEntry {
                    username: &entry.username,
                    password,
                    auth,
                },
            )
        })
        .collect();
    serde_json::to_vec(&Written { auths }).expect("a map of strings always serializes")
}

/// Decodes what [`encode`] wrote; `None` for anything else (no `auths`, an entry without
/// `username` and `password`, not JSON).
pub fn decode(bytes: &[u8]) -> Option<Vec<RegistryAuth>> {
    let read: Read = serde_json::from_slice(bytes).ok()?;
    Some(
        read.auths
            .into_iter()
            .map(|(server, e)| RegistryAuth {
                server,
                username: e.username,
                password: SecretString::from(e.password),
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        let written = [
            auth("a.example.com", "AWS", "token:with:colons"),
            auth("b.example.com:5000", "robot", "p"),
        ];
        let read = decode(&encode(&written)).unwrap();
        assert_eq!(read.len(), 2);
        for (r, w) in read.iter().zip(&written) {
            assert_eq!(r.server, w.server);
            assert_eq!(r.username, w.username);
            assert_eq!(r.password.expose_secret(), w.password.expose_secret());
        }
    }

    #[test]
    fn decode_refuses_what_encode_cannot_have_written() {
        for bytes in [
            &b"not json"[..],
            br#"{"harbor.example.com":{"username":"u","password":"p"}}"#,
            br#"{"auths":{"x":{"auth":"dTpw"}}}"#,
            br#"{"auths":"x"}"#,
        ] {
            assert!(
                decode(bytes).is_none(),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(decode(br#"{"auths":{}}"#).unwrap().len(), 0);
    }
}
