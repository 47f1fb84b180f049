//! Route patterns and the route table.
//!
//! A pattern is `/`-separated segments, each literal text or a whole-segment
//! parameter `{name}`, optionally ending in `/*` to match a prefix:
//!
//! - `/orders/{id}` matches `/orders/42` (id = `42`), not `/orders`,
//!   `/orders/` or `/orders/42/items`; a trailing slash is significant;
//! - `/orders/*` matches `/orders`, `/orders/` and everything below it;
//!   `/*` matches every path;
//! - parameters match one non-empty segment; values are the raw
//!   (percent-encoded) text of the request path.
//!
//! Routes are tried in file order and the first whose pattern and method
//! match wins (as in Envoy's route list). If some route's pattern matches but
//! none allows the method, the answer is 405 with `Allow` listing the methods
//! of every route whose pattern matched.
//!
//! Patterns are compiled once; matching walks the request path in place and
//! records parameter values as slices of it, so it allocates nothing.
//!
//! Request paths that a server behind the gateway might resolve differently
//! from the gateway are refused before matching ([`check_path`]): dot
//! segments (`.`, `..`, also percent-encoded or followed by `;`), empty
//! segments (`//`), encoded slashes and backslashes (`%2F`, `%5C`, `\`). An
//! authorizing proxy must see the same path as the server it protects.

use http::Method;

/// Most parameters a pattern may have.
pub const MAX_PARAMS: usize = 8;

/// One segment of a compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(Box<str>),
    Param(Box<str>),
}

/// A compiled route pattern.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    text: Box<str>,
    segments: Box<[Segment]>,
    /// Ends in `/*`.
    prefix: bool,
}

/// Why a pattern could not be compiled: a byte offset into the pattern
/// text, what is wrong and what to write instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PatternError {
    /// Byte offset into the pattern of the offending text.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub fix: String,
}

fn literal_byte(b: u8) -> bool {
    // RFC 3986 pchar, minus what the pattern syntax reserves ('{', '}', '*').
    b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@%".contains(&b)
}

