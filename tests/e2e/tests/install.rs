//! The install paths as written: every manifest the Helm chart and the kustomize base
//! render is accepted by a real API server (server-side dry-run, through the real
//! admission chain with Pod Security "restricted" enforced on the namespace), and the two
//! paths install the same thing where it matters: the same RBAC, the same CRDs, the
//! controller Pod run the same way.
//!
//! Running regcred from its image on a node with these manifests is the node tests' part:
//! push the image as tests/e2e/tests/image.rs does, create a docker-registry Secret for it
//! in the install namespace (regcred cannot supply its own pull Secret), then install with
//! `helm install … --set image.repository=…,image.tag=…,imagePullSecrets[0].name=…` or an
//! overlay of config/default (`images:` plus a patch adding the Deployment's
//! imagePullSecrets), and wait for the Deployment to be Available (its readinessProbe is
//! `/readyz`: the caches are listed).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use regcred_e2e::{kubectl_output, root};
use regcred_testkit::TestBed;
use serde_json::{Value, json};

/// The Helm CLI: `$REGCRED_HELM`, or the one hack/helm.sh builds (cached by version).
fn helm() -> &'static PathBuf {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("REGCRED_HELM") {
            return PathBuf::from(path);
        }
        let out = Command::new(root().join("hack/helm.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("hack/helm.sh runs");
        assert!(out.status.success(), "hack/helm.sh failed");
        let text = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(
            text.lines()
                .last()
                .expect("hack/helm.sh prints the path")
                .trim(),
        )
    })
}

/// `helm template regcred charts/regcred -n NAMESPACE ARGS`.
fn chart(namespace: &str, args: &[&str]) -> String {
    let out = Command::new(helm())
        .args(["template", "regcred"])
        .arg(root().join("charts/regcred"))
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `kubectl kustomize config/default`.
fn base(bed: &TestBed) -> String {
    let dir = root().join("config/default");
    let (ok, out) = kubectl_output(bed, &["kustomize", dir.to_str().unwrap()], None);
    assert!(ok, "kubectl kustomize config/default: {out}");
    out
}

/// The documents of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .map(|doc| {
            let value: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
            serde_json::to_value(value).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `kind/name` → object.
fn by_name(docs: &[Value]) -> BTreeMap<String, Value> {
    docs.iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d.clone(),
            )
        })
        .collect()
}

/// Applies `yaml` with `--dry-run=server` and returns kubectl's output; fails the test if
/// the API server refuses any object or Pod Security would reject the Pods.
fn dry_run(bed: &TestBed, what: &str, yaml: &str) -> String {
    let (ok, out) = kubectl_output(bed, &["apply", "--dry-run=server", "-f", "-"], Some(yaml));
    assert!(ok, "{what}: the API server refused it:\n{out}");
    let accepted = out
        .lines()
        .filter(|l| l.ends_with("(server dry run)"))
        .count();
    assert_eq!(
        accepted,
        documents(yaml).len(),
        "{what}: not every object was sent:\n{out}"
    );
    assert!(
        !out.contains("would violate PodSecurity"),
        "{what}: the controller Pod breaks Pod Security \"restricted\":\n{out}"
    );
    out
}

/// A namespace enforcing Pod Security "restricted", as config/manager/namespace.yaml does.
fn restricted_namespace(bed: &TestBed, name: &str) {
    let ns = json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
    });
    let (ok, out) = kubectl_output(bed, &["apply", "-f", "-"], Some(&ns.to_string()));
    assert!(ok, "{out}");
}

