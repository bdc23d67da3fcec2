//! Changes of any number of rows (`store/bulk.rs`) on a SurrealKV store whose write buffer is
//! far smaller than the change: each must commit in pages, count exactly, write every event,
//! and leave a store that opens again. Unpaged, each of these changes failed at commit.

use authstore::clock::{Clock, SystemClock, stored_precision};
use authstore::domain::idempotency;
use authstore::domain::ids::{ClientId, UserId};
use authstore::domain::{Policy, session, token};
use authstore::error::{Error, InvalidClient, NotFound};
use authstore::secret::Mint;
use authstore::store::{Location, Memory, SessionFilter, Store, StoreConfig, StoreError, TokenFilter};
use authstore::types::{SessionPut, TokenIssue, TokenRevoke};
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::support::{REDIRECT, register_app};

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
    register_app(&store, SystemClock.now()).await;
    store
}

async fn sessions(store: &Store, count: usize, now: DateTime<Utc>) {
    put_sessions(store, (0..count).map(|i| (format!("s-{i}"), Some("alice".to_string()), now)).collect()).await;
}

/// Puts a session of `app` with a one-hour TTL for each `(id, user, put at)`, many at once, so
/// that group commit writes them in a few transactions.
async fn put_sessions(store: &Store, puts: Vec<(String, Option<String>, DateTime<Utc>)>) {
    let puts = puts.into_iter().map(|(id, user_id, at)| async move {
        let put = SessionPut {
            id: Some(id),
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            user_id,
            ttl_secs: Some(3600),
            ..Default::default()
        };
        store.session_put(session::put(put, &Policy::default(), at).unwrap(), None, at).await.unwrap();
    });
    futures::stream::iter(puts).buffer_unordered(64).collect::<Vec<()>>().await;
}

async fn tokens(store: &Store, count: usize, now: DateTime<Utc>) {
    tokens_of(store, (0..count).map(|_| "alice".to_string()), now).await;
}

/// Issues a token (a family) to `app` for each user in `users`.
async fn tokens_of(store: &Store, users: impl Iterator<Item = String>, now: DateTime<Utc>) {
    let issues = users.map(|user_id| async move {
        store.token_issue(issue_to(&user_id, now), None, now).await.unwrap();
    });
    futures::stream::iter(issues).buffer_unordered(8).collect::<Vec<()>>().await;
}

fn issue_to(user_id: &str, now: DateTime<Utc>) -> token::NewToken {
    let issue = TokenIssue { client_id: "app".into(), user_id: user_id.into(), ..Default::default() };
    token::issue(issue, &Policy::default(), now, &Mint::Random).unwrap()
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
        let (_dir, store) = fresh().await;
        let now = SystemClock.now();
        sessions(&store, ROWS, now).await;
        let keyed = |now| {
            let params = serde_json::json!({ "user_id": "alice" });
            idempotency::call("session.purge", Some("purge-1"), &params, b"server secret", "s1", now).unwrap().keyed
        };
        let (purging, keyed_first) = (store.clone(), keyed(now));
        cut_off_part_way(&store, async move {
            purging.session_purge(&alice(), keyed_first.as_ref(), SystemClock.now()).await
        })
        .await;

        assert_eq!(store.session_purge(&alice(), keyed(now).as_ref(), SystemClock.now()).await.unwrap(), ROWS as u64);
        assert_eq!(store.session_purge(&alice(), keyed(now).as_ref(), SystemClock.now()).await.unwrap(), ROWS as u64);
        assert_eq!(store.stats(SystemClock.now()).await.unwrap().sessions, 0);
        assert_eq!(events_of(&store, "purged").await, ROWS);
    });
}

