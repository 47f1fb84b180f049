//! Envelope encryption of private key material (DESIGN.md rule 2).
//!
//! Each sealed record gets its own random 256-bit data key. The private key
//! bytes are encrypted under the data key with AES-256-GCM, and the data key is
//! itself encrypted ("wrapped") under the root key. Both layers bind the
//! caller's associated data (keyward uses the record's environment and kid),
//! so a sealed blob moved to another record does not open. Rotating the root
//! key re-wraps data keys only: [`rewrap`].
//!
//! The root key is either 32 bytes held in this process (wrapping is
//! AES-256-GCM here) or a key held by a device ([`KeyWrapper`]: a PKCS#11
//! token's AES key, a KMS symmetric key) that wraps and unwraps data keys
//! without its bytes entering the process. The storage form says which:
//!
//! - `KWS1` (a local root): `"KWS1" || u16_be(60) || wrapped (nonce 12, data
//!   key 32, tag 16) || ciphertext`; the wrapped key is exactly 60 bytes.
//! - `KWS2` (a device root): `"KWS2" || u16_be(n) || wrapped (n bytes, as
//!   the device returned them, 1 ≤ n ≤ 2048) || ciphertext`.
//!
//! The ciphertext is `nonce (12) || AES-256-GCM(data key, content) || tag
//! (16)` in both. A local root never opens a `KWS2` blob and a device root
//! never opens a `KWS1` blob: either is [`SealError::OpenFailed`], as for any
//! wrong key.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::Engine;
use zeroize::{Zeroize, Zeroizing};

use crate::crypto::{hex, random_bytes, sha256_parts};
use crate::error::SealError;

const MAGIC_LOCAL: &[u8; 4] = b"KWS1";
const MAGIC_DEVICE: &[u8; 4] = b"KWS2";
const DEK_AAD_PREFIX: &[u8] = b"keyward-dek-v1\0";
const CONTENT_AAD_PREFIX: &[u8] = b"keyward-key-v1\0";
/// The wrapped data key of a local root: nonce, 32 key bytes, tag.
const LOCAL_WRAPPED_LEN: usize = NONCE_LEN + 32 + 16;
/// The longest wrapped data key a device may return (a KMS ciphertext blob
/// of a 32-byte key is about 200 bytes; a PKCS#11 AES-GCM wrap 60).
pub const MAX_DEVICE_WRAPPED_LEN: usize = 2048;

/// The root key: 32 bytes held in this process, or a key held by a device.
/// Its bytes (for a local key) never appear in `Debug` output; `Debug`
/// shows [`RootKey::key_id`] and [`RootKey::store`] only. Cloning a device
/// root shares the device handle.
#[derive(Clone)]
pub struct RootKey(Kind);

#[derive(Clone)]
enum Kind {
    Local(Zeroizing<[u8; 32]>),
    Device(Arc<dyn KeyWrapper>),
}

impl RootKey {
    /// A fresh random local root key.
    pub fn generate() -> Self {
        RootKey(Kind::Local(Zeroizing::new(random_bytes::<32>())))
    }

