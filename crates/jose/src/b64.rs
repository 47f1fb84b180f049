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

#[cfg(test)]
mod tests {
    use super::*;

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
