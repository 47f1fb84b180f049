//! TKeeper's permission model: dotted strings, group grants, templated
//! requirements.
//!
//! - A token **grant** is a string from the `permissions` (or `scope`) claim.
//!   A grant equal to the required string covers it. A grant ending in `.*`
//!   covers every string strictly below its prefix, at any depth:
//!   `orders.*` covers `orders.42` and `orders.42.read`, but neither `orders`
//!   itself nor `ordersx.1`. A bare `*` covers everything only when the
//!   issuer's policy allows it ([`crate::IssuerPolicy::allow_wildcard_all`]),
//!   otherwise nothing. A `*` anywhere else (`orders.*.read`, `a*`) is literal
//!   text, never a pattern.
//! - A route **requirement** is a [`Template`] such as `orders.{id}.read`
//!   whose parameters are filled from the request path before matching. A
//!   value that is empty, or contains `.`, `*`, `{`, `}`, a space or anything
//!   outside printable ASCII, fills nothing: the requirement fails closed, so
//!   a path value can never widen or re-shape what is required.
//! - A [`Requirement`] combines templates: all of them, or any one of them.

use std::fmt;
use std::str::FromStr;

use crate::error::{PermissionError, VerifyError};

/// A token's grants, preprocessed so that [`Grants::covers`] does no
/// allocation and no work proportional to the number of grants.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Grants matched exactly.
    exact: foldhash::HashSet<Box<str>>,
    /// The prefixes of `prefix.*` grants, without the trailing `.*`.
    prefixes: foldhash::HashSet<Box<str>>,
    /// A bare `*` was granted and the policy lets it cover everything.
    all: bool,
}

impl Grants {
    /// Reads grants from strings. A bare `*` covers everything if
    /// `allow_wildcard_all`, and is ignored otherwise.
    pub fn new<I, S>(grants: I, allow_wildcard_all: bool) -> Grants
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Grants::default();
        for g in grants {
            let g = g.as_ref();
            if g == "*" {
                out.all |= allow_wildcard_all;
            } else if let Some(prefix) = g.strip_suffix(".*").filter(|p| !p.is_empty()) {
                out.prefixes.insert(prefix.into());
            } else if !g.is_empty() {
                out.exact.insert(g.into());
            }
        }
        out
    }

    /// Whether no grant covers anything.
    pub fn is_empty(&self) -> bool {
        !self.all && self.exact.is_empty() && self.prefixes.is_empty()
    }

    /// Whether some grant covers `required`.
    ///
    /// Cost: one hash lookup, plus one per dot of `required` when the token
    /// has group grants; never an allocation.
    pub fn covers(&self, required: &str) -> bool {
        if self.all || self.exact.contains(required) {
            return true;
        }
        if self.prefixes.is_empty() {
            return false;
        }
        // `p.*` covers `required` when `required` = `p.` + something
        // non-empty: try every proper prefix ending just before a dot.
        required
            .match_indices('.')
            .any(|(i, _)| i + 1 < required.len() && self.prefixes.contains(&required[..i]))
    }

    /// Whether some grant covers every string strictly below `prefix` (all
    /// that the group grant `prefix.*` covers): a bare `*` the policy
    /// allows, `prefix.*` itself, or the group grant of a whole segment
    /// prefix of `prefix` (`a.*` covers the group `a.b`).
    pub fn covers_group(&self, prefix: &str) -> bool {
        if self.all || self.prefixes.contains(prefix) {
            return true;
        }
        !self.prefixes.is_empty()
            && prefix
                .match_indices('.')
                .any(|(i, _)| self.prefixes.contains(&prefix[..i]))
    }

    /// Whether these grants cover everything the single grant `grant`
    /// covers, read as [`Grants::new`] reads it with `allow_wildcard_all`
    /// (so a holder of these grants may hand `grant` on without gaining
    /// anything):
    ///
    /// - a bare `*` is covered only by a bare `*` that covers everything
    ///   (and, when `allow_wildcard_all` is false, covers nothing, so it is
    ///   always covered);
    /// - a group grant `p.*` only by a group grant on `p` or on a whole
    ///   segment prefix of `p` (or `*`): no set of exact grants covers a
    ///   group;
    /// - any other grant (`*` elsewhere is literal text) by [`Grants::covers`].
    ///
    /// An empty grant covers nothing and is always covered.
    pub fn includes(&self, grant: &str, allow_wildcard_all: bool) -> bool {
        if grant == "*" {
            return self.all || !allow_wildcard_all;
        }
        match grant.strip_suffix(".*").filter(|p| !p.is_empty()) {
            Some(prefix) => self.covers_group(prefix),
            None => grant.is_empty() || self.covers(grant),
        }
    }
}

