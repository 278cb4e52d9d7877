//! Bad specs are refused by `kubectl apply` itself, with a message a person understands:
//! the CRD schema and its CEL rules run in the real API server.

use regcred_e2e::{install, kubectl_output};
use regcred_testkit::TestBed;

const OK_REGISTRY: &str = "- server: harbor.example.com\n    static: {secretRef: {name: login}}";

/// A namespaced credential with `spec` (YAML, indented two spaces under `spec:`).
fn namespaced(spec: &str) -> String {
    format!(
        "apiVersion: regcred.io/v1alpha1\nkind: RegistryCredential\nmetadata: {{name: bad, namespace: default}}\nspec:\n  {spec}\n"
    )
}

fn cluster(spec: &str) -> String {
    format!(
        "apiVersion: regcred.io/v1alpha1\nkind: ClusterRegistryCredential\nmetadata: {{name: bad}}\nspec:\n  {spec}\n"
    )
}

/// Each case: what is wrong, the manifest, and a part of the message kubectl must show.
fn cases() -> Vec<(&'static str, String, &'static str)> {
    vec![
        (
            "no registries",
            namespaced("registries: []"),
            "should have at least 1 items",
        ),
        (
            "registries missing",
            namespaced("secretName: x"),
            "spec.registries: Required value",
        ),
        (
            "no provider",
            namespaced("registries:\n  - server: harbor.example.com"),
            "each registry needs exactly one provider",
        ),
        (
            "static without server",
            namespaced("registries:\n  - static: {secretRef: {name: login}}"),
            "a registry with a static provider needs a server",
        ),
        (
            "server with a scheme",
            namespaced(
                "registries:\n  - server: https://harbor.example.com\n    static: {secretRef: {name: login}}",
            ),
            "server must be host[:port][/path]",
        ),
        (
            "server with a space",
            namespaced(
                "registries:\n  - server: harbor example.com\n    static: {secretRef: {name: login}}",
            ),
            "server must be host[:port][/path]",
        ),
        (
            "duplicate servers",
            namespaced(&format!("registries:\n  {OK_REGISTRY}\n  {OK_REGISTRY}")),
            "each server may appear only once",
        ),
        (
            "invalid secretName",
            namespaced(&format!(
                "secretName: Pull_Secret\n  registries:\n  {OK_REGISTRY}"
            )),
            "secretName must be a valid Secret name",
        ),
        (
            "invalid source Secret name",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: Bad_Name}}",
            ),
            "secretRef.name must be a valid Secret name",
        ),
        (
            "invalid source key",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, passwordKey: 'pass word'}}",
            ),
            "a Secret key may contain only",
        ),
        (
            "namespaced credential naming a source namespace",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, namespace: other}}",
            ),
            "a RegistryCredential reads Secrets only in its own namespace",
        ),
        (
            "cluster credential without a source namespace",
            cluster(&format!("registries:\n  {OK_REGISTRY}")),
            "must name the namespace of each source Secret",
        ),
        (
            "names and selector for ServiceAccounts",
            namespaced(&format!(
                "serviceAccounts: {{names: [app], selector: {{matchLabels: {{a: b}}}}}}\n  registries:\n  {OK_REGISTRY}"
            )),
            "set either names or selector, not both",
        ),
        (
            "invalid ServiceAccount name",
            namespaced(&format!(
                "serviceAccounts: {{names: [App_1]}}\n  registries:\n  {OK_REGISTRY}"
            )),
            "serviceAccounts.names must be valid ServiceAccount names",
        ),
        (
            "selector operator In without values",
            namespaced(&format!(
                "serviceAccounts: {{selector: {{matchExpressions: [{{key: tier, operator: In}}]}}}}\n  registries:\n  {OK_REGISTRY}"
            )),
            "In and NotIn need values",
        ),
        (
            "selector with an unknown operator",
            namespaced(&format!(
                "serviceAccounts: {{selector: {{matchExpressions: [{{key: tier, operator: Matches, values: [x]}}]}}}}\n  registries:\n  {OK_REGISTRY}"
            )),
            "Unsupported value: \"Matches\"",
        ),
        (
            "invalid label value in a selector",
            namespaced(&format!(
                "serviceAccounts: {{selector: {{matchLabels: {{tier: '-web'}}}}}}\n  registries:\n  {OK_REGISTRY}"
            )),
            "matchLabels values must be valid label values",
        ),
        (
            "unknown deletionPolicy",
            namespaced(&format!(
                "deletionPolicy: Keep\n  registries:\n  {OK_REGISTRY}"
            )),
            "Unsupported value: \"Keep\"",
        ),
        (
            "namespace names and selector together",
            cluster(
                "namespaces: {names: [a], selector: {matchLabels: {a: b}}}\n  registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, namespace: ops}}",
            ),
            "namespaces: set either names or selector, not both",
        ),
        (
            "invalid namespace in exclude",
            cluster(
                "namespaces: {exclude: [Kube_System]}\n  registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, namespace: ops}}",
            ),
            "namespace names must be valid DNS labels",
        ),
        (
            "ECR region syntax",
            namespaced("registries:\n  - ecr: {region: EU-West-1, auth: {secretRef: {name: aws}}}"),
            "region must be an AWS region",
        ),
        (
            "ECR account id",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, registryIds: ['12345'], auth: {secretRef: {name: aws}}}",
            ),
            "registryIds must be 12-digit AWS account IDs",
        ),
        (
            "ECR role ARN",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, auth: {secretRef: {name: aws}, roleArn: 'arn:aws:iam::123:user/me'}}",
            ),
            "roleArn must be an IAM role ARN",
        ),
        (
            "ECR with a server",
            namespaced(
                "registries:\n  - server: h.example.com\n    ecr: {region: eu-west-1, auth: {secretRef: {name: aws}}}",
            ),
            "an ecr registry takes its hosts from ecr.registryIds",
        ),
        (
            "static and ECR together",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login}}\n    ecr: {region: eu-west-1}",
            ),
            "exactly one provider: static or ecr",
        ),
        (
            "ECR keys and ServiceAccount together",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, auth: {secretRef: {name: aws}, serviceAccountRef: {name: puller}}}",
            ),
            "set either secretRef or serviceAccountRef, not both",
        ),
        (
            "ECR token audience of the API server",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, auth: {serviceAccountRef: {name: puller, audience: 'https://kubernetes.default.svc'}}}",
            ),
            "must not be the Kubernetes API server's own audience",
        ),
        (
            "ECR plain http endpoint",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, endpoint: 'http://ecr.local', auth: {secretRef: {name: aws}}}",
            ),
            "endpoint must be an https:// URL",
        ),
        (
            "namespaced ECR naming another namespace",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, auth: {serviceAccountRef: {name: puller, namespace: other}}}",
            ),
            "uses Secrets and ServiceAccounts of its own namespace only",
        ),
        (
            "renewBefore syntax",
            namespaced(&format!(
                "renewBefore: 4 hours\n  registries:\n  {OK_REGISTRY}"
            )),
            "renewBefore must be a duration",
        ),
        (
            "renewBefore value",
            namespaced(&format!("renewBefore: 30s\n  registries:\n  {OK_REGISTRY}")),
            "renewBefore must be between 1m and 168h",
        ),
    ]
}