impl Pattern {
    /// Compiles a pattern such as `/orders/{id}` or `/static/*`.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        let err = |offset: usize, message: String, fix: &str| PatternError {
            offset,
            message,
            fix: fix.to_string(),
        };
        let Some(body) = text.strip_prefix('/') else {
            return Err(err(
                0,
                format!("route path {text:?} does not start with '/'"),
                "write an absolute path such as \"/orders/{id}\"",
            ));
        };
        let (body, prefix) = if body == "*" {
            ("", true)
        } else if let Some(b) = body.strip_suffix("/*") {
            (b, true)
        } else {
            (body, false)
        };
        let mut segments = Vec::new();
        let mut params: Vec<&str> = Vec::new();
        if !(prefix && body.is_empty()) {
            let mut offset = 1;
            let count = body.split('/').count();
            for (i, seg) in body.split('/').enumerate() {
                let last = i + 1 == count;
                if seg.is_empty() && (prefix || !last) {
                    return Err(err(
                        offset,
                        format!("route path {text:?} has an empty segment (\"//\")"),
                        "remove the extra '/'",
                    ));
                }
                if seg == "." || seg == ".." {
                    return Err(err(
                        offset,
                        format!("route path {text:?} has a dot segment {seg:?}"),
                        "write the path without '.' and '..' segments",
                    ));
                }
                if let Some(inner) = seg.strip_prefix('{') {
                    let Some(name) = inner.strip_suffix('}') else {
                        return Err(err(
                            offset,
                            format!("segment {seg:?} opens '{{' but is not exactly \"{{name}}\""),
                            "a parameter fills a whole segment: write \"/orders/{id}\"",
                        ));
                    };
                    let valid = name
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    if !valid {
                        return Err(err(
                            offset,
                            format!("parameter {seg:?} needs a name of letters, digits and '_' (not starting with a digit)"),
                            "write a parameter such as \"{id}\" or \"{order_id}\"",
                        ));
                    }
                    if params.contains(&name) {
                        return Err(err(
                            offset,
                            format!("parameter {{{name}}} appears twice in {text:?}"),
                            "give each parameter a different name",
                        ));
                    }
                    if params.len() == MAX_PARAMS {
                        return Err(err(
                            offset,
                            format!("route path {text:?} has more than {MAX_PARAMS} parameters"),
                            "use at most 8 parameters, or a \"/*\" prefix route",
                        ));
                    }
                    params.push(name);
                    segments.push(Segment::Param(name.into()));
                } else if let Some(pos) = seg.bytes().position(|b| !literal_byte(b)) {
                    let c = seg[pos..].chars().next().unwrap_or(' ');
                    let fix = match c {
                        '*' => "'*' may only end a path, as \"/prefix/*\" (a prefix match)",
                        '{' | '}' => "a parameter fills a whole segment: write \"/orders/{id}\"",
                        '?' | '#' => "a route matches the path only; remove the query or fragment",
                        _ => "percent-encode the character, or remove it",
                    };
                    return Err(err(
                        offset + pos,
                        format!("route path {text:?} contains {c:?}"),
                        fix,
                    ));
                } else {
                    segments.push(Segment::Literal(seg.into()));
                }
                offset += seg.len() + 1;
            }
        }
        Ok(Pattern {
            text: text.into(),
            segments: segments.into_boxed_slice(),
            prefix,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the pattern ends in `/*`.
    pub fn is_prefix(&self) -> bool {
        self.prefix
    }

    /// Parameter names, in path order.
    pub fn params(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Param(p) => Some(&**p),
            Segment::Literal(_) => None,
        })
    }

    /// The leading literal segments, joined as a path (`/api/v1` for
    /// `/api/v1/{id}`); `""` when the pattern starts with a parameter.
    pub fn literal_prefix(&self) -> String {
        let mut out = String::new();
        for s in self.segments.iter() {
            match s {
                Segment::Literal(l) => {
                    out.push('/');
                    out.push_str(l);
                }
                Segment::Param(_) => break,
            }
        }
        out
    }

    /// Whether two patterns match exactly the same paths (parameter names
    /// aside).
    pub fn same_shape(&self, other: &Pattern) -> bool {
        self.prefix == other.prefix
            && self.segments.len() == other.segments.len()
            && self
                .segments
                .iter()
                .zip(other.segments.iter())
                .all(|(a, b)| match (a, b) {
                    (Segment::Literal(x), Segment::Literal(y)) => x == y,
                    (Segment::Param(_), Segment::Param(_)) => true,
                    _ => false,
                })
    }

    /// Matches `path` (which starts with `/`), recording parameter values
    /// in `caps`. No allocation.
    pub fn matches<'p>(&self, path: &'p str, caps: &mut Captures<'p>) -> bool {
        caps.len = 0;
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let n = self.segments.len();
        for (i, seg) in self.segments.iter().enumerate() {
            let (s, tail) = match rest.find('/') {
                Some(j) => (&rest[..j], Some(&rest[j + 1..])),
                None => (rest, None),
            };
            match seg {
                Segment::Literal(l) => {
                    if s != &**l {
                        return false;
                    }
                }
                Segment::Param(_) => {
                    if s.is_empty() || caps.len == MAX_PARAMS {
                        return false;
                    }
                    caps.values[caps.len] = s;
                    caps.len += 1;
                }
            }
            match tail {
                Some(t) => rest = t,
                // The path ends here: a match if the pattern does too (a
                // prefix pattern also matches its bare prefix).
                None => return i + 1 == n,
            }
        }
        // The pattern is used up and the path goes on (after a '/').
        self.prefix
    }

    /// The value of parameter `name` in `caps` (from a successful
    /// [`Pattern::matches`]).
    pub fn param<'p>(&self, caps: &Captures<'p>, name: &str) -> Option<&'p str> {
        self.params()
            .position(|p| p == name)
            .filter(|i| *i < caps.len)
            .map(|i| caps.values[i])
    }
}

/// Parameter values of a match, as slices of the request path.
#[derive(Clone, Copy, Debug)]
pub struct Captures<'p> {
    values: [&'p str; MAX_PARAMS],
    len: usize,
}

impl Default for Captures<'_> {
    fn default() -> Self {
        Captures {
            values: [""; MAX_PARAMS],
            len: 0,
        }
    }
}

impl<'p> Captures<'p> {
    /// The values, in path order.
    pub fn values(&self) -> &[&'p str] {
        &self.values[..self.len]
    }
}

/// What a route table says about a request.
#[derive(Debug)]
pub enum RouteMatch<'p> {
    /// Route `index` matches; `caps` holds its parameter values.
    Found {
        /// Index into the table.
        index: usize,
        /// Parameter values.
        caps: Captures<'p>,
    },
    /// Some route's pattern matches, none allows the method; the value
    /// for an `Allow` header.
    MethodNotAllowed(String),
    /// No pattern matches.
    NotFound,
}

/// One entry of a [`RouteTable`].
#[derive(Clone, Debug)]
pub struct RouteEntry {
    /// The compiled pattern.
    pub pattern: Pattern,
    /// Allowed methods; `None` allows every method. `GET` also allows `HEAD`.
    pub methods: Option<Box<[Method]>>,
}

impl RouteEntry {
    /// Whether the entry allows `m`.
    pub fn allows(&self, m: &Method) -> bool {
        match &self.methods {
            None => true,
            Some(list) => list
                .iter()
                .any(|x| x == m || (*m == Method::HEAD && *x == Method::GET)),
        }
    }
}