/// One segment of a [`Template`].
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Literal text (`[A-Za-z0-9_:-]+`).
    Literal(Box<str>),
    /// A parameter filled at check time (`{name}`).
    Param(Box<str>),
}

/// A parsed requirement such as `orders.{id}.read`: non-empty dot-separated
/// segments, each either literal text `[A-Za-z0-9_:-]+` or exactly `{name}`
/// (`name` is `[A-Za-z0-9_]+`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: Box<str>,
    segments: Vec<Segment>,
    /// Parameter names, each once, in order of first use.
    params: Vec<Box<str>>,
}

fn literal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | ':' | '-')
}

fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `v` may be put into a rendered requirement: non-empty, visible
/// ASCII only, and none of `.`, `*`, `{`, `}`.
fn acceptable_value(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'.' | b'*' | b'{' | b'}'))
}

impl Template {
    /// Parses a requirement. Errors say what is wrong and how to fix it.
    pub fn parse(text: &str) -> Result<Template, PermissionError> {
        if text.is_empty() {
            return Err(PermissionError::Empty);
        }
        let at = |seg: &str| (text.to_owned(), seg.to_owned());
        let mut segments = Vec::new();
        let mut params: Vec<Box<str>> = Vec::new();
        for (n, seg) in text.split('.').enumerate() {
            let n = n + 1;
            if seg.is_empty() {
                return Err(PermissionError::EmptySegment {
                    text: text.to_owned(),
                    n,
                });
            }
            if let Some(inner) = seg.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    let (text, segment) = at(seg);
                    return Err(PermissionError::UnclosedParameter { text, segment });
                };
                if name.is_empty() || !name.chars().all(name_char) {
                    let (text, segment) = at(seg);
                    return Err(PermissionError::ParameterName { text, segment });
                }
                if !params.iter().any(|p| &**p == name) {
                    params.push(name.into());
                }
                segments.push(Segment::Param(name.into()));
            } else if seg.chars().all(literal_char) {
                segments.push(Segment::Literal(seg.into()));
            } else if seg.contains('*') {
                let (text, segment) = at(seg);
                return Err(PermissionError::Wildcard { text, segment });
            } else if seg.contains(['{', '}']) {
                let (text, segment) = at(seg);
                return Err(PermissionError::MixedSegment { text, segment });
            } else {
                let (text, segment) = at(seg);
                let character = seg.chars().find(|c| !literal_char(*c)).unwrap_or(' ');
                return Err(PermissionError::Character {
                    text,
                    segment,
                    character,
                });
            }
        }
        Ok(Template {
            source: text.into(),
            segments,
            params,
        })
    }

    /// The text the template was parsed from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parameter names the template uses, each once, in order of first use.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.params.iter().map(|p| &**p)
    }

    /// Fills the parameters with `value_of(name)`. `None` if a parameter has
    /// no value, or its value is empty or contains `.`, `*`, `{`, `}`, a space
    /// or anything outside printable ASCII: a value can never add a segment,
    /// form a wildcard or a parameter.
    pub fn render<'v>(&self, value_of: impl Fn(&str) -> Option<&'v str>) -> Option<String> {
        if self.params.is_empty() {
            return Some(self.source.to_string());
        }
        let mut out = String::with_capacity(self.source.len() + 16);
        for (i, seg) in self.segments.iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            match seg {
                Segment::Literal(l) => out.push_str(l),
                Segment::Param(name) => {
                    let v = value_of(name).filter(|v| acceptable_value(v))?;
                    out.push_str(v);
                }
            }
        }
        Some(out)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Template {
    type Err = PermissionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Template::parse(s)
    }
}

