//! Where device keys live: the `[pkcs11]` and `[aws_kms]` tables of
//! keyward.toml, each field overridable by a `KEYWARD_PKCS11_<FIELD>` or
//! `KEYWARD_AWS_KMS_<FIELD>` variable, resolved into the
//! [`KeyStores`] every command and the server use.
//!
//! `serve` reads the tables from its `--config` file; the other commands
//! from the file named by `KEYWARD_CONFIG`, if any. The PKCS#11 PIN is
//! never read from the file nor from an argument: `KEYWARD_PKCS11_PIN` or
//! the file named by `KEYWARD_PKCS11_PIN_FILE`. Nothing here talks to a
//! device: a store that is down is found out when it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use keyward_signers::kms::KmsConfig;
use keyward_signers::pkcs11::Pkcs11Config;
use keyward_signers::KeyStores;
use serde::Deserialize;
use serde_json::{json, Value};
use zeroize::Zeroizing;

use crate::args::parse_duration;

/// The variable naming the configuration file of commands other than `serve`.
pub const CONFIG_VAR: &str = "KEYWARD_CONFIG";
/// The PKCS#11 user PIN itself.
pub const PIN_VAR: &str = "KEYWARD_PKCS11_PIN";
/// A file holding the PKCS#11 user PIN (one line).
pub const PIN_FILE_VAR: &str = "KEYWARD_PKCS11_PIN_FILE";

/// The `[pkcs11]` table as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPkcs11 {
    /// The PKCS#11 library's path.
    pub module: Option<PathBuf>,
    /// The token's label ...
    pub token_label: Option<String>,
    /// ... or its slot id.
    pub slot: Option<u64>,
    /// Sessions kept open (default: the number of cores).
    pub sessions: Option<usize>,
    /// The longest one device call may take (default 5s).
    pub call_timeout: Option<String>,
    /// Refused with a message saying where the PIN goes.
    pub pin: Option<toml::Value>,
}

/// The `[aws_kms]` table as written. An empty table turns KMS on with the
/// AWS defaults (region and credentials from the standard chain).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAwsKms {
    pub region: Option<String>,
    /// An endpoint override (a VPC endpoint, a local test server).
    pub endpoint_url: Option<String>,
    /// The longest one KMS call may take, retries included (default 5s).
    pub call_timeout: Option<String>,
}

/// Both tables.
#[derive(Clone, Debug, Default)]
pub struct RawKeyStores {
    pub pkcs11: Option<RawPkcs11>,
    pub aws_kms: Option<RawAwsKms>,
}

/// The resolved settings. `Debug` never shows the PIN.
#[derive(Clone, Debug, Default)]
pub struct KeyStoreConfig {
    pub pkcs11: Option<Pkcs11Config>,
    pub aws_kms: Option<KmsConfig>,
}

/// Only the tables of a keyward.toml, for commands other than `serve`
/// (which reads the whole file).
#[derive(Debug, Default, Deserialize)]
struct TablesOnly {
    pkcs11: Option<RawPkcs11>,
    aws_kms: Option<RawAwsKms>,
}

impl RawKeyStores {
    /// The tables of the file `KEYWARD_CONFIG` names (none when unset), with
    /// the variables applied: what commands other than `serve` use.
    pub fn from_env(var: &impl Fn(&str) -> Option<String>) -> Result<RawKeyStores> {
        let mut raw = match var(CONFIG_VAR).filter(|v| !v.is_empty()) {
            Some(path) => Self::from_file(Path::new(&path))?,
            None => RawKeyStores::default(),
        };
        raw.apply_env(var)?;
        Ok(raw)
    }

