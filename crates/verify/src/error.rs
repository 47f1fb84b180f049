//! The errors of keyward-verify, one enum per concern, each kept whole (its
//! cause is its `source`) and each convertible into the crate-wide [`enum@Error`]:
//!
//! - [`VerifyError`]: why a request was refused. Every variant maps to an
//!   RFC 6750 answer ([`VerifyError::status`], [`VerifyError::bearer_error`])
//!   and to a short, stable reason for metrics and decision logs
//!   ([`VerifyError::reason`]);
//! - [`BearerError`]: why an `Authorization` header holds no usable bearer
//!   token ([`crate::bearer`]);
//! - [`UrlError`], [`FetchError`]: a URL the gate will not fetch, and a fetch
//!   that failed ([`crate::fetch`]);
//! - [`JwksError`], [`DiscoveryError`]: an issuer's keys that could not be
//!   loaded ([`crate::jwks_cache`]);
//! - [`BuildError`]: a [`crate::GateBuilder`] that cannot build a gate;
//! - [`PermissionError`], [`AlgorithmError`]: configuration text that is not
//!   a permission requirement or an accepted algorithm.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Any error of keyward-verify, for callers that handle them alike (`?`
/// converts each concern's error into it).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A request refused.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// An `Authorization` header without a usable bearer token.
    #[error(transparent)]
    Bearer(#[from] BearerError),
    /// A URL the gate will not fetch.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A fetch that failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// An issuer's keys that could not be loaded.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// A gate that cannot be built.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Text that is not a permission requirement.
    #[error(transparent)]
    Permission(#[from] PermissionError),
    /// Text that is not an accepted algorithm.
    #[error(transparent)]
    Algorithm(#[from] AlgorithmError),
}

/// A verification or authorization failure.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// No `Authorization: Bearer` credential.
    #[error("no bearer token")]
    MissingToken,
    /// An `Authorization` header that is not a single well-formed bearer
    /// token (the cause says which rule it breaks).
    #[error("malformed Authorization header")]
    MalformedHeader(#[source] BearerError),
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
    /// A DPoP proof missing, malformed or not matching the request
    /// (RFC 9449 `invalid_dpop_proof`, or `use_dpop_nonce`).
    #[error(transparent)]
    Dpop(#[from] DpopRefusal),
    /// A token bound to a DPoP key presented as a bearer token (RFC 9449
    /// §7.1: it is only usable with a proof).
    #[error(
        "this token is bound to a DPoP key: present it as Authorization: DPoP with a DPoP proof"
    )]
    BoundTokenAsBearer,
    /// A `DPoP` credential whose token is bound to no key.
    #[error("this token is not bound to a DPoP key: present it as a Bearer token")]
    UnboundTokenAsDpop,
    /// A sender-constrained token is required and this one is not.
    #[error("a {0}-bound token is required here")]
    SenderConstraintRequired(&'static str),
    /// A certificate-bound token (`cnf.x5t#S256`, RFC 8705 §3) on a request
    /// made without a client certificate.
    #[error("the token is bound to a client certificate and none was presented")]
    CertificateMissing,
    /// A certificate-bound token on a request made with another certificate.
    #[error("the token is bound to another client certificate")]
    CertificateMismatch,
    /// The route or issuer requires certificate-bound tokens and this one
    /// is not bound.
    #[error("a certificate-bound token is required")]
    NotCertificateBound,
    /// A trusted front proxy's certificate header holds no certificate.
    #[error("the forwarded client certificate is malformed")]
    CertificateHeader,
}

/// Why a DPoP proof was refused (RFC 9449 §4.3), each a stable reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DpopRefusal {
    /// A `DPoP` credential without a `DPoP` proof header.
    #[error("no DPoP proof")]
    Missing,
    /// More than one `DPoP` header.
    #[error("several DPoP headers")]
    Repeated,
    /// The proof itself is malformed or does not verify.
    #[error(transparent)]
    Malformed(keyward_jose::DpopError),
    /// `htm` is not the request's method.
    #[error("DPoP proof htm does not match the request method")]
    Method,
    /// `htu` is not the request's URI.
    #[error("DPoP proof htu does not match the request URI")]
    Uri,
    /// `iat` is older than the accepted window.
    #[error("DPoP proof is too old (iat)")]
    TooOld,
    /// `iat` is ahead of the clock by more than the leeway.
    #[error("DPoP proof was issued in the future (iat)")]
    IssuedInFuture,
    /// The proof's `jti` was seen before.
    #[error("DPoP proof has been used before (jti)")]
    Replayed,
    /// The replay cache could not answer (full, or its backend is down).
    #[error("DPoP proof cannot be checked for replay now")]
    ReplayCacheUnavailable,
    /// No `ath` with an access token.
    #[error("DPoP proof has no ath for the access token")]
    AthMissing,
    /// `ath` is not the access token's hash.
    #[error("DPoP proof ath does not match the access token")]
    AthMismatch,
    /// An `ath` where no access token is presented (the token endpoint).
    #[error("DPoP proof has an ath but no access token is presented")]
    AthUnexpected,
    /// The proof's key is not the one the token is bound to.
    #[error("DPoP proof key does not match the token's cnf.jkt")]
    KeyMismatch,
    /// No valid server nonce: holds a fresh one for the `DPoP-Nonce` header.
    #[error("a DPoP nonce from this server is required")]
    UseNonce(String),
}

impl DpopRefusal {
    /// The RFC 9449 error code.
    pub fn code(&self) -> &'static str {
        match self {
            DpopRefusal::UseNonce(_) => "use_dpop_nonce",
            _ => "invalid_dpop_proof",
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DpopRefusal::Missing => "dpop_missing",
            DpopRefusal::Repeated => "dpop_repeated",
            DpopRefusal::Malformed(_) => "dpop_malformed",
            DpopRefusal::Method => "dpop_htm",
            DpopRefusal::Uri => "dpop_htu",
            DpopRefusal::TooOld | DpopRefusal::IssuedInFuture => "dpop_iat",
            DpopRefusal::Replayed => "dpop_replay",
            DpopRefusal::ReplayCacheUnavailable => "dpop_replay_unavailable",
            DpopRefusal::AthMissing | DpopRefusal::AthMismatch | DpopRefusal::AthUnexpected => {
                "dpop_ath"
            }
            DpopRefusal::KeyMismatch => "dpop_key",
            DpopRefusal::UseNonce(_) => "dpop_nonce",
        }
    }

    /// The nonce to send in `DPoP-Nonce`, if this refusal carries one.
    pub fn nonce(&self) -> Option<&str> {
        match self {
            DpopRefusal::UseNonce(n) => Some(n),
            _ => None,
        }
    }
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
            VerifyError::MalformedHeader(_) => Some("invalid_request"),
            VerifyError::InsufficientScope(_) => Some("insufficient_scope"),
            VerifyError::Dpop(d) => Some(d.code()),
            _ => Some("invalid_token"),
        }
    }

    /// A short, stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        use keyward_jose::{ClaimsError, Error as J, TokenError};
        match self {
            VerifyError::MissingToken => "missing_token",
            VerifyError::MalformedHeader(_) => "malformed_header",
            VerifyError::UntrustedIssuer => "untrusted_issuer",
            VerifyError::UnknownKid => "unknown_kid",
            VerifyError::KeysUnavailable => "keys_unavailable",
            VerifyError::MalformedClaim(_) => "malformed_claim",
            VerifyError::Revoked => "revoked",
            VerifyError::InsufficientScope(_) => "insufficient_scope",
            VerifyError::Dpop(d) => d.reason(),
            VerifyError::BoundTokenAsBearer => "dpop_bound_as_bearer",
            VerifyError::UnboundTokenAsDpop => "dpop_unbound",
            VerifyError::SenderConstraintRequired(_) => "sender_constraint_required",
            VerifyError::CertificateMissing => "certificate_missing",
            VerifyError::CertificateMismatch => "certificate_mismatch",
            VerifyError::NotCertificateBound => "not_certificate_bound",
            VerifyError::CertificateHeader => "certificate_header",
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
        self.challenge(realm, None)
    }

    /// Whether this failure is about DPoP, so that its challenge is one
    /// (RFC 9449 §7.1).
    pub fn is_dpop(&self) -> bool {
        matches!(
            self,
            VerifyError::Dpop(_)
                | VerifyError::BoundTokenAsBearer
                | VerifyError::UnboundTokenAsDpop
                | VerifyError::SenderConstraintRequired("dpop")
        )
    }

    /// The `WWW-Authenticate` value for this failure: a `Bearer` challenge
    /// (RFC 6750 §3), or a `DPoP` one (RFC 9449 §7.1) naming the accepted
    /// proof algorithms when `dpop_algs` is given (the request used the
    /// `DPoP` scheme, or the resource requires it) or the failure is about
    /// DPoP.
    pub fn challenge(&self, realm: &str, dpop_algs: Option<&str>) -> String {
        let realm: String = realm.chars().filter(|c| *c != '"' && *c != '\\').collect();
        let scheme = if dpop_algs.is_some() || self.is_dpop() {
            "DPoP"
        } else {
            "Bearer"
        };
        let mut out = format!("{scheme} realm=\"{realm}\"");
        if let Some(code) = self.bearer_error() {
            out.push_str(&format!(
                ", error=\"{code}\", error_description=\"{}\"",
                self.description()
            ));
        }
        if scheme == "DPoP" {
            let algs = dpop_algs.map_or_else(crate::dpop::default_algs, str::to_owned);
            out.push_str(&format!(", algs=\"{algs}\""));
        }
        out
    }
}

