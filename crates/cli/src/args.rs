//! The command line, as clap parses it. Raw user input only: turning it into
//! a store, a root key and a clock happens in `context.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keyward_jose::Algorithm;

/// keyward: a token authority and a token gate.
#[derive(Debug, Parser)]
#[command(name = "keyward", version, about, propagate_version = true)]
pub struct Cli {
    /// Data directory: the SQLite store (keyward.db) and the root key (root.key).
    /// [default: ./keyward-data]
    #[arg(long, global = true, env = "KEYWARD_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL; a postgres:// URL selects PostgreSQL instead of the embedded SQLite store.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
    /// Evaluate key states at this time (unix seconds or RFC 3339) instead of
    /// the system clock. For drills and tests.
    #[arg(long, global = true, env = "KEYWARD_NOW", hide = true)]
    pub now: Option<String>,
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Start here: on an empty data dir, initialize it and create a demo client; then serve.
    Up(UpArgs),
    /// Serve the token endpoints (production: never creates keys).
    Serve(ServeArgs),
    /// Validate a configuration file and print the resolved configuration (no secrets).
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Run the token gate as a reverse proxy in front of HTTP services (see docs/gateway.md).
    Gateway(GatewayArgs),
    /// OAuth clients: create, list, update, delete, rotate-secret.
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// Tokens for the admin API.
    #[command(subcommand, name = "admin-token")]
    AdminToken(AdminTokenCmd),
    /// Create a data directory: store, root key (0600), environment "default" with one active key.
    Init(InitArgs),
    /// Environments (tenants): create, list, show, update.
    #[command(subcommand)]
    Env(EnvCmd),
    /// Signing keys: generate, import, list, rotate, retire, revoke, export.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Convert public keys between JWK and PEM.
    #[command(subcommand)]
    Jwk(JwkCmd),
    /// Sign, verify and decode JWTs.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Raw JWS operations.
    #[command(subcommand)]
    Jws(JwsCmd),
    /// The root key that seals every private key.
    #[command(subcommand, name = "root-key")]
    RootKey(RootKeyCmd),
    /// The append-only audit chain.
    #[command(subcommand)]
    Audit(AuditCmd),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to listen on; the issuer URL of a new data dir is http://<listen>.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); every field can be overridden by KEYWARD_<FIELD>.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on (overrides the file and KEYWARD_LISTEN).
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Gateway configuration file (TOML; reference in docs/gateway.md).
    #[arg(long)]
    pub config: PathBuf,
    /// Validate the file, print the resolved routes and issuers, and exit
    /// (0 when valid, 1 with every problem as FILE:LINE:COL and a fix).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a file and print the resolved configuration without secrets.
    Check {
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ClientFields {
    /// Allowed scopes, space-separated.
    #[arg(long)]
    pub scopes: Option<String>,
    /// Allowed audience (repeatable).
    #[arg(long)]
    pub audience: Vec<String>,
    /// Allowed grant types, space-separated (default: "client_credentials refresh_token").
    #[arg(long)]
    pub grant_types: Option<String>,
    /// Access-token lifetime for this client (at most the environment's).
    #[arg(long, value_parser = parse_duration)]
    pub access_token_ttl: Option<i64>,
    /// Refresh-token lifetime for this client.
    #[arg(long, value_parser = parse_duration)]
    pub refresh_token_ttl: Option<i64>,
    /// For private_key_jwt: the client's JWK Set, a file or an http(s) URL.
    #[arg(long)]
    pub jwks: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClientsCmd {
    /// Register a client; prints its id and (for secret clients) its secret, once.
    Create {
        #[arg(long)]
        env: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_enum, default_value = "client-secret-basic")]
        auth: AuthMethod,
        #[command(flatten)]
        fields: ClientFields,
        #[arg(long)]
        json: bool,
    },
    /// List an environment's clients.
    List {
        #[arg(long)]
        env: String,
        #[arg(long)]
        json: bool,
    },
    /// Change a client's scopes, audiences, grant types, lifetimes or keys.
    Update {
        #[arg(long)]
        env: String,
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        fields: ClientFields,
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and its refresh tokens.
    Delete {
        #[arg(long)]
        env: String,
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Replace a client's secret; prints the new one, once.
    RotateSecret {
        #[arg(long)]
        env: String,
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCmd {
    /// Create an admin API token; prints it once (only a hash is stored).
    Create {
        #[arg(long, default_value = "admin")]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List admin tokens (never their values).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token by id.
    Revoke { id: String },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Issuer URL of the "default" environment.
    #[arg(long)]
    pub issuer: String,
    /// Name of the first environment.
    #[arg(long, default_value = "default")]
    pub env: String,
    #[command(flatten)]
    pub key: KeySpec,
    #[arg(long)]
    pub json: bool,
}

/// Algorithm and size of a key.
#[derive(Debug, Args, Clone)]
pub struct KeySpec {
    /// Signature algorithm: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA.
    #[arg(long, default_value = "RS256")]
    pub alg: Algorithm,
    /// RSA modulus size: 2048, 3072 or 4096 (default 4096). RSA only.
    #[arg(long)]
    pub bits: Option<u32>,
}

#[derive(Debug, Args, Clone, Default)]
pub struct PolicyArgs {
    /// Algorithm of keys made by automatic rotation.
    #[arg(long)]
    pub alg: Option<Algorithm>,
    /// RSA size of keys made by automatic rotation.
    #[arg(long)]
    pub bits: Option<u32>,
    /// How often keys rotate (e.g. 90d).
    #[arg(long, value_parser = parse_duration)]
    pub rotate_every: Option<i64>,
    /// How long the next key is published before it signs (e.g. 48h).
    #[arg(long, value_parser = parse_duration)]
    pub lead: Option<i64>,
    /// Longest access-token lifetime in this environment (e.g. 1h).
    #[arg(long, value_parser = parse_duration)]
    pub token_ttl: Option<i64>,
}

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Create an environment (it has no key until `keys generate` or `keys import`).
    Create {
        name: String,
        #[arg(long)]
        issuer: String,
        #[command(flatten)]
        policy: PolicyArgs,
        #[arg(long)]
        json: bool,
    },
    /// List environments.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one environment and its policy.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Change an environment's issuer URL or rotation policy.
    Update {
        name: String,
        #[arg(long)]
        issuer: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        #[arg(long)]
        json: bool,
    },
}

/// Where a new key comes in.
#[derive(Debug, Args, Clone)]
pub struct ScheduleArgs {
    /// Publish the key this long before it signs (default: the environment's lead).
    #[arg(long, value_parser = parse_duration, conflicts_with = "immediate")]
    pub lead: Option<i64>,
    /// EMERGENCY: sign with the new key at once. Verifiers that cached the old
    /// JWKS reject its tokens until they refresh.
    #[arg(long)]
    pub immediate: bool,
}

#[derive(Debug, Args, Clone)]
pub struct KeyMeta {
    /// Key id (default: the RFC 7638 thumbprint).
    #[arg(long, allow_hyphen_values = true)]
    pub kid: Option<String>,
    /// Team or person responsible for the key.
    #[arg(long)]
    pub owner: Option<String>,
    /// Free text.
    #[arg(long)]
    pub description: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Generate a key. With no usable key in the environment it signs at once;
    /// otherwise it is published now and signs after the lead time.
    Generate {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        key: KeySpec,
        #[command(flatten)]
        meta: KeyMeta,
        #[command(flatten)]
        schedule: ScheduleArgs,
        #[arg(long)]
        json: bool,
    },
    /// Import a private key from PEM (PKCS#1 RSA PRIVATE KEY, PKCS#8 PRIVATE KEY, SEC1 EC PRIVATE KEY).
    Import {
        #[arg(long)]
        env: String,
        #[arg(long)]
        alg: Algorithm,
        #[arg(long)]
        pem: PathBuf,
        #[command(flatten)]
        meta: KeyMeta,
        #[command(flatten)]
        schedule: ScheduleArgs,
        #[arg(long)]
        json: bool,
    },
    /// List an environment's keys with their states and times.
    List {
        #[arg(long)]
        env: String,
        #[arg(long)]
        json: bool,
    },
    /// Rotate: a new key per the environment's policy, published now, signing after the lead.
    Rotate {
        #[arg(long)]
        env: String,
        #[command(flatten)]
        schedule: ScheduleArgs,
        #[arg(long)]
        json: bool,
    },
    /// Retire a key now: it stops signing and stays published until its tokens expire.
    Retire {
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Allow retiring the last key that can sign.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// EMERGENCY: revoke a key now. It is unpublished at once.
    Revoke {
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Export the published public keys (never private material).
    Export {
        #[arg(long)]
        env: String,
        #[arg(long, value_enum, default_value = "jwks")]
        format: ExportFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Jwks,
    Pem,
}

#[derive(Debug, Subcommand)]
pub enum JwkCmd {
    /// Public JWK (stdin or FILE) to SPKI PEM ("PUBLIC KEY").
    ToPem { file: Option<PathBuf> },
    /// SPKI PEM (stdin or FILE) to a public JWK.
    FromPem {
        file: Option<PathBuf>,
        /// Algorithm to bind (default: ES*/EdDSA from the key's curve, RS256 for RSA).
        #[arg(long)]
        alg: Option<Algorithm>,
        /// kid (default: the RFC 7638 thumbprint).
        #[arg(long)]
        kid: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Operator tool: sign claims with the environment's active key; adds iss, iat, nbf, exp, jti (and kid in the header).
    Sign {
        #[arg(long)]
        env: String,
        /// The claims, a JSON object.
        #[arg(long)]
        claims: String,
        /// Lifetime (default: 15m, or the environment's token TTL if shorter; at most that TTL).
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<i64>,
        /// Header typ.
        #[arg(long, default_value = "at+jwt")]
        typ: String,
    },
    /// Mint an access and a refresh token for a user your login service authenticated.
    Issue {
        #[arg(long)]
        env: String,
        /// The user (sub).
        #[arg(long)]
        sub: String,
        /// The client the tokens are for.
        #[arg(long, allow_hyphen_values = true)]
        client: String,
        /// Scopes, space-separated (default: the client's).
        #[arg(long)]
        scopes: Option<String>,
        /// Permissions claim, space-separated.
        #[arg(long)]
        permissions: Option<String>,
        /// Roles claim, space-separated.
        #[arg(long)]
        roles: Option<String>,
        /// Audience (must be registered for the client).
        #[arg(long)]
        audience: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Verify a token against a JWKS (file or URL). Exit 0 and the claims on stdout, or exit 1 and the reason.
    Verify {
        /// JWK Set (or single JWK) file, or an http(s) URL.
        #[arg(long)]
        jwks: String,
        /// Required issuer (exact match).
        #[arg(long)]
        iss: Option<String>,
        /// Accepted audience (repeatable; any of them).
        #[arg(long)]
        aud: Vec<String>,
        /// Required header typ (e.g. at+jwt).
        #[arg(long)]
        typ: Option<String>,
        /// Clock skew tolerance.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        leeway: i64,
        /// The token, or - for stdin.
        token: String,
    },
    /// Show a token's header and claims WITHOUT verifying it.
    Decode {
        /// The token, or - for stdin.
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum JwsCmd {
    /// Check the signature of any compact JWS with one public JWK; prints the payload.
    Verify {
        #[arg(long)]
        key: PathBuf,
        /// The JWS, or - for stdin.
        token: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RootKeyCmd {
    /// Re-wrap every data key under a new root key; the old root key opens nothing afterwards.
    Rotate {
        /// Where to write the new key when the current one comes from KEYWARD_ROOT_KEY.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Walk the chain and name the first broken link (exit 1 if any).
    Verify {
        #[arg(long)]
        json: bool,
        /// A head_hash recorded earlier: fail unless that record is still in the chain.
        #[arg(long, value_name = "HASH")]
        expect_head: Option<String>,
    },
    /// Show audit records.
    List {
        /// Only records after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long, default_value_t = 100)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
}

/// Parses "90d", "48h", "15m", "30s" (humantime) into seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 15m, 48h, 90d)"))?;
    i64::try_from(d.as_secs()).map_err(|_| "duration too long".to_string())
}