    fn from_file(path: &Path) -> Result<RawKeyStores> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{CONFIG_VAR}: cannot read {}", path.display()))?;
        let t: TablesOnly = toml::from_str::<toml::Table>(&text)
            .map_err(|e| anyhow!("{}: {}", path.display(), e.message().trim_end()))
            .and_then(|table| {
                let keep = |k: &str| table.get(k).cloned();
                let mut only = toml::Table::new();
                for k in ["pkcs11", "aws_kms"] {
                    if let Some(v) = keep(k) {
                        only.insert(k.into(), v);
                    }
                }
                only.try_into().map_err(|e: toml::de::Error| {
                    anyhow!("{}: {}", path.display(), e.message().trim_end())
                })
            })?;
        Ok(RawKeyStores {
            pkcs11: t.pkcs11,
            aws_kms: t.aws_kms,
        })
    }

    /// Applies `KEYWARD_PKCS11_*` and `KEYWARD_AWS_KMS_*` (and
    /// `KEYWARD_AWS_KMS=1`, which turns KMS on with its defaults).
    pub fn apply_env(&mut self, var: &impl Fn(&str) -> Option<String>) -> Result<()> {
        let get = |name: &str| var(name).filter(|v| !v.is_empty());
        let p11 = [
            "KEYWARD_PKCS11_MODULE",
            "KEYWARD_PKCS11_TOKEN_LABEL",
            "KEYWARD_PKCS11_SLOT",
            "KEYWARD_PKCS11_SESSIONS",
            "KEYWARD_PKCS11_CALL_TIMEOUT",
        ];
        if p11.iter().any(|n| get(n).is_some()) {
            let p = self.pkcs11.get_or_insert_with(RawPkcs11::default);
            if let Some(v) = get(p11[0]) {
                p.module = Some(v.into());
            }
            if let Some(v) = get(p11[1]) {
                p.token_label = Some(v);
            }
            if let Some(v) = get(p11[2]) {
                p.slot = Some(
                    v.parse()
                        .map_err(|e| anyhow!("KEYWARD_PKCS11_SLOT must be a number: {e}"))?,
                );
            }
            if let Some(v) = get(p11[3]) {
                p.sessions = Some(
                    v.parse()
                        .map_err(|e| anyhow!("KEYWARD_PKCS11_SESSIONS must be a number: {e}"))?,
                );
            }
            if let Some(v) = get(p11[4]) {
                p.call_timeout = Some(v);
            }
        }
        let kms = [
            "KEYWARD_AWS_KMS_REGION",
            "KEYWARD_AWS_KMS_ENDPOINT_URL",
            "KEYWARD_AWS_KMS_CALL_TIMEOUT",
        ];
        let on = match get("KEYWARD_AWS_KMS").as_deref() {
            None | Some("0") | Some("false") => false,
            Some("1") | Some("true") => true,
            Some(other) => bail!("KEYWARD_AWS_KMS must be 1 or 0, not {other:?}"),
        };
        if on || kms.iter().any(|n| get(n).is_some()) {
            let k = self.aws_kms.get_or_insert_with(RawAwsKms::default);
            if let Some(v) = get(kms[0]) {
                k.region = Some(v);
            }
            if let Some(v) = get(kms[1]) {
                k.endpoint_url = Some(v);
            }
            if let Some(v) = get(kms[2]) {
                k.call_timeout = Some(v);
            }
        }
        Ok(())
    }

    /// Validates, reading the PIN with `var` (and its file).
    pub fn resolve(self, var: &impl Fn(&str) -> Option<String>) -> Result<KeyStoreConfig> {
        let call_timeout = |table: &str, v: &Option<String>| -> Result<Duration> {
            let secs = parse_duration(v.as_deref().unwrap_or("5s"))
                .map_err(|e| anyhow!("[{table}] call_timeout: {e}"))?;
            if !(1..=120).contains(&secs) {
                bail!("[{table}] call_timeout must be between 1s and 2m");
            }
            Ok(Duration::from_secs(secs as u64))
        };
        let pkcs11 = match self.pkcs11 {
            None => None,
            Some(p) => {
                if p.pin.is_some() {
                    bail!("[pkcs11] pin: the PIN is never read from the configuration file; set {PIN_VAR} or {PIN_FILE_VAR}");
                }
                let module = p.module.ok_or_else(|| {
                    anyhow!("[pkcs11] module is required (the PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so; or KEYWARD_PKCS11_MODULE)")
                })?;
                if p.token_label.is_none() && p.slot.is_none() {
                    bail!("[pkcs11] needs token_label or slot (or KEYWARD_PKCS11_TOKEN_LABEL / KEYWARD_PKCS11_SLOT)");
                }
                if p.token_label.is_some() && p.slot.is_some() {
                    bail!("[pkcs11] takes token_label or slot, not both");
                }
                let sessions = p.sessions.unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                });
                if !(1..=256).contains(&sessions) {
                    bail!("[pkcs11] sessions must be between 1 and 256");
                }
                Some(Pkcs11Config {
                    module,
                    token_label: p.token_label,
                    slot: p.slot,
                    pin: read_pin(var)?,
                    sessions,
                    call_timeout: call_timeout("pkcs11", &p.call_timeout)?,
                })
            }
        };
        let aws_kms = match self.aws_kms {
            None => None,
            Some(k) => {
                if let Some(url) = &k.endpoint_url {
                    if !(url.starts_with("https://") || url.starts_with("http://")) {
                        bail!("[aws_kms] endpoint_url must be an http(s) URL, not {url:?}");
                    }
                }
                Some(KmsConfig {
                    region: k.region,
                    endpoint_url: k.endpoint_url,
                    call_timeout: call_timeout("aws_kms", &k.call_timeout)?,
                    ..KmsConfig::default()
                })
            }
        };
        Ok(KeyStoreConfig { pkcs11, aws_kms })
    }
}

/// The PIN from `KEYWARD_PKCS11_PIN`, else the file `KEYWARD_PKCS11_PIN_FILE`
/// names (its first line). Messages never include it.
fn read_pin(var: &impl Fn(&str) -> Option<String>) -> Result<Zeroizing<String>> {
    if let Some(pin) = var(PIN_VAR).filter(|v| !v.is_empty()) {
        return Ok(Zeroizing::new(pin));
    }
    let Some(file) = var(PIN_FILE_VAR).filter(|v| !v.is_empty()) else {
        bail!(
            "the PKCS#11 PIN is not set: put it in {PIN_VAR}, or in a file named by {PIN_FILE_VAR}"
        );
    };
    let text = Zeroizing::new(std::fs::read_to_string(&file).map_err(|e| {
        anyhow!(
            "{PIN_FILE_VAR} ({file}): cannot read the file: {}",
            e.kind()
        )
    })?);
    let pin = Zeroizing::new(text.lines().next().unwrap_or("").trim().to_string());
    if pin.is_empty() {
        bail!("{PIN_FILE_VAR} ({file}): the file is empty");
    }
    Ok(pin)
}

