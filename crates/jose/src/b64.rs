//! Canonical unpadded base64url (RFC 7515 §2): no padding, no white space, no
//! non-zero trailing bits. Anything else is refused.
//!
//! On base64-simd (AVX2/SSE4.1/NEON chosen at run time): decoding a token's
//! three segments is the largest cost of verification after the signature
//! itself, and this decoder takes a quarter of the instructions of a scalar
//! one. Its strict (non-"forgiving") mode is exactly the canonical form; the
//! tests below hold it to the `base64` crate's strict engine.

use std::mem::MaybeUninit;

use base64_simd::{Out, URL_SAFE_NO_PAD};

/// Encodes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode_to_string(bytes)
}

/// Appends the unpadded base64url of `bytes` to `out`.
pub(crate) fn encode_into(bytes: &[u8], out: &mut String) {
    URL_SAFE_NO_PAD.encode_append(bytes, out);
}

/// The length of the unpadded base64url of `n` bytes.
pub(crate) const fn encoded_len(n: usize) -> usize {
    URL_SAFE_NO_PAD.encoded_length(n)
}

/// Decodes canonical unpadded base64url; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode_to_vec(text).ok()
}

/// Decodes canonical unpadded base64url and hands the bytes to `f`: on the
/// stack (never zeroed first) when they fit in `N` bytes, else in a new `Vec`.
/// `None` for non-canonical input.
pub(crate) fn with_decoded<const N: usize, R>(text: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if URL_SAFE_NO_PAD.estimated_decoded_length(text.len()) <= N {
        let mut buf = [const { MaybeUninit::<u8>::uninit() }; N];
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes(), Out::from_uninit_slice(&mut buf))
            .ok()?;
        Some(f(bytes))
    } else {
        decode(text).map(|v| f(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as SCALAR;
    use base64::Engine;
    use proptest::prelude::*;

    #[test]
    fn with_decoded_stack_and_heap_agree() {
        for len in [0usize, 1, 2, 3, 47, 48, 49, 200] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let text = encode(&bytes);
            assert_eq!(
                with_decoded::<48, _>(&text, <[u8]>::to_vec),
                Some(bytes.clone())
            );
            assert_eq!(with_decoded::<256, _>(&text, <[u8]>::to_vec), Some(bytes));
        }
        for bad in ["AQAB=", "AQ AB", "AQ+B", "AB", "A"] {
            assert_eq!(with_decoded::<48, _>(bad, |_| ()), None, "{bad}");
            assert_eq!(with_decoded::<0, _>(bad, |_| ()), None, "{bad}");
        }
    }

    #[test]
    fn canonical_only() {
        assert_eq!(decode("AQAB").unwrap(), vec![1, 0, 1]);
        assert!(decode("AQAB=").is_none(), "padding");
        assert!(decode("AQ AB").is_none(), "space");
        assert!(decode("AQ+B").is_none(), "standard alphabet");
        // "AB" encodes one byte with 4 trailing bits that must be zero: "AA" is canonical, "AB" is not.
        assert!(decode("AA").is_some());
        assert!(decode("AB").is_none(), "non-zero trailing bits");
        assert!(decode("AAB").is_none(), "non-zero trailing bits");
        assert!(decode("A").is_none(), "impossible length");
        // A bad byte in every position of a vector-sized run is found (0x80
        // and 0xff become U+FFFD's three bytes: a text is always UTF-8).
        let good = encode(&[0x5a; 300]);
        for i in 0..good.len() {
            for bad in [b'=', b'+', b'/', b' ', b'\n', 0, 0x80, 0xff] {
                let mut t = good.clone().into_bytes();
                t[i] = bad;
                let t = String::from_utf8_lossy(&t).into_owned();
                assert!(decode(&t).is_none(), "byte {bad:#x} at {i}");
                assert!(with_decoded::<1024, _>(&t, |_| ()).is_none());
            }
        }
    }

    #[test]
    fn encode_into_appends_what_encode_writes() {
        for len in [0usize, 1, 2, 3, 64, 300, 4627] {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 31) as u8).collect();
            let mut out = String::from("head.");
            encode_into(&bytes, &mut out);
            assert_eq!(out, format!("head.{}", encode(&bytes)));
            assert_eq!(encoded_len(len), encode(&bytes).len());
        }
    }

    proptest! {
        /// Same answer as the `base64` crate's strict engine on any text made
        /// of base64url characters and a few intruders, at every length.
        #[test]
        fn agrees_with_the_scalar_strict_decoder(
            text in "[A-Za-z0-9_\\-]{0,200}[=+/ .A-Za-z0-9_\\-]{0,3}[A-Za-z0-9_\\-]{0,90}"
        ) {
            let want = SCALAR.decode(&text).ok();
            prop_assert_eq!(decode(&text), want.clone());
            prop_assert_eq!(with_decoded::<512, _>(&text, <[u8]>::to_vec), want);
        }

        #[test]
        fn round_trips(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let text = encode(&bytes);
            prop_assert_eq!(&text, &SCALAR.encode(&bytes));
            prop_assert_eq!(decode(&text), Some(bytes));
        }
    }
}