/// Routes in file order; the first match wins.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    entries: Vec<RouteEntry>,
}

impl RouteTable {
    /// A table of `entries`, tried in order.
    pub fn new(entries: Vec<RouteEntry>) -> Self {
        RouteTable { entries }
    }

    /// The entries.
    pub fn entries(&self) -> &[RouteEntry] {
        &self.entries
    }

    /// Finds the route for `method` and `path`.
    pub fn find<'p>(&self, method: &Method, path: &'p str) -> RouteMatch<'p> {
        let mut caps = Captures::default();
        let mut path_matched = false;
        for (index, e) in self.entries.iter().enumerate() {
            if e.pattern.matches(path, &mut caps) {
                if e.allows(method) {
                    return RouteMatch::Found { index, caps };
                }
                path_matched = true;
            }
        }
        if !path_matched {
            return RouteMatch::NotFound;
        }
        // Error path: collect the methods of every route matching the path.
        let mut allow: Vec<&str> = Vec::new();
        for e in &self.entries {
            if e.pattern.matches(path, &mut caps) {
                for m in e.methods.iter().flat_map(|l| l.iter()) {
                    if !allow.contains(&m.as_str()) {
                        allow.push(m.as_str());
                    }
                    if *m == Method::GET && !allow.contains(&"HEAD") {
                        allow.push("HEAD");
                    }
                }
            }
        }
        RouteMatch::MethodNotAllowed(allow.join(", "))
    }
}

/// Refuses request paths that an upstream might resolve to another route
/// than the gateway did (see the module docs). `Err` says why.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    let Some(body) = path.strip_prefix('/') else {
        return Err("the request target must be an absolute path");
    };
    if path.bytes().any(|b| b == b'\\') {
        return Err("the path contains a backslash");
    }
    if path.contains('%') {
        let bytes = path.as_bytes();
        for i in 0..bytes.len().saturating_sub(2) {
            if bytes[i] == b'%' {
                let code = [
                    bytes[i + 1].to_ascii_uppercase(),
                    bytes[i + 2].to_ascii_uppercase(),
                ];
                if code == *b"2F" || code == *b"5C" {
                    return Err("the path contains an encoded '/' or '\\'");
                }
            }
        }
    }
    let mut segments = body.split('/').peekable();
    while let Some(seg) = segments.next() {
        // Only the last segment may be empty (a trailing slash).
        if seg.is_empty() && segments.peek().is_some() {
            return Err("the path contains an empty segment (\"//\")");
        }
        // `..;x` is `..` to some servlet containers.
        let seg = seg.find(';').map_or(seg, |i| &seg[..i]);
        if is_dot_segment(seg) {
            return Err("the path contains a '.' or '..' segment");
        }
    }
    Ok(())
}