    /// A local root key from exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let arr: [u8; 32] = bytes.try_into().map_err(|_| {
            SealError::BadRootKey(format!("expected 32 bytes, got {}", bytes.len()))
        })?;
        Ok(RootKey(Kind::Local(Zeroizing::new(arr))))
    }

    /// A local root key from its base64 text (standard or URL-safe alphabet,
    /// padding optional, surrounding white space ignored).
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

    /// A root key held by a device: data keys are wrapped and unwrapped by
    /// `wrapper`, and sealed blobs take the `KWS2` form.
    pub fn device(wrapper: Arc<dyn KeyWrapper>) -> Self {
        RootKey(Kind::Device(wrapper))
    }

    /// The key as standard base64, for writing it to its file once; `None`
    /// for a device root, whose bytes this process never has.
    pub fn to_base64(&self) -> Option<Zeroizing<String>> {
        match &self.0 {
            Kind::Local(k) => Some(Zeroizing::new(
                base64::engine::general_purpose::STANDARD.encode(k.as_ref()),
            )),
            Kind::Device(_) => None,
        }
    }

    /// A public identifier of this key (16 hex digits), stored beside sealed
    /// data to tell a wrong root key apart from corrupted data: for a local
    /// key a domain-separated SHA-256 of its bytes, for a device key
    /// [`KeyWrapper::key_id`] (derived from its reference).
    pub fn key_id(&self) -> String {
        match &self.0 {
            Kind::Local(k) => {
                let h = sha256_parts(&[b"keyward-root-key-id-v1\0", k.as_ref()]);
                hex(&h[..8])
            }
            Kind::Device(w) => w.key_id(),
        }
    }

    /// Where the key lives: `local`, or the device's store (`pkcs11`,
    /// `aws-kms`).
    pub fn store(&self) -> &'static str {
        match &self.0 {
            Kind::Local(_) => "local",
            Kind::Device(w) => w.store(),
        }
    }

    /// How to find a device root again (`pkcs11:<label>`,
    /// `aws-kms:<key ARN>`); `None` for a local key.
    pub fn reference(&self) -> Option<String> {
        match &self.0 {
            Kind::Local(_) => None,
            Kind::Device(w) => Some(w.reference()),
        }
    }

    /// Whether the key is held by a device.
    pub fn is_device(&self) -> bool {
        matches!(self.0, Kind::Device(_))
    }

    /// Wraps a data key: the wrapped bytes and the storage form's magic.
    fn wrap(&self, aad: &[u8], dek: &[u8]) -> Result<(Form, Vec<u8>), SealError> {
        let aad = labelled(DEK_AAD_PREFIX, aad);
        match &self.0 {
            Kind::Local(k) => Ok((Form::Local, encrypt(&aes_key(k.as_ref()), &aad, dek))),
            Kind::Device(w) => {
                let wrapped = w.wrap(&aad, dek)?;
                if wrapped.is_empty() || wrapped.len() > MAX_DEVICE_WRAPPED_LEN {
                    return Err(SealError::BadRootKey(format!(
                        "the {} root key returned a wrapped data key of {} bytes (expected 1 to {MAX_DEVICE_WRAPPED_LEN})",
                        w.store(),
                        wrapped.len()
                    )));
                }
                // A device that answers garbage must not leave a key that
                // never opens again: unwrap what it gave before using it.
                let back = w.unwrap(&aad, &wrapped).map_err(|e| match e {
                    SealError::OpenFailed | SealError::Malformed => SealError::BadRootKey(format!(
                        "the {} root key does not unwrap the data key it just wrapped",
                        w.store()
                    )),
                    other => other,
                })?;
                if back.as_slice() != dek {
                    return Err(SealError::BadRootKey(format!(
                        "the {} root key unwrapped another data key than it wrapped",
                        w.store()
                    )));
                }
                Ok((Form::Device, wrapped))
            }
        }
    }

    /// Unwraps the data key of `sealed`; [`SealError::OpenFailed`] when it
    /// was wrapped by another key (or another kind of key) or altered.
    fn unwrap(&self, aad: &[u8], sealed: &SealedKey) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let aad = labelled(DEK_AAD_PREFIX, aad);
        let dek = match (&self.0, sealed.form) {
            (Kind::Local(k), Form::Local) => {
                decrypt(&aes_key(k.as_ref()), &aad, &sealed.wrapped_key)?
            }
            (Kind::Device(w), Form::Device) => w.unwrap(&aad, &sealed.wrapped_key)?,
            _ => return Err(SealError::OpenFailed),
        };
        if dek.len() != 32 {
            return Err(SealError::Malformed);
        }
        Ok(dek)
    }
}

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootKey(id={}, store={})", self.key_id(), self.store())
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

/// Which storage form a sealed key takes: who wrapped its data key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `KWS1`: a local root key.
    Local,
    /// `KWS2`: a device root key.
    Device,
}

/// A sealed private key: the wrapped data key and the encrypted key bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedKey {
    form: Form,
    wrapped_key: Vec<u8>,
    ciphertext: Vec<u8>,
}

impl fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SealedKey({}, {} bytes)",
            self.store_kind(),
            self.wrapped_key.len() + self.ciphertext.len()
        )
    }
}

