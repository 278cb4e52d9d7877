//! Reading pull Secrets (`kubernetes.io/dockerconfigjson` and the legacy
//! `kubernetes.io/dockercfg`) as kubelet reads them, into what may be shown: servers, user
//! names, whether a password is set, and when a token expires. What is read here never
//! holds a password or a token: the types have no field for one.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Map, Value};

pub const DOCKER_CONFIG_JSON: &str = "kubernetes.io/dockerconfigjson";
pub const DOCKER_CFG: &str = "kubernetes.io/dockercfg";

/// One server of a pull Secret, without its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub server: String,
    /// `username`, or the user part of `auth`.
    pub username: Option<String>,
    /// Whether a password (or `auth`) is there.
    pub has_password: bool,
    /// Whether an `identitytoken` or `registrytoken` is there.
    pub has_token: bool,
    /// When the password or token expires, when it says so itself (a JWT's `exp`, an ECR
    /// token's `expiration`).
    pub expires_at: Option<Timestamp>,
    /// What said so: `jwt` or `ecr`.
    pub expiry_source: Option<&'static str>,
}

/// The `auths` of a pull Secret as kubelet reads it: by the Secret's type, from its key.
/// `None` for another type, or when the data is missing or not JSON.
fn auths(secret: &Secret) -> Option<Map<String, Value>> {
    let (key, nested) = match secret.type_.as_deref()? {
        DOCKER_CONFIG_JSON => (".dockerconfigjson", true),
        DOCKER_CFG => (".dockercfg", false),
        _ => return None,
    };
    let bytes = &secret.data.as_ref()?.get(key)?.0;
    let doc: Value = serde_json::from_slice(bytes).ok()?;
    let auths = if nested { doc.get("auths")? } else { &doc };
    auths.as_object().cloned()
}

/// The servers of a pull Secret (empty for any other Secret).
pub fn servers(secret: &Secret) -> Vec<String> {
    auths(secret)
        .map(|a| a.keys().cloned().collect())
        .unwrap_or_default()
}

/// The entries of a pull Secret, sorted by server; `Err` says why it is not one.
pub fn entries(secret: &Secret) -> Result<Vec<Entry>, String> {
    let kind = secret.type_.as_deref().unwrap_or("Opaque");
    if kind != DOCKER_CONFIG_JSON && kind != DOCKER_CFG {
        return Err(format!(
            "type {kind}: not a pull Secret ({DOCKER_CONFIG_JSON} or {DOCKER_CFG})"
        ));
    }
    let auths = auths(secret).ok_or_else(|| {
        format!(
            "type {kind}, but its data is missing or is not a docker config: kubelet ignores it"
        )
    })?;
    let mut entries: Vec<Entry> = auths.iter().map(|(server, v)| entry(server, v)).collect();
    entries.sort_by(|a, b| a.server.cmp(&b.server));
    Ok(entries)
}

