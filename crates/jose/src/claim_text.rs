//! Which claim strings a gate accepts: the one rule that keyward's gate
//! applies before it forwards a caller's identity upstream, and that
//! keyward's issuer applies before it mints a claim, so the issuer never
//! signs a token its own gate refuses.
//!
//! The gate forwards `iss`, `sub` and the client (`client_id`, else `azp`)
//! as one header value each, and the scopes (`scope` split on spaces, `scp`)
//! and `permissions` as space-separated words. So:
//!
//! - a **value** ([`check_value`]) is non-empty, holds no control character
//!   (C0, DEL, C1: an HTTP header cannot carry C0 or DEL, and C1 ones are
//!   never a name), and neither begins nor ends with white space (an HTTP
//!   field value loses it, so `"admin "` would reach the upstream as
//!   `"admin"`);
//! - a **word** ([`check_word`]) is non-empty and holds no white space (one
//!   grant must not read as two upstream) and no control character.
//!
//! Spaces inside a value, and any other Unicode, are accepted.

use serde_json::{Map, Value};
use thiserror::Error;

/// What is wrong with a claim string.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TextError {
    #[error("is empty")]
    Empty,
    #[error("contains the control character U+{0:04X}")]
    Control(u32),
    #[error("begins or ends with white space")]
    EdgeSpace,
    #[error("contains white space (U+{0:04X})")]
    Space(u32),
}

/// A claim string the gate would refuse: which claim, what is wrong, and
/// the start of the value (escaped, for a message).
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{claim} {shown} {error}")]
pub struct BadClaim {
    pub claim: String,
    pub error: TextError,
    shown: String,
}

impl BadClaim {
    fn new(claim: &str, value: &str, error: TextError) -> BadClaim {
        let head: String = value.chars().take(40).collect();
        let more = if head.len() < value.len() { "..." } else { "" };
        BadClaim {
            claim: claim.to_string(),
            error,
            shown: format!("{head:?}{more}"),
        }
    }
}

fn control(c: char) -> Option<TextError> {
    c.is_control().then_some(TextError::Control(c as u32))
}

/// A single-valued claim the gate forwards as one header value (`iss`,
/// `sub`, `client_id`, `azp`).
pub fn check_value(s: &str) -> Result<(), TextError> {
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    // Fast path: printable ASCII with no space at either end.
    let b = s.as_bytes();
    if b.iter().all(|&c| (0x20..0x7f).contains(&c)) {
        return if b[0] == b' ' || b[b.len() - 1] == b' ' {
            Err(TextError::EdgeSpace)
        } else {
            Ok(())
        };
    }
    if let Some(e) = s.chars().find_map(control) {
        return Err(e);
    }
    if s.starts_with(char::is_whitespace) || s.ends_with(char::is_whitespace) {
        return Err(TextError::EdgeSpace);
    }
    Ok(())
}

/// One element of a list the gate forwards space-separated (a scope, an
/// `scp` entry, a permission).
pub fn check_word(s: &str) -> Result<(), TextError> {
    if s.is_empty() {
        return Err(TextError::Empty);
    }
    for c in s.chars() {
        if let Some(e) = control(c) {
            return Err(e);
        }
        if c.is_whitespace() {
            return Err(TextError::Space(c as u32));
        }
    }
    Ok(())
}

/// [`check_value`] naming the claim in the error.
pub fn value(claim: &str, s: &str) -> Result<(), BadClaim> {
    check_value(s).map_err(|e| BadClaim::new(claim, s, e))
}

/// [`check_word`] on each entry, naming the claim in the error.
pub fn words<'a>(claim: &str, list: impl IntoIterator<Item = &'a str>) -> Result<(), BadClaim> {
    list.into_iter()
        .try_for_each(|s| check_word(s).map_err(|e| BadClaim::new(claim, s, e)))
}

/// A space-separated `scope` string as the gate reads it: split on single
/// spaces, empty pieces skipped, each piece a word.
pub fn scope(s: &str) -> Result<(), BadClaim> {
    words("scope", s.split(' ').filter(|w| !w.is_empty()))
}

/// Every claim of a JSON object the gate forwards: `iss`, `sub`,
/// `client_id`, `azp` (values), `scope` (a space-separated string), `scp`
/// and `permissions` (arrays of words). A claim of another type is left to
/// the type checks of whoever reads it.
pub fn check_claims(claims: &Map<String, Value>) -> Result<(), BadClaim> {
    for name in ["iss", "sub", "client_id", "azp"] {
        if let Some(Value::String(s)) = claims.get(name) {
            value(name, s)?;
        }
    }
    if let Some(Value::String(s)) = claims.get("scope") {
        scope(s)?;
    }
    for name in ["scp", "permissions"] {
        if let Some(Value::Array(list)) = claims.get(name) {
            words(name, list.iter().filter_map(Value::as_str))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        for ok in [
            "alice",
            "alice smith",
            "Zoë",
            "用户",
            "a\u{a0}b",
            "x@y.z",
            "é",
        ] {
            assert_eq!(check_value(ok), Ok(()), "{ok:?}");
        }
        for (bad, e) in [
            ("", TextError::Empty),
            ("a\0b", TextError::Control(0)),
            ("a\rb", TextError::Control(0x0d)),
            ("a\nb", TextError::Control(0x0a)),
            ("a\tb", TextError::Control(0x09)),
            ("a\x7fb", TextError::Control(0x7f)),
            ("é\u{85}", TextError::Control(0x85)),
            (" a", TextError::EdgeSpace),
            ("a ", TextError::EdgeSpace),
            ("é\u{3000}", TextError::EdgeSpace),
        ] {
            assert_eq!(check_value(bad), Err(e), "{bad:?}");
        }
    }

    #[test]
    fn words_and_messages() {
        assert_eq!(check_word("orders.*"), Ok(()));
        assert_eq!(check_word("a b"), Err(TextError::Space(0x20)));
        assert_eq!(check_word("a\u{2003}b"), Err(TextError::Space(0x2003)));
        assert_eq!(check_word("a\0"), Err(TextError::Control(0)));
        assert_eq!(scope("a  b"), Ok(()));
        let e = scope("a\tb").unwrap_err();
        assert_eq!(
            (e.claim.as_str(), &e.error),
            ("scope", &TextError::Control(9))
        );
        let e = value("sub", "al\nice").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"sub "al\nice" contains the control character U+000A"#
        );
        let long = "x".repeat(100) + "\0";
        assert!(value("sub", &long)
            .unwrap_err()
            .to_string()
            .contains("\"..."));
        let m: Map<String, Value> =
            serde_json::from_str(r#"{"sub":"a","permissions":["p","q r"],"scp":7}"#).unwrap();
        assert_eq!(check_claims(&m).unwrap_err().claim, "permissions");
    }
}
