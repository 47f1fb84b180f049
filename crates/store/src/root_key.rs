//! Where the root key comes from, and how its file is written.
//!
//! Precedence: the `KEYWARD_ROOT_KEY` environment variable (base64 text),
//! then a file named by `KEYWARD_ROOT_KEY_FILE`, else `<data-dir>/root.key`.
//! Key files hold the key as base64 text and are written with mode 0600,
//! never over an existing file, except through the two-step
//! [`RootKeySource::stage_replace`] / [`RootKeySource::commit_replace`] used
//! by root-key rotation. No error message ever includes key text.

use std::ffi::OsString;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use keyward_jose::seal::RootKey;
use zeroize::Zeroizing;

use crate::error::StoreError;

/// The environment variable holding the root key itself.
pub const ROOT_KEY_VAR: &str = "KEYWARD_ROOT_KEY";
/// The environment variable naming a file that holds the root key.
pub const ROOT_KEY_FILE_VAR: &str = "KEYWARD_ROOT_KEY_FILE";
/// The key file's name inside the data directory.
pub const ROOT_KEY_FILE_NAME: &str = "root.key";

/// A key file is a line of base64; anything much longer is not a key file.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Where the root key is read from (and written to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootKeySource {
    /// The `KEYWARD_ROOT_KEY` environment variable (base64).
    Env,
    /// The file named by `KEYWARD_ROOT_KEY_FILE`.
    File(PathBuf),
    /// The data directory's key file: holds the full path `<data-dir>/root.key`.
    DataDir(PathBuf),
}

impl RootKeySource {
    /// `KEYWARD_ROOT_KEY` wins, then `KEYWARD_ROOT_KEY_FILE`, else
    /// `<data_dir>/root.key`. A variable set to the empty string counts as
    /// unset. `var` looks variables up (pass `|k| std::env::var(k).ok()`).
    pub fn resolve(data_dir: &Path, var: impl Fn(&str) -> Option<String>) -> RootKeySource {
        let set = |name: &str| var(name).filter(|v| !v.is_empty());
        if set(ROOT_KEY_VAR).is_some() {
            RootKeySource::Env
        } else if let Some(file) = set(ROOT_KEY_FILE_VAR) {
            RootKeySource::File(PathBuf::from(file))
        } else {
            RootKeySource::DataDir(data_dir.join(ROOT_KEY_FILE_NAME))
        }
    }

    /// A human name for the source, for messages:
    /// `KEYWARD_ROOT_KEY`, `KEYWARD_ROOT_KEY_FILE (/path)`, `/data/root.key`.
    pub fn describe(&self) -> String {
        match self {
            RootKeySource::Env => ROOT_KEY_VAR.to_string(),
            RootKeySource::File(p) => format!("{ROOT_KEY_FILE_VAR} ({})", p.display()),
            RootKeySource::DataDir(p) => p.display().to_string(),
        }
    }

    /// The key file's path; `None` for the environment variable.
    pub fn path(&self) -> Option<&Path> {
        match self {
            RootKeySource::Env => None,
            RootKeySource::File(p) | RootKeySource::DataDir(p) => Some(p),
        }
    }

    fn unavailable(&self, reason: impl Into<String>) -> StoreError {
        StoreError::RootKeyUnavailable {
            key_source: self.describe(),
            reason: reason.into(),
        }
    }

    fn write_error(&self, reason: impl Into<String>) -> StoreError {
        StoreError::RootKeyWrite {
            key_source: self.describe(),
            reason: reason.into(),
        }
    }

    /// Loads the key, reading the process environment for [`RootKeySource::Env`].
    pub fn load(&self) -> Result<RootKey, StoreError> {
        self.load_with(|k| std::env::var(k).ok())
    }

