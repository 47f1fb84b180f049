//! Configuration errors name the file, line and column of the offending text
//! and say what to write instead.

mod common;

use common::*;
use keyward_gateway::Diagnostic;

const HEAD: &str = "listen = \"127.0.0.1:0\"\n\n[[issuer]]\nissuer = \"https://issuer.test\"\naudiences = [\"api://default\"]\njwks_file = \"jwks.json\"\n\n";
// HEAD is 7 lines; the first line after it is line 8.

/// The single (or first) diagnostic for HEAD + `rest`; also checks the
/// Display form.
fn diag(rest: &str) -> Diagnostic {
    let e = check(&format!("{HEAD}{rest}")).expect_err("config must be refused");
    let text = e.to_string();
    let first = &e.diagnostics[0];
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with(&format!(
            "gateway.toml:{}:{}: {}",
            first.line, first.column, first.message
        )),
        "{text}"
    );
    assert_eq!(lines[1], format!("fix: {}", first.fix), "{text}");
    first.clone()
}

const ROUTE: &str = "[[route]]\npath = \"/orders/{id}\"\nupstream = \"http://127.0.0.1:9000\"\n";

#[test]
fn the_example_config_is_valid_and_described() {
    // admin_listen after [[issuer]] belongs to the issuer table: refused
    // there, at its line, by name.
    let d = diag(&format!(
        "admin_listen = \"127.0.0.1:0\"\n{ROUTE}methods = [\"GET\"]\npermissions = {{ all_of = [\"orders.{{id}}.read\"] }}\nrate_limit = {{ per_subject = \"100/s\", per_client = \"1000/m\", burst = 20 }}\n"
    ));
    assert_eq!(d.line, 8, "{d:?}");
    assert!(
        d.message.starts_with("unknown field `admin_listen`"),
        "{d:?}"
    );
    let c = check(&format!(
        "admin_listen = \"127.0.0.1:0\"\n{HEAD}{ROUTE}methods = [\"GET\"]\npermissions = {{ all_of = [\"orders.{{id}}.read\"] }}\nrate_limit = {{ per_subject = \"100/s\", per_client = \"1000/m\", burst = 20 }}\n"
    ))
    .unwrap();
    let d = c.describe();
    for needle in [
        "GET",
        "/orders/{id}",
        "http://127.0.0.1:9000",
        "permissions all of [orders.{id}.read]",
        "100/s per subject (burst 20)",
        "1000/m per client (burst 20)",
        "https://issuer.test",
        "jwks_file",
        "audiences       api://default",
        "typ             at+jwt",
    ] {
        assert!(d.contains(needle), "{needle:?} missing from:\n{d}");
    }
}

#[test]
fn unknown_field() {
    let d = diag(&format!("{ROUTE}permisions = {{ all_of = [\"x\"] }}\n"));
    assert_eq!((d.line, d.column), (11, 1), "{d:?}");
    assert!(d.message.contains("unknown field `permisions`"), "{d:?}");
    assert!(d.fix.contains("permissions"), "{d:?}");
    // In a nested table too.
    let d = diag(&format!("{ROUTE}rate_limit = {{ per_user = \"1/s\" }}\n"));
    assert_eq!(d.line, 11, "{d:?}");
    assert!(
        d.message.contains("per_user") && d.fix.contains("per_subject"),
        "{d:?}"
    );
}

#[test]
fn bad_route_pattern() {
    let d = diag("[[route]]\npath = \"/orders/{id\"\nupstream = \"http://127.0.0.1:9000\"\n");
    // Column of "{id" inside the string: `path = "` is 8 chars, "/orders/" 8 more.
    assert_eq!((d.line, d.column), (9, 17), "{d:?}");
    assert!(d.message.contains("bad route path"), "{d:?}");
    assert!(d.fix.contains("{id}"), "{d:?}");
    let d = diag("[[route]]\npath = \"/a/*/b\"\nupstream = \"http://127.0.0.1:9000\"\n");
    assert_eq!((d.line, d.column), (9, 12), "{d:?}");
    assert!(d.fix.contains("prefix"), "{d:?}");
}

#[test]
fn permission_template_naming_a_missing_parameter() {
    let d = diag(&format!(
        "{ROUTE}permissions = {{ all_of = [\"orders.{{order_id}}.read\"] }}\n"
    ));
    assert_eq!(d.line, 11, "{d:?}");
    assert!(d.message.contains("{order_id}"), "{d:?}");
    assert!(d.fix.contains("{id}"), "{d:?}");
}

