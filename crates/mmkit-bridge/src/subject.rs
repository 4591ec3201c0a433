//! NATS subject syntax: which subjects a stream's subject patterns take.

/// Whether `subject` has no wildcard tokens and no empty token, so that
/// messages can be published to it.
pub fn is_literal(subject: &str) -> bool {
    is_valid(subject) && subject.split('.').all(|t| t != "*" && t != ">")
}

/// Whether `subject` is a well-formed subject or filter: non-empty tokens
/// without white space, `>` only as the last token.
pub fn is_valid(subject: &str) -> bool {
    let tokens: Vec<&str> = subject.split('.').collect();
    let last = tokens.len() - 1;
    tokens
        .iter()
        .enumerate()
        .all(|(i, t)| !t.is_empty() && !t.contains(char::is_whitespace) && (*t != ">" || i == last))
}

/// Whether the pattern `pattern` (with `*` and `>` wildcards) matches the
/// literal subject `subject`.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (p, Some(s)) if p == s => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("orders", "orders"));
        assert!(!matches("orders", "orders.eu"));
        assert!(matches("orders.*", "orders.eu"));
        assert!(!matches("orders.*", "orders.eu.paris"));
        assert!(!matches("orders.*", "orders"));
        assert!(matches("orders.>", "orders.eu.paris"));
        assert!(!matches("orders.>", "orders"));
        assert!(matches(">", "a.b"));
        assert!(matches("*.eu", "orders.eu"));
        assert!(!matches("orders.eu", "orders.us"));
    }

    #[test]
    fn syntax() {
        assert!(is_literal("orders.eu"));
        assert!(!is_literal("orders.*"));
        assert!(!is_literal("orders..eu"));
        assert!(!is_literal(""));
        assert!(!is_literal("has space"));
        assert!(is_valid("orders.>"));
        assert!(!is_valid(">.orders"));
    }
}