/// Why an `Authorization` header holds no usable bearer token (RFC 6750
/// §2.1; the rules are listed in [`crate::bearer`]). Never names the token.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BearerError {
    /// No `Authorization` header.
    #[error("no Authorization header")]
    Missing,
    /// More than one `Authorization` header.
    #[error("several Authorization headers")]
    Repeated,
    /// A credential of another scheme (`Basic`, `DPoP`, ...).
    #[error("the Authorization header is not a Bearer credential")]
    OtherScheme,
    /// A value that is not visible ASCII text.
    #[error("the Authorization header is not visible ASCII")]
    NotText,
    /// A value with no space between a scheme and a token.
    #[error("no space after the scheme")]
    NoSpace,
    /// `Bearer` with no token after it.
    #[error("no token after Bearer")]
    Empty,
    /// A space around or inside the token (exactly one separates it from
    /// `Bearer`).
    #[error("a space in or around the token")]
    Space,
    /// A character a token may not hold (only letters, digits and
    /// `-._~+/=`).
    #[error("the token holds a character other than letters, digits and -._~+/=")]
    Charset,
}

impl From<BearerError> for VerifyError {
    /// No bearer credential at all (none, or another scheme's) is
    /// [`VerifyError::MissingToken`]; anything else is a malformed header.
    fn from(e: BearerError) -> Self {
        match e {
            BearerError::Missing | BearerError::OtherScheme => VerifyError::MissingToken,
            e => VerifyError::MalformedHeader(e),
        }
    }
}