/// A purge of expired sessions walks them by deadline (a datetime cursor, restarted a second
/// before the last deadline a page took): every one is found, once, whatever page it falls in.
#[test]
fn a_purge_of_expired_sessions_walks_them_by_deadline_and_finds_each_once() {
    run(async {
        let (_dir, store) = fresh().await;
        let now = SystemClock.now();
        // Deadlines 10 ms apart over the last three seconds, put in any order, so that pages
        // end inside a second. Each is a clock reading plus the TTL, as every deadline
        // authstore writes is (`clock::stored_precision`): a deadline on a whole second sorts
        // after the rest of its second in the index, and a purge in that second misses it.
        let at = |i: usize| {
            stored_precision(now - chrono::Duration::milliseconds(1_000 * 3_600 + (i as i64 * 7_919) % 3_000 / 10 * 10))
        };
        put_sessions(&store, (0..ROWS).map(|i| (format!("old-{i}"), None, at(i))).collect()).await;
        sessions(&store, 10, now).await; // live: not purged
        let everything_expired = SessionFilter::default();
        assert_eq!(store.session_purge(&everything_expired, None, SystemClock.now()).await.unwrap(), ROWS as u64);
        assert_eq!(store.stats(SystemClock.now()).await.unwrap().sessions, 10);
        assert_eq!(events_of(&store, "expired").await, ROWS);
    });
}

/// `client.delete` walks the client's families by user, and marks the client as being deleted
/// first: tokens issued to the client while it runs, to users that sort before every page's
/// cursor, are refused or revoked with the rest. None is left live.
#[test]
fn nothing_issued_while_a_client_delete_runs_outlives_it() {
    run(async {
        let (_dir, store) = fresh().await;
        let now = SystemClock.now();
        tokens_of(&store, (0..ROWS).map(|i| format!("u-{i:04}")), now).await;
        let delete = {
            let store = store.clone();
            tokio::spawn(async move { store.client_delete("app", None, SystemClock.now()).await })
        };
        // Issue to users before "u-" all along, until the delete has finished.
        let (mut issued, mut refused) = (Vec::new(), 0);
        for i in 0.. {
            let finished = delete.is_finished();
            let now = SystemClock.now();
            match store.token_issue(issue_to(&format!("a-{i:04}"), now), None, now).await {
                Ok(token) => issued.push(token),
                Err(e) => {
                    assert!(unknown_client(&e), "an issue failed otherwise: {e}");
                    refused += 1;
                }
            }
            if finished {
                break;
            }
        }
        assert!(delete.await.unwrap().unwrap(), "the delete did not delete");
        assert!(refused > 0, "no issue ran during the delete: this proves nothing");
        let filter =
            TokenFilter { client_id: Some(ClientId::parse("client_id", "app".into()).unwrap()), ..Default::default() };
        let live = store.token_list(&filter, None, 1000, SystemClock.now()).await.unwrap();
        assert!(
            live.is_empty(),
            "{} tokens of the deleted client are live ({} issued during the delete)",
            live.len(),
            issued.len()
        );
        let stats = store.stats(SystemClock.now()).await.unwrap();
        assert_eq!((stats.clients, stats.tokens), (0, 0));
        assert_eq!(events_of(&store, "revoked").await, ROWS + issued.len());
    });
}

/// A `client.delete` cut off after its first page leaves the client being deleted: unknown to
/// every method, nothing can be issued for it, a document may not take its id, and it is not
/// listed. A second delete finishes it.
#[test]
fn a_client_delete_cut_off_part_way_leaves_the_client_unknown_until_a_delete_finishes_it() {
    run(async {
        let (_dir, store) = fresh().await;
        let now = SystemClock.now();
        sessions(&store, ROWS, now).await;
        let deleting = store.clone();
        cut_off_part_way(&store, async move { deleting.client_delete("app", None, SystemClock.now()).await }).await;

        let now = SystemClock.now();
        assert!(matches!(store.client_get("app").await, Err(StoreError::Rejected(Error::NotFound(NotFound::Missing)))));
        assert!(store.client_list(None, 10).await.unwrap().is_empty());
        assert!(unknown_client(&store.token_issue(issue_to("bob", now), None, now).await.unwrap_err()));
        let put = SessionPut { client_id: "app".into(), redirect_uri: REDIRECT.into(), ..Default::default() };
        let put = session::put(put, &Policy::default(), now).unwrap();
        assert!(unknown_client(&store.session_put(put, None, now).await.unwrap_err()));

        assert!(store.client_delete("app", None, SystemClock.now()).await.unwrap());
        let stats = store.stats(SystemClock.now()).await.unwrap();
        assert_eq!((stats.clients, stats.sessions), (0, 0));
        assert_eq!(events_of(&store, "purged").await, ROWS);
    });
}

