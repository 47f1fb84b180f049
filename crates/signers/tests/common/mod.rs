//! A SoftHSM2 for tests: one configuration per test process (SoftHSM reads
//! `SOFTHSM2_CONF` when the library is initialized, and the library is
//! loaded once per process), a fresh token per test, made in-process with
//! `C_InitToken`/`C_InitPIN` on the free slot, so it is visible to every
//! user of the library in the process at once.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyward_signers::pkcs11::Pkcs11Config;
use zeroize::Zeroizing;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

pub struct Hsm {
    pub ctx: Pkcs11,
    pub dir: PathBuf,
}

pub struct Token {
    pub label: String,
    pub pin: String,
    pub so_pin: String,
    pub serial: String,
}

static HSM: OnceLock<Option<Hsm>> = OnceLock::new();

/// The process's SoftHSM, or `None` (with a `SKIPPED` line) when SoftHSM2
/// is not installed; with `KEYWARD_REQUIRE_DEVICES=1` its absence fails.
pub fn hsm() -> Option<&'static Hsm> {
    HSM.get_or_init(|| {
        if !Path::new(MODULE).exists() {
            if std::env::var("KEYWARD_REQUIRE_DEVICES").as_deref() == Ok("1") {
                panic!("KEYWARD_REQUIRE_DEVICES=1 but SoftHSM2 is not installed ({MODULE} is missing; apt-get install softhsm2)");
            }
            println!("SKIPPED: SoftHSM2 is not installed ({MODULE} is missing)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("softhsm-")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir")
            .keep();
        std::fs::create_dir_all(dir.join("tokens")).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .expect("softhsm2.conf");
        // Before the first C_Initialize in this process.
        std::env::set_var("SOFTHSM2_CONF", &conf);
        let ctx = Pkcs11::new(MODULE).expect("load SoftHSM2");
        initialize(&ctx);
        Some(Hsm { ctx, dir })
    })
    .as_ref()
}

pub fn initialize(ctx: &Pkcs11) {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
}

pub fn unique(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let mut label = format!("kw{}-{n}-{name}", std::process::id() % 100_000);
    label.truncate(32);
    label
}

impl Hsm {
    /// A fresh token with its own label, user PIN and SO PIN.
    pub fn token(&self, name: &str) -> Token {
        let label = unique(name);
        self.token_labelled(&label)
    }

    /// A fresh token labelled `label` (which may repeat another token's).
    pub fn token_labelled(&self, label: &str) -> Token {
        let pin = format!("user-{}", keyward_jose::crypto::random_text::<6>());
        self.token_with(label, &pin)
    }

    /// A fresh token labelled `label` with user PIN `pin`.
    pub fn token_with(&self, label: &str, pin: &str) -> Token {
        static LOCK: Mutex<()> = Mutex::new(());
        let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let pin = pin.to_string();
        let so_pin = format!("so-{}", keyward_jose::crypto::random_text::<6>());
        let slot = self
            .ctx
            .get_all_slots()
            .expect("slots")
            .into_iter()
            .find(|s| {
                self.ctx
                    .get_token_info(*s)
                    .map(|i| !i.token_initialized())
                    .unwrap_or(false)
            })
            .expect("SoftHSM offers a free slot");
        self.ctx
            .init_token(slot, &AuthPin::from(so_pin.as_str()), label)
            .expect("C_InitToken");
        {
            let s = self.ctx.open_rw_session(slot).expect("session");
            s.login(UserType::So, Some(&AuthPin::from(so_pin.as_str())))
                .expect("SO login");
            s.init_pin(&AuthPin::from(pin.as_str())).expect("C_InitPIN");
            s.logout().expect("SO logout");
        }
        let serial = self
            .ctx
            .get_token_info(slot)
            .expect("token info")
            .serial_number()
            .trim()
            .to_string();
        Token {
            label: label.into(),
            pin,
            so_pin,
            serial,
        }
    }

    pub fn slot(&self, token: &Token) -> Slot {
        self.ctx
            .get_slots_with_token()
            .expect("slots")
            .into_iter()
            .find(|s| {
                self.ctx
                    .get_token_info(*s)
                    .map(|i| i.serial_number().trim() == token.serial)
                    .unwrap_or(false)
            })
            .expect("the token's slot")
    }

    /// A session on `token`, logged in as the user (login state is per
    /// token and shared with the store under test).
    pub fn session(&self, token: &Token) -> Session {
        let s = self.ctx.open_rw_session(self.slot(token)).expect("session");
        match s.login(UserType::User, Some(&AuthPin::from(token.pin.as_str()))) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => s,
            Err(e) => panic!("login: {e}"),
        }
    }

    /// Every object on `token`, private ones included.
    pub fn objects(&self, token: &Token) -> Vec<ObjectHandle> {
        self.session(token).find_objects(&[]).expect("find")
    }

    pub fn objects_with_id(&self, token: &Token, id: &[u8]) -> usize {
        self.session(token)
            .find_objects(&[Attribute::Id(id.to_vec())])
            .expect("find")
            .len()
    }

    pub fn config(&self, token: &Token) -> Pkcs11Config {
        Pkcs11Config {
            module: MODULE.into(),
            token_label: Some(token.label.clone()),
            slot: None,
            pin: Zeroizing::new(token.pin.clone()),
            sessions: 4,
            call_timeout: Duration::from_secs(5),
        }
    }
}
