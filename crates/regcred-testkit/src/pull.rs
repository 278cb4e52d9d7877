//! Does a pull Secret really let kubelet pull? `testbed pullcheck` answers with kubelet's own
//! credential matching and a real pull from the bed's registry.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use serde_json::json;

use crate::TestBed;

impl TestBed {
    /// Runs `testbed pullcheck` on `secret` (as a pod's only pull secret) for `image`:
    /// `Ok("pulled IMAGE with the credential for SERVER")`, or `Err` with its reason, e.g.
    /// `pullcheck: no credential in secret NS/NAME matches image ...` or
    /// `pullcheck: could not pull ...`. Neither holds a password.
    pub async fn pull_check(&self, secret: &Secret, image: &str) -> Result<String, String> {
        self.pull_check_mapped(secret, image, &[]).await
    }

    /// Like [`TestBed::pull_check`], but pulls from `ADDR` for an image whose host is `HOST`
    /// for each `(HOST, ADDR)` of `maps` (kubelet's matching still sees `HOST`): ECR hosts
    /// are served by the AWS emulator's registry front.
    pub async fn pull_check_mapped(
        &self,
        secret: &Secret,
        image: &str,
        maps: &[(&str, &str)],
    ) -> Result<String, String> {
        // NamedTempFile is created with mode 0600: the Secret holds a password.
        let mut file = tempfile::Builder::new()
            .prefix("regcred-pullcheck-")
            .suffix(".json")
            .tempfile()
            .expect("a temporary file");
        serde_json::to_writer(&mut file, secret).expect("a Secret serializes");
        file.flush()
            .expect("writing the Secret to a temporary file");
        let output = tokio::process::Command::new(&self.info.testbed)
            .arg("pullcheck")
            .arg("--secret")
            .arg(file.path())
            .arg("--image")
            .arg(image)
            .arg("--cert-dir")
            .arg(&self.info.registry.ca_dir)
            .args(
                maps.iter()
                    .flat_map(|(host, addr)| ["--map".to_owned(), format!("{host}={addr}")]),
            )
            .output()
            .await
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.info.testbed.display()));
        let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).trim().to_owned();
        if output.status.success() {
            Ok(text(&output.stdout))
        } else {
            Err(text(&output.stderr))
        }
    }
}

/// A `kubernetes.io/dockerconfigjson` Secret (no name) with one entry: `server` with these
/// credentials, as `docker login` would write it.
pub fn dockerconfigjson_secret(server: &str, username: &str, password: &str) -> Secret {
    let auth = STANDARD.encode(format!("{username}:{password}"));
    let config = json!({
        "auths": {server: {"username": username, "password": password, "auth": auth}}
    });
    Secret {
        type_: Some("kubernetes.io/dockerconfigjson".to_owned()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".to_owned(),
            ByteString(config.to_string().into_bytes()),
        )])),
        ..Default::default()
    }
}
