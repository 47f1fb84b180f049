//! The bearer token of a request: RFC 6750 §2.1, `Authorization: Bearer
//! <b64token>`. The one parser every keyward service uses (the gate, its
//! tower layer and the gateway through [`crate::Gate::verify_headers`], the
//! issuer's admin API through [`bearer_token`]).
//!
//! The rules, each refused with its own [`BearerError`]:
//!
//! - exactly one `Authorization` header: none is [`BearerError::Missing`],
//!   several are [`BearerError::Repeated`] (never "the first one wins");
//! - the scheme is `Bearer` in any case (RFC 7235 §2.1); another scheme is
//!   [`BearerError::OtherScheme`] (no bearer credential was presented), and a
//!   value that is not visible ASCII is [`BearerError::NotText`];
//! - exactly one space separates the scheme from the token: a value with no
//!   space is [`BearerError::NoSpace`] (`Bearer` alone is
//!   [`BearerError::Empty`]), and a space anywhere in or around the token is
//!   [`BearerError::Space`];
//! - the token is not empty ([`BearerError::Empty`]) and holds only
//!   `b64token` characters: letters, digits, `-._~+/=`; anything else is
//!   [`BearerError::Charset`].
//!
//! What the token itself must look like is the caller's rule: where `=` may
//! stand and how long it may be (the JWS parser refuses padding and bounds a
//! JWT, each with its own error, so a client learns which; the admin API
//! bounds its tokens).

use http::HeaderMap;

use crate::error::BearerError;

/// The bearer token of a request's headers, by the rules of this module.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, BearerError> {
    b64token(bearer_value(headers)?)
}

/// The scheme of an `Authorization` credential the gate reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449 §7.1): the token is bound to a key and comes with a
    /// `DPoP` proof. Its token follows the same rules as a bearer token.
    Dpop,
}

/// What follows `Bearer ` in the one `Authorization` header, not yet checked
/// to be a token ([`b64token`]): the gate looks cached tokens up by these
/// bytes first. Inlined into its callers: it runs on every request
/// (`examples/bearer_cost.rs` counts it).
#[inline]
pub(crate) fn bearer_value(headers: &HeaderMap) -> Result<&[u8], BearerError> {
    match credential(headers)? {
        (Scheme::Bearer, token) => Ok(token),
        (Scheme::Dpop, _) => Err(BearerError::OtherScheme),
    }
}

/// The scheme and the token bytes of the one `Authorization` header, by the
/// rules of this module; a scheme other than `Bearer` and `DPoP` is
/// [`BearerError::OtherScheme`].
#[inline]
pub(crate) fn credential(headers: &HeaderMap) -> Result<(Scheme, &[u8]), BearerError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(BearerError::Missing);
    };
    // A repeated header name of any kind makes `len` exceed `keys_len`:
    // only then are the Authorization values counted.
    if headers.len() != headers.keys_len()
        && headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
    {
        return Err(BearerError::Repeated);
    }
    let bytes = value.as_bytes();
    let Some(space) = bytes.iter().position(|&b| b == b' ') else {
        return Err(
            if bytes.eq_ignore_ascii_case(b"bearer") || bytes.eq_ignore_ascii_case(b"dpop") {
                BearerError::Empty
            } else if value.to_str().is_err() {
                BearerError::NotText
            } else {
                BearerError::NoSpace
            },
        );
    };
    let (scheme, token) = (&bytes[..space], &bytes[space + 1..]);
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Ok((Scheme::Bearer, token));
    }
    if scheme.eq_ignore_ascii_case(b"dpop") {
        return Ok((Scheme::Dpop, token));
    }
    // Another scheme (Basic...): no token was presented, unless the value is
    // not even a visible-ASCII header value.
    Err(match value.to_str() {
        Ok(_) => BearerError::OtherScheme,
        Err(_) => BearerError::NotText,
    })
}

/// `token` as text when it is non-empty and holds only `b64token`
/// characters (RFC 6750 §2.1).
pub(crate) fn b64token(token: &[u8]) -> Result<&str, BearerError> {
    if token.is_empty() || !is_b64token(token) {
        return Err(if token.is_empty() {
            BearerError::Empty
        } else if token.contains(&b' ') {
            BearerError::Space
        } else {
            BearerError::Charset
        });
    }
    // Every byte is ASCII, so this cannot fail.
    std::str::from_utf8(token).map_err(|_| BearerError::Charset)
}

