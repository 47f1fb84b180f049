//! One test per bad-input class of DESIGN.md rule 1, through the proxy:
//! each token is refused with 401 and the upstream is never reached. Each
//! bad token differs from a good one in one respect, and the good one is
//! shown to pass first.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use common::*;
use keyward_jose::TokenSigner;
use serde_json::{json, Value};

const ROUTES: &str = "[[route]]\npath = \"/*\"\nupstream = \"{UP}\"\n";

/// Asserts every token gets 401 `invalid_token` for its own reason (the
/// `error_description` starts with the third element) and the upstream no
/// hit, after a good token got through (one hit).
async fn refused(tokens: &[(&str, String, &str)]) {
    refused_with(tokens, &[]).await
}

async fn refused_with(tokens: &[(&str, String, &str)], extra_keys: &[Value]) {
    let up = upstream().await;
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{}\n{}",
        issuer_section(),
        ROUTES.replace("{UP}", &up.origin())
    );
    let gw = start_with(&text, &jwks(extra_keys)).await;
    let good = get_with(&gw.url("/x"), &token()).await;
    assert_eq!(good.status, 200, "the baseline token must pass");
    assert_eq!(up.hits(), 1);
    for (what, t, why) in tokens {
        let r = get_with(&gw.url("/x"), t).await;
        assert_eq!(r.status, 401, "{what}: {:?}", r.body);
        let w = r.header("www-authenticate").unwrap_or_default();
        let want =
            format!("Bearer realm=\"keyward\", error=\"invalid_token\", error_description=\"{why}");
        assert!(w.starts_with(&want), "{what}: {w}\nwanted: {want}...");
        assert_eq!(up.hits(), 1, "{what} reached the upstream");
    }
}

fn h(v: Value) -> String {
    v.to_string()
}

fn c() -> String {
    claims().to_string()
}

fn with_claim(name: &str, v: Value) -> String {
    let mut c = claims();
    c[name] = v;
    token_for(&c)
}

#[tokio::test]
async fn alg_none() {
    let unsigned = |alg: &str| {
        format!(
            "{}.{}.",
            B64.encode(h(json!({"alg": alg, "kid": KID, "typ": "at+jwt"})).as_bytes()),
            B64.encode(c().as_bytes())
        )
    };
    refused(&[
        (
            "alg none",
            unsigned("none"),
            "token algorithm 'none' is never accepted",
        ),
        (
            "alg None",
            unsigned("None"),
            "token algorithm 'None' is never accepted",
        ),
        (
            "alg NONE",
            unsigned("NONE"),
            "token algorithm 'NONE' is never accepted",
        ),
    ])
    .await;
}

#[tokio::test]
async fn hs256_keyed_with_the_public_key() {
    let public = signer().key().public_key();
    let mut tokens = Vec::new();
    for secret in [
        public.to_pem().into_bytes(),
        public.to_spki_der(),
        signer().public_jwk().to_json().into_bytes(),
    ] {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        header.kid = Some(KID.into());
        let t = jsonwebtoken::encode(
            &header,
            &claims(),
            &jsonwebtoken::EncodingKey::from_secret(&secret),
        )
        .unwrap();
        tokens.push((
            "HS256 with the public key as secret",
            t,
            "token algorithm 'HS256' is never accepted",
        ));
    }
    refused(&tokens).await;
}

#[tokio::test]
async fn unknown_crit() {
    let mut hd = header();
    hd["crit"] = json!(["x-must-understand"]);
    hd["x-must-understand"] = json!(true);
    refused(&[(
        "unknown crit",
        signed_raw(signer(), &h(hd), &c()),
        "token header has an unknown critical extension 'x-must-understand'",
    )])
    .await;
}

