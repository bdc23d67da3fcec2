//! The sequencer's outbox floor (`store/in_flight.rs`): passes that read only from the floor the
//! last one returned must still sequence every row, including those of a long change that
//! commits after later, shorter changes were sequenced.

use authstore::clock::{Clock, SystemClock};
use authstore::domain::ids::{SessionId, UserId};
use authstore::domain::{Policy, session};
use authstore::store::{Location, SessionFilter, Store, StoreConfig};
use authstore::types::SessionPut;
use chrono::{DateTime, Utc};

use crate::support::{REDIRECT, register_app};

async fn opened(location: Location) -> Store {
    let config = StoreConfig {
        location,
        namespace: "t".into(),
        database: "t".into(),
        username: None,
        password: None,
        memory: authstore::store::Memory::default_for(None),
    };
    let store = Store::open(&config).await.unwrap();
    register_app(&store, SystemClock.now()).await;
    store
}

async fn put(store: &Store, id: String, user: &str, now: DateTime<Utc>) {
    let put = SessionPut {
        id: Some(id),
        client_id: "app".into(),
        redirect_uri: REDIRECT.into(),
        user_id: Some(user.into()),
        ttl_secs: Some(3600),
        ..Default::default()
    };
    store.session_put(session::put(put, &Policy::default(), now).unwrap(), None, now).await.unwrap();
}

/// Runs the sequencer's passes by hand, each from the floor the last returned, while one long
/// change (a purge of `slow` sessions, one event each, in one transaction) runs beside short
/// ones (single deletes) that commit and are sequenced before it does. Every event must be
/// sequenced from the floor alone; a read from the outbox's start must then find nothing left.
async fn a_long_change_is_not_passed_by_the_floor(location: Location, slow: usize) {
    let store = opened(location).await;
    let now = SystemClock.now();
    for i in 0..slow {
        put(&store, format!("slow-{i}"), "slow-user", now).await;
    }
    const FAST: usize = 300;
    for i in 0..FAST {
        put(&store, format!("fast-{i}"), "fast-user", now).await;
    }
    // Start from a settled floor, as a running sequencer would be.
    let mut floor = store.sequence_pending(None, 500, now).await.unwrap().next_from;
    assert!(floor.is_some(), "a store that is the only writer reads from a floor");
    let mut sequenced = 0;

    let purge = {
        let store = store.clone();
        let filter =
            SessionFilter { client_id: None, user_id: Some(UserId::parse("user_id", "slow-user".into()).unwrap()) };
        tokio::spawn(async move { store.session_purge(&filter, None, SystemClock.now()).await })
    };
    // Whether the purge has not committed yet: its last session is still there.
    let last = session::get(format!("slow-{}", slow - 1), now).unwrap();
    let pending = || async { store.session_get(&last).await.is_ok() };
    // Short changes, each sequenced at once, while the purge runs.
    let mut deleted = 0;
    let mut passes_during_purge = 0;
    while pending().await && deleted < FAST {
        let id = SessionId::parse("id", format!("fast-{deleted}")).unwrap();
        assert!(store.session_delete(&id, None, SystemClock.now()).await.unwrap());
        deleted += 1;
        let pass = store.sequence_pending(floor, 500, SystemClock.now()).await.unwrap();
        if pass.count > 0 && pending().await {
            passes_during_purge += 1;
        }
        sequenced += pass.count;
        floor = pass.next_from;
    }
    assert!(passes_during_purge > 0, "no pass ran while the purge did: the test proves nothing");
    assert_eq!(purge.await.unwrap().unwrap(), slow as u64);

    // After the purge: passes from the floor only.
    loop {
        let pass = store.sequence_pending(floor, 500, SystemClock.now()).await.unwrap();
        sequenced += pass.count;
        floor = pass.next_from;
        if pass.count == 0 {
            break;
        }
    }
    let left_behind = store.sequence_pending(None, 500, SystemClock.now()).await.unwrap().count;
    assert_eq!(
        (sequenced, left_behind),
        (slow + deleted, 0),
        "{passes_during_purge} passes ran during the purge; rows the floor passed by were left behind"
    );
}

#[test]
fn on_embedded_surrealkv_a_long_change_is_not_passed_by_the_floor() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::SurrealKv(dir.path().join("db").display().to_string());
        a_long_change_is_not_passed_by_the_floor(location, 500).await;
    });
}

#[test]
fn in_memory_a_long_change_is_not_passed_by_the_floor() {
    run(a_long_change_is_not_passed_by_the_floor(Location::Memory, 500));
}

/// On a multi-threaded runtime (the purge and the passes run at once), on threads with the
/// stack SurrealDB wants.
fn run(test: impl std::future::Future<Output = ()> + Send + 'static) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_stack_size(32 << 20).enable_all().build();
    let runtime = runtime.unwrap();
    std::thread::Builder::new().stack_size(32 << 20).spawn(move || runtime.block_on(test)).unwrap().join().unwrap();
}