/// A keyed `client.delete` cut off part-way, the client then deleted by another call and
/// registered again: the retry with the key must not take the new registration for the one
/// it was deleting.
#[test]
fn a_keyed_client_delete_retried_after_the_client_was_registered_again_leaves_the_new_one() {
    run(async {
        let (_dir, store) = fresh().await;
        sessions(&store, ROWS, SystemClock.now()).await;
        let keyed = || {
            let params = serde_json::json!({ "client_id": "app" });
            idempotency::call("client.delete", Some("delete-1"), &params, b"server secret", "s1", SystemClock.now())
                .unwrap()
                .keyed
        };
        let (deleting, keyed_first) = (store.clone(), keyed());
        cut_off_part_way(&store, async move {
            deleting.client_delete("app", keyed_first.as_ref(), SystemClock.now()).await
        })
        .await;

        assert!(store.client_delete("app", None, SystemClock.now()).await.unwrap());
        register_app(&store, SystemClock.now()).await;
        assert!(!store.client_delete("app", keyed().as_ref(), SystemClock.now()).await.unwrap());
        assert!(store.client_get("app").await.is_ok(), "the retry deleted the new registration");
    });
}

/// A SurrealKV store in a new directory with `app` registered; the directory goes with the
/// returned guard.
async fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = opened(&Location::SurrealKv(dir.path().join("db").display().to_string())).await;
    (dir, store)
}

/// Runs `change` on a task of its own and cuts it off once it has removed some, not all, of
/// the `ROWS` sessions: what a timeout, a lost connection or a crash does part-way.
async fn cut_off_part_way<T: std::fmt::Debug + Send + 'static>(
    store: &Store,
    change: impl Future<Output = T> + Send + 'static,
) {
    let task = tokio::spawn(change);
    while store.stats(SystemClock.now()).await.unwrap().sessions == ROWS as u64 {
        tokio::task::yield_now().await;
    }
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled(), "the change finished before it was cut off");
    let left = store.stats(SystemClock.now()).await.unwrap().sessions;
    assert!(left > 0, "the change finished before it was cut off: this proves nothing");
}

fn unknown_client(e: &StoreError) -> bool {
    matches!(e, StoreError::Rejected(Error::InvalidClient(InvalidClient::UnknownClient)))
}

/// On a multi-threaded runtime, on threads with the stack SurrealDB wants.
fn run(test: impl std::future::Future<Output = ()> + Send + 'static) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_stack_size(32 << 20).enable_all().build();
    let runtime = runtime.unwrap();
    std::thread::Builder::new().stack_size(32 << 20).spawn(move || runtime.block_on(test)).unwrap().join().unwrap();
}

/// Every file under `dir` with its length, in order.
fn listing(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            files.extend(listing(&entry.path()));
        } else if let Ok(meta) = entry.metadata() {
            files.push((entry.path(), meta.len()));
        }
    }
    files.sort();
    files
}

/// A copy of `from` (a directory tree) at `to`; false if a file went away meanwhile.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> bool {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        let copied = match entry.file_type() {
            Ok(kind) if kind.is_dir() => copy_tree(&entry.path(), &target),
            Ok(_) => std::fs::copy(entry.path(), target).is_ok(),
            Err(_) => false,
        };
        if !copied {
            return false;
        }
    }
    true
}

/// What a crash leaves of the store in `db` (a SIGKILL: its files as written, nothing of its
/// memory), at `image`: the files copied while the store, still open, is quiet (no file
/// changed for half a second, before and during the copy), so that the copy is one moment.
async fn crash_image(db: &std::path::Path, image: &std::path::Path) {
    let started = std::time::Instant::now();
    loop {
        assert!(started.elapsed() < TIMEOUT, "the store did not go quiet");
        let before = listing(db);
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if listing(db) != before {
            continue;
        }
        let _ = std::fs::remove_dir_all(image);
        if copy_tree(db, image) && listing(db) == before {
            return;
        }
    }
}