impl SealedKey {
    /// The storage form (see the module documentation): the magic (`KWS1`
    /// or `KWS2`), the wrapped key's length (u16 big-endian), the wrapped
    /// key, then the ciphertext.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6 + self.wrapped_key.len() + self.ciphertext.len());
        out.extend_from_slice(match self.form {
            Form::Local => MAGIC_LOCAL,
            Form::Device => MAGIC_DEVICE,
        });
        // Bounded by construction: 60, or at most MAX_DEVICE_WRAPPED_LEN.
        out.extend_from_slice(&(self.wrapped_key.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.wrapped_key);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses the storage form strictly: a known magic, a wrapped-key
    /// length that is exactly 60 (`KWS1`) or 1 to
    /// [`MAX_DEVICE_WRAPPED_LEN`] (`KWS2`) and present in full, and a
    /// ciphertext of at least a nonce and a tag.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        let (form, rest) = if let Some(rest) = bytes.strip_prefix(MAGIC_LOCAL.as_slice()) {
            (Form::Local, rest)
        } else if let Some(rest) = bytes.strip_prefix(MAGIC_DEVICE.as_slice()) {
            (Form::Device, rest)
        } else {
            return Err(SealError::Malformed);
        };
        if rest.len() < 2 {
            return Err(SealError::Malformed);
        }
        let n = u16::from_be_bytes([rest[0], rest[1]]) as usize;
        let rest = &rest[2..];
        let length_ok = match form {
            Form::Local => n == LOCAL_WRAPPED_LEN,
            Form::Device => (1..=MAX_DEVICE_WRAPPED_LEN).contains(&n),
        };
        if !length_ok || rest.len() < n {
            return Err(SealError::Malformed);
        }
        let (wrapped, ct) = rest.split_at(n);
        if ct.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        Ok(SealedKey {
            form,
            wrapped_key: wrapped.to_vec(),
            ciphertext: ct.to_vec(),
        })
    }

    /// `local` when a local root key wrapped its data key (`KWS1`),
    /// `device` when a device did (`KWS2`).
    pub fn store_kind(&self) -> &'static str {
        match self.form {
            Form::Local => "local",
            Form::Device => "device",
        }
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

/// Seals `plaintext` under a fresh data key wrapped by `root`, binding
/// `aad`. Fails only for a device root: [`SealError::Unavailable`] when the
/// device cannot be used now, [`SealError::BadRootKey`] when what it
/// returns does not unwrap to the data key (checked before it is used).
pub fn seal(root: &RootKey, aad: &[u8], plaintext: &[u8]) -> Result<SealedKey, SealError> {
    let dek = Zeroizing::new(random_bytes::<32>());
    let (form, wrapped_key) = root.wrap(aad, dek.as_ref())?;
    let ciphertext = encrypt(
        &aes_key(dek.as_ref()),
        &labelled(CONTENT_AAD_PREFIX, aad),
        plaintext,
    );
    Ok(SealedKey {
        form,
        wrapped_key,
        ciphertext,
    })
}

/// Opens a sealed key. Fails with [`SealError::OpenFailed`] for a wrong root
/// key (also a local key for a device-wrapped blob and the other way
/// round), wrong associated data or tampered bytes (indistinguishable by
/// design), and with [`SealError::Unavailable`] when a device root cannot be
/// used now.
pub fn open(
    root: &RootKey,
    aad: &[u8],
    sealed: &SealedKey,
) -> Result<Zeroizing<Vec<u8>>, SealError> {
    let dek = root.unwrap(aad, sealed)?;
    decrypt(
        &aes_key(&dek),
        &labelled(CONTENT_AAD_PREFIX, aad),
        &sealed.ciphertext,
    )
}

