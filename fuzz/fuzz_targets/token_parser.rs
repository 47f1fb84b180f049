//! Arbitrary bytes as a compact token: every reader of untrusted tokens must
//! return an error, never panic.
//!
//! A token read once ([`UnverifiedToken`]) and verified under a policy
//! gets exactly the answer `verify_jwt` gives; [`dangerous::peek_names`]
//! never panics either.
//!
//! A mutated token never carries a valid signature, so the code that runs
//! only after the signature check (typ, payload, claims, policy) is reached
//! another way: the payload is re-signed with the fixture's own key (keeping
//! the fuzzed `typ`) and run through `verify_jwt` end to end, under the two
//! policies, under each with no `typ` required (so the claims are judged
//! whatever the `typ`), and at extreme times. Claims kept while parsing
//! ([`Validation::keep_claims`]) must be exactly the JSON a full parse of the
//! payload finds under the same names.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use keyward_jose::{
    dangerous, sign_payload, verify_compact, verify_jwt, Algorithm, KeySet, LocalSigner,
    PrivateKey, PublicKey, UnverifiedToken, Validation, DEFAULT_MAX_TOKEN_LEN, MAX_KEPT_CLAIMS,
};
use libfuzzer_sys::fuzz_target;

const NOW: i64 = 1_750_000_000;
/// Private claims to keep while parsing (the gate keeps these).
const KEEP: &[&str] = &["permissions", "scp", "azp", "roles"];

struct Fixture {
    keys: KeySet,
    one: PublicKey,
    default_policy: Validation,
    access_policy: Validation,
    resigner: LocalSigner,
    resigned_keys: KeySet,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        // Generated per process, never stored. The kids match fuzz/seeds/token_parser.
        let es = PrivateKey::generate(Algorithm::ES256, None).unwrap();
        let ed = PrivateKey::generate(Algorithm::EdDSA, None).unwrap();
        let rs = PrivateKey::generate(Algorithm::RS256, Some(2048)).unwrap();
        let mut keys = KeySet::new();
        keys.insert(Some("es256-1".into()), es.public_key().clone())
            .unwrap();
        keys.insert(Some("eddsa-1".into()), ed.public_key().clone())
            .unwrap();
        keys.insert(Some("rs256-1".into()), rs.public_key().clone())
            .unwrap();
        let one = es.public_key().clone();

        let resigner = LocalSigner::new(
            PrivateKey::generate(Algorithm::EdDSA, None).unwrap(),
            Some("fuzz-ed".into()),
        );
        let jwk = keyward_jose::TokenSigner::public_jwk(&resigner);
        let mut resigned_keys = KeySet::new();
        resigned_keys.insert(jwk.kid, jwk.key).unwrap();
        Fixture {
            keys,
            one,
            default_policy: Validation::default(),
            access_policy: Validation::access_token("https://auth.example", &["api"]),
            resigner,
            resigned_keys,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();

    let policies = [&f.default_policy, &f.access_policy];
    for policy in policies {
        let whole = verify_jwt(token, &f.keys, policy, NOW).map(|_| ());
        // Read once, then verified: the same answer (no header of these
        // keys is ever remembered, as no fuzzed token is genuinely signed).
        let once = UnverifiedToken::parse(token, DEFAULT_MAX_TOKEN_LEN)
            .and_then(|t| t.verify(&f.keys, policy, NOW).map(|_| ()));
        assert_eq!(once, whole, "parse + verify differs from verify_jwt");
    }
    let _ = verify_compact(token, &f.one, DEFAULT_MAX_TOKEN_LEN);
    if let Ok(read) = UnverifiedToken::parse(token, DEFAULT_MAX_TOKEN_LEN) {
        let _ = (read.kid(), read.alg());
        if let Ok(names) = dangerous::peek_names(&read) {
            let _ = (names.iss(), names.sub());
        }
    }

    let Ok((header, _payload)) = dangerous::decode_unverified(token) else {
        return;
    };
    // decode_unverified accepted three canonical segments and JSON objects.
    let mut segs = token.split('.');
    let (_, payload_b64) = (segs.next(), segs.next().expect("three segments"));
    let payload = B64
        .decode(payload_b64)
        .expect("payload was decoded once already");
    let typ = header.get("typ").and_then(|t| t.as_str());
    for policy in policies {
        let _ = policy.check_typ(typ);
    }

    // The whole post-signature path of verify_jwt, with a signature that verifies.
    let Ok(resigned) = sign_payload(&f.resigner, typ, &payload) else {
        return;
    };
    let keys = &f.resigned_keys;

    // Kept claims are the text of the very values a full parse finds; the
    // registered names are never kept (their accessors read them).
    let keeping = Validation {
        required_claims: Vec::new(),
        leeway_secs: u32::MAX.into(),
        keep_claims: KEEP,
        ..Validation::default()
    };
    if let Ok(v) = verify_jwt(&resigned, keys, &keeping, 0) {
        let whole = v.claims.to_value();
        for name in KEEP.iter().take(MAX_KEPT_CLAIMS) {
            let kept = v.claims.kept(name).expect("a kept name is kept");
            let text: Option<serde_json::Value> =
                kept.map(|t| serde_json::from_str(t).expect("kept text is JSON"));
            assert_eq!(text.as_ref(), whole.get(*name), "kept {name}");
        }
        assert_eq!(v.claims.kept("exp"), None);
    }

    for policy in policies {
        let any_typ = Validation {
            required_typ: None,
            ..policy.clone()
        };
        for now in [NOW, 0, i64::MIN, i64::MAX] {
            for p in [policy, &any_typ] {
                if let Ok(v) = verify_jwt(&resigned, keys, p, now) {
                    assert_eq!(v.claims.payload(), &payload[..], "verified payload differs");
                    let _ = v.claims.to_value();
                    let _ = v.claims.expires_at();
                }
            }
        }
    }
});
