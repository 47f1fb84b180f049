//! Small cryptographic helpers other crates need, so that this crate stays the
//! only one that touches aws-lc-rs: hashing, randomness, constant-time
//! comparison.

use aws_lc_rs::{constant_time, digest, rand};

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-256 over several parts, in order, with no separators added.
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
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
    fn sha256_known_answer() {
        // FIPS 180-2 example: SHA-256("abc").
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sha256_parts(&[b"a", b"bc"]), sha256(b"abc"));
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
