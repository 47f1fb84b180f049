//! The PKCS#11 key store: keys made and kept inside a token (an HSM; SoftHSM
//! in tests), signing through a pool of logged-in sessions.
//!
//! # References
//!
//! A key is recorded as `<token serial>/<CKA_ID as lower-case hex>`, for
//! example `2f1b6c0e9a3d4e51/6b6579312d6573323536`. The `CKA_ID` (and the
//! `CKA_LABEL`) of both halves of the pair is the key's `kid`, so an
//! operator finds keyward's keys with `pkcs11-tool --list-objects`. The
//! serial makes a reference fail (`NotFound`) on another token rather than
//! sign with a key of the same id there.
//!
//! # Connection
//!
//! Nothing touches the module until the first call, so a server starts
//! while its device is down. The first call loads the library, initializes
//! it (OS locking; a library another part of the process initialized
//! already is used as it is), finds the token by label or slot, and opens
//! up to [`Pkcs11Config::sessions`] read/write sessions, logged in as the
//! user once per token. Each call checks one session out of the pool, so
//! concurrent signatures run in parallel on as many sessions; waiting for
//! a free one is bounded by [`Pkcs11Config::call_timeout`].
//!
//! A failure that means the connection is bad (`module`, `token`, `pin`,
//! `session`, `device`) drops the pooled sessions, so the next call
//! reconnects, and starts a [`Backoff`]: until it is over, calls fail at
//! once with the last failure's reason. A call that finds its session
//! closed under it (`session`) retries once on a fresh session first.
//! keyward never calls `C_Finalize`: it would end the sessions of every
//! user of the library in the process, and PKCS#11 forbids it while other
//! threads are in the library. It initializes the library again when it
//! finds it finalized (`CKR_CRYPTOKI_NOT_INITIALIZED`).
//!
//! A PIN the token refuses as incorrect is not presented again: every wrong
//! try counts toward the token's lockout (a locked user PIN needs the
//! security officer). Calls then fail with reason `pin` until the PIN is
//! fixed and keyward restarted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Function, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsPssParams};
use cryptoki::mechanism::{aead::GcmParams, Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, SessionState, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use keyward_jose::alg::{Curve, KeyFamily, DEFAULT_RSA_BITS, RSA_SIZES};
use keyward_jose::seal::KeyWrapper;
use keyward_jose::{Algorithm, Jwk, KeyError, PublicKey, PublicMaterial, SealError};
use keyward_jose::{SigningCost, TokenSigner};
use zeroize::Zeroizing;

use crate::backoff::Permit;
use crate::{Backoff, HardwareKey, KeyStore, SignerError, PKCS11};

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
    if config.token_label.is_none() && config.slot.is_none() {
        return Err(SignerError::Config {
            store: PKCS11,
            message: "name the token: [pkcs11] token_label (KEYWARD_PKCS11_TOKEN_LABEL) or slot (KEYWARD_PKCS11_SLOT)".into(),
        });
    }
    if config.token_label.as_deref() == Some("") {
        return Err(SignerError::Config {
            store: PKCS11,
            message: "[pkcs11] token_label is empty".into(),
        });
    }
    if config.module.as_os_str().is_empty() {
        return Err(SignerError::Config {
            store: PKCS11,
            message: "[pkcs11] module (KEYWARD_PKCS11_MODULE) is empty: name the PKCS#11 library"
                .into(),
        });
    }
    Ok(Arc::new(Pkcs11Store(Arc::new(Shared::new(config)))))
}

// ---------------------------------------------------------------------------
// Failures

/// What went wrong with the device, before it becomes a [`SignerError`].
enum Fail {
    /// A PKCS#11 call failed; `what` names the step for the message.
    Ck(CkError, &'static str),
    /// A classified failure found without a PKCS#11 error (no such token).
    Conn(Failure),
    /// A final answer that says nothing about the connection (not found,
    /// unsupported, mismatch, ...).
    Done(SignerError),
    /// No session (or connection) within the call timeout: every session
    /// is busy or the device does not answer. Counts toward the backoff
    /// (a hung device must not make every caller wait the full timeout),
    /// but does not drop the connection: a busy pool is not a bad one.
    Timeout(SignerError),
}

impl From<SignerError> for Fail {
    fn from(e: SignerError) -> Self {
        Fail::Done(e)
    }
}

/// A failure that means the connection is bad.
#[derive(Clone, Debug)]
struct Failure {
    reason: &'static str,
    detail: String,
    /// The session handles are gone (closed under us, library finalized,
    /// token removed): forget them rather than close them, since their
    /// numbers may already name someone else's new sessions.
    dead: bool,
    /// The library was finalized: initialize it again.
    reinit: bool,
}

/// Classifies a PKCS#11 error: `Some` for a bad connection, `None` for an
/// error of the operation itself (the device answered; the connection is
/// fine).
fn classify(e: &CkError, what: &str) -> Option<Failure> {
    let detail = format!("{what}: {e}");
    let (reason, dead, reinit) = match e {
        CkError::LibraryLoading(_) | CkError::MissingSymbol(_) | CkError::NullFunctionPointer => {
            ("module", true, false)
        }
        CkError::Pkcs11(rv, _) => match rv {
            RvError::CryptokiNotInitialized => ("session", true, true),
            RvError::SessionHandleInvalid | RvError::SessionClosed => ("session", true, false),
            RvError::UserNotLoggedIn => ("session", false, false),
            RvError::SlotIdInvalid
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::DeviceRemoved => ("token", true, false),
            RvError::PinIncorrect
            | RvError::PinInvalid
            | RvError::PinLenRange
            | RvError::PinExpired
            | RvError::PinLocked
            | RvError::PinTooWeak
            | RvError::UserPinNotInitialized => ("pin", false, false),
            RvError::DeviceError
            | RvError::DeviceMemory
            | RvError::GeneralError
            | RvError::FunctionFailed
            | RvError::HostMemory
            | RvError::SessionCount
            | RvError::CantLock
            | RvError::FunctionCanceled
            | RvError::LibraryLoadFailed
            | RvError::FipsSelfTestFailed
            | RvError::VendorDefined(_)
            | RvError::UnknownErrorCode(_) => ("device", false, false),
            _ => return None,
        },
        _ => return None,
    };
    Some(Failure {
        reason,
        detail,
        dead,
        reinit,
    })
}

fn is_pin_incorrect(e: &CkError) -> bool {
    matches!(e, CkError::Pkcs11(RvError::PinIncorrect, _))
}

fn rv(e: &CkError) -> Option<RvError> {
    match e {
        CkError::Pkcs11(rv, _) => Some(*rv),
        _ => None,
    }
}

/// An operation error (the device answered): reason `device`, without
/// dropping the connection.
fn op_error(e: &CkError, what: &str) -> SignerError {
    SignerError::Unavailable {
        store: PKCS11,
        reason: "device",
        detail: format!("{what}: {e}"),
    }
}

fn unavailable(f: &Failure) -> SignerError {
    SignerError::Unavailable {
        store: PKCS11,
        reason: f.reason,
        detail: f.detail.clone(),
    }
}

// ---------------------------------------------------------------------------
// The shared state: module, connection, session pool, backoff

/// A connection to the token: the module and the slot, as found.
struct Conn {
    ctx: Pkcs11,
    slot: Slot,
    serial: String,
    label: String,
    mechanisms: Vec<MechanismType>,
    generation: u64,
}

#[derive(Default)]
struct ConnSlot {
    /// The loaded library; kept across reconnects (loading twice is
    /// harmless, but needless).
    ctx: Option<Pkcs11>,
    /// Initialize again before the next use.
    reinit: bool,
    conn: Option<Arc<Conn>>,
    connecting: bool,
}

struct Pooled {
    generation: u64,
    session: Session,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Pooled>,
    /// Sessions open: idle and checked out.
    open: usize,
    /// The connection's generation: sessions of an older one are disposed of.
    current: u64,
    /// Sessions of this generation and older are forgotten, not closed.
    forget_upto: u64,
    /// Callers waiting for a session (a notification costs a system call:
    /// made only when someone waits).
    waiters: usize,
    /// Sessions checked out, by lease id: their generation and since when.
    /// A lease no longer here was given up as hung: it no longer counts in
    /// `open`, and its session is forgotten when it comes back.
    out: HashMap<u64, (u64, Instant)>,
    /// The id of the next lease.
    next_lease: u64,
}

impl Pool {
    /// Records a session checked out (already counted in `open`).
    fn lend(&mut self, generation: u64) -> u64 {
        self.next_lease += 1;
        self.out
            .insert(self.next_lease, (generation, Instant::now()));
        self.next_lease
    }