/// A URL the gate will not fetch ([`crate::fetch::check_url`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UrlError {
    /// Not a URL at all.
    #[error("{url:?} is not a URL: {source}")]
    Malformed {
        /// The text given.
        url: String,
        /// Why it does not parse.
        source: url::ParseError,
    },
    /// `http://` to a host that is not loopback, without `allow_http`.
    #[error("{url} uses plain http to a non-loopback host: use https, or set allow_http = true")]
    PlainHttp {
        /// The URL.
        url: String,
    },
    /// A scheme other than `https` and `http`.
    #[error("{url} has unsupported scheme {scheme:?} (https, or http for loopback)")]
    Scheme {
        /// The URL.
        url: String,
        /// Its scheme.
        scheme: String,
    },
}

/// A bounded fetch that failed ([`crate::fetch::Fetcher`]). The text names
/// the URL, never the HTTP library's internals (they are the `source`).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The URL is not one the fetcher may ask.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// No HTTP client could be made (the TLS roots could not be loaded).
    #[error("cannot build an HTTP client")]
    Client(#[source] reqwest::Error),
    /// The whole fetch (connection, answer and body) took longer than the
    /// limit.
    #[error("{url}: timed out after {} ms", after.as_millis())]
    Timeout {
        /// The URL asked.
        url: String,
        /// The limit.
        after: Duration,
    },
    /// No connection could be made.
    #[error("{url}: connection failed")]
    Connect {
        /// The URL asked.
        url: String,
        /// The HTTP library's reason.
        #[source]
        source: reqwest::Error,
    },
    /// The request or the body failed after connecting.
    #[error("{url}: request failed")]
    Request {
        /// The URL asked.
        url: String,
        /// The HTTP library's reason.
        #[source]
        source: reqwest::Error,
    },
    /// An answer other than `200 OK` (or `304` to a conditional request).
    #[error("{url} answered {status}")]
    Status {
        /// The URL asked.
        url: String,
        /// The status answered.
        status: http::StatusCode,
    },
    /// A redirect the fetcher does not follow: to another scheme, to a URL
    /// [`crate::fetch::check_url`] refuses, or one too many.
    #[error("{url}: redirect to {location} not followed ({why})")]
    Redirect {
        /// The URL that answered with the redirect.
        url: String,
        /// Where it pointed.
        location: String,
        /// Why it was not followed.
        why: RedirectRefusal,
    },
    /// A body larger than the limit (by `Content-Length` or while read).
    #[error("{url}: body larger than {max} bytes")]
    TooLarge {
        /// The URL asked.
        url: String,
        /// The limit.
        max: usize,
    },
}

