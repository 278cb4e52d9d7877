//! Label selector matching for regcred's own [`Selector`] type.

use std::collections::BTreeMap;

use regcred_api::{Selector, SelectorOperator};

/// Whether `labels` satisfy every requirement of `selector` (an empty selector matches all).
pub(crate) fn matches(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    matches_by(selector, |key| labels?.get(key).map(String::as_str))
}

/// [`matches`], with the labels given by a lookup.
pub(crate) fn matches_by<'a>(selector: &Selector, label: impl Fn(&str) -> Option<&'a str>) -> bool {
    let labels_match = selector
        .match_labels
        .iter()
        .all(|(key, value)| label(key) == Some(value.as_str()));
    let listed = |req: &regcred_api::SelectorRequirement, value: Option<&str>| {
        value.is_some_and(|v| req.values.iter().any(|listed| listed == v))
    };
    labels_match
        && selector.match_expressions.iter().all(|req| {
            let value = label(&req.key);
            match req.operator {
                SelectorOperator::In => listed(req, value),
                SelectorOperator::NotIn => !listed(req, value),
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