#[tokio::test]
async fn jku_jwk_x5u_headers_pointing_to_an_attacker_key() {
    let evil = attacker().public_jwk().to_value();
    let mut tokens = Vec::new();
    // The embedded key is never used: the kid alone picks the key, so an
    // unknown kid is refused as such and ours fails the signature.
    for (kid, why) in [
        ("attacker", "no key with the token's kid"),
        (KID, "signature does not verify"),
    ] {
        for (member, value) in [
            ("jwk", evil.clone()),
            ("jku", json!("http://127.0.0.1:1/attacker-jwks.json")),
            ("x5u", json!("http://127.0.0.1:1/attacker.pem")),
        ] {
            let mut hd = json!({"alg": "ES256", "kid": kid, "typ": "at+jwt"});
            hd[member] = value;
            tokens.push((member, signed_raw(attacker(), &h(hd), &c()), why));
        }
    }
    refused(&tokens).await;
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` from raw `r || s`.
fn der(raw: &[u8]) -> Vec<u8> {
    let int = |x: &[u8]| {
        let mut x = x
            .iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<u8>>();
        if x.first().is_none_or(|b| b & 0x80 != 0) {
            x.insert(0, 0);
        }
        let mut out = vec![0x02, x.len() as u8];
        out.extend(x);
        out
    };
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = int(r);
    body.extend(int(s));
    let mut out = vec![0x30, body.len() as u8];
    out.extend(body);
    out
}

#[tokio::test]
async fn ecdsa_der_signature() {
    let input = format!(
        "{}.{}",
        B64.encode(h(header()).as_bytes()),
        B64.encode(c().as_bytes())
    );
    let raw = signer().sign(input.as_bytes()).unwrap();
    assert_eq!(raw.len(), 64);
    let t = format!("{input}.{}", B64.encode(der(&raw)));
    refused(&[(
        "DER-encoded ECDSA signature",
        t,
        "signature has the wrong length for ES256",
    )])
    .await;
}

#[tokio::test]
async fn not_three_segments() {
    let good = token();
    let (hp, s) = good.rsplit_once('.').unwrap();
    let (hd, _) = hp.split_once('.').unwrap();
    let segments = "token must have exactly three dot-separated segments";
    refused(&[
        ("two segments", hp.to_string(), segments),
        ("one segment", hd.to_string(), segments),
        ("four segments", format!("{good}.{s}"), segments),
        (
            "five segments (JWE shape)",
            format!("{hp}.{s}.x.y"),
            segments,
        ),
        (
            "empty signature segment after a trailing dot",
            format!("{good}."),
            segments,
        ),
        ("leading dot", format!(".{good}"), segments),
    ])
    .await;
}

#[tokio::test]
async fn padded_base64() {
    // A header whose encoding needs padding (JSON length not a multiple of 3).
    let mut hd = h(header());
    while hd.len().is_multiple_of(3) {
        hd.push(' ');
    }
    let p = c();
    let good = signed_raw(signer(), &hd, &p);
    let (seg_h, rest) = good.split_once('.').unwrap();
    let (seg_p, sig) = rest.split_once('.').unwrap();
    let pad = |s: &str| format!("{s}{}", "=".repeat((4 - s.len() % 4) % 4));
    // Correctly signed over the padded text, so padding alone is the fault.
    let padded_header = {
        let input = format!("{}.{seg_p}", pad(seg_h));
        let sig = signer().sign(input.as_bytes()).unwrap();
        format!("{input}.{}", B64.encode(&sig))
    };
    assert_ne!(pad(sig), sig, "an ES256 signature needs padding");
    refused(&[
        (
            "padded header",
            padded_header,
            "token header is not canonical unpadded base64url",
        ),
        (
            "padded signature",
            format!("{seg_h}.{seg_p}.{}", pad(sig)),
            "token signature is not canonical unpadded base64url",
        ),
    ])
    .await;
}

#[tokio::test]
async fn duplicate_header_member() {
    let hd =
        format!("{{\"alg\":\"ES256\",\"kid\":\"{KID}\",\"typ\":\"at+jwt\",\"kid\":\"{KID}\"}}");
    let typ_twice =
        format!("{{\"alg\":\"ES256\",\"kid\":\"{KID}\",\"typ\":\"JWT\",\"typ\":\"at+jwt\"}}");
    refused(&[
        (
            "duplicate kid",
            signed_raw(signer(), &hd, &c()),
            "duplicate member 'kid' in the token header",
        ),
        (
            "duplicate typ",
            signed_raw(signer(), &typ_twice, &c()),
            "duplicate member 'typ' in the token header",
        ),
    ])
    .await;
}

#[tokio::test]
async fn refresh_and_id_tokens_are_not_access_tokens() {
    let mut id_claims = claims();
    id_claims["nonce"] = json!("n-1");
    id_claims["aud"] = json!(AUD);
    let typed = |typ: Option<&str>| {
        let mut hd = header();
        match typ {
            Some(t) => hd["typ"] = json!(t),
            None => {
                hd.as_object_mut().unwrap().remove("typ");
            }
        }
        signed_raw(signer(), &h(hd), &id_claims.to_string())
    };
    refused(&[
        (
            "ID token (typ JWT)",
            typed(Some("JWT")),
            "token type (typ) Some('JWT') is not the required 'at+jwt'",
        ),
        (
            "no typ",
            typed(None),
            "token type (typ) None is not the required 'at+jwt'",
        ),
        (
            "refresh token typ",
            typed(Some("rt+jwt")),
            "token type (typ) Some('rt+jwt') is not the required 'at+jwt'",
        ),
        (
            "logout token typ",
            typed(Some("logout+jwt")),
            "token type (typ) Some('logout+jwt') is not the required 'at+jwt'",
        ),
    ])
    .await;
}

#[tokio::test]
async fn wrong_issuer() {
    let wrong = "token issuer does not match";
    refused(&[
        (
            "other issuer",
            with_claim("iss", json!("https://evil.test")),
            wrong,
        ),
        (
            "trailing slash",
            with_claim("iss", json!(format!("{ISS}/"))),
            wrong,
        ),
        (
            "case differs",
            with_claim("iss", json!(ISS.to_uppercase())),
            wrong,
        ),
        (
            "missing",
            {
                let mut cl = claims();
                cl.as_object_mut().unwrap().remove("iss");
                token_for(&cl)
            },
            "required claim 'iss' is missing",
        ),
    ])
    .await;
}

#[tokio::test]
async fn wrong_audience() {
    refused(&[
        (
            "other audience",
            with_claim("aud", json!("api://other")),
            "token audience does not match",
        ),
        (
            "list without ours",
            with_claim("aud", json!(["a", "b"])),
            "token audience does not match",
        ),
        (
            "number",
            with_claim("aud", json!(5)),
            "claim 'aud' is invalid",
        ),
    ])
    .await;
}

#[tokio::test]
async fn expired() {
    let now = now();
    refused(&[
        (
            "expired an hour ago",
            with_claim("exp", json!(now - 3600)),
            "token has expired",
        ),
        (
            "expired beyond the leeway",
            with_claim("exp", json!(now - 61)),
            "token has expired",
        ),
    ])
    .await;
}

#[tokio::test]
async fn not_yet_valid() {
    refused(&[(
        "nbf in an hour",
        with_claim("nbf", json!(now() + 3600)),
        "token is not valid yet (nbf)",
    )])
    .await;
}

#[tokio::test]
async fn time_claims_of_the_wrong_type() {
    let now = now();
    refused(&[
        (
            "exp as a string",
            with_claim("exp", json!((now + 600).to_string())),
            "claim 'exp' is invalid",
        ),
        (
            "exp null",
            with_claim("exp", json!(null)),
            "claim 'exp' is invalid",
        ),
        (
            "nbf as a string",
            with_claim("nbf", json!(now.to_string())),
            "claim 'nbf' is invalid",
        ),
        (
            "iat as a bool",
            with_claim("iat", json!(true)),
            "claim 'iat' is invalid",
        ),
    ])
    .await;
}

#[tokio::test]
async fn rsa_1024_key_in_the_jwks_is_dropped() {
    // A token correctly signed by a 1024-bit key that the JWKS publishes:
    // the gate drops the weak key, so the token names an unknown kid.
    let v = data("rsa1024_token.json");
    let weak_jwk = v["jwk"].clone();
    let t = v["token"].as_str().unwrap().to_string();
    // Sanity: the vector's claims would otherwise pass this gate.
    let (_, payload) = keyward_jose::dangerous::decode_unverified(&t).unwrap();
    assert_eq!(payload["iss"], ISS);
    assert_eq!(payload["aud"], AUD);
    refused_with(
        &[(
            "signed by an RSA-1024 key",
            t,
            "no key with the token's kid",
        )],
        &[weak_jwk],
    )
    .await;
}

#[tokio::test]
async fn signature_by_an_untrusted_key_or_tampered_payload() {
    let good = token();
    let (hp, sig) = good.rsplit_once('.').unwrap();
    let (hd, _) = hp.split_once('.').unwrap();
    let mut cl = claims();
    cl["permissions"] = json!(["*"]);
    let tampered = format!("{hd}.{}.{sig}", B64.encode(cl.to_string().as_bytes()));
    refused(&[
        (
            "attacker key, our kid",
            signed_raw(attacker(), &h(header()), &c()),
            "signature does not verify",
        ),
        ("tampered payload", tampered, "signature does not verify"),
    ])
    .await;
}