/// Why [`FetchError::Redirect`] was not followed.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedirectRefusal {
    /// The target's scheme differs from the first URL's.
    #[error("it changes the scheme")]
    OtherScheme,
    /// The target breaks the URL rules.
    #[error("{0}")]
    Url(#[source] UrlError),
    /// More redirects than [`crate::fetch::MAX_REDIRECTS`].
    #[error("too many redirects")]
    TooMany,
}

/// An issuer's keys that could not be loaded ([`crate::JwksCache`]).
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The JWK Set (or the discovery document) could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The JWK Set file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: std::io::Error,
    },
    /// The JWK Set file is larger than the body limit.
    #[error("{} is larger than {max} bytes", path.display())]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// The limit.
        max: usize,
    },
    /// OpenID discovery gave no usable `jwks_uri`.
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    /// The body is not a JWK Set.
    #[error("not a JWK Set: {0}")]
    NotAJwkSet(#[source] keyward_jose::KeyError),
}

/// An OpenID discovery document that gives no usable `jwks_uri`.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The document is not JSON.
    #[error("{url} is not JSON")]
    NotJson {
        /// The document's URL.
        url: String,
        /// The parser's reason.
        #[source]
        source: serde_json::Error,
    },
    /// The document's `issuer` is not the one asked for (OIDC Discovery §4.3).
    #[error("{url} names a different issuer")]
    WrongIssuer {
        /// The document's URL.
        url: String,
        /// The `issuer` it names, if a string.
        found: Option<String>,
    },
    /// The document has no string `jwks_uri`.
    #[error("{url} has no jwks_uri")]
    NoJwksUri {
        /// The document's URL.
        url: String,
    },
    /// The `jwks_uri` breaks the URL rules.
    #[error("{url} gives jwks_uri {source}")]
    JwksUri {
        /// The document's URL.
        url: String,
        /// Why the `jwks_uri` is refused.
        source: UrlError,
    },
    /// The `jwks_uri` is on a host that is neither the issuer's nor in its
    /// `jwks_hosts` allowlist.
    #[error("{url} gives jwks_uri {jwks_uri}, which is neither on the issuer's host and port nor on a host its jwks_hosts allows")]
    UntrustedJwksHost {
        /// The document's URL.
        url: String,
        /// The `jwks_uri` refused.
        jwks_uri: String,
    },
}

