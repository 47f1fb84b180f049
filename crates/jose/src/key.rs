//! Signing keys and verifying keys, bound to exactly one algorithm.
//!
//! A [`PublicKey`] is parsed once into aws-lc-rs's `ParsedPublicKey`, so a
//! verification never re-parses DER. A [`PrivateKey`] never shows its secret
//! in `Debug`; its PKCS#8 form is only handed out (zeroized on drop) for
//! sealing.

use std::fmt;

use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize, PublicKeyComponents};
use aws_lc_rs::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ParsedPublicKey, PqdsaKeyPair};
use zeroize::Zeroizing;

use crate::alg::{
    Algorithm, Curve, KeyFamily, MlDsaParams, DEFAULT_RSA_BITS, MIN_RSA_BITS, RSA_SIZES,
};
use crate::error::KeyError;

/// Largest RSA modulus accepted (aws-lc-rs verifies up to 8192 bits).
const MAX_RSA_BITS: usize = 8192;

/// The public numbers of a key, as JWK members carry them.
#[derive(Clone, PartialEq, Eq)]
pub enum PublicMaterial {
    /// Modulus and exponent, big-endian, no leading zero octets.
    Rsa { n: Vec<u8>, e: Vec<u8> },
    /// Affine coordinates, each exactly the curve's coordinate length.
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    /// The 32-byte Ed25519 public key.
    Ed25519 { x: Vec<u8> },
    /// An ML-DSA public key (FIPS 204 `pkEncode`), the `pub` of an RFC 9964
    /// `AKP` JWK: exactly the parameter set's public key length.
    MlDsa {
        params: MlDsaParams,
        public: Vec<u8>,
    },
}

/// A public key for one algorithm, parsed once for fast verification.
#[derive(Clone)]
pub struct PublicKey {
    alg: Algorithm,
    material: PublicMaterial,
    parsed: ParsedPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, {} bits, {})",
            self.alg,
            self.bits(),
            self.thumbprint()
        )
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.alg == other.alg && self.material == other.material
    }
}
impl Eq for PublicKey {}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[i..]
}

fn bit_len(b: &[u8]) -> usize {
    let b = strip_leading_zeros(b);
    match b.first() {
        None => 0,
        Some(&top) => (b.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
    }
}

/// The ROCA fingerprint (CVE-2017-15361, Nemec et al. 2017): moduli made by
/// the vulnerable Infineon library satisfy `n mod p ∈ <65537> (mod p)` for
/// every small prime `p`. A random modulus passes all 37 checks with
/// negligible probability. This is a residue test, not cryptography.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 37] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89,
        97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163,
    ];
    PRIMES.iter().all(|&p| {
        let r = n
            .iter()
            .fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % p);
        let g = 65537 % p;
        let mut x = 1u32;
        for _ in 0..p {
            if x == r {
                return true;
            }
            x = x * g % p;
            if x == 1 {
                break;
            }
        }
        false
    })
}

fn check_rsa_public(n: &[u8], e: &[u8]) -> Result<(), KeyError> {
    let bits = bit_len(n);
    if bits < MIN_RSA_BITS {
        return Err(KeyError::RsaTooSmall(bits));
    }
    if bits > MAX_RSA_BITS {
        return Err(KeyError::RsaTooLarge(bits));
    }
    if n.last().is_some_and(|b| b & 1 == 0) {
        return Err(KeyError::WeakRsa("even modulus"));
    }
    let e = strip_leading_zeros(e);
    if e.is_empty() || e.len() > 4 {
        return Err(KeyError::WeakRsa("public exponent out of range"));
    }
    let ev = e.iter().fold(0u64, |acc, &b| acc * 256 + u64::from(b));
    if ev < 3 || ev % 2 == 0 {
        return Err(KeyError::WeakRsa(
            "public exponent must be odd and at least 3",
        ));
    }
    if has_roca_fingerprint(n) {
        return Err(KeyError::WeakRsa(
            "modulus has the ROCA fingerprint (CVE-2017-15361)",
        ));
    }
    Ok(())
}

fn family_name(f: KeyFamily) -> String {
    match f {
        KeyFamily::Rsa => "RSA".into(),
        KeyFamily::Ec(c) => format!("EC {}", c.name()),
        KeyFamily::Ed25519 => "Ed25519".into(),
        KeyFamily::MlDsa(p) => format!("AKP {}", p.name()),
    }
}

