//! Arbitrary bytes as a compact token: every reader of untrusted tokens must
//! return an error, never panic.
//!
//! A mutated token never carries a valid signature, so the code that runs
//! only after the signature check (typ, payload, claims, policy) is reached
//! two more ways: the decoded header/payload are fed to the public claims and
//! typ checks directly, and the payload is re-signed with the fixture's own
//! key (keeping the fuzzed `typ`) and run through `verify_jwt` end to end.
//! Claims kept while parsing ([`Validation::keep_claims`]) must be exactly
//! the JSON a full parse of the payload finds under the same names.
#![no_main]

use std::sync::OnceLock;

use keyward_jose::{
    b64, dangerous, sign_payload, verify_compact, verify_jwt, Algorithm, Claims, KeySet,
    LocalSigner, PrivateKey, PublicKey, Validation, DEFAULT_MAX_TOKEN_LEN, MAX_KEPT_CLAIMS,
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

    let _ = verify_jwt(token, &f.keys, &f.default_policy, NOW);
    let _ = verify_jwt(token, &f.keys, &f.access_policy, NOW);
    let _ = verify_compact(token, &f.one, DEFAULT_MAX_TOKEN_LEN);

    let Ok((header, _payload)) = dangerous::decode_unverified(token) else {
        return;
    };
    // decode_unverified accepted three canonical segments and JSON objects.
    let mut segs = token.split('.');
    let (_, payload_b64) = (segs.next(), segs.next().expect("three segments"));
    let payload = b64::decode(payload_b64).expect("payload was decoded once already");
    let typ = header.get("typ").and_then(|t| t.as_str());

    // Kept claims are the text of the very values a full parse finds; the
    // registered names are never kept (their accessors read them).
    if let Ok(claims) = Claims::parse_keeping(payload.clone(), &[], KEEP) {
        let whole = claims.to_value();
        for name in KEEP.iter().take(MAX_KEPT_CLAIMS) {
            let kept = claims.kept(name).expect("a kept name is kept");
            let text: Option<serde_json::Value> =
                kept.map(|t| serde_json::from_str(t).expect("kept text is JSON"));
            assert_eq!(text.as_ref(), whole.get(*name), "kept {name}");
        }
        assert_eq!(claims.kept("exp"), None);
    }

    for policy in [&f.default_policy, &f.access_policy] {
        let _ = policy.check_typ(typ);
        if let Ok(claims) = Claims::parse(payload.clone(), &policy.required_claims) {
            for now in [NOW, 0, i64::MIN, i64::MAX] {
                let _ = policy.check_claims(&claims, now);
            }
            let _ = claims.to_value();
            let _ = claims.expires_at();
        }
    }

    // The whole post-signature path of verify_jwt, with a signature that verifies.
    if let Ok(resigned) = sign_payload(&f.resigner, typ, &payload) {
        let ok = verify_jwt(&resigned, &f.resigned_keys, &f.default_policy, NOW);
        let _ = verify_jwt(&resigned, &f.resigned_keys, &f.access_policy, NOW);
        if let Ok(v) = ok {
            assert_eq!(v.claims.payload(), &payload[..], "verified payload differs");
        }
    }
});
