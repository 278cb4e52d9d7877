//! Validation rules attached to the schema, so `kubectl apply` refuses bad input with a
//! message a person understands. Every list and string is bounded: the API server rejects
//! CRDs whose CEL rules could cost too much on unbounded input.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use schemars::Schema;
use serde_json::{Value, json};

/// DNS-1123 subdomain: the names of Secrets and ServiceAccounts.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// DNS-1123 label: the names of namespaces.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A registry as kubelet matches it: `host[:port][/path]`, where a host label may be a
/// glob such as `*`. No scheme. The path is lowercase, as every image reference's
/// repository is (an uppercase path would match no image), with no empty segment or
/// trailing `/`. The port's range is checked by [`port_in_range`].
pub const SERVER: &str = r"^((\*|[a-z0-9]([-a-z0-9*]*[a-z0-9*])?)\.)*(\*|[a-z0-9]([-a-z0-9*]*[a-z0-9*])?)(:[0-9]{1,5})?(/[a-z0-9._-]+)*$";
/// A TCP port, 1 to 65535, without leading zeros (kubelet compares ports as text, so
/// `:05000` would match no image).
pub const PORT: &str =
    r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})";
/// A key of a Secret's `data`: letters, digits, `-`, `_` and `.`, but not `.` alone nor
/// starting with `..` (the API server refuses such keys, so no Secret could hold one).
pub const SECRET_KEY: &str = r"^([-_a-zA-Z0-9]|\.[-_a-zA-Z0-9])[-._a-zA-Z0-9]*$";
/// A label key: optional DNS-subdomain prefix and `/`, then a name of up to 63 characters.
pub const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// The longest label key: a 253-character prefix, `/` and a 63-character name.
pub const LABEL_KEY_MAX: u64 = 253 + 1 + 63;
/// A label value (may be empty).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// `renewBefore`'s form: hours, minutes and seconds, in that order, each optional.
pub const DURATION: &str = r"^([0-9]+h)?([0-9]+m)?([0-9]+s)?$";
/// A [`DURATION`] small enough for CEL's `duration()`, which fails with an internal
/// type-conversion error beyond about 2.5 million hours: at most 9999h, 999999m and
/// 99999999s (about 54,000 hours together), and not empty. Rules call `duration()` only
/// on strings that match this.
pub const DURATION_FOR_CEL: &str =
    r"^([0-9]{1,4}h([0-9]{1,6}m)?([0-9]{1,8}s)?|[0-9]{1,6}m([0-9]{1,8}s)?|[0-9]{1,8}s)$";

/// Appends a CEL rule with its message to a schema node.
pub fn add_rule(schema: &mut Schema, rule: &str, message: &str) {
    push_rule(schema, json!({ "rule": rule, "message": message }));
}

/// Appends a CEL rule that involves several fields, reported at `field_path` (relative to
/// the node, e.g. `.renewBefore`) so the error names the field to change.
pub fn add_rule_at(schema: &mut Schema, rule: &str, message: &str, field_path: &str) {
    push_rule(
        schema,
        json!({ "rule": rule, "message": message, "fieldPath": field_path }),
    );
}

fn push_rule(schema: &mut Schema, entry: Value) {
    let object = schema.ensure_object();
    match object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(vec![]))
    {
        Value::Array(rules) => rules.push(entry),
        _ => unreachable!("x-kubernetes-validations is always an array"),
    }
}

/// Appends a CEL rule on `spec` to the schema of the whole object of every version of
/// `crd`: the only place a rule can read `metadata.name`. kube's derive puts rules from
/// `JsonSchema` transforms on `spec` and below.
///
/// The API server ratchets rules only where the value under them is unchanged, and the
/// whole object changes with every status write and every annotation: an object stored
/// before the rule existed would then refuse the controller's status and a person's
/// `regcred.io/refresh`. So the rule is checked on create and when `spec` changes only.
pub fn add_root_rule(
    crd: &mut CustomResourceDefinition,
    rule: &str,
    message: &str,
    field_path: &str,
) {
    for version in &mut crd.spec.versions {
        let schema = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .expect("kube's derive always writes a schema");
        schema
            .x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .push(ValidationRule {
                rule: format!(
                    "(oldSelf.hasValue() && has(oldSelf.value().spec) && has(self.spec) && oldSelf.value().spec == self.spec) || ({rule})"
                ),
                optional_old_self: Some(true),
                message: Some(message.into()),
                field_path: Some(field_path.into()),
                ..ValidationRule::default()
            });
    }
}

/// The name of the pull Secret, as a CEL expression on the whole object: `secretName`,
/// or else the credential's own name.
pub const PULL_SECRET_NAME: &str =
    "(has(self.spec.secretName) ? self.spec.secretName : self.metadata.name)";

/// Bounds the length of each string of a list (CEL cost estimates need it).
pub fn bound_items(schema: &mut Schema, max_length: u64) {
    if let Some(Value::Object(items)) = schema.get_mut("items") {
        items.insert("maxLength".into(), max_length.into());
    }
}

/// A CEL string literal for a regular expression (single-quoted, backslashes escaped).
pub fn cel_regex(pattern: &str) -> String {
    format!("'{}'", pattern.replace('\\', "\\\\"))
}

