//! Event patterns, matched the way EventBridge rules match: a pattern is a
//! JSON object mirroring the event; every key it names must match, and each
//! leaf is a list of alternatives, any one of which may match:
//!
//! ```json
//! { "type": ["order.paid", "order.refunded"],
//!   "payload": {
//!     "total_minor": [{ "numeric": [">=", 10000, "<", 50000] }],
//!     "phone":       [{ "exists": true }],
//!     "status":      [{ "prefix": "ship" }],
//!     "country":     ["MY", "SG"] } }
//! ```
//!
//! Alternatives: an exact value (string, number, bool, null), `prefix`,
//! `numeric` (one or two comparisons), `exists` (true or false), and
//! `anything-but` (none of the listed values). Patterns are parsed once,
//! so a bad rule is refused when it is configured, not when an event comes.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid event pattern at `{path}`: {reason}")]
pub struct PatternError {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// Keys that must all match.
    Object(Vec<(String, Node)>),
    /// Alternatives, any of which may match.
    AnyOf(Vec<Matcher>),
}

#[derive(Debug, Clone, PartialEq)]
enum Matcher {
    Exact(Value),
    Prefix(String),
    Numeric(Vec<(Comparison, f64)>),
    Exists(bool),
    AnythingBut(Vec<Value>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
}

impl Comparison {
    fn parse(op: &str) -> Option<Comparison> {
        Some(match op {
            "<" => Comparison::Lt,
            "<=" => Comparison::Le,
            "=" => Comparison::Eq,
            ">=" => Comparison::Ge,
            ">" => Comparison::Gt,
            _ => return None,
        })
    }

    fn holds(self, value: f64, bound: f64) -> bool {
        match self {
            Comparison::Lt => value < bound,
            Comparison::Le => value <= bound,
            Comparison::Eq => value == bound,
            Comparison::Ge => value >= bound,
            Comparison::Gt => value > bound,
        }
    }
}

/// A parsed pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    root: Node,
}

fn error(path: &str, reason: impl Into<String>) -> PatternError {
    PatternError {
        path: if path.is_empty() {
            "$".into()
        } else {
            path.into()
        },
        reason: reason.into(),
    }
}

fn parse_node(value: &Value, path: &str) -> Result<Node, PatternError> {
    match value {
        Value::Object(map) => {
            let mut keys = Vec::with_capacity(map.len());
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                keys.push((key.clone(), parse_node(child, &child_path)?));
            }
            Ok(Node::Object(keys))
        }
        Value::Array(alternatives) => {
            if alternatives.is_empty() {
                return Err(error(path, "an empty list matches nothing"));
            }
            alternatives
                .iter()
                .map(|alternative| parse_matcher(alternative, path))
                .collect::<Result<Vec<_>, _>>()
                .map(Node::AnyOf)
        }
        _ => Err(error(
            path,
            "a leaf must be a list of alternatives, e.g. [\"order.paid\"]",
        )),
    }
}

