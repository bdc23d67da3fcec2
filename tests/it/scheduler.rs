//! The expiry scheduler, driven by tokio's paused clock and a manual clock: no sleeping.

use std::sync::Arc;
use std::time::Duration;

use authstore::background::{Background, Timings};
use authstore::clock::{Clock, ManualClock};
use authstore::domain::client::{self, Origin};
use authstore::domain::{Policy, session};
use authstore::error::{Error, NotFound};
use authstore::hub::Hub;
use authstore::metrics::Metrics;
use authstore::store::{Location, Store, StoreConfig, StoreError};
use authstore::types::{ClientMetadata, SessionPut};
use chrono::DateTime;

use crate::support::REDIRECT;

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
        let config = StoreConfig {
            location: Location::Memory,
            namespace: "t".into(),
            database: "t".into(),
            username: None,
            password: None,
        };
        let store = Store::open(&config).await.unwrap();
        let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(1_800_000_000, 0).unwrap()));
        let (_closing, closing_rx) = tokio::sync::watch::channel(false);
        let hub = Hub::new(64, closing_rx);
        let mut live = hub.subscribe();
        let timings = Timings { expiry_tick: TICK, poll: TICK, ..Timings::default() };
        let background =
            Background::start(store.clone(), clock.clone(), hub.clone(), Arc::new(Metrics::new()), timings).await;

        let meta = ClientMetadata {
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: Some("none".into()),
            ..Default::default()
        };
        let meta = client::metadata(meta, Origin::Registered).unwrap();
        store.client_register(client::registration("app".into(), meta, None), None, clock.now()).await.unwrap();
        for (id, ttl) in [("ten", 10), ("twenty", 20), ("thirty", 30)] {
            let put = SessionPut {
                id: Some(id.into()),
                client_id: "app".into(),
                redirect_uri: REDIRECT.into(),
                ttl_secs: Some(ttl),
                ..Default::default()
            };
            let new = session::put(put, &Policy::default(), clock.now()).unwrap();
            store.session_put(new, None, clock.now()).await.unwrap();
        }

        // Just before the first deadline: several ticks pass, nothing expires.
        clock.advance(chrono::Duration::milliseconds(9_999));
        tokio::time::sleep(TICK * 5).await;
        assert!(live.try_recv().is_err(), "nothing expires before its deadline");
        assert_eq!(store.stats(clock.now()).await.unwrap().sessions, 3);

        // At each deadline, the record goes within one tick, with its event.
        for (id, step) in [("ten", 1), ("twenty", 10_000), ("thirty", 10_000)] {
            clock.advance(chrono::Duration::milliseconds(step));
            let event = tokio::time::timeout(TICK * 3, live.recv()).await.expect("expired within a tick").unwrap();
            assert_eq!((event.kind.as_str(), event.session_id.as_deref()), ("expired", Some(id)));
            let get = session::get(id.into(), clock.now()).unwrap();
            assert!(
                matches!(store.session_get(&get).await, Err(StoreError::Rejected(Error::NotFound(NotFound::Missing)))),
                "{id} removed with its event"
            );
        }
        assert_eq!(store.stats(clock.now()).await.unwrap().events_retained, 3);
        background.stop().await;
    });
}