fn mismatch(key: KeyFamily, alg: Algorithm) -> KeyError {
    KeyError::AlgorithmMismatch {
        key: family_name(key),
        alg: alg.name(),
    }
}

impl PublicMaterial {
    /// The family (and curve) of this material.
    pub fn family(&self) -> KeyFamily {
        match self {
            PublicMaterial::Rsa { .. } => KeyFamily::Rsa,
            PublicMaterial::Ec { curve, .. } => KeyFamily::Ec(*curve),
            PublicMaterial::Ed25519 { .. } => KeyFamily::Ed25519,
            PublicMaterial::MlDsa { params, .. } => KeyFamily::MlDsa(*params),
        }
    }
}

impl PublicKey {
    /// Builds and validates a key from its public numbers for `alg`: RSA of at
    /// least 2048 bits with a sane exponent and no ROCA fingerprint, EC points on
    /// their curve, Ed25519 of 32 bytes.
    pub fn from_material(alg: Algorithm, material: PublicMaterial) -> Result<Self, KeyError> {
        if material.family() != alg.family() {
            return Err(mismatch(material.family(), alg));
        }
        let parsed = match &material {
            PublicMaterial::Rsa { n, e } => {
                check_rsa_public(n, e)?;
                let components = PublicKeyComponents {
                    n: n.as_slice(),
                    e: e.as_slice(),
                };
                let params = match alg {
                    Algorithm::RS256 => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::RS384 => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::RS512 => &aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::PS256 => &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::PS384 => &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::PS512 => &aws_lc_rs::signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Err(mismatch(KeyFamily::Rsa, alg)),
                };
                components.to_parsed_public_key(params).map_err(|_| {
                    KeyError::Malformed("RSA modulus and exponent do not form a key".into())
                })?
            }
            PublicMaterial::Ec { curve, x, y } => {
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return Err(KeyError::Malformed(format!(
                        "{} coordinates must be exactly {len} bytes",
                        curve.name()
                    )));
                }
                let mut point = Vec::with_capacity(1 + 2 * len);
                point.push(4);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                ParsedPublicKey::new(alg.verification(), &point)
                    .map_err(|_| KeyError::Malformed(format!("point is not on {}", curve.name())))?
            }
            PublicMaterial::Ed25519 { x } => {
                if x.len() != 32 {
                    return Err(KeyError::Malformed(
                        "Ed25519 keys are exactly 32 bytes".into(),
                    ));
                }
                ParsedPublicKey::new(alg.verification(), x)
                    .map_err(|_| KeyError::Malformed("invalid Ed25519 public key".into()))?
            }
            PublicMaterial::MlDsa { params, public } => {
                if public.len() != params.public_key_len() {
                    return Err(KeyError::PublicKeyLength {
                        alg: alg.name(),
                        expected: params.public_key_len(),
                        got: public.len(),
                    });
                }
                ParsedPublicKey::new(alg.verification(), public).map_err(|_| {
                    KeyError::Malformed(format!("invalid {} public key", params.name()))
                })?
            }
        };
        let material = match material {
            PublicMaterial::Rsa { n, e } => PublicMaterial::Rsa {
                n: strip_leading_zeros(&n).to_vec(),
                e: strip_leading_zeros(&e).to_vec(),
            },
            other => other,
        };
        Ok(PublicKey {
            alg,
            material,
            parsed,
        })
    }

    /// Parses an X.509 SubjectPublicKeyInfo (or, for RSA, a PKCS#1
    /// RSAPublicKey) DER encoding for `alg`.
    pub fn from_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let bad = || KeyError::Malformed(format!("not a DER public key for {alg}"));
        let material = match alg.family() {
            KeyFamily::Rsa => {
                let k = aws_lc_rs::rsa::PublicKey::from_der(der).map_err(|_| bad())?;
                PublicMaterial::Rsa {
                    n: k.modulus().big_endian_without_leading_zero().to_vec(),
                    e: k.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
            KeyFamily::Ec(curve) => {
                let whole = ParsedPublicKey::new(alg.verification(), der).map_err(|_| bad())?;
                let len = 1 + 2 * curve.coordinate_len();
                let point = der
                    .len()
                    .checked_sub(len)
                    .map(|i| &der[i..])
                    .ok_or_else(bad)?;
                if point[0] != 4 {
                    return Err(KeyError::Malformed(
                        "compressed EC points are not supported".into(),
                    ));
                }
                let same = ParsedPublicKey::new(alg.verification(), point).map_err(|_| bad())?;
                if spki(&same)? != spki(&whole)? {
                    return Err(bad());
                }
                let (x, y) = point[1..].split_at(curve.coordinate_len());
                PublicMaterial::Ec {
                    curve,
                    x: x.to_vec(),
                    y: y.to_vec(),
                }
            }
            KeyFamily::Ed25519 => {
                let whole = ParsedPublicKey::new(alg.verification(), der).map_err(|_| bad())?;
                let x = der
                    .len()
                    .checked_sub(32)
                    .map(|i| &der[i..])
                    .ok_or_else(bad)?;
                let same = ParsedPublicKey::new(alg.verification(), x).map_err(|_| bad())?;
                if der.len() == 32 || spki(&same)? != spki(&whole)? {
                    return Err(bad());
                }
                PublicMaterial::Ed25519 { x: x.to_vec() }
            }
            KeyFamily::MlDsa(params) => {
                // SPKI only (RFC 9881): the key is the last `pub` bytes of it.
                let whole = ParsedPublicKey::new(alg.verification(), der).map_err(|_| bad())?;
                let len = params.public_key_len();
                let public = der
                    .len()
                    .checked_sub(len)
                    .map(|i| &der[i..])
                    .ok_or_else(bad)?;
                let same = ParsedPublicKey::new(alg.verification(), public).map_err(|_| bad())?;
                if der.len() == len || spki(&same)? != spki(&whole)? {
                    return Err(bad());
                }
                PublicMaterial::MlDsa {
                    params,
                    public: public.to_vec(),
                }
            }
        };
        PublicKey::from_material(alg, material)
    }

    /// Parses a PEM `PUBLIC KEY` (SPKI) or `RSA PUBLIC KEY` (PKCS#1) block.
    pub fn from_pem(alg: Algorithm, pem_text: &str) -> Result<Self, KeyError> {
        let blocks =
            pem::parse_many(pem_text).map_err(|_| KeyError::Pem("unreadable PEM".into()))?;
        let block = blocks
            .iter()
            .find(|b| matches!(b.tag(), "PUBLIC KEY" | "RSA PUBLIC KEY"))
            .ok_or_else(|| {
                KeyError::Pem(
                    blocks
                        .first()
                        .map(|b| b.tag().to_string())
                        .unwrap_or_default(),
                )
            })?;
        PublicKey::from_der(alg, block.contents())
    }

    /// The one algorithm this key verifies.
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The public numbers.
    pub fn material(&self) -> &PublicMaterial {
        &self.material
    }

    /// RSA modulus bits, the curve size (256 for Ed25519), or for ML-DSA
    /// the size of the encoded public key in bits.
    pub fn bits(&self) -> u32 {
        match &self.material {
            PublicMaterial::Rsa { n, .. } => bit_len(n) as u32,
            PublicMaterial::Ec { curve, .. } => curve.bits(),
            PublicMaterial::Ed25519 { .. } => 256,
            PublicMaterial::MlDsa { params, .. } => (params.public_key_len() * 8) as u32,
        }
    }

    /// X.509 SubjectPublicKeyInfo DER.
    pub fn to_spki_der(&self) -> Vec<u8> {
        spki(&self.parsed).expect("a parsed key encodes")
    }

    /// PEM `PUBLIC KEY` (SPKI).
    pub fn to_pem(&self) -> String {
        pem::encode_config(
            &pem::Pem::new("PUBLIC KEY", self.to_spki_der()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        )
    }

    /// Verifies `signature` over `message`. ECDSA signatures must be raw
    /// `r || s` of exactly twice the coordinate length; DER is refused.
    /// ML-DSA signatures must have exactly the parameter set's length and are
    /// checked with an empty context string (RFC 9964 §5).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), crate::error::TokenError> {
        let expected = match self.material {
            PublicMaterial::Ec { curve, .. } => Some(2 * curve.coordinate_len()),
            PublicMaterial::MlDsa { params, .. } => Some(params.signature_len()),
            PublicMaterial::Rsa { .. } | PublicMaterial::Ed25519 { .. } => None,
        };
        if expected.is_some_and(|len| signature.len() != len) {
            return Err(crate::error::TokenError::SignatureLength(self.alg.name()));
        }
        self.parsed
            .verify_sig(message, signature)
            .map_err(|_| crate::error::TokenError::BadSignature)
    }
}

