//! The signature algorithms keyward speaks, as a closed enum.
//!
//! Only asymmetric JWS algorithms exist here: `none` and the `HS*` family are
//! not representable, so no policy, key or token can ever name them.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::signature::{
    self, EcdsaSigningAlgorithm, PqdsaSigningAlgorithm, RsaEncoding, VerificationAlgorithm,
};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::KeyError;

/// A JWS signature algorithm (RFC 7518 §3, RFC 8037 §3.1, RFC 9964 §5).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
    /// ML-DSA-44 (FIPS 204), JOSE name `ML-DSA-44` (RFC 9964).
    MlDsa44,
    /// ML-DSA-65 (FIPS 204), JOSE name `ML-DSA-65` (RFC 9964).
    MlDsa65,
    /// ML-DSA-87 (FIPS 204), JOSE name `ML-DSA-87` (RFC 9964).
    MlDsa87,
}

/// An elliptic curve used by ECDSA keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Curve {
    P256,
    P384,
    P521,
}

/// An ML-DSA parameter set (FIPS 204 Table 1); each is its own algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MlDsaParams {
    MlDsa44,
    MlDsa65,
    MlDsa87,
}

impl MlDsaParams {
    /// The parameter set's name, which is also its JOSE algorithm name.
    pub fn name(self) -> &'static str {
        self.algorithm().name()
    }

    /// The one algorithm keys of this parameter set sign with.
    pub fn algorithm(self) -> Algorithm {
        match self {
            MlDsaParams::MlDsa44 => Algorithm::MlDsa44,
            MlDsaParams::MlDsa65 => Algorithm::MlDsa65,
            MlDsaParams::MlDsa87 => Algorithm::MlDsa87,
        }
    }

    /// Bytes in an encoded public key (FIPS 204 Table 2).
    pub fn public_key_len(self) -> usize {
        match self {
            MlDsaParams::MlDsa44 => 1312,
            MlDsaParams::MlDsa65 => 1952,
            MlDsaParams::MlDsa87 => 2592,
        }
    }

    /// Bytes in a signature (FIPS 204 Table 2).
    pub fn signature_len(self) -> usize {
        match self {
            MlDsaParams::MlDsa44 => 2420,
            MlDsaParams::MlDsa65 => 3309,
            MlDsaParams::MlDsa87 => 4627,
        }
    }

    /// Bytes in the private seed, the only private form RFC 9964 §4 uses.
    pub const SEED_LEN: usize = 32;

    pub(crate) fn signing(self) -> &'static PqdsaSigningAlgorithm {
        match self {
            MlDsaParams::MlDsa44 => &signature::ML_DSA_44_SIGNING,
            MlDsaParams::MlDsa65 => &signature::ML_DSA_65_SIGNING,
            MlDsaParams::MlDsa87 => &signature::ML_DSA_87_SIGNING,
        }
    }
}

/// What kind of key an algorithm needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFamily {
    Rsa,
    Ec(Curve),
    Ed25519,
    /// An RFC 9964 `AKP` key of one ML-DSA parameter set (no curve).
    MlDsa(MlDsaParams),
}

/// RSA modulus sizes keyward generates. Imported and fetched keys may have
/// any size from 2048 bits up to 8192; nothing below 2048 is ever accepted.
pub const RSA_SIZES: [u32; 3] = [2048, 3072, 4096];
/// The default RSA size (identity servers pick 4096).
pub const DEFAULT_RSA_BITS: u32 = 4096;
/// The smallest RSA modulus accepted anywhere.
pub const MIN_RSA_BITS: usize = 2048;

