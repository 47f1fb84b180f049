//! `keyward serve`, `keyward up` and `keyward config check`.

use crate::output::{banner, outln};
use anyhow::{bail, Context as _, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use keyward_issuer::clients::{self, NewClient};
use keyward_issuer::http::{app, AppState};
use keyward_issuer::signing::SigningPool;
use keyward_issuer::{Authority, Settings, SharedClock};
use keyward_store::{ClientAuth, KeyState};

use crate::args::{ServeArgs, UpArgs};
use crate::config::{Config, RawConfig};
use crate::context::Context;
use crate::root_source::StoreRoot;

/// Reads the config file (if any), the environment, then the flags.
pub fn load_config(
    ctx: &Context,
    file: Option<&std::path::Path>,
    listen: Option<&str>,
) -> Result<Config> {
    let mut raw = match file {
        Some(p) => RawConfig::from_file(p)?,
        None => RawConfig::default(),
    };
    raw.apply_env(|k| std::env::var(k).ok())?;
    if let Some(l) = listen {
        raw.listen = Some(l.to_string());
    }
    if let Some(d) = &ctx.data_dir_flag {
        raw.data_dir = Some(d.clone());
    }
    if let Some(u) = &ctx.database_url {
        raw.database_url = Some(u.clone());
    }
    raw.resolve()
}

pub fn config_check(ctx: &Context, file: Option<&std::path::Path>) -> Result<()> {
    let c = load_config(ctx, file, None)?;
    outln!("{}", serde_json::to_string_pretty(&c.to_json())?);
    Ok(())
}

pub(crate) fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEYWARD_LOG")
        .unwrap_or_else(|_| "info".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

/// `keyward serve`: never creates keys; refuses an environment whose keys
/// cannot sign (one with no key yet is reported, not refused).
pub async fn serve(ctx: &Context, a: ServeArgs) -> Result<()> {
    let config = load_config(ctx, a.config.as_deref(), a.listen.as_deref())?;
    let ctx = ctx.with_store(&config);
    run(&ctx, &config, None, None).await
}

/// `keyward up`: the newcomer command. On an empty data dir: `init` (issuer
/// `http://<listen>`) and a demo client; then serve.
pub async fn up(ctx: &Context, a: UpArgs) -> Result<()> {
    let mut config = load_config(ctx, None, Some(&a.listen))?;
    // The newcomer command shows the console (an admin token logs in) and
    // the DEVELOPMENT ONLY login page (any username), so that the browser
    // flow works without a login app.
    config.console = true;
    config.dev_login = true;
    let ctx = ctx.with_store(&config);
    // Bind first: with port 0 the issuer URL must name the port actually bound.
    let listener = bind(&config).await?;
    let fresh = !ctx.is_initialized().await?;
    let mut demo = None;
    if let Some(i) = &a.issuer {
        crate::cmd::env::check_issuer(i)?;
    }
    if !fresh {
        if let Some(i) = &a.issuer {
            eprintln!(
                "note: --issuer {i} applies to a new data dir only; this one keeps its environments' issuers (change one with `keyward env update NAME --issuer URL`)"
            );
        }
    }
    if fresh {
        let issuer = match a.issuer {
            Some(i) => i,
            None => default_issuer(listener.local_addr()?, config.tls.is_some()),
        };
        crate::cmd::init::run(
            &ctx,
            crate::args::InitArgs {
                issuer: issuer.clone(),
                env: "default".into(),
                key: crate::args::KeySpec {
                    alg: keyward_jose::Algorithm::RS256,
                    bits: None,
                },
                root_key: a.root_key.clone(),
                json: false,
            },
        )
        .await?;
        let store = ctx.store().await?;
        let reg = clients::create_client(
            &store,
            NewClient {
                env: "default".into(),
                name: "demo".into(),
                auth: ClientAuth::ClientSecretBasic,
                scopes: vec!["demo.read".into(), "demo.write".into()],
                audiences: vec!["api://demo".into()],
                grant_types: vec!["client_credentials".into(), "refresh_token".into()],
                jwks: None,
                jwks_uri: None,
                access_token_ttl_secs: None,
                refresh_token_ttl_secs: None,
                dpop_bound_access_tokens: false,
                mtls: Default::default(),
                login: Default::default(),
                exchange_issuers: Vec::new(),
            },
            ctx.at(),
        )
        .await?;
        // The browser flow: environment "default" sends logins to the
        // development login page, and a public client (PKCE, no secret)
        // whose redirect URI is the development callback page.
        let (login_url, consent_url) = keyward_issuer::dev_login::urls(&issuer, "default");
        keyward_issuer::login::set_login_settings(
            &store,
            "default",
            &keyward_store::LoginSettings {
                login_url: Some(login_url),
                consent_url: Some(consent_url),
            },
            ctx.at(),
        )
        .await?;
        let redirect_uri = keyward_issuer::dev_login::callback_url(&issuer);
        let web = clients::create_client(
            &store,
            NewClient {
                env: "default".into(),
                name: "demo-web".into(),
                auth: ClientAuth::None,
                scopes: ["openid", "profile", "email", "offline_access"]
                    .map(String::from)
                    .to_vec(),
                audiences: vec!["api://demo".into()],
                grant_types: vec!["authorization_code".into(), "refresh_token".into()],
                jwks: None,
                jwks_uri: None,
                access_token_ttl_secs: None,
                refresh_token_ttl_secs: None,
                dpop_bound_access_tokens: false,
                mtls: Default::default(),
                login: keyward_store::ClientLogin {
                    redirect_uris: vec![redirect_uri.clone()],
                    post_logout_redirect_uris: Vec::new(),
                    first_party: false,
                    require_par: false,
                },
                exchange_issuers: Vec::new(),
            },
            ctx.at(),
        )
        .await?;
        demo = Some(Demo {
            issuer: issuer.clone(),
            client_id: reg.client.client_id,
            secret: reg.secret.unwrap_or_default(),
            web: keyward_issuer::dev_login::Demo {
                issuer,
                client_id: web.client.client_id,
                redirect_uri,
                code_verifier: B64.encode(keyward_jose::crypto::random_bytes::<32>()),
            },
        });
    }
    run(&ctx, &config, Some(listener), demo).await
}

/// What `up` made on a new data dir, for its banner.
struct Demo {
    issuer: String,
    /// The client_credentials demo client.
    client_id: String,
    secret: String,
    /// The browser-flow demo (public client, development login page).
    web: keyward_issuer::dev_login::Demo,
}

impl Demo {
    /// An authorization URL for the demo public client (PKCE S256 from the
    /// demo verifier).
    fn authorize_url(&self) -> String {
        let w = &self.web;
        let challenge = B64.encode(keyward_jose::crypto::sha256(w.code_verifier.as_bytes()));
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("response_type", "code")
            .append_pair("client_id", &w.client_id)
            .append_pair("redirect_uri", &w.redirect_uri)
            .append_pair("scope", "openid profile email offline_access")
            .append_pair("state", "demo")
            .append_pair("nonce", "demo")
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .finish();
        format!("{}/oauth2/authorize?{q}", w.issuer)
    }
}

/// The issuer URL `up` gives a new data dir: `http://<listen address>`, or
/// for a wildcard address (0.0.0.0, ::), which no client can use, the
/// loopback address with the same port, with a warning.
fn default_issuer(addr: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if !addr.ip().is_unspecified() {
        return format!("{scheme}://{addr}");
    }
    let loopback = match addr {
        std::net::SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
        std::net::SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
    };
    let issuer = format!("{scheme}://{loopback}");
    eprintln!(
        "warning: listening on every interface ({addr}); the issuer URL (the iss of every token, for good) is {issuer}, \
         which only this machine reaches. Pass --issuer https://your.host to name the URL clients and verifiers use"
    );
    issuer
}

async fn bind(config: &Config) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))
}