#[test]
fn every_rendered_manifest_passes_a_server_side_dry_run() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();

    // The kustomize base names its namespace; it must exist for the namespaced objects.
    restricted_namespace(bed, "regcred-system");
    let rendered = base(bed);
    let out = dry_run(bed, "kubectl kustomize config/default", &rendered);
    for object in [
        "deployment.apps/regcred ",
        "service/regcred-metrics ",
        "service/regcred-webhook ",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/regcred ",
        "customresourcedefinition.apiextensions.k8s.io/registrycredentials.regcred.io ",
    ] {
        assert!(
            out.contains(object),
            "config/default lacks {object}:\n{out}"
        );
    }

    // The chart with its defaults, into a namespace of its own.
    restricted_namespace(bed, "regcred-chart");
    let defaults = chart("regcred-chart", &[]);
    dry_run(bed, "helm template (defaults)", &defaults);

    // And with every optional object and value set (the ServiceMonitor aside: its CRD
    // belongs to the Prometheus Operator, which the bed does not run).
    let everything = chart(
        "regcred-chart",
        &[
            "--set",
            "podDisruptionBudget.enabled=true",
            "--set",
            "allowControllerAwsIdentity=true",
            "--set",
            "allowEcrEndpoints={ecr.example.com,vpce.example.com}",
            "--set",
            "extraArgs={--namespace-concurrency=32}",
            "--set",
            "extraEnv[0].name=AWS_REGION,extraEnv[0].value=eu-west-1",
            "--set",
            "serviceAccount.annotations.eks\\.amazonaws\\.com/role-arn=arn:aws:iam::123456789012:role/regcred",
            "--set",
            "podAnnotations.example\\.com/team=platform",
            "--set",
            "podLabels.team=platform",
            "--set",
            "tolerations[0].key=dedicated,tolerations[0].operator=Exists",
            "--set",
            "image.digest=sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "--set",
            "imagePullSecrets[0].name=regcred-image",
            "--set",
            "logFormat=text,logLevel=debug",
        ],
    );
    let objects = by_name(&documents(&everything));
    assert!(
        objects.contains_key("PodDisruptionBudget/regcred"),
        "{everything}"
    );
    let pod = &objects["Deployment/regcred"]["spec"]["template"]["spec"];
    let env = &pod["containers"][0]["env"];
    assert!(env.as_array().unwrap().contains(&json!({"name": "REGCRED_ALLOW_ECR_ENDPOINTS", "value": "ecr.example.com,vpce.example.com"})), "{env}");
    dry_run(bed, "helm template (every option)", &everything);

    let monitored = chart(
        "regcred-chart",
        &["--set", "metrics.serviceMonitor.enabled=true"],
    );
    let objects = by_name(&documents(&monitored));
    let monitor = &objects["ServiceMonitor/regcred"];
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        objects["Service/regcred-metrics"]["spec"]["selector"]
    );
}

/// Every ClusterRole and ClusterRoleBinding, by name: rules (order aside), aggregation
/// labels, role references and subjects.
fn rbac(docs: &[Value]) -> BTreeMap<String, Value> {
    by_name(docs)
        .into_iter()
        .filter(|(key, _)| key.starts_with("ClusterRole") || key.starts_with("Role"))
        .map(|(key, object)| {
            let mut rules: Vec<Value> = object["rules"].as_array().cloned().unwrap_or_default();
            rules.sort_by_key(|r| r.to_string());
            let aggregation: BTreeMap<String, Value> = object["metadata"]["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| k.starts_with("rbac.authorization.k8s.io/"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let summary = json!({
                "rules": rules,
                "aggregation": aggregation,
                "roleRef": object["roleRef"],
                "subjects": object["subjects"],
            });
            (key, summary)
        })
        .collect()
}

#[test]
fn chart_and_base_grant_the_same_rbac() {
    let bed = TestBed::get();
    let chart = rbac(&documents(&chart("regcred-system", &[])));
    let base = rbac(&documents(&base(bed)));
    assert_eq!(
        chart.keys().collect::<Vec<_>>(),
        base.keys().collect::<Vec<_>>(),
        "the same ClusterRoles and bindings"
    );
    for (name, expected) in &base {
        assert_eq!(
            &chart[name], expected,
            "{name} differs between the chart and config/"
        );
    }
    // Not vacuous: the controller's role is there, with its Secrets rule.
    let controller = &base["ClusterRole/regcred-controller"]["rules"];
    assert!(
        controller.to_string().contains("\"secrets\""),
        "{controller}"
    );
}

