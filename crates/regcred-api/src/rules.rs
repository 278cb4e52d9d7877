//! Validation rules attached to the schema, so `kubectl apply` refuses bad input with a
//! message a person understands. Every list and string is bounded: the API server rejects
//! CRDs whose CEL rules could cost too much on unbounded input.

use schemars::Schema;
use serde_json::{Value, json};

/// DNS-1123 subdomain: the names of Secrets and ServiceAccounts.
pub const DNS_SUBDOMAIN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// DNS-1123 label: the names of namespaces.
pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// A registry as kubelet matches it: `host[:port][/path]`, where a host label may be a
/// glob such as `*`. No scheme.
pub const SERVER: &str = r"^((\*|[a-z0-9]([-a-z0-9*]*[a-z0-9*])?)\.)*(\*|[a-z0-9]([-a-z0-9*]*[a-z0-9*])?)(:[0-9]{1,5})?(/[a-zA-Z0-9._~/-]*)?$";
/// A key of a Secret's `data`.
pub const SECRET_KEY: &str = r"^[-._a-zA-Z0-9]+$";
/// A label key: optional DNS-subdomain prefix and `/`, then a name of up to 63 characters.
pub const LABEL_KEY: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$";
/// A label value (may be empty).
pub const LABEL_VALUE: &str = r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$";

/// Appends a CEL rule with its message to a schema node.
pub fn add_rule(schema: &mut Schema, rule: &str, message: &str) {
    let entry = json!({ "rule": rule, "message": message });
    let object = schema.ensure_object();
    match object
        .entry("x-kubernetes-validations")
        .or_insert_with(|| Value::Array(vec![]))
    {
        Value::Array(rules) => rules.push(entry),
        _ => unreachable!("x-kubernetes-validations is always an array"),
    }
}

/// Bounds the length of each string of a list (CEL cost estimates need it).
pub fn bound_items(schema: &mut Schema, max_length: u64) {
    if let Some(Value::Object(items)) = schema.get_mut("items") {
        items.insert("maxLength".into(), max_length.into());
    }
}

/// A CEL string literal for a regular expression (single-quoted, backslashes escaped).
fn cel_regex(pattern: &str) -> String {
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
        ] {
            assert!(!is_match(SERVER, bad), "{bad} should be refused");
        }
    }

    #[test]
    fn names_and_keys() {
        assert!(is_match(DNS_SUBDOMAIN, "regcred.pull-1"));
        assert!(!is_match(DNS_SUBDOMAIN, "Regcred"));
        assert!(!is_match(DNS_LABEL, "team.a"));
        assert!(is_match(SECRET_KEY, ".dockerconfigjson"));
        assert!(!is_match(SECRET_KEY, "user name"));
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