/// Whether every byte is a `b64token` character (letters, digits,
/// `-._~+/=`). A token is read on every request, so whole 32-byte blocks are
/// checked without branches, which the compiler turns into a few vector
/// instructions per block.
fn is_b64token(bytes: &[u8]) -> bool {
    #[inline(always)]
    fn bad(c: u8) -> u8 {
        let letter = (c | 0x20).wrapping_sub(b'a') < 26;
        let digit = c.wrapping_sub(b'0') < 10;
        let other =
            (c == b'-') | (c == b'.') | (c == b'_') | (c == b'~') | (c == b'+') | (c == b'/');
        u8::from(!(letter | digit | other | (c == b'=')))
    }
    let mut blocks = bytes.chunks_exact(32);
    for block in &mut blocks {
        if block.iter().fold(0, |acc, &c| acc | bad(c)) != 0 {
            return false;
        }
    }
    blocks.remainder().iter().all(|&c| bad(c) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(values: &[&[u8]]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(
                http::header::AUTHORIZATION,
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        m
    }

    fn parse(value: &[u8]) -> Result<String, BearerError> {
        bearer_token(&headers(&[value])).map(str::to_owned)
    }

    #[test]
    fn the_charset_is_exactly_b64token() {
        let spec = |c: u8| c.is_ascii_alphanumeric() || b"-._~+/=".contains(&c);
        for c in 0..=255u8 {
            // Alone, and at every position of a run longer than one block.
            assert_eq!(is_b64token(&[c]), spec(c), "byte {c:#04x}");
            for at in [0, 31, 32, 33, 69] {
                let mut run = vec![b'a'; 70];
                run[at] = c;
                assert_eq!(is_b64token(&run), spec(c), "byte {c:#04x} at {at}");
            }
        }
    }

    #[test]
    fn the_scheme_is_bearer_in_any_case() {
        for v in ["Bearer abc", "bearer abc", "BEARER abc", "bEaReR abc"] {
            assert_eq!(parse(v.as_bytes()).as_deref(), Ok("abc"), "{v}");
        }
        for v in ["Basic dXNlcjpw", "DPoP abc", "Bearerx abc", "Beare abc"] {
            assert_eq!(parse(v.as_bytes()), Err(BearerError::OtherScheme), "{v}");
        }
        // Another scheme's value that is not visible ASCII.
        assert_eq!(parse(b"Basic \xe9t\xe9"), Err(BearerError::NotText));
        assert_eq!(parse(b"\xe9t\xe9"), Err(BearerError::NotText));
        // Another scheme's value with a tab is still visible text for http.
        assert_eq!(parse(b"Basic dXNl\tcjpw"), Err(BearerError::OtherScheme));
    }

    #[test]
    fn exactly_one_space_separates_scheme_and_token() {
        assert_eq!(parse(b"Bearer"), Err(BearerError::Empty));
        assert_eq!(parse(b"bearer"), Err(BearerError::Empty));
        assert_eq!(parse(b"Bearer "), Err(BearerError::Empty));
        assert_eq!(parse(b"Bearer\tabc"), Err(BearerError::NoSpace));
        assert_eq!(parse(b"abc.def.ghi"), Err(BearerError::NoSpace));
        for v in ["Bearer  abc", "Bearer abc ", "Bearer a b", "Bearer   "] {
            assert_eq!(parse(v.as_bytes()), Err(BearerError::Space), "{v:?}");
        }
    }

    #[test]
    fn the_token_is_a_b64token() {
        for ok in [
            "abc.def.ghi",
            "a-b_c~d+e/f.g",
            "YWJj",
            "YWI=",
            "YQ==",
            "kwa_0123456789",
            "a===",
            // Padding inside is for the token's own parser to refuse.
            "YQ==.YQ==.YQ==",
            "=",
        ] {
            assert_eq!(
                parse(format!("Bearer {ok}").as_bytes()).as_deref(),
                Ok(ok),
                "{ok}"
            );
        }
        for bad in [
            &b"Bearer a\"b"[..],
            b"Bearer a,b",
            b"Bearer abc\x80def",
            b"Bearer \xffabc",
            b"Bearer abc\tdef",
            b"Bearer a;b",
        ] {
            assert_eq!(
                parse(bad),
                Err(BearerError::Charset),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn exactly_one_authorization_header() {
        assert_eq!(bearer_token(&HeaderMap::new()), Err(BearerError::Missing));
        assert_eq!(
            bearer_token(&headers(&[b"Bearer a", b"Bearer a"])),
            Err(BearerError::Repeated)
        );
        assert_eq!(
            bearer_token(&headers(&[b"Basic dXNlcjpw", b"Bearer a"])),
            Err(BearerError::Repeated)
        );
        // Other repeated headers do not matter.
        let mut m = headers(&[b"Bearer a"]);
        m.append(http::header::ACCEPT, HeaderValue::from_static("a/b"));
        m.append(http::header::ACCEPT, HeaderValue::from_static("c/d"));
        assert_eq!(bearer_token(&m), Ok("a"));
    }
}
