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
