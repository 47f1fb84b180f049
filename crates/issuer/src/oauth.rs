//! OAuth 2.0 errors (RFC 6749 §5.2, RFC 7009, RFC 7662): the code, a
//! description that tells the client what was wrong without internals, and
//! the HTTP status.

use std::fmt;

/// An RFC 6749 §5.2 error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    InvalidTarget,
    UnsupportedTokenType,
    ServerError,
    TemporarilyUnavailable,
    /// RFC 9449 §5: the DPoP proof is missing, invalid or does not match.
    InvalidDpopProof,
    /// RFC 9449 §8: a server nonce is required (sent in `DPoP-Nonce`).
    UseDpopNonce,
    /// RFC 8628 §3.5: the user has not finished yet; poll again.
    AuthorizationPending,
    /// RFC 8628 §3.5: polled too often; the interval grew by 5 seconds.
    SlowDown,
    /// RFC 8628 §3.5: the user (or the login app) refused.
    AccessDenied,
    /// RFC 8628 §3.5: the device code expired.
    ExpiredToken,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ExpiredToken => "expired_token",
        }
    }

    /// The status RFC 6749 §5.2 gives the code: 401 for a failed client
    /// authentication, 500/503 for server trouble, 400 otherwise.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// Why a request failed on the server's side: the `reason` label of
/// `keyward_server_errors_total`, a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultReason {
    /// The store (database) failed: a query, a transaction, a connection.
    Store,
    /// Signing an access token failed (the signer or the signing pool).
    Signing,
    /// An audit record could not be appended.
    Audit,
    /// The environment's own key set could not be built.
    Keys,
    /// A signed token would be longer than gates accept
    /// ([`keyward_jose::DEFAULT_MAX_TOKEN_LEN`]): handed out, every gate
    /// would refuse it, so it is not (an ML-DSA-87 signature alone takes
    /// 6,170 of the 8,192 bytes).
    TokenTooLarge,
    /// Anything else (serialization, an unexpected domain error).
    Internal,
}

impl FaultReason {
    pub const ALL: [FaultReason; 6] = [
        FaultReason::Store,
        FaultReason::Signing,
        FaultReason::Audit,
        FaultReason::Keys,
        FaultReason::TokenTooLarge,
        FaultReason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultReason::Store => "store",
            FaultReason::Signing => "signing",
            FaultReason::Audit => "audit",
            FaultReason::Keys => "keys",
            FaultReason::TokenTooLarge => "token_too_large",
            FaultReason::Internal => "internal",
        }
    }
}

/// The cause of a `server_error`, kept for the log and never sent: the
/// error's message with its sources (store and signer errors carry no
/// token, secret or bound SQL value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub reason: FaultReason,
    pub cause: String,
}

impl Fault {
    /// Logs the fault once and counts it in
    /// `keyward_server_errors_total{reason}`. Called by whoever answers the
    /// request (the HTTP layer, the admin API), which knows the endpoint.
    pub fn report(&self, env: &str, endpoint: &'static str) {
        report(self.reason, env, endpoint, &self.cause);
    }
}

/// Logs a server-side failure once and counts it: the one place every
/// 5xx of the issuer goes through.
pub(crate) fn report(reason: FaultReason, env: &str, endpoint: &'static str, cause: &str) {
    tracing::error!(
        env,
        endpoint,
        reason = reason.as_str(),
        error = cause,
        "request failed on the server's side"
    );
    crate::metrics::server_error(reason);
}

pub use crate::error::error_chain;

