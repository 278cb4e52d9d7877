//! `admission.k8s.io/v1` AdmissionReview, the few fields regcred reads and writes.

use base64::Engine;
use serde::Deserialize;
use serde_json::{Value, json};

use super::Op;

/// The part of a review's request that regcred reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Request {
    pub(crate) uid: String,
    pub(crate) kind: Kind,
    #[serde(default)]
    pub(crate) namespace: Option<String>,
    pub(crate) operation: String,
    #[serde(default)]
    pub(crate) sub_resource: Option<String>,
    #[serde(default)]
    pub(crate) object: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Kind {
    #[serde(default)]
    pub(crate) group: String,
    pub(crate) kind: String,
}

#[derive(Deserialize)]
struct Review {
    #[serde(rename = "apiVersion")]
    api_version: String,
    request: Option<Request>,
}

/// Reads a review; `Err` says why it cannot be answered (HTTP 400).
pub(crate) fn parse(body: &[u8]) -> Result<Request, String> {
    let review: Review =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    if review.api_version != "admission.k8s.io/v1" {
        return Err(format!(
            "AdmissionReview {} is not served (admission.k8s.io/v1 is)",
            review.api_version
        ));
    }
    review
        .request
        .ok_or_else(|| "the AdmissionReview has no request".to_owned())
}

/// The answer: always allowed (regcred only adds), with a JSON Patch when there is one.
/// `note` becomes an audit annotation (`<webhook name>/regcred`), so the audit log says
/// what regcred did or why it did nothing.
pub(crate) fn allow(uid: &str, patch: Option<&[Op]>, note: &str) -> Vec<u8> {
    let mut response = json!({
        "uid": uid,
        "allowed": true,
        "auditAnnotations": { "regcred": note },
    });
    if let Some(ops) = patch {
        let bytes = serde_json::to_vec(ops).expect("a JSON patch serializes");
        response["patchType"] = "JSONPatch".into();
        response["patch"] = base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into();
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
    .expect("a review serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_review_round_trips() {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "kind": {"group": "", "version": "v1", "kind": "ServiceAccount"},
                "resource": {"group": "", "version": "v1", "resource": "serviceaccounts"},
                "namespace": "team-a",
                "operation": "CREATE",
                "userInfo": {"username": "admin"},
                "object": {"metadata": {"name": "app"}},
                "dryRun": false
            }
        });
        let request = parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(request.kind.kind, "ServiceAccount");
        assert_eq!(request.namespace.as_deref(), Some("team-a"));
        let ops = vec![json!({"op": "add", "path": "/imagePullSecrets", "value": []})];
        let answer: Value =
            serde_json::from_slice(&allow(&request.uid, Some(&ops), "added")).unwrap();
        assert_eq!(answer["response"]["uid"], request.uid.as_str());
        assert_eq!(answer["response"]["allowed"], true);
        assert_eq!(answer["response"]["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(answer["response"]["patch"].as_str().unwrap())
            .unwrap();
        assert_eq!(serde_json::from_slice::<Vec<Value>>(&patch).unwrap(), ops);
        let plain: Value = serde_json::from_slice(&allow("u", None, "nothing")).unwrap();
        assert!(plain["response"].get("patch").is_none());
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        assert!(parse(b"{").is_err());
        assert!(parse(br#"{"apiVersion":"admission.k8s.io/v1beta1","request":{}}"#).is_err());
        assert!(parse(br#"{"apiVersion":"admission.k8s.io/v1"}"#).is_err());
    }
}