impl KeyStoreConfig {
    /// The stores, opened (no device is contacted yet).
    pub fn open(&self) -> Result<KeyStores> {
        let mut stores = KeyStores::none();
        if let Some(c) = &self.pkcs11 {
            stores = stores.with(keyward_signers::pkcs11::open_store(c.clone())?);
        }
        if let Some(c) = &self.aws_kms {
            stores = stores.with(keyward_signers::kms::open_store(c.clone())?);
        }
        Ok(stores)
    }

    /// For `config check`: every setting but the PIN, which shows as set.
    pub fn to_json(&self) -> Value {
        json!({
            "pkcs11": self.pkcs11.as_ref().map(|p| json!({
                "module": p.module,
                "token_label": p.token_label,
                "slot": p.slot,
                "pin": "(set)",
                "sessions": p.sessions,
                "call_timeout_secs": p.call_timeout.as_secs(),
            })),
            "aws_kms": self.aws_kms.as_ref().map(|k| json!({
                "region": k.region,
                "endpoint_url": k.endpoint_url,
                "call_timeout_secs": k.call_timeout.as_secs(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn pkcs11_from_variables_with_the_pin_from_a_file_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let pin_file = dir.path().join("pin");
        std::fs::write(&pin_file, "s3cret-pin\n").unwrap();
        let v = vars(&[
            ("KEYWARD_PKCS11_MODULE", "/usr/lib/softhsm/libsofthsm2.so"),
            ("KEYWARD_PKCS11_TOKEN_LABEL", "keyward"),
            ("KEYWARD_PKCS11_SESSIONS", "3"),
            (PIN_FILE_VAR, pin_file.to_str().unwrap()),
        ]);
        let c = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap();
        let p = c.pkcs11.as_ref().unwrap();
        assert_eq!(p.pin.as_str(), "s3cret-pin");
        assert_eq!(p.sessions, 3);
        assert_eq!(p.token_label.as_deref(), Some("keyward"));
        assert!(c.aws_kms.is_none());
        let shown = format!("{:?} {}", c, c.to_json());
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn bad_settings_are_refused_with_what_to_do() {
        let v = vars(&[("KEYWARD_PKCS11_MODULE", "/lib.so"), (PIN_VAR, "1")]);
        let e = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap_err();
        assert!(e.to_string().contains("token_label or slot"), "{e}");

        let v = vars(&[
            ("KEYWARD_PKCS11_MODULE", "/lib.so"),
            ("KEYWARD_PKCS11_TOKEN_LABEL", "t"),
        ]);
        let e = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap_err();
        assert!(e.to_string().contains(PIN_VAR), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(
            &f,
            "listen = \"x\"\n[pkcs11]\nmodule = \"/lib.so\"\ntoken_label = \"t\"\npin = \"1234\"\n",
        )
        .unwrap();
        let v = vars(&[(CONFIG_VAR, f.to_str().unwrap())]);
        let e = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap_err();
        assert!(
            e.to_string()
                .contains("never read from the configuration file"),
            "{e}"
        );
        assert!(!e.to_string().contains("1234"), "{e}");

        let v = vars(&[("KEYWARD_AWS_KMS", "yes")]);
        assert!(RawKeyStores::from_env(&v).is_err());
        let v = vars(&[("KEYWARD_AWS_KMS_ENDPOINT_URL", "127.0.0.1:4566")]);
        let e = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap_err();
        assert!(e.to_string().contains("http(s) URL"), "{e}");
    }

    #[test]
    fn kms_turns_on_from_one_variable_and_the_file_table() {
        let v = vars(&[("KEYWARD_AWS_KMS", "1")]);
        let c = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap();
        let k = c.aws_kms.unwrap();
        assert_eq!(k.call_timeout, Duration::from_secs(5));
        assert!(k.region.is_none() && k.endpoint_url.is_none());

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.toml");
        std::fs::write(
            &f,
            "[aws_kms]\nregion = \"eu-west-1\"\nendpoint_url = \"http://127.0.0.1:4566\"\n",
        )
        .unwrap();
        let v = vars(&[
            (CONFIG_VAR, f.to_str().unwrap()),
            ("KEYWARD_AWS_KMS_REGION", "us-east-2"),
        ]);
        let c = RawKeyStores::from_env(&v).unwrap().resolve(&v).unwrap();
        let k = c.aws_kms.unwrap();
        assert_eq!(k.region.as_deref(), Some("us-east-2"), "the variable wins");
        assert_eq!(k.endpoint_url.as_deref(), Some("http://127.0.0.1:4566"));
    }
}