    /// A lease comes back: whether it still counts in `open` (it was not
    /// given up as hung).
    fn returned(&mut self, id: u64) -> bool {
        self.out.remove(&id).is_some()
    }
}

struct Shared {
    config: Pkcs11Config,
    max_sessions: usize,
    conn: Mutex<ConnSlot>,
    conn_ready: Condvar,
    pool: Mutex<Pool>,
    pool_ready: Condvar,
    generations: AtomicU64,
    backoff: Backoff,
    last: Mutex<Option<Failure>>,
    /// The token refused the PIN as incorrect: never present it again.
    pin_refused: AtomicBool,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Store")
            .field("config", &self.config)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves consistent data
    // (every update is a single assignment), so a poisoned lock is used.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A session checked out of the pool; given back with [`Shared::checkin`]
/// or [`Shared::discard`]. Dropped otherwise (a panic inside an
/// operation), it frees its pool slot and forgets its session: the
/// session's state is unknown, and no PKCS#11 call is made while
/// unwinding.
struct Lease<'a> {
    shared: &'a Shared,
    id: u64,
    generation: u64,
    session: Option<Session>,
    /// Given back: its pool slot is accounted for.
    settled: bool,
}

impl Lease<'_> {
    fn session(&self) -> &Session {
        self.session
            .as_ref()
            .expect("a lease holds its session until given back")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            std::mem::forget(session);
        }
        if !self.settled {
            let counted = lock(&self.shared.pool).returned(self.id);
            if counted {
                self.shared.release_slot();
            }
        }
    }
}

/// Clears [`ConnSlot::connecting`] and wakes the waiters if `connect`
/// panics, so that the next caller connects instead of waiting forever.
struct Connecting<'a>(&'a Shared, bool);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        if self.1 {
            lock(&self.0.conn).connecting = false;
            self.0.conn_ready.notify_all();
        }
    }
}

impl Shared {
    fn new(config: Pkcs11Config) -> Self {
        Shared {
            max_sessions: config.sessions.max(1),
            config,
            conn: Mutex::default(),
            conn_ready: Condvar::new(),
            pool: Mutex::default(),
            pool_ready: Condvar::new(),
            generations: AtomicU64::new(0),
            backoff: Backoff::default(),
            last: Mutex::new(None),
            pin_refused: AtomicBool::new(false),
        }
    }

    fn token_name(&self) -> String {
        match (&self.config.token_label, self.config.slot) {
            (Some(l), _) => format!("token {l:?}"),
            (None, Some(s)) => format!("the token in slot {s}"),
            (None, None) => "the token".into(),
        }
    }

    /// The error of every call after the token refused the PIN.
    fn pin_refused_error(&self) -> SignerError {
        SignerError::Unavailable {
            store: PKCS11,
            reason: "pin",
            detail: format!(
                "{} refused the configured PIN as incorrect; keyward does not present it again (each wrong try counts toward the token's lockout): fix KEYWARD_PKCS11_PIN or KEYWARD_PKCS11_PIN_FILE and restart",
                self.token_name()
            ),
        }
    }

    /// Fails fast while backing off, or for good after a refused PIN.
    fn admit(&self) -> Result<Permit, SignerError> {
        if self.pin_refused.load(Ordering::Acquire) {
            return Err(self.pin_refused_error());
        }
        self.backoff.admit().map_err(|(wait, failures)| {
            let last = lock(&self.last).clone();
            let (reason, detail) = match last {
                Some(f) => (f.reason, f.detail),
                None => ("device", "unknown".into()),
            };
            SignerError::Unavailable {
                store: PKCS11,
                reason,
                detail: format!(
                    "not tried: the PKCS#11 device failed {failures} time{} in a row (last: {detail}); next try in {} ms",
                    if failures == 1 { "" } else { "s" },
                    wait.as_millis().max(1)
                ),
            }
        })
    }

    /// Records a bad connection: drops it and its sessions, backs off.
    fn failed(&self, generation: Option<u64>, f: &Failure, permit: Permit) {
        self.invalidate(generation, f);
        tracing::warn!(
            store = PKCS11,
            reason = f.reason,
            detail = %f.detail,
            "PKCS#11 device failure; reconnecting after a backoff"
        );
        *lock(&self.last) = Some(f.clone());
        self.backoff.failed(permit);
    }

    /// Records a call that found no session within the call timeout: backs
    /// off (the connection is kept; a hung session is dealt with in
    /// [`Shared::checkout`]).
    fn timed_out(&self, e: &SignerError, permit: Permit) {
        if let SignerError::Unavailable { reason, detail, .. } = e {
            *lock(&self.last) = Some(Failure {
                reason,
                detail: detail.clone(),
                dead: false,
                reinit: false,
            });
        }
        tracing::warn!(store = PKCS11, error = %e, "PKCS#11 call timed out; backing off");
        self.backoff.failed(permit);
    }

    /// Drops the connection of `generation` (or whichever is current when
    /// `None`) and its idle sessions.
    fn invalidate(&self, generation: Option<u64>, f: &Failure) {
        let gen = {
            let mut c = lock(&self.conn);
            if f.reinit {
                c.reinit = true;
            }
            match (&c.conn, generation) {
                (Some(conn), Some(g)) if conn.generation != g => g,
                (Some(conn), _) => {
                    let g = conn.generation;
                    c.conn = None;
                    g
                }
                (None, Some(g)) => g,
                (None, None) => return,
            }
        };
        let stale: Vec<Pooled> = {
            let mut p = lock(&self.pool);
            if f.dead {
                p.forget_upto = p.forget_upto.max(gen);
            }
            let (stale, keep) = std::mem::take(&mut p.idle)
                .into_iter()
                .partition(|s| s.generation <= gen);
            p.idle = keep;
            p.open -= stale.len();
            stale
        };
        self.pool_ready.notify_all();
        for s in stale {
            dispose(s.session, f.dead);
        }
    }

