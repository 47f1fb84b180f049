//! `keyward up`'s DEVELOPMENT ONLY login page: the newcomer's first command
//! shows the whole browser flow. The authorization URL `up` prints leads
//! (as a browser would follow it) to the development login page, any
//! username signs in, the consent page grants the scopes, the callback page
//! shows the code and a `curl` that redeems it for an ID token whose `sub`
//! is that username. `serve` does not serve the page unless told to, and a
//! cross-site POST to it is refused and changes nothing.

mod common;

use std::collections::HashMap;

use common::{http, send, Kw, Resp};
use reqwest::header::{COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::Value;

/// A browser's cookies, by hand (the tests' reqwest has no cookie store).
#[derive(Default)]
struct Jar(HashMap<String, String>);

impl Jar {
    fn take(&mut self, r: &Resp) {
        for v in r.headers.get_all(SET_COOKIE) {
            let pair = v.to_str().unwrap().split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            self.0.insert(k.trim().into(), v.trim().into());
        }
    }
    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

async fn browse(jar: &mut Jar, url: &str) -> Resp {
    let r = send(no_redirects().get(url).header(COOKIE, jar.header())).await;
    jar.take(&r);
    r
}

async fn post_form(jar: &mut Jar, url: &str, form: &[(&str, &str)], origin: &str) -> Resp {
    let r = send(
        no_redirects()
            .post(url)
            .header(COOKIE, jar.header())
            .header(ORIGIN, origin)
            .form(form),
    )
    .await;
    jar.take(&r);
    r
}

fn location(r: &Resp) -> String {
    assert!(
        (300..400).contains(&r.status),
        "expected a redirect: {} {}",
        r.status,
        r.text()
    );
    r.header(LOCATION.as_str()).unwrap()
}

fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!("name=\"{name}\" value=\""))
        .unwrap_or_else(|| panic!("no {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_string()
}

fn query(url: &str, name: &str) -> String {
    let q = url.split_once('?').unwrap().1;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

fn payload(jwt: &str) -> Value {
    use base64::Engine as _;
    let p = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(p)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_shows_the_whole_browser_flow_with_its_development_login_page() {
    let kw = Kw::new();
    let mut server = kw.start_server(&["up", "--listen", "127.0.0.1:0"], &[]);
    let issuer = format!("http://{}", server.addr);
    let banner = server.banner.clone();
    let at = banner
        .iter()
        .position(|l| l.starts_with("sign in with a browser (DEVELOPMENT ONLY"))
        .unwrap_or_else(|| panic!("{banner:#?}"));
    let authorize = banner[at + 1].trim().to_string();
    assert!(authorize.starts_with(&format!("{issuer}/oauth2/authorize?")));

    // authorize -> the development login page.
    let mut jar = Jar::default();
    let to_login = location(&browse(&mut jar, &authorize).await);
    assert!(
        to_login.starts_with(&format!("{issuer}/dev/login/default?login_challenge=")),
        "{to_login}"
    );
    let page = browse(&mut jar, &to_login).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains("DEVELOPMENT ONLY"), "{html}");
    assert_eq!(page.header("cache-control").as_deref(), Some("no-store"));
    assert!(page.header("content-security-policy").is_some());
    let challenge = hidden(&html, "login_challenge");

    // A cross-site POST is refused, and the challenge is still open.
    let login_url = to_login.split('?').next().unwrap().to_string();
    let refused = post_form(
        &mut jar,
        &login_url,
        &[("login_challenge", &challenge), ("username", "mallory")],
        "http://evil.example",
    )
    .await;
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert_eq!(browse(&mut jar, &to_login).await.status, 200);

    // Any username signs in.
    let accepted = post_form(
        &mut jar,
        &login_url,
        &[
            ("login_challenge", &challenge),
            ("username", "ada"),
            ("action", "accept"),
        ],
        &issuer,
    )
    .await;
    let back = location(&accepted);
    assert!(
        back.starts_with(&format!("{issuer}/oauth2/authorize?")),
        "{back}"
    );
    // The same challenge again: already decided.
    let again = post_form(
        &mut jar,
        &login_url,
        &[("login_challenge", &challenge), ("username", "eve")],
        &issuer,
    )
    .await;
    assert_eq!(again.status, 409, "{}", again.text());

    // Consent: the requested scopes, all granted.
    let to_consent = location(&browse(&mut jar, &back).await);
    assert!(
        to_consent.starts_with(&format!("{issuer}/dev/consent/default?consent_challenge=")),
        "{to_consent}"
    );
    let html = browse(&mut jar, &to_consent).await.text();
    assert!(html.contains("DEVELOPMENT ONLY"));
    let k = hidden(&html, "consent_challenge");
    let consent_url = to_consent.split('?').next().unwrap().to_string();
    let granted = post_form(
        &mut jar,
        &consent_url,
        &[
            ("consent_challenge", &k),
            ("grant_scope", "openid"),
            ("grant_scope", "profile"),
            ("grant_scope", "email"),
            ("grant_scope", "offline_access"),
            ("action", "accept"),
        ],
        &issuer,
    )
    .await;
    let back = location(&granted);
    let callback = location(&browse(&mut jar, &back).await);
    assert!(
        callback.starts_with(&format!("{issuer}/dev/callback?")),
        "{callback}"
    );
    assert_eq!(query(&callback, "state"), "demo");
    let page = browse(&mut jar, &callback).await;
    assert_eq!(page.status, 200);
    let html = page.text();
    let code = query(&callback, "code");
    assert!(html.contains(&code));

    // The page's curl, run as curl would.
    let start = html.find("curl -s ").unwrap();
    let curl = &html[start..start + html[start..].find("</pre>").unwrap()];
    let words: Vec<&str> = curl.split_whitespace().collect();
    let mut form: Vec<(String, String)> = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if *w == "-d" || *w == "--data-urlencode" {
            let (k, v) = words[i + 1].split_once('=').unwrap();
            form.push((k.into(), v.into()));
        }
    }
    let url = *words.last().unwrap();
    assert_eq!(url, format!("{issuer}/oauth2/token"));
    let tokens = send(http().post(url).form(&form)).await.ok_json();
    let id = payload(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["sub"], "ada");
    assert_eq!(id["iss"], issuer.as_str());
    assert_eq!(id["nonce"], "demo");
    assert!(tokens["refresh_token"].as_str().is_some(), "{tokens:#}");
    assert_eq!(
        payload(tokens["access_token"].as_str().unwrap())["sub"],
        "ada"
    );

    // The audit log names the development page as the decider.
    let audit = kw.run(&["audit", "list", "--json"]).ok().json();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["actor"].as_str().unwrap_or("").starts_with("dev-login")),
        "{audit:#}"
    );
    assert_eq!(server.stop().code(), Some(0));

    // `serve` on the same data dir: no development page.
    let served = kw.start_server(&["serve", "--listen", &server.addr], &[]);
    let r = browse(&mut Jar::default(), &to_login).await;
    assert_eq!(r.status, 404, "{}", r.text());
    drop(served);
    // ... unless told to.
    let served = kw.start_server(
        &["serve", "--listen", &server.addr],
        &[("KEYWARD_DEV_LOGIN", "true")],
    );
    let r = browse(
        &mut Jar::default(),
        &format!("{login_url}?login_challenge=x"),
    )
    .await;
    assert_eq!(r.status, 404, "an unknown challenge: {}", r.text());
    assert!(r.text().contains("DEVELOPMENT ONLY"));

    // An environment with a real login app is never decided by the
    // development page, even when a user brings its challenge there.
    kw.run(&[
        "env",
        "update",
        "default",
        "--login-url",
        "https://login.example.com/login",
    ])
    .ok();
    let mut jar = Jar::default();
    let to_app = location(&browse(&mut jar, &authorize).await);
    assert!(
        to_app.starts_with("https://login.example.com/login?login_challenge="),
        "{to_app}"
    );
    let challenge = query(&to_app, "login_challenge");
    let audit_len = || {
        kw.run(&["audit", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    let before = audit_len();
    let r = browse(
        &mut jar,
        &format!("{login_url}?login_challenge={challenge}"),
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(r.text().contains("does not use the development login page"));
    let r = post_form(
        &mut jar,
        &login_url,
        &[("login_challenge", &challenge), ("username", "mallory")],
        &issuer,
    )
    .await;
    assert_eq!(r.status, 404, "{}", r.text());
    // Nothing was decided (an accepted login is audited).
    assert_eq!(audit_len(), before);
    drop(served);
}
