//! `keyward token` and `keyward jws`: operator tools for tokens.

use crate::output::outln;
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use keyward_issuer::grants::UserGrant;
use keyward_issuer::signing::SigningPool;
use keyward_issuer::tokens::new_id;
use keyward_issuer::{keyring, rotation, Authority};
use keyward_jose::{
    dangerous, sign_jwt, verify_compact, verify_jwt, Algorithm, Jwk, JwkSet, KeySet, Validation,
    DEFAULT_MAX_TOKEN_LEN,
};
use keyward_store::AuditEntry;
use keyward_verify::{FetchError, FetchLimits, Fetcher, UrlError};
use serde_json::{json, Value};

use crate::args::{JwsCmd, TokenCmd};
use crate::context::{token_arg, Context};
use crate::output::print_json;

/// Largest JWKS document read, from a file or a URL.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// Claims `token sign` sets itself.
const SET_BY_KEYWARD: [&str; 5] = ["iss", "iat", "nbf", "exp", "jti"];

pub async fn run(ctx: &Context, cmd: TokenCmd) -> Result<()> {
    match cmd {
        TokenCmd::Sign {
            env,
            claims,
            ttl,
            typ,
        } => sign(ctx, &env, &claims, ttl, &typ).await,
        TokenCmd::Issue {
            env,
            sub,
            client,
            scopes,
            permissions,
            roles,
            audience,
            json,
        } => {
            let split = |s: Option<String>| {
                s.map(|s| keyward_issuer::tokens::parse_scope(&s))
                    .unwrap_or_default()
            };
            let grant = UserGrant {
                subject: sub,
                client_id: client,
                scopes: split(scopes),
                audience,
                roles: split(roles),
                permissions: split(permissions),
                refresh: true,
                actor: ctx.actor().to_string(),
            };
            issue(ctx, &env, grant, json).await
        }
        TokenCmd::Verify {
            jwks,
            allow_http,
            iss,
            aud,
            typ,
            leeway,
            token,
        } => {
            let token = token_arg(&token)?;
            let keys = load_keys(&jwks, allow_http).await?;
            let policy = Validation {
                // The keys were named by the operator and each is bound to its
                // one algorithm, so every algorithm (ML-DSA included) is allowed.
                algorithms: keyward_jose::Algorithm::ALL.to_vec(),
                issuer: iss,
                audiences: aud,
                required_typ: typ,
                leeway_secs: leeway as u64,
                ..Validation::default()
            };
            let ok = verify_jwt(&token, &keys, &policy, ctx.now())
                .map_err(|e| anyhow!("token rejected: {e}"))?;
            print_json(&ok.claims.to_value());
            Ok(())
        }
        TokenCmd::Decode { token } => {
            let token = token_arg(&token)?;
            let (header, payload) = dangerous::decode_unverified(&token)?;
            eprintln!("UNVERIFIED: the signature was not checked; nothing here can be trusted");
            print_json(&json!({"verified": false, "header": header, "payload": payload}));
            Ok(())
        }
    }
}

pub fn run_jws(cmd: JwsCmd) -> Result<()> {
    match cmd {
        JwsCmd::Verify { key, token } => {
            let token = token_arg(&token)?;
            let text = std::fs::read_to_string(&key)
                .with_context(|| format!("cannot read {}", key.display()))?;
            let jwk = Jwk::parse(text.trim().as_bytes(), Algorithm::RS256)
                .with_context(|| format!("cannot load {}", key.display()))?;
            let (_, payload) = verify_compact(&token, &jwk.key, DEFAULT_MAX_TOKEN_LEN)
                .map_err(|e| anyhow!("JWS rejected: {e}"))?;
            crate::output::write_out_bytes(&payload);
            Ok(())
        }
    }
}

/// `keyward token issue`: what the admin API's mint endpoint does, in process.
async fn issue(ctx: &Context, env_name: &str, grant: UserGrant, json: bool) -> Result<()> {
    let config = crate::cmd::serve::load_config(ctx, None, None)?;
    let store = ctx.store().await?;
    store.environment(env_name).await?;
    let root = ctx.root_key(&store).await?;
    let authority = Authority::load(
        store,
        root,
        ctx.clock(),
        SigningPool::new(1),
        config.settings,
    )
    .await?;
    let snapshot = authority.snapshot();
    let env = snapshot
        .env(env_name)
        .ok_or_else(|| anyhow!("environment {env_name:?} not found"))?;
    // The `token.issue` audit record is written with the refresh token.
    let t = authority
        .mint_for_user(env, grant)
        .await
        .map_err(|e| match e.fault {
            Some(f) => anyhow!("{}: {}", e.description, f.cause),
            None => anyhow!("{}", e.description),
        })?;
    if json {
        print_json(&serde_json::to_value(&t)?);
    } else {
        outln!("access_token:  {}", t.access_token);
        outln!(
            "refresh_token: {}",
            t.refresh_token.as_deref().unwrap_or("-")
        );
        outln!("expires_in:    {}", t.expires_in);
    }
    Ok(())
}

