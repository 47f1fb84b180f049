//! Canonical unpadded base64url (RFC 7515 §2): no padding, no white space, no
//! non-zero trailing bits. Anything else is refused.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Encodes as unpadded base64url.
pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes canonical unpadded base64url; `None` for anything else.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// Decodes into `buf` (cleared first); `false` for non-canonical input.
pub(crate) fn decode_into(text: &str, buf: &mut Vec<u8>) -> bool {
    buf.clear();
    URL_SAFE_NO_PAD.decode_vec(text, buf).is_ok()
}

/// Decodes canonical unpadded base64url and hands the bytes to `f`: on the
/// stack when they fit in `N` bytes, else in a new `Vec`. `None` for
/// non-canonical input.
pub(crate) fn with_decoded<const N: usize, R>(text: &str, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    if base64::decoded_len_estimate(text.len()) <= N {
        let mut buf = [0u8; N];
        let n = URL_SAFE_NO_PAD.decode_slice(text, &mut buf).ok()?;
        Some(f(&buf[..n]))
    } else {
        decode(text).map(|v| f(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(decode("A").is_none(), "impossible length");
    }
}