async fn run(
    ctx: &Context,
    config: &Config,
    listener: Option<tokio::net::TcpListener>,
    demo: Option<Demo>,
) -> Result<()> {
    init_logs(config.json_logs);
    // Opening contacts no device: one that is down is found out when used.
    let key_stores = ctx.key_stores()?;
    if key_stores.iter().next().is_some() {
        tracing::info!(stores = ?key_stores, "device key stores configured");
    }
    let store = ctx.store().await?;
    let root = match ctx.store_root(&store).await? {
        StoreRoot::Ready(k) => Some(k),
        // A device that is down does not stop the start: the server runs,
        // not ready, and takes the key when the device answers.
        StoreRoot::DeviceDown(e) => {
            tracing::error!(error = %format!("{e:#}"), "the root key's device cannot be used now: serving without it (not ready) until it can");
            None
        }
    };
    let clock: SharedClock = ctx.clock();
    let now = clock.now();
    // Rule 3: keys are made on purpose. An environment with keys of which
    // none is active or pending is broken and stops the start; one with no
    // key at all (made with `env create --no-key`) is reported (log, /readyz, metrics).
    for env in store.environments().await? {
        let keys = store.keys(&env.name).await?;
        if keys.is_empty() {
            continue;
        }
        if !keys
            .iter()
            .any(|k| matches!(k.state(now), KeyState::Active | KeyState::Pending))
        {
            bail!(
                "environment {} has no active or pending key; create one with `keyward keys generate --env {}` (serve never creates keys)",
                env.name,
                env.name
            );
        }
    }
    // Before the first reload, so its failures are counted.
    let metrics = keyward_issuer::metrics::install();
    let loader = Box::new(ctx.source_loader()?);
    let pool = SigningPool::new(config.signing_threads);
    let settings = Settings {
        key_stores,
        ..config.settings.clone()
    };
    let authority = match root {
        Some(root) => {
            Authority::load_with_root_loader(store, root, Some(loader), clock, pool, settings)
                .await?
        }
        None => Authority::load_waiting_for_root(store, loader, clock, pool, settings).await?,
    };
    let reloader = authority.spawn_reloader(config.reload_interval);
    let scheduler = authority.spawn_scheduler(config.rotation_check_interval);
    let listener = match listener {
        Some(l) => l,
        None => bind(config).await?,
    };
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "keyward is serving");
    if let Some(Demo {
        issuer,
        client_id: id,
        secret,
        ..
    }) = &demo
    {
        banner!("keyward is serving {issuer}");
        if !issuer.ends_with(&format!("://{addr}")) {
            banner!("  listening on:  {addr}");
        }
        banner!("  discovery:     {issuer}/.well-known/openid-configuration");
        banner!("  demo client:   {id}");
        banner!("  client secret: {secret}   (shown once; stored only hashed)");
        if let (Some(d), true) = (&demo, config.dev_login) {
            banner!(
                "sign in with a browser (DEVELOPMENT ONLY login page: any username; demo public client {}, PKCE S256):",
                d.web.client_id
            );
            banner!("  {}", d.authorize_url());
        }
        banner!("get a token:");
        banner!(
            "  curl -s -u '{id}:{secret}' -d grant_type=client_credentials {issuer}/oauth2/token"
        );
    } else {
        banner!("keyward is serving on {addr}");
    }
    let state = AppState {
        authority: authority.clone(),
        metrics,
    };
    let mut router = app(state.clone());
    if config.dev_login {
        router = router.merge(keyward_issuer::dev_login::router(
            &state,
            demo.as_ref().map(|d| d.web.clone()),
        ));
        tracing::warn!("DEVELOPMENT ONLY login page on (/dev/login/ENV): any username signs in without a password; never in production");
        if demo.is_none() {
            banner!("  DEVELOPMENT ONLY login page: http://{addr}/dev/login/ENV (any username, no password)");
        }
    }
    if config.console {
        router = router.merge(keyward_issuer::console::router(&state));
        banner!("  web console:   http://{addr}/console (log in with an admin token: keyward admin-token create)");
    }
    let grace = config.shutdown_grace;
    let tls = config
        .tls
        .clone()
        .map(keyward_verify::TlsServer::load)
        .transpose()?;
    let tls_reloader = tls.as_ref().map(|t| t.spawn_reloader());
    crate::server::serve(
        listener,
        router,
        config.connections,
        tls,
        shutdown_signal(),
        grace,
    )
    .await;
    if let Some(r) = tls_reloader {
        r.abort();
    }
    reloader.abort();
    scheduler.abort();
    authority.store.close().await;
    tracing::info!("keyward stopped");
    Ok(())
}

/// SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