impl Algorithm {
    /// Every algorithm, in a stable order.
    pub const ALL: [Algorithm; 13] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::ES512,
        Algorithm::EdDSA,
        Algorithm::MlDsa44,
        Algorithm::MlDsa65,
        Algorithm::MlDsa87,
    ];

    /// What a verification policy accepts when none is configured: every
    /// algorithm but ML-DSA, which a policy must name to accept. [`Self::ALL`]
    /// lists ML-DSA last, so this is its beginning (a test checks it).
    pub const DEFAULT_ACCEPTED: [Algorithm; 10] = {
        let mut out = [Algorithm::RS256; 10];
        let mut i = 0;
        while i < out.len() {
            out[i] = Self::ALL[i];
            i += 1;
        }
        out
    };

    /// The JOSE name (`"RS256"`, `"EdDSA"`...).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::MlDsa44 => "ML-DSA-44",
            Algorithm::MlDsa65 => "ML-DSA-65",
            Algorithm::MlDsa87 => "ML-DSA-87",
        }
    }

    /// Looks up a JOSE name. `none`, `HS*` and anything unknown are refused.
    ///
    /// `Ed25519`, RFC 9864's fully-specified name for EdDSA over Ed25519
    /// (the one curve keyward's `EdDSA` is), is read as [`Algorithm::EdDSA`]
    /// wherever a name is read (token and proof headers, JWKs, settings), so
    /// tokens, keys and proofs from libraries that write it are accepted;
    /// keyward itself writes `EdDSA`, which every JOSE library reads.
    /// `Ed448` is not supported.
    pub fn from_name(name: &str) -> Result<Self, KeyError> {
        if name == "Ed25519" {
            return Ok(Algorithm::EdDSA);
        }
        Algorithm::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| KeyError::UnsupportedAlgorithm(truncate(name)))
    }

    /// The key family (and curve) this algorithm is bound to.
    pub fn family(self) -> KeyFamily {
        match self {
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => KeyFamily::Rsa,
            Algorithm::ES256 => KeyFamily::Ec(Curve::P256),
            Algorithm::ES384 => KeyFamily::Ec(Curve::P384),
            Algorithm::ES512 => KeyFamily::Ec(Curve::P521),
            Algorithm::EdDSA => KeyFamily::Ed25519,
            Algorithm::MlDsa44 => KeyFamily::MlDsa(MlDsaParams::MlDsa44),
            Algorithm::MlDsa65 => KeyFamily::MlDsa(MlDsaParams::MlDsa65),
            Algorithm::MlDsa87 => KeyFamily::MlDsa(MlDsaParams::MlDsa87),
        }
    }

    pub(crate) fn verification(self) -> &'static dyn VerificationAlgorithm {
        match self {
            Algorithm::RS256 => &signature::RSA_PKCS1_2048_8192_SHA256,
            Algorithm::RS384 => &signature::RSA_PKCS1_2048_8192_SHA384,
            Algorithm::RS512 => &signature::RSA_PKCS1_2048_8192_SHA512,
            Algorithm::PS256 => &signature::RSA_PSS_2048_8192_SHA256,
            Algorithm::PS384 => &signature::RSA_PSS_2048_8192_SHA384,
            Algorithm::PS512 => &signature::RSA_PSS_2048_8192_SHA512,
            Algorithm::ES256 => &signature::ECDSA_P256_SHA256_FIXED,
            Algorithm::ES384 => &signature::ECDSA_P384_SHA384_FIXED,
            Algorithm::ES512 => &signature::ECDSA_P521_SHA512_FIXED,
            Algorithm::EdDSA => &signature::ED25519,
            Algorithm::MlDsa44 => &signature::ML_DSA_44,
            Algorithm::MlDsa65 => &signature::ML_DSA_65,
            Algorithm::MlDsa87 => &signature::ML_DSA_87,
        }
    }

    pub(crate) fn rsa_encoding(self) -> Option<&'static dyn RsaEncoding> {
        Some(match self {
            Algorithm::RS256 => &signature::RSA_PKCS1_SHA256,
            Algorithm::RS384 => &signature::RSA_PKCS1_SHA384,
            Algorithm::RS512 => &signature::RSA_PKCS1_SHA512,
            Algorithm::PS256 => &signature::RSA_PSS_SHA256,
            Algorithm::PS384 => &signature::RSA_PSS_SHA384,
            Algorithm::PS512 => &signature::RSA_PSS_SHA512,
            Algorithm::ES256
            | Algorithm::ES384
            | Algorithm::ES512
            | Algorithm::EdDSA
            | Algorithm::MlDsa44
            | Algorithm::MlDsa65
            | Algorithm::MlDsa87 => return None,
        })
    }

    pub(crate) fn ecdsa_signing(self) -> Option<&'static EcdsaSigningAlgorithm> {
        match self {
            Algorithm::ES256 => Some(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            Algorithm::ES384 => Some(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            Algorithm::ES512 => Some(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
            _ => None,
        }
    }
}

impl Curve {
    /// The JWK `crv` name.
    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    /// Bytes in one coordinate (and in each of r and s of a signature).
    pub fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    /// The field size in bits.
    pub fn bits(self) -> u32 {
        match self {
            Curve::P256 => 256,
            Curve::P384 => 384,
            Curve::P521 => 521,
        }
    }

    /// Looks up a JWK `crv` name.
    pub fn from_name(name: &str) -> Result<Self, KeyError> {
        match name {
            "P-256" => Ok(Curve::P256),
            "P-384" => Ok(Curve::P384),
            "P-521" => Ok(Curve::P521),
            other => Err(KeyError::UnsupportedCurve(truncate(other))),
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Algorithm {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::from_name(s)
    }
}

impl Serialize for Algorithm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Algorithm::from_name(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for a in Algorithm::ALL {
            assert_eq!(Algorithm::from_name(a.name()).unwrap(), a);
        }
    }

    #[test]
    fn rfc_9864_ed25519_reads_as_eddsa_and_ed448_is_refused() {
        assert_eq!(Algorithm::from_name("Ed25519").unwrap(), Algorithm::EdDSA);
        assert_eq!("Ed25519".parse::<Algorithm>().unwrap().name(), "EdDSA");
        for n in ["Ed448", "ed25519", "ED25519", "Ed25519 ", "EdDSA25519"] {
            assert!(
                matches!(
                    Algorithm::from_name(n),
                    Err(KeyError::UnsupportedAlgorithm(_))
                ),
                "{n}"
            );
        }
    }

    #[test]
    fn ml_dsa_names_and_defaults() {
        assert_eq!(
            Algorithm::from_name("ML-DSA-65").unwrap(),
            Algorithm::MlDsa65
        );
        for n in ["ML-DSA-44", "ML-DSA-65", "ML-DSA-87"] {
            let a = Algorithm::from_name(n).unwrap();
            assert_eq!(a.name(), n);
            assert!(matches!(a.family(), KeyFamily::MlDsa(p) if p.algorithm() == a));
            assert!(!Algorithm::DEFAULT_ACCEPTED.contains(&a), "opt-in only");
        }
        for n in [
            "ml-dsa-65",
            "MLDSA65",
            "ML-DSA",
            "ML-DSA-65-SHAKE",
            "HashML-DSA-65",
        ] {
            assert!(
                matches!(
                    Algorithm::from_name(n),
                    Err(KeyError::UnsupportedAlgorithm(_))
                ),
                "{n}"
            );
        }
        let classical: Vec<_> = Algorithm::ALL
            .into_iter()
            .filter(|a| !matches!(a.family(), KeyFamily::MlDsa(_)))
            .collect();
        assert_eq!(classical, Algorithm::DEFAULT_ACCEPTED);
    }

    #[test]
    fn none_and_hmac_are_not_algorithms() {
        for n in [
            "none", "None", "HS256", "HS384", "HS512", "rs256", "ES256K", "",
        ] {
            assert!(
                matches!(Algorithm::from_name(n), Err(KeyError::UnsupportedAlgorithm(ref s)) if s == n),
                "{n}"
            );
        }
    }
}
