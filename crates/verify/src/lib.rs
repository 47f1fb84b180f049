//! keyward-verify: the gate's core.
//!
//! A [`Gate`] trusts a list of issuers, each with its own key source (OIDC
//! discovery, an explicit `jwks_uri`, or a static JWK Set file) and its own
//! [`IssuerPolicy`]. It verifies bearer tokens against a [`JwksCache`] that
//! follows the rules verifiers are asked for everywhere: `Cache-Control:
//! max-age` and `ETag` honoured within configured bounds, background refresh
//! before expiry, single-flight and rate-limited refetch on an unknown `kid`
//! with a negative cache, stale-if-error up to `max_stale`, atomic
//! replacement, weak keys dropped. Verified tokens are remembered in a bounded
//! [`TokenCache`] that never outlives a token's `exp`, its key, or a
//! revocation of its `jti`.
//!
//! Permissions follow TKeeper's model ([`permissions`]); [`layer`] has a tower
//! `Layer` and an axum extractor for protecting a service in-process.
//!
//! Three things every keyward service shares live here: the one bearer-token
//! parser ([`bearer`]), the one bounded fetcher for JWK Sets and other
//! documents ([`fetch`]), and the one [`Clock`] (time is an input).
//!
//! Everything cryptographic happens in `keyward-jose`; this crate adds I/O,
//! caching and policy. It never depends on the issuer: it trusts only what it
//! fetches from an issuer's public endpoints.
#![forbid(unsafe_code)]

pub mod bearer;
pub mod client_cert;
pub mod clock;
pub mod dpop;
pub mod error;
pub mod fetch;
pub mod forwarded;
pub mod gate;
pub mod identity;
pub mod jwks_cache;
pub mod layer;
pub mod permissions;
pub mod policy;
pub mod replay;
pub mod revocation;
pub mod tls;
pub mod token_cache;

pub use bearer::{bearer_token, Scheme};
pub use client_cert::{check_binding, ForwardedCertificate, PeerCertificate};
pub use clock::{Clock, FixedClock, SharedClock, SystemClock};
pub use dpop::{normalize_htu, DpopPolicy, PresentedToken, ProofTarget, SenderConstraint};
pub use error::{
    AlgorithmError, BearerError, BuildError, DiscoveryError, DpopRefusal, Error, FetchError,
    JwksError, PermissionError, RedirectRefusal, UrlError, VerifyError,
};
pub use fetch::{check_url, FetchLimits, Fetcher};
pub use gate::{Gate, GateBuilder, RequestTarget, Trusted};
pub use identity::{HeaderValues, Identity};
pub use jwks_cache::{
    jwks_host_allowed, parse_jwks_host, CacheConfig, CacheStatus, JwksCache, KeySource,
};
pub use layer::{Authenticated, GateLayer, Verified};
pub use permissions::{Grants, Requirement, Template};
pub use policy::IssuerPolicy;
pub use replay::{LocalReplayCache, ReplayCache, ReplayError};
pub use revocation::RevocationList;
pub use tls::{ClientCertificates, TlsError, TlsServer, TlsSettings};
pub use token_cache::TokenCache;

/// `payload`'s claims as only verification gives them, for unit tests:
/// signed with a throwaway key and verified under a policy that checks
/// nothing but the signature and the payload's form, keeping the text of
/// the claims named in `keep`.
#[cfg(test)]
pub(crate) fn verified_claims(
    payload: &str,
    keep: &'static [&'static str],
) -> keyward_jose::Claims {
    use keyward_jose::{sign_payload, verify_jwt, Algorithm, KeySet, LocalSigner, PrivateKey};
    use keyward_jose::{TokenSigner, Validation};
    let signer = LocalSigner::new(PrivateKey::generate(Algorithm::EdDSA, None).unwrap(), None);
    let token = sign_payload(&signer, None, payload.as_bytes()).unwrap();
    let mut keys = KeySet::new();
    let jwk = signer.public_jwk();
    keys.insert(jwk.kid, jwk.key).unwrap();
    let anything = Validation {
        required_claims: Vec::new(),
        // Any time claim passes at `now` = 0.
        leeway_secs: u32::MAX.into(),
        keep_claims: keep,
        ..Validation::default()
    };
    verify_jwt(&token, &keys, &anything, 0).unwrap().claims
}
