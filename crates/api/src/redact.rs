//! Values taken out of the API server's messages before they reach logs, events, conditions
//! or node messages.
//!
//! The API server quotes the value it refuses (`data.k: Invalid value: "s3cr3t": …`), and the
//! value can be a Secret's, merged into a module's input by `valuesFrom`: Pequod's rule is that
//! Secret values never leave the Secret. The executor cannot know which values came from a
//! Secret, so every quoted value of a field error goes; the field path and the rule stay, which
//! is what a user needs to fix it.

/// The field-error phrases of `k8s.io/apimachinery/pkg/util/validation/field` that are followed
/// by the offending value.
const VALUE_PHRASES: [&str; 4] = [
    "Invalid value: ",
    "Unsupported value: ",
    "Duplicate value: ",
    "Not found: ",
];

/// The placeholder for a removed value.
pub const REDACTED: &str = "[redacted]";

/// `message` with the value after each field-error phrase replaced by [`REDACTED`].
pub fn api_values(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some((at, phrase)) = VALUE_PHRASES
        .iter()
        .filter_map(|p| rest.find(p).map(|i| (i, *p)))
        .min_by_key(|(i, _)| *i)
    {
        let start = at + phrase.len();
        out.push_str(&rest[..start]);
        let end = start + value_length(&rest[start..]);
        if end > start {
            out.push_str(REDACTED);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The length of the value at the start of `text`: a quoted string (with escapes), or a bare
/// value (`%v`, `%#v`) up to the next `": "` with brackets balanced, skipping the quoted
/// strings inside it (a Secret value in a map may hold any bracket). Zero when there is no
/// value: CEL rule failures read `Invalid value: <the rule's message>`, with nothing to take
/// out; so a bare value that no `": "` follows (`Duplicate value: …` and `Not found: …` have
/// no detail) counts only when it reads as a Go value.
fn value_length(text: &str) -> usize {
    let bytes = text.as_bytes();
    if bytes.first() == Some(&b'"') {
        return quoted_length(bytes);
    }
    let mut depth = 0_i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += quoted_length(&bytes[i..]);
                continue;
            }
            b'{' | b'[' | b'(' => depth += 1,
            // Closes what encloses the value (`[a: Duplicate value: 5]`).
            b'}' | b']' | b')' if depth == 0 => break,
            b'}' | b']' | b')' => depth -= 1,
            b':' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => return i,
            b',' if depth == 0 && bytes.get(i + 1) == Some(&b' ') => break,
            _ => {}
        }
        i += 1;
    }
    if go_value(&text[..i]) { i } else { 0 }
}

/// The length of the quoted string at the start of `bytes` (which starts with `"`), closing
/// quote included; all of `bytes` when it is not closed.
fn quoted_length(bytes: &[u8]) -> usize {
    let mut i = 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// Whether bare text reads as a value Go printed: a number, a boolean, nil, or a map, slice or
/// struct literal (`map[…]…{…}`, `[]string{…}`, `&v1.EnvVar{…}`); a rule's message does not.
fn go_value(text: &str) -> bool {
    let text = text.trim_end();
    let literal = text
        .trim_start_matches('&')
        .split_once('{')
        .is_some_and(|(name, _)| {
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
        });
    literal
        || text.starts_with("map[")
        || text.starts_with("[]")
        || matches!(text, "true" | "false" | "nil" | "<nil>")
        || text.parse::<f64>().is_ok()
}

/// `text` with every Secret value (of 4 characters or more: shorter ones would blank out
/// ordinary words) replaced by [`REDACTED`], and the API server's quoted values too.
pub fn secrets_and_api_values(text: &str, secrets: &[String]) -> String {
    let mut text = api_values(text);
    for secret in secrets.iter().filter(|s| s.chars().count() >= 4) {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), REDACTED);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_and_bare_values_go_paths_and_rules_stay() {
        let message = r#"ConfigMap "app" is invalid: [metadata.labels: Invalid value: "s3cr3t value": a valid label must be an empty string or consist of alphanumeric characters, spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive]"#;
        let redacted = api_values(message);
        assert!(!redacted.contains("s3cr3t"), "{redacted}");
        assert!(!redacted.contains("70000"), "{redacted}");
        assert!(redacted.contains("metadata.labels: Invalid value: [redacted]: a valid label"));
        assert!(redacted.contains("spec.ports[0].port: Invalid value: [redacted]: must be"));
        let escaped = r#"data: Invalid value: "a \"quoted\" s3cr3t": bad"#;
        assert_eq!(api_values(escaped), "data: Invalid value: [redacted]: bad");
        let object = "spec: Invalid value: map[string]interface {}{\"k\":\"s3cr3t\"}: bad";
        assert_eq!(api_values(object), "spec: Invalid value: [redacted]: bad");
        let listed = r#"spec.type: Unsupported value: "Odd": supported values: "A", "B""#;
        assert_eq!(
            api_values(listed),
            r#"spec.type: Unsupported value: [redacted]: supported values: "A", "B""#
        );
        let unterminated = r#"x: Invalid value: "s3cr3t"#;
        assert_eq!(api_values(unterminated), "x: Invalid value: [redacted]");
        assert_eq!(api_values("no values here"), "no values here");
        let rule =
            "spec.nodes[0].readyWhen[0]: Invalid value: a ConditionMatch rule needs conditionType";
        assert_eq!(
            api_values(rule),
            rule,
            "a CEL rule's message is not a value"
        );
        assert_eq!(api_values("Invalid value: "), "Invalid value: ");
    }

    #[test]
    fn bare_values_with_brackets_in_their_strings_or_without_a_detail_go() {
        let map = r#"data: Invalid value: map[string]interface {}{"k":"a(b s3cr3t"}: bad"#;
        assert_eq!(api_values(map), "data: Invalid value: [redacted]: bad");
        let listed = r#"[a: Invalid value: []interface {}{"(s3cr3t"}, b: Duplicate value: 5]"#;
        assert_eq!(
            api_values(listed),
            "[a: Invalid value: [redacted], b: Duplicate value: [redacted]]"
        );
        let ended = r#"x: Not found: &v1.EnvVar{Name:"A", Value:"s3cr3t}"}"#;
        assert_eq!(api_values(ended), "x: Not found: [redacted]");
        let rule = "a: Invalid value: must be one of a, b or c";
        assert_eq!(api_values(rule), rule, "a rule's message stays");
    }

    #[test]
    fn secrets_go_wherever_they_appear() {
        let secrets = vec!["hunter22".to_owned(), "abc".to_owned()];
        let text = "password hunter22 in abc: Duplicate value: \"x\"";
        assert_eq!(
            secrets_and_api_values(text, &secrets),
            "password [redacted] in abc: Duplicate value: [redacted]"
        );
    }
}