fn entry(server: &str, value: &Value) -> Entry {
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    // `auth` is base64 of `user:password`; only the user part leaves this function.
    let decoded_auth = text("auth")
        .and_then(|a| STANDARD.decode(a.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let (auth_user, auth_password) = match decoded_auth.as_deref().and_then(|a| a.split_once(':')) {
        Some((user, password)) => (Some(user.to_owned()), Some(password)),
        None => (None, None),
    };
    let password = text("password").or(auth_password);
    let token = text("identitytoken").or(text("registrytoken"));
    let expiry = password
        .and_then(expiry_of)
        .or_else(|| token.and_then(expiry_of));
    Entry {
        server: server.to_owned(),
        username: text("username")
            .map(str::to_owned)
            .or(auth_user)
            .filter(|u| !u.is_empty()),
        has_password: password.is_some(),
        has_token: token.is_some(),
        expires_at: expiry.map(|(t, _)| t),
        expiry_source: expiry.map(|(_, s)| s),
    }
}

/// When a secret says it expires: a JWT's `exp`, or an ECR token's `expiration` (its
/// password is base64 of a JSON document with that field).
fn expiry_of(secret: &str) -> Option<(Timestamp, &'static str)> {
    let parts: Vec<&str> = secret.split('.').collect();
    if parts.len() == 3 {
        let claims = URL_SAFE_NO_PAD
            .decode(parts[1].trim_end_matches('='))
            .ok()?;
        let claims: Value = serde_json::from_slice(&claims).ok()?;
        let exp = claims.get("exp")?.as_f64()?;
        return Some((Timestamp::from_second(exp as i64).ok()?, "jwt"));
    }
    let doc = STANDARD.decode(secret.trim()).ok()?;
    let doc: Value = serde_json::from_slice(&doc).ok()?;
    let expiration = doc.get("expiration")?.as_f64()?;
    Some((Timestamp::from_second(expiration as i64).ok()?, "ecr"))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;

    fn secret(kind: &str, key: &str, doc: Value) -> Secret {
        Secret {
            type_: Some(kind.into()),
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(serde_json::to_vec(&doc).unwrap()),
            )])),
            ..Default::default()
        }
    }

    #[test]
    fn reads_users_and_expiries_never_passwords() {
        let jwt_claims = URL_SAFE_NO_PAD.encode(r#"{"exp":2000000000,"sub":"robot"}"#);
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{jwt_claims}.c2ln");
        let ecr = STANDARD.encode(r#"{"payload":"x","datakey":"y","version":"2","type":"DATA_KEY","expiration":1900000000}"#);
        let s = secret(
            DOCKER_CONFIG_JSON,
            ".dockerconfigjson",
            serde_json::json!({"auths": {
                "b.example.com": {"auth": STANDARD.encode("robot:s3cret")},
                "a.example.com": {"username": "u", "password": jwt},
                "1234.dkr.ecr.eu-west-1.amazonaws.com": {"username": "AWS", "password": ecr},
                "c.example.com": {"identitytoken": "opaque"},
            }}),
        );
        let entries = entries(&s).unwrap();
        let servers: Vec<&str> = entries.iter().map(|e| e.server.as_str()).collect();
        assert_eq!(
            servers,
            [
                "1234.dkr.ecr.eu-west-1.amazonaws.com",
                "a.example.com",
                "b.example.com",
                "c.example.com"
            ]
        );
        assert_eq!(entries[0].expiry_source, Some("ecr"));
        assert_eq!(
            entries[0].expires_at,
            Timestamp::from_second(1900000000).ok()
        );
        assert_eq!(entries[1].expiry_source, Some("jwt"));
        assert_eq!(
            entries[1].expires_at,
            Timestamp::from_second(2000000000).ok()
        );
        assert_eq!(entries[2].username.as_deref(), Some("robot"));
        assert!(entries[2].has_password && entries[2].expires_at.is_none());
        assert!(entries[3].has_token && !entries[3].has_password);
        // Nothing that was read carries a secret.
        let shown = format!("{entries:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("opaque") && !shown.contains("DATA_KEY")
        );
    }

    #[test]
    fn legacy_dockercfg_and_other_types() {
        let s = secret(
            DOCKER_CFG,
            ".dockercfg",
            serde_json::json!({"r.example.com": {"username": "u", "password": "p"}}),
        );
        assert_eq!(servers(&s), ["r.example.com"]);
        let wrong = secret(
            "Opaque",
            ".dockerconfigjson",
            serde_json::json!({"auths": {"x": {}}}),
        );
        assert!(servers(&wrong).is_empty());
        assert!(entries(&wrong).unwrap_err().contains("not a pull Secret"));
        let broken = secret(DOCKER_CONFIG_JSON, ".dockercfg", serde_json::json!({}));
        assert!(servers(&broken).is_empty());
        assert!(entries(&broken).unwrap_err().contains("kubelet ignores it"));
    }
}
