//! JWT claims (RFC 7519) and their validation policy.
//!
//! The registered claims are read strictly while parsing: `exp`, `nbf`, `iat`
//! must be finite JSON numbers, `iss`/`sub`/`jti`/`client_id`/`scope` strings,
//! `aud` a string or an array of strings. A claim of the wrong type is
//! invalid, never "absent". Other claims stay in the payload and are read on
//! demand with [`Claims::get`] or [`Claims::deserialize`].

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::alg::Algorithm;
use crate::error::{ClaimsError, TokenError};
use crate::json::{short, Key, Names, Scalar, StrOrStrs};
use crate::jws::DEFAULT_MAX_TOKEN_LEN;
use serde_json::value::RawValue;

/// The text of a string claim: a byte range of the payload when the JSON
/// string has no escapes (the common case, no allocation), else its unescaped
/// value.
#[derive(Clone, Debug, PartialEq)]
enum Text {
    Range(u32, u32),
    Owned(Box<str>),
}

impl Text {
    /// `s` as a range of `payload` when it was borrowed from it, else owned.
    fn new(s: Cow<'_, str>, payload: &[u8]) -> Text {
        if let (Cow::Borrowed(b), true) = (&s, payload.len() <= u32::MAX as usize) {
            let start = (b.as_ptr() as usize).wrapping_sub(payload.as_ptr() as usize);
            if start <= payload.len() && b.len() <= payload.len() - start {
                return Text::Range(start as u32, (start + b.len()) as u32);
            }
        }
        Text::Owned(s.into_owned().into_boxed_str())
    }

    fn bytes<'a>(&'a self, payload: &'a [u8]) -> &'a [u8] {
        match self {
            Text::Range(a, b) => &payload[*a as usize..*b as usize],
            Text::Owned(s) => s.as_bytes(),
        }
    }

    fn as_str<'a>(&'a self, payload: &'a [u8]) -> &'a str {
        match self {
            // A range is always a whole JSON string that serde_json checked as UTF-8.
            Text::Range(..) => std::str::from_utf8(self.bytes(payload)).unwrap_or_default(),
            Text::Owned(s) => s,
        }
    }
}

/// `aud` as parsed: absent, one string, or an array of strings.
#[derive(Clone, Debug, Default, PartialEq)]
enum AudRepr {
    #[default]
    Absent,
    One(Text),
    Many(Vec<Text>),
}

/// The validated claims of a token, plus its raw payload. String claims
/// borrow from the payload; read them with the accessor methods.
#[derive(Clone, PartialEq)]
pub struct Claims {
    payload: Vec<u8>,
    reg: Registered,
    kept: Kept,
}

/// How many other claims [`Validation::keep_claims`] can name.
pub const MAX_KEPT_CLAIMS: usize = 4;

/// Other claims kept while parsing: their names, and where each one's JSON
/// text is in the payload (`None`: absent).
#[derive(Clone, Debug, Default, PartialEq)]
struct Kept {
    names: &'static [&'static str],
    at: [Option<(u32, u32)>; MAX_KEPT_CLAIMS],
}

impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Claims")
            .field("iss", &self.iss())
            .field("sub", &self.sub())
            .field("aud", &self.aud().map(|a| a.collect::<Vec<_>>()))
            .field("exp", &self.reg.exp)
            .field("nbf", &self.reg.nbf)
            .field("iat", &self.reg.iat)
            .field("jti", &self.jti())
            .field("client_id", &self.client_id())
            .field("scope", &self.scope())
            .finish_non_exhaustive()
    }
}

/// The entries of `aud` (a single string is one entry), in order.
#[derive(Clone, Debug)]
pub struct Audiences<'a> {
    payload: &'a [u8],
    rest: &'a [Text],
}

impl<'a> Iterator for Audiences<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        let (first, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(first.as_str(self.payload))
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.rest.len(), Some(self.rest.len()))
    }
}

impl ExactSizeIterator for Audiences<'_> {}

impl Claims {
    fn text<'a>(&'a self, t: &'a Option<Text>) -> Option<&'a str> {
        t.as_ref().map(|t| t.as_str(&self.payload))
    }