    /// Loads the key, looking environment variables up with `var`.
    pub fn load_with(&self, var: impl Fn(&str) -> Option<String>) -> Result<RootKey, StoreError> {
        let text = match self {
            RootKeySource::Env => Zeroizing::new(
                var(ROOT_KEY_VAR)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| self.unavailable("the variable is not set"))?,
            ),
            RootKeySource::File(p) | RootKeySource::DataDir(p) => self.read_file(p)?,
        };
        if text.trim().is_empty() {
            return Err(self.unavailable("it is empty"));
        }
        // SealError::BadRootKey messages describe the problem, never the text.
        RootKey::from_base64(&text).map_err(|e| self.unavailable(e.to_string()))
    }

    fn read_file(&self, path: &Path) -> Result<Zeroizing<String>, StoreError> {
        let file = fs::File::open(path).map_err(|e| {
            self.unavailable(match e.kind() {
                ErrorKind::NotFound => "the file does not exist".to_string(),
                ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => format!("cannot open the file: {e}"),
            })
        })?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_KEY_FILE_LEN + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| self.unavailable(format!("cannot read the file: {e}")))?;
        if bytes.len() as u64 > MAX_KEY_FILE_LEN {
            return Err(self.unavailable("the file is too large to be a root key file"));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| self.unavailable("the file is not text (expected base64)"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    /// Writes `key` to a new key file (mode 0600), creating the parent
    /// directory (mode 0700) if needed. Refuses to overwrite an existing file,
    /// and refuses for the environment-variable source.
    pub fn create(&self, key: &RootKey) -> Result<(), StoreError> {
        let path = self.writable_path()?;
        ensure_parent(self, path)?;
        write_new_file(self, path, key, false)?;
        sync_parent(path);
        Ok(())
    }

    /// First step of replacing the key file: writes `key` to `<path>.new`
    /// (mode 0600) and syncs it; an earlier leftover `<path>.new` is replaced.
    /// Returns the staged file's path. The live file is untouched until
    /// [`RootKeySource::commit_replace`].
    pub fn stage_replace(&self, key: &RootKey) -> Result<PathBuf, StoreError> {
        let path = self.writable_path()?;
        ensure_parent(self, path)?;
        let staged = staged_path(path);
        write_new_file(self, &staged, key, true)?;
        sync_parent(&staged);
        Ok(staged)
    }

    /// Second step: atomically renames `<path>.new` over `<path>`.
    pub fn commit_replace(&self) -> Result<(), StoreError> {
        let path = self.writable_path()?;
        let staged = staged_path(path);
        if !staged.exists() {
            return Err(self.write_error(format!("no staged key file {}", staged.display())));
        }
        fs::rename(&staged, path).map_err(|e| {
            self.write_error(format!(
                "cannot rename {} into place: {e}",
                staged.display()
            ))
        })?;
        sync_parent(path);
        Ok(())
    }

    fn writable_path(&self) -> Result<&Path, StoreError> {
        self.path().ok_or_else(|| {
            self.write_error(
                "the root key comes from an environment variable; there is no file to write",
            )
        })
    }
}

/// `<path>.new`.
fn staged_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".new");
    PathBuf::from(name)
}

fn ensure_parent(src: &RootKeySource, path: &Path) -> Result<(), StoreError> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(parent)
        .map_err(|e| src.write_error(format!("cannot create directory {}: {e}", parent.display())))
}

/// Creates `path` exclusively with mode 0600 and writes the key to it, synced.
/// With `replace_stale`, an existing file at `path` is removed first. On any
/// failure after creation the partial file is removed.
fn write_new_file(
    src: &RootKeySource,
    path: &Path,
    key: &RootKey,
    replace_stale: bool,
) -> Result<(), StoreError> {
    let Some(text) = key.to_base64() else {
        return Err(src.write_error(format!(
            "root key {} is held by a device ({}); it has no text to write to a file",
            key.key_id(),
            key.store()
        )));
    };
    if replace_stale {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => {
                return Err(src.write_error(format!("cannot remove stale {}: {e}", path.display())))
            }
        }
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| {
        src.write_error(match e.kind() {
            ErrorKind::AlreadyExists => format!(
                "{} already exists; refusing to overwrite it",
                path.display()
            ),
            _ => format!("cannot create {}: {e}", path.display()),
        })
    })?;
    let mut line = Zeroizing::new(String::with_capacity(48));
    line.push_str(&text);
    line.push('\n');
    let written = file
        .write_all(line.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = fs::remove_file(path);
        return Err(src.write_error(format!("cannot write {}: {e}", path.display())));
    }
    Ok(())
}

/// Best effort: make a rename or creation durable by syncing the directory.
fn sync_parent(path: &Path) {
    #[cfg(unix)]
    if let Some(parent) = path.parent() {
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
