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

/// A namespaced credential with `field` (one line of YAML under `spec:`) and a good
/// registry.
fn with_ok_registry(field: &str) -> String {
    namespaced(&format!("{field}\n  registries:\n  {OK_REGISTRY}"))
}

/// A cluster credential with `field` and a good registry.
fn cluster_with_ok_registry(field: &str) -> String {
    cluster(&format!(
        "{field}\n  registries:\n  - server: h.example.com\n    static: {{secretRef: {{name: login, namespace: ops}}}}"
    ))
}

/// A namespaced credential whose one static registry is `server`.
fn server(server: &str) -> String {
    namespaced(&format!(
        "registries:\n  - server: {server}\n    static: {{secretRef: {{name: login}}}}"
    ))
}

/// A namespaced credential whose one registry is `ecr: {fields}`.
fn ecr(fields: &str) -> String {
    namespaced(&format!("registries:\n  - ecr: {{{fields}}}"))
}

/// Parts of the API server's message when a CEL rule fails to evaluate instead of
/// returning false: the person sees CEL's internals, not the rule's message.
const CEL_INTERNALS: [&str; 4] = [
    "type conversion error",
    "no such key",
    "no such overload",
    "compilation failed",
];

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
        // Label selectors: matchExpressions as strictly as matchLabels (issue 8, item 6).
        (
            "ServiceAccount selector: invalid key in matchExpressions",
            with_ok_registry(
                "serviceAccounts: {selector: {matchExpressions: [{key: 'tier name', operator: Exists}]}}",
            ),
            "matchExpressions keys must be valid label keys",
        ),
        (
            "namespace selector: invalid key in matchExpressions",
            cluster_with_ok_registry(
                "namespaces: {selector: {matchExpressions: [{key: 'Example.com/tier', operator: In, values: [web]}]}}",
            ),
            "matchExpressions keys must be valid label keys",
        ),
        (
            "matchExpressions key with a name over 63 characters",
            with_ok_registry(&format!(
                "serviceAccounts: {{selector: {{matchExpressions: [{{key: {}, operator: Exists}}]}}}}",
                "n".repeat(64)
            )),
            "matchExpressions keys must be valid label keys",
        ),
        (
            "matchExpressions key with a prefix over 253 characters",
            cluster_with_ok_registry(&format!(
                "namespaces: {{selector: {{matchExpressions: [{{key: '{}.io/tier', operator: Exists}}]}}}}",
                "p".repeat(251)
            )),
            "matchExpressions keys must be valid label keys",
        ),
        (
            "matchExpressions key ending in '/'",
            with_ok_registry(
                "serviceAccounts: {selector: {matchExpressions: [{key: 'example.com/', operator: Exists}]}}",
            ),
            "matchExpressions keys must be valid label keys",
        ),
        (
            "selector operator Exists with values",
            with_ok_registry(
                "serviceAccounts: {selector: {matchExpressions: [{key: tier, operator: Exists, values: [web]}]}}",
            ),
            "Exists and DoesNotExist take none",
        ),
        (
            "namespace selector operator NotIn without values",
            cluster_with_ok_registry(
                "namespaces: {selector: {matchExpressions: [{key: tier, operator: NotIn, values: []}]}}",
            ),
            "In and NotIn need values",
        ),
        (
            "namespace selector operator DoesNotExist with values",
            cluster_with_ok_registry(
                "namespaces: {selector: {matchExpressions: [{key: tier, operator: DoesNotExist, values: [x]}]}}",
            ),
            "Exists and DoesNotExist take none",
        ),
        (
            "namespace selector with an unknown operator",
            cluster_with_ok_registry(
                "namespaces: {selector: {matchExpressions: [{key: tier, operator: exists}]}}",
            ),
            "Unsupported value: \"exists\"",
        ),
        (
            "invalid label value in matchExpressions values",
            with_ok_registry(
                "serviceAccounts: {selector: {matchExpressions: [{key: tier, operator: In, values: ['web app']}]}}",
            ),
            "matchExpressions values must be valid label values",
        ),
        (
            "namespace selector: invalid key in matchLabels",
            cluster_with_ok_registry("namespaces: {selector: {matchLabels: {'team a': x}}}"),
            "matchLabels keys must be valid label keys",
        ),
        // Ports (issue 8, item 6).
        (
            "server port 0",
            server("h.example.com:0"),
            "server: the port must be a number from 1 to 65535",
        ),
        (
            "server port 99999",
            server("h.example.com:99999"),
            "server: the port must be a number from 1 to 65535",
        ),
        (
            "server port 65536",
            server("127.0.0.1:65536/team"),
            "server: the port must be a number from 1 to 65535",
        ),
        (
            "server port with a leading zero",
            server("h.example.com:05000"),
            "server: the port must be a number from 1 to 65535 without leading zeros",
        ),
        (
            "ECR endpoint port 0",
            ecr(
                "region: eu-west-1, endpoint: 'https://ecr.example.com:0', auth: {secretRef: {name: aws}}",
            ),
            "endpoint: the port must be a number from 1 to 65535",
        ),
        // renewBefore (issue 8, item 6): readable whatever the size.
        (
            "renewBefore huge",
            with_ok_registry("renewBefore: 99999999h"),
            "renewBefore must be between 1m and 168h",
        ),
        (
            "renewBefore huge in seconds",
            with_ok_registry("renewBefore: 9999999999999s"),
            "renewBefore must be between 1m and 168h",
        ),
        (
            "renewBefore zero",
            with_ok_registry("renewBefore: 0h0m"),
            "renewBefore must be between 1m and 168h",
        ),
        (
            "renewBefore negative",
            with_ok_registry("renewBefore: -1h"),
            "renewBefore must be a duration",
        ),
        (
            "renewBefore over 168h",
            with_ok_registry("renewBefore: 168h1s"),
            "renewBefore must be between 1m and 168h",
        ),
        (
            "renewBefore not shorter than an ECR token's 12h",
            namespaced(
                "renewBefore: 12h\n  registries:\n  - ecr: {region: eu-west-1, auth: {secretRef: {name: aws}}}",
            ),
            "renewBefore must be shorter than 12h, the lifetime of an ECR token",
        ),
        // Servers that kubelet would never match, or that collide.
        (
            "server with a trailing slash",
            server("h.example.com/"),
            "server must be host[:port][/path]",
        ),
        (
            "server with an uppercase path",
            server("h.example.com/Team"),
            "server must be host[:port][/path]",
        ),
        (
            "empty server",
            server("''"),
            "server must be host[:port][/path]",
        ),
        (
            "static server that is an ECR registry host",
            namespaced(
                "registries:\n  - server: 123456789012.dkr.ecr.cn-north-1.amazonaws.com.cn\n    static: {secretRef: {name: login}}\n  - ecr: {region: cn-north-1, registryIds: ['123456789012'], auth: {secretRef: {name: aws}}}",
            ),
            "a server is also the registry host of an account in an ecr entry",
        ),
        // ECR.
        (
            "ECR account listed twice",
            ecr(
                "region: eu-west-1, registryIds: ['123456789012', '123456789012'], auth: {secretRef: {name: aws}}",
            ),
            "registryIds must not list an account twice",
        ),
        (
            "ECR account in two entries of one region",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, registryIds: ['123456789012'], auth: {secretRef: {name: aws}}}\n  - ecr: {region: eu-west-1, registryIds: ['210987654321', '123456789012'], auth: {secretRef: {name: other}}}",
            ),
            "two ecr entries list the same account in the same region",
        ),
        (
            "ECR role ARN without a role name",
            ecr(
                "region: eu-west-1, auth: {secretRef: {name: aws}, roleArn: 'arn:aws:iam::123456789012:role/team/'}",
            ),
            "roleArn must be an IAM role ARN",
        ),
        (
            "ECR role ARN of another partition than the region",
            ecr(
                "region: cn-north-1, auth: {secretRef: {name: aws}, roleArn: 'arn:aws:iam::123456789012:role/ecr-pull'}",
            ),
            "roleArn is in another AWS partition than region",
        ),
        (
            "ECR role ARN of the GovCloud partition in a commercial region",
            ecr(
                "region: eu-west-1, auth: {secretRef: {name: aws}, roleArn: 'arn:aws-us-gov:iam::123456789012:role/ecr-pull'}",
            ),
            "roleArn is in another AWS partition than region",
        ),
        (
            "ECR registryIds in a partition whose hosts regcred does not know",
            ecr(
                "region: us-isof-south-1, registryIds: ['123456789012'], auth: {secretRef: {name: aws}}",
            ),
            "regcred does not know the registry hosts of this region's partition",
        ),
        (
            "ECR endpoint of another region",
            ecr(
                "region: eu-west-1, endpoint: 'https://vpce-0a1b.api.ecr.us-east-1.vpce.amazonaws.com', auth: {secretRef: {name: aws}}",
            ),
            "endpoint is an AWS endpoint of another region than region",
        ),
        (
            "ECR endpoint with a space",
            ecr(
                "region: eu-west-1, endpoint: 'https://ecr.example.com/a b', auth: {secretRef: {name: aws}}",
            ),
            "endpoint must be an https:// URL",
        ),
        (
            "ECR endpoint with an empty host label",
            ecr(
                "region: eu-west-1, endpoint: 'https://ecr..example.com', auth: {secretRef: {name: aws}}",
            ),
            "endpoint must be an https:// URL",
        ),
        (
            "ECR endpoint with a query",
            ecr(
                "region: eu-west-1, endpoint: 'https://ecr.example.com/?x=1', auth: {secretRef: {name: aws}}",
            ),
            "endpoint must be an https:// URL",
        ),
        (
            "ECR token audience with a space",
            ecr(
                "region: eu-west-1, auth: {serviceAccountRef: {name: puller, audience: 'sts.amazonaws.com '}}",
            ),
            "serviceAccountRef.audience must not contain spaces",
        ),
        (
            "ECR access key ID and secret key read from one key",
            ecr(
                "region: eu-west-1, auth: {secretRef: {name: aws, secretAccessKeyKey: AWS_ACCESS_KEY_ID}}",
            ),
            "must name three different keys",
        ),
        // Source keys and names.
        (
            "usernameKey and passwordKey the same",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, usernameKey: password}}",
            ),
            "usernameKey and passwordKey must name different keys",
        ),
        (
            "source key '..'",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, passwordKey: '..'}}",
            ),
            "may not be '.' or start with '..'",
        ),
        (
            "ServiceAccount listed twice",
            with_ok_registry("serviceAccounts: {names: [app, default, app]}"),
            "serviceAccounts.names must not list a name twice",
        ),
        (
            "ServiceAccount name with a trailing space",
            with_ok_registry("serviceAccounts: {names: ['app ']}"),
            "serviceAccounts.names must be valid ServiceAccount names",
        ),
        (
            "namespace listed twice",
            cluster_with_ok_registry("namespaces: {names: [team-a, team-a]}"),
            "must not list a namespace twice",
        ),
        (
            "namespace both named and excluded",
            cluster_with_ok_registry("namespaces: {names: [team-a, team-b], exclude: [team-b]}"),
            "a namespace is in both names and exclude",
        ),
        (
            "empty secretName",
            with_ok_registry("secretName: ''"),
            "secretName must be a valid Secret name",
        ),
        (
            "empty source Secret name",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: ''}}",
            ),
            "secretRef.name must be a valid Secret name",
        ),
        // The pull Secret would be one of its own sources: a Conflict forever at run time.
        (
            "secretName is the source Secret",
            with_ok_registry("secretName: login"),
            "the pull Secret would have the name of a source Secret of this credential",
        ),
        (
            "credential named like its source Secret, without secretName",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: bad}}",
            ),
            "the pull Secret would have the name of a source Secret of this credential",
        ),
        (
            "secretName is the AWS keys Secret",
            namespaced(
                "secretName: aws\n  registries:\n  - ecr: {region: eu-west-1, auth: {secretRef: {name: aws}}}",
            ),
            "the pull Secret would have the name of a source Secret of this credential",
        ),
        (
            "cluster credential: secretName is a source Secret in a targeted namespace",
            cluster_with_ok_registry("secretName: login\n  namespaces: {names: [ops, team-a]}"),
            "the pull Secret would have the name of a source Secret in a namespace this credential targets",
        ),
        (
            "cluster credential for all namespaces named like its source Secret",
            cluster(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: bad, namespace: ops}}",
            ),
            "the pull Secret would have the name of a source Secret in a namespace this credential targets",
        ),
        // Empty or missing parts of a registry.
        (
            "empty registry entry",
            namespaced("registries:\n  - {}"),
            "each registry needs exactly one provider",
        ),
        (
            "static without secretRef",
            namespaced("registries:\n  - server: h.example.com\n    static: {}"),
            "secretRef: Required value",
        ),
        (
            "ECR without region",
            namespaced("registries:\n  - ecr: {auth: {secretRef: {name: aws}}}"),
            "region: Required value",
        ),
        (
            "unknown field in a registry",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login}}\n    password: hunter2",
            ),
            "unknown field \"spec.registries[0].password\"",
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
        } else if let Some(internal) = CEL_INTERNALS.iter().find(|i| output.contains(*i)) {
            failures.push(format!(
                "{what}: refused, but a rule failed to evaluate ({internal:?}):\n{output}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(all.len() >= 86);
    println!("{} invalid specs refused by kubectl apply", all.len());
}

/// Valid specs at the edges of the rules: each must pass (server-side dry run).
fn valid_cases() -> Vec<(&'static str, String)> {
    let long_prefix = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    let longest_key = format!("{long_prefix}/{}", "n".repeat(63));
    vec![
        ("lowest port", server("h.example.com:1")),
        (
            "highest port and a path",
            server("h.example.com:65535/team/app"),
        ),
        ("glob host", server("'*.example.com'")),
        ("IP address and port", server("127.0.0.1:5000")),
        (
            "selectors with every operator",
            with_ok_registry(
                "serviceAccounts: {selector: {matchLabels: {app.kubernetes.io/part-of: shop}, matchExpressions: [{key: app.kubernetes.io/name, operator: In, values: [web, api]}, {key: tier, operator: NotIn, values: ['']}, {key: owner, operator: Exists}, {key: legacy, operator: DoesNotExist, values: []}]}}",
            ),
        ),
        (
            "the longest label keys (253-character prefix, 63-character name)",
            cluster_with_ok_registry(&format!(
                "namespaces: {{selector: {{matchLabels: {{'{longest_key}': x}}, matchExpressions: [{{key: '{longest_key}', operator: Exists}}]}}}}"
            )),
        ),
        (
            "renewBefore just under an ECR token's lifetime",
            namespaced(
                "renewBefore: 11h59m\n  registries:\n  - ecr: {region: eu-west-1, auth: {secretRef: {name: aws}}}",
            ),
        ),
        ("renewBefore 1m", with_ok_registry("renewBefore: 1m")),
        (
            "renewBefore 168h without ECR",
            with_ok_registry("renewBefore: 168h"),
        ),
        (
            "role ARNs in each partition with their regions",
            namespaced(
                "registries:\n  - ecr: {region: cn-north-1, auth: {secretRef: {name: aws}, roleArn: 'arn:aws-cn:iam::123456789012:role/ecr-pull'}}\n  - ecr: {region: us-gov-west-1, auth: {secretRef: {name: aws}, roleArn: 'arn:aws-us-gov:iam::123456789012:role/team/ecr-pull'}}\n  - ecr: {region: eu-west-1, registryIds: ['123456789012'], auth: {secretRef: {name: aws}, roleArn: 'arn:aws:iam::123456789012:role/path/to/ecr-pull'}}",
            ),
        ),
        (
            "one account in two regions",
            namespaced(
                "registries:\n  - ecr: {region: eu-west-1, registryIds: ['123456789012'], auth: {secretRef: {name: aws}}}\n  - ecr: {region: us-east-1, registryIds: ['123456789012'], auth: {secretRef: {name: aws}}}\n  - server: 123456789012.dkr.ecr.eu-west-2.amazonaws.com\n    static: {secretRef: {name: login}}",
            ),
        ),
        (
            "a VPC endpoint with port and path",
            ecr(
                "region: eu-west-1, endpoint: 'https://vpce-0a1b2c3d4e5f-abcdefgh.api.ecr.eu-west-1.vpce.amazonaws.com:443/', auth: {secretRef: {name: aws}}",
            ),
        ),
        (
            "a region of a partition regcred has no hosts for, without registryIds",
            ecr("region: us-isof-south-1, auth: {secretRef: {name: aws}}"),
        ),
        (
            "source keys starting with one dot",
            namespaced(
                "registries:\n  - server: h.example.com\n    static: {secretRef: {name: login, usernameKey: .user, passwordKey: .password}}",
            ),
        ),
        (
            "cluster credential named like its source, whose namespace is excluded",
            cluster(
                "namespaces: {exclude: [ops]}\n  registries:\n  - server: h.example.com\n    static: {secretRef: {name: bad, namespace: ops}}",
            ),
        ),
        (
            "cluster credential named like its source, targeting by label",
            cluster(
                "namespaces: {selector: {matchLabels: {pull: enabled}}}\n  registries:\n  - server: h.example.com\n    static: {secretRef: {name: bad, namespace: ops}}",
            ),
        ),
    ]
}

#[test]
fn valid_specs_at_the_edges_are_accepted() {
    let bed = TestBed::get();
    install(bed);
    let mut failures = Vec::new();
    for (what, manifest) in valid_cases() {
        let (ok, output) = kubectl_output(
            bed,
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&manifest),
        );
        if !ok {
            failures.push(format!("{what}: refused:\n{output}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The shipped samples stay valid under every rule.
#[test]
fn samples_are_accepted() {
    let bed = TestBed::get();
    install(bed);
    let samples = regcred_e2e::root().join("config/samples");
    let path = |file: &str| samples.join(file).to_str().unwrap().to_owned();
    // The namespaced samples need their namespace to exist for a server-side dry run.
    let (ok, output) = kubectl_output(bed, &["apply", "-f", &path("namespace.yaml")], None);
    assert!(ok, "{output}");
    for args in [
        vec!["-k".to_owned(), samples.to_str().unwrap().to_owned()],
        vec!["-f".to_owned(), path("cluster-credential.yaml")],
        vec!["-f".to_owned(), path("ecr-credential.yaml")],
    ] {
        let mut all = vec!["apply", "--dry-run=server"];
        all.extend(args.iter().map(String::as_str));
        let (ok, output) = kubectl_output(bed, &all, None);
        assert!(ok, "kubectl {}: {output}", all.join(" "));
    }
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
