//! The expiry scheduler, driven by tokio's paused clock and a manual clock: no sleeping.

use std::sync::Arc;
use std::time::Duration;

use authstore::background::{Background, Timings};
use authstore::clock::{Clock, ManualClock};
use authstore::domain::{Policy, session, token};
use authstore::error::{Error, NotFound};
use authstore::hub::Hub;
use authstore::metrics::Metrics;
use authstore::secret::Mint;
use authstore::store::{EventRecord, Location, Store, StoreConfig, StoreError};
use authstore::types::{SessionPut, TokenIssue, TokenRevoke};
use chrono::{DateTime, Utc};

use crate::support::{REDIRECT, register_app};

const TICK: Duration = Duration::from_millis(100);

/// Runs `test` on a current-thread runtime whose clock starts paused, on a thread with the
/// stack SurrealDB wants.
fn paused(test: impl std::future::Future<Output = ()> + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(32 << 20)
        .spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
            runtime.block_on(test);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn the_scheduler_expires_each_record_within_one_tick_of_its_deadline_and_not_before() {
    paused(async {
        // The manual clock jumps while tokio's barely moves: only the longest sleep, one tick,
        // brings the scheduler round to look.
        let mut s = running(TICK).await;
        for (id, ttl) in [("ten", 10), ("twenty", 20), ("thirty", 30)] {
            s.put(id, ttl).await;
        }

        // Just before the first deadline: several ticks pass, nothing expires.
        s.clock.advance(chrono::Duration::milliseconds(9_999));
        tokio::time::sleep(TICK * 5).await;
        assert!(s.live.try_recv().is_err(), "nothing expires before its deadline");
        assert_eq!(s.store.stats(s.clock.now()).await.unwrap().sessions, 3);

        // At each deadline, the record goes within one tick, with its event.
        for (id, step) in [("ten", 1), ("twenty", 10_000), ("thirty", 10_000)] {
            s.clock.advance(chrono::Duration::milliseconds(step));
            let event = tokio::time::timeout(TICK * 3, s.live.recv()).await.expect("expired within a tick").unwrap();
            assert_eq!((event.kind.as_str(), event.session_id.as_deref()), ("expired", Some(id)));
            let get = session::get(id.into(), s.clock.now()).unwrap();
            assert!(
                matches!(
                    s.store.session_get(&get).await,
                    Err(StoreError::Rejected(Error::NotFound(NotFound::Missing)))
                ),
                "{id} removed with its event"
            );
        }
        assert_eq!(s.store.stats(s.clock.now()).await.unwrap().events_retained, 3);
        s.background.stop().await;
    });
}

/// A store on `mem://` with a registered client "app", and the background loops running on a
/// manual clock with `expiry_tick` as the scheduler's longest sleep.
struct Running {
    store: Store,
    clock: Arc<ManualClock>,
    live: tokio::sync::broadcast::Receiver<Arc<EventRecord>>,
    background: Background,
    _closing: tokio::sync::watch::Sender<bool>,
}

/// A store on memory with the public client `app` registered, and a manual clock; nothing runs
/// on it.
async fn opened() -> (Store, Arc<ManualClock>) {
    let config = StoreConfig {
        location: Location::Memory,
        namespace: "t".into(),
        database: "t".into(),
        username: None,
        password: None,
        memory: authstore::store::Memory::default_for(None),
    };
    // Opening registers this node with deadlines of SurrealDB's own; on a paused clock, which
    // jumps ahead whenever the runtime is idle, those can pass while the open waits on a
    // blocking thread. So the clock runs for the open only.
    tokio::time::resume();
    let store = Store::open(&config).await.unwrap();
    tokio::time::pause();
    let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap()));
    register_app(&store, clock.now()).await;
    (store, clock)
}

async fn running(expiry_tick: Duration) -> Running {
    let (store, clock) = opened().await;
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let hub = Hub::new(64, closing_rx);
    let live = hub.subscribe();
    let timings = Timings { expiry_tick, poll: TICK, ..Timings::default() };
    let background =
        Background::start(store.clone(), clock.clone(), hub.clone(), Arc::new(Metrics::new()), timings).await;
    Running { store, clock, live, background, _closing: closing }
}

impl Running {
    async fn put(&self, id: &str, ttl: u64) {
        self.put_at(id, ttl, self.clock.now()).await;
    }

    /// Puts a session as if at `now`, whatever the clock says.
    async fn put_at(&self, id: &str, ttl: u64, now: DateTime<Utc>) {
        let put = SessionPut {
            id: Some(id.into()),
            client_id: "app".into(),
            redirect_uri: REDIRECT.into(),
            ttl_secs: Some(ttl),
            ..Default::default()
        };
        let new = session::put(put, &Policy::default(), now).unwrap();
        self.store.session_put(new, None, now).await.unwrap();
    }

    /// Moves the manual clock and tokio's together, as the real ones move.
    async fn pass(&self, ms: i64) {
        self.clock.advance(chrono::Duration::milliseconds(ms));
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
    }

    async fn expired(&mut self) -> String {
        let event = tokio::time::timeout(TICK, self.live.recv()).await.expect("expired at its deadline").unwrap();
        assert_eq!(event.kind.as_str(), "expired");
        event.session_id.clone().unwrap_or_default()
    }
}