    /// `iss`, if present.
    pub fn iss(&self) -> Option<&str> {
        self.text(&self.reg.iss)
    }

    /// `sub`, if present.
    pub fn sub(&self) -> Option<&str> {
        self.text(&self.reg.sub)
    }

    /// `aud`, if present, as a list (a single string is one entry).
    pub fn aud(&self) -> Option<Audiences<'_>> {
        let rest = match &self.reg.aud {
            AudRepr::Absent => return None,
            AudRepr::One(t) => std::slice::from_ref(t),
            AudRepr::Many(v) => v.as_slice(),
        };
        Some(Audiences {
            payload: &self.payload,
            rest,
        })
    }

    /// `exp`, if present (a finite number).
    pub fn exp(&self) -> Option<f64> {
        self.reg.exp
    }

    /// `nbf`, if present (a finite number).
    pub fn nbf(&self) -> Option<f64> {
        self.reg.nbf
    }

    /// `iat`, if present (a finite number).
    pub fn iat(&self) -> Option<f64> {
        self.reg.iat
    }

    /// `jti`, if present.
    pub fn jti(&self) -> Option<&str> {
        self.text(&self.reg.jti)
    }

    /// `client_id` (RFC 9068), if present.
    pub fn client_id(&self) -> Option<&str> {
        self.text(&self.reg.client_id)
    }

    /// `scope` (RFC 9068), if present.
    pub fn scope(&self) -> Option<&str> {
        self.text(&self.reg.scope)
    }

    /// The payload JSON exactly as signed.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// All claims as a JSON object.
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }

    /// The whole payload as your own type.
    pub fn deserialize<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// A claim named in [`Validation::keep_claims`], as its JSON text exactly
    /// as signed: `Some(Some(text))` when present, `Some(None)` when absent,
    /// `None` when it was not kept (so the caller must read the payload),
    /// which is always the case for a registered claim (read those with
    /// their accessors).
    pub fn kept(&self, name: &str) -> Option<Option<&str>> {
        if registered_bit(name) != 0 {
            return None;
        }
        let i = self.kept.names.iter().position(|n| *n == name)?;
        let range = *self.kept.at.get(i)?;
        // A range is always a whole JSON value that serde_json read as UTF-8.
        Some(range.map(|(a, b)| {
            std::str::from_utf8(&self.payload[a as usize..b as usize]).unwrap_or_default()
        }))
    }

    /// The whole payload as your own type, borrowing strings from the
    /// payload where they have no escapes.
    pub fn deserialize_borrowed<'a, T: serde::Deserialize<'a>>(
        &'a self,
    ) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.payload)
    }

    /// One claim by name, if present.
    pub fn get(&self, name: &str) -> Option<serde_json::Value> {
        match self.to_value() {
            serde_json::Value::Object(mut m) => m.remove(name),
            _ => None,
        }
    }

    /// `exp` as whole seconds.
    pub fn expires_at(&self) -> Option<i64> {
        self.reg.exp.map(|e| e.floor() as i64)
    }

    /// Parses a payload: a JSON object with unique member names, registered
    /// claims of the right types, and every name in `required` present.
    pub(crate) fn parse(payload: Vec<u8>, required: &[String]) -> Result<Claims, crate::Error> {
        Claims::parse_keeping(payload, required, &[])
    }

    /// [`Claims::parse`], also keeping the JSON text of the other claims
    /// named in `keep` (the first [`MAX_KEPT_CLAIMS`] of them; registered
    /// claims are read by their accessors) for [`Claims::kept`], in the same
    /// pass.
    pub(crate) fn parse_keeping(
        payload: Vec<u8>,
        required: &[String],
        keep: &'static [&'static str],
    ) -> Result<Claims, crate::Error> {
        // Filled in place: the claims are not moved through serde's results.
        let mut raw = RawClaims {
            claims: Registered::default(),
            kept: Kept {
                names: keep,
                at: Default::default(),
            },
            duplicate: None,
            invalid: None,
            missing: None,
        };
        let seed = ClaimsSeed {
            required,
            payload: &payload,
            out: &mut raw,
        };
        // RFC 7519 §7.2: the payload is UTF-8. Checked once for the whole
        // payload (including strings serde_json would skip unchecked), so the
        // parser need not check each string again.
        let text =
            std::str::from_utf8(&payload).map_err(|_| TokenError::Payload("not UTF-8".into()))?;
        let mut de = serde_json::Deserializer::from_str(text);
        seed.deserialize(&mut de)
            .map_err(|e| TokenError::Payload(short(&e)))?;
        de.end().map_err(|e| TokenError::Payload(short(&e)))?;
        if let Some(d) = raw.duplicate {
            return Err(TokenError::DuplicateMember(d, "payload").into());
        }
        if let Some((name, why)) = raw.invalid {
            return Err(ClaimsError::Invalid(name, why).into());
        }
        if let Some(i) = raw.missing {
            return Err(ClaimsError::Missing(required[i].clone()).into());
        }
        Ok(Claims {
            reg: raw.claims,
            kept: raw.kept,
            payload,
        })
    }
}

