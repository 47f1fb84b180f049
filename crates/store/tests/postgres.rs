//! PostgreSQL-only checks (skipped unless `KEYWARD_TEST_DATABASE_URL` is set).

mod common;

use common::{drop_schema, new_schema, url_with_schema};
use keyward_store::{Backend, Environment, KeyStoreName, RotationPolicy, Store};

#[tokio::test]
async fn schemas_isolate_test_stores() {
    let Some(base) = common::postgres_url("schemas_isolate_test_stores") else {
        return;
    };
    let (a, b) = (new_schema(&base).await, new_schema(&base).await);
    let result = tokio::spawn({
        let (base, a, b) = (base.clone(), a.clone(), b.clone());
        async move {
            let sa = Store::open_url(&url_with_schema(&base, &a)).await.unwrap();
            let sb = Store::open_url(&url_with_schema(&base, &b)).await.unwrap();
            assert_eq!(sa.backend(), Backend::Postgres);
            let mut tx = sa.begin().await.unwrap();
            tx.create_environment(&Environment {
                name: "only-in-a".into(),
                issuer: "https://a.example".into(),
                policy: RotationPolicy::default(),
                created_at: 1,
                key_store: KeyStoreName::Local,
                dpop_nonce_secret: None,
            })
            .await
            .unwrap();
            tx.commit().await.unwrap();
            assert_eq!(sa.environments().await.unwrap().len(), 1);
            assert!(sb.environments().await.unwrap().is_empty());
            // Re-opening runs the migrations again as a no-op.
            let again = Store::open_url(&url_with_schema(&base, &a)).await.unwrap();
            assert_eq!(again.environments().await.unwrap().len(), 1);
            for s in [sa, sb, again] {
                s.close().await;
            }
        }
    })
    .await;
    drop_schema(&base, &a).await;
    drop_schema(&base, &b).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
