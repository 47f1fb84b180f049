//! Why a request was refused. Every variant maps to an RFC 6750 answer
//! ([`VerifyError::status`], [`VerifyError::bearer_error`]) and to a short,
//! stable reason for metrics and decision logs ([`VerifyError::reason`]).

use thiserror::Error;

/// A verification or authorization failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `Authorization: Bearer` credential.
    #[error("no bearer token")]
    MissingToken,
    /// An `Authorization` header that is not a single well-formed bearer token.
    #[error("malformed Authorization header")]
    MalformedHeader,
    /// The token names (or, unverified, claims to be from) no trusted issuer.
    #[error("token issuer is not trusted")]
    UntrustedIssuer,
    /// No key with the token's `kid`, even after a refetch.
    #[error("no key with the token's kid")]
    UnknownKid,
    /// The issuer's keys could not be fetched and no usable cached set exists.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
    /// Signature, structure, header or claims failed (DESIGN.md rule 1).
    #[error("{0}")]
    Invalid(#[from] keyward_jose::Error),
    /// A claim this crate reads (`permissions`, `scope`) has the wrong type.
    #[error("claim {0:?} is malformed")]
    MalformedClaim(&'static str),
    /// The token's `jti` has been revoked.
    #[error("token has been revoked")]
    Revoked,
    /// Valid token, but it lacks a required permission or scope.
    #[error("token lacks the required permission {0:?}")]
    InsufficientScope(String),
}

impl VerifyError {
    /// HTTP status: 403 for a valid token lacking permission, 401 otherwise
    /// (503 would tell an attacker the issuer is down; RFC 6750 says 401).
    pub fn status(&self) -> u16 {
        match self {
            VerifyError::InsufficientScope(_) => 403,
            _ => 401,
        }
    }

    /// The RFC 6750 §3.1 `error` code, if any (none when no token was sent).
    pub fn bearer_error(&self) -> Option<&'static str> {
        match self {
            VerifyError::MissingToken => None,
            VerifyError::MalformedHeader => Some("invalid_request"),
            VerifyError::InsufficientScope(_) => Some("insufficient_scope"),
            _ => Some("invalid_token"),
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        use keyward_jose::{ClaimsError, Error as J, TokenError};
        match self {
            VerifyError::MissingToken => "missing_token",
            VerifyError::MalformedHeader => "malformed_header",
            VerifyError::UntrustedIssuer => "untrusted_issuer",
            VerifyError::UnknownKid => "unknown_kid",
            VerifyError::KeysUnavailable => "keys_unavailable",
            VerifyError::MalformedClaim(_) => "malformed_claim",
            VerifyError::Revoked => "revoked",
            VerifyError::InsufficientScope(_) => "insufficient_scope",
            VerifyError::Invalid(e) => match e {
                J::Token(TokenError::BadSignature | TokenError::SignatureLength(_)) => {
                    "bad_signature"
                }
                J::Token(
                    TokenError::ForbiddenAlgorithm(_)
                    | TokenError::AlgorithmNotAllowed(_)
                    | TokenError::AlgorithmKeyMismatch { .. },
                ) => "algorithm",
                J::Token(TokenError::UnknownKid(_) | TokenError::MissingKid) => "unknown_kid",
                J::Token(_) => "malformed_token",
                J::Claims(ClaimsError::Expired) => "expired",
                J::Claims(ClaimsError::NotYetValid | ClaimsError::IssuedInFuture) => {
                    "not_yet_valid"
                }
                J::Claims(ClaimsError::WrongIssuer) => "issuer",
                J::Claims(ClaimsError::WrongAudience) => "audience",
                J::Claims(ClaimsError::WrongType(..)) => "typ",
                J::Claims(_) => "claims",
                _ => "invalid",
            },
        }
    }

    /// Text for `error_description`: says what was wrong, never echoes the
    /// token, and contains no characters that need quoting in a header.
    pub fn description(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| {
                if c == '"' || c == '\\' || !(' '..='~').contains(&c) {
                    '\''
                } else {
                    c
                }
            })
            .take(200)
            .collect()
    }

    /// The `WWW-Authenticate` value for this failure (RFC 6750 §3).
    pub fn www_authenticate(&self, realm: &str) -> String {
        let realm: String = realm.chars().filter(|c| *c != '"' && *c != '\\').collect();
        match self.bearer_error() {
            None => format!("Bearer realm=\"{realm}\""),
            Some(code) => format!(
                "Bearer realm=\"{realm}\", error=\"{code}\", error_description=\"{}\"",
                self.description()
            ),
        }
    }
}