/// A rule that a string matches `pattern`.
pub fn matches(schema: &mut Schema, pattern: &str, message: &str) {
    add_rule(
        schema,
        &format!("self.matches({})", cel_regex(pattern)),
        message,
    );
}

/// A rule that every string of a list matches `pattern`.
pub fn all_match(schema: &mut Schema, pattern: &str, message: &str) {
    let rule = format!("self.all(x, x.matches({}))", cel_regex(pattern));
    add_rule(schema, &rule, message);
}

/// A rule that no string of a list appears twice.
pub fn unique(schema: &mut Schema, message: &str) {
    add_rule(schema, "self.all(x, self.exists_one(y, y == x))", message);
}

/// A CEL condition that the string `expr` is a label key: an optional DNS-subdomain
/// prefix of at most 253 characters and `/`, then a name of at most 63.
pub fn is_label_key(expr: &str) -> String {
    format!(
        "{expr}.size() <= {LABEL_KEY_MAX} && {expr}.indexOf('/') <= 253 && {expr}.matches({})",
        cel_regex(LABEL_KEY)
    )
}

/// Rules for a string that may carry a `:port` after its host (`host_start` is the regex
/// for what comes before the host, e.g. `^https://`): the port must be 1 to 65535.
pub fn port_in_range(schema: &mut Schema, host_start: &str, message: &str) {
    let has_port = cel_regex(&format!("{host_start}[^/]*:"));
    let good_port = cel_regex(&format!("{host_start}[^/:]*:{PORT}(/.*)?$"));
    add_rule(
        schema,
        &format!("!self.matches({has_port}) || self.matches({good_port})"),
        message,
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use regex::Regex;

    // The API server evaluates these with RE2; the regex crate accepts the same syntax.
    fn is_match(pattern: &str, input: &str) -> bool {
        Regex::new(pattern).unwrap().is_match(input)
    }

    #[test]
    fn server_accepts_the_forms_kubelet_matches() {
        for ok in [
            "harbor.example.com",
            "harbor.example.com:5000",
            "harbor.example.com/team/app",
            "127.0.0.1:5000",
            "*.example.com",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "localhost",
        ] {
            assert!(is_match(SERVER, ok), "{ok} should be accepted");
        }
        for bad in [
            "https://harbor.example.com",
            "harbor.example.com:",
            "Harbor.Example.com",
            "harbor..example.com",
            "harbor example.com",
            "",
            "-harbor.example.com",
            "harbor.example.com/",
            "harbor.example.com//team",
            "harbor.example.com/Team",
        ] {
            assert!(!is_match(SERVER, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn ports_are_1_to_65535_without_leading_zeros() {
        let port = format!("^{PORT}$");
        for ok in [
            "1", "80", "443", "5000", "9999", "10000", "59999", "64999", "65535",
        ] {
            assert!(is_match(&port, ok), "{ok} should be accepted");
        }
        for bad in [
            "0", "00", "05000", "65536", "65540", "69999", "99999", "100000", "",
        ] {
            assert!(!is_match(&port, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn durations_handed_to_cel_are_small_and_not_empty() {
        for ok in ["4h", "90m", "1h30m", "45s", "1h1m1s", "9999h", "99999999s"] {
            assert!(is_match(DURATION_FOR_CEL, ok), "{ok}");
            assert!(is_match(DURATION, ok), "{ok}");
        }
        for too_big in ["99999999h", "10000h", "1000000m"] {
            assert!(is_match(DURATION, too_big), "{too_big}");
            assert!(!is_match(DURATION_FOR_CEL, too_big), "{too_big}");
        }
        assert!(!is_match(DURATION_FOR_CEL, ""));
        assert!(!is_match(DURATION_FOR_CEL, "4"));
    }

    #[test]
    fn names_and_keys() {
        assert!(is_match(DNS_SUBDOMAIN, "regcred.pull-1"));
        assert!(!is_match(DNS_SUBDOMAIN, "Regcred"));
        assert!(!is_match(DNS_LABEL, "team.a"));
        assert!(is_match(SECRET_KEY, ".dockerconfigjson"));
        assert!(!is_match(SECRET_KEY, "user name"));
        for bad in [".", "..", "..data", ""] {
            assert!(!is_match(SECRET_KEY, bad), "{bad:?} should be refused");
        }
        assert!(is_match(SECRET_KEY, ".a.."));
        assert!(is_match(LABEL_KEY, "app.kubernetes.io/name"));
        assert!(!is_match(LABEL_KEY, "/name"));
        assert!(is_match(LABEL_VALUE, ""));
        assert!(!is_match(LABEL_VALUE, "-x"));
    }

    #[test]
    fn cel_regex_escapes_backslashes_once() {
        assert_eq!(cel_regex(r"^a\.b$"), r"'^a\\.b$'");
    }

    #[test]
    fn rules_accumulate_on_one_node() {
        let mut schema = Schema::default();
        add_rule(&mut schema, "self > 0", "must be positive");
        add_rule(&mut schema, "self < 10", "must be small");
        let rules = schema.get("x-kubernetes-validations").unwrap();
        assert_eq!(rules.as_array().unwrap().len(), 2);
        assert_eq!(rules[1]["message"], "must be small");
    }
}
