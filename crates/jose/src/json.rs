//! JSON objects read strictly: a top-level JSON object whose member names are
//! unique. serde_json alone keeps the last of duplicate names, which lets two
//! parsers disagree about one token; here a duplicate is reported.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON object and the first duplicated member name, if any.
pub(crate) struct UniqueObject {
    pub map: Map<String, Value>,
    pub duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UniqueObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<UniqueObject, A::Error> {
                let mut map = Map::new();
                let mut duplicate = None;
                while let Some(k) = m.next_key::<String>()? {
                    let v: Value = m.next_value()?;
                    if map.contains_key(&k) {
                        duplicate.get_or_insert(k);
                    } else {
                        map.insert(k, v);
                    }
                }
                Ok(UniqueObject { map, duplicate })
            }
        }
        d.deserialize_map(V)
    }
}

/// Parses `bytes` as a JSON object with unique member names.
pub(crate) fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ObjectError> {
    let o: UniqueObject =
        serde_json::from_slice(bytes).map_err(|e| ObjectError::Json(short(&e)))?;
    match o.duplicate {
        Some(d) => Err(ObjectError::Duplicate(d)),
        None => Ok(o.map),
    }
}

pub(crate) enum ObjectError {
    Json(String),
    Duplicate(String),
}

/// serde_json's message without the position, capped in length.
pub(crate) fn short(e: &serde_json::Error) -> String {
    let s = e.to_string();
    let s = s.split(" at line ").next().unwrap_or(&s);
    s.chars().take(80).collect()
}

/// Any JSON value, walked only to find the first member name repeated in an
/// object at any depth (a `Value` silently keeps the last of duplicates).
pub(crate) struct DeepDuplicate(pub Option<String>);

impl<'de> Deserialize<'de> for DeepDuplicate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = DeepDuplicate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<DeepDuplicate, E> {
                Ok(DeepDuplicate(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<DeepDuplicate, E> {
                Ok(DeepDuplicate(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<DeepDuplicate, E> {
                Ok(DeepDuplicate(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<DeepDuplicate, E> {
                Ok(DeepDuplicate(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<DeepDuplicate, E> {
                Ok(DeepDuplicate(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<DeepDuplicate, E> {
                Ok(DeepDuplicate(None))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<DeepDuplicate, A::Error> {
                let mut first = None;
                while let Some(DeepDuplicate(d)) = s.next_element()? {
                    first = first.or(d);
                }
                Ok(DeepDuplicate(first))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<DeepDuplicate, A::Error> {
                let mut seen = std::collections::HashSet::new();
                let mut first = None;
                while let Some(k) = m.next_key::<String>()? {
                    let DeepDuplicate(d) = m.next_value()?;
                    first = first.or(d);
                    if !seen.insert(k.clone()) && first.is_none() {
                        first = Some(k.chars().take(32).collect());
                    }
                }
                Ok(DeepDuplicate(first))
            }
        }
        d.deserialize_any(V)
    }
}

/// An object member name, borrowed from the input unless it has escapes.
/// (serde's own `Cow<str>` always allocates.)
pub(crate) struct Key<'a>(pub Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Member names seen in one object, to find a repeated one. The first few
/// are kept inline, so a small object costs no allocation; past them a
/// hash set (SipHash, randomly keyed), so an object of many names costs
/// linear time, not quadratic.
pub(crate) struct Names<'a> {
    inline: [Cow<'a, str>; 8],
    len: usize,
    more: std::collections::HashSet<Cow<'a, str>>,
}

impl<'a> Names<'a> {
    pub fn new() -> Self {
        Names {
            inline: Default::default(),
            len: 0,
            more: Default::default(),
        }
    }

    /// Whether `name` was inserted before.
    pub fn contains(&self, name: &str) -> bool {
        self.inline[..self.len].iter().any(|n| n == name)
            || (!self.more.is_empty() && self.more.contains(name))
    }

    /// Records `name`; returns `false` if it was already there.
    pub fn insert(&mut self, name: Cow<'a, str>) -> bool {
        if self.contains(&name) {
            return false;
        }
        if self.len < self.inline.len() {
            self.inline[self.len] = name;
            self.len += 1;
        } else {
            self.more.insert(name);
        }
        true
    }
}

/// One JSON value seen through the types claims and headers may have.
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(f64),
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Num(v))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut s: A) -> Result<Scalar<'de>, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Scalar<'de>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// A JSON string, or an array of strings (borrowed unless escaped);
/// `Invalid` for any other type.
pub(crate) enum StrOrStrs<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
    Invalid,
}

impl<'de> Deserialize<'de> for StrOrStrs<'de> {
    #[inline]
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StrOrStrs<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::One(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::One(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::One(Cow::Owned(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut s: A,
            ) -> Result<StrOrStrs<'de>, A::Error> {
                let mut out = Vec::new();
                let mut ok = true;
                while let Some(x) = s.next_element::<Scalar<'de>>()? {
                    match x {
                        Scalar::Str(v) if ok => out.push(v),
                        Scalar::Str(_) => {}
                        _ => ok = false,
                    }
                }
                Ok(if ok {
                    StrOrStrs::Many(out)
                } else {
                    StrOrStrs::Invalid
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::Invalid)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::Invalid)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::Invalid)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::Invalid)
            }
            fn visit_unit<E: de::Error>(self) -> Result<StrOrStrs<'de>, E> {
                Ok(StrOrStrs::Invalid)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<StrOrStrs<'de>, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StrOrStrs::Invalid)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_non_objects() {
        assert!(parse_object(br#"{"a":1,"b":2}"#).is_ok());
        assert!(
            matches!(parse_object(br#"{"a":1,"a":2}"#), Err(ObjectError::Duplicate(d)) if d == "a")
        );
        assert!(matches!(
            parse_object(br#"{"a":1,"\u0061":2}"#),
            Err(ObjectError::Duplicate(_))
        ));
        assert!(matches!(parse_object(b"[1]"), Err(ObjectError::Json(_))));
        assert!(matches!(parse_object(b"{} x"), Err(ObjectError::Json(_))));
        assert!(matches!(parse_object(b"\"s\""), Err(ObjectError::Json(_))));
    }

    #[test]
    fn deep_duplicates() {
        let d = |s: &str| serde_json::from_str::<DeepDuplicate>(s).unwrap().0;
        assert_eq!(d(r#"{"a":{"b":1,"c":[{"d":1}]}}"#), None);
        assert_eq!(d(r#"[{"a":1},{"b":{"c":1,"c":2}}]"#).as_deref(), Some("c"));
        assert_eq!(d(r#"{"a":1,"\u0061":2}"#).as_deref(), Some("a"));
        assert_eq!(d("3"), None);
    }
}