fn spki(k: &ParsedPublicKey) -> Result<Vec<u8>, KeyError> {
    let der: PublicKeyX509Der<'static> = k
        .as_der()
        .map_err(|_| KeyError::Malformed("key does not encode".into()))?;
    Ok(der.as_ref().to_vec())
}

enum Inner {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
    /// Always holds its seed (made by `generate`, from a seed, or from a
    /// seed-form PKCS#8), so that it can be exported.
    MlDsa(PqdsaKeyPair),
}

/// A private signing key bound to one algorithm. Its secret never appears in
/// `Debug`, `Display` or any error.
pub struct PrivateKey {
    inner: Inner,
    public: PublicKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PrivateKey({}, {} bits, {}, secret redacted)",
            self.public.alg,
            self.public.bits(),
            self.public.thumbprint()
        )
    }
}

impl PrivateKey {
    /// Generates a new key. `rsa_bits` applies to RSA algorithms only
    /// (2048, 3072 or 4096; default 4096) and must be `None` for the others.
    pub fn generate(alg: Algorithm, rsa_bits: Option<u32>) -> Result<Self, KeyError> {
        let inner = match alg.family() {
            KeyFamily::Rsa => {
                let bits = rsa_bits.unwrap_or(DEFAULT_RSA_BITS);
                let size = match bits {
                    2048 => KeySize::Rsa2048,
                    3072 => KeySize::Rsa3072,
                    4096 => KeySize::Rsa4096,
                    b if (b as usize) < MIN_RSA_BITS => {
                        return Err(KeyError::RsaTooSmall(b as usize))
                    }
                    b => return Err(KeyError::RsaSizeNotOffered(b)),
                };
                debug_assert!(RSA_SIZES.contains(&bits));
                Inner::Rsa(RsaKeyPair::generate(size).map_err(|_| KeyError::Generation)?)
            }
            KeyFamily::Ec(_) => {
                if rsa_bits.is_some() {
                    return Err(KeyError::Malformed(format!(
                        "a key size applies to RSA only, not {alg}"
                    )));
                }
                let signing = alg.ecdsa_signing().expect("EC algorithm");
                Inner::Ec(EcdsaKeyPair::generate(signing).map_err(|_| KeyError::Generation)?)
            }
            KeyFamily::Ed25519 => {
                if rsa_bits.is_some() {
                    return Err(KeyError::Malformed(format!(
                        "a key size applies to RSA only, not {alg}"
                    )));
                }
                Inner::Ed(Ed25519KeyPair::generate().map_err(|_| KeyError::Generation)?)
            }
            KeyFamily::MlDsa(params) => {
                if rsa_bits.is_some() {
                    return Err(KeyError::Malformed(format!(
                        "a key size applies to RSA only, not {alg}"
                    )));
                }
                Inner::MlDsa(
                    PqdsaKeyPair::generate(params.signing()).map_err(|_| KeyError::Generation)?,
                )
            }
        };
        PrivateKey::from_inner(alg, inner)
    }

