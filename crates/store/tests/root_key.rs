//! Where the root key comes from, and how its file is written.

use std::collections::HashMap;
use std::path::Path;

use keyward_jose::seal::RootKey;
use keyward_store::{RootKeySource, StoreError};

fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn source_precedence() {
    let data = Path::new("/data");
    let key = RootKey::generate();
    let b64 = key.to_base64().unwrap();
    assert_eq!(
        RootKeySource::resolve(
            data,
            vars(&[
                ("KEYWARD_ROOT_KEY", &b64),
                ("KEYWARD_ROOT_KEY_FILE", "/etc/kw.key")
            ])
        ),
        RootKeySource::Env
    );
    assert_eq!(
        RootKeySource::resolve(data, vars(&[("KEYWARD_ROOT_KEY_FILE", "/etc/kw.key")])),
        RootKeySource::File("/etc/kw.key".into())
    );
    assert_eq!(
        RootKeySource::resolve(data, vars(&[])),
        RootKeySource::DataDir("/data/root.key".into())
    );
    // Empty variables count as unset.
    assert_eq!(
        RootKeySource::resolve(
            data,
            vars(&[("KEYWARD_ROOT_KEY", ""), ("KEYWARD_ROOT_KEY_FILE", "")])
        ),
        RootKeySource::DataDir("/data/root.key".into())
    );
}

#[test]
fn describe_and_path() {
    assert_eq!(RootKeySource::Env.describe(), "KEYWARD_ROOT_KEY");
    assert_eq!(RootKeySource::Env.path(), None);
    let f = RootKeySource::File("/etc/kw.key".into());
    assert_eq!(f.describe(), "KEYWARD_ROOT_KEY_FILE (/etc/kw.key)");
    assert_eq!(f.path(), Some(Path::new("/etc/kw.key")));
    let d = RootKeySource::DataDir("/data/root.key".into());
    assert_eq!(d.describe(), "/data/root.key");
    assert_eq!(d.path(), Some(Path::new("/data/root.key")));
}

#[test]
fn env_source_loads_from_the_variable() {
    let key = RootKey::generate();
    let b64 = key.to_base64().unwrap();
    let loaded = RootKeySource::Env
        .load_with(vars(&[("KEYWARD_ROOT_KEY", &b64)]))
        .unwrap();
    assert_eq!(loaded.key_id(), key.key_id());

    let err = RootKeySource::Env.load_with(vars(&[])).unwrap_err();
    assert!(
        matches!(err, StoreError::RootKeyUnavailable { ref key_source, .. } if key_source == "KEYWARD_ROOT_KEY")
    );
    assert!(err.to_string().contains("not set"), "{err}");

    let secretish = "NOT-BASE64-BUT-SECRET!!";
    let err = RootKeySource::Env
        .load_with(vars(&[("KEYWARD_ROOT_KEY", secretish)]))
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("KEYWARD_ROOT_KEY"), "{msg}");
    assert!(msg.contains("base64"), "{msg}");
    assert!(!msg.contains(secretish), "{msg}");
    assert!(!format!("{err:?}").contains(secretish));

    // Valid base64 of the wrong length.
    let err = RootKeySource::Env
        .load_with(vars(&[("KEYWARD_ROOT_KEY", "c2hvcnQ=")]))
        .unwrap_err();
    assert!(err.to_string().contains("32 bytes"), "{err}");
}

#[test]
fn create_writes_a_private_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let src = RootKeySource::resolve(&dir.path().join("data"), vars(&[]));
    let key = RootKey::generate();
    src.create(&key).unwrap();
    let path = src.path().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    assert_eq!(src.load().unwrap().key_id(), key.key_id());

    let err = src.create(&RootKey::generate()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("already exists") && msg.contains("refusing"),
        "{msg}"
    );
    assert!(matches!(err, StoreError::RootKeyWrite { .. }));
    assert_eq!(
        src.load().unwrap().key_id(),
        key.key_id(),
        "file was overwritten"
    );

    let err = RootKeySource::Env.create(&key).unwrap_err();
    assert!(err.to_string().contains("KEYWARD_ROOT_KEY"), "{err}");
}

#[test]
fn file_errors_name_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let missing = RootKeySource::File(dir.path().join("nope.key"));
    let err = missing.load().unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("KEYWARD_ROOT_KEY_FILE") && msg.contains("nope.key"),
        "{msg}"
    );
    assert!(msg.contains("does not exist"), "{msg}");

    let bad_path = dir.path().join("bad.key");
    let secretish = "this is no key %%%";
    std::fs::write(&bad_path, secretish).unwrap();
    let bad = RootKeySource::DataDir(bad_path.clone());
    let err = bad.load().unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::RootKeyUnavailable { .. }));
    assert!(msg.contains(&bad_path.display().to_string()), "{msg}");
    assert!(msg.contains("base64"), "{msg}");
    assert!(!msg.contains(secretish), "{msg}");

    std::fs::write(&bad_path, "").unwrap();
    assert!(bad.load().unwrap_err().to_string().contains("empty"));
    std::fs::write(&bad_path, vec![b'A'; 10_000]).unwrap();
    assert!(bad.load().unwrap_err().to_string().contains("too large"));
}

#[test]
fn staged_replacement_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let src = RootKeySource::File(dir.path().join("root.key"));
    let old = RootKey::generate();
    let new = RootKey::generate();
    src.create(&old).unwrap();

    let err = src.commit_replace().unwrap_err();
    assert!(err.to_string().contains("no staged key file"), "{err}");

    let staged = src.stage_replace(&new).unwrap();
    assert_eq!(staged, dir.path().join("root.key.new"));
    // Until committed, the live file still holds the old key.
    assert_eq!(src.load().unwrap().key_id(), old.key_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&staged).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // Staging again replaces a leftover staged file.
    let newer = RootKey::generate();
    src.stage_replace(&newer).unwrap();
    src.commit_replace().unwrap();
    assert!(!staged.exists());
    assert_eq!(src.load().unwrap().key_id(), newer.key_id());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(src.path().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The environment variable has no file to write.
    let no_file = |e: StoreError| {
        assert!(
            matches!(&e, StoreError::RootKeyWrite { reason, .. } if reason.contains("no file to write")),
            "{e:?}"
        )
    };
    no_file(RootKeySource::Env.stage_replace(&new).unwrap_err());
    no_file(RootKeySource::Env.commit_replace().unwrap_err());
}