/// `.`, `..`, or either with dots percent-encoded.
fn is_dot_segment(seg: &str) -> bool {
    let mut dots = 0;
    let mut rest = seg;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            rest = r;
        } else if rest.len() >= 3 && rest[..3].eq_ignore_ascii_case("%2e") {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
    }
    (1..=2).contains(&dots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, path: &str) -> Option<Vec<String>> {
        let p = Pattern::parse(p).unwrap();
        let mut caps = Captures::default();
        p.matches(path, &mut caps)
            .then(|| caps.values().iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn literal_and_param_segments() {
        assert_eq!(m("/orders/{id}", "/orders/42"), Some(vec!["42".into()]));
        assert_eq!(m("/orders/{id}", "/orders"), None);
        assert_eq!(m("/orders/{id}", "/orders/"), None);
        assert_eq!(m("/orders/{id}", "/orders/42/x"), None);
        assert_eq!(m("/orders/{id}", "/orders/42/"), None);
        assert_eq!(m("/orders/{id}", "/order/42"), None);
        assert_eq!(
            m("/a/{x}/b/{y}", "/a/1/b/2"),
            Some(vec!["1".into(), "2".into()])
        );
        assert_eq!(m("/", "/"), Some(vec![]));
        assert_eq!(m("/", "/x"), None);
        assert_eq!(m("/a/", "/a/"), Some(vec![]));
        assert_eq!(m("/a/", "/a"), None);
        assert_eq!(m("/health", "/health"), Some(vec![]));
        assert_eq!(m("/health", "/healthz"), None);
    }

    #[test]
    fn prefix_patterns() {
        assert_eq!(m("/static/*", "/static"), Some(vec![]));
        assert_eq!(m("/static/*", "/static/"), Some(vec![]));
        assert_eq!(m("/static/*", "/static/a/b/c"), Some(vec![]));
        assert_eq!(m("/static/*", "/staticx"), None);
        assert_eq!(m("/static/*", "/"), None);
        assert_eq!(m("/*", "/"), Some(vec![]));
        assert_eq!(m("/*", "/anything/at/all"), Some(vec![]));
        assert_eq!(m("/u/{id}/*", "/u/7/files/x"), Some(vec!["7".into()]));
        assert_eq!(m("/u/{id}/*", "/u/7"), Some(vec!["7".into()]));
    }

    #[test]
    fn bad_patterns_say_where() {
        for (p, offset, needle) in [
            ("orders", 0, "start with '/'"),
            ("/a//b", 3, "empty segment"),
            ("/a/{id", 3, "exactly"),
            ("/a/{1x}", 3, "name"),
            ("/a/{x}/{x}", 7, "twice"),
            ("/a/*/b", 3, "'*'"),
            ("/a/x*", 4, "'*'"),
            ("/a/b{x}", 4, "'{'"),
            ("/a?x=1", 2, "'?'"),
            ("/a/../b", 3, "dot segment"),
            ("/a b", 2, "' '"),
        ] {
            let e = Pattern::parse(p).unwrap_err();
            assert_eq!(e.offset, offset, "{p}: {e:?}");
            assert!(e.message.contains(needle), "{p}: {e:?}");
            assert!(!e.fix.is_empty());
        }
        let many = (0..9).map(|i| format!("/{{p{i}}}")).collect::<String>();
        assert!(Pattern::parse(&many)
            .unwrap_err()
            .message
            .contains("more than"));
    }

    #[test]
    fn shapes_and_prefixes() {
        let a = Pattern::parse("/orders/{id}").unwrap();
        let b = Pattern::parse("/orders/{order}").unwrap();
        let c = Pattern::parse("/orders/*").unwrap();
        assert!(a.same_shape(&b));
        assert!(!a.same_shape(&c));
        assert_eq!(a.literal_prefix(), "/orders");
        assert_eq!(a.params().collect::<Vec<_>>(), vec!["id"]);
        let mut caps = Captures::default();
        assert!(a.matches("/orders/9", &mut caps));
        assert_eq!(a.param(&caps, "id"), Some("9"));
        assert_eq!(a.param(&caps, "nope"), None);
    }

    #[test]
    fn table_first_match_and_405() {
        let e = |p: &str, ms: Option<&[Method]>| RouteEntry {
            pattern: Pattern::parse(p).unwrap(),
            methods: ms.map(|m| m.to_vec().into_boxed_slice()),
        };
        let t = RouteTable::new(vec![
            e("/orders/{id}", Some(&[Method::GET])),
            e("/orders/{id}", Some(&[Method::DELETE])),
            e("/orders/*", Some(&[Method::POST])),
            e("/public/*", None),
        ]);
        match t.find(&Method::GET, "/orders/1") {
            RouteMatch::Found { index, caps } => {
                assert_eq!(index, 0);
                assert_eq!(caps.values(), ["1"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.find(&Method::HEAD, "/orders/1"),
            RouteMatch::Found { index: 0, .. }
        ));
        assert!(matches!(
            t.find(&Method::DELETE, "/orders/1"),
            RouteMatch::Found { index: 1, .. }
        ));
        assert!(matches!(
            t.find(&Method::POST, "/orders/1"),
            RouteMatch::Found { index: 2, .. }
        ));
        match t.find(&Method::PUT, "/orders/1") {
            RouteMatch::MethodNotAllowed(allow) => assert_eq!(allow, "GET, HEAD, DELETE, POST"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            t.find(&Method::PATCH, "/public/x"),
            RouteMatch::Found { index: 3, .. }
        ));
        assert!(matches!(
            t.find(&Method::GET, "/nope"),
            RouteMatch::NotFound
        ));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for ok in [
            "/",
            "/a",
            "/a/",
            "/a/b.c",
            "/a/...",
            "/a/%2e%2e%2e",
            "/a/b;c",
            "/a/%41",
            "/a/b/",
            "/a/..b;c",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        let abs = "the request target must be an absolute path";
        let backslash = "the path contains a backslash";
        let encoded = "the path contains an encoded '/' or '\\'";
        let empty = "the path contains an empty segment (\"//\")";
        let dot = "the path contains a '.' or '..' segment";
        for (bad, why) in [
            ("*", abs),
            ("a", abs),
            ("/a//b", empty),
            ("//a", empty),
            ("/a/../b", dot),
            ("/a/./b", dot),
            ("/..", dot),
            ("/a/..;/b", dot),
            ("/a/%2e%2E/b", dot),
            ("/a/.%2e", dot),
            ("/a/%2e", dot),
            ("/a%2fb", encoded),
            ("/a%5Cb", encoded),
            ("/a\\b", backslash),
            ("/a/b//", empty),
            ("/a/.;x", dot),
            ("/a/..;", dot),
            ("/..;x/b", dot),
            ("/a/..", dot),
        ] {
            assert_eq!(check_path(bad), Err(why), "{bad}");
        }
    }
}
