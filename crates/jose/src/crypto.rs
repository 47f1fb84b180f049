//! Small cryptographic helpers other crates need, so that this crate stays the
//! only one that touches aws-lc-rs: hashing, randomness, constant-time
//! comparison.

use aws_lc_rs::{constant_time, digest, hmac, rand};

use crate::alg::{Algorithm, KeyFamily};
use crate::error::KeyError;

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 over several parts, in order, with no separators added.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = Sha256::new();
    for p in parts {
        ctx.update(p);
    }
    ctx.finish()
}

/// SHA-256 of data given in pieces as it streams by (a file being written
/// or read), without holding it all.
pub struct Sha256(digest::Context);

impl Sha256 {
    pub fn new() -> Self {
        Sha256(digest::Context::new(&digest::SHA256))
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.0.finish().as_ref());
        out
    }
}

impl Default for Sha256 {
    fn default() -> Self {
        Sha256::new()
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha256")
    }
}

/// HMAC-SHA-256 of the parts of `message`, in order, under `key`: a MAC
/// for values a server hands out and later takes back (DPoP nonces).
pub fn hmac_sha256(key: &[u8], message: &[&[u8]]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in message {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// The `x5t#S256` thumbprint of a DER-encoded X.509 certificate (RFC 8705
/// §3.1, RFC 7515 §4.1.8): base64url, unpadded, of its SHA-256.
pub fn x5t_s256(cert_der: &[u8]) -> String {
    crate::b64::encode(&sha256(cert_der))
}

/// `N` bytes from the system's cryptographically secure generator.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::fill(&mut out).expect("the system random generator failed");
    out
}

/// `N` random bytes as unpadded base64url text: identifiers (`jti`, client
/// ids) and high-entropy secrets.
pub fn random_text<const N: usize>() -> String {
    crate::b64::encode(&random_bytes::<N>())
}

/// Compares two byte strings in time independent of their contents.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_token_hash_is_the_left_half() {
        // OIDC Core §A.3's example: the access token
        // "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y" has
        // at_hash "77QmUPtjPfzWtF2AnpK9RQ" under RS256.
        assert_eq!(
            oidc_token_hash(
                Algorithm::RS256,
                "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
            ),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
        assert_eq!(oidc_token_hash(Algorithm::ES384, "x").len(), 32);
        assert_eq!(oidc_token_hash(Algorithm::EdDSA, "x").len(), 43);
    }

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 example: SHA-256("abc").
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_parts(&[b"a", b"bc"]), sha256(b"abc"));
    }

    #[test]
    fn hmac_sha256_known_answer() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn random_text_is_base64url_of_n_bytes() {
        let t = random_text::<32>();
        assert_eq!(crate::b64::decode(&t).map(|b| b.len()), Some(32));
        assert_eq!(random_text::<16>().len(), 22);
        assert_ne!(random_text::<16>(), random_text::<16>());
    }

    #[test]
    fn random_differs_and_eq_works() {
        let a = random_bytes::<32>();
        let b = random_bytes::<32>();
        assert_ne!(a, b);
        assert!(constant_time_eq(&a, &a));
        assert!(!constant_time_eq(&a, &b));
        assert!(!constant_time_eq(&a, &a[..31]));
    }
}

/// The digest a signature with `alg` is computed over: SHA-256, -384 or
/// -512 of `message` for RSA and ECDSA (what a device that signs digests,
/// an HSM's `CKM_ECDSA` or a KMS `DIGEST` request, is given). `None` for
/// EdDSA and ML-DSA, which sign the message itself.
pub fn signing_digest(alg: Algorithm, message: &[u8]) -> Option<Vec<u8>> {
    let d = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => &digest::SHA256,
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &digest::SHA384,
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 => &digest::SHA512,
        Algorithm::EdDSA | Algorithm::MlDsa44 | Algorithm::MlDsa65 | Algorithm::MlDsa87 => {
            return None
        }
    };
    Some(digest::digest(d, message).as_ref().to_vec())
}

/// The OIDC hash of a token issued alongside an ID token (`at_hash`,
/// `c_hash`; OIDC Core §3.1.3.6, §3.3.2.11): the left half of the hash of
/// its ASCII text, base64url without padding. The hash is the one of the
/// ID token's `alg` (SHA-256, -384, -512); Ed25519 (`EdDSA`) uses SHA-512
/// (OpenID Connect's errata for EdDSA), and ML-DSA, which names no hash,
/// SHA-256.
pub fn oidc_token_hash(alg: Algorithm, token: &str) -> String {
    use base64::Engine as _;
    let d = match alg {
        Algorithm::RS256
        | Algorithm::PS256
        | Algorithm::ES256
        | Algorithm::MlDsa44
        | Algorithm::MlDsa65
        | Algorithm::MlDsa87 => &digest::SHA256,
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => &digest::SHA384,
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 | Algorithm::EdDSA => {
            &digest::SHA512
        }
    };
    let h = digest::digest(d, token.as_bytes());
    let h = h.as_ref();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&h[..h.len() / 2])
}