async fn sign(
    ctx: &Context,
    env_name: &str,
    claims: &str,
    ttl: Option<i64>,
    typ: &str,
) -> Result<()> {
    let mut claims = match serde_json::from_str::<Value>(claims).context("--claims is not JSON")? {
        Value::Object(m) => m,
        _ => bail!("--claims must be a JSON object"),
    };
    if let Some(k) = SET_BY_KEYWARD.iter().find(|k| claims.contains_key(**k)) {
        bail!("claim {k:?} is set by keyward; leave it out of --claims");
    }
    keyward_jose::claim_text::check_claims(&claims)
        .map_err(|e| anyhow!("refused to sign a token keyward's gate would refuse: {e}"))?;
    let store = ctx.store().await?;
    let env = store.environment(env_name).await?;
    let ttl = ttl.unwrap_or(env.policy.token_ttl_secs.min(15 * 60));
    if ttl <= 0 || ttl > env.policy.token_ttl_secs {
        bail!(
            "--ttl must be between 1s and the environment's token TTL ({} s)",
            env.policy.token_ttl_secs
        );
    }
    let root = ctx.root_key(&store).await?;
    let now = ctx.now();
    let keys = store.keys(env_name).await?;
    let rec = rotation::signing_key(&keys, now).ok_or_else(|| {
        anyhow!("environment {env_name} has no active key (run `keyward keys rotate --env {env_name} --immediate`)")
    })?;
    // A device key waits on its device: off the runtime's threads.
    let stores = match rec.key_store().is_device() {
        true => ctx.key_stores()?,
        false => keyring::KeyStores::none(),
    };
    let rec_owned = rec.clone();
    let signer =
        tokio::task::spawn_blocking(move || keyring::load_signer(&root, &stores, &rec_owned))
            .await??;
    let jti = new_id();
    claims.insert("iss".into(), json!(env.issuer));
    claims.insert("iat".into(), json!(now));
    claims.insert("nbf".into(), json!(now));
    claims.insert("exp".into(), json!(now + ttl));
    claims.insert("jti".into(), json!(jti));
    let sub = claims.get("sub").cloned();
    let token = sign_jwt(&*signer, Some(typ), &Value::Object(claims))?;
    if token.len() > DEFAULT_MAX_TOKEN_LEN {
        bail!(
            "refused to sign a token keyward's gate would refuse: signed with {}, it is {} bytes, over the {DEFAULT_MAX_TOKEN_LEN}-byte limit gates enforce (send fewer claims)",
            rec.alg,
            token.len()
        );
    }
    let mut tx = store.begin().await?;
    tx.append_audit(AuditEntry {
        at: now,
        actor: ctx.actor().to_string(),
        action: "token.sign".into(),
        env: Some(env_name.to_string()),
        subject: Some(rec.kid.clone()),
        detail: json!({"jti": jti, "sub": sub, "exp": now + ttl, "typ": typ}),
    })
    .await?;
    tx.commit().await?;
    outln!("{token}");
    Ok(())
}

/// Loads a JWK Set or a single JWK from a file or an http(s) URL. Keys that
/// fail to load are dropped with a warning.
async fn load_keys(source: &str, allow_http: bool) -> Result<KeySet> {
    let body = if source.starts_with("http://") || source.starts_with("https://") {
        fetch(source, allow_http).await?
    } else {
        let b = std::fs::read(source).with_context(|| format!("cannot read {source}"))?;
        if b.len() > MAX_JWKS_BYTES {
            bail!("{source} is larger than {MAX_JWKS_BYTES} bytes");
        }
        b
    };
    let v: Value =
        serde_json::from_slice(&body).with_context(|| format!("{source} is not JSON"))?;
    let set = if v.get("keys").is_some() {
        let (set, rejected) = JwkSet::parse_lenient(&body, Algorithm::RS256)?;
        for r in rejected {
            eprintln!(
                "warning: ignoring key #{} (kid {:?}) of {source}: {}",
                r.index, r.kid, r.error
            );
        }
        set
    } else {
        JwkSet {
            keys: vec![Jwk::parse(&body, Algorithm::RS256)?],
        }
    };
    Ok(KeySet::from_jwks(&set)?)
}

/// GETs a JWK Set with keyward's one bounded fetcher: 10 s, [`MAX_JWKS_BYTES`],
/// `200 OK` only, https (or http to loopback, or anywhere with
/// `--allow-http`), redirects only to the same scheme.
async fn fetch(url: &str, allow_http: bool) -> Result<Vec<u8>> {
    let fetcher = Fetcher::new(FetchLimits {
        timeout: Duration::from_secs(10),
        max_body_bytes: MAX_JWKS_BYTES,
        allow_http,
    })?;
    match fetcher.get(url).await {
        Ok(body) => Ok(body),
        Err(FetchError::Url(UrlError::PlainHttp { .. })) => bail!(
            "cannot fetch {url}: plain http to a host that is not loopback; use https, or pass --allow-http"
        ),
        Err(e) => Err(anyhow::Error::new(e).context("cannot fetch the JWK Set")),
    }
}