/// Re-wraps the data key of `sealed` from `old` to `new` (either local or in
/// a device, in any combination); the encrypted key bytes are untouched.
/// The content is opened first, so a blob that `old` does not fully open is
/// never re-wrapped. Afterwards `old` no longer opens the result.
pub fn rewrap(
    old: &RootKey,
    new: &RootKey,
    aad: &[u8],
    sealed: &SealedKey,
) -> Result<SealedKey, SealError> {
    let dek = old.unwrap(aad, sealed)?;
    // Prove the content opens before committing to the new wrapping.
    decrypt(
        &aes_key(&dek),
        &labelled(CONTENT_AAD_PREFIX, aad),
        &sealed.ciphertext,
    )?;
    let (form, wrapped_key) = new.wrap(aad, &dek)?;
    Ok(SealedKey {
        form,
        wrapped_key,
        ciphertext: sealed.ciphertext.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A stand-in device root: AES-GCM under its own local key, with
    /// failure and garbage switches and call counters.
    struct FakeDevice {
        name: &'static str,
        key: RootKey,
        down: AtomicBool,
        /// When set, `wrap` answers these bytes.
        answer: Mutex<Option<Vec<u8>>>,
        wraps: AtomicUsize,
        unwraps: AtomicUsize,
    }

    impl FakeDevice {
        fn new(name: &'static str) -> Arc<FakeDevice> {
            Arc::new(FakeDevice {
                name,
                key: RootKey::generate(),
                down: AtomicBool::new(false),
                answer: Mutex::new(None),
                wraps: AtomicUsize::new(0),
                unwraps: AtomicUsize::new(0),
            })
        }
        fn root(self: &Arc<Self>) -> RootKey {
            RootKey::device(self.clone())
        }
        fn check(&self) -> Result<(), SealError> {
            if self.down.load(Ordering::SeqCst) {
                Err(SealError::Unavailable {
                    store: "pkcs11",
                    reason: "pin",
                    detail: "login refused".into(),
                })
            } else {
                Ok(())
            }
        }
    }

    impl KeyWrapper for FakeDevice {
        fn key_id(&self) -> String {
            hex(&sha256_parts(&[b"fake\0", self.name.as_bytes()])[..8])
        }
        fn store(&self) -> &'static str {
            "pkcs11"
        }
        fn reference(&self) -> String {
            format!("pkcs11:{}", self.name)
        }
        fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError> {
            self.check()?;
            self.wraps.fetch_add(1, Ordering::SeqCst);
            if let Some(a) = self.answer.lock().unwrap().clone() {
                return Ok(a);
            }
            Ok(seal(&self.key, aad, data_key)?.to_bytes())
        }
        fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
            self.check()?;
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            open(&self.key, aad, &SealedKey::from_bytes(wrapped)?)
        }
    }

    #[test]
    fn seal_open_round_trip_and_binding() {
        let root = RootKey::generate();
        let s = seal(&root, b"prod\0k1", b"secret key bytes").unwrap();
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
    fn local_roots_keep_the_kws1_form_exactly() {
        let root = RootKey::generate();
        let blob = seal(&root, b"a", b"0123456789").unwrap().to_bytes();
        assert_eq!(&blob[..4], b"KWS1");
        assert_eq!(&blob[4..6], &60u16.to_be_bytes());
        // magic, length, wrapped key (60), nonce + 10 bytes + tag.
        assert_eq!(blob.len(), 4 + 2 + 60 + 12 + 10 + 16);
        assert_eq!(SealedKey::from_bytes(&blob).unwrap().store_kind(), "local");
    }

    #[test]
    fn sealed_bytes_do_not_contain_plaintext() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let device = FakeDevice::new("root");
        for root in [RootKey::generate(), device.root()] {
            let blob = seal(&root, b"a", secret).unwrap().to_bytes();
            assert!(!blob.windows(8).any(|w| secret.windows(8).any(|s| s == w)));
        }
    }

    #[test]
    fn device_roots_seal_in_the_kws2_form_and_open_only_there() {
        let device = FakeDevice::new("root");
        let root = device.root();
        let s = seal(&root, b"prod\0k1", b"device sealed").unwrap();
        let blob = s.to_bytes();
        assert_eq!(&blob[..4], b"KWS2");
        assert_eq!(s.store_kind(), "device");
        let n = u16::from_be_bytes([blob[4], blob[5]]) as usize;
        assert_eq!(n, s.wrapped_key.len());
        let parsed = SealedKey::from_bytes(&blob).unwrap();
        assert_eq!(parsed, s);
        assert_eq!(
            open(&root, b"prod\0k1", &parsed).unwrap().as_slice(),
            b"device sealed"
        );
        // Wrapped once, checked by one unwrap, opened by one more.
        assert_eq!(device.wraps.load(Ordering::SeqCst), 1);
        assert_eq!(device.unwraps.load(Ordering::SeqCst), 2);
        // Wrong aad, another device key, a local key: none opens it.
        assert_eq!(
            open(&root, b"prod\0k2", &s).unwrap_err(),
            SealError::OpenFailed
        );
        let other = FakeDevice::new("other").root();
        assert_eq!(
            open(&other, b"prod\0k1", &s).unwrap_err(),
            SealError::OpenFailed
        );
        assert_eq!(
            open(&RootKey::generate(), b"prod\0k1", &s).unwrap_err(),
            SealError::OpenFailed
        );
        // And a device root does not open a local blob.
        let local = seal(&RootKey::generate(), b"prod\0k1", b"x").unwrap();
        assert_eq!(
            open(&root, b"prod\0k1", &local).unwrap_err(),
            SealError::OpenFailed
        );
        // A tampered wrapped key or ciphertext does not open.
        for at in [7, blob.len() - 1] {
            let mut t = blob.clone();
            t[at] ^= 1;
            let t = SealedKey::from_bytes(&t).unwrap();
            assert!(open(&root, b"prod\0k1", &t).is_err());
        }
    }

    #[test]
    fn a_device_that_is_down_fails_every_operation_with_unavailable() {
        let device = FakeDevice::new("root");
        let root = device.root();
        let s = seal(&root, b"a", b"pk").unwrap();
        device.down.store(true, Ordering::SeqCst);
        let unavailable = |e: SealError| matches!(e, SealError::Unavailable { reason: "pin", .. });
        assert!(unavailable(seal(&root, b"a", b"pk").unwrap_err()));
        assert!(unavailable(open(&root, b"a", &s).unwrap_err()));
        let local = RootKey::generate();
        assert!(unavailable(rewrap(&root, &local, b"a", &s).unwrap_err()));
        let l = seal(&local, b"a", b"pk").unwrap();
        assert!(unavailable(rewrap(&local, &root, b"a", &l).unwrap_err()));
        device.down.store(false, Ordering::SeqCst);
        assert_eq!(open(&root, b"a", &s).unwrap().as_slice(), b"pk");
    }

    #[test]
    fn a_device_answer_that_does_not_unwrap_is_refused_before_use() {
        let device = FakeDevice::new("root");
        let root = device.root();
        for answer in [
            vec![],
            vec![7u8; MAX_DEVICE_WRAPPED_LEN + 1],
            vec![7u8; 100], // garbage that does not unwrap
            seal(&RootKey::generate(), b"x", &[0u8; 32])
                .unwrap()
                .to_bytes(), // another key's wrapping
        ] {
            *device.answer.lock().unwrap() = Some(answer.clone());
            let e = seal(&root, b"a", b"pk").unwrap_err();
            assert!(
                matches!(e, SealError::BadRootKey(_)),
                "{} bytes: {e:?}",
                answer.len()
            );
            let l = RootKey::generate();
            let s = seal(&l, b"a", b"pk").unwrap();
            assert!(matches!(
                rewrap(&l, &root, b"a", &s).unwrap_err(),
                SealError::BadRootKey(_)
            ));
        }
    }

    #[test]
    fn rewrap_moves_between_every_kind_of_root() {
        let d1 = FakeDevice::new("one");
        let d2 = FakeDevice::new("two");
        let roots = [
            ("local-a", RootKey::generate()),
            ("local-b", RootKey::generate()),
            ("device-1", d1.root()),
            ("device-2", d2.root()),
        ];
        for (from_name, old) in &roots {
            for (to_name, new) in &roots {
                if from_name == to_name {
                    continue;
                }
                let s = seal(old, b"aad", b"pk").unwrap();
                let r = rewrap(old, new, b"aad", &s).unwrap();
                assert_eq!(
                    r.store_kind(),
                    if new.is_device() { "device" } else { "local" }
                );
                let r = SealedKey::from_bytes(&r.to_bytes()).unwrap();
                assert_eq!(
                    open(new, b"aad", &r).unwrap().as_slice(),
                    b"pk",
                    "{from_name} -> {to_name}"
                );
                assert_eq!(
                    open(old, b"aad", &r).unwrap_err(),
                    SealError::OpenFailed,
                    "{from_name} -> {to_name}: the old root still opens"
                );
                assert_eq!(r.ciphertext, s.ciphertext);
                // Only the root that sealed it can re-wrap it.
                assert_eq!(
                    rewrap(new, old, b"aad", &s).unwrap_err(),
                    SealError::OpenFailed
                );
            }
        }
    }

    #[test]
    fn rewrap_opens_the_content_before_asking_the_new_root() {
        let old = RootKey::generate();
        let device = FakeDevice::new("new");
        let new = device.root();
        let s = seal(&old, b"aad", b"pk").unwrap();
        let mut blob = s.to_bytes();
        let last = blob.len() - 1;
        blob[last] ^= 1; // the content, not the wrapped key
        let tampered = SealedKey::from_bytes(&blob).unwrap();
        assert_eq!(
            rewrap(&old, &new, b"aad", &tampered).unwrap_err(),
            SealError::OpenFailed
        );
        assert_eq!(device.wraps.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn every_malformed_storage_form_is_refused() {
        let ct = [0u8; NONCE_LEN + 16];
        let form = |magic: &[u8], len: u16, wrapped: usize, ct_len: usize| {
            let mut v = magic.to_vec();
            v.extend_from_slice(&len.to_be_bytes());
            v.extend(std::iter::repeat_n(1u8, wrapped));
            v.extend(std::iter::repeat_n(2u8, ct_len));
            v
        };
        let ok_local = form(b"KWS1", 60, 60, ct.len());
        let ok_device_min = form(b"KWS2", 1, 1, ct.len());
        let ok_device_max = form(b"KWS2", 2048, 2048, ct.len());
        for ok in [&ok_local, &ok_device_min, &ok_device_max] {
            let p = SealedKey::from_bytes(ok).unwrap();
            assert_eq!(&p.to_bytes(), ok);
        }
        let bad: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("short magic", b"KWS".to_vec()),
            ("unknown magic", form(b"KWS3", 60, 60, ct.len())),
            ("lower-case magic", form(b"kws1", 60, 60, ct.len())),
            ("no length", b"KWS1".to_vec()),
            ("half a length", b"KWS2\x00".to_vec()),
            ("KWS1 wrapped 59", form(b"KWS1", 59, 59, ct.len())),
            ("KWS1 wrapped 61", form(b"KWS1", 61, 61, ct.len())),
            ("KWS1 wrapped cut", form(b"KWS1", 60, 30, 0)),
            ("KWS1 content short", form(b"KWS1", 60, 60, ct.len() - 1)),
            ("KWS1 no content", form(b"KWS1", 60, 60, 0)),
            ("KWS2 wrapped 0", form(b"KWS2", 0, 0, ct.len())),
            ("KWS2 wrapped 2049", form(b"KWS2", 2049, 2049, ct.len())),
            ("KWS2 wrapped 65535", form(b"KWS2", u16::MAX, 100, ct.len())),
            ("KWS2 wrapped cut", form(b"KWS2", 200, 199, 0)),
            ("KWS2 content short", form(b"KWS2", 100, 100, ct.len() - 1)),
            ("KWS2 no content", form(b"KWS2", 100, 100, 0)),
        ];
        for (what, bytes) in bad {
            assert_eq!(
                SealedKey::from_bytes(&bytes).unwrap_err(),
                SealError::Malformed,
                "{what}"
            );
        }
    }

    #[test]
    fn root_key_text_and_debug() {
        let k = RootKey::generate();
        let text = k.to_base64().unwrap();
        let again = RootKey::from_base64(&format!("  {}\n", text.as_str())).unwrap();
        assert_eq!(k.key_id(), again.key_id());
        let dbg = format!("{k:?}");
        assert!(!dbg.contains(text.as_str()));
        assert_eq!(dbg, format!("RootKey(id={}, store=local)", k.key_id()));
        assert_eq!(
            (k.store(), k.reference(), k.is_device()),
            ("local", None, false)
        );
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

    #[test]
    fn device_roots_have_no_text_and_show_id_and_store_only() {
        let device = FakeDevice::new("label-1");
        let root = device.root();
        assert!(root.to_base64().is_none());
        assert_eq!(root.key_id(), device.key_id());
        assert_eq!(root.reference().as_deref(), Some("pkcs11:label-1"));
        assert_eq!(root.store(), "pkcs11");
        assert!(root.is_device());
        let dbg = format!("{root:?}");
        assert_eq!(
            dbg,
            format!("RootKey(id={}, store=pkcs11)", device.key_id())
        );
        let inner = device.key.to_base64().unwrap();
        assert!(!dbg.contains(inner.as_str()));
        // A clone shares the device.
        let c = root.clone();
        seal(&c, b"a", b"b").unwrap();
        assert_eq!(device.wraps.load(Ordering::SeqCst), 1);
    }
}
