//! Drives the real `keyward` binary against a temporary data directory.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Kw {
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self
    }
    /// Exit 1 with a one-line error containing `needle`.
    pub fn fails_with(&self, needle: &str) -> &Self {
        assert_eq!(
            self.code, 1,
            "expected exit 1\nstdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected a one-line error, got: {:?}",
            self.stderr
        );
        assert!(
            self.stderr.to_lowercase().contains(&needle.to_lowercase()),
            "error {:?} does not mention {needle:?}",
            self.stderr
        );
        self
    }
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Kw {
    pub fn new() -> Self {
        Kw {
            dir: tempfile::tempdir().unwrap(),
            env: Vec::new(),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_keyward"));
        c.env_remove("KEYWARD_ROOT_KEY")
            .env_remove("KEYWARD_ROOT_KEY_FILE")
            .env_remove("KEYWARD_DATABASE_URL")
            .env_remove("KEYWARD_NOW")
            .env("KEYWARD_DATA_DIR", self.data_dir());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        let mut c = self.cmd();
        c.args(args);
        for (k, v) in extra_env {
            c.env(k, v);
        }
        output(c.output().expect("run keyward"))
    }

    /// `init` with a fast ES256 key.
    pub fn init(&self) -> &Self {
        self.run(&[
            "init",
            "--issuer",
            "http://127.0.0.1:8080",
            "--alg",
            "ES256",
        ])
        .ok();
        self
    }

    /// Every observable piece of the store: environments, keys, audit chain,
    /// root key file. Compared before and after a refused command.
    pub fn snapshot(&self) -> String {
        let envs = self.run(&["env", "list", "--json"]).ok().stdout.clone();
        let mut s = envs.clone();
        for e in serde_json::from_str::<Value>(&envs)
            .unwrap()
            .as_array()
            .unwrap()
        {
            let name = e["name"].as_str().unwrap();
            s.push_str(
                &self
                    .run(&["keys", "list", "--env", name, "--json"])
                    .ok()
                    .stdout,
            );
        }
        s.push_str(
            &self
                .run(&["audit", "list", "--json", "--limit", "10000"])
                .ok()
                .stdout,
        );
        if let Ok(k) = std::fs::read_to_string(self.data_dir().join("root.key")) {
            s.push_str(&k);
        }
        s
    }
}

pub fn output(o: Output) -> Run {
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

pub fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, content).unwrap();
    p
}

/// Runs openssl to make a test key (generated at test time, never committed).
pub fn openssl(args: &[&str]) -> String {
    let o = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}