#[test]
fn invalid_specs_are_refused_at_apply_time_with_a_readable_message() {
    let bed = TestBed::get();
    install(bed);
    let mut failures = Vec::new();
    let all = cases();
    for (what, manifest, expected) in &all {
        let (ok, output) = kubectl_output(bed, &["apply", "-f", "-"], Some(manifest));
        if ok {
            failures.push(format!("{what}: accepted, but should be refused"));
        } else if !output.contains(expected) {
            failures.push(format!(
                "{what}: refused, but the message lacks {expected:?}:\n{output}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(all.len() >= 12);
    println!("{} invalid specs refused by kubectl apply", all.len());
}

#[test]
fn valid_specs_are_accepted_with_defaults() {
    let bed = TestBed::get();
    install(bed);
    let manifest =
        namespaced(&format!("registries:\n  {OK_REGISTRY}")).replace("name: bad", "name: good");
    let (ok, output) = kubectl_output(bed, &["apply", "-f", "-"], Some(&manifest));
    assert!(ok, "{output}");
    let (ok, json) = kubectl_output(
        bed,
        &[
            "-n",
            "default",
            "get",
            "registrycredential",
            "good",
            "-o",
            "json",
        ],
        None,
    );
    assert!(ok, "{json}");
    let object: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(object["spec"]["deletionPolicy"], "Delete");
    assert_eq!(
        object["spec"]["registries"][0]["static"]["secretRef"]["usernameKey"],
        "username"
    );
    assert_eq!(
        object["spec"]["registries"][0]["static"]["secretRef"]["passwordKey"],
        "password"
    );
    kubectl_output(
        bed,
        &["-n", "default", "delete", "registrycredential", "good"],
        None,
    );
}
