//! Serving one subscription: replay the event log from a cursor, then follow the hub, with no
//! gap and no duplicate, and end with a reason and the cursor to resume after.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::{SubscriptionError, SubscriptionResult};
use jsonrpsee::types::ErrorObjectOwned;
use jsonrpsee::{PendingSubscriptionSink, SubscriptionMessage, SubscriptionSink};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;

use super::context::Context;
use super::error::CURSOR_EXPIRED;
use super::params::Params;
use crate::domain::validate;
use crate::error::Error;
use crate::store::{EventKind, EventRecord};
use crate::types::{SessionEvent, Subscribe, TokenEvent};

/// Which of the two event streams a subscription follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Session,
    Token,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Session => "session",
            Stream::Token => "token",
        }
    }

    fn kinds(self) -> &'static [EventKind] {
        match self {
            Stream::Session => EventKind::SESSION,
            Stream::Token => EventKind::TOKEN,
        }
    }

    /// The notification payload for an event of this stream.
    fn message(self, sink: &SubscriptionSink, e: &EventRecord) -> Result<SubscriptionMessage, serde_json::Error> {
        let cursor = e.seq.to_string();
        let blank = String::new;
        match self {
            Stream::Session => notification(
                sink,
                &SessionEvent {
                    cursor,
                    kind: e.kind.to_string(),
                    session_id: e.session_id.clone().unwrap_or_else(blank),
                    client_id: e.client_id.clone().unwrap_or_else(blank),
                    user_id: e.user_id.clone(),
                    at: e.at,
                    expires_at: e.expires_at,
                },
            ),
            Stream::Token => notification(
                sink,
                &TokenEvent {
                    cursor,
                    kind: e.kind.to_string(),
                    token_id: e.token_id.clone().unwrap_or_else(blank),
                    grant_id: e.grant_id.clone().unwrap_or_else(blank),
                    client_id: e.client_id.clone().unwrap_or_else(blank),
                    user_id: e.user_id.clone().unwrap_or_else(blank),
                    reason: e.reason.clone(),
                    at: e.at,
                },
            ),
        }
    }
}

fn notification(sink: &SubscriptionSink, item: &impl Serialize) -> Result<SubscriptionMessage, serde_json::Error> {
    SubscriptionMessage::new(sink.method_name(), sink.subscription_id(), item)
}

/// A validated subscription request.
struct Filter {
    stream: Stream,
    kinds: Option<HashSet<EventKind>>,
    client_id: Option<String>,
    user_id: Option<String>,
    since: Option<i64>,
}

impl Filter {
    fn parse(p: Subscribe, stream: Stream) -> Result<Self, Error> {
        let kinds = match p.kinds {
            None => None,
            Some(names) => {
                let mut kinds = HashSet::new();
                for name in &names {
                    match name.parse::<EventKind>() {
                        Ok(kind) if stream.kinds().contains(&kind) => kinds.insert(kind),
                        _ => {
                            return Err(Error::invalid(
                                "kinds",
                                format!("{name:?} is not a {} event kind", stream.name()),
                            ));
                        }
                    };
                }
                Some(kinds)
            }
        };
        if let Some(client_id) = &p.client_id {
            validate::id("client_id", client_id)?;
        }
        if let Some(user_id) = &p.user_id {
            validate::user_id("user_id", user_id)?;
        }
        let since = p
            .since
            .map(|s| s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| Error::invalid("since", "not a cursor")))
            .transpose()?;
        Ok(Filter { stream, kinds, client_id: p.client_id, user_id: p.user_id, since })
    }

    fn matches(&self, e: &EventRecord) -> bool {
        e.stream == self.stream.name()
            && self.kinds.as_ref().is_none_or(|k| k.contains(&e.kind))
            && self.client_id.as_ref().is_none_or(|c| e.client_id.as_ref() == Some(c))
            && self.user_id.as_ref().is_none_or(|u| e.user_id.as_ref() == Some(u))
    }
}

/// How many events one replay read fetches.
const REPLAY_BATCH: usize = 256;