/// The store at `at` with a write buffer of `memtable_bytes`.
async fn open_with_buffer(at: &std::path::Path, memtable_bytes: u64) -> Store {
    let mut config = config(&Location::SurrealKv(at.display().to_string()));
    config.memory.memtable_bytes = memtable_bytes;
    Store::open_bounded(&config, TIMEOUT).await.unwrap()
}

/// The ids in `ids` that `store` has no session for.
async fn missing(store: &Store, ids: impl Iterator<Item = String>, now: DateTime<Utc>) -> Vec<String> {
    let mut missing = Vec::new();
    for id in ids {
        if store.session_get(&session::get(id.clone(), now).unwrap()).await.is_err() {
            missing.push(id);
        }
    }
    missing
}

/// SurrealKV logs a commit to its write-ahead log, then applies it to the write buffer; a
/// commit that does not fit rotates the buffer (and the log to a new segment) and goes into
/// the new buffer. Once the old buffer is flushed, its log segment is deleted: a commit caught
/// in a rotation must be logged where the next start replays it, or it lives only in memory
/// until the next flush. Every session acknowledged across a dozen rotations must be in a
/// crash image of the store.
#[test]
fn sessions_acknowledged_across_write_buffer_rotations_are_in_a_crash_image() {
    run(async {
        let (dir, store) = fresh().await;
        let now = SystemClock.now();
        const PUT: usize = 4_000;
        let ids = || (0..PUT).map(|i| format!("r-{i:05}"));
        put_sessions(&store, ids().map(|id| (id, None, now)).collect()).await;
        // The background flushes of the rotated buffers finish and delete their log segments:
        // then one segment is left, the one the next start would replay.
        let wal = dir.path().join("db").join("wal");
        let segments = || listing(&wal).iter().filter(|(path, _)| path.extension().is_some_and(|x| x == "wal")).count();
        let started = std::time::Instant::now();
        while segments() > 1 {
            assert!(started.elapsed() < TIMEOUT, "the rotated write buffers were not flushed");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let image = dir.path().join("image");
        crash_image(&dir.path().join("db"), &image).await;
        let lost = missing(&open_with_buffer(&image, WRITE_BUFFER).await, ids(), now).await;
        assert!(lost.is_empty(), "{} acknowledged sessions lost in the crash image: {lost:?}", lost.len());
        drop(store);
    });
}

/// A log segment too large for the write buffer it is replayed into (the buffer made smaller
/// between two starts, or a commit logged just before the rotation it caused) is replayed in
/// parts. Flushing the first parts must not mark the segment done while its rest is in memory
/// and the log goes on in it: after a second crash, the rest and everything acknowledged since
/// the first restart must still be there.
#[test]
fn a_log_segment_replayed_in_parts_is_replayed_again_after_a_second_crash() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemClock.now();
        let (db, first, second) = (dir.path().join("db"), dir.path().join("first"), dir.path().join("second"));
        // 1 000 sessions fit a 4 MiB buffer (one segment, no rotation) and not a 512 KiB one.
        let store = open_with_buffer(&db, 4 << 20).await;
        register_app(&store, now).await;
        let before = || (0..1_000).map(|i| format!("b-{i:05}"));
        put_sessions(&store, before().map(|id| (id, None, now)).collect()).await;
        crash_image(&db, &first).await;
        drop(store);

        // Restarted with the smaller buffer: the segment is replayed in parts.
        let restarted = open_with_buffer(&first, WRITE_BUFFER).await;
        let after = || (0..20).map(|i| format!("a-{i:05}"));
        put_sessions(&restarted, after().map(|id| (id, None, now)).collect()).await;
        crash_image(&first, &second).await;

        let reopened = open_with_buffer(&second, WRITE_BUFFER).await;
        let lost = missing(&reopened, before().chain(after()), now).await;
        assert!(lost.is_empty(), "{} acknowledged sessions lost after the second crash: {lost:?}", lost.len());
        drop(restarted);
    });
}