#[test]
fn unknown_issuer_reference() {
    let d = diag(&format!("{ROUTE}issuers = [\"https://other.test\"]\n"));
    assert_eq!((d.line, d.column), (11, 12), "{d:?}");
    assert!(d.message.contains("https://other.test"), "{d:?}");
    assert!(d.fix.contains("\"https://issuer.test\""), "{d:?}");
}

#[test]
fn invalid_urls_and_schemes() {
    let d = diag("[[route]]\npath = \"/a\"\nupstream = \"not a url\"\n");
    assert_eq!((d.line, d.column), (10, 12), "{d:?}");
    assert!(d.fix.contains("http://127.0.0.1:9000"), "{d:?}");
    // https:// upstreams are supported (tests/upstream_tls.rs); other schemes are not.
    let d = diag("[[route]]\npath = \"/a\"\nupstream = \"ws://127.0.0.1:9000\"\n");
    assert!(d.message.contains("scheme"), "{d:?}");
    let d = diag("[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:9000/base\"\n");
    assert!(d.fix.contains("strip_prefix"), "{d:?}");
    // An issuer over plain http to a non-loopback host (discovery).
    let e = check(&format!(
        "[[issuer]]\nissuer = \"http://auth.example\"\naudiences = [\"a\"]\n\n{ROUTE}"
    ))
    .unwrap_err();
    let d = &e.diagnostics[0];
    assert_eq!((d.line, d.column), (2, 10), "{d:?}");
    assert!(d.fix.contains("https://"), "{d:?}");
    let e = check(&format!(
        "[[issuer]]\nissuer = \"https://auth.example\"\naudiences = [\"a\"]\njwks_uri = \"ftp://x/jwks\"\n\n{ROUTE}"
    ))
    .unwrap_err();
    assert_eq!(e.diagnostics[0].line, 4, "{e}");
}

#[test]
fn forbidden_algorithms() {
    for alg in ["none", "HS256", "hs512"] {
        let e = check(&format!(
            "[[issuer]]\nissuer = \"https://auth.example\"\naudiences = [\"a\"]\nalgorithms = [\"ES256\", \"{alg}\"]\n\n{ROUTE}"
        ))
        .unwrap_err();
        let d = &e.diagnostics[0];
        assert_eq!((d.line, d.column), (4, 24), "{alg}: {d:?}");
        assert!(d.message.contains(alg), "{d:?}");
        assert!(
            d.fix.contains("asymmetric") && d.fix.contains("ES256"),
            "{d:?}"
        );
    }
}

#[test]
fn bad_durations_and_rates() {
    let d = diag(&format!("{ROUTE}timeout = \"30 parsecs\"\n"));
    assert_eq!((d.line, d.column), (11, 11), "{d:?}");
    assert!(d.fix.contains("30s"), "{d:?}");
    let d = diag(&format!(
        "{ROUTE}rate_limit = {{ per_subject = \"lots\" }}\n"
    ));
    assert_eq!(d.line, 11, "{d:?}");
    assert!(d.fix.contains("100/s"), "{d:?}");
}

#[test]
fn duplicate_route() {
    let d = diag(&format!(
        "{ROUTE}\n[[route]]\npath = \"/orders/{{n}}\"\nupstream = \"http://127.0.0.1:9001\"\n"
    ));
    assert_eq!((d.line, d.column), (13, 8), "{d:?}");
    assert!(d.message.contains("line 9"), "{d:?}");
    assert!(d.fix.contains("first match wins"), "{d:?}");
}

#[test]
fn toml_syntax_and_types() {
    let d = diag("[[route]]\npath = \"/a\nupstream = \"http://127.0.0.1:9000\"\n");
    assert_eq!(d.line, 9, "{d:?}");
    let d = diag("[[route]]\npath = \"/a\"\nupstream = \"http://127.0.0.1:9000\"\nforward_authorization = \"yes\"\n");
    assert_eq!((d.line, d.column), (11, 25), "{d:?}");
    assert!(d.fix.contains("true or false"), "{d:?}");
    let d = diag("[[route]]\npath = \"/a\"\n");
    assert!(d.message.contains("missing field `upstream`"), "{d:?}");
    assert!(d.fix.contains("upstream = "), "{d:?}");
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = check(&format!(
        "{HEAD}[[route]]\npath = \"/a/{{x\"\nupstream = \"gopher://x\"\ntimeout = \"never\"\nissuers = [\"nobody\"]\n"
    ))
    .unwrap_err();
    let lines: Vec<usize> = e.diagnostics.iter().map(|d| d.line).collect();
    assert_eq!(lines, vec![9, 10, 11, 12], "{e}");
    assert_eq!(e.to_string().matches("\nfix: ").count(), 4, "{e}");
}

