//! SQLite-only behaviour: the database file itself.

use std::collections::HashSet;

use keyward_jose::crypto::random_bytes;
use keyward_jose::seal::RootKey;
use keyward_jose::Algorithm;
use keyward_store::{
    open_private_key, seal_private_key, Backend, Environment, KeyMaterial, KeyRecord, KeyStoreName,
    RotationPolicy, Store, StoreError,
};
use sqlx::{AnyConnection, Connection, Executor, Row};

fn env(name: &str) -> Environment {
    Environment {
        name: name.into(),
        issuer: "https://auth.example".into(),
        policy: RotationPolicy::default(),
        created_at: 1,
        key_store: KeyStoreName::Local,
        dpop_nonce_secret: None,
    }
}

#[tokio::test]
async fn no_plaintext_private_key_bytes_in_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    let root = RootKey::generate();
    let secret = random_bytes::<2048>();
    let record = KeyRecord {
        env: "prod".into(),
        kid: "k1".into(),
        alg: Algorithm::RS256,
        size_bits: 2048,
        public_jwk: "{}".into(),
        material: KeyMaterial::Sealed(seal_private_key(&root, "prod", "k1", &secret).unwrap()),
        origin: "imported".into(),
        owner: None,
        description: None,
        created_at: 1,
        activates_at: 1,
        retires_at: None,
        removes_at: None,
        revoked_at: None,
        destroyed_at: None,
    };
    let mut tx = store.begin().await.unwrap();
    tx.initialize(&root.key_id()).await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.insert_key(&record).await.unwrap();
    tx.commit().await.unwrap();
    let stored = store.key("k1").await.unwrap();
    assert_eq!(
        open_private_key(&root, &stored).unwrap().as_slice(),
        secret.as_slice()
    );

    let windows: HashSet<&[u8]> = secret.windows(16).collect();
    let mut scanned = 0;
    for suffix in ["", "-wal", "-journal"] {
        let file = format!("{}{suffix}", path.display());
        let Ok(bytes) = std::fs::read(&file) else {
            continue;
        };
        scanned += bytes.len();
        assert!(
            !bytes.windows(16).any(|w| windows.contains(w)),
            "plaintext key bytes found in {file}"
        );
    }
    // The sealed blob is in there, so the scan looked at real data.
    assert!(scanned > secret.len());
    store.close().await;
}

#[tokio::test]
async fn open_creates_private_file_and_directory_with_wal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/keyward.db");
    let store = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "database file mode {mode:o}");
        let dmode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dmode & 0o077, 0, "data directory mode {dmode:o}");
    }
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
    store.close().await;

    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(&format!("sqlite://{}?mode=rw", path.display()))
        .await
        .unwrap();
    let row = conn.fetch_one("PRAGMA journal_mode").await.unwrap();
    assert_eq!(row.get::<String, _>(0), "wal");
    conn.close().await.unwrap();

    // Re-opening keeps the data and re-runs migrations as a no-op.
    let again = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(again.environment("prod").await.unwrap(), env("prod"));
    again.close().await;
}

#[tokio::test]
async fn open_url_selects_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by url.db");
    let url = format!("sqlite:{}", path.display().to_string().replace(' ', "%20"));
    let store = Store::open_url(&url).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    let mut tx = store.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
    store.close().await;
    assert!(path.exists());
    let again = Store::open_url(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    assert_eq!(again.environments().await.unwrap().len(), 1);
    again.close().await;
    let by_path = Store::open_sqlite(&path).await.unwrap();
    assert_eq!(by_path.environments().await.unwrap().len(), 1);
    by_path.close().await;

    let mem = Store::open_url("sqlite::memory:").await.unwrap();
    let mut tx = mem.begin().await.unwrap();
    tx.create_environment(&env("prod")).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(mem.environments().await.unwrap().len(), 1);
    mem.close().await;

    for bad in ["mysql://localhost/x", "", "file:/tmp/x.db", "sqlite:"] {
        let err = Store::open_url(bad).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidUrl(_)), "{bad}: {err:?}");
    }
}