    /// The current connection, connecting when there is none.
    fn connection(&self, deadline: Instant) -> Result<Arc<Conn>, Fail> {
        let mut c = lock(&self.conn);
        loop {
            if let Some(conn) = &c.conn {
                return Ok(conn.clone());
            }
            if !c.connecting {
                break;
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Fail::Timeout(self.timeout("connecting to the token")));
            }
            c = self
                .conn_ready
                .wait_timeout(c, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        c.connecting = true;
        let ctx = c.ctx.clone();
        let reinit = std::mem::take(&mut c.reinit);
        drop(c);
        let mut guard = Connecting(self, true);
        let result = self.connect(ctx, reinit);
        let mut c = lock(&self.conn);
        c.connecting = false;
        guard.1 = false;
        let out = match result {
            Ok((ctx, conn)) => {
                c.ctx = Some(ctx);
                let conn = Arc::new(conn);
                c.conn = Some(conn.clone());
                lock(&self.pool).current = conn.generation;
                Ok(conn)
            }
            Err((ctx, fail)) => {
                if ctx.is_some() {
                    c.ctx = ctx;
                }
                if let Fail::Ck(e, _) = &fail {
                    if rv(e) == Some(RvError::CryptokiNotInitialized) {
                        c.reinit = true;
                    }
                }
                Err(fail)
            }
        };
        drop(c);
        self.conn_ready.notify_all();
        out
    }

    /// Loads and initializes the module (where needed) and finds the token.
    #[allow(clippy::type_complexity)]
    fn connect(
        &self,
        ctx: Option<Pkcs11>,
        reinit: bool,
    ) -> Result<(Pkcs11, Conn), (Option<Pkcs11>, Fail)> {
        let (ctx, fresh) = match ctx {
            Some(ctx) => (ctx, false),
            None => match Pkcs11::new(&self.config.module) {
                Ok(ctx) => (ctx, true),
                Err(e) => {
                    let f = Failure {
                        reason: "module",
                        detail: format!(
                            "the PKCS#11 module {} does not load: {e}",
                            self.config.module.display()
                        ),
                        dead: true,
                        reinit: false,
                    };
                    return Err((None, Fail::Conn(f)));
                }
            },
        };
        if fresh || reinit {
            match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
                Err(e) => {
                    let f = Failure {
                        reason: "module",
                        detail: format!(
                            "the PKCS#11 module {} does not initialize: {e}",
                            self.config.module.display()
                        ),
                        dead: true,
                        reinit: true,
                    };
                    return Err((Some(ctx), Fail::Conn(f)));
                }
            }
        }
        match self.find_token(&ctx) {
            Ok((slot, serial, label, mechanisms)) => {
                let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
                let conn = Conn {
                    ctx: ctx.clone(),
                    slot,
                    serial,
                    label,
                    mechanisms,
                    generation,
                };
                Ok((ctx, conn))
            }
            Err(f) => Err((Some(ctx), f)),
        }
    }

    #[allow(clippy::type_complexity)]
    fn find_token(&self, ctx: &Pkcs11) -> Result<(Slot, String, String, Vec<MechanismType>), Fail> {
        let slot = match self.config.slot {
            Some(id) => Slot::try_from(id).map_err(|e| {
                Fail::Done(SignerError::Config {
                    store: PKCS11,
                    message: format!("slot {id} is out of range for this platform: {e}"),
                })
            })?,
            None => {
                let label = self.config.token_label.as_deref().unwrap_or_default();
                let slots = ctx
                    .get_slots_with_token()
                    .map_err(|e| Fail::Ck(e, "listing the slots"))?;
                let mut found = Vec::new();
                for s in slots {
                    match ctx.get_token_info(s) {
                        Ok(info) if info.label() == label => found.push(s),
                        Ok(_) => {}
                        // A token removed while we list: not the one.
                        Err(CkError::Pkcs11(
                            RvError::TokenNotPresent | RvError::SlotIdInvalid,
                            _,
                        )) => {}
                        Err(e) => return Err(Fail::Ck(e, "reading a token's label")),
                    }
                }
                match found.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(Fail::Conn(Failure {
                            reason: "token",
                            detail: format!(
                                "no token labelled {label:?} is present in {}",
                                self.config.module.display()
                            ),
                            dead: true,
                            reinit: false,
                        }))
                    }
                    more => {
                        return Err(Fail::Done(SignerError::Config {
                            store: PKCS11,
                            message: format!(
                                "{} tokens are labelled {label:?} (slots {}); keyward does not guess: set [pkcs11] slot",
                                more.len(),
                                more.iter().map(|s| s.id().to_string()).collect::<Vec<_>>().join(", ")
                            ),
                        }))
                    }
                }
            }
        };
        let info = ctx
            .get_token_info(slot)
            .map_err(|e| Fail::Ck(e, "reading the token's information"))?;
        if let (Some(want), Some(_)) = (&self.config.token_label, self.config.slot) {
            if info.label() != want {
                return Err(Fail::Done(SignerError::Config {
                    store: PKCS11,
                    message: format!(
                        "the token in slot {} is labelled {:?}, not {want:?}",
                        slot.id(),
                        info.label()
                    ),
                }));
            }
        }
        let mechanisms = ctx
            .get_mechanism_list(slot)
            .map_err(|e| Fail::Ck(e, "listing the token's mechanisms"))?;
        Ok((
            slot,
            info.serial_number().trim().to_string(),
            info.label().to_string(),
            mechanisms,
        ))
    }

    fn timeout(&self, what: &str) -> SignerError {
        SignerError::Unavailable {
            store: PKCS11,
            reason: "timeout",
            detail: format!(
                "{what} took longer than the call timeout ({} ms): every session is busy or the device does not answer",
                self.config.call_timeout.as_millis()
            ),
        }
    }

    /// A logged-in session of `conn`: an idle one, or a new one while fewer
    /// than the pool's size are open; otherwise waits until `deadline`.
    ///
    /// While every session is out, a session of `conn` checked out for
    /// more than twice the call timeout means a call that hangs in the
    /// device (a C_Sign that never returns): the connection is treated as
    /// lost. Every lease of its generation stops counting toward the
    /// pool's size and is forgotten (not closed: closing may hang too, or
    /// close a handle reused since) when it comes back, and the caller gets
    /// a `session` failure, on which [`Shared::run`] starts a new
    /// connection generation with fresh sessions. The cost: the token
    /// keeps the hung generation's session handles until keyward restarts.
    fn checkout(&self, conn: &Conn, deadline: Instant) -> Result<Lease<'_>, Fail> {
        let mut p = lock(&self.pool);
        loop {
            // Idle sessions of an older connection go; one of this one is used.
            while let Some(s) = p.idle.pop() {
                if s.generation == conn.generation {
                    let id = p.lend(s.generation);
                    return Ok(Lease {
                        shared: self,
                        id,
                        generation: s.generation,
                        session: Some(s.session),
                        settled: false,
                    });
                }
                p.open -= 1;
                let forget = s.generation <= p.forget_upto;
                drop(p);
                dispose(s.session, forget);
                p = lock(&self.pool);
            }
            if p.open < self.max_sessions {
                p.open += 1;
                drop(p);
                return match self.open_session(conn) {
                    Ok(session) => Ok(Lease {
                        shared: self,
                        id: lock(&self.pool).lend(conn.generation),
                        generation: conn.generation,
                        session: Some(session),
                        settled: false,
                    }),
                    Err(f) => {
                        self.release_slot();
                        Err(f)
                    }
                };
            }
            if let Some(f) = self.give_up_hung(&mut p, conn.generation) {
                return Err(Fail::Conn(f));
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Fail::Timeout(self.timeout("waiting for a free session")));
            }
            p.waiters += 1;
            p = self
                .pool_ready
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            p.waiters -= 1;
        }
    }

    /// When a session of `generation` has been out for more than twice the
    /// call timeout, gives up every lease of that generation (they stop
    /// counting in `open`) and says why; see [`Shared::checkout`].
    fn give_up_hung(&self, p: &mut Pool, generation: u64) -> Option<Failure> {
        let limit = self.config.call_timeout.saturating_mul(2);
        let hung = p
            .out
            .values()
            .filter(|(g, since)| *g == generation && since.elapsed() > limit)
            .count();
        if hung == 0 {
            return None;
        }
        let before = p.out.len();
        p.out.retain(|_, (g, _)| *g != generation);
        p.open -= before - p.out.len();
        Some(Failure {
            reason: "session",
            detail: format!(
                "{hung} PKCS#11 call{} did not return within twice the call timeout ({} ms): the device hangs; its sessions are abandoned and the token is connected again",
                if hung == 1 { "" } else { "s" },
                limit.as_millis()
            ),
            dead: true,
            reinit: false,
        })
    }

    /// One session fewer is open: a waiter may open one.
    fn release_slot(&self) {
        let mut p = lock(&self.pool);
        p.open -= 1;
        let wake = p.waiters > 0;
        drop(p);
        if wake {
            self.pool_ready.notify_one();
        }
    }

    /// Opens a read/write session and logs the user in (login state is per
    /// token: a token already logged in answers `CKR_USER_ALREADY_LOGGED_IN`).
    fn open_session(&self, conn: &Conn) -> Result<Session, Fail> {
        let session = conn
            .ctx
            .open_rw_session(conn.slot)
            .map_err(|e| Fail::Ck(e, "opening a session"))?;
        if self.pin_refused.load(Ordering::Acquire) {
            return Err(Fail::Done(self.pin_refused_error()));
        }
        let pin = AuthPin::from(self.config.pin.as_str());
        match session.login(UserType::User, Some(&pin)) {
            Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
            Err(e) => {
                if is_pin_incorrect(&e) {
                    self.pin_refused.store(true, Ordering::Release);
                    tracing::error!(
                        store = PKCS11,
                        token = %conn.label,
                        "the token refused the configured PIN as incorrect; keyward will not present it again until restarted"
                    );
                }
                Err(Fail::Ck(e, "logging in to the token"))
            }
        }
    }

    /// Gives a session back to the pool (or disposes of it when its
    /// connection was dropped meanwhile).
    fn checkin(&self, mut lease: Lease<'_>) {
        let Some(session) = lease.session.take() else {
            return;
        };
        lease.settled = true;
        let mut p = lock(&self.pool);
        if !p.returned(lease.id) {
            // Given up as hung meanwhile: no longer counted, forgotten.
            drop(p);
            std::mem::forget(session);
            return;
        }
        let wake = p.waiters > 0;
        if lease.generation == p.current && p.idle.len() < self.max_sessions {
            p.idle.push(Pooled {
                generation: lease.generation,
                session,
            });
            drop(p);
        } else {
            p.open -= 1;
            let forget = lease.generation <= p.forget_upto;
            drop(p);
            dispose(session, forget);
        }
        if wake {
            self.pool_ready.notify_one();
        }
    }

    /// Disposes of a session whose connection is bad.
    fn discard(&self, mut lease: Lease<'_>, dead: bool) {
        if let Some(session) = lease.session.take() {
            lease.settled = true;
            if lock(&self.pool).returned(lease.id) {
                self.release_slot();
                dispose(session, dead);
            } else {
                std::mem::forget(session);
            }
        }
    }

    /// Runs `op` on a pooled session of the current connection, with the
    /// store's failure handling: backoff, reconnection, one retry on a
    /// fresh session after a session failure.
    fn run<T>(
        &self,
        mut op: impl FnMut(&Session, &Conn) -> Result<T, Fail>,
    ) -> Result<T, SignerError> {
        let permit = self.admit()?;
        let deadline = Instant::now() + self.config.call_timeout;
        let mut retried = false;
        loop {
            let (generation, fail) = match self.attempt(&mut op, deadline) {
                Ok(v) => {
                    self.backoff.succeeded();
                    return Ok(v);
                }
                Err(x) => x,
            };
            let f = match fail {
                // An answer about the call, not the device: if this call
                // was the probe after a window, the next call probes.
                Fail::Done(e) => {
                    self.backoff.release(permit);
                    return Err(e);
                }
                Fail::Timeout(e) => {
                    self.timed_out(&e, permit);
                    return Err(e);
                }
                Fail::Ck(e, what) => match classify(&e, what) {
                    Some(f) => f,
                    None => {
                        self.backoff.release(permit);
                        return Err(op_error(&e, what));
                    }
                },
                Fail::Conn(f) => f,
            };
            if f.reason == "session" && !retried {
                tracing::info!(
                    store = PKCS11,
                    detail = %f.detail,
                    "PKCS#11 session lost; retrying on a fresh session"
                );
                self.invalidate(generation, &f);
                retried = true;
                continue;
            }
            self.failed(generation, &f, permit);
            return Err(unavailable(&f));
        }
    }

    /// One try of `op`: the connection, a session, the operation. A failure
    /// comes with the generation of the connection it happened on.
    fn attempt<T>(
        &self,
        op: &mut impl FnMut(&Session, &Conn) -> Result<T, Fail>,
        deadline: Instant,
    ) -> Result<T, (Option<u64>, Fail)> {
        let conn = self.connection(deadline).map_err(|f| (None, f))?;
        let generation = Some(conn.generation);
        let lease = self
            .checkout(&conn, deadline)
            .map_err(|f| (generation, f))?;
        match op(lease.session(), &conn) {
            Ok(v) => {
                self.checkin(lease);
                Ok(v)
            }
            Err(f) => {
                let bad = match &f {
                    Fail::Done(_) | Fail::Timeout(_) => None,
                    Fail::Ck(e, what) => classify(e, what),
                    Fail::Conn(c) => Some(c.clone()),
                };
                match bad {
                    Some(b) => self.discard(lease, b.dead),
                    None => self.checkin(lease),
                }
                Err((generation, f))
            }
        }
    }
}