/// The scheduler sleeps until the next deadline instead of polling: with a longest sleep of an
/// hour, a session written through this instance still expires at its deadline, and one
/// written while the scheduler sleeps for a later deadline wakes it earlier.
#[test]
fn the_scheduler_wakes_for_the_deadlines_written_through_its_instance() {
    paused(async {
        let mut s = running(Duration::from_secs(3600)).await;
        s.put("late", 60).await;
        s.pass(5_000).await;
        // Written while the scheduler sleeps until the first deadline, 55 s away.
        s.put("soon", 10).await;
        s.pass(9_990).await;
        assert!(s.live.try_recv().is_err(), "nothing expires before its deadline");
        s.pass(20).await;
        assert_eq!(s.expired().await, "soon");
        s.pass(44_990 - 20).await;
        assert!(s.live.try_recv().is_err(), "the later session is still ahead");
        s.pass(30).await;
        assert_eq!(s.expired().await, "late");
        s.background.stop().await;
    });
}

/// Writes with later deadlines, arriving faster than the scheduler's pause between passes,
/// neither hold a due deadline off nor wake the scheduler for nothing.
#[test]
fn a_stream_of_later_deadlines_does_not_hold_a_due_one_off() {
    paused(async {
        let mut s = running(Duration::from_secs(3600)).await;
        s.put("soon", 1).await;
        let mut expired_after_ms = None;
        for step in 1..=1_000 {
            s.pass(2).await;
            s.put(&format!("later-{step}"), 60).await;
            if let Ok(event) = s.live.try_recv() {
                assert_eq!(event.session_id.as_deref(), Some("soon"));
                expired_after_ms = Some(step * 2 - 1_000);
                break;
            }
        }
        let late = expired_after_ms.expect("the due session expired while the writes went on");
        assert!((0..=150).contains(&late), "expired {late} ms after its deadline");
        s.background.stop().await;
    });
}

/// Between sweeps a pass looks only from a little before the last one, but a backlog larger
/// than a pass's batch and spread over an hour, all due at once, is still removed in one round
/// of passes: the place a pass looks from moves on only once nothing due is left behind.
#[test]
fn a_backlog_spread_wider_than_a_batch_is_removed_in_one_round() {
    paused(async {
        let mut s = running(TICK).await;
        s.pass(100).await; // the first pass (a sweep) clears the empty store
        for i in 0..1_200u64 {
            s.put(&format!("s{i}"), 3 + i * 3).await;
        }
        s.clock.advance(chrono::Duration::hours(2));
        tokio::time::sleep(TICK * 3).await;
        // More events than the hub keeps for a subscriber: a lag counts what it skipped.
        let mut expired = 0;
        loop {
            match s.live.try_recv() {
                Ok(event) => {
                    assert_eq!(event.kind.as_str(), "expired");
                    expired += 1;
                }
                Err(tokio::sync::broadcast::error::TryRecvError::Lagged(skipped)) => expired += skipped,
                Err(_) => break,
            }
        }
        assert_eq!(expired, 1_200, "every due session expired within a few ticks, not at the next sweep");
        s.background.stop().await;
    });
}

/// A deadline written through this instance that lies before the range the scheduler has
/// cleared (a write stamped with an earlier time) is looked for where it is, not left for the
/// next sweep.
#[test]
fn a_deadline_written_before_the_cleared_range_is_found_at_once() {
    paused(async {
        let mut s = running(TICK).await;
        s.pass(100).await;
        s.clock.advance(chrono::Duration::hours(1));
        s.pass(300).await; // passes clear up to the new time
        let an_hour_ago = s.clock.now() - chrono::Duration::hours(1);
        s.put_at("stale", 60, an_hour_ago).await;
        assert_eq!(s.expired().await, "stale");
        s.background.stop().await;
    });
}

/// A revoked family leaves a record behind for the live-token count (`family_revoked`); it goes
/// with its family at their deadline, in the same pass, so revocations leave nothing stored.
#[test]
fn a_revoked_familys_record_is_removed_with_it() {
    paused(async {
        let (store, clock) = opened().await;
        let now = clock.now();
        let issue =
            TokenIssue { client_id: "app".into(), user_id: "alice".into(), ttl_secs: Some(60), ..Default::default() };
        let issued = store.token_issue(token::issue(issue, &Policy::default(), now, &Mint::Random).unwrap(), None, now);
        let issued = issued.await.unwrap();
        let revoke = TokenRevoke { grant_id: Some(issued.grant_id), ..Default::default() };
        assert_eq!(store.token_revoke(token::revoke_scope(revoke).unwrap(), None, now).await.unwrap(), 1);

        let early =
            store.expire_due(now + chrono::Duration::seconds(59), None, chrono::Duration::hours(1), 100).await.unwrap();
        assert_eq!((early.removed, early.next), (0, Some(issued.expires_at)));
        let due =
            store.expire_due(now + chrono::Duration::seconds(60), None, chrono::Duration::hours(1), 100).await.unwrap();
        assert_eq!(due.removed, 3, "the token, its family and the family's revocation record");
        assert_eq!((due.next, store.stats(now).await.unwrap().tokens), (None, 0));
        let again =
            store.expire_due(now + chrono::Duration::seconds(61), None, chrono::Duration::hours(1), 100).await.unwrap();
        assert_eq!(again.removed, 0, "nothing is left to remove");
    });
}