#[test]
fn anonymous_routes_cannot_have_requirements() {
    let d = diag(&format!("{ROUTE}anonymous = true\nscopes = [\"a\"]\n"));
    assert_eq!(d.line, 11, "{d:?}");
    assert!(d.fix.contains("anonymous"), "{d:?}");
}

#[test]
fn identity_header_names() {
    let d = diag(&format!(
        "{ROUTE}\n[identity_headers]\nsubject = \"Authorization\"\n"
    ));
    assert_eq!(d.line, 13, "{d:?}");
    let d = diag(&format!(
        "{ROUTE}\n[identity_headers]\nsubject = \"X-Who\"\nclient = \"x-who\"\n"
    ));
    assert_eq!(d.line, 14, "{d:?}");
    let c = check(&format!(
        "{HEAD}{ROUTE}\n[identity_headers]\nscopes = \"\"\n"
    ))
    .unwrap();
    assert!(c.identity_headers.scopes.is_none());
}

/// `HEAD` with `top` (top-level settings) before the issuer, and a route.
fn with_top(top: &str) -> Result<keyward_gateway::Config, keyward_gateway::ConfigError> {
    check(&format!("{top}\n{HEAD}{ROUTE}"))
}

#[test]
fn redis_settings() {
    // Off by default: limits and the replay cache stay per replica.
    let c = with_top("").unwrap();
    assert!(c.redis.is_none());
    assert!(c.describe().contains("redis             (off"));

    let c = with_top("redis_url = \"redis://:s3cret@127.0.0.1:6390/2\"").unwrap();
    let r = c.redis.as_ref().unwrap();
    assert_eq!(r.prefix, "keyward:gw:");
    assert_eq!(r.timeout, std::time::Duration::from_millis(10));
    assert!(
        r.replay_fail_closed,
        "a replay check that silently stops is a hole"
    );
    assert_eq!(r.url.expose(), "redis://:s3cret@127.0.0.1:6390/2");
    // The password is never printed: not by --check, not by Debug.
    for shown in [c.describe(), format!("{c:?}")] {
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("redis://:***@127.0.0.1:6390/2"), "{shown}");
    }

    let c = with_top(
        "redis_url = \"redis://127.0.0.1\"\nredis_prefix = \"kw:prod:\"\nredis_timeout = \"3ms\"\ndpop_replay_fail_closed = false",
    )
    .unwrap();
    let r = c.redis.unwrap();
    assert_eq!(
        (
            r.prefix.as_str(),
            r.timeout.as_millis(),
            r.replay_fail_closed
        ),
        ("kw:prod:", 3, false)
    );

    for (top, line, message) in [
        ("redis_url = \"http://127.0.0.1:6379\"", 1, "redis_url: "),
        ("redis_url = \"\"", 1, "redis_url: "),
        (
            "redis_url = \"redis://127.0.0.1\"\nredis_prefix = \"\"",
            2,
            "redis_prefix \"\" must be",
        ),
        (
            "redis_url = \"redis://127.0.0.1\"\nredis_prefix = \"a b\"",
            2,
            "redis_prefix \"a b\" must be",
        ),
        (
            "redis_url = \"redis://127.0.0.1\"\nredis_timeout = \"0s\"",
            2,
            "redis_timeout must be longer than 0",
        ),
        (
            "redis_url = \"redis://127.0.0.1\"\nredis_timeout = \"fast\"",
            2,
            "redis_timeout: \"fast\" is not a duration",
        ),
        (
            "redis_url = \"redis://127.0.0.1\"\nredis_timeout = \"1m\"",
            2,
            "redis_timeout above 5s",
        ),
        ("redis_prefix = \"p:\"", 1, "this setting needs redis_url"),
        ("redis_timeout = \"5ms\"", 1, "this setting needs redis_url"),
        (
            "dpop_replay_fail_closed = false",
            1,
            "this setting needs redis_url",
        ),
        ("redis_url = 6379", 1, "invalid type"),
    ] {
        let e = with_top(top).expect_err(top);
        let d = &e.diagnostics[0];
        assert_eq!(d.line, line, "{top}: {e}");
        assert!(d.message.starts_with(message), "{top}: {e}");
        assert!(!d.fix.is_empty(), "{top}: {e}");
    }
}