/// Closes a session, or forgets it when its handle may already be gone
/// (closing a stale handle could close a session someone opened since).
fn dispose(session: Session, forget: bool) {
    if forget {
        std::mem::forget(session);
    } else {
        // Errors are logged by cryptoki; the session is gone either way.
        let _ = session.close();
    }
}

// ---------------------------------------------------------------------------
// Keys: templates, public material, references

/// The DER OID of a NIST curve: `CKA_EC_PARAMS`.
fn curve_oid(curve: Curve) -> &'static [u8] {
    match curve {
        // 1.2.840.10045.3.1.7
        Curve::P256 => &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        // 1.3.132.0.34
        Curve::P384 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        // 1.3.132.0.35
        Curve::P521 => &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
    }
}

/// The DER OID of Ed25519 (1.3.101.112, RFC 8410), `CKA_EC_PARAMS` of an
/// Edwards key.
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];

/// `CKA_EC_POINT` is a DER OCTET STRING around the point (PKCS#11 2.40 and
/// 3.0); some tokens give the bare point. `raw_len` is the bare length.
fn unwrap_ec_point(value: &[u8], raw_len: usize) -> Option<&[u8]> {
    if value.len() == raw_len {
        return Some(value);
    }
    let (&tag, rest) = value.split_first()?;
    if tag != 0x04 {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, body) = match first {
        n if n < 0x80 => (usize::from(n), rest),
        0x81 => {
            let (&n, body) = rest.split_first()?;
            if n < 0x80 {
                return None;
            }
            (usize::from(n), body)
        }
        _ => return None,
    };
    (len == raw_len && body.len() == len).then_some(body)
}

/// The token's mechanisms a key of `alg` needs: key generation, signing.
fn mechanisms_of(alg: Algorithm) -> Option<(MechanismType, MechanismType)> {
    let sign = match alg {
        Algorithm::RS256 => MechanismType::SHA256_RSA_PKCS,
        Algorithm::RS384 => MechanismType::SHA384_RSA_PKCS,
        Algorithm::RS512 => MechanismType::SHA512_RSA_PKCS,
        Algorithm::PS256 => MechanismType::SHA256_RSA_PKCS_PSS,
        Algorithm::PS384 => MechanismType::SHA384_RSA_PKCS_PSS,
        Algorithm::PS512 => MechanismType::SHA512_RSA_PKCS_PSS,
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => MechanismType::ECDSA,
        Algorithm::EdDSA => MechanismType::EDDSA,
        Algorithm::MlDsa44 | Algorithm::MlDsa65 | Algorithm::MlDsa87 => return None,
    };
    let generate = match alg.family() {
        KeyFamily::Rsa => MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        KeyFamily::Ec(_) => MechanismType::ECC_KEY_PAIR_GEN,
        KeyFamily::Ed25519 => MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        KeyFamily::MlDsa(_) => return None,
    };
    Some((generate, sign))
}

