//! Reading a token WITHOUT verifying it. Nothing here says a token is genuine;
//! use it only to display or debug (`keyward token decode`).

use crate::b64;
use crate::error::{Error, TokenError};
use crate::json::{parse_object, ObjectError};
use crate::jws::DEFAULT_MAX_TOKEN_LEN;

/// The header and payload of a compact JWS, as JSON, unverified. The structure
/// is still checked (three canonical segments, JSON objects, unique names).
pub fn decode_unverified(token: &str) -> Result<(serde_json::Value, serde_json::Value), Error> {
    if token.len() > DEFAULT_MAX_TOKEN_LEN {
        return Err(TokenError::TooLong(DEFAULT_MAX_TOKEN_LEN).into());
    }
    let segs: Vec<&str> = token.split('.').collect();
    if segs.len() != 3 {
        return Err(TokenError::Segments.into());
    }
    let obj = |seg: &str, what: &'static str| -> Result<serde_json::Value, Error> {
        let bytes = b64::decode(seg).ok_or(TokenError::Base64(what))?;
        match parse_object(&bytes) {
            Ok(m) => Ok(serde_json::Value::Object(m)),
            Err(ObjectError::Duplicate(d)) => Err(TokenError::DuplicateMember(d, what).into()),
            Err(ObjectError::Json(m)) if what == "header" => Err(TokenError::Header(m).into()),
            Err(ObjectError::Json(m)) => Err(TokenError::Payload(m).into()),
        }
    };
    b64::decode(segs[2]).ok_or(TokenError::Base64("signature"))?;
    Ok((obj(segs[0], "header")?, obj(segs[1], "payload")?))
}
