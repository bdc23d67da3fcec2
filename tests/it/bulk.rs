//! Changes of any number of rows (`store/bulk.rs`) on a SurrealKV store whose write buffer is
//! far smaller than the change: each must commit in pages, count exactly, write every event,
//! and leave a store that opens again. Unpaged, each of these changes failed at commit.

use authstore::clock::{Clock, SystemClock};
use authstore::domain::client::{self, Origin};
use authstore::domain::idempotency;
use authstore::domain::ids::UserId;
use authstore::domain::{Policy, session, token};
use authstore::secret::Mint;
use authstore::store::{Location, Memory, SessionFilter, Store, StoreConfig};
use authstore::types::{ClientMetadata, SessionPut, TokenIssue, TokenRevoke};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::support::REDIRECT;

/// A write buffer of 512 KiB: a page (32 rows of each kind, `bulk::page_rows`) fits, 300 purged
/// sessions or revoked families in one transaction do not (unpaged, each of these changes
/// failed at commit).
const WRITE_BUFFER: u64 = 512 << 10;
const ROWS: usize = 300;
/// A debug build takes seconds over a page on a busy machine: no round trip here is an outage.
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

fn config(location: &Location) -> StoreConfig {
    StoreConfig {
        location: location.clone(),
        namespace: "t".into(),
        database: "t".into(),
        username: None,
        password: None,
        memory: Memory { memtable_bytes: WRITE_BUFFER, ..Memory::default_for(None) },
    }
}

/// A SurrealKV store in `dir` with the public client `app` registered.
async fn opened(location: &Location) -> Store {
    let store = Store::open_bounded(&config(location), TIMEOUT).await.unwrap();
    let meta = ClientMetadata {
        redirect_uris: vec![REDIRECT.into()],
        token_endpoint_auth_method: Some("none".into()),
        ..Default::default()
    };
    let meta = client::metadata(meta, Origin::Registered).unwrap();
    store.client_register(client::registration("app".into(), meta, None), None, SystemClock.now()).await.unwrap();
    store
}

async fn sessions(store: &Store, count: usize, now: DateTime<Utc>) {
    let puts = (0..count).map(|i| async move {
        let put = SessionPut {
            id: Some(format!("s-{i}")),
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            user_id: Some("alice".into()),
            ttl_secs: Some(3600),
            ..Default::default()
        };
        store.session_put(session::put(put, &Policy::default(), now).unwrap(), None, now).await.unwrap();
    });
    // Many at once, so that group commit writes them in a few transactions.
    futures::stream::iter(puts).buffer_unordered(64).collect::<Vec<()>>().await;
}

async fn tokens(store: &Store, count: usize, now: DateTime<Utc>) {
    let issues = (0..count).map(|_| async move {
        let issue = TokenIssue { client_id: "app".into(), user_id: "alice".into(), ..Default::default() };
        let new = token::issue(issue, &Policy::default(), now, &Mint::Random).unwrap();
        store.token_issue(new, None, now).await.unwrap();
    });
    futures::stream::iter(issues).buffer_unordered(8).collect::<Vec<()>>().await;
}

/// Sequences every pending event and counts the log's events of `kind`.
async fn events_of(store: &Store, kind: &str) -> usize {
    while store.sequence_pending(None, 16, SystemClock.now()).await.unwrap().count > 0 {}
    let (mut after, mut found) = (0, 0);
    loop {
        let page = store.events_after(after, 1000).await.unwrap();
        let Some(last) = page.last() else { return found };
        after = last.seq;
        found += page.iter().filter(|e| e.kind.as_str() == kind).count();
    }
}

/// The store at `location` opened again once the last one has let go of its lock.
async fn reopened(location: &Location) -> Store {
    for _ in 0..50 {
        match Store::open_bounded(&config(location), TIMEOUT).await {
            Ok(store) => return store,
            Err(e) if e.to_string().contains("lock") => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
            Err(e) => panic!("the store does not open again: {e}"),
        }
    }
    panic!("the store's lock was never released");
}

fn alice() -> SessionFilter {
    SessionFilter { client_id: None, user_id: Some(UserId::parse("user_id", "alice".into()).unwrap()) }
}