/// The signing mechanism of `alg` (RFC 7518 §3.3 to §3.5, RFC 8037).
fn sign_mechanism(alg: Algorithm) -> Option<Mechanism<'static>> {
    let pss = |hash_alg, mgf, s_len: u64| PkcsPssParams {
        hash_alg,
        mgf,
        s_len: s_len.into(),
    };
    Some(match alg {
        Algorithm::RS256 => Mechanism::Sha256RsaPkcs,
        Algorithm::RS384 => Mechanism::Sha384RsaPkcs,
        Algorithm::RS512 => Mechanism::Sha512RsaPkcs,
        // MGF1 with the same hash, salt as long as the hash (RFC 7518 §3.5).
        Algorithm::PS256 => {
            Mechanism::Sha256RsaPkcsPss(pss(MechanismType::SHA256, PkcsMgfType::MGF1_SHA256, 32))
        }
        Algorithm::PS384 => {
            Mechanism::Sha384RsaPkcsPss(pss(MechanismType::SHA384, PkcsMgfType::MGF1_SHA384, 48))
        }
        Algorithm::PS512 => {
            Mechanism::Sha512RsaPkcsPss(pss(MechanismType::SHA512, PkcsMgfType::MGF1_SHA512, 64))
        }
        Algorithm::ES256 | Algorithm::ES384 | Algorithm::ES512 => Mechanism::Ecdsa,
        Algorithm::EdDSA => Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure)),
        Algorithm::MlDsa44 | Algorithm::MlDsa65 | Algorithm::MlDsa87 => return None,
    })
}

fn unsupported(alg: Algorithm, why: impl Into<String>) -> SignerError {
    SignerError::Unsupported {
        store: PKCS11,
        alg: alg.name().into(),
        why: why.into(),
    }
}

/// The checks that need no device: the algorithm family and RSA size.
fn check_static(alg: Algorithm, rsa_bits: Option<u32>) -> Result<Option<u32>, SignerError> {
    match alg.family() {
        KeyFamily::MlDsa(_) => Err(unsupported(
            alg,
            "keyward makes no ML-DSA keys in a PKCS#11 token (few tokens offer CKM_ML_DSA yet); use the local store",
        )),
        KeyFamily::Rsa => {
            let bits = rsa_bits.unwrap_or(DEFAULT_RSA_BITS);
            if RSA_SIZES.contains(&bits) {
                Ok(Some(bits))
            } else {
                Err(unsupported(
                    alg,
                    format!("RSA keys of {bits} bits are not made (2048, 3072 or 4096)"),
                ))
            }
        }
        KeyFamily::Ec(_) | KeyFamily::Ed25519 => Ok(None),
    }
}

/// The checks that ask the token: its mechanism list (and RSA sizes).
fn check_token(conn: &Conn, alg: Algorithm, rsa_bits: Option<u32>) -> Result<(), Fail> {
    let Some((generate, sign)) = mechanisms_of(alg) else {
        return Err(unsupported(alg, "no PKCS#11 mechanism").into());
    };
    for m in [generate, sign] {
        if !conn.mechanisms.contains(&m) {
            return Err(
                unsupported(alg, format!("token {:?} does not offer {m}", conn.label)).into(),
            );
        }
    }
    if let Some(bits) = rsa_bits {
        let info = conn
            .ctx
            .get_mechanism_info(conn.slot, generate)
            .map_err(|e| Fail::Ck(e, "reading the RSA key sizes the token makes"))?;
        let bits = bits as usize;
        if bits < info.min_key_size() || bits > info.max_key_size() {
            return Err(unsupported(
                alg,
                format!(
                    "token {:?} makes RSA keys of {} to {} bits, not {bits}",
                    conn.label,
                    info.min_key_size(),
                    info.max_key_size()
                ),
            )
            .into());
        }
    }
    Ok(())
}

/// The public key of the public-key object `handle`, for `alg`.
fn read_public(session: &Session, handle: ObjectHandle, alg: Algorithm) -> Result<PublicKey, Fail> {
    let bad = |why: String| {
        Fail::Done(SignerError::Key(KeyError::Malformed(format!(
            "the token's public key: {why}"
        ))))
    };
    let material = match alg.family() {
        KeyFamily::Rsa => {
            let attrs = session
                .get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(|e| Fail::Ck(e, "reading the public key"))?;
            let (mut n, mut e) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(v) => n = Some(v),
                    Attribute::PublicExponent(v) => e = Some(v),
                    _ => {}
                }
            }
            match (n, e) {
                (Some(n), Some(e)) => PublicMaterial::Rsa { n, e },
                _ => return Err(bad("no modulus or exponent".into())),
            }
        }
        KeyFamily::Ec(curve) => {
            let point = ec_point(session, handle)?;
            let len = curve.coordinate_len();
            let raw = unwrap_ec_point(&point, 1 + 2 * len)
                .filter(|p| p.first() == Some(&0x04))
                .ok_or_else(|| {
                    bad(format!(
                        "CKA_EC_POINT is not an uncompressed {} point",
                        curve.name()
                    ))
                })?;
            PublicMaterial::Ec {
                curve,
                x: raw[1..1 + len].to_vec(),
                y: raw[1 + len..].to_vec(),
            }
        }
        KeyFamily::Ed25519 => {
            let point = ec_point(session, handle)?;
            let raw = unwrap_ec_point(&point, 32)
                .ok_or_else(|| bad("CKA_EC_POINT is not a 32-byte Ed25519 key".into()))?;
            PublicMaterial::Ed25519 { x: raw.to_vec() }
        }
        KeyFamily::MlDsa(_) => return Err(unsupported(alg, "no PKCS#11 mechanism").into()),
    };
    PublicKey::from_material(alg, material).map_err(|e| Fail::Done(SignerError::Key(e)))
}

fn ec_point(session: &Session, handle: ObjectHandle) -> Result<Vec<u8>, Fail> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(|e| Fail::Ck(e, "reading the public key"))?;
    attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .ok_or_else(|| {
            Fail::Done(SignerError::Key(KeyError::Malformed(
                "the token's public key has no CKA_EC_POINT".into(),
            )))
        })
}

fn find(session: &Session, template: &[Attribute]) -> Result<Vec<ObjectHandle>, Fail> {
    session
        .find_objects(template)
        .map_err(|e| Fail::Ck(e, "finding objects"))
}

/// No object found: either it is not there, or the session lost its login
/// (private objects are invisible then), which is a session failure.
fn absent(session: &Session, not_found: SignerError) -> Fail {
    match session.get_session_info() {
        Ok(info)
            if matches!(
                info.session_state(),
                SessionState::RwUser | SessionState::RoUser
            ) =>
        {
            Fail::Done(not_found)
        }
        Ok(_) => Fail::Ck(
            CkError::Pkcs11(RvError::UserNotLoggedIn, Function::FindObjects),
            "finding a private object",
        ),
        Err(e) => Fail::Ck(e, "reading the session's state"),
    }
}

fn is_stale_handle(e: &CkError) -> bool {
    matches!(
        rv(e),
        Some(RvError::ObjectHandleInvalid | RvError::KeyHandleInvalid)
    )
}

/// `<token serial>/<CKA_ID as hex>`.
fn reference(serial: &str, id: &[u8]) -> String {
    format!("{serial}/{}", keyward_jose::crypto::hex(id))
}

fn parse_reference(reference: &str) -> Option<(&str, Vec<u8>)> {
    let (serial, id) = reference.rsplit_once('/')?;
    if serial.is_empty() || id.is_empty() || id.len() % 2 != 0 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let id = id
        .as_bytes()
        .chunks(2)
        .map(|p| Some(nibble(p[0])? << 4 | nibble(p[1])?))
        .collect::<Option<Vec<u8>>>()?;
    Some((serial, id))
}

fn not_found(reference: &str) -> SignerError {
    SignerError::NotFound {
        store: PKCS11,
        reference: reference.into(),
    }
}

fn mismatch(reference: &str, why: impl Into<String>) -> SignerError {
    SignerError::Mismatch {
        store: PKCS11,
        reference: reference.into(),
        why: why.into(),
    }
}