    /// An ML-DSA key from its 32-byte seed (FIPS 204 `ML-DSA.KeyGen_internal`),
    /// the private form RFC 9964 §4 uses for a JWK's `priv`.
    pub fn from_seed(alg: Algorithm, seed: &[u8]) -> Result<Self, KeyError> {
        let KeyFamily::MlDsa(params) = alg.family() else {
            return Err(KeyError::Malformed(format!(
                "only ML-DSA keys are made from a seed, not {alg}"
            )));
        };
        if seed.len() != MlDsaParams::SEED_LEN {
            return Err(KeyError::SeedLength {
                alg: alg.name(),
                got: seed.len(),
            });
        }
        let pair = PqdsaKeyPair::from_seed(params.signing(), seed)
            .map_err(|_| KeyError::Malformed(format!("not an {alg} seed")))?;
        PrivateKey::from_inner(alg, Inner::MlDsa(pair))
    }

    fn from_inner(alg: Algorithm, inner: Inner) -> Result<Self, KeyError> {
        let material = match (&inner, alg.family()) {
            (Inner::Rsa(k), KeyFamily::Rsa) => {
                let p = k.public_key();
                PublicMaterial::Rsa {
                    n: p.modulus().big_endian_without_leading_zero().to_vec(),
                    e: p.exponent().big_endian_without_leading_zero().to_vec(),
                }
            }
            (Inner::Ec(k), KeyFamily::Ec(curve)) => {
                let point = k.public_key().as_ref();
                let len = curve.coordinate_len();
                if point.len() != 1 + 2 * len || point[0] != 4 {
                    return Err(mismatch(KeyFamily::Ec(curve), alg));
                }
                PublicMaterial::Ec {
                    curve,
                    x: point[1..1 + len].to_vec(),
                    y: point[1 + len..].to_vec(),
                }
            }
            (Inner::Ed(k), KeyFamily::Ed25519) => PublicMaterial::Ed25519 {
                x: k.public_key().as_ref().to_vec(),
            },
            (Inner::MlDsa(k), KeyFamily::MlDsa(params)) if k.algorithm() == params.signing() => {
                PublicMaterial::MlDsa {
                    params,
                    public: k.public_key().as_ref().to_vec(),
                }
            }
            (_, fam) => return Err(mismatch(fam, alg)),
        };
        let public = PublicKey::from_material(alg, material)?;
        Ok(PrivateKey { inner, public })
    }

