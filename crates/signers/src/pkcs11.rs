//! The PKCS#11 key store: keys made and kept inside a token (an HSM; SoftHSM
//! in tests), signing through a pool of logged-in sessions.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::{KeyStore, SignerError, PKCS11};

/// Where the token is and how to log in. `Debug` never shows the PIN.
#[derive(Clone)]
pub struct Pkcs11Config {
    /// The PKCS#11 library (`/usr/lib/softhsm/libsofthsm2.so`).
    pub module: PathBuf,
    /// The token, by label (`CKA_LABEL` of the token) ...
    pub token_label: Option<String>,
    /// ... or by slot id. One of the two is required.
    pub slot: Option<u64>,
    /// The user PIN, from `KEYWARD_PKCS11_PIN` or the file named by
    /// `KEYWARD_PKCS11_PIN_FILE`; never a command-line argument.
    pub pin: Zeroizing<String>,
    /// Sessions kept open (default: the machine's cores).
    pub sessions: usize,
    /// The longest one call may wait for the device (default 5 s).
    pub call_timeout: Duration,
}

impl std::fmt::Debug for Pkcs11Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Config")
            .field("module", &self.module)
            .field("token_label", &self.token_label)
            .field("slot", &self.slot)
            .field("pin", &"<redacted>")
            .field("sessions", &self.sessions)
            .field("call_timeout", &self.call_timeout)
            .finish()
    }
}

/// Opens the PKCS#11 store. Fails only for a configuration that can never
/// work (neither token label nor slot); a module that does not load, a
/// missing token or a wrong PIN are reported by each call
/// ([`SignerError::Unavailable`]) and retried with backoff, so a server
/// starts while its device is down.
pub fn open_store(config: Pkcs11Config) -> Result<Arc<dyn KeyStore>, SignerError> {
    let _ = config;
    Err(SignerError::Config {
        store: PKCS11,
        message: "not built yet".into(),
    })
}
