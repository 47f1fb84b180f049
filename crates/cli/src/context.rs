//! The resolved configuration of one command: where the store is, where the
//! root key comes from, what time it is.

use std::future::Future;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _, Result};
use indicatif::{ProgressBar, ProgressStyle};
use keyward_issuer::keyring::KeySpec;
use keyward_issuer::{Change, FixedClock, ScaledClock, SharedClock, SystemClock};
use keyward_jose::KeyFamily;
use keyward_store::{RootKeySource, Store, Timestamp};

use crate::args::Cli;
use crate::key_stores::{KeyStoreConfig, RawKeyStores};
use keyward_signers::KeyStores;

pub struct Context {
    pub data_dir: PathBuf,
    /// The data dir given by flag or environment (a config file may set it otherwise).
    pub data_dir_flag: Option<PathBuf>,
    pub database_url: Option<String>,
    /// `--now`, when given.
    now: Option<Timestamp>,
    /// What every state is computed at: `--now` fixed, else the system clock.
    clock: SharedClock,
    actor: String,
    /// The key stores a server configuration names; `None`: from
    /// `KEYWARD_CONFIG` and the variables (see `key_stores.rs`).
    key_stores: Option<KeyStoreConfig>,
    /// The `root_key` a server configuration names (`Some(None)`: a
    /// server configuration without one); `None`: from `KEYWARD_CONFIG`.
    pub(crate) root_key_config: Option<Option<keyward_issuer::RootKeySpec>>,
}

impl Context {
    pub fn new(cli: &Cli) -> Result<Self> {
        let now = cli.now.as_deref().map(parse_time).transpose()?;
        Ok(Context {
            data_dir: cli
                .data_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from("./keyward-data")),
            data_dir_flag: cli.data_dir.clone(),
            database_url: cli.database_url.clone().filter(|u| !u.is_empty()),
            now,
            clock: match now {
                Some(t) => Arc::new(FixedClock(t)),
                None => Arc::new(SystemClock),
            },
            actor: format!(
                "cli:{}",
                std::env::var("USER")
                    .or_else(|_| std::env::var("LOGNAME"))
                    .unwrap_or_else(|_| "unknown".into())
            ),
            key_stores: None,
            root_key_config: None,
        })
    }

    /// The time every state is computed at (this command's clock).
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// This context with the store a server configuration names.
    pub fn with_store(&self, c: &crate::config::Config) -> Context {
        Context {
            data_dir: c.data_dir.clone(),
            data_dir_flag: Some(c.data_dir.clone()),
            database_url: c.database_url.clone(),
            now: self.now,
            clock: self.clock.clone(),
            actor: self.actor.clone(),
            key_stores: Some(c.key_stores.clone()),
            root_key_config: Some(c.root_key.clone()),
        }
    }

    /// The device key stores configured for this command (none configured:
    /// only `local` keys). No device is contacted.
    pub fn key_stores(&self) -> Result<KeyStores> {
        let config = match &self.key_stores {
            Some(c) => c.clone(),
            None => {
                let var = |k: &str| std::env::var(k).ok();
                RawKeyStores::from_env(&var)?.resolve(&var)?
            }
        };
        config.open()
    }

    /// Whether the store exists and was initialized.
    pub async fn is_initialized(&self) -> Result<bool> {
        if self.database_url.is_none() && !self.sqlite_path().exists() {
            return Ok(false);
        }
        let store = self.open_store_for_init().await?;
        let done = store.root_key_id().await?.is_some();
        store.close().await;
        Ok(done)
    }

    /// The clock a server runs on: the system clock, or for rotation drills
    /// and tests an accelerated one (`KEYWARD_CLOCK_SPEED`, starting at
    /// `KEYWARD_CLOCK_START` unix seconds, default now).
    pub fn clock(&self) -> SharedClock {
        if self.now.is_some() {
            return self.clock.clone();
        }
        let speed = std::env::var("KEYWARD_CLOCK_SPEED")
            .ok()
            .and_then(|s| s.parse::<f64>().ok());
        match speed {
            Some(speed) if speed > 0.0 => {
                let start = std::env::var("KEYWARD_CLOCK_START")
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or_else(|| self.now());
                Arc::new(ScaledClock::new(start, speed))
            }
            _ => self.clock.clone(),
        }
    }

    /// Who the audit chain names for this command.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// This command's change: now, by this actor.
    pub fn at(&self) -> Change<'_> {
        Change {
            now: self.now(),
            actor: &self.actor,
        }
    }

    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("keyward.db")
    }

    pub fn root_key_source(&self) -> RootKeySource {
        RootKeySource::resolve(&self.data_dir, |k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        })
    }

    /// Opens the store, creating an empty one (for `init`).
    pub async fn open_store_for_init(&self) -> Result<Store> {
        match &self.database_url {
            Some(url) => Store::open_url(url)
                .await
                .context("cannot open the database"),
            None => {
                let mut dir = std::fs::DirBuilder::new();
                dir.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
                dir.create(&self.data_dir).with_context(|| {
                    format!("cannot create data directory {}", self.data_dir.display())
                })?;
                Store::open_sqlite(&self.sqlite_path())
                    .await
                    .with_context(|| format!("cannot open {}", self.sqlite_path().display()))
            }
        }
    }

    /// Opens an initialized store; never creates one.
    pub async fn store(&self) -> Result<Store> {
        let store = match &self.database_url {
            Some(url) => Store::open_url(url)
                .await
                .context("cannot open the database")?,
            None => {
                let path = self.sqlite_path();
                if !path.exists() {
                    bail!(
                        "no keyward store at {} (run `keyward init --issuer URL` first, or pass --data-dir)",
                        path.display()
                    );
                }
                Store::open_sqlite(&path)
                    .await
                    .with_context(|| format!("cannot open {}", path.display()))?
            }
        };
        if store.root_key_id().await?.is_none() {
            bail!("the store is not initialized (run `keyward init --issuer URL` first)");
        }
        Ok(store)
    }
}

