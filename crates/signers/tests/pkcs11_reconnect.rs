//! The PKCS#11 library finalized (and initialized again) under the store by
//! another user in the process: every session and login is gone. Its own
//! test binary, since finalizing ends the sessions of every test in the
//! process; one test, so the scenarios run in order.

mod common;

use cryptoki::context::Pkcs11;
use keyward_jose::Algorithm;
use keyward_signers::pkcs11::open_store;

#[test]
fn sessions_closed_under_the_store_reconnect_on_the_next_call() {
    let Some(hsm) = common::hsm() else { return };
    let token = hsm.token("reconnect");
    let store = open_store(hsm.config(&token)).unwrap();
    let key = store.generate("rk", Algorithm::ES256, None).unwrap();
    let signer = keyward_signers::open(&*store, "rk", &key.reference, &key.public).unwrap();
    let root = store.root_key("root", true).unwrap();
    let wrapped = root.wrap(b"aad", b"data key").unwrap();
    signer.sign(b"before").unwrap();

    // 1. Finalized and left so: the store's next call meets
    // CKR_CRYPTOKI_NOT_INITIALIZED, initializes the library again, logs in
    // on a fresh session, finds its key again, and signs: no failure.
    Pkcs11::new(common::MODULE).unwrap().finalize().unwrap();
    let sig = signer
        .sign(b"after finalize")
        .expect("first call after C_Finalize succeeds");
    key.public.verify(b"after finalize", &sig).unwrap();
    assert_eq!(&root.unwrap(b"aad", &wrapped).unwrap()[..], b"data key");

    // 2. Finalized and initialized again by someone else: the store's
    // sessions are unknown handles now (CKR_SESSION_HANDLE_INVALID); the
    // next call reconnects on a fresh session: no failure.
    let other = Pkcs11::new(common::MODULE).unwrap();
    other.finalize().unwrap();
    common::initialize(&Pkcs11::new(common::MODULE).unwrap());
    let sig = signer
        .sign(b"after reinit")
        .expect("first call after C_Finalize + C_Initialize succeeds");
    key.public.verify(b"after reinit", &sig).unwrap();
    assert_eq!(&root.unwrap(b"aad", &wrapped).unwrap()[..], b"data key");
    store.check().unwrap();
    let k2 = store.generate("rk2", Algorithm::EdDSA, None).unwrap();
    let s2 = keyward_signers::open(&*store, "rk2", &k2.reference, &k2.public).unwrap();
    s2.sign(b"x").unwrap();

    // 3. The token's login ended under the store, twice in a row.
    for round in 0..2 {
        let s = hsm.session(&token);
        s.logout().unwrap();
        drop(s);
        let sig = signer
            .sign(b"after logout")
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        key.public.verify(b"after logout", &sig).unwrap();
    }
}
