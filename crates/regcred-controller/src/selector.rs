//! Label selector matching for regcred's own [`Selector`] type.

use std::collections::BTreeMap;

use regcred_api::{Selector, SelectorOperator};

/// Whether `labels` satisfy every requirement of `selector` (an empty selector matches all).
pub(crate) fn matches(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let labels_match = selector
        .match_labels
        .iter()
        .all(|(key, value)| labels.get(key) == Some(value));
    labels_match
        && selector.match_expressions.iter().all(|req| {
            let value = labels.get(&req.key);
            match req.operator {
                SelectorOperator::In => value.is_some_and(|v| req.values.contains(v)),
                SelectorOperator::NotIn => !value.is_some_and(|v| req.values.contains(v)),
                SelectorOperator::Exists => value.is_some(),
                SelectorOperator::DoesNotExist => value.is_none(),
            }
        })
}

#[cfg(test)]
mod tests {
    use regcred_api::SelectorRequirement;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn req(key: &str, operator: SelectorOperator, values: &[&str]) -> SelectorRequirement {
        SelectorRequirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn match_labels_and_expressions() {
        let selector = Selector {
            match_labels: labels(&[("team", "a")]),
            match_expressions: vec![
                req("tier", SelectorOperator::In, &["web", "api"]),
                req("legacy", SelectorOperator::DoesNotExist, &[]),
            ],
        };
        assert!(matches(
            &selector,
            Some(&labels(&[("team", "a"), ("tier", "api")]))
        ));
        assert!(!matches(
            &selector,
            Some(&labels(&[("team", "a"), ("tier", "db")]))
        ));
        assert!(!matches(
            &selector,
            Some(&labels(&[("team", "a"), ("tier", "api"), ("legacy", "")]))
        ));
        assert!(!matches(&selector, None));
    }

    #[test]
    fn not_in_and_exists() {
        let selector = Selector {
            match_labels: BTreeMap::new(),
            match_expressions: vec![
                req("env", SelectorOperator::NotIn, &["prod"]),
                req("owner", SelectorOperator::Exists, &[]),
            ],
        };
        assert!(matches(&selector, Some(&labels(&[("owner", "x")]))));
        assert!(!matches(
            &selector,
            Some(&labels(&[("owner", "x"), ("env", "prod")]))
        ));
        assert!(matches(&Selector::default(), None));
    }
}