#[test]
fn chart_and_base_install_the_same_crds_and_run_the_controller_alike() {
    let bed = TestBed::get();
    let render = |args: &[&str]| by_name(&documents(&chart("regcred-system", args)));
    let chart = render(&[]);
    let base = by_name(&documents(&base(bed)));
    let generated = by_name(&documents(
        &std::fs::read_to_string(root().join("crds/regcred.io_crds.yaml")).unwrap(),
    ));
    assert_eq!(generated.len(), 2);
    for (name, crd) in &generated {
        assert_eq!(
            chart[name]["spec"], crd["spec"],
            "{name}: the chart's copy differs"
        );
        assert_eq!(base[name]["spec"], crd["spec"], "{name}: config/ differs");
    }
    // Kept on uninstall by default, as cert-manager's crds.keep.
    let crd = &chart["CustomResourceDefinition/registrycredentials.regcred.io"];
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let unkept = render(&["--set", "crds.keep=false"]);
    let crd = &unkept["CustomResourceDefinition/registrycredentials.regcred.io"];
    assert!(crd["metadata"]["annotations"].is_null(), "{crd}");
    let without = render(&["--set", "crds.enabled=false"]);
    assert!(
        !without
            .keys()
            .any(|k| k.starts_with("CustomResourceDefinition/")),
        "crds.enabled=false still renders CRDs"
    );
    assert!(without.contains_key("Deployment/regcred"));

    let pod = |objects: &BTreeMap<String, Value>| {
        let d = &objects["Deployment/regcred"]["spec"];
        let p = &d["template"]["spec"];
        let c = &p["containers"][0];
        let downward: Vec<&Value> = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e.get("valueFrom").is_some())
            .collect();
        json!({
            "replicas": d["replicas"],
            "strategy": d["strategy"],
            "serviceAccountName": p["serviceAccountName"],
            "automountServiceAccountToken": p["automountServiceAccountToken"],
            "terminationGracePeriodSeconds": p["terminationGracePeriodSeconds"],
            "podSecurityContext": p["securityContext"],
            "nodeSelector": p["nodeSelector"],
            "image": c["image"],
            "args": c["args"],
            "downwardEnv": downward,
            "ports": c["ports"],
            "livenessProbe": c["livenessProbe"],
            "readinessProbe": c["readinessProbe"],
            "resources": c["resources"],
            "securityContext": c["securityContext"],
        })
    };
    let (chart_pod, base_pod) = (pod(&chart), pod(&base));
    assert_eq!(chart_pod, base_pod);
    // Not vacuous: both set the downward API and run read-only as 65532.
    assert_eq!(
        base_pod["downwardEnv"].as_array().unwrap().len(),
        2,
        "{base_pod}"
    );
    assert_eq!(base_pod["podSecurityContext"]["runAsUser"], 65532);
    assert_eq!(base_pod["securityContext"]["readOnlyRootFilesystem"], true);
}

#[test]
fn chart_and_base_ship_the_same_guardrails() {
    let bed = TestBed::get();
    let policies = |docs: Vec<Value>| -> BTreeMap<String, Value> {
        by_name(&docs)
            .into_iter()
            .filter(|(key, _)| key.starts_with("ValidatingAdmissionPolicy"))
            .map(|(key, object)| (key, object["spec"].clone()))
            .collect()
    };
    let chart = policies(documents(&chart("regcred-system", &[])));
    let base = policies(documents(&base(bed)));
    assert_eq!(
        chart.len(),
        2,
        "the policy and its binding: {:?}",
        chart.keys()
    );
    assert_eq!(
        chart, base,
        "the chart's guardrails differ from config/policy"
    );
}

