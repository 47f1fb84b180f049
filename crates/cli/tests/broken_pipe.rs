//! A reader that stops early (`keyward audit list | head`) ends the command
//! quietly: exit 0, nothing on stderr, never a panic (exit 101).

mod common;

use std::io::Read;
use std::process::Stdio;

use common::Kw;

/// Starts `args` with stdout and stderr piped.
fn spawn(kw: &Kw, args: &[&str]) -> std::process::Child {
    kw.cmd()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keyward")
}

/// Waits for `child`: its exit code and stderr.
fn finish(child: std::process::Child) -> (Option<i32>, String) {
    let o = child.wait_with_output().unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Runs `args`, reads a few bytes, closes the pipe, and returns the exit
/// code and stderr. The output is far larger than a pipe holds, so the
/// command is still writing when the pipe closes.
fn cut_short(kw: &Kw, args: &[&str]) -> (Option<i32>, String) {
    let mut child = spawn(kw, args);
    let mut out = child.stdout.take().unwrap();
    let mut first = [0u8; 16];
    out.read_exact(&mut first).unwrap();
    drop(out);
    finish(child)
}

#[test]
fn listings_end_quietly_when_the_reader_goes() {
    let kw = Kw::new();
    kw.init();
    // Audit records far larger than a pipe's buffer (64 KiB) together: each
    // `token sign` records its long subject (a token stays within the 8 KiB
    // gates accept, so it takes several).
    let sub = "s".repeat(5_000);
    let claims = format!(r#"{{"sub":"{sub}"}}"#);
    for _ in 0..16 {
        kw.run(&["token", "sign", "--env", "default", "--claims", &claims])
            .ok();
    }
    let args = ["audit", "list", "--json", "--limit", "1000"];
    let (code, stderr) = cut_short(&kw, &args);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(stderr, "");
    // What was committed before the pipe closed stays: the chain verifies.
    kw.run(&["audit", "verify"]).ok();
}

/// Runs `args` with a stdout pipe that is closed before the command writes.
fn reader_gone(kw: &Kw, args: &[&str]) -> (Option<i32>, String) {
    let mut child = spawn(kw, args);
    drop(child.stdout.take());
    finish(child)
}

#[test]
fn a_secret_shown_once_that_cannot_be_delivered_is_an_error() {
    let kw = Kw::new();
    kw.init();
    for args in [
        &[
            "clients", "create", "--env", "default", "--name", "a", "--json",
        ][..],
        &["clients", "create", "--env", "default", "--name", "b"][..],
        &["admin-token", "create"][..],
    ] {
        let (code, stderr) = reader_gone(&kw, args);
        assert_eq!(code, Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("was made but not delivered") && stderr.contains("make a new one"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // A listing cut short the same way is not an error.
    let (code, stderr) = reader_gone(&kw, &["clients", "list", "--env", "default"]);
    assert_eq!((code, stderr.as_str()), (Some(0), ""));
    let id = kw
        .run(&["clients", "list", "--env", "default", "--json"])
        .ok()
        .json()[0]["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (code, stderr) = reader_gone(&kw, &["clients", "rotate-secret", "--env", "default", &id]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("the new client secret"), "{stderr}");
}