/// The registered claims this crate reads, as found in the payload.
#[derive(Clone, Default, PartialEq)]
struct Registered {
    iss: Option<Text>,
    sub: Option<Text>,
    aud: AudRepr,
    exp: Option<f64>,
    nbf: Option<f64>,
    iat: Option<f64>,
    jti: Option<Text>,
    client_id: Option<Text>,
    scope: Option<Text>,
}

struct RawClaims {
    claims: Registered,
    kept: Kept,
    duplicate: Option<String>,
    invalid: Option<(String, &'static str)>,
    /// Index in `required` of the first required claim that is absent.
    missing: Option<usize>,
}

const ISS: u16 = 1;
const SUB: u16 = 1 << 1;
const AUD: u16 = 1 << 2;
const EXP: u16 = 1 << 3;
const NBF: u16 = 1 << 4;
const IAT: u16 = 1 << 5;
const JTI: u16 = 1 << 6;
const CLIENT_ID: u16 = 1 << 7;
const SCOPE: u16 = 1 << 8;

/// A bit per registered claim name, 0 for any other name. (Byte patterns
/// compile to a branch on the length and then on single bytes, where string
/// patterns compare whole names one after another.)
#[inline(always)]
fn registered_bit(name: &str) -> u16 {
    match name.as_bytes() {
        [b'i', b's', b's'] => ISS,
        [b's', b'u', b'b'] => SUB,
        [b'a', b'u', b'd'] => AUD,
        [b'e', b'x', b'p'] => EXP,
        [b'n', b'b', b'f'] => NBF,
        [b'i', b'a', b't'] => IAT,
        [b'j', b't', b'i'] => JTI,
        [b'c', b'l', b'i', b'e', b'n', b't', b'_', b'i', b'd'] => CLIENT_ID,
        [b's', b'c', b'o', b'p', b'e'] => SCOPE,
        _ => 0,
    }
}

struct ClaimsSeed<'r> {
    required: &'r [String],
    /// The buffer being parsed: strings borrowed from it are kept as ranges.
    payload: &'r [u8],
    out: &'r mut RawClaims,
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    #[inline]
    fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<(), A::Error> {
        let out = self.out;
        // Names seen: registered ones as bits, others (borrowed, mostly inline) by name.
        let mut registered = 0u16;
        let mut others = Names::new();
        while let Some(Key(k)) = m.next_key::<Key<'de>>()? {
            let bit = registered_bit(&k);
            let repeated = if bit != 0 {
                registered & bit != 0
            } else {
                others.contains(&k)
            };
            if repeated {
                out.duplicate
                    .get_or_insert_with(|| k.chars().take(32).collect());
            }
            let c = &mut out.claims;
            match bit {
                EXP | NBF | IAT => {
                    let slot = match bit {
                        EXP => &mut c.exp,
                        NBF => &mut c.nbf,
                        _ => &mut c.iat,
                    };
                    match m.next_value::<Scalar<'de>>()? {
                        Scalar::Num(v) if v.is_finite() => *slot = Some(v),
                        _ => {
                            out.invalid
                                .get_or_insert_with(|| (k.to_string(), "must be a finite number"));
                        }
                    }
                }
                ISS | SUB | JTI | CLIENT_ID | SCOPE => {
                    let slot = match bit {
                        ISS => &mut c.iss,
                        SUB => &mut c.sub,
                        JTI => &mut c.jti,
                        CLIENT_ID => &mut c.client_id,
                        _ => &mut c.scope,
                    };
                    match m.next_value::<Scalar<'de>>()? {
                        Scalar::Str(v) => *slot = Some(Text::new(v, self.payload)),
                        _ => {
                            out.invalid
                                .get_or_insert_with(|| (k.to_string(), "must be a string"));
                        }
                    }
                }
                AUD => match m.next_value::<StrOrStrs<'de>>()? {
                    StrOrStrs::One(v) => c.aud = AudRepr::One(Text::new(v, self.payload)),
                    StrOrStrs::Many(v) => {
                        c.aud = AudRepr::Many(
                            v.into_iter().map(|a| Text::new(a, self.payload)).collect(),
                        )
                    }
                    StrOrStrs::Invalid => {
                        out.invalid.get_or_insert_with(|| {
                            ("aud".into(), "must be a string or an array of strings")
                        });
                    }
                },
                _ => match out
                    .kept
                    .names
                    .iter()
                    .take(MAX_KEPT_CLAIMS)
                    .position(|n| *n == k)
                {
                    Some(i) => {
                        let v: &'de RawValue = m.next_value()?;
                        // The text is always a slice of the payload being parsed
                        // (it is parsed from a str, so RawValue borrows).
                        match Text::new(Cow::Borrowed(v.get()), self.payload) {
                            Text::Range(a, b) => out.kept.at[i] = Some((a, b)),
                            Text::Owned(_) => {
                                return Err(serde::de::Error::custom("claim text not kept"))
                            }
                        }
                    }
                    None => {
                        m.next_value::<IgnoredAny>()?;
                    }
                },
            }
            if bit != 0 {
                registered |= bit;
            } else {
                others.insert(k);
            }
        }
        out.missing = self.required.iter().position(|r| match registered_bit(r) {
            0 => !others.contains(r),
            bit => registered & bit == 0,
        });
        Ok(())
    }
}