#[test]
fn chart_and_kustomize_ship_the_alerts_promtool_tests() {
    let bed = TestBed::get();
    let read = |path: &str| std::fs::read_to_string(root().join(path)).unwrap();
    let tested: Value = serde_yaml_ng::from_str(&read("config/prometheus/alerts.yaml")).unwrap();
    let rule = |docs: Vec<Value>| -> Value {
        let rules: Vec<Value> = docs
            .into_iter()
            .filter(|d| d["kind"] == "PrometheusRule")
            .collect();
        assert_eq!(rules.len(), 1, "one PrometheusRule");
        rules[0]["spec"].clone()
    };
    let charted = rule(documents(&chart(
        "regcred-system",
        &["--set", "metrics.prometheusRule.enabled=true"],
    )));
    let dir = root().join("config/prometheus");
    let (ok, kustomized) = kubectl_output(bed, &["kustomize", dir.to_str().unwrap()], None);
    assert!(ok, "kubectl kustomize config/prometheus: {kustomized}");
    assert!(tested["groups"][0]["rules"].as_array().unwrap().len() >= 6);
    assert_eq!(
        charted, tested,
        "the chart's alerts differ from config/prometheus"
    );
    assert_eq!(
        rule(documents(&kustomized)),
        tested,
        "config/prometheus/prometheusrule.yaml differs from alerts.yaml"
    );
    assert!(
        documents(&chart("regcred-system", &[]))
            .iter()
            .all(|d| d["kind"] != "PrometheusRule"),
        "off by default: the CRD may not exist"
    );
}

/// The admission values: ServiceAccount mode by default, Pod mode, off, and cert-manager
/// instead of the controller's own CA; the chart's webhook matches config/webhook.
#[test]
fn chart_admission_modes_render_and_pass_a_dry_run() {
    let bed = TestBed::get();
    let _dump = bed.dump_on_panic();
    let args_of = |objects: &BTreeMap<String, Value>| -> Vec<String> {
        objects["Deployment/regcred"]["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let base = by_name(&documents(&base(bed)));
    let defaults = by_name(&documents(&chart("regcred-system", &[])));
    let webhook = |objects: &BTreeMap<String, Value>| {
        let mut w = objects["MutatingWebhookConfiguration/regcred"]["webhooks"].clone();
        w[0]["namespaceSelector"]["matchExpressions"][0]["values"] = Value::Null;
        w
    };
    assert_eq!(
        webhook(&defaults),
        webhook(&base),
        "the chart's webhook differs from config/webhook"
    );
    assert_eq!(
        defaults["Service/regcred-webhook"]["spec"]["ports"],
        base["Service/regcred-webhook"]["spec"]["ports"]
    );
    let w = &defaults["MutatingWebhookConfiguration/regcred"]["webhooks"][0];
    assert_eq!(w["failurePolicy"], "Ignore");
    assert_eq!(w["sideEffects"], "None");
    assert_eq!(w["rules"][0]["resources"], json!(["serviceaccounts"]));
    assert!(args_of(&defaults).contains(&"--admission=service-accounts".to_owned()));

    restricted_namespace(bed, "regcred-chart");
    let pods = chart("regcred-chart", &["--set", "admission.mode=pods"]);
    let objects = by_name(&documents(&pods));
    let w = &objects["MutatingWebhookConfiguration/regcred"]["webhooks"][0];
    assert_eq!(w["rules"][0]["resources"], json!(["pods"]));
    assert_eq!(w["clientConfig"]["service"]["path"], "/mutate/pods");
    assert!(args_of(&objects).contains(&"--admission=pods".to_owned()));
    dry_run(bed, "helm template (admission.mode=pods)", &pods);

    let off = by_name(&documents(&chart(
        "regcred-chart",
        &["--set", "admission.mode=off"],
    )));
    assert!(!off.contains_key("MutatingWebhookConfiguration/regcred"));
    assert!(!off.contains_key("Service/regcred-webhook"));
    assert!(args_of(&off).contains(&"--admission=off".to_owned()));
    assert!(
        !off["ClusterRole/regcred-controller"]
            .to_string()
            .contains("mutatingwebhookconfigurations"),
        "no webhook, no permission for one"
    );

    let managed = by_name(&documents(&chart(
        "regcred-chart",
        &["--set", "admission.certManager.enabled=true"],
    )));
    assert!(managed.contains_key("Certificate/regcred-webhook"));
    assert!(managed.contains_key("Issuer/regcred-webhook"));
    assert_eq!(
        managed["MutatingWebhookConfiguration/regcred"]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "regcred-chart/regcred-webhook"
    );
    assert!(args_of(&managed).contains(&"--webhook-certs=external".to_owned()));
}