/// Errors of key generation that mean the token cannot make this key.
fn generation_error(alg: Algorithm, e: CkError) -> Fail {
    match rv(&e) {
        Some(
            RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::KeySizeRange
            | RvError::CurveNotSupported
            | RvError::DomainParamsInvalid
            | RvError::TemplateInconsistent
            | RvError::AttributeValueInvalid
            | RvError::AttributeTypeInvalid
            | RvError::FunctionNotSupported,
        ) => Fail::Done(unsupported(
            alg,
            format!("the token refused to make the key: {e}"),
        )),
        _ => Fail::Ck(e, "generating the key pair"),
    }
}

// ---------------------------------------------------------------------------
// The store

struct Pkcs11Store(Arc<Shared>);

impl std::fmt::Debug for Pkcs11Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Pkcs11Store {
    /// Destroys every private and public key object with CKA_ID `id`.
    fn destroy_id(session: &Session, id: &[u8]) -> Result<usize, Fail> {
        let mut n = 0;
        for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
            for h in find(
                session,
                &[Attribute::Class(class), Attribute::Id(id.to_vec())],
            )? {
                match session.destroy_object(h) {
                    Ok(()) => n += 1,
                    Err(e) if is_stale_handle(&e) => {}
                    Err(e) => return Err(Fail::Ck(e, "destroying a key object")),
                }
            }
        }
        Ok(n)
    }
}

impl KeyStore for Pkcs11Store {
    fn name(&self) -> &'static str {
        PKCS11
    }

    fn check_algorithm(&self, alg: Algorithm, rsa_bits: Option<u32>) -> Result<(), SignerError> {
        let bits = check_static(alg, rsa_bits)?;
        self.0.run(|_, conn| check_token(conn, alg, bits))
    }

    fn generate(
        &self,
        kid: &str,
        alg: Algorithm,
        rsa_bits: Option<u32>,
    ) -> Result<HardwareKey, SignerError> {
        let bits = check_static(alg, rsa_bits)?;
        if kid.is_empty() {
            return Err(SignerError::Config {
                store: PKCS11,
                message: "a key needs a kid (its CKA_ID and CKA_LABEL)".into(),
            });
        }
        let id = kid.as_bytes().to_vec();
        // Objects this call made and could not destroy on the session that
        // failed: destroyed on the next session before anything else.
        let mut leftover = false;
        let result = self.0.run(|s, conn| {
            if leftover {
                Self::destroy_id(s, &id)?;
                leftover = false;
            }
            check_token(conn, alg, bits)?;
            let at = reference(&conn.serial, &id);
            let existing = find(s, &[Attribute::Id(id.clone())])?;
            if !existing.is_empty() {
                return Err(mismatch(
                    &at,
                    format!(
                        "the token already holds {} object(s) with this CKA_ID; nothing was created",
                        existing.len()
                    ),
                )
                .into());
            }
            let common_pub = [
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Verify(true),
                Attribute::Id(id.clone()),
                Attribute::Label(id.clone()),
            ];
            let common_priv = [
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Sign(true),
                Attribute::Id(id.clone()),
                Attribute::Label(id.clone()),
            ];
            let (mechanism, extra_pub, extra_priv) = match alg.family() {
                KeyFamily::Rsa => (
                    Mechanism::RsaPkcsKeyPairGen,
                    vec![
                        Attribute::ModulusBits(u64::from(bits.unwrap_or(DEFAULT_RSA_BITS)).into()),
                        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
                    ],
                    vec![Attribute::Decrypt(false), Attribute::Unwrap(false)],
                ),
                KeyFamily::Ec(curve) => (
                    Mechanism::EccKeyPairGen,
                    vec![Attribute::EcParams(curve_oid(curve).to_vec())],
                    vec![Attribute::Derive(false)],
                ),
                KeyFamily::Ed25519 => (
                    Mechanism::EccEdwardsKeyPairGen,
                    vec![Attribute::EcParams(ED25519_OID.to_vec())],
                    vec![Attribute::Derive(false)],
                ),
                KeyFamily::MlDsa(_) => return Err(unsupported(alg, "no PKCS#11 mechanism").into()),
            };
            let public_template: Vec<Attribute> =
                common_pub.into_iter().chain(extra_pub).collect();
            let private_template: Vec<Attribute> =
                common_priv.into_iter().chain(extra_priv).collect();
            let (public_handle, private_handle) = s
                .generate_key_pair(&mechanism, &public_template, &private_template)
                .map_err(|e| generation_error(alg, e))?;
            match read_public(s, public_handle, alg) {
                Ok(public) => Ok(HardwareKey {
                    reference: at,
                    public,
                }),
                Err(f) => {
                    let cleaned = [private_handle, public_handle]
                        .into_iter()
                        .all(|h| s.destroy_object(h).is_ok());
                    leftover = !cleaned;
                    Err(f)
                }
            }
        });
        if result.is_err() && leftover {
            // The session died after the objects were made: clean up on a
            // fresh one; if even that fails, say what is left behind.
            let cleaned = self.0.run(|s, _| Self::destroy_id(s, &id));
            if let Err(e) = cleaned {
                tracing::error!(
                    store = PKCS11,
                    kid,
                    error = %e,
                    "a key pair made by a failed generate could not be destroyed; remove the objects with this CKA_ID by hand"
                );
            }
        }
        result
    }

    fn open(
        &self,
        kid: &str,
        reference: &str,
        public: &PublicKey,
    ) -> Result<Arc<dyn TokenSigner>, SignerError> {
        let alg = public.algorithm();
        let (serial, id) = parse_reference(reference).ok_or_else(|| not_found(reference))?;
        if sign_mechanism(alg).is_none() {
            return Err(unsupported(alg, "no PKCS#11 mechanism"));
        }
        let (handle, generation) = self.0.run(|s, conn| {
            if conn.serial != serial {
                return Err(not_found(reference).into());
            }
            let private = find(
                s,
                &[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Id(id.clone()),
                ],
            )?;
            let private = match private.as_slice() {
                [one] => *one,
                [] => return Err(absent(s, not_found(reference))),
                more => {
                    return Err(mismatch(
                        reference,
                        format!("{} private keys have this CKA_ID", more.len()),
                    )
                    .into())
                }
            };
            let public_objects = find(
                s,
                &[
                    Attribute::Class(ObjectClass::PUBLIC_KEY),
                    Attribute::Id(id.clone()),
                ],
            )?;
            let public_handle = match public_objects.as_slice() {
                [one] => *one,
                [] => {
                    return Err(mismatch(
                        reference,
                        "the token has no public key object with this CKA_ID",
                    )
                    .into())
                }
                more => {
                    return Err(mismatch(
                        reference,
                        format!("{} public keys have this CKA_ID", more.len()),
                    )
                    .into())
                }
            };
            let on_token = read_public(s, public_handle, alg)?;
            if on_token != *public {
                return Err(
                    mismatch(reference, "the token's public key is not the recorded one").into(),
                );
            }
            Ok((private, conn.generation))
        })?;
        Ok(Arc::new(Pkcs11Signer {
            shared: self.0.clone(),
            kid: kid.into(),
            alg,
            jwk: public.to_jwk(Some(kid.into())),
            reference: reference.into(),
            serial: serial.into(),
            id,
            handle: Mutex::new(Some((generation, handle))),
        }))
    }

    fn destroy(&self, reference: &str) -> Result<(), SignerError> {
        let (serial, id) = parse_reference(reference).ok_or_else(|| not_found(reference))?;
        self.0.run(|s, conn| {
            if conn.serial != serial {
                return Err(not_found(reference).into());
            }
            let n = Self::destroy_id(s, &id)?;
            tracing::info!(store = PKCS11, reference, objects = n, "destroyed a key");
            Ok(())
        })
    }

    fn check(&self) -> Result<(), SignerError> {
        self.0.run(|s, conn| {
            s.get_session_info()
                .map_err(|e| Fail::Ck(e, "reading the session's state"))?;
            conn.ctx
                .get_token_info(conn.slot)
                .map_err(|e| Fail::Ck(e, "reading the token's information"))?;
            Ok(())
        })
    }

    fn root_key(&self, name: &str, create: bool) -> Result<Arc<dyn KeyWrapper>, SignerError> {
        if name.is_empty() {
            return Err(SignerError::Config {
                store: PKCS11,
                message: "a root key needs a label (pkcs11:<label>)".into(),
            });
        }
        let label = name.as_bytes().to_vec();
        let (serial, handle, generation) = self.0.run(|s, conn| {
            let handle = match find_root(s, &label, name)? {
                Some(h) => h,
                None if create => {
                    let template = [
                        Attribute::Class(ObjectClass::SECRET_KEY),
                        Attribute::KeyType(KeyType::AES),
                        Attribute::ValueLen(32u64.into()),
                        Attribute::Token(true),
                        Attribute::Private(true),
                        Attribute::Sensitive(true),
                        Attribute::Extractable(false),
                        Attribute::Encrypt(true),
                        Attribute::Decrypt(true),
                        Attribute::Label(label.clone()),
                    ];
                    let h = s
                        .generate_key(&Mechanism::AesKeyGen, &template)
                        .map_err(|e| Fail::Ck(e, "generating the root key"))?;
                    tracing::info!(store = PKCS11, label = name, "made a root key in the token");
                    h
                }
                None => return Err(absent(s, not_found(&format!("pkcs11:{name}")))),
            };
            check_root(s, handle, name)?;
            Ok((conn.serial.clone(), handle, conn.generation))
        })?;
        Ok(Arc::new(Pkcs11RootKey {
            shared: self.0.clone(),
            label: name.into(),
            serial,
            handle: Mutex::new(Some((generation, handle))),
        }))
    }
}