pub fn staged_path(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

/// Unix seconds or RFC 3339.
pub fn parse_time(s: &str) -> Result<Timestamp> {
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let t = humantime::parse_rfc3339_weak(s).map_err(|e| anyhow!("invalid time {s:?}: {e}"))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0))
}

/// Runs `work`, which generates a key of `spec`: RSA takes seconds, so a
/// terminal gets a spinner meanwhile (never in JSON mode, never when stderr
/// is not a terminal).
pub async fn generating<T>(spec: KeySpec, quiet: bool, work: impl Future<Output = T>) -> T {
    let is_rsa = matches!(spec.alg.family(), KeyFamily::Rsa);
    let spinner = (is_rsa && !quiet && std::io::stderr().is_terminal()).then(|| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("template"),
        );
        pb.set_message(format!(
            "generating {} key ({} bits)",
            spec.alg,
            spec.rsa_bits.unwrap_or(keyward_jose::DEFAULT_RSA_BITS)
        ));
        pb.enable_steady_tick(Duration::from_millis(100));
        pb
    });
    let result = work.await;
    if let Some(pb) = spinner {
        pb.finish_and_clear();
    }
    result
}

/// Reads a file, or stdin for `None` / "-".
pub fn read_input(file: Option<&Path>) -> Result<String> {
    use std::io::Read;
    match file {
        Some(p) if p != Path::new("-") => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))
        }
        _ => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read stdin")?;
            Ok(s)
        }
    }
}

/// A token argument, or stdin for "-".
pub fn token_arg(token: &str) -> Result<String> {
    if token == "-" {
        Ok(read_input(None)?.trim().to_string())
    } else {
        Ok(token.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyward_issuer::{RootKeyLoadError, RootKeyLoader};
    use keyward_jose::seal::RootKey;

    fn write_key(path: &Path, key: &RootKey) {
        std::fs::write(path, format!("{}\n", &*key.to_base64().unwrap())).unwrap();
    }

    #[test]
    fn the_server_loader_reads_the_file_then_the_staged_file_and_never_prints_key_text() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root.key");
        let old = RootKey::generate();
        let new = RootKey::generate();
        write_key(&path, &old);
        let loader = crate::root_source::SourceLoader {
            file: RootKeySource::File(path.clone()),
            stores: KeyStores::none(),
            configured: None,
        };
        let rec = |id: String| keyward_store::RootKeyRecord {
            id,
            reference: None,
        };
        assert_eq!(
            loader.load(&rec(old.key_id())).unwrap().key_id(),
            old.key_id()
        );
        // Not there yet: says which key the source holds, never key text.
        let e = loader.load(&rec(new.key_id())).unwrap_err();
        assert!(
            matches!(&e, RootKeyLoadError::OtherKey { held, .. } if *held == old.key_id()),
            "{e:?}"
        );
        let e = e.to_string();
        assert!(e.contains(&old.key_id()), "{e}");
        assert!(!e.contains(&*old.to_base64().unwrap()) && !e.contains(&*new.to_base64().unwrap()));
        // Staged beside the live file (a rotation between commit and rename):
        // read, and left in place.
        write_key(&staged_path(&path), &new);
        assert_eq!(
            loader.load(&rec(new.key_id())).unwrap().key_id(),
            new.key_id()
        );
        assert!(staged_path(&path).exists());
        // Renamed into place.
        std::fs::rename(staged_path(&path), &path).unwrap();
        assert_eq!(
            loader.load(&rec(new.key_id())).unwrap().key_id(),
            new.key_id()
        );
        // A missing file is named as such.
        std::fs::remove_file(&path).unwrap();
        let e = loader.load(&rec(new.key_id())).unwrap_err();
        assert!(matches!(e, RootKeyLoadError::Unreadable(_)), "{e:?}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
}
