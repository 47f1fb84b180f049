//! Envelope encryption of private key material (DESIGN.md rule 2).
//!
//! Each sealed record gets its own random 256-bit data key. The private key
//! bytes are encrypted under the data key with AES-256-GCM, and the data key is
//! itself encrypted ("wrapped") under the root key with AES-256-GCM. Both
//! layers bind the caller's associated data (keyward uses the record's
//! environment and kid), so a sealed blob moved to another record does not
//! open. Rotating the root key re-wraps data keys only: [`rewrap`].

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{hex, random_bytes, sha256_parts};
use crate::error::SealError;

const MAGIC: &[u8; 4] = b"KWS1";
const DEK_AAD_PREFIX: &[u8] = b"keyward-dek-v1\0";
const CONTENT_AAD_PREFIX: &[u8] = b"keyward-key-v1\0";

/// The 256-bit key that wraps every data key. Its bytes never appear in
/// `Debug` output; [`RootKey::key_id`] names it safely.
pub struct RootKey(Zeroizing<[u8; 32]>);

impl RootKey {
    /// A fresh random root key.
    pub fn generate() -> Self {
        RootKey(Zeroizing::new(random_bytes::<32>()))
    }

    /// A root key from exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            SealError::BadRootKey(format!("expected 32 bytes, got {}", bytes.len()))
        })?;
        Ok(RootKey(Zeroizing::new(arr)))
    }

    /// A root key from its base64 text (standard or URL-safe alphabet, padding
    /// optional, surrounding white space ignored).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let t = text.trim();
        let cfg = base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent);
        let std = base64::engine::GeneralPurpose::new(&base64::alphabet::STANDARD, cfg);
        let url = base64::engine::GeneralPurpose::new(&base64::alphabet::URL_SAFE, cfg);
        let mut bytes = std
            .decode(t)
            .or_else(|_| url.decode(t))
            .map_err(|_| SealError::BadRootKey("not valid base64".into()))?;
        let key = RootKey::from_bytes(&bytes);
        bytes.zeroize();
        key
    }

    /// The key as standard base64, for writing it to its file once.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0.as_ref()))
    }

    /// A public identifier of this key (16 hex digits of a domain-separated
    /// SHA-256), stored beside sealed data to tell a wrong root key apart from
    /// corrupted data.
    pub fn key_id(&self) -> String {
        let h = sha256_parts(&[b"keyward-root-key-id-v1\0", self.0.as_ref()]);
        hex(&h[..8])
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(id={})", self.key_id())
    }
}

/// A root key held by a device (a PKCS#11 token's AES key, a KMS symmetric
/// key): it wraps and unwraps data keys without its bytes ever entering
/// this process. Implemented by keyward-signers; calls block on the device
/// for a bounded time.
pub trait KeyWrapper: Send + Sync {
    /// A public identifier of the key (16 hex digits), the same in every
    /// process that reaches the same device key: derived from its stable
    /// reference, never from key bytes.
    fn key_id(&self) -> String;
    /// The store it lives in: `pkcs11` or `aws-kms`.
    fn store(&self) -> &'static str;
    /// How to find it again, recorded in the database: `pkcs11:<label>`,
    /// `aws-kms:<key ARN>`. Holds no secret.
    fn reference(&self) -> String;
    /// Encrypts a 32-byte data key, binding `aad`.
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError>;
    /// Decrypts what [`KeyWrapper::wrap`] returned for the same `aad`;
    /// [`SealError::OpenFailed`] when it was wrapped by another key or altered.
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
}

/// A sealed private key: the wrapped data key and the encrypted key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    wrapped_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedKey({} bytes)",
            self.wrapped_key.len() + self.ciphertext.len()
        )
    }
}

impl SealedKey {
    /// The storage form: `KWS1`, the wrapped key's length (u16 big-endian),
    /// the wrapped key, then the ciphertext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.wrapped_key.len() + self.ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.wrapped_key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses the storage form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let rest = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or(SealError::Malformed)?;
        if rest.len() < 2 {
            return Err(SealError::Malformed);
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        if rest.len() < n || n != NONCE_LEN + 32 + 16 {
            return Err(SealError::Malformed);
        }
        let (wrapped, ct) = rest.split_at(n);
        if ct.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        Ok(SealedKey {
            wrapped_key: wrapped.to_vec(),
            ciphertext: ct.to_vec(),
        })
    }
}

fn aes_key(bytes: &[u8]) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("32-byte AES-256 key"))
}

fn labelled(prefix: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(prefix.len() + aad.len());
    v.extend_from_slice(prefix);
    v.extend_from_slice(aad);
    v
}

fn encrypt(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let nonce_bytes = random_bytes::<NONCE_LEN>();
    let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
    buf.extend_from_slice(&nonce_bytes);
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce_bytes),
        Aad::from(aad),
        &mut body,
    )
    .expect("AES-GCM seal of a bounded buffer");
    buf.extend_from_slice(&body);
    body.zeroize();
    buf
}