/// An error answered to an OAuth client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: String,
    /// For a `server_error`: its cause, to be reported (see
    /// [`Fault::report`]) by whoever answers; never serialized.
    pub fault: Option<Box<Fault>>,
    /// A fresh DPoP nonce for the `DPoP-Nonce` header (`use_dpop_nonce`).
    pub dpop_nonce: Option<String>,
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<String>) -> Self {
        OAuthError {
            code,
            description: description.into(),
            fault: None,
            dpop_nonce: None,
        }
    }
    pub fn invalid_request(d: impl Into<String>) -> Self {
        OAuthError::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client(d: impl Into<String>) -> Self {
        OAuthError::new(ErrorCode::InvalidClient, d)
    }
    pub fn invalid_grant(d: impl Into<String>) -> Self {
        OAuthError::new(ErrorCode::InvalidGrant, d)
    }
    pub fn invalid_scope(d: impl Into<String>) -> Self {
        OAuthError::new(ErrorCode::InvalidScope, d)
    }
    /// A server-side failure with no cause to keep.
    pub fn server_error() -> Self {
        OAuthError::new(
            ErrorCode::ServerError,
            "the server could not complete the request",
        )
    }

    /// A server-side failure: the client sees only `server_error`; the
    /// cause (with its sources) rides along for the answering layer to log
    /// once and count under `reason`.
    pub fn internal(reason: FaultReason, cause: &(dyn std::error::Error + 'static)) -> Self {
        OAuthError {
            fault: Some(Box::new(Fault {
                reason,
                cause: error_chain(cause),
            })),
            ..OAuthError::server_error()
        }
    }

    /// Reports the fault of a `server_error` (see [`Fault::report`]);
    /// nothing for any other error.
    pub fn report(&self, env: &str, endpoint: &'static str) {
        match &self.fault {
            Some(f) => f.report(env, endpoint),
            None if self.code == ErrorCode::ServerError => {
                report(FaultReason::Internal, env, endpoint, "no cause recorded")
            }
            None => {}
        }
    }

    /// The JSON body of RFC 6749 §5.2, whose `error_description` may only
    /// hold printable ASCII other than the double quote and the backslash:
    /// a description quoting what a client sent has each double quote
    /// written as `'`, each backslash as `/` and anything else outside
    /// printable ASCII as `?`.
    pub fn to_json(&self) -> serde_json::Value {
        let description: String = self
            .description
            .chars()
            .map(|c| match c {
                '"' => '\'',
                '\\' => '/',
                ' '..='~' => c,
                _ => '?',
            })
            .collect();
        serde_json::json!({"error": self.code.as_str(), "error_description": description})
    }
}

/// Parses an `application/x-www-form-urlencoded` body strictly: every `%`
/// starts a two-digit hex escape, names and values decode to UTF-8
/// (RFC 6749 Appendix B), and each parameter appears at most once (§3.2).
/// Anything else is `invalid_request`, never a lossy guess.
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let mut fields: Vec<(String, String)> = Vec::new();
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let (k, v) = (form_decode(k)?, form_decode(v)?);
        if fields.iter().any(|(seen, _)| *seen == k) {
            return Err(OAuthError::invalid_request(format!(
                "parameter {:?} appears more than once",
                k.chars().take(40).collect::<String>()
            )));
        }
        fields.push((k, v));
    }
    Ok(fields)
}

fn form_decode(raw: &[u8]) -> Result<String, OAuthError> {
    let escapes_ok = raw.iter().enumerate().all(|(i, b)| {
        *b != b'%'
            || (raw.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && raw.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if !escapes_ok {
        return Err(OAuthError::invalid_request(
            "the form body has a malformed percent-encoding",
        ));
    }
    if !raw.contains(&b'%') && !raw.contains(&b'+') {
        return String::from_utf8(raw.to_vec())
            .map_err(|_| OAuthError::invalid_request("the form body is not UTF-8"));
    }
    let plus: Vec<u8> = raw
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_encoding::percent_decode(&plus)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| OAuthError::invalid_request("the form body is not UTF-8"))
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl std::error::Error for OAuthError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_descriptions_keep_to_rfc_6749_characters() {
        let e = OAuthError::invalid_request("claim \"exp\" of \\x\u{e9}\n is invalid");
        assert_eq!(
            e.to_json(),
            serde_json::json!({"error": "invalid_request", "error_description": "claim 'exp' of /x?? is invalid"})
        );
        let ok = OAuthError::invalid_grant("the code was used: (try again) ~ 100% [sure] {x}");
        assert_eq!(ok.to_json()["error_description"], ok.description.as_str());
    }

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn internal_errors_keep_their_cause_out_of_the_answer() {
        let io = E("disk full", None);
        let e = OAuthError::internal(FaultReason::Store, &E("write failed", Some(Box::new(io))));
        assert_eq!(e.code, ErrorCode::ServerError);
        assert_eq!(
            e.to_json(),
            serde_json::json!({"error": "server_error", "error_description": "the server could not complete the request"})
        );
        assert!(!e.to_string().contains("disk"));
        let f = e.fault.unwrap();
        assert_eq!(f.reason, FaultReason::Store);
        assert_eq!(f.cause, "write failed: disk full");
        // A message that already shows its source does not repeat it.
        let inner = E("no such table: t", None);
        let outer = E("database error: no such table: t", Some(Box::new(inner)));
        assert_eq!(error_chain(&outer), "database error: no such table: t");
    }

    #[test]
    fn forms_parse_strictly() {
        let f = parse_form(b"a=1+2&b=%2B%C3%A9&c&&d=").unwrap();
        let want = [("a", "1 2"), ("b", "+\u{e9}"), ("c", ""), ("d", "")];
        assert_eq!(
            f,
            want.map(|(k, v)| (k.to_string(), v.to_string())).to_vec()
        );
        for bad in [
            &b"a=1&a=2"[..],
            b"a=%FF",
            b"a=%zz",
            b"a=%4",
            b"a=\xff",
            b"%=1",
        ] {
            let e = parse_form(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad:?}");
        }
    }
}
