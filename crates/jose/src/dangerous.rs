//! Reading a token WITHOUT verifying it. Nothing here says a token is
//! genuine. Three uses only: [`decode_unverified`] to display or debug a
//! token (`keyward token decode`), [`peek_names`] to choose whose keys and
//! policy will verify it (an issuer among several, a client by its
//! assertion), which that verification then checks again, and
//! [`claims_without_token`] for an identity the caller established by other
//! means (the gateway's API keys).

use crate::b64;
use crate::claims::Claims;
use crate::error::{Error, TokenError};
use crate::json::{parse_object, ObjectError};
use crate::jws::DEFAULT_MAX_TOKEN_LEN;
use crate::token::UnverifiedToken;

/// The names a token's payload claims, NOT verified: what [`peek_names`]
/// read. It gives `iss` and `sub` only; claims to act on come from
/// [`UnverifiedToken::verify`].
#[derive(Clone, Debug)]
pub struct ClaimedNames {
    claims: Claims,
}

impl ClaimedNames {
    /// `iss`, as the token claims it.
    pub fn iss(&self) -> Option<&str> {
        self.claims.iss()
    }

    /// `sub`, as the token claims it.
    pub fn sub(&self) -> Option<&str> {
        self.claims.sub()
    }
}

/// Reads `iss` and `sub` from the payload of a token that is NOT verified,
/// only to choose whose keys and policy verify it: the issuer among several
/// a gate trusts, or the client a `private_key_jwt` assertion names.
///
/// The payload is read by the parser verification uses (a JSON object with
/// unique names, registered claims of their types), with no claim required,
/// so the choice never refuses a token that verification would accept.
pub fn peek_names(token: &UnverifiedToken<'_>) -> Result<ClaimedNames, Error> {
    let claims = Claims::parse(token.payload_bytes()?, &[])?;
    Ok(ClaimedNames { claims })
}

/// [`Claims`] that come from no token: `payload` read by the parser
/// verification uses (a JSON object, unique names, registered claims of
/// their types). Nothing is verified: the caller vouches for the identity,
/// as the gateway does for an API key it has matched against its stored
/// hash, so that such callers pass the same identity headers and
/// permission checks as a verified token.
pub fn claims_without_token(payload: Vec<u8>) -> Result<Claims, Error> {
    Claims::parse(payload, &[])
}

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