fn decrypt(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.len() < NONCE_LEN + 16 {
        return Err(SealError::Malformed);
    }
    let (nonce, body) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Malformed)?;
    let mut buf = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), buf.as_mut_slice())
        .map_err(|_| SealError::OpenFailed)?
        .len();
    buf.truncate(len);
    Ok(buf)
}

/// Seals `plaintext` under a fresh data key wrapped by `root`, binding `aad`.
pub fn seal(root: &RootKey, aad: &[u8], plaintext: &[u8]) -> SealedKey {
    let dek = Zeroizing::new(random_bytes::<32>());
    let ciphertext = encrypt(
        &aes_key(dek.as_ref()),
        &labelled(CONTENT_AAD_PREFIX, aad),
        plaintext,
    );
    let wrapped_key = encrypt(
        &aes_key(root.0.as_ref()),
        &labelled(DEK_AAD_PREFIX, aad),
        dek.as_ref(),
    );
    SealedKey {
        wrapped_key,
        ciphertext,
    }
}

fn unwrap_dek(
    root: &RootKey,
    aad: &[u8],
    sealed: &SealedKey,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let dek = decrypt(
        &aes_key(root.0.as_ref()),
        &labelled(DEK_AAD_PREFIX, aad),
        &sealed.wrapped_key,
    )?;
    if dek.len() != 32 {
        return Err(SealError::Malformed);
    }
    Ok(dek)
}

/// Opens a sealed key. Fails with [`SealError::OpenFailed`] for a wrong root
/// key, wrong associated data or tampered bytes (indistinguishable by design).
pub fn open(
    root: &RootKey,
    aad: &[u8],
    sealed: &SealedKey,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let dek = unwrap_dek(root, aad, sealed)?;
    decrypt(
        &aes_key(&dek),
        &labelled(CONTENT_AAD_PREFIX, aad),
        &sealed.ciphertext,
    )
}

/// Re-wraps the data key of `sealed` from `old` to `new`; the encrypted key
/// bytes are untouched. Afterwards `old` no longer opens the result.
pub fn rewrap(
    old: &RootKey,
    new: &RootKey,
    aad: &[u8],
    sealed: &SealedKey,
) -> Result<SealedKey, SealError> {
    let dek = unwrap_dek(old, aad, sealed)?;
    // Prove the content opens before committing to the new wrapping.
    decrypt(
        &aes_key(&dek),
        &labelled(CONTENT_AAD_PREFIX, aad),
        &sealed.ciphertext,
    )?;
    Ok(SealedKey {
        wrapped_key: encrypt(
            &aes_key(new.0.as_ref()),
            &labelled(DEK_AAD_PREFIX, aad),
            &dek,
        ),
        ciphertext: sealed.ciphertext.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_binding() {
        let root = RootKey::generate();
        let s = seal(&root, b"prod\0k1", b"secret key bytes");
        assert_eq!(
            open(&root, b"prod\0k1", &s).unwrap().as_slice(),
            b"secret key bytes"
        );
        assert!(matches!(
            open(&root, b"prod\0k2", &s),
            Err(SealError::OpenFailed)
        ));
        assert!(matches!(
            open(&RootKey::generate(), b"prod\0k1", &s),
            Err(SealError::OpenFailed)
        ));
        let parsed = SealedKey::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(parsed, s);
        let mut tampered = s.to_bytes();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let t = SealedKey::from_bytes(&tampered).unwrap();
        assert!(matches!(
            open(&root, b"prod\0k1", &t),
            Err(SealError::OpenFailed)
        ));
    }

    #[test]
    fn sealed_bytes_do_not_contain_plaintext() {
        let root = RootKey::generate();
        let secret = b"0123456789abcdef0123456789abcdef";
        let blob = seal(&root, b"a", secret).to_bytes();
        assert!(!blob.windows(8).any(|w| secret.windows(8).any(|s| s == w)));
    }

    #[test]
    fn rewrap_moves_to_new_root() {
        let old = RootKey::generate();
        let new = RootKey::generate();
        let s = seal(&old, b"aad", b"pk");
        let r = rewrap(&old, &new, b"aad", &s).unwrap();
        assert_eq!(open(&new, b"aad", &r).unwrap().as_slice(), b"pk");
        assert!(matches!(open(&old, b"aad", &r), Err(SealError::OpenFailed)));
        assert_eq!(
            rewrap(&new, &old, b"aad", &s).unwrap_err(),
            SealError::OpenFailed
        );
    }

    #[test]
    fn root_key_text_and_debug() {
        let k = RootKey::generate();
        let again = RootKey::from_base64(&format!("  {}\n", k.to_base64().as_str())).unwrap();
        assert_eq!(k.key_id(), again.key_id());
        assert!(!format!("{k:?}").contains(k.to_base64().as_str()));
        assert!(matches!(
            RootKey::from_base64("c2hvcnQ="),
            Err(SealError::BadRootKey(m)) if m == "expected 32 bytes, got 5"
        ));
        assert!(matches!(
            RootKey::from_base64("!!!"),
            Err(SealError::BadRootKey(m)) if m == "not valid base64"
        ));
        assert_eq!(
            SealedKey::from_bytes(b"nope").unwrap_err(),
            SealError::Malformed
        );
    }
}
