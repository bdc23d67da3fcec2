//! The schema is applied at every start and a second start changes nothing.

use authstore::store::{Location, Memory, Store, StoreConfig};

fn config(dir: &std::path::Path) -> StoreConfig {
    StoreConfig {
        location: Location::SurrealKv(dir.display().to_string()),
        namespace: "authstore".into(),
        database: "authstore".into(),
        username: None,
        password: None,
        // The smallest cache: the hand-built engine opens, stores and reopens with it.
        memory: Memory::default_for(None),
    }
}

#[test]
fn a_second_start_on_the_same_data_changes_no_definition() {
    let runtime = tokio::runtime::Builder::new_multi_thread().thread_stack_size(20 << 20).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let first = {
            let store = Store::open(&config(dir.path())).await.expect("first start");
            store.schema_definition().await.expect("definition")
        };
        // Let the first datastore release its lock before reopening.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let store = Store::open(&config(dir.path())).await.expect("second start");
        let second = store.schema_definition().await.expect("definition");
        assert_eq!(first, second);
        let text = second.to_string();
        for index in
            ["session_expires", "token_grant", "token_id", "code_expires", "family_client", "event_seq", "outbox_ts"]
        {
            assert!(text.contains(index), "index {index} is defined: {text}");
        }
    });
}

/// A database an older server wrote holds revoked families without their `family_revoked`
/// records; the background work started with the server writes them, so the live-token count,
/// which subtracts them, is right soon after every start (the first on older data, or after a
/// rollback and upgrade again).
#[test]
fn a_start_on_older_data_records_its_revoked_families() {
    use std::sync::Arc;

    use authstore::background::{Background, Timings};
    use authstore::clock::{Clock, SystemClock};
    use authstore::hub::Hub;
    use authstore::metrics::Metrics;

    let runtime = tokio::runtime::Builder::new_multi_thread().thread_stack_size(20 << 20).enable_all().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(&config(dir.path())).await.expect("first start"));
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        {
            // What an older server left: two live families, one of them revoked, no record of it.
            let url = format!("surrealkv://{}", dir.path().display());
            let db = surrealdb::engine::any::connect(url).await.expect("raw open");
            db.use_ns("authstore").use_db("authstore").await.unwrap();
            let older = "FOR $g IN ['kept', 'revoked'] { \
                    CREATE type::record('family', $g) SET grant_id = $g, client_id = 'app', user_id = 'alice', \
                        created_at = time::now(), expires_at = time::now() + 1d, rev = 1, active_token = 'x' }; \
                UPDATE family:revoked SET revoked_at = time::now(), revoke_reason = 'requested', active_token = NONE;";
            db.query(older).await.unwrap().check().expect("older data written");
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let store = Store::open(&config(dir.path())).await.expect("start on older data");
        assert_eq!(store.stats(SystemClock.now()).await.unwrap().tokens, 2, "before the pass: not yet known");
        let (_closing, closing) = tokio::sync::watch::channel(false);
        let timings = Timings { expiry: false, ..Timings::default() };
        let clock = Arc::new(SystemClock);
        let background =
            Background::start(store.clone(), clock, Hub::new(16, closing), Arc::new(Metrics::new()), timings).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while store.stats(SystemClock.now()).await.unwrap().tokens != 1 {
            assert!(std::time::Instant::now() < deadline, "the revoked family is still counted");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert_eq!(store.record_revoked_families().await.unwrap(), 0, "nothing left to record");
        background.stop().await;
    });
}
