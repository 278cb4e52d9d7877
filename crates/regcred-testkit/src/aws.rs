//! The AWS emulator's control API: token lifetimes, injected faults, role trust, and its
//! record of calls and issued tokens (hashes only, never a token).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::TestBed;

/// One AWS call the emulator answered.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AwsCall {
    pub service: String,
    pub operation: String,
    pub access_key_id: Option<String>,
    pub identity: Option<String>,
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// One ECR token the emulator issued.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedToken {
    pub sha256: String,
    pub issued_at: String,
    pub expires_at: String,
    pub identity: Option<String>,
}

/// A handle on the emulator's control endpoint.
pub struct AwsControl {
    base: String,
    http: reqwest::Client,
}

impl TestBed {
    pub fn aws(&self) -> AwsControl {
        AwsControl {
            base: self.info.aws.control.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
        }
    }
}

impl AwsControl {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("AWS emulator {path}: {e}"));
        let status = response.status();
        let value = response.json::<Value>().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "AWS emulator {path}: {status} {value}");
        value
    }

    /// Sets the lifetime of the ECR tokens issued from now on.
    pub async fn set_token_lifetime(&self, seconds: u64) {
        self.send(
            reqwest::Method::POST,
            "/config",
            Some(json!({"tokenLifetimeSeconds": seconds})),
        )
        .await;
    }

    /// Makes the next `times` calls of `operation` (all of them: `None`) fail with `error`
    /// (`AccessDenied`, `Throttling` or `Unavailable`).
    pub async fn inject_fault(&self, operation: &str, error: &str, times: Option<u32>) {
        let body = json!({"operation": operation, "error": error, "times": times});
        self.send(reqwest::Method::POST, "/faults", Some(body))
            .await;
    }

    pub async fn clear_faults(&self) {
        self.send(reqwest::Method::DELETE, "/faults", None).await;
    }

    /// Registers another static identity (access keys) with the emulator.
    pub async fn add_identity(&self, access_key_id: &str, secret_access_key: &str, arn: &str) {
        let body =
            json!({"accessKeyId": access_key_id, "secretAccessKey": secret_access_key, "arn": arn});
        self.send(reqwest::Method::POST, "/identities", Some(body))
            .await;
    }

    /// Lets only these ServiceAccount subjects assume `role_arn` by web identity.
    pub async fn trust(&self, role_arn: &str, subjects: &[&str]) {
        let body = json!({"roleArn": role_arn, "subjects": subjects});
        self.send(reqwest::Method::POST, "/trust", Some(body)).await;
    }

    /// Every call so far (since the last reset).
    pub async fn calls(&self) -> Vec<AwsCall> {
        let value = self.send(reqwest::Method::GET, "/calls", None).await;
        let list = value.get("calls").cloned().unwrap_or(value);
        serde_json::from_value(list).expect("the emulator's call record")
    }

    /// Every ECR token issued so far.
    pub async fn tokens(&self) -> Vec<IssuedToken> {
        let value = self.send(reqwest::Method::GET, "/tokens", None).await;
        let list = value.get("tokens").cloned().unwrap_or(value);
        serde_json::from_value(list).expect("the emulator's token record")
    }
}
