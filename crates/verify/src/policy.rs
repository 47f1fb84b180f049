//! What one trusted issuer's tokens must satisfy.

use keyward_jose::{Algorithm, KeyFamily, Validation, DEFAULT_MAX_TOKEN_LEN};

use crate::error::AlgorithmError;
use crate::jwks_cache::{CacheConfig, KeySource};

/// The algorithm assumed for an RSA JWK without `alg` under a policy that
/// accepts `algorithms`: the first RSA one, else RS256.
pub(crate) fn rsa_default(algorithms: &[Algorithm]) -> Algorithm {
    algorithms
        .iter()
        .copied()
        .find(|a| a.family() == KeyFamily::Rsa)
        .unwrap_or(Algorithm::RS256)
}

/// The policy and key source for one trusted issuer.
#[derive(Clone, Debug)]
pub struct IssuerPolicy {
    /// `iss` must equal this, byte for byte.
    pub issuer: String,
    /// Where the issuer's keys come from.
    pub source: KeySource,
    /// `aud` must contain at least one of these (empty: not checked).
    pub audiences: Vec<String>,
    /// Accepted algorithms. Asymmetric only: `none` and `HS*` cannot be named.
    /// Default: [`Algorithm::DEFAULT_ACCEPTED`] (ML-DSA must be listed).
    pub algorithms: Vec<Algorithm>,
    /// Required header `typ` (default `at+jwt`, RFC 9068).
    pub required_typ: Option<String>,
    /// Clock skew tolerated, in seconds (default 60).
    pub leeway_secs: u64,
    /// Claims that must be present (default `iss sub exp iat`, plus `aud`
    /// when audiences are configured).
    pub required_claims: Vec<String>,
    /// Longest accepted `exp - iat`.
    pub max_lifetime_secs: Option<u64>,
    /// Whether a bare `*` grant covers every permission (default false).
    pub allow_wildcard_all: bool,
    /// JWKS cache rules.
    pub cache: CacheConfig,
    /// A sender constraint every token of this issuer must carry (default
    /// none: bound tokens still need their proof).
    pub sender_constraint: Option<crate::dpop::SenderConstraint>,
}

impl IssuerPolicy {
    /// The default policy for `issuer`, discovering its keys through
    /// `{issuer}/.well-known/openid-configuration`.
    pub fn new(issuer: impl Into<String>) -> Self {
        let issuer = issuer.into();
        IssuerPolicy {
            source: KeySource::Discovery,
            issuer,
            audiences: Vec::new(),
            // ML-DSA is accepted only where configured.
            algorithms: Algorithm::DEFAULT_ACCEPTED.to_vec(),
            required_typ: Some("at+jwt".into()),
            leeway_secs: 60,
            required_claims: ["iss", "sub", "exp", "iat"].map(String::from).to_vec(),
            max_lifetime_secs: None,
            allow_wildcard_all: false,
            cache: CacheConfig::default(),
            sender_constraint: None,
        }
    }

    /// Parses algorithm names for a policy. `none` and `HS*` are refused with
    /// an error that says why (they cannot be verified with a public key).
    pub fn parse_algorithms<S: AsRef<str>>(names: &[S]) -> Result<Vec<Algorithm>, AlgorithmError> {
        let mut out = Vec::new();
        for n in names {
            let n = n.as_ref();
            if n.eq_ignore_ascii_case("none") || n.to_ascii_uppercase().starts_with("HS") {
                return Err(AlgorithmError::NotAsymmetric { name: n.to_owned() });
            }
            let alg: Algorithm = n.parse().map_err(AlgorithmError::Unknown)?;
            if !out.contains(&alg) {
                out.push(alg);
            }
        }
        if out.is_empty() {
            return Err(AlgorithmError::Empty);
        }
        Ok(out)
    }

    /// The `keyward-jose` validation this policy asks for.
    pub fn validation(&self) -> Validation {
        let mut required = self.required_claims.clone();
        if !self.audiences.is_empty() && !required.iter().any(|c| c == "aud") {
            required.push("aud".into());
        }
        if !required.iter().any(|c| c == "exp") {
            required.push("exp".into());
        }
        Validation {
            algorithms: self.algorithms.clone(),
            issuer: Some(self.issuer.clone()),
            audiences: self.audiences.clone(),
            leeway_secs: self.leeway_secs,
            required_typ: self.required_typ.clone(),
            required_claims: required,
            max_lifetime_secs: self.max_lifetime_secs,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            keep_claims: crate::identity::KEPT_CLAIMS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ml_dsa_is_accepted_only_when_configured() {
        let default = IssuerPolicy::new("https://issuer.example");
        for alg in [Algorithm::MlDsa44, Algorithm::MlDsa65, Algorithm::MlDsa87] {
            assert!(!default.algorithms.contains(&alg), "{alg}");
            assert!(!default.validation().algorithms.contains(&alg), "{alg}");
        }
        assert_eq!(default.algorithms, Algorithm::DEFAULT_ACCEPTED);
        let named = IssuerPolicy::parse_algorithms(&["ES256", "ML-DSA-65"]).unwrap();
        assert_eq!(named, [Algorithm::ES256, Algorithm::MlDsa65]);
    }

    #[test]
    fn none_and_hmac_cannot_be_configured() {
        for bad in ["none", "NONE", "HS256", "hs512"] {
            let e = IssuerPolicy::parse_algorithms(&[bad]).unwrap_err();
            assert_eq!(e, AlgorithmError::NotAsymmetric { name: bad.into() });
            assert!(e.to_string().contains("asymmetric"), "{e}");
        }
        let e = IssuerPolicy::parse_algorithms(&["RS1"]).unwrap_err();
        assert!(matches!(e, AlgorithmError::Unknown(_)), "{e:?}");
        assert!(
            e.to_string().starts_with("unsupported algorithm \"RS1\""),
            "{e}"
        );
        let e = IssuerPolicy::parse_algorithms::<&str>(&[]).unwrap_err();
        assert_eq!(e, AlgorithmError::Empty);
        assert_eq!(e.to_string(), "at least one algorithm is required");
        assert_eq!(
            IssuerPolicy::parse_algorithms(&["ES256", "EdDSA", "ES256"]).unwrap(),
            vec![Algorithm::ES256, Algorithm::EdDSA]
        );
    }

    #[test]
    fn exp_is_always_required_and_aud_with_audiences() {
        let mut p = IssuerPolicy::new("https://a");
        p.required_claims.clear();
        p.audiences = vec!["api".into()];
        let v = p.validation();
        assert!(v.required_claims.contains(&"exp".to_string()));
        assert!(v.required_claims.contains(&"aud".to_string()));
        assert_eq!(v.required_typ.as_deref(), Some("at+jwt"));
    }
}