/// Converts an ECDSA signature from its DER form (`SEQUENCE { INTEGER r,
/// INTEGER s }`, what X.509 tools and a KMS return) to the JWS form: `r || s`,
/// each left-padded to the curve's size (RFC 7518 §3.4). Strict: minimal
/// lengths and integers, no trailing bytes, `0 < r, s` and each fits the curve.
pub fn ecdsa_der_to_jws(alg: Algorithm, der: &[u8]) -> Result<Vec<u8>, KeyError> {
    let curve = match alg.family() {
        KeyFamily::Ec(c) => c,
        _ => {
            return Err(KeyError::AlgorithmMismatch {
                key: "ECDSA signature".into(),
                alg: alg.name(),
            })
        }
    };
    let bad = || KeyError::Malformed("not a DER ECDSA signature".into());
    let (body, rest) = der_take(der, 0x30).ok_or_else(bad)?;
    if !rest.is_empty() {
        return Err(bad());
    }
    let (r, body) = der_take(body, 0x02).ok_or_else(bad)?;
    let (s, body) = der_take(body, 0x02).ok_or_else(bad)?;
    if !body.is_empty() {
        return Err(bad());
    }
    let len = curve.coordinate_len();
    let mut out = vec![0u8; 2 * len];
    for (i, int) in [r, s].into_iter().enumerate() {
        let v = der_unsigned(int).ok_or_else(bad)?;
        if v.len() > len {
            return Err(bad());
        }
        out[(i + 1) * len - v.len()..(i + 1) * len].copy_from_slice(v);
    }
    Ok(out)
}

/// One DER element with tag `tag`: its contents and what follows it.
/// Definite, minimal lengths only.
fn der_take(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = match first {
        n if n < 0x80 => (n as usize, rest),
        0x81 => {
            let (&n, rest) = rest.split_first()?;
            if n < 0x80 {
                return None;
            }
            (n as usize, rest)
        }
        0x82 => {
            if rest.len() < 2 {
                return None;
            }
            let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            if n < 0x100 {
                return None;
            }
            (n, &rest[2..])
        }
        _ => return None,
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// The magnitude of a positive, minimally encoded DER INTEGER.
fn der_unsigned(int: &[u8]) -> Option<&[u8]> {
    match int {
        [] => None,
        // Negative.
        [b, ..] if b & 0x80 != 0 => None,
        // A leading zero only where the next byte's top bit is set.
        [0, next, ..] if next & 0x80 == 0 => None,
        [0] => None,
        [0, rest @ ..] => Some(rest),
        v => Some(v),
    }
}

#[cfg(test)]
mod der_tests {
    use super::*;

    #[test]
    fn ecdsa_der_converts_to_fixed_width_and_rejects_non_canonical_forms() {
        // r = 0x80 (needs a leading zero), s = 1.
        let der = [0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01];
        let raw = ecdsa_der_to_jws(Algorithm::ES256, &der).unwrap();
        assert_eq!(raw.len(), 64);
        assert_eq!(raw[31], 0x80);
        assert_eq!(raw[63], 0x01);
        assert!(raw[..31].iter().all(|b| *b == 0));
        for bad in [
            &[0x30, 0x06, 0x02, 0x01, 0x80, 0x02, 0x01, 0x01][..], // negative r
            &[0x30, 0x07, 0x02, 0x02, 0x00, 0x01, 0x02, 0x01, 0x01][..], // non-minimal r
            &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x01][..], // r = 0
            &[0x30, 0x07, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01, 0x00][..], // trailing byte
            &[0x30, 0x08, 0x02, 0x02, 0x00, 0x80, 0x02, 0x01, 0x01][..], // length past the end
        ] {
            assert!(ecdsa_der_to_jws(Algorithm::ES256, bad).is_err(), "{bad:?}");
        }
        // An integer wider than the curve.
        let mut wide = vec![0x30, 0x25, 0x02, 0x21, 0x01];
        wide.extend([0u8; 32]);
        wide.extend([0x02, 0x01, 0x01]);
        assert!(ecdsa_der_to_jws(Algorithm::ES256, &wide).is_err());
        assert!(ecdsa_der_to_jws(Algorithm::RS256, &der).is_err());
    }

    #[test]
    fn der_signatures_from_a_real_signer_convert_and_verify() {
        use crate::key::PrivateKey;
        use aws_lc_rs::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_ASN1_SIGNING};
        let key = PrivateKey::generate(Algorithm::ES384, None).unwrap();
        let pkcs8 = key.to_pkcs8_der();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &pkcs8).unwrap();
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for _ in 0..64 {
            let sig = pair.sign(&rng, b"message").unwrap();
            let raw = ecdsa_der_to_jws(Algorithm::ES384, sig.as_ref()).unwrap();
            key.public_key().verify(b"message", &raw).unwrap();
        }
        assert_eq!(signing_digest(Algorithm::ES384, b"m").unwrap().len(), 48);
        assert!(signing_digest(Algorithm::EdDSA, b"m").is_none());
    }
}