/// What a route requires of a token's grants.
///
/// Build it with [`Requirement::all_of`] or [`Requirement::any_of`], which
/// refuse an empty list. Built directly, an empty `AllOf` requires nothing
/// and an empty `AnyOf` is never met.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// Every template must be covered.
    AllOf(Vec<Template>),
    /// At least one template must be covered.
    AnyOf(Vec<Template>),
}

fn parse_list<I, S>(list: I, kind: &'static str) -> Result<Vec<Template>, PermissionError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let templates = list
        .into_iter()
        .map(|s| Template::parse(s.as_ref()))
        .collect::<Result<Vec<_>, _>>()?;
    if templates.is_empty() {
        return Err(PermissionError::EmptyList { kind });
    }
    Ok(templates)
}

impl Requirement {
    /// Every one of `list` must be covered. Fails on an empty list or an
    /// invalid template.
    pub fn all_of<I, S>(list: I) -> Result<Requirement, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        parse_list(list, "all-of").map(Requirement::AllOf)
    }

    /// At least one of `list` must be covered. Fails on an empty list or an
    /// invalid template.
    pub fn any_of<I, S>(list: I) -> Result<Requirement, PermissionError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        parse_list(list, "any-of").map(Requirement::AnyOf)
    }

    /// The templates.
    pub fn templates(&self) -> &[Template] {
        match self {
            Requirement::AllOf(t) | Requirement::AnyOf(t) => t,
        }
    }

    /// Every parameter name used, each once, in order of first use (to
    /// check against a route's pattern at configuration time).
    pub fn params(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        for p in self.templates().iter().flat_map(Template::params) {
            if !seen.contains(&p) {
                seen.push(p);
            }
        }
        seen.into_iter()
    }

    /// Checks `grants` against the requirement, filling parameters with
    /// `value_of`. Fails with [`VerifyError::InsufficientScope`] naming the
    /// first unmet requirement as rendered (or its template text when it
    /// could not be rendered).
    pub fn check<'v>(
        &self,
        grants: &Grants,
        value_of: impl Fn(&str) -> Option<&'v str>,
    ) -> Result<(), VerifyError> {
        let mut first_unmet: Option<String> = None;
        let any = matches!(self, Requirement::AnyOf(_));
        for t in self.templates() {
            let met = match t.render(&value_of) {
                Some(required) if grants.covers(&required) => true,
                Some(required) => {
                    first_unmet.get_or_insert(required);
                    false
                }
                None => {
                    first_unmet.get_or_insert_with(|| t.to_string());
                    false
                }
            };
            match (any, met) {
                (true, true) => return Ok(()),
                (false, false) => break,
                _ => {}
            }
        }
        match (any, first_unmet) {
            (_, Some(unmet)) => Err(VerifyError::InsufficientScope(unmet)),
            // Every template of an AllOf was met.
            (false, None) => Ok(()),
            // An AnyOf with no templates is never met.
            (true, None) => Err(VerifyError::InsufficientScope(String::new())),
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, list) = match self {
            Requirement::AllOf(t) => ("all of", t),
            Requirement::AnyOf(t) => ("any of", t),
        };
        write!(f, "{word} [")?;
        for (i, t) in list.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{t}")?;
        }
        f.write_str("]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use proptest::prelude::*;

    fn grants(list: &[&str]) -> Grants {
        Grants::new(list, false)
    }

    fn none(_: &str) -> Option<&'static str> {
        None
    }

    fn id_is<'v>(v: &'v str) -> impl Fn(&str) -> Option<&'v str> {
        move |name| (name == "id").then_some(v)
    }

    #[test]
    fn exact_grant_covers_only_itself() {
        let g = grants(&["orders.read", "tkeeper.system.seal"]);
        assert!(g.covers("orders.read"));
        assert!(g.covers("tkeeper.system.seal"));
        assert!(!g.covers("orders"));
        assert!(!g.covers("orders.read.x"));
        assert!(!g.covers("orders.rea"));
        assert!(!g.covers("Orders.read"));
        assert!(!g.covers(""));
    }

    #[test]
    fn group_grant_covers_everything_strictly_below() {
        let g = grants(&["tkeeper.system.*", "orders.*"]);
        assert!(g.covers("tkeeper.system.seal"));
        assert!(g.covers("tkeeper.system.keys.rotate"));
        assert!(g.covers("orders.42"));
        assert!(g.covers("orders.42.read"));
        assert!(!g.covers("orders"), "the prefix itself is not below it");
        assert!(
            !g.covers("orders."),
            "nothing after the dot is not below it"
        );
        assert!(
            !g.covers("ordersx.1"),
            "a longer first segment is a different group"
        );
        assert!(!g.covers("tkeeper.system"));
        assert!(!g.covers("tkeeper.systemx.seal"));
        assert!(!g.covers("tkeeper.seal"));
        assert!(!g.covers("x.orders.1"));
    }

    #[test]
    fn bare_star_needs_the_policy() {
        assert!(!grants(&["*"]).covers("orders.1.read"));
        assert!(
            !grants(&["*"]).covers("*"),
            "a refused '*' covers nothing, not even itself"
        );
        assert!(grants(&["*"]).is_empty());
        let all = Grants::new(["*"], true);
        assert!(all.covers("orders.1.read"));
        assert!(all.covers("x"));
    }

    #[test]
    fn star_elsewhere_is_literal() {
        let g = grants(&["orders.*.read", "a*", "*.read", "orders.**"]);
        assert!(g.covers("orders.*.read"));
        assert!(!g.covers("orders.7.read"));
        assert!(g.covers("a*"));
        assert!(!g.covers("ab"));
        assert!(!g.covers("a"));
        assert!(g.covers("*.read"));
        assert!(!g.covers("x.read"));
        assert!(!g.covers("orders.7"), "`orders.**` is not a group grant");
        // `.*` with an empty prefix is not a group grant either.
        let g = grants(&[".*"]);
        assert!(!g.covers(".x") && !g.covers("x"));
        assert!(g.covers(".*"));
    }

    #[test]
    fn grants_from_identity() {
        let claims = crate::verified_claims(
            &serde_json::json!({
                "iss": "https://i", "sub": "s", "exp": 10, "iat": 1,
                "scope": "read *", "permissions": ["orders.*", "*"],
            })
            .to_string(),
            &[],
        );
        let id = Identity::from_claims(claims.clone(), None).unwrap();
        assert!(id.permission_grants().covers("orders.1"));
        assert!(!id.permission_grants().covers("users.1"));
        assert!(std::ptr::eq(id.permission_grants(), id.permission_grants()));
        let mut all = Identity::from_claims(claims, None).unwrap();
        all.allow_wildcard_all = true;
        assert!(all.permission_grants().covers("users.1"));
        assert!(id.scope_grants().covers("read"));
        assert!(
            !all.scope_grants().covers("write"),
            "'*' scope never covers all"
        );
    }

    #[test]
    fn includes_a_grant_only_when_it_covers_all_of_it() {
        let g = grants(&["keyward.env.prod.*", "keyward.audit.read", "a.*"]);
        // Exact grants: covered by an exact or a group grant above them.
        assert!(g.includes("keyward.audit.read", true));
        assert!(g.includes("keyward.env.prod.keys.read", true));
        assert!(g.includes("a.b", true));
        assert!(!g.includes("keyward.audit", true));
        assert!(!g.includes("keyward.env.dev.keys.read", true));
        // Groups: covered by the same group or one above it, never by
        // the exact grant of the same text or of its prefix.
        assert!(g.includes("keyward.env.prod.*", true));
        assert!(g.includes("keyward.env.prod.keys.*", true));
        assert!(g.includes("a.b.c.*", true));
        assert!(!g.includes("keyward.env.*", true), "wider than held");
        assert!(!g.includes("keyward.env.prodx.*", true));
        assert!(!g.includes("keyward.*", true));
        assert!(
            !g.includes("keyward.audit.*", true),
            "exact does not cover a group"
        );
        assert!(
            !grants(&["keyward.audit.read"]).includes("keyward.audit.read.*", true),
            "an exact grant does not cover the group below it"
        );
        // A bare '*': only a '*' that covers everything covers it.
        assert!(!g.includes("*", true));
        assert!(
            g.includes("*", false),
            "a '*' that grants nothing gains nothing"
        );
        assert!(Grants::new(["*"], true).includes("*", true));
        assert!(!Grants::new(["*"], false).includes("*", true));
        assert!(Grants::new(["*"], true).includes("x.*", true));
        assert!(Grants::new(["*"], true).includes("x.y", true));
        assert!(!Grants::new(["*"], false).includes("x.*", true));
        // Literal stars: `a.*.b` is the text `a.*.b`.
        assert!(g.includes("a.*.b", true));
        assert!(!grants(&["a.x.b"]).includes("a.*.b", true));
        assert!(g.includes("", true));
        // covers_group itself.
        assert!(g.covers_group("keyward.env.prod"));
        assert!(g.covers_group("keyward.env.prod.keys"));
        assert!(!g.covers_group("keyward.env"));
        assert!(!g.covers_group("keyward.audit"));
        assert!(!grants(&[]).covers_group("a"));
    }

    #[test]
    fn template_parses_and_lists_params() {
        let t = Template::parse("orders.{id}.items.{item_id}.read").unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["id", "item_id"]);
        assert_eq!(t.to_string(), "orders.{id}.items.{item_id}.read");
        let t: Template = "a.{x}.{x}".parse().unwrap();
        assert_eq!(t.params().collect::<Vec<_>>(), ["x"]);
        let t = Template::parse("tkeeper:admin.Keys-1_x").unwrap();
        assert_eq!(t.params().count(), 0);
        assert_eq!(t.as_str(), "tkeeper:admin.Keys-1_x");
    }

    #[test]
    fn template_errors_say_what_and_how() {
        use PermissionError as P;
        // Which refusal, by name (the text checks its details).
        let kind = |e: &P| match e {
            P::Empty => "empty",
            P::EmptySegment { .. } => "empty segment",
            P::UnclosedParameter { .. } => "unclosed",
            P::ParameterName { .. } => "name",
            P::Wildcard { .. } => "wildcard",
            P::MixedSegment { .. } => "mixed",
            P::Character { .. } => "character",
            P::EmptyList { .. } => "empty list",
        };
        let cases = [
            ("", "empty", "cannot be empty"),
            ("orders..read", "empty segment", "segment 2 is empty"),
            (".orders", "empty segment", "segment 1 is empty"),
            ("orders.", "empty segment", "segment 2 is empty"),
            ("orders.*", "wildcard", "wildcards belong in token grants"),
            ("orders.a*", "wildcard", "wildcards belong in token grants"),
            ("orders.{id", "unclosed", "not exactly"),
            ("orders.{}.read", "name", "needs a name"),
            ("orders.{a-b}.read", "name", "needs a name"),
            ("orders.{*rest}", "name", "needs a name"),
            ("orders.x{id}.read", "mixed", "mixes text and a parameter"),
            ("orders.{id}x.read", "unclosed", "not exactly"),
            ("orders.id}.read", "mixed", "mixes text"),
            ("orders.a b", "character", "contains ' '"),
            ("orders/1", "character", "contains '/'"),
            ("ordérs", "character", "contains 'é'"),
        ];
        for (text, want_kind, want) in cases {
            let e = Template::parse(text).unwrap_err();
            assert_eq!(kind(&e), want_kind, "{text:?}: {e:?}");
            assert!(e.to_string().contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn render_fills_and_refuses_reshaping_values() {
        let t = Template::parse("orders.{id}.read").unwrap();
        assert_eq!(t.render(id_is("42")).as_deref(), Some("orders.42.read"));
        assert_eq!(
            t.render(id_is("a-B_c:~/!")).as_deref(),
            Some("orders.a-B_c:~/!.read")
        );
        for bad in [
            "", "7.read", ".", "*", "a*", "{id}", "{", "}", "a b", "é", "\n", "\u{7f}", "\0",
        ] {
            assert_eq!(t.render(id_is(bad)), None, "{bad:?}");
        }
        assert_eq!(t.render(none), None, "a missing parameter fails closed");
        let literal = Template::parse("orders.list").unwrap();
        assert_eq!(literal.render(none).as_deref(), Some("orders.list"));
    }

    #[test]
    fn requirement_constructors_refuse_empty_and_invalid() {
        let e = Requirement::all_of::<[&str; 0], &str>([]).unwrap_err();
        assert_eq!(e, PermissionError::EmptyList { kind: "all-of" });
        assert!(e
            .to_string()
            .starts_with("an all-of requirement needs at least one permission"));
        let e = Requirement::any_of(Vec::<String>::new()).unwrap_err();
        assert_eq!(e, PermissionError::EmptyList { kind: "any-of" });
        assert!(e
            .to_string()
            .starts_with("an any-of requirement needs at least one permission"));
        assert_eq!(
            Requirement::all_of(["ok", "bad..x"]).unwrap_err(),
            PermissionError::EmptySegment {
                text: "bad..x".into(),
                n: 2
            }
        );
        let r = Requirement::any_of(["a.{id}", "b.{other}.{id}"]).unwrap();
        assert_eq!(r.params().collect::<Vec<_>>(), ["id", "other"]);
        assert_eq!(r.to_string(), "any of [a.{id}, b.{other}.{id}]");
    }

    #[test]
    fn all_of_needs_every_template() {
        let r = Requirement::all_of(["orders.{id}.read", "orders.{id}.audit"]).unwrap();
        let ok = grants(&["orders.7.read", "orders.7.audit"]);
        assert_eq!(r.check(&ok, id_is("7")), Ok(()));
        let half = grants(&["orders.7.read"]);
        assert_eq!(
            r.check(&half, id_is("7")),
            Err(VerifyError::InsufficientScope("orders.7.audit".into()))
        );
        assert_eq!(
            r.check(&grants(&[]), id_is("7")),
            Err(VerifyError::InsufficientScope("orders.7.read".into())),
            "the first unmet requirement is named"
        );
        assert_eq!(
            r.check(&grants(&["orders.*"]), id_is("7.read")),
            Err(VerifyError::InsufficientScope("orders.{id}.read".into())),
            "an unrenderable template is named as written"
        );
        assert_eq!(
            r.check(&Grants::new(["*"], true), none),
            Err(VerifyError::InsufficientScope("orders.{id}.read".into())),
            "a missing parameter fails closed even for '*'"
        );
        assert_eq!(Requirement::AllOf(vec![]).check(&grants(&[]), none), Ok(()));
    }

    #[test]
    fn any_of_needs_one_template() {
        let r = Requirement::any_of(["orders.{id}.read", "orders.admin"]).unwrap();
        assert_eq!(r.check(&grants(&["orders.admin"]), id_is("7")), Ok(()));
        assert_eq!(r.check(&grants(&["orders.admin"]), none), Ok(()));
        assert_eq!(r.check(&grants(&["orders.7.read"]), id_is("7")), Ok(()));
        assert_eq!(
            r.check(&grants(&["orders.8.read"]), id_is("7")),
            Err(VerifyError::InsufficientScope("orders.7.read".into()))
        );
        assert_eq!(
            r.check(&grants(&[]), none),
            Err(VerifyError::InsufficientScope("orders.{id}.read".into()))
        );
        assert_eq!(
            Requirement::AnyOf(vec![]).check(&Grants::new(["*"], true), none),
            Err(VerifyError::InsufficientScope(String::new()))
        );
    }

    #[test]
    fn path_values_cannot_widen_a_requirement() {
        let r = Requirement::all_of(["orders.{id}.read"]).unwrap();
        // Each grant would match the rendered string if the value were
        // pasted in verbatim; every one must be refused.
        let attempts = [
            ("7.read", "orders.7.read.read"),
            ("7.x", "orders.7.*"),
            ("*", "orders.*.read"),
            ("{id}", "orders.{id}.read"),
        ];
        for (value, grant) in attempts {
            let g = grants(&[grant]);
            assert_eq!(
                r.check(&g, id_is(value)),
                Err(VerifyError::InsufficientScope("orders.{id}.read".into())),
                "{value:?} with {grant:?}: refused as unrenderable"
            );
        }
        // `orders.7.*` does cover the legitimate `orders.7.read`.
        assert!(r.check(&grants(&["orders.7.*"]), id_is("7")).is_ok());
    }

    fn segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_:-]{1,8}"
    }

    fn dotted(max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(segment(), 1..=max).prop_map(|v| v.join("."))
    }

    /// Grants over a tiny alphabet so that groups and exact grants collide.
    fn grant_text() -> impl Strategy<Value = String> {
        let seg = prop_oneof![Just("a"), Just("b"), Just("ab"), Just("*")];
        prop_oneof![
            Just("*".to_string()),
            prop::collection::vec(seg, 1..4).prop_map(|v| v.join(".")),
        ]
    }

    /// Required strings over the same alphabet.
    fn probe_text() -> impl Strategy<Value = String> {
        let seg = prop_oneof![Just("a"), Just("b"), Just("ab"), Just("*")];
        prop::collection::vec(seg, 1..5).prop_map(|v| v.join("."))
    }

    proptest! {
        #[test]
        fn group_grant_covers_exactly_its_subtree(prefix in dotted(3), rest in dotted(4), other in dotted(5)) {
            let g = Grants::new([format!("{prefix}.*")], false);
            let below = format!("{prefix}.{rest}");
            prop_assert!(g.covers(&below));
            let inside = other.starts_with(&format!("{prefix}.")) && other.len() > prefix.len() + 1;
            prop_assert_eq!(g.covers(&other), inside);
            prop_assert!(!g.covers(&prefix));
        }

        #[test]
        fn rendered_values_never_add_segments(
            value in prop_oneof![any::<String>(), "[ -~]{0,6}"],
            t in "[a-z]{1,4}(\\.(\\{id\\}|[a-z]{1,4})){0,3}\\.\\{id\\}",
        ) {
            let t = Template::parse(&t).unwrap();
            let segments = t.as_str().split('.').count();
            let acceptable = !value.is_empty()
                && value.bytes().all(|b| b.is_ascii_graphic())
                && !value.contains(['.', '*', '{', '}']);
            match t.render(|_| Some(value.as_str())) {
                Some(r) => {
                    prop_assert!(acceptable, "rendered with {:?}", value);
                    prop_assert_eq!(r.split('.').count(), segments);
                    prop_assert!(r.split('.').all(|s| !s.is_empty()), "empty segment in {:?}", r);
                    prop_assert!(r.bytes().all(|b| b.is_ascii_graphic() && b != b'*'), "{:?}", r);
                    prop_assert!(!r.contains(['{', '}']), "{:?}", r);
                }
                None => prop_assert!(!acceptable, "refused {:?}", value),
            }
        }

        /// Whatever `held.includes(g)` admits, everything `g` covers is
        /// covered by `held`: handing `g` on never widens what is held.
        #[test]
        fn an_included_grant_covers_nothing_more(
            held in prop::collection::vec(grant_text(), 0..4),
            given in grant_text(),
            probes in prop::collection::vec(probe_text(), 1..24),
            all in any::<bool>(),
        ) {
            let held = Grants::new(&held, all);
            let g = Grants::new([&given], all);
            if held.includes(&given, all) {
                for p in &probes {
                    prop_assert!(!g.covers(p) || held.covers(p), "{:?} covers {:?}", given, p);
                }
            }
        }

        #[test]
        fn exact_grants_match_by_equality(a in dotted(4), b in dotted(4)) {
            let g = Grants::new([&a], false);
            prop_assert_eq!(g.covers(&b), a == b);
        }
    }
}