/// The one secret key labelled `label`; several: refused.
fn find_root(session: &Session, label: &[u8], name: &str) -> Result<Option<ObjectHandle>, Fail> {
    let found = find(
        session,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.to_vec()),
        ],
    )?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        more => Err(SignerError::Config {
            store: PKCS11,
            message: format!(
                "{} secret keys in the token are labelled {name:?}; keyward does not guess which is the root key: remove or relabel the others",
                more.len()
            ),
        }
        .into()),
    }
}

/// A root key must be AES-256, sensitive and never extractable.
fn check_root(session: &Session, handle: ObjectHandle, name: &str) -> Result<(), Fail> {
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::KeyType,
                AttributeType::ValueLen,
                AttributeType::Sensitive,
                AttributeType::Extractable,
            ],
        )
        .map_err(|e| Fail::Ck(e, "reading the root key's attributes"))?;
    let (mut aes, mut len32, mut sensitive, mut extractable) = (false, false, false, true);
    for a in attrs {
        match a {
            Attribute::KeyType(t) => aes = t == KeyType::AES,
            Attribute::ValueLen(l) => len32 = *l == 32,
            Attribute::Sensitive(b) => sensitive = b,
            Attribute::Extractable(b) => extractable = b,
            _ => {}
        }
    }
    if aes && len32 && sensitive && !extractable {
        Ok(())
    } else {
        Err(mismatch(
            &format!("pkcs11:{name}"),
            "a root key must be an AES-256 key object with CKA_SENSITIVE true and CKA_EXTRACTABLE false",
        )
        .into())
    }
}

// ---------------------------------------------------------------------------
// The signer

struct Pkcs11Signer {
    shared: Arc<Shared>,
    kid: String,
    alg: Algorithm,
    jwk: Jwk,
    reference: String,
    serial: String,
    id: Vec<u8>,
    /// The private key's handle, valid for the connection of that
    /// generation.
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for Pkcs11Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Signer")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("reference", &self.reference)
            .finish()
    }
}

impl Pkcs11Signer {
    fn find_key(&self, session: &Session, conn: &Conn) -> Result<ObjectHandle, Fail> {
        if conn.serial != self.serial {
            return Err(not_found(&self.reference).into());
        }
        let found = find(
            session,
            &[
                Attribute::Class(ObjectClass::PRIVATE_KEY),
                Attribute::Id(self.id.clone()),
            ],
        )?;
        let h = match found.as_slice() {
            [one] => *one,
            [] => return Err(absent(session, not_found(&self.reference))),
            more => {
                return Err(mismatch(
                    &self.reference,
                    format!("{} private keys have this CKA_ID", more.len()),
                )
                .into())
            }
        };
        *lock(&self.handle) = Some((conn.generation, h));
        Ok(h)
    }

    fn key(&self, session: &Session, conn: &Conn) -> Result<ObjectHandle, Fail> {
        match *lock(&self.handle) {
            Some((g, h)) if g == conn.generation => return Ok(h),
            _ => {}
        }
        self.find_key(session, conn)
    }
}

impl TokenSigner for Pkcs11Signer {
    fn kid(&self) -> &str {
        &self.kid
    }
    fn algorithm(&self) -> Algorithm {
        self.alg
    }
    fn public_jwk(&self) -> Jwk {
        self.jwk.clone()
    }
    fn sign(&self, signing_input: &[u8]) -> Result<Vec<u8>, KeyError> {
        let digest = keyward_jose::crypto::signing_digest(self.alg, signing_input);
        let data: &[u8] = match (self.alg.family(), &digest) {
            (KeyFamily::Ec(_), Some(d)) => d,
            _ => signing_input,
        };
        let sig = self.shared.run(|s, conn| {
            let mechanism = sign_mechanism(self.alg)
                .ok_or_else(|| Fail::Done(unsupported(self.alg, "no PKCS#11 mechanism")))?;
            let h = self.key(s, conn)?;
            match s.sign(&mechanism, h, data) {
                Ok(sig) => Ok(sig),
                Err(e) if is_stale_handle(&e) => {
                    let h = self.find_key(s, conn)?;
                    s.sign(&mechanism, h, data)
                        .map_err(|e| Fail::Ck(e, "signing"))
                }
                Err(e) => Err(Fail::Ck(e, "signing")),
            }
        })?;
        if let KeyFamily::Ec(curve) = self.alg.family() {
            if sig.len() != 2 * curve.coordinate_len() {
                return Err(KeyError::Unavailable {
                    store: PKCS11,
                    reason: "device",
                    detail: format!(
                        "the token returned a {}-byte {} signature; CKM_ECDSA gives r||s of {} bytes",
                        sig.len(),
                        self.alg,
                        2 * curve.coordinate_len()
                    ),
                });
            }
        }
        Ok(sig)
    }
    fn cost(&self) -> SigningCost {
        SigningCost::Waits
    }
    fn store(&self) -> &'static str {
        PKCS11
    }
}

// ---------------------------------------------------------------------------
// The root key

/// AES-GCM (CKM_AES_GCM), 96-bit IV, 128-bit tag.
const IV_LEN: usize = 12;
const TAG_BITS: u64 = 128;

struct Pkcs11RootKey {
    shared: Arc<Shared>,
    label: String,
    serial: String,
    handle: Mutex<Option<(u64, ObjectHandle)>>,
}

impl std::fmt::Debug for Pkcs11RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11RootKey")
            .field("label", &self.label)
            .field("serial", &self.serial)
            .finish()
    }
}

impl Pkcs11RootKey {
    fn key(&self, session: &Session, conn: &Conn, fresh: bool) -> Result<ObjectHandle, Fail> {
        if conn.serial != self.serial {
            return Err(SignerError::Unavailable {
                store: PKCS11,
                reason: "token",
                detail: format!(
                    "the token labelled {:?} now has serial {}, not {}: it is not the token that holds root key {:?}",
                    conn.label, conn.serial, self.serial, self.label
                ),
            }
            .into());
        }
        if !fresh {
            if let Some((g, h)) = *lock(&self.handle) {
                if g == conn.generation {
                    return Ok(h);
                }
            }
        }
        let h = find_root(session, self.label.as_bytes(), &self.label)?
            .ok_or_else(|| absent(session, not_found(&format!("pkcs11:{}", self.label))))?;
        *lock(&self.handle) = Some((conn.generation, h));
        Ok(h)
    }