/// What a token must satisfy beyond its signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validation {
    /// Algorithms accepted at all (asymmetric only, by construction). The
    /// default is [`Algorithm::DEFAULT_ACCEPTED`]: ML-DSA must be named.
    pub algorithms: Vec<Algorithm>,
    /// `iss` must equal this, byte for byte.
    pub issuer: Option<String>,
    /// If not empty, `aud` must contain at least one of these.
    pub audiences: Vec<String>,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`, in seconds.
    pub leeway_secs: u64,
    /// Required header `typ` (compared case-insensitively; an
    /// `application/` prefix is allowed, RFC 7515 §4.1.9).
    pub required_typ: Option<String>,
    /// Claims that must be present.
    pub required_claims: Vec<String>,
    /// Longest accepted lifetime: `exp - iat` (or `exp - now` without `iat`).
    pub max_lifetime_secs: Option<u64>,
    /// Longest accepted compact token, in bytes.
    pub max_token_len: usize,
    /// Other claims whose JSON text to keep for [`Claims::kept`] (at most
    /// [`MAX_KEPT_CLAIMS`]), read in the same pass as the registered ones.
    pub keep_claims: &'static [&'static str],
}

impl Default for Validation {
    fn default() -> Self {
        Validation {
            algorithms: Algorithm::DEFAULT_ACCEPTED.to_vec(),
            issuer: None,
            audiences: Vec::new(),
            leeway_secs: 60,
            required_typ: None,
            required_claims: vec!["exp".into()],
            max_lifetime_secs: None,
            max_token_len: DEFAULT_MAX_TOKEN_LEN,
            keep_claims: &[],
        }
    }
}

impl Validation {
    /// The policy for RFC 9068 access tokens of `issuer` for any of `audiences`:
    /// `typ: at+jwt`, and `iss`, `sub`, `aud`, `exp`, `iat`, `jti` required.
    pub fn access_token(issuer: &str, audiences: &[&str]) -> Self {
        Validation {
            issuer: Some(issuer.to_string()),
            audiences: audiences.iter().map(|a| a.to_string()).collect(),
            required_typ: Some("at+jwt".into()),
            required_claims: ["iss", "sub", "aud", "exp", "iat", "jti"]
                .map(String::from)
                .to_vec(),
            ..Validation::default()
        }
    }

    /// Checks the header `typ` against the policy.
    pub fn check_typ(&self, typ: Option<&str>) -> Result<(), ClaimsError> {
        let Some(want) = &self.required_typ else {
            return Ok(());
        };
        let ok = typ.is_some_and(|t| {
            // Compare bytes: slicing the str at 12 panics inside a multi-byte character.
            let t = if t.len() > 12 && t.as_bytes()[..12].eq_ignore_ascii_case(b"application/") {
                &t[12..]
            } else {
                t
            };
            t.eq_ignore_ascii_case(want)
        });
        if ok {
            Ok(())
        } else {
            Err(ClaimsError::WrongType(
                typ.map(|t| t.chars().take(32).collect()),
                want.clone(),
            ))
        }
    }

    /// Checks time, issuer, audience and lifetime at `now` (unix seconds).
    pub fn check_claims(&self, c: &Claims, now: i64) -> Result<(), ClaimsError> {
        let now = now as f64;
        let leeway = self.leeway_secs as f64;
        if let Some(exp) = c.reg.exp {
            if now >= exp + leeway {
                return Err(ClaimsError::Expired);
            }
        }
        if let Some(nbf) = c.reg.nbf {
            if now + leeway < nbf {
                return Err(ClaimsError::NotYetValid);
            }
        }
        if let Some(iat) = c.reg.iat {
            if iat > now + leeway {
                return Err(ClaimsError::IssuedInFuture);
            }
        }
        if let Some(iss) = &self.issuer {
            if c.reg.iss.as_ref().map(|t| t.bytes(&c.payload)) != Some(iss.as_bytes()) {
                return Err(ClaimsError::WrongIssuer);
            }
        }
        if !self.audiences.is_empty() {
            let aud: &[Text] = match &c.reg.aud {
                AudRepr::Absent => &[],
                AudRepr::One(t) => std::slice::from_ref(t),
                AudRepr::Many(v) => v,
            };
            let wanted = |a: &Text| {
                let a = a.bytes(&c.payload);
                self.audiences.iter().any(|w| w.as_bytes() == a)
            };
            if !aud.iter().any(wanted) {
                return Err(ClaimsError::WrongAudience);
            }
        }
        if let Some(max) = self.max_lifetime_secs {
            let max = max as f64;
            match (c.reg.exp, c.reg.iat) {
                (Some(exp), Some(iat)) if exp - iat > max => {
                    return Err(ClaimsError::LifetimeTooLong)
                }
                (Some(exp), None) if exp - now > max + leeway => {
                    return Err(ClaimsError::LifetimeTooLong)
                }
                (None, _) => return Err(ClaimsError::Missing("exp".into())),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    fn parse(json: &str) -> Result<Claims, Error> {
        Claims::parse(json.as_bytes().to_vec(), &["exp".to_string()])
    }

    #[test]
    fn kept_claims_are_the_signed_text() {
        const KEEP: &[&str] = &["permissions", "azp", "cnf", "sub", "e", "f"];
        let payload =
            r#"{"sub":"s","\u0070ermissions": ["a", "b\u002ec"] ,"cnf":{"jkt":"x"},"n":1,"f":2}"#;
        let c = Claims::parse_keeping(payload.as_bytes().to_vec(), &[], KEEP).unwrap();
        assert_eq!(c.kept("permissions"), Some(Some(r#"["a", "b\u002ec"]"#)));
        assert_eq!(c.kept("cnf"), Some(Some(r#"{"jkt":"x"}"#)));
        assert_eq!(c.kept("azp"), Some(None), "named but absent");
        assert_eq!(c.kept("n"), None, "not named");
        assert_eq!(c.kept("f"), None, "past MAX_KEPT_CLAIMS");
        assert_eq!(c.sub(), Some("s"));
        // A registered claim is read by its accessor, never kept as text.
        assert_eq!(c.kept("sub"), None);
        // Without a keep list nothing is kept, and the answer says so.
        let plain = Claims::parse(payload.as_bytes().to_vec(), &[]).unwrap();
        assert_eq!(plain.kept("permissions"), None);
        // Keeping changes no verdict: a duplicate kept claim is still refused.
        let dup = br#"{"permissions":[],"permissions":["*"]}"#.to_vec();
        assert!(matches!(
            Claims::parse_keeping(dup, &[], KEEP),
            Err(Error::Token(TokenError::DuplicateMember(..)))
        ));
    }

    #[test]
    fn registered_bits() {
        let want = [
            ("iss", ISS),
            ("sub", SUB),
            ("aud", AUD),
            ("exp", EXP),
            ("nbf", NBF),
            ("iat", IAT),
            ("jti", JTI),
            ("client_id", CLIENT_ID),
            ("scope", SCOPE),
        ];
        for (name, bit) in want {
            assert_eq!(registered_bit(name), bit, "{name}");
        }
        for other in [
            "",
            "is",
            "isss",
            "ISS",
            "Iss",
            "client-id",
            "scopes",
            "permissions",
        ] {
            assert_eq!(registered_bit(other), 0, "{other}");
        }
    }

    #[test]
    fn types_are_strict() {
        assert!(parse(r#"{"exp":10,"aud":["a","b"],"sub":"s"}"#).is_ok());
        assert!(parse(r#"{"exp":10.5}"#).is_ok());
        for bad in [
            r#"{"exp":"10"}"#,
            r#"{"exp":null}"#,
            r#"{"exp":true}"#,
            r#"{"exp":10,"nbf":[1]}"#,
            r#"{"exp":10,"iat":{}}"#,
            r#"{"exp":10,"iss":5}"#,
            r#"{"exp":10,"sub":null}"#,
            r#"{"exp":10,"aud":5}"#,
            r#"{"exp":10,"aud":["a",5]}"#,
        ] {
            assert!(
                matches!(parse(bad), Err(Error::Claims(ClaimsError::Invalid(..)))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse(r#"{"sub":"x"}"#),
            Err(Error::Claims(ClaimsError::Missing(_)))
        ));
        assert!(matches!(
            parse(r#"{"exp":1,"exp":2}"#),
            Err(Error::Token(TokenError::DuplicateMember(..)))
        ));
        assert!(matches!(
            parse(r#"[1]"#),
            Err(Error::Token(TokenError::Payload(_)))
        ));
        assert!(matches!(
            parse(r#"{"exp":1e999}"#),
            Err(Error::Token(TokenError::Payload(_)))
        ));
    }

    #[test]
    fn accessors_borrowed_and_escaped() {
        let c = parse(
            r#"{"exp":10,"nbf":5,"iat":4.5,"iss":"https://i","sub":"a\"b","aud":"api","jti":"\u006a","client_id":"c","scope":"s t"}"#,
        )
        .unwrap();
        assert_eq!(c.iss(), Some("https://i"));
        assert_eq!(c.sub(), Some("a\"b"));
        assert_eq!(c.aud().unwrap().collect::<Vec<_>>(), ["api"]);
        assert_eq!(
            (c.exp(), c.nbf(), c.iat()),
            (Some(10.0), Some(5.0), Some(4.5))
        );
        assert_eq!(c.jti(), Some("j"));
        assert_eq!(c.client_id(), Some("c"));
        assert_eq!(c.scope(), Some("s t"));
        let c = parse(r#"{"exp":10,"aud":["x","\u00e9","y"]}"#).unwrap();
        let aud = c.aud().unwrap();
        assert_eq!(aud.len(), 3);
        assert_eq!(aud.collect::<Vec<_>>(), ["x", "\u{e9}", "y"]);
        let c = parse(r#"{"exp":10,"aud":[]}"#).unwrap();
        assert_eq!(c.aud().unwrap().count(), 0);
        let c = parse(r#"{"exp":10}"#).unwrap();
        assert!(c.aud().is_none() && c.iss().is_none() && c.sub().is_none());
        assert_eq!(c.clone(), c);
        assert!(format!("{c:?}").contains("exp: Some(10.0)"));
        // Escaped and unescaped forms of the same value compare equal in policy.
        let v = Validation {
            issuer: Some("https://i".into()),
            audiences: vec!["\u{e9}".into()],
            ..Validation::default()
        };
        let c = parse(r#"{"exp":10,"iss":"https:\/\/i","aud":["x","\u00e9"]}"#).unwrap();
        assert_eq!(v.check_claims(&c, 1), Ok(()));
        let c = parse(r#"{"exp":10,"iss":"https://i","aud":"é"}"#).unwrap();
        assert_eq!(v.check_claims(&c, 1), Ok(()));
    }

    #[test]
    fn duplicates_and_required_names_of_any_kind() {
        let req = |names: &[&str], json: &str| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            Claims::parse(json.as_bytes().to_vec(), &names)
        };
        for dup in [
            r#"{"exp":1,"roles":[],"roles":[]}"#,
            r#"{"exp":1,"\u0065xp":2}"#,
            r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"i":9,"j":10,"i":11}"#,
        ] {
            assert!(
                matches!(
                    req(&[], dup),
                    Err(Error::Token(TokenError::DuplicateMember(..)))
                ),
                "{dup}"
            );
        }
        let json = r#"{"exp":1,"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7,"h":8,"j":10,"sub":"s"}"#;
        assert!(req(&["j", "exp", "sub", "h"], json).is_ok());
        assert!(
            matches!(req(&["exp", "iss", "zz"], json), Err(Error::Claims(ClaimsError::Missing(m))) if m == "iss")
        );
        assert!(
            matches!(req(&["j", "zz", "iss"], json), Err(Error::Claims(ClaimsError::Missing(m))) if m == "zz")
        );
    }

    #[test]
    fn time_issuer_audience_lifetime() {
        let v = Validation {
            issuer: Some("https://i".into()),
            audiences: vec!["api".into()],
            max_lifetime_secs: Some(3600),
            ..Validation::default()
        };
        let c = parse(r#"{"iss":"https://i","aud":"api","exp":1000,"iat":900,"nbf":900}"#).unwrap();
        assert_eq!(v.check_claims(&c, 950), Ok(()));
        assert_eq!(v.check_claims(&c, 1059), Ok(()), "within leeway");
        assert_eq!(v.check_claims(&c, 1060), Err(ClaimsError::Expired));
        assert_eq!(v.check_claims(&c, 839), Err(ClaimsError::NotYetValid));
        let c2 = parse(r#"{"iss":"https://i/","aud":"api","exp":1000}"#).unwrap();
        assert_eq!(v.check_claims(&c2, 950), Err(ClaimsError::WrongIssuer));
        let c3 = parse(r#"{"iss":"https://i","aud":["x","y"],"exp":1000}"#).unwrap();
        assert_eq!(v.check_claims(&c3, 950), Err(ClaimsError::WrongAudience));
        let c4 = parse(r#"{"iss":"https://i","aud":"api","exp":100000,"iat":900}"#).unwrap();
        assert_eq!(v.check_claims(&c4, 950), Err(ClaimsError::LifetimeTooLong));
        let c5 = parse(r#"{"iss":"https://i","aud":"api","exp":1000,"iat":2000}"#).unwrap();
        assert_eq!(v.check_claims(&c5, 950), Err(ClaimsError::IssuedInFuture));
    }

    #[test]
    fn typ_rules() {
        let v = Validation {
            required_typ: Some("at+jwt".into()),
            ..Validation::default()
        };
        assert!(v.check_typ(Some("at+jwt")).is_ok());
        assert!(v.check_typ(Some("application/AT+JWT")).is_ok());
        assert_eq!(
            v.check_typ(Some("JWT")),
            Err(ClaimsError::WrongType(Some("JWT".into()), "at+jwt".into()))
        );
        assert_eq!(
            v.check_typ(None),
            Err(ClaimsError::WrongType(None, "at+jwt".into()))
        );
    }
}