#[test]
fn a_purge_larger_than_the_write_buffer_commits_in_pages() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::SurrealKv(dir.path().join("db").display().to_string());
        {
            let store = opened(&location).await;
            let now = SystemClock.now();
            sessions(&store, ROWS, now).await;
            assert_eq!(store.session_purge(&alice(), None, SystemClock.now()).await.unwrap(), ROWS as u64);
            assert_eq!(store.stats(SystemClock.now()).await.unwrap().sessions, 0);
            assert_eq!(events_of(&store, "purged").await, ROWS);
        }
        let reopened = reopened(&location).await;
        assert_eq!(reopened.stats(SystemClock.now()).await.unwrap().sessions, 0);
    });
}

#[test]
fn a_revocation_and_a_client_delete_larger_than_the_write_buffer_commit_in_pages() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::SurrealKv(dir.path().join("db").display().to_string());
        let store = opened(&location).await;
        let now = SystemClock.now();
        tokens(&store, ROWS, now).await;
        let by_user = TokenRevoke { user_id: Some("alice".into()), ..Default::default() };
        let scope = token::revoke_scope(by_user).unwrap();
        assert_eq!(store.token_revoke(scope, None, SystemClock.now()).await.unwrap(), ROWS as u64);
        assert_eq!(store.stats(SystemClock.now()).await.unwrap().tokens, 0);
        assert_eq!(events_of(&store, "revoked").await, ROWS);

        // The client's cascade: as many sessions and families again, in pages, and the client
        // removed by the last.
        sessions(&store, ROWS, now).await;
        tokens(&store, ROWS, now).await;
        assert!(store.client_delete("app", None, SystemClock.now()).await.unwrap());
        let stats = store.stats(SystemClock.now()).await.unwrap();
        assert_eq!((stats.clients, stats.sessions, stats.tokens), (0, 0, 0));
        assert_eq!((events_of(&store, "revoked").await, events_of(&store, "purged").await), (2 * ROWS, ROWS));
        drop(store);
        reopened(&location).await;
    });
}

/// A keyed purge cut off after some of its pages committed: the retry with the same key
/// finishes it and answers for the whole change, and a second retry gets the same answer.
#[test]
fn a_keyed_change_cut_off_part_way_is_finished_and_counted_whole_by_its_retry() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::SurrealKv(dir.path().join("db").display().to_string());
        let store = opened(&location).await;
        let now = SystemClock.now();
        sessions(&store, ROWS, now).await;
        let keyed = |now| {
            let params = serde_json::json!({ "user_id": "alice" });
            idempotency::call("session.purge", Some("purge-1"), &params, b"server secret", "s1", now).unwrap().keyed
        };
        let first = {
            let (store, keyed) = (store.clone(), keyed(now));
            tokio::spawn(async move { store.session_purge(&alice(), keyed.as_ref(), SystemClock.now()).await })
        };
        // Cut it off once its first page has committed.
        let left = loop {
            let left = store.stats(SystemClock.now()).await.unwrap().sessions;
            if left < ROWS as u64 {
                first.abort();
                break left;
            }
            tokio::task::yield_now().await;
        };
        assert!(first.await.unwrap_err().is_cancelled());
        let left_after_abort = store.stats(SystemClock.now()).await.unwrap().sessions;
        assert!(left_after_abort > 0, "the purge finished before it was cut off ({left} left): this proves nothing");

        assert_eq!(store.session_purge(&alice(), keyed(now).as_ref(), SystemClock.now()).await.unwrap(), ROWS as u64);
        assert_eq!(store.session_purge(&alice(), keyed(now).as_ref(), SystemClock.now()).await.unwrap(), ROWS as u64);
        assert_eq!(store.stats(SystemClock.now()).await.unwrap().sessions, 0);
        assert_eq!(events_of(&store, "purged").await, ROWS);
    });
}

/// On a multi-threaded runtime, on threads with the stack SurrealDB wants.
fn run(test: impl std::future::Future<Output = ()> + Send + 'static) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_stack_size(32 << 20).enable_all().build();
    let runtime = runtime.unwrap();
    std::thread::Builder::new().stack_size(32 << 20).spawn(move || runtime.block_on(test)).unwrap().join().unwrap();
}