    /// Runs one AES-GCM operation, finding the key again if its handle went
    /// stale.
    fn with_key<T>(
        &self,
        mut op: impl FnMut(&Session, ObjectHandle) -> Result<T, CkError>,
        what: &'static str,
    ) -> Result<T, SignerError> {
        self.shared.run(|s, conn| {
            let h = self.key(s, conn, false)?;
            match op(s, h) {
                Ok(v) => Ok(v),
                Err(e) if is_stale_handle(&e) => {
                    let h = self.key(s, conn, true)?;
                    op(s, h).map_err(|e| Fail::Ck(e, what))
                }
                Err(e) => Err(Fail::Ck(e, what)),
            }
        })
    }
}

/// Whether the key seals and opens a probe with `aad` now (so that a
/// failure to open something else was the data's fault, not the device's).
fn gcm_round_trip(session: &Session, key: ObjectHandle, aad: &[u8]) -> Result<bool, CkError> {
    let probe = [0u8; 16];
    let mut iv = keyward_jose::crypto::random_bytes::<IV_LEN>();
    let sealed = session.encrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, TAG_BITS.into())?),
        key,
        &probe,
    )?;
    let opened = session.decrypt(
        &Mechanism::AesGcm(GcmParams::new(&mut iv, aad, TAG_BITS.into())?),
        key,
        &sealed,
    )?;
    Ok(opened == probe)
}

impl KeyWrapper for Pkcs11RootKey {
    fn key_id(&self) -> String {
        let h = keyward_jose::crypto::sha256_parts(&[
            b"keyward-root-key-id-v1\0pkcs11\0",
            self.serial.as_bytes(),
            b"\0",
            self.label.as_bytes(),
        ]);
        keyward_jose::crypto::hex(&h[..8])
    }
    fn store(&self) -> &'static str {
        PKCS11
    }
    fn reference(&self) -> String {
        format!("pkcs11:{}", self.label)
    }
    fn wrap(&self, aad: &[u8], data_key: &[u8]) -> Result<Vec<u8>, SealError> {
        let iv0 = keyward_jose::crypto::random_bytes::<IV_LEN>();
        let out = self.with_key(
            |s, h| {
                // A token that makes its own IVs (FIPS mode) writes it here.
                let mut iv = iv0;
                let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
                let sealed = s.encrypt(&Mechanism::AesGcm(params), h, data_key)?;
                let mut out = Vec::with_capacity(IV_LEN + sealed.len());
                out.extend_from_slice(&iv);
                out.extend_from_slice(&sealed);
                Ok(out)
            },
            "wrapping a data key",
        )?;
        Ok(out)
    }
    fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if wrapped.len() < IV_LEN + (TAG_BITS as usize / 8) {
            return Err(SealError::OpenFailed);
        }
        let (iv0, sealed) = wrapped.split_at(IV_LEN);
        let opened = self.with_key(
            |s, h| {
                let mut iv = [0u8; IV_LEN];
                iv.copy_from_slice(iv0);
                let params = GcmParams::new(&mut iv, aad, TAG_BITS.into())?;
                match s.decrypt(&Mechanism::AesGcm(params), h, sealed) {
                    Ok(plain) => Ok(Some(Zeroizing::new(plain))),
                    // The tag does not verify: wrong key, altered data or
                    // associated data. The device did its work.
                    Err(CkError::Pkcs11(
                        RvError::EncryptedDataInvalid
                        | RvError::EncryptedDataLenRange
                        | RvError::DataInvalid,
                        _,
                    )) => Ok(None),
                    // SoftHSM 2.6 (and others) answer a tag that does not
                    // verify with CKR_GENERAL_ERROR or CKR_FUNCTION_FAILED,
                    // which could also be the device failing. It is the
                    // data when the device opens what it seals itself now.
                    Err(
                        e @ CkError::Pkcs11(RvError::GeneralError | RvError::FunctionFailed, _),
                    ) => {
                        if gcm_round_trip(s, h, aad)? {
                            Ok(None)
                        } else {
                            Err(e)
                        }
                    }
                    Err(e) => Err(e),
                }
            },
            "unwrapping a data key",
        )?;
        opened.ok_or(SealError::OpenFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(call_timeout: Duration) -> Shared {
        Shared::new(Pkcs11Config {
            module: "/nonexistent/libpkcs11.so".into(),
            token_label: Some("t".into()),
            slot: None,
            pin: Zeroizing::new("1234".into()),
            sessions: 2,
            call_timeout,
        })
    }

    /// A lease of `generation` as `checkout` makes it, without a session.
    fn lend(sh: &Shared, generation: u64) -> Lease<'_> {
        let mut p = lock(&sh.pool);
        p.open += 1;
        let id = p.lend(generation);
        Lease {
            shared: sh,
            id,
            generation,
            session: None,
            settled: false,
        }
    }

    #[test]
    fn a_panic_in_an_operation_frees_the_pool_slot() {
        let sh = shared(Duration::from_secs(5));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _lease = lend(&sh, 1);
            assert_eq!(lock(&sh.pool).open, 1);
            panic!("inside the operation");
        }));
        assert!(r.is_err());
        let p = lock(&sh.pool);
        assert_eq!(p.open, 0, "the slot is free again");
        assert!(p.out.is_empty());
    }

    #[test]
    fn a_panic_in_connect_clears_connecting() {
        let sh = shared(Duration::from_secs(5));
        lock(&sh.conn).connecting = true;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _guard = Connecting(&sh, true);
            panic!("inside connect");
        }));
        assert!(r.is_err());
        assert!(!lock(&sh.conn).connecting, "the next caller connects");
        // Disarmed (the normal path), it leaves the state alone.
        lock(&sh.conn).connecting = true;
        drop(Connecting(&sh, false));
        assert!(lock(&sh.conn).connecting);
    }

    #[test]
    fn a_timeout_counts_toward_the_backoff() {
        let sh = shared(Duration::from_millis(30));
        // A connection attempt that never ends (a hung C_Initialize).
        lock(&sh.conn).connecting = true;
        let t = Instant::now();
        let e = sh.run(|_, _| Ok(())).unwrap_err();
        assert_eq!(e.reason(), "timeout", "{e}");
        assert!(t.elapsed() >= Duration::from_millis(30));
        assert_eq!(sh.backoff.failures(), 1, "counted");
        // The next caller fails at once instead of waiting the timeout.
        let t = Instant::now();
        let e = sh.run(|_, _| Ok(())).unwrap_err();
        assert!(t.elapsed() < Duration::from_millis(30), "{:?}", t.elapsed());
        assert_eq!(e.reason(), "timeout");
        assert!(e.to_string().contains("not tried"), "{e}");
    }

    #[test]
    fn a_session_out_for_twice_the_call_timeout_is_given_up() {
        let sh = shared(Duration::from_millis(20));
        let hung = lend(&sh, 1);
        let busy = lend(&sh, 1);
        let older = lend(&sh, 0);
        {
            let mut p = lock(&sh.pool);
            assert!(sh.give_up_hung(&mut p, 1).is_none(), "not yet");
            // `hung` was checked out 50 ms ago (over 2 x 20 ms).
            let past = Instant::now() - Duration::from_millis(50);
            p.out.get_mut(&hung.id).unwrap().1 = past;
            let f = sh.give_up_hung(&mut p, 1).expect("given up");
            assert_eq!(f.reason, "session");
            assert!(f.dead, "its sessions are forgotten, not closed");
            // Both leases of generation 1 stop counting; generation 0's stays.
            assert_eq!(p.open, 1);
            assert_eq!(p.out.len(), 1);
        }
        // They come back later (the hung call returns): not counted twice.
        drop(hung);
        drop(busy);
        assert_eq!(lock(&sh.pool).open, 1);
        drop(older);
        assert_eq!(lock(&sh.pool).open, 0);
    }
}
