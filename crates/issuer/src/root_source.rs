//! Where the root key comes from: a key file (or `KEYWARD_ROOT_KEY`), or a
//! key held by a device, named `pkcs11:<label>` (an AES-256 key object in
//! the PKCS#11 token) or `aws-kms:<key id, ARN or alias/name>` (a symmetric
//! KMS key). The store records a device root key's reference
//! ([`keyward_store::Store::root_key_ref`]); [`open_device_root`] finds it
//! again through the configured [`KeyStores`].

use std::fmt;
use std::str::FromStr;

use keyward_jose::seal::RootKey;
use keyward_signers::{KeyStores, SignerError, AWS_KMS, PKCS11};
use thiserror::Error;

/// The longest device key name accepted (a KMS ARN is about 100 bytes).
const MAX_NAME_LEN: usize = 512;

/// A root key source as configured (`root_key` in keyward.toml,
/// `KEYWARD_ROOT_KEY_SOURCE`, `--root-key`, `--to`) or recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootKeySpec {
    /// A local key: `KEYWARD_ROOT_KEY`, the file `KEYWARD_ROOT_KEY_FILE`
    /// names, else `<data-dir>/root.key`.
    File,
    /// A key held by the device store `store` (`pkcs11` or `aws-kms`),
    /// named `name` there.
    Device { store: &'static str, name: String },
}

/// A source that cannot be used.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum RootSourceError {
    /// The text is not a root key source.
    #[error("invalid root key source {given:?}: {why} (expected file, pkcs11:<label> or aws-kms:<key id, ARN or alias/name>)")]
    Invalid { given: String, why: &'static str },
    /// The device refused or failed (not configured, down, wrong PIN, no
    /// such key): the message names the source and the store's reason,
    /// never a PIN or key material.
    #[error("root key {source_name}: {error}")]
    Device {
        source_name: String,
        error: SignerError,
    },
}

impl RootSourceError {
    /// The device's error, if it was one.
    pub fn signer_error(&self) -> Option<&SignerError> {
        match self {
            RootSourceError::Device { error, .. } => Some(error),
            RootSourceError::Invalid { .. } => None,
        }
    }
}

impl FromStr for RootKeySpec {
    type Err = RootSourceError;

    fn from_str(text: &str) -> Result<Self, RootSourceError> {
        let invalid = |why| RootSourceError::Invalid {
            given: text.chars().take(80).collect(),
            why,
        };
        if text == "file" {
            return Ok(RootKeySpec::File);
        }
        let (store, name) = match text.split_once(':') {
            Some(("pkcs11", name)) => (PKCS11, name),
            Some(("aws-kms", name)) => (AWS_KMS, name),
            Some(_) => return Err(invalid("unknown key store")),
            None => return Err(invalid("no key store named")),
        };
        if name.is_empty() {
            return Err(invalid("the key's name is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(invalid("the key's name is longer than 512 bytes"));
        }
        if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(invalid(
                "the key's name holds white space or control characters",
            ));
        }
        if store == AWS_KMS && name.starts_with("alias/aws/") {
            return Err(invalid(
                "alias/aws/... names AWS managed keys, which cannot be a root key",
            ));
        }
        Ok(RootKeySpec::Device {
            store,
            name: name.to_string(),
        })
    }
}

impl fmt::Display for RootKeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootKeySpec::File => f.write_str("file"),
            RootKeySpec::Device { store, name } => write!(f, "{store}:{name}"),
        }
    }
}

impl RootKeySpec {
    /// Whether the key is held by a device.
    pub fn is_device(&self) -> bool {
        matches!(self, RootKeySpec::Device { .. })
    }
}

/// The device root key `spec` names, through the configured `stores`;
/// with `create` a missing key is made in the device (PKCS#11: a
/// non-extractable AES-256 token object; KMS: a symmetric key, aliased when
/// the name is an alias). Blocks on the device. [`RootSourceError::Device`]
/// names the source: the store not configured, the device down or refusing
/// the PIN, no such key (without `create`).
pub fn open_device_root(
    stores: &KeyStores,
    spec: &RootKeySpec,
    create: bool,
) -> Result<RootKey, RootSourceError> {
    let RootKeySpec::Device { store, name } = spec else {
        return Err(RootSourceError::Invalid {
            given: spec.to_string(),
            why: "not a device key",
        });
    };
    let error = |error| RootSourceError::Device {
        source_name: spec.to_string(),
        error,
    };
    let wrapper = stores
        .get(store)
        .map_err(error)?
        .root_key(name, create)
        .map_err(error)?;
    Ok(RootKey::device(wrapper))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_strictly_and_print_back() {
        for ok in [
            "file",
            "pkcs11:root",
            "aws-kms:alias/keyward-root",
            "aws-kms:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "aws-kms:1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            let spec: RootKeySpec = ok.parse().unwrap();
            assert_eq!(spec.to_string(), ok);
            assert_eq!(spec.is_device(), ok != "file");
        }
        let long = format!("pkcs11:{}", "x".repeat(513));
        for (bad, why) in [
            ("", "no key store"),
            ("File", "no key store"),
            ("pkcs11", "no key store"),
            ("pkcs11:", "empty"),
            ("aws-kms:", "empty"),
            ("hsm:root", "unknown key store"),
            ("PKCS11:root", "unknown key store"),
            ("pkcs11:a b", "white space"),
            ("pkcs11:a\u{0}", "control"),
            ("aws-kms:alias/aws/kms", "AWS managed"),
            (long.as_str(), "longer than 512"),
        ] {
            let e = bad.parse::<RootKeySpec>().unwrap_err();
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
            assert!(e.to_string().contains("expected file, pkcs11:"), "{e}");
        }
    }
}
