//! The hub: this instance's live broadcast of the event log.
//!
//! One reader follows the database's event log in cursor order and broadcasts each event to
//! this instance's subscribers. It reads events sequenced by any instance, so a subscriber here
//! sees changes made through every instance sharing the database. A subscriber that falls
//! behind by more than the channel's capacity is told so (`Lagged`) and catches up from the
//! database; the writers never wait for anyone.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use tokio::sync::{Notify, broadcast, watch};

use crate::store::EventRecord;

/// Shared by the hub's reader (`background.rs`) and every subscription.
#[derive(Clone)]
pub struct Hub {
    sender: broadcast::Sender<Arc<EventRecord>>,
    /// The last cursor broadcast.
    position: Arc<AtomicI64>,
    /// Wakes the reader as soon as this instance sequenced something.
    wake: Arc<Notify>,
    /// Flips to `true` when the server starts shutting down.
    closing: watch::Receiver<bool>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("position", &self.position.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub that keeps the last `capacity` events for subscribers that are behind.
    pub fn new(capacity: usize, closing: watch::Receiver<bool>) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        Hub { sender, position: Arc::new(AtomicI64::new(0)), wake: Arc::new(Notify::new()), closing }
    }

    /// Live events from now on. Subscribe before reading history, then skip what history
    /// already delivered: nothing falls in between.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<EventRecord>> {
        self.sender.subscribe()
    }

    /// Fires when the server starts shutting down.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.clone()
    }

    pub(crate) fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub(crate) fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    /// Sets where the broadcast starts, before anything is published.
    pub(crate) fn publish_position(&self, head: i64) {
        self.position.store(head, Ordering::Release);
    }

    /// Publishes the next event in cursor order.
    pub(crate) fn publish(&self, event: EventRecord) {
        self.position.store(event.seq, Ordering::Release);
        // No receivers is fine: nobody is subscribed on this instance.
        let _ = self.sender.send(Arc::new(event));
    }
}
