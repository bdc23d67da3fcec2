//! The embedded engine under flushes and compactions: reads that start range scans must go on
//! while SurrealKV installs compaction results. SurrealKV 0.21.4 took its locks in an order
//! that deadlocked a range read starting at that moment, and then every read and write of the
//! store (vendor/surrealkv/README.authstore.md).

use std::time::Duration;

use authstore::clock::{Clock, SystemClock};
use authstore::domain::client::{self, Origin};
use authstore::domain::ids::UserId;
use authstore::domain::{Policy, session};
use authstore::store::{Location, Memory, SessionFilter, Store, StoreConfig};
use authstore::types::{ClientMetadata, SessionPut};
use futures::StreamExt;

use crate::support::REDIRECT;

/// Writes: sessions with a few hundred bytes of data each, enough to fill a 256 KiB write
/// buffer every couple of hundred and compact the tables it flushes every few flushes.
const WRITES: usize = 8_000;

#[test]
fn reads_and_writes_go_on_through_flushes_and_compactions() {
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_stack_size(32 << 20)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(churn());
            let _ = done.send(());
        })
        .unwrap();
    // A deadlocked engine blocks its threads for good: the test can only stop waiting.
    match finished.recv_timeout(Duration::from_secs(600)) {
        Ok(()) => {}
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("no answer in 10 minutes: the store's reads and writes are stuck")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the churn failed (its panic is above)"),
    }
}

/// Puts [`WRITES`] sessions from many callers while two readers list sessions (a range scan
/// each) and read the counts, until the writers are done.
async fn churn() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        location: Location::SurrealKv(dir.path().join("db").display().to_string()),
        namespace: "t".into(),
        database: "t".into(),
        username: None,
        password: None,
        memory: Memory { memtable_bytes: 256 << 10, ..Memory::default_for(None) },
    };
    let store = Store::open_bounded(&config, Duration::from_secs(120)).await.unwrap();
    let meta = ClientMetadata {
        redirect_uris: vec![REDIRECT.into()],
        token_endpoint_auth_method: Some("none".into()),
        ..Default::default()
    };
    let meta = client::metadata(meta, Origin::Registered).unwrap();
    store.client_register(client::registration("app".into(), meta, None), None, SystemClock.now()).await.unwrap();

    let writing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, writing) = (store.clone(), writing.clone());
            tokio::spawn(async move {
                let filter =
                    SessionFilter { client_id: None, user_id: Some(UserId::parse("user_id", "u".into()).unwrap()) };
                let mut reads = 0;
                while writing.load(std::sync::atomic::Ordering::Relaxed) {
                    store.session_list(&filter, None, 20, SystemClock.now()).await.unwrap();
                    store.stats(SystemClock.now()).await.unwrap();
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    let now = SystemClock.now();
    let puts = (0..WRITES).map(|i| {
        let store = store.clone();
        async move {
            let put = SessionPut {
                id: Some(format!("s-{i}")),
                client_id: "app".into(),
                redirect_uri: REDIRECT.into(),
                user_id: Some("u".into()),
                data: Some(serde_json::json!({ "pad": "x".repeat(400) })),
                ttl_secs: Some(3600),
                ..Default::default()
            };
            store.session_put(session::put(put, &Policy::default(), now).unwrap(), None, now).await.unwrap();
        }
    });
    futures::stream::iter(puts).buffer_unordered(16).collect::<Vec<()>>().await;
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.unwrap() > 0, "a reader never read: the test proves nothing");
    }
    assert_eq!(store.stats(SystemClock.now()).await.unwrap().sessions, WRITES as u64);
}