fn parse_matcher(value: &Value, path: &str) -> Result<Matcher, PatternError> {
    let Value::Object(map) = value else {
        return Ok(Matcher::Exact(value.clone()));
    };
    if map.len() != 1 {
        return Err(error(path, "an operator object has exactly one key"));
    }
    let (operator, argument) = map.iter().next().expect("one key");
    match operator.as_str() {
        "prefix" => argument
            .as_str()
            .map(|p| Matcher::Prefix(p.to_string()))
            .ok_or_else(|| error(path, "prefix takes a string")),
        "exists" => argument
            .as_bool()
            .map(Matcher::Exists)
            .ok_or_else(|| error(path, "exists takes true or false")),
        "anything-but" => match argument {
            Value::Array(values) => Ok(Matcher::AnythingBut(values.clone())),
            single => Ok(Matcher::AnythingBut(vec![single.clone()])),
        },
        "numeric" => {
            let parts = argument
                .as_array()
                .ok_or_else(|| error(path, "numeric takes [op, number, ...]"))?;
            if parts.is_empty() || parts.len() % 2 != 0 || parts.len() > 4 {
                return Err(error(path, "numeric takes one or two [op, number] pairs"));
            }
            parts
                .chunks(2)
                .map(|pair| {
                    let op = pair[0].as_str().and_then(Comparison::parse);
                    let bound = pair[1].as_f64();
                    match (op, bound) {
                        (Some(op), Some(bound)) => Ok((op, bound)),
                        _ => Err(error(
                            path,
                            "numeric pairs are an operator (<, <=, =, >=, >) and a number",
                        )),
                    }
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Matcher::Numeric)
        }
        other => Err(error(path, format!("unknown operator `{other}`"))),
    }
}

impl Matcher {
    /// Whether this alternative accepts the field (`None` when absent).
    fn accepts(&self, field: Option<&Value>) -> bool {
        match (self, field) {
            (Matcher::Exists(wanted), field) => *wanted == field.is_some(),
            (_, None) => false,
            (Matcher::Exact(expected), Some(Value::Array(items))) => items.contains(expected),
            (Matcher::Exact(expected), Some(value)) => exact(expected, value),
            (Matcher::Prefix(prefix), Some(Value::String(text))) => {
                text.starts_with(prefix.as_str())
            }
            (Matcher::Prefix(_), Some(_)) => false,
            (Matcher::Numeric(conditions), Some(value)) => value.as_f64().is_some_and(|number| {
                conditions
                    .iter()
                    .all(|(op, bound)| op.holds(number, *bound))
            }),
            (Matcher::AnythingBut(excluded), Some(value)) => {
                !excluded.iter().any(|e| exact(e, value))
            }
        }
    }
}

/// Equality that treats 10 and 10.0 as the same number.
fn exact(expected: &Value, value: &Value) -> bool {
    match (expected.as_f64(), value.as_f64()) {
        (Some(a), Some(b)) => a == b,
        _ => expected == value,
    }
}

fn node_matches(node: &Node, value: Option<&Value>) -> bool {
    match node {
        Node::AnyOf(alternatives) => alternatives.iter().any(|m| m.accepts(value)),
        Node::Object(keys) => match value {
            Some(Value::Object(map)) => keys
                .iter()
                .all(|(key, child)| node_matches(child, map.get(key))),
            // `exists: false` under a missing object still holds.
            _ => keys.iter().all(|(_, child)| node_matches(child, None)),
        },
    }
}

impl Pattern {
    pub fn parse(value: &Value) -> Result<Pattern, PatternError> {
        match value {
            Value::Object(_) => Ok(Pattern {
                root: parse_node(value, "")?,
            }),
            _ => Err(error("", "a pattern is a JSON object")),
        }
    }

    /// Whether an event (`{"type": …, "payload": {…}}`) matches.
    pub fn matches(&self, event: &Value) -> bool {
        node_matches(&self.root, Some(event))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn pattern(value: Value) -> Pattern {
        Pattern::parse(&value).expect("a valid pattern")
    }

    fn paid(total: i64, phone: Option<&str>) -> Value {
        json!({ "type": "order.paid", "payload": { "total_minor": total, "phone": phone, "country": "MY", "status": "shipped" } })
    }

    #[test]
    fn exact_values_and_any_of() {
        let p = pattern(json!({ "type": ["order.paid", "order.refunded"] }));
        assert!(p.matches(&paid(100, None)));
        assert!(!p.matches(&json!({ "type": "order.cancelled" })));
        let p = pattern(json!({ "payload": { "country": ["SG", "MY"] } }));
        assert!(p.matches(&paid(100, None)));
        let p = pattern(json!({ "payload": { "country": ["ID"] } }));
        assert!(!p.matches(&paid(100, None)));
    }

    #[test]
    fn prefix_numeric_exists_and_anything_but() {
        assert!(
            pattern(json!({ "payload": { "status": [{ "prefix": "ship" }] } }))
                .matches(&paid(1, None))
        );
        assert!(
            !pattern(json!({ "payload": { "status": [{ "prefix": "deliv" }] } }))
                .matches(&paid(1, None))
        );
        let range = pattern(
            json!({ "payload": { "total_minor": [{ "numeric": [">=", 10000, "<", 50000] }] } }),
        );
        assert!(range.matches(&paid(10000, None)));
        assert!(range.matches(&paid(49999, None)));
        assert!(!range.matches(&paid(50000, None)));
        assert!(!range.matches(&paid(9999, None)));
        let has_phone = pattern(json!({ "payload": { "phone": [{ "exists": true }] } }));
        assert!(has_phone.matches(&paid(1, Some("+60123"))));
        // An explicit null is a present key, as in EventBridge.
        assert!(has_phone.matches(&paid(1, None)));
        assert!(!has_phone.matches(&json!({ "payload": {} })));
        let no_email = pattern(json!({ "payload": { "email": [{ "exists": false }] } }));
        assert!(no_email.matches(&paid(1, None)));
        let not_my = pattern(json!({ "payload": { "country": [{ "anything-but": ["MY"] }] } }));
        assert!(!not_my.matches(&paid(1, None)));
        let not_sg = pattern(json!({ "payload": { "country": [{ "anything-but": "SG" }] } }));
        assert!(not_sg.matches(&paid(1, None)));
    }

    #[test]
    fn every_named_key_must_match_and_missing_fields_do_not() {
        let p = pattern(
            json!({ "type": ["order.paid"], "payload": { "country": ["MY"], "tier": ["gold"] } }),
        );
        assert!(!p.matches(&paid(1, None)), "tier is missing");
        assert!(
            pattern(json!({})).matches(&paid(1, None)),
            "an empty pattern matches everything"
        );
    }

    #[test]
    fn array_fields_match_when_any_element_matches() {
        let p = pattern(json!({ "payload": { "skus": ["KD-BAT-001-01"] } }));
        assert!(p.matches(&json!({ "payload": { "skus": ["KD-X", "KD-BAT-001-01"] } })));
        assert!(!p.matches(&json!({ "payload": { "skus": ["KD-X"] } })));
    }

    #[test]
    fn bad_patterns_are_refused_with_their_path() {
        for (bad, path) in [
            (json!({ "type": "order.paid" }), "type"),
            (
                json!({ "payload": { "total": [{ "numeric": [">", "ten"] }] } }),
                "payload.total",
            ),
            (
                json!({ "payload": { "total": [{ "numeric": [">"] }] } }),
                "payload.total",
            ),
            (
                json!({ "payload": { "x": [{ "regex": ".*" }] } }),
                "payload.x",
            ),
            (json!({ "payload": { "x": [] } }), "payload.x"),
            (json!(["order.paid"]), "$"),
        ] {
            let error = Pattern::parse(&bad).unwrap_err();
            assert_eq!(error.path, path, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn a_value_matches_an_exact_pattern_of_itself(text in "[a-z._]{1,20}", number in -1_000_000i64..1_000_000) {
            let event = json!({ "type": text, "payload": { "n": number } });
            let p = pattern(json!({ "type": [text], "payload": { "n": [number] } }));
            prop_assert!(p.matches(&event));
        }

        #[test]
        fn any_of_matches_exactly_when_the_value_is_listed(value in 0i64..20, listed in proptest::collection::vec(0i64..20, 1..6)) {
            let p = pattern(json!({ "n": listed.clone() }));
            prop_assert_eq!(p.matches(&json!({ "n": value })), listed.contains(&value));
        }

        #[test]
        fn numeric_ranges_match_exactly_the_values_inside(value in -1000i64..1000, low in -1000i64..1000, width in 0i64..500) {
            let high = low + width;
            let p = pattern(json!({ "n": [{ "numeric": [">=", low, "<=", high] }] }));
            prop_assert_eq!(p.matches(&json!({ "n": value })), value >= low && value <= high);
        }

        #[test]
        fn prefixes_match_exactly_the_strings_starting_with_them(text in "[a-c]{0,8}", prefix in "[a-c]{0,3}") {
            let p = pattern(json!({ "s": [{ "prefix": prefix.clone() }] }));
            prop_assert_eq!(p.matches(&json!({ "s": text.clone() })), text.starts_with(&prefix));
        }

        #[test]
        fn exists_is_the_presence_of_the_key(present in any::<bool>(), wanted in any::<bool>()) {
            let event = if present { json!({ "k": 1 }) } else { json!({}) };
            let p = pattern(json!({ "k": [{ "exists": wanted }] }));
            prop_assert_eq!(p.matches(&event), present == wanted);
        }
    }
}