    /// Parses a DER private key for `alg`: PKCS#8 for every algorithm, PKCS#1
    /// `RSAPrivateKey` for RSA, SEC1 `ECPrivateKey` for ECDSA. The key must be
    /// of `alg`'s family (and curve).
    pub fn from_der(alg: Algorithm, der: &[u8]) -> Result<Self, KeyError> {
        let bad = || KeyError::Malformed(format!("not a DER private key for {alg}"));
        let inner = match alg.family() {
            KeyFamily::Rsa => {
                let too_small = |e: &aws_lc_rs::error::KeyRejected| e.description_() == "TooSmall";
                let k = match RsaKeyPair::from_pkcs8(der) {
                    Ok(k) => Ok(k),
                    Err(e) if too_small(&e) => Err(e),
                    Err(_) => RsaKeyPair::from_der(der),
                };
                Inner::Rsa(k.map_err(|e| {
                    if too_small(&e) {
                        KeyError::RsaBelowMinimum
                    } else {
                        bad()
                    }
                })?)
            }
            KeyFamily::Ec(_) => Inner::Ec(
                EcdsaKeyPair::from_private_key_der(alg.ecdsa_signing().expect("EC algorithm"), der)
                    .map_err(|_| bad())?,
            ),
            KeyFamily::Ed25519 => Inner::Ed(Ed25519KeyPair::from_pkcs8(der).map_err(|_| bad())?),
            KeyFamily::MlDsa(params) => {
                let k = PqdsaKeyPair::from_pkcs8(params.signing(), der).map_err(|_| bad())?;
                // RFC 9964 §4 keeps only the seed: a PKCS#8 with the expanded
                // key alone could never be exported as a JWK or re-sealed.
                if k.to_pkcs8v1().is_err() {
                    return Err(KeyError::Malformed(format!(
                        "{alg} private keys are accepted in seed form only (RFC 9964 §4, RFC 9881)"
                    )));
                }
                Inner::MlDsa(k)
            }
        };
        PrivateKey::from_inner(alg, inner)
    }

    /// Parses a PEM private key: `PRIVATE KEY` (PKCS#8), `RSA PRIVATE KEY`
    /// (PKCS#1) or `EC PRIVATE KEY` (SEC1). Encrypted PEM is refused.
    pub fn from_pem(alg: Algorithm, pem_text: &str) -> Result<Self, KeyError> {
        let blocks =
            pem::parse_many(pem_text).map_err(|_| KeyError::Pem("unreadable PEM".into()))?;
        if blocks.iter().any(|b| b.tag() == "ENCRYPTED PRIVATE KEY") {
            return Err(KeyError::Pem(
                "ENCRYPTED PRIVATE KEY (decrypt it first)".into(),
            ));
        }
        let block = blocks
            .iter()
            .find(|b| {
                matches!(
                    b.tag(),
                    "PRIVATE KEY" | "RSA PRIVATE KEY" | "EC PRIVATE KEY"
                )
            })
            .ok_or_else(|| {
                KeyError::Pem(
                    blocks
                        .first()
                        .map(|b| b.tag().to_string())
                        .unwrap_or_default(),
                )
            })?;
        let contents = Zeroizing::new(block.contents().to_vec());
        PrivateKey::from_der(alg, &contents)
    }