/// A [`crate::GateBuilder`] that cannot build a gate.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// No trusted issuer.
    #[error("at least one trusted issuer is required")]
    NoIssuer,
    /// The same issuer twice.
    #[error("issuer {0} is configured twice")]
    DuplicateIssuer(String),
    /// An issuer whose key cache cannot be made (its key-source URL is
    /// refused, or no HTTP client could be made).
    #[error("issuer {issuer}: {source}")]
    Keys {
        /// The issuer.
        issuer: String,
        /// Why.
        source: JwksError,
    },
}

/// Text that is not a permission requirement ([`crate::Template::parse`],
/// [`crate::Requirement::all_of`], [`crate::Requirement::any_of`]). The text
/// says what is wrong and how to fix it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionError {
    /// An empty requirement.
    #[error("a permission requirement cannot be empty: write dotted segments such as \"orders.{{id}}.read\"")]
    Empty,
    /// Segment `n` (1-based) is empty.
    #[error("permission requirement {text:?}: segment {n} is empty; remove the extra '.' (segments are separated by single dots, with none at either end)")]
    EmptySegment {
        /// The requirement.
        text: String,
        /// The segment's position, from 1.
        n: usize,
    },
    /// A segment opens `{` but is not exactly `{name}`.
    #[error("permission requirement {text:?}: segment {segment:?} opens '{{' but is not exactly \"{{name}}\"; a parameter must fill a whole segment, like \"orders.{{id}}.read\"")]
    UnclosedParameter {
        /// The requirement.
        text: String,
        /// The segment.
        segment: String,
    },
    /// A parameter name that is empty or not `[A-Za-z0-9_]+`.
    #[error("permission requirement {text:?}: parameter {segment:?} needs a name of letters, digits and '_' that matches a route parameter, like \"{{id}}\"")]
    ParameterName {
        /// The requirement.
        text: String,
        /// The segment.
        segment: String,
    },
    /// A `*` (a wildcard belongs in grants, not requirements).
    #[error("permission requirement {text:?}: segment {segment:?} contains '*'; wildcards belong in token grants (\"orders.*\"), a requirement names one exact permission")]
    Wildcard {
        /// The requirement.
        text: String,
        /// The segment.
        segment: String,
    },
    /// Literal text and a parameter in one segment.
    #[error("permission requirement {text:?}: segment {segment:?} mixes text and a parameter; a parameter must fill a whole segment, like \"orders.{{id}}.read\"")]
    MixedSegment {
        /// The requirement.
        text: String,
        /// The segment.
        segment: String,
    },
    /// A character a literal segment may not hold.
    #[error("permission requirement {text:?}: segment {segment:?} contains {character:?}; literal segments may use only letters, digits, '_', ':' and '-'")]
    Character {
        /// The requirement.
        text: String,
        /// The segment.
        segment: String,
        /// The first character refused.
        character: char,
    },
    /// An all-of or any-of list with no requirement.
    #[error("an {kind} requirement needs at least one permission; to require only a valid token, configure no requirement")]
    EmptyList {
        /// `all-of` or `any-of`.
        kind: &'static str,
    },
}

/// Text that is not an algorithm a policy may accept
/// ([`crate::IssuerPolicy::parse_algorithms`]).
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AlgorithmError {
    /// `none` or an `HS*` algorithm: nothing a public key can verify.
    #[error("algorithm {name:?} cannot be configured: only asymmetric algorithms are accepted ({})", keyward_jose::Algorithm::ALL.map(|a| a.name()).join(" "))]
    NotAsymmetric {
        /// The name given.
        name: String,
    },
    /// A name no algorithm has.
    #[error("{0}")]
    Unknown(#[source] keyward_jose::KeyError),
    /// An empty list.
    #[error("at least one algorithm is required")]
    Empty,
}
