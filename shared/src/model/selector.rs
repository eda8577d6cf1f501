//! Label selectors, in the syntax of Kubernetes and Drogue Cloud:
//! `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k` and `!k`,
//! joined by commas; every requirement must hold.
//!
//! As in Drogue Cloud (and unlike Kubernetes), `k!=v` and `k notin (...)` only match
//! resources that have the label `k`.

use std::collections::{BTreeMap, BTreeSet};

/// One requirement of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Why a selector could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    selector: String,
    reason: &'static str,
}

impl LabelSelector {
    /// Parses a selector such as `env=prod,tier in (a, b),!legacy`.
    pub fn parse(selector: &str) -> Result<Self, SelectorError> {
        let fail = |reason| SelectorError {
            selector: selector.to_owned(),
            reason,
        };
        let mut requirements = Vec::new();
        for term in split_terms(selector).map_err(fail)? {
            let term = term.trim();
            if term.is_empty() {
                return Err(fail("empty requirement"));
            }
            requirements.push(parse_term(term).map_err(fail)?);
        }
        Ok(Self(requirements))
    }

    /// Parses every selector given (as repeated `labels=` query parameters) into one.
    pub fn parse_all<'a>(
        selectors: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, SelectorError> {
        let mut all = Vec::new();
        for selector in selectors {
            if !selector.trim().is_empty() {
                all.extend(Self::parse(selector)?.0);
            }
        }
        Ok(Self(all))
    }

    /// Whether a set of labels satisfies every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k).is_some_and(|l| l != v),
            Requirement::In(k, set) => labels.get(k).is_some_and(|v| set.contains(v)),
            Requirement::NotIn(k, set) => labels.get(k).is_some_and(|v| !set.contains(v)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Splits at commas outside parentheses.
fn split_terms(selector: &str) -> Result<Vec<&str>, &'static str> {
    if selector.trim().is_empty() {
        return Ok(Vec::new());
    }
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in selector.char_indices() {
        match c {
            '(' if depth == 0 => depth = 1,
            '(' => return Err("nested parentheses"),
            ')' if depth == 1 => depth = 0,
            ')' => return Err("unbalanced parentheses"),
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err("unbalanced parentheses");
    }
    terms.push(&selector[start..]);
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, &'static str> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(label_key(key)?));
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(label_key(key)?, label_value(value)?));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(label_key(key)?, label_value(value)?));
    }
    if let Some(open) = term.find('(') {
        let head = term[..open].trim_end();
        let list = term[open..]
            .strip_prefix('(')
            .and_then(|rest| rest.strip_suffix(')'))
            .ok_or("a value list must be written as (a,b,...)")?;
        let values = list
            .split(',')
            .map(label_value)
            .collect::<Result<BTreeSet<_>, _>>()?;
        if let Some(key) = head.strip_suffix(" notin") {
            return Ok(Requirement::NotIn(label_key(key)?, values));
        }
        if let Some(key) = head.strip_suffix(" in") {
            return Ok(Requirement::In(label_key(key)?, values));
        }
        return Err("expected 'in' or 'notin' before a value list");
    }
    Ok(Requirement::Exists(label_key(term)?))
}

fn label_key(key: &str) -> Result<String, &'static str> {
    let key = key.trim();
    if key.is_empty() {
        return Err("empty label key");
    }
    if key.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        return Err("label keys must not contain whitespace or any of =!(),");
    }
    Ok(key.to_owned())
}

fn label_value(value: &str) -> Result<String, &'static str> {
    let value = value.trim();
    if value.contains(|c: char| c.is_whitespace() || "=!(),".contains(c)) {
        return Err("label values must not contain whitespace or any of =!(),");
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_operator_matches_as_in_drogue_cloud() {
        let prod = labels(&[("env", "prod"), ("tier", "a")]);
        let dev = labels(&[("env", "dev")]);
        let none = labels(&[]);
        let cases = [
            ("env=prod", [true, false, false]),
            ("env==prod", [true, false, false]),
            ("env!=prod", [false, true, false]),
            ("env in (prod, staging)", [true, false, false]),
            ("env notin (prod,staging)", [false, true, false]),
            ("tier", [true, false, false]),
            ("!tier", [false, true, true]),
            ("env,!tier", [false, true, false]),
            ("env=dev,env in (dev)", [false, true, false]),
            ("", [true, true, true]),
        ];
        for (selector, expected) in cases {
            let s = LabelSelector::parse(selector).unwrap();
            let got = [s.matches(&prod), s.matches(&dev), s.matches(&none)];
            assert_eq!(got, expected, "selector {selector:?}");
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for bad in [
            "=x",
            "a in b",
            "a in (b",
            "a in ((b))",
            "a,,b",
            "a foo (b)",
            "a b=c",
        ] {
            assert!(
                LabelSelector::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn repeated_selectors_combine() {
        let s = LabelSelector::parse_all(["env=prod", "tier"]).unwrap();
        assert!(s.matches(&labels(&[("env", "prod"), ("tier", "x")])));
        assert!(!s.matches(&labels(&[("env", "prod")])));
    }
}