    /// The key's PKCS#8 DER, for sealing. Zeroized when dropped.
    pub fn to_pkcs8_der(&self) -> Zeroizing<Vec<u8>> {
        let v = match &self.inner {
            Inner::Rsa(k) => {
                let d: Pkcs8V1Der<'static> = k.as_der().expect("RSA key encodes");
                d.as_ref().to_vec()
            }
            Inner::Ec(k) => k.to_pkcs8v1().expect("EC key encodes").as_ref().to_vec(),
            Inner::Ed(k) => k.to_pkcs8().expect("Ed25519 key encodes").as_ref().to_vec(),
            // Seed form (RFC 9881 `seed`), which every `Inner::MlDsa` holds.
            Inner::MlDsa(k) => k
                .to_pkcs8v1()
                .expect("ML-DSA key encodes")
                .as_ref()
                .to_vec(),
        };
        Zeroizing::new(v)
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.public.alg
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`. ECDSA signatures are raw `r || s`.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Rsa(k) => {
                let enc = self.public.alg.rsa_encoding().ok_or(KeyError::Signing)?;
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(enc, &SystemRandom::new(), message, &mut sig)
                    .map_err(|_| KeyError::Signing)?;
                Ok(sig)
            }
            Inner::Ec(k) => Ok(k
                .sign(&SystemRandom::new(), message)
                .map_err(|_| KeyError::Signing)?
                .as_ref()
                .to_vec()),
            Inner::Ed(k) => Ok(k.sign(message).as_ref().to_vec()),
            // Pure ML-DSA with an empty context (RFC 9964 §5), hedged by aws-lc.
            Inner::MlDsa(k) => {
                let mut sig = vec![0u8; k.algorithm().signature_len()];
                let n = k.sign(message, &mut sig).map_err(|_| KeyError::Signing)?;
                sig.truncate(n);
                Ok(sig)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generate_sign_verify_every_algorithm() {
        for alg in Algorithm::ALL {
            let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
            let k = PrivateKey::generate(alg, bits).unwrap();
            let sig = k.sign(b"msg").unwrap();
            k.public_key().verify(b"msg", &sig).unwrap();
            assert_eq!(
                k.public_key().verify(b"msh", &sig),
                Err(crate::error::TokenError::BadSignature)
            );
            assert!(!format!("{k:?}").is_empty());
        }
    }

    #[test]
    fn rsa_sizes() {
        assert!(matches!(
            PrivateKey::generate(Algorithm::RS256, Some(1024)),
            Err(KeyError::RsaTooSmall(1024))
        ));
        assert!(matches!(
            PrivateKey::generate(Algorithm::RS256, Some(2047)),
            Err(KeyError::RsaTooSmall(2047))
        ));
        assert!(matches!(
            PrivateKey::generate(Algorithm::RS256, Some(5000)),
            Err(KeyError::RsaSizeNotOffered(5000))
        ));
        assert!(matches!(
            PrivateKey::generate(Algorithm::ES256, Some(2048)),
            Err(KeyError::Malformed(m)) if m.contains("RSA only")
        ));
    }

    #[test]
    fn bit_len_counts() {
        assert_eq!(bit_len(&[0, 0, 1]), 1);
        assert_eq!(bit_len(&[0x80, 0]), 16);
        assert_eq!(bit_len(&[]), 0);
    }

    #[test]
    fn der_round_trips() {
        for alg in Algorithm::ALL {
            let bits = matches!(alg.family(), KeyFamily::Rsa).then_some(2048);
            let k = PrivateKey::generate(alg, bits).unwrap();
            let again = PrivateKey::from_der(alg, &k.to_pkcs8_der()).unwrap();
            assert_eq!(again.public_key(), k.public_key());
            let p = PublicKey::from_der(alg, &k.public_key().to_spki_der()).unwrap();
            assert_eq!(&p, k.public_key());
            let p = PublicKey::from_pem(alg, &k.public_key().to_pem()).unwrap();
            assert_eq!(&p, k.public_key());
        }
    }

    #[test]
    fn key_bound_to_its_family() {
        let ec = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let not_for = |alg: Algorithm, e: KeyError| {
            assert!(
                matches!(&e, KeyError::Malformed(m) if m.ends_with(&format!("for {alg}"))),
                "{alg}: {e:?}"
            );
        };
        for alg in [Algorithm::ES384, Algorithm::RS256] {
            not_for(
                alg,
                PrivateKey::from_der(alg, &ec.to_pkcs8_der()).unwrap_err(),
            );
        }
        for alg in [Algorithm::EdDSA, Algorithm::ES512] {
            not_for(
                alg,
                PublicKey::from_der(alg, &ec.public_key().to_spki_der()).unwrap_err(),
            );
        }
    }
}
