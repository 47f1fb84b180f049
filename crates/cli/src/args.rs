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

// Parsed once per run: the size of the largest command does not matter.
#[allow(clippy::large_enum_variant)]
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
    /// Back up the whole store to one file while it serves (`backup verify FILE` checks one).
    Backup(BackupArgs),
    /// Restore a backup into an empty store (--data-dir or --database-url): checks it first.
    Restore(RestoreArgs),
    /// Print a shell completion script to stdout (e.g. `keyward completions bash > /etc/bash_completion.d/keyward`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Write the manual page (roff): keyward(1) to stdout, or one page per command into --out DIR.
    Man {
        /// Directory to write keyward.1 and a keyward-<command>.1 page per command into.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to listen on; the issuer URL of a new data dir is http://<listen>
    /// (for a wildcard address such as 0.0.0.0, http://127.0.0.1:<port>).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Issuer URL of a new data dir's "default" environment (the `iss` of its
    /// tokens), when clients reach keyward by another name than the listen address.
    #[arg(long)]
    pub issuer: Option<String>,
    /// The root key of a new data dir (as `init --root-key`).
    #[arg(long, value_name = "SOURCE")]
    pub root_key: Option<String>,
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
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct GatewayArgs {
    #[command(subcommand)]
    pub cmd: Option<GatewayCmd>,
    /// Gateway configuration file (TOML; reference in docs/gateway.md).
    #[arg(long, required = true)]
    pub config: Option<PathBuf>,
    /// Validate the file, print the resolved routes and issuers, and exit
    /// (0 when valid, 1 with every problem as FILE:LINE:COL and a fix).
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Subcommand)]
pub enum GatewayCmd {
    /// API keys mapped to identities: create, list, revoke (stored hashed in the config file).
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCmd {
    /// Make a key, print it once, and write only its hash into the config file.
    Create {
        /// Gateway configuration file to add the key to (the rest of it is kept as written).
        #[arg(long)]
        config: PathBuf,
        /// The subject the key stands for (X-Auth-Subject).
        #[arg(long)]
        subject: String,
        /// Permissions it grants, space- or comma-separated (e.g. "reports.* orders.{id}.read").
        #[arg(long, default_value = "")]
        permissions: String,
        /// When it expires: a duration from now (90d), an RFC 3339 time, or "never".
        #[arg(long)]
        expires: String,
        /// Its own rate limit, e.g. 100/s.
        #[arg(long)]
        rate_limit: Option<String>,
        /// Route names it may be used on, comma-separated (default: every route with api_keys = true).
        #[arg(long)]
        routes: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List the keys of a config file (ids, subjects, states; never keys or hashes).
    List {
        /// Gateway configuration file.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Mark a key revoked in the config file (the gateway refuses it once restarted with the file).
    Revoke {
        /// Gateway configuration file.
        #[arg(long)]
        config: PathBuf,
        /// The key id (12 hex digits, as `list` shows).
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a file and print the resolved configuration without secrets.
    Check {
        /// Configuration file to check (TOML); without it, the KEYWARD_* variables and defaults are checked.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
    /// A certificate from the listener's client CA with the registered
    /// subject DN or SAN (RFC 8705 §2.1; one of the --tls-* names).
    #[value(alias = "tls_client_auth")]
    TlsClientAuth,
    /// A self-signed certificate whose public key is in --jwks (x5c, RFC 8705 §2.2).
    #[value(alias = "self_signed_tls_client_auth")]
    SelfSignedTlsClientAuth,
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
    /// An allowed grant type (repeatable; with --grant-types, both count):
    /// client_credentials, refresh_token, authorization_code.
    #[arg(long = "grant-type", value_name = "GRANT")]
    pub grant_type: Vec<String>,
    /// authorization_code: a redirect URI (repeatable), compared byte for
    /// byte; https, or http to localhost; no fragment, no wildcard.
    /// Given on update, the list replaces the registered one.
    #[arg(long = "redirect-uri", value_name = "URI")]
    pub redirect_uri: Vec<String>,
    /// Where the browser may be sent after logout (repeatable; exact match).
    #[arg(long = "post-logout-redirect-uri", value_name = "URI")]
    pub post_logout_redirect_uri: Vec<String>,
    /// Consent is skipped for this client (the operator's own application;
    /// `--first-party=false` lifts it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub first_party: Option<bool>,
    /// Its authorization requests must be pushed first (RFC 9126 PAR,
    /// `POST {issuer}/oauth2/par`; `--require-par=false` lifts it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub require_par: Option<bool>,
    /// Access-token lifetime for this client (at most the environment's).
    #[arg(long, value_parser = parse_duration)]
    pub access_token_ttl: Option<i64>,
    /// Refresh-token lifetime for this client.
    #[arg(long, value_parser = parse_duration)]
    pub refresh_token_ttl: Option<i64>,
    /// For private_key_jwt: the client's JWK Set, a file or an http(s) URL;
    /// for self_signed_tls_client_auth: a JWK Set file whose keys carry the
    /// client's certificates in x5c.
    #[arg(long)]
    pub jwks: Option<String>,
    /// Require a DPoP proof (RFC 9449) with every token request, so every
    /// access token is bound to the client's key (`--dpop-bound=false` lifts it).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub dpop_bound: Option<bool>,
    /// tls_client_auth: the certificate's subject DN (RFC 4514, e.g. "CN=app,O=Example").
    #[arg(long, group = "tls_name")]
    pub tls_subject_dn: Option<String>,
    /// tls_client_auth: a DNS name among the certificate's SANs.
    #[arg(long, group = "tls_name")]
    pub tls_san_dns: Option<String>,
    /// tls_client_auth: a URI among the certificate's SANs.
    #[arg(long, group = "tls_name")]
    pub tls_san_uri: Option<String>,
    /// tls_client_auth: an IP address among the certificate's SANs.
    #[arg(long, group = "tls_name")]
    pub tls_san_ip: Option<String>,
    /// tls_client_auth: an email address among the certificate's SANs.
    #[arg(long, group = "tls_name")]
    pub tls_san_email: Option<String>,
    /// Whether access tokens are bound to the client certificate of the
    /// token request (cnf.x5t#S256; default: true for the two tls methods).
    #[arg(long)]
    pub tls_bound_tokens: Option<bool>,
    /// Token exchange (RFC 8693, grant type
    /// urn:ietf:params:oauth:grant-type:token-exchange): a trusted issuer
    /// (`[[token_exchange.trusted_issuers]]` of the server) whose tokens this
    /// client may exchange, besides its own environment's (repeatable;
    /// replaces the list).
    #[arg(long, value_name = "ISSUER_URL")]
    pub exchange_issuer: Vec<String>,
    /// Only its own environment's tokens may be exchanged (clears --exchange-issuer).
    #[arg(long, conflicts_with = "exchange_issuer")]
    pub no_exchange_issuers: bool,
}

impl ClientFields {
    /// The tls_client_auth name given, if any (clap allows one).
    pub fn tls_subject(&self) -> Option<(keyward_store::TlsName, String)> {
        use keyward_store::TlsName;
        [
            (TlsName::SubjectDn, &self.tls_subject_dn),
            (TlsName::SanDns, &self.tls_san_dns),
            (TlsName::SanUri, &self.tls_san_uri),
            (TlsName::SanIp, &self.tls_san_ip),
            (TlsName::SanEmail, &self.tls_san_email),
        ]
        .into_iter()
        .find_map(|(k, v)| Some((k, v.clone()?)))
    }
}

#[derive(Debug, Subcommand)]
pub enum ClientsCmd {
    /// Register a client; prints its id and (for secret clients) its secret, once.
    Create {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// A name for people, shown in listings and the audit chain.
        #[arg(long)]
        name: String,
        /// How the client authenticates at the token endpoint.
        #[arg(long, value_enum, default_value = "client-secret-basic")]
        auth: AuthMethod,
        #[command(flatten)]
        fields: ClientFields,
        /// A public client: no secret (token_endpoint_auth_method none);
        /// authorization_code with PKCE, or the device grant
        /// (urn:ietf:params:oauth:grant-type:device_code). Overrides --auth.
        #[arg(long)]
        public: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List an environment's clients.
    List {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change a client's scopes, audiences, grant types, lifetimes, keys,
    /// authentication method, certificate name or token binding.
    Update {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// The client's id.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        /// A new name for people.
        #[arg(long)]
        name: Option<String>,
        /// Move the client to another authentication method (same client
        /// id): leaving a secret method drops the secret; moving to one
        /// prints a new secret, once. What only the old method used (its
        /// certificate name, its keys) is dropped; give what the new one
        /// needs beside it (--tls-subject-dn/--tls-san-*, --jwks).
        #[arg(long, value_enum)]
        auth: Option<AuthMethod>,
        #[command(flatten)]
        fields: ClientFields,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and its refresh tokens (their access tokens go on the revocation feed).
    Delete {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// The client's id.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
    },
    /// Replace a client's secret; prints the new one, once.
    RotateSecret {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// The client's id.
        #[arg(allow_hyphen_values = true)]
        client_id: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCmd {
    /// Create an admin API token; prints it once (only a hash is stored).
    Create {
        /// A name to recognise the token by in listings and the audit chain.
        #[arg(long, default_value = "admin")]
        name: String,
        /// What the token may do: permissions separated by spaces or commas,
        /// e.g. "keyward.env.prod.keys.* keyward.audit.read"; a trailing `*`
        /// covers a group, a bare `*` everything (the default, with a warning).
        #[arg(long, default_value = "*")]
        permissions: String,
        /// How long it works (e.g. 8h, 30d), or `never` (the default, with a warning).
        #[arg(long, default_value = "never")]
        ttl: String,
        /// Who the token is for (shown in listings and audit records).
        #[arg(long)]
        owner: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List admin tokens (never their values).
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token by id.
    Revoke {
        /// The token's id (from `admin-token list`; ids may begin with `-`).
        #[arg(allow_hyphen_values = true)]
        id: String,
    },
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
    /// Where the root key is: file (default; KEYWARD_ROOT_KEY,
    /// KEYWARD_ROOT_KEY_FILE or <data-dir>/root.key), pkcs11:<label> (an
    /// AES-256 key in the token, made when missing) or aws-kms:<key id, ARN
    /// or alias/name> (a symmetric KMS key, made when missing). Overrides
    /// root_key in keyward.toml and KEYWARD_ROOT_KEY_SOURCE.
    #[arg(long, value_name = "SOURCE")]
    pub root_key: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Algorithm and size of a key.
#[derive(Debug, Args, Clone)]
pub struct KeySpec {
    /// Signature algorithm: RS256 RS384 RS512 PS256 PS384 PS512 ES256 ES384 ES512 EdDSA
    /// ML-DSA-44 ML-DSA-65 ML-DSA-87.
    #[arg(long, default_value = "RS256")]
    pub alg: Algorithm,
    /// RSA modulus size: 2048, 3072 or 4096 (default 4096). RSA only.
    #[arg(long)]
    pub bits: Option<u32>,
}

/// Where an environment's private keys are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyStore {
    /// Sealed (AES-256-GCM under the root key) in the store.
    Local,
    /// Inside a PKCS#11 token (an HSM): [pkcs11] in keyward.toml or KEYWARD_PKCS11_*.
    Pkcs11,
    /// Inside AWS KMS: [aws_kms] in keyward.toml or KEYWARD_AWS_KMS*.
    AwsKms,
}

impl KeyStore {
    /// The store's name in records.
    pub fn name(self) -> keyward_store::KeyStoreName {
        match self {
            KeyStore::Local => keyward_store::KeyStoreName::Local,
            KeyStore::Pkcs11 => keyward_store::KeyStoreName::Pkcs11,
            KeyStore::AwsKms => keyward_store::KeyStoreName::AwsKms,
        }
    }
}

/// Whether an environment's token endpoint requires DPoP server nonces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DpopNonceArg {
    /// DPoP proofs need no server nonce (the default).
    Off,
    /// A DPoP proof must carry a current nonce of this environment; without
    /// one the answer is 400 use_dpop_nonce with a fresh DPoP-Nonce header.
    Required,
}

impl DpopNonceArg {
    /// The setting it names.
    pub fn setting(self) -> keyward_issuer::keyring::DpopNonce {
        match self {
            DpopNonceArg::Off => keyward_issuer::keyring::DpopNonce::Off,
            DpopNonceArg::Required => keyward_issuer::keyring::DpopNonce::Required,
        }
    }
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
    /// Create an environment with its first key (active at once), in one transaction.
    Create {
        /// The environment's name: 1 to 128 of A-Z a-z 0-9 . _ -
        name: String,
        /// Its issuer URL (the `iss` of its tokens; its endpoints are served under it).
        /// Unique: no two environments share a host and path.
        #[arg(long)]
        issuer: String,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where the environment's private keys are kept: local (sealed under
        /// the root key in the store), pkcs11 (made and kept inside an HSM)
        /// or aws-kms. Its first key is made there.
        #[arg(long, value_enum, default_value = "local")]
        key_store: KeyStore,
        /// DPoP server nonces (RFC 9449 §8) at its token endpoint: off or
        /// required (a proof without a current nonce gets use_dpop_nonce).
        #[arg(long, value_enum, default_value = "off")]
        dpop_nonce: DpopNonceArg,
        /// Create the environment without a key (it does not sign until
        /// `keys generate` or `keys import`; servers report it, readiness ignores it).
        #[arg(long)]
        no_key: bool,
        #[command(flatten)]
        login: LoginUrlArgs,
        /// Print the environment and its first key as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Delete an environment with its keys, clients and tokens (audited).
    Delete {
        /// The environment's name.
        name: String,
        /// Delete even while it publishes keys or has clients: its tokens stop
        /// verifying and its clients stop working.
        #[arg(long)]
        force: bool,
        /// Print what was deleted as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List environments.
    List {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show one environment and its policy.
    Show {
        /// The environment's name.
        name: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Change an environment's issuer URL, rotation policy, key store or DPoP nonce requirement.
    Update {
        /// The environment's name.
        name: String,
        /// A new issuer URL (unique across environments; tokens already issued keep the old `iss`).
        #[arg(long)]
        issuer: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Where new keys are made from now on (existing keys keep their store).
        #[arg(long, value_enum)]
        key_store: Option<KeyStore>,
        #[command(flatten)]
        login: LoginUrlArgs,
        /// Require DPoP server nonces at its token endpoint, or stop
        /// requiring them (turning them off and on again makes a new secret:
        /// nonces handed out before stop working).
        #[arg(long, value_enum)]
        dpop_nonce: Option<DpopNonceArg>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Where an environment sends browsers to log in (authorization code flow).
#[derive(Debug, Args, Clone, Default)]
pub struct LoginUrlArgs {
    /// The login app: browsers go to URL?login_challenge=... (https, or http
    /// to localhost). On update, an empty value removes it.
    #[arg(long, value_name = "URL")]
    pub login_url: Option<String>,
    /// The consent page (default: the login URL): URL?consent_challenge=...
    /// On update, an empty value falls back to the login URL.
    #[arg(long, value_name = "URL")]
    pub consent_url: Option<String>,
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
        /// The environment (by name).
        #[arg(long)]
        env: String,
        #[command(flatten)]
        key: KeySpec,
        #[command(flatten)]
        meta: KeyMeta,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Import a private key from PEM (PKCS#1 RSA PRIVATE KEY, PKCS#8 PRIVATE KEY, SEC1 EC PRIVATE KEY;
    /// ML-DSA: PKCS#8 seed form, RFC 9881) or, for ML-DSA, a private AKP JWK (RFC 9964).
    Import {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// The algorithm the key will sign with (the key must be one for it; with --jwk, default: the JWK's alg).
        #[arg(long, required_unless_present = "jwk")]
        alg: Option<Algorithm>,
        /// The private key file (PEM).
        #[arg(long, required_unless_present = "jwk", conflicts_with = "jwk")]
        pem: Option<PathBuf>,
        /// A private ML-DSA JWK file: kty AKP with alg, pub and priv (the 32-byte seed).
        #[arg(long)]
        jwk: Option<PathBuf>,
        #[command(flatten)]
        meta: KeyMeta,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List an environment's keys with their states and times.
    List {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Rotate: a new key per the environment's policy, published now, signing after the lead.
    Rotate {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// Rotate to this algorithm (e.g. from RS256 to ML-DSA-65); automatic
        /// rotation uses it from then on (the policy changes with the key).
        #[arg(long)]
        alg: Option<Algorithm>,
        /// RSA modulus size of the new key (2048, 3072 or 4096); automatic
        /// rotation uses it from then on. RSA only.
        #[arg(long)]
        bits: Option<u32>,
        #[command(flatten)]
        schedule: ScheduleArgs,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Retire a key now: it stops signing and stays published until its tokens expire.
    Retire {
        /// The key's id (kid).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Allow retiring the last key that can sign (with --accept-outage
        /// also the only key that signs now).
        #[arg(long)]
        force: bool,
        /// With --force: retire the only key that signs now, accepting that the
        /// token endpoint answers 503 until another key activates.
        #[arg(long, requires = "force")]
        accept_outage: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// EMERGENCY: revoke a key now. It is unpublished at once.
    Revoke {
        /// The key's id (kid).
        #[arg(allow_hyphen_values = true)]
        kid: String,
        /// Why (kept in the audit chain).
        #[arg(long)]
        reason: Option<String>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Export the published public keys (never private material).
    Export {
        /// The environment (by name).
        #[arg(long)]
        env: String,
        /// jwks: one JWK Set; pem: one SPKI PEM ("PUBLIC KEY") per key.
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
    ToPem {
        /// The JWK file (default: stdin).
        file: Option<PathBuf>,
    },
    /// SPKI PEM (stdin or FILE) to a public JWK.
    FromPem {
        /// The PEM file (default: stdin).
        file: Option<PathBuf>,
        /// Algorithm to bind (default: ES*/EdDSA from the key's curve, ML-DSA-* from its parameter set, RS256 for RSA).
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
        /// The environment (by name).
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
        /// The environment (by name).
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
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Verify a token against a JWKS (file or URL). Exit 0 and the claims on stdout, or exit 1 and the reason.
    Verify {
        /// JWK Set (or single JWK) file, or an http(s) URL.
        #[arg(long)]
        jwks: String,
        /// Fetch a --jwks URL over plain http from a host that is not
        /// loopback (otherwise only https, or http to loopback).
        #[arg(long)]
        allow_http: bool,
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
        /// The public JWK file to check the signature with.
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
        /// The new root key: file (a new key file, the default for a local
        /// root key), pkcs11:<label> or aws-kms:<key id, ARN or alias/name>
        /// (made in the device when missing).
        #[arg(long, value_name = "SOURCE")]
        to: Option<String>,
        /// Where to write the new key when the current one comes from KEYWARD_ROOT_KEY.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Walk the chain and name the first broken link (exit 1 if any).
    Verify {
        /// Print JSON instead of text.
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
        /// At most this many records.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `keyward backup --out FILE`, or `keyward backup verify FILE`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub cmd: Option<BackupCmd>,
    /// The file to write: created beside it under a temporary name (mode
    /// 0600) and renamed into place only when complete.
    #[arg(long, required = true, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Check a backup file without restoring it: format, checksum, every row, the audit chain.
    Verify {
        /// The backup file.
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The backup file (from `keyward backup --out`).
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses "90d", "48h", "15m", "30s" (humantime) into seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 15m, 48h, 90d)"))?;
    i64::try_from(d.as_secs()).map_err(|_| "duration too long".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every argument of every command says what it is for.
    #[test]
    fn every_flag_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") || a.is_hide_set() {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "keyward", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }
}
