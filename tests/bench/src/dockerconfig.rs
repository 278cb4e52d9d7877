//! `.dockerconfigjson`: what the limit writes, and the password the observer reads back.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;
use sha2::{Digest, Sha256};

/// One registry login, as kubelet reads it.
pub(crate) fn dockerconfigjson(server: &str, username: &str, password: &str) -> Vec<u8> {
    let auth = STANDARD.encode(format!("{username}:{password}"));
    serde_json::to_vec(&json!({"auths": {server: {
        "username": username, "password": password, "auth": auth,
    }}}))
    .expect("JSON")
}

/// The SHA-256 of the password a pull Secret holds for `server`: the bench compares
/// passwords without ever holding or printing one.
pub(crate) fn password_digest(secret: &Secret, server: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(".dockerconfigjson")?.0;
    let doc: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    doc["auths"][server]["password"].as_str().map(digest)
}

pub(crate) fn digest(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    #[test]
    fn the_digest_of_what_is_written_is_the_digest_of_the_password() {
        let secret = Secret {
            data: Some(
                [(
                    ".dockerconfigjson".to_owned(),
                    ByteString(dockerconfigjson("r.example", "u", "p1")),
                )]
                .into(),
            ),
            ..Default::default()
        };
        assert_eq!(password_digest(&secret, "r.example"), Some(digest("p1")));
        assert_eq!(password_digest(&secret, "other.example"), None);
    }
}