/// Serves one subscription until the client leaves, the server shuts down, or the subscriber
/// is too slow; the last two close it with a reason and the cursor to resume from.
pub(super) async fn serve(
    cx: Arc<Context>,
    pending: PendingSubscriptionSink,
    params: Params<Subscribe>,
    stream: Stream,
) -> SubscriptionResult {
    let filter = match params.into_inner().and_then(|p| Filter::parse(p, stream)) {
        Ok(filter) => filter,
        Err(e) => {
            pending.reject(ErrorObjectOwned::from(e)).await;
            return Ok(());
        }
    };
    // Subscribe to the live feed before reading history, so nothing falls in between.
    let mut live = cx.hub.subscribe();
    let mut closing = cx.hub.closing();
    let bounds = match cx.store.log_bounds().await {
        Ok(bounds) => bounds,
        Err(e) => {
            pending.reject(ErrorObjectOwned::from(Error::from(e))).await;
            return Ok(());
        }
    };
    let mut cursor = match filter.since {
        None => bounds.head,
        Some(since) if since > bounds.head => {
            pending.reject(ErrorObjectOwned::from(Error::invalid("since", "is ahead of the event log"))).await;
            return Ok(());
        }
        Some(since) => {
            // Events after `since` must all still be retained.
            if since < bounds.resume_from() {
                let oldest = bounds.resume_from().to_string();
                pending.reject(ErrorObjectOwned::from(Error::CursorExpired { oldest })).await;
                return Ok(());
            }
            since
        }
    };
    let sink = pending.accept().await?;
    let send_timeout = cx.subscriber_send_timeout;
    let _open = OpenSubscription::new(&cx);

    loop {
        // Catch up from the log: everything retained after the cursor. Each event must be the
        // one right after the cursor; anything else means what lay between was pruned while
        // this subscriber was reading, and it is closed rather than silently skipped ahead.
        loop {
            // A long catch-up stops with the server and with its caller, as the live feed does.
            if sink.is_closed() {
                return Ok(());
            }
            if *closing.borrow() {
                return Err(closed("shutdown", cursor, &"the server is shutting down"));
            }
            let page =
                cx.store.events_page(cursor, REPLAY_BATCH).await.map_err(|e| closed("unavailable", cursor, &e))?;
            let full = page.events.len() == REPLAY_BATCH;
            for event in page.events {
                match follows(cursor, event.seq) {
                    Follows::Seen => continue,
                    Follows::Next => {}
                    Follows::Gap => return Err(cursor_expired(cursor, event.seq - 1)),
                }
                deliver(&sink, &filter, &event, cursor, send_timeout).await?;
                cursor = event.seq;
            }
            if !full {
                // The handover: the log ends here. If its head is further on, the events up
                // to the head were pruned (the page and the head are one read).
                if cursor < page.head {
                    return Err(cursor_expired(cursor, page.head));
                }
                break;
            }
        }
        // Then follow the live feed, skipping what the log already delivered. A subscriber
        // that falls behind the feed (a burst larger than the hub keeps) goes back to the log;
        // only one that stops reading is closed. An event that does not follow the cursor
        // sends it back to the log too, which decides whether the events between are there
        // or were pruned.
        loop {
            tokio::select! {
                () = sink.closed() => return Ok(()),
                _ = closing.changed() => return Err(closed("shutdown", cursor, &"the server is shutting down")),
                received = live.recv() => match received {
                    Ok(event) => match follows(cursor, event.seq) {
                        Follows::Seen => {}
                        Follows::Next => {
                            deliver(&sink, &filter, &event, cursor, send_timeout).await?;
                            cursor = event.seq;
                        }
                        Follows::Gap => break,
                    },
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return Err(closed("shutdown", cursor, &"the event feed stopped")),
                },
            }
        }
    }
}

/// Where an event stands relative to the last cursor a subscription delivered.
#[derive(Debug, PartialEq, Eq)]
enum Follows {
    /// At or before the cursor: already delivered.
    Seen,
    /// The cursor's successor: deliver it.
    Next,
    /// Further on: something in between is missing.
    Gap,
}

fn follows(cursor: i64, seq: i64) -> Follows {
    if seq <= cursor {
        Follows::Seen
    } else if seq.checked_sub(cursor) == Some(1) {
        Follows::Next
    } else {
        Follows::Gap
    }
}

/// Sends one event if it matches; a subscriber that does not take it within `timeout` is
/// closed, so it can never hold anything else up.
async fn deliver(
    sink: &SubscriptionSink,
    filter: &Filter,
    event: &EventRecord,
    cursor: i64,
    timeout: Duration,
) -> Result<(), SubscriptionError> {
    if !filter.matches(event) {
        return Ok(());
    }
    let message = filter.stream.message(sink, event).map_err(|e| closed("unavailable", cursor, &e))?;
    sink.send_timeout(message, timeout)
        .await
        .map_err(|_| closed("slow_consumer", cursor, &"the subscriber stopped reading"))
}

/// The error notification that ends a subscription: why, and the cursor to resume after.
fn closed(reason: &str, cursor: i64, detail: &dyn std::fmt::Display) -> SubscriptionError {
    if reason == "unavailable" {
        tracing::warn!(error = %detail, "subscription ended by a storage failure");
    }
    let body = json!({ "reason": reason, "cursor": cursor.to_string(), "message": detail.to_string() });
    match serde_json::value::to_raw_value(&body) {
        Ok(raw) => SubscriptionError::from_json(raw),
        Err(_) => SubscriptionError::from(reason),
    }
}

/// The notification that ends a subscription whose next events were pruned before it read
/// them: `1006 cursor_expired`, the cursor it reached and `oldest`, the oldest cursor that
/// still resumes cleanly (as in the refusal of a `since` that is too old).
fn cursor_expired(cursor: i64, oldest: i64) -> SubscriptionError {
    let body = json!({
        "code": CURSOR_EXPIRED,
        "reason": "cursor_expired",
        "cursor": cursor.to_string(),
        "oldest": oldest.to_string(),
        "message": "events after the cursor were pruned before they were delivered",
    });
    match serde_json::value::to_raw_value(&body) {
        Ok(raw) => SubscriptionError::from_json(raw),
        Err(_) => SubscriptionError::from("cursor_expired"),
    }
}

/// Counts a subscription in the open-subscriptions gauge while it lives.
struct OpenSubscription(Arc<crate::metrics::Metrics>);

impl OpenSubscription {
    fn new(cx: &Context) -> Self {
        cx.metrics.subscription_opened();
        OpenSubscription(cx.metrics.clone())
    }
}

impl Drop for OpenSubscription {
    fn drop(&mut self) {
        self.0.subscription_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_successor_of_the_cursor_is_delivered() {
        assert_eq!(follows(5, 4), Follows::Seen);
        assert_eq!(follows(5, 5), Follows::Seen);
        assert_eq!(follows(5, 6), Follows::Next);
        assert_eq!(follows(5, 7), Follows::Gap);
        assert_eq!(follows(0, 1), Follows::Next);
        assert_eq!(follows(i64::MAX, i64::MAX), Follows::Seen);
    }
}
