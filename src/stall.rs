//! The stall guard: a client that stops reading its answers stops being read, and is closed.
//!
//! jsonrpsee reads a WebSocket's frames without waiting for their answers to be sent: it spawns
//! a task per frame, each waits to put its answer in the connection's bounded channel, which
//! only the send task drains, and the send task waits on the socket. A client that keeps
//! sending but never reads therefore grows the server's memory as fast as it can send (≈ 3 GB
//! in 10 s from four loopback connections, docs/benchmarks.md), and keeps its connection slot:
//! WebSocket pings do not help, since closing waits for the send task stuck in that same write.
//!
//! [`StallGuard`] wraps each accepted socket and gives it TCP's own flow control, one level up:
//! - **While a write waits on the client** (the socket's send buffer is full), at most
//!   `read_ahead` more bytes (one message) are read from it, so no more frames become tasks;
//!   reading resumes as soon as a write makes progress. A client that reads, however slowly,
//!   is slowed to its own pace; its unread frames wait in its kernel buffers, not in the
//!   server's memory. The read-ahead lets a client finish the message it is writing, which a
//!   WebSocket library that writes messages and pongs under one lock (soketto) needs before
//!   it can read again.
//! - **While the frames read and not yet answered exceed a limit**, nothing more is read
//!   either. jsonrpsee clones the connection's HTTP request extensions into every frame's task
//!   and drops the clone once the answer is computed (for a frame that is not even JSON, once it
//!   is sent), so a [`BacklogTicket`] among those extensions counts the frames in hand. Without
//!   this, a client sending faster than the answers are computed queues tasks as fast as it
//!   can send, whether or not it reads.
//!
//! - **While the answers computed and not yet taken by the socket exceed a byte budget**,
//!   nothing more is read. The RPC middleware adds each answer's size (through
//!   [`BacklogTicket::unsent`]); the guard subtracts every byte the socket takes. Those bytes
//!   include frame headers, pings and subscription notifications that were never added, so the
//!   count is never above the answers really waiting (it stops at zero): reads are held only
//!   while answers do wait and the socket takes them; once a write waits on the client, the
//!   read-ahead rule above applies instead (so the stall limit closes a client that stopped),
//!   and once a write fails, the count holds nothing back. Calls already read wait
//!   ([`Unsent::room`]) before computing their answers while the budget is exceeded, so they
//!   hold their requests, not their answers. Without this, a client that asks for large answers and reads them slowly
//!   holds up to `--connection-buffer` of them in jsonrpsee's channel.
//!
//! The timer only runs while a write is pending: a connection that writes nothing, or whose
//! writes go through, costs no timer. A client that pipelines more requests than the socket
//! buffers hold and reads nothing until it has sent them all waits on itself, and is reset at
//! the limit; clients that read while they send are not.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use futures::task::AtomicWaker;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// The frames one connection has in hand (read, and not yet answered) and the bytes of its
/// answers not yet taken by the socket.
#[derive(Debug)]
struct Backlog {
    /// Live [`BacklogTicket`]s.
    held: AtomicUsize,
    /// Reading pauses above this many.
    limit: usize,
    /// Bytes of answers computed and not yet written (a lower bound: see the module docs).
    unsent: AtomicUsize,
    /// Reading pauses, and no more answers are computed, above this many unsent bytes.
    budget: usize,
    /// The reader parked on a full backlog.
    reader: AtomicWaker,
    /// Calls waiting for the unsent bytes to come back within the budget.
    calls: Notify,
    /// A write failed or the guard tripped: nothing more will be sent, so the unsent count
    /// holds nothing back.
    abandoned: AtomicBool,
}

impl Backlog {
    fn full(&self) -> bool {
        self.held.load(Ordering::Acquire) > self.limit
    }

    /// The socket took `n` bytes: fewer answer bytes wait (never below zero). Wakes a reader
    /// parked on the budget once the waiting bytes are back within it.
    fn sent(&self, n: usize) {
        if self.unsent.load(Ordering::Acquire) == 0 {
            return;
        }
        let before =
            self.unsent.fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n))).unwrap_or(0);
        if before > self.budget && before.saturating_sub(n) <= self.budget {
            self.reader.wake();
            self.calls.notify_waiters();
        }
    }

    /// Whether reading waits: too many frames in hand, or answers over the budget waiting while
    /// the socket takes them. (While a write waits on the client, the read-ahead applies
    /// instead: a client may need to finish the message it is writing before it can read.)
    fn holds_reads(&self, write_waiting: bool) -> bool {
        self.full() || (!write_waiting && self.over_budget())
    }

    fn over_budget(&self) -> bool {
        self.unsent.load(Ordering::Acquire) > self.budget && !self.abandoned.load(Ordering::Acquire)
    }

    /// Nothing more will be written: releases the reader and the calls held by the count,
    /// which nothing would lower any more.
    fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
        self.reader.wake();
        self.calls.notify_waiters();
    }
}

/// A connection's count of answer bytes not yet sent, for the RPC middleware to add to.
#[derive(Debug, Clone)]
pub struct Unsent(Arc<Backlog>);

impl Unsent {
    /// An answer of `bytes` was computed and goes to the connection's send queue.
    pub fn answered(&self, bytes: usize) {
        self.0.unsent.fetch_add(bytes, Ordering::AcqRel);
    }

    /// Resolves once the answers waiting for the socket are within the budget: a call waits
    /// here before computing its answer, so a client that reads slowly holds requests in hand,
    /// not answers. Never waits on a count that nothing would lower: the count is at most what
    /// really waits, which the socket takes or the stall limit ends.
    pub async fn room(&self) {
        // Within the budget (nearly always): no waiter registered, no lock taken.
        if !self.0.over_budget() {
            return;
        }
        loop {
            let notified = self.0.calls.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.0.over_budget() {
                return;
            }
            notified.await;
        }
    }
}

/// Put among a connection's request extensions, where jsonrpsee clones it into every frame's
/// task: while the clones held exceed the limit, the connection is not read.
#[derive(Debug)]
pub struct BacklogTicket(Arc<Backlog>);

impl BacklogTicket {
    /// The connection's unsent-answer count (not a ticket: holding it counts no frame).
    pub fn unsent(&self) -> Unsent {
        Unsent(self.0.clone())
    }
}

impl Clone for BacklogTicket {
    fn clone(&self) -> Self {
        self.0.held.fetch_add(1, Ordering::AcqRel);
        BacklogTicket(self.0.clone())
    }
}

impl Drop for BacklogTicket {
    fn drop(&mut self) {
        let held = self.0.held.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if held <= self.0.limit {
            self.0.reader.wake();
        }
    }
}

/// A byte stream the guard can wrap, told once when the guard gives up on it.
pub trait Guarded: AsyncRead + AsyncWrite + Unpin {
    /// Called once, when the write stall limit is exceeded.
    fn on_stall(&self) {}
}

impl Guarded for TcpStream {
    /// The peer reads nothing, so the bytes still in the kernel's send buffer will never be
    /// delivered: with a zero linger, closing the socket discards them and sends a reset, instead
    /// of the kernel keeping the orphaned socket and its full send buffer while it probes a
    /// zero window. Only done on a stalled socket: a normal close still flushes.
    fn on_stall(&self) {
        if let Err(e) = self.set_zero_linger() {
            tracing::debug!(error = %e, "could not set a zero linger on a stalled connection");
        }
    }
}

/// For tests: an in-memory pipe with a bounded buffer stalls like a socket.
#[cfg(test)]
impl Guarded for tokio::io::DuplexStream {}

/// The wakers of the two sides of a connection. The stall timer is polled with a waker that
/// wakes both: whichever side still polls the guard when the deadline passes trips it, even if
/// the side that last polled the timer has gone away (jsonrpsee stops reading at shutdown and
/// after an inactivity timeout, while its writer is parked on the socket).
#[derive(Debug, Default)]
struct Sides {
    reader: Mutex<Option<Waker>>,
    writer: Mutex<Option<Waker>>,
}

impl Sides {
    fn set(slot: &Mutex<Option<Waker>>, cx: &Context<'_>) {
        let mut slot = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => *slot = Some(cx.waker().clone()),
        }
    }

    fn wake(slot: &Mutex<Option<Waker>>) {
        let waker = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Wake for Sides {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        Sides::wake(&self.reader);
        Sides::wake(&self.writer);
    }
}

/// Wraps a connection: holds reads back while the client takes none of the answers or too many
/// frames are in hand, and fails everything once a write has been pending for `limit`.
///
/// `Unpin` (the timer is boxed), `Send` and `'static`, as `serve_with_graceful_shutdown`
/// requires of its IO.
pub struct StallGuard<T = TcpStream> {
    inner: T,
    backlog: Arc<Backlog>,
    limit: Duration,
    /// Bytes that may still be read while a write waits (see `read_ahead` in [`StallGuard::new`]).
    read_ahead: usize,
    /// Bytes read since a write started waiting.
    read_while_waiting: usize,
    /// The deadline of the current stall. Allocated at the first stall and reset afterwards.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write or flush has returned `Pending` since the timer was last reset, and no byte was
    /// written since.
    armed: bool,
    /// The limit was exceeded: every later read and write fails.
    tripped: bool,
    /// The parked reader and writer, woken by progress, by the timer and by the trip.
    sides: Arc<Sides>,
}

impl<T: Guarded> StallGuard<T> {
    /// `limit`: how long a write may wait with no byte taken. `read_ahead`: how many bytes are
    /// still read from the client while a write waits on it; at least one message
    /// (`--max-message-bytes`), so that a client whose WebSocket library holds one lock for
    /// writing a message and for answering a ping (soketto does) can always finish the message
    /// it is writing, then answer, then read. `backlog`: frames in hand above which nothing is
    /// read. `budget`: bytes of answers waiting for the socket above which nothing is read.
    /// Must be created inside a tokio runtime with the timer enabled.
    pub fn new(inner: T, limit: Duration, read_ahead: usize, backlog: usize, budget: usize) -> (Self, BacklogTicket) {
        let backlog = Arc::new(Backlog {
            held: AtomicUsize::new(1),
            limit: backlog,
            unsent: AtomicUsize::new(0),
            budget,
            reader: AtomicWaker::new(),
            calls: Notify::new(),
            abandoned: AtomicBool::new(false),
        });
        let ticket = BacklogTicket(backlog.clone());
        let guard = Self {
            inner,
            backlog,
            limit,
            read_ahead,
            read_while_waiting: 0,
            timer: None,
            armed: false,
            tripped: false,
            sides: Arc::default(),
        };
        (guard, ticket)
    }

    /// Whether the guard gave up on the connection.
    #[cfg(test)]
    pub fn is_tripped(&self) -> bool {
        self.tripped
    }

    fn stalled_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("the peer read nothing for {:?} while a write was pending", self.limit),
        )
    }

    /// A write made progress (`n` bytes taken): the peer is reading, so reading from it
    /// resumes, unless too many answer bytes still wait.
    fn progressed(&mut self, n: usize) {
        self.backlog.sent(n);
        self.read_while_waiting = 0;
        if self.armed {
            self.armed = false;
            Sides::wake(&self.sides.reader);
        }
    }

    /// A write or flush is waiting on the peer. Starts the stall clock if it is not running, and
    /// polls the timer (with a waker for both sides) so the guard is tripped at the deadline
    /// even if the socket never becomes writable. `Ready(Err)` once the deadline has passed.
    fn poll_stall<R>(&mut self) -> Poll<io::Result<R>> {
        if !self.armed {
            let Some(deadline) = Instant::now().checked_add(self.limit) else {
                // A limit too far out to represent: never trips.
                return Poll::Pending;
            };
            match self.timer.as_mut() {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
            // A reader held by the unsent count may now take the read-ahead.
            self.backlog.reader.wake();
        }
        let Some(timer) = self.timer.as_mut() else {
            return Poll::Pending;
        };
        let both = Waker::from(self.sides.clone());
        match timer.as_mut().poll(&mut Context::from_waker(&both)) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.trip();
                Poll::Ready(Err(self.stalled_error()))
            }
        }
    }

    fn trip(&mut self) {
        if self.tripped {
            return;
        }
        self.tripped = true;
        self.armed = false;
        tracing::debug!(limit = ?self.limit, "closing a connection whose peer stopped reading");
        self.inner.on_stall();
        self.sides.wake_by_ref();
        self.backlog.abandon();
    }

    /// Runs one write-side operation of the inner stream: fails at once once tripped; a result
    /// that took bytes (`took`, how many) disarms the clock and resumes reading; `Pending` runs
    /// the clock. A flush or shutdown never counts as progress: a TCP flush is always ready,
    /// whether or not the peer reads.
    fn write_side<R>(
        &mut self,
        cx: &mut Context<'_>,
        took: fn(&R) -> usize,
        op: impl FnOnce(Pin<&mut T>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        if self.tripped {
            return Poll::Ready(Err(self.stalled_error()));
        }
        match op(Pin::new(&mut self.inner), cx) {
            Poll::Ready(Ok(done)) => {
                let n = took(&done);
                if n > 0 {
                    self.progressed(n);
                }
                Poll::Ready(Ok(done))
            }
            Poll::Ready(Err(e)) => {
                // The peer is gone: what waits will never be sent.
                self.backlog.abandon();
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                Sides::set(&self.sides.writer, cx);
                self.poll_stall()
            }
        }
    }
}

impl<T: Guarded> AsyncRead for StallGuard<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.tripped {
            return Poll::Ready(Err(this.stalled_error()));
        }
        // A write is waiting on the peer and the read-ahead is spent: read nothing more until
        // that write goes through. The reader watches the clock too, so the limit holds even if
        // the write was abandoned.
        if this.armed && this.read_while_waiting >= this.read_ahead {
            Sides::set(&this.sides.reader, cx);
            return this.poll_stall();
        }
        // Read nothing more until the answers in hand are computed, or taken by the socket.
        if this.backlog.holds_reads(this.armed) {
            this.backlog.reader.register(cx.waker());
            if this.backlog.holds_reads(this.armed) {
                return Poll::Pending;
            }
        }
        let result = if this.armed {
            // Only what the read-ahead allows while a write waits.
            let mut spare = [0; 8192];
            let room = (this.read_ahead - this.read_while_waiting).min(spare.len()).min(buf.remaining());
            let mut limited = ReadBuf::new(&mut spare[..room]);
            let result = Pin::new(&mut this.inner).poll_read(cx, &mut limited);
            this.read_while_waiting += limited.filled().len();
            buf.put_slice(limited.filled());
            result
        } else {
            Pin::new(&mut this.inner).poll_read(cx, buf)
        };
        if result.is_pending() {
            Sides::set(&this.sides.reader, cx);
        }
        result
    }
}

impl<T: Guarded> AsyncWrite for StallGuard<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().write_side(cx, |n| *n, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().write_side(cx, |n| *n, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    /// Forwarded: hyper picks its write strategy (queued `writev` or one flattened buffer) from
    /// this; without it, a wrapped `TcpStream` would switch hyper to the flattening copy.
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_side(cx, |()| 0, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().write_side(cx, |()| 0, |io, cx| io.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(10);

    fn guard(inner: tokio::io::DuplexStream) -> StallGuard<tokio::io::DuplexStream> {
        StallGuard::new(inner, LIMIT, 0, 1024, usize::MAX).0
    }

    fn assert_send_unpin_static<X: Send + Unpin + 'static>() {}

    #[test]
    fn the_guard_is_what_serve_with_graceful_shutdown_wants() {
        assert_send_unpin_static::<StallGuard<TcpStream>>();
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_the_peer_never_reads_fails_at_the_limit() {
        let (_peer, server) = tokio::io::duplex(64);
        let mut guard = guard(server);
        let started = Instant::now();
        let err = guard.write_all(&[0; 1024]).await.err().map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= LIMIT, "not before the limit");
        assert!(guard.is_tripped());
        // Fused: nothing more is read or written.
        assert!(guard.write(&[0]).await.is_err());
        assert!(guard.read(&mut [0; 8]).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_reader_keeps_the_connection() {
        let (mut peer, server) = tokio::io::duplex(64);
        let reader = tokio::spawn(async move {
            let mut buf = [0; 64];
            let mut total = 0;
            while total < 4096 {
                tokio::time::sleep(LIMIT / 2).await;
                match peer.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => total += n,
                }
            }
            total
        });
        let mut guard = guard(server);
        // Each chunk waits half the limit for the reader; progress resets the clock every time,
        // though the whole write takes far longer than the limit.
        assert!(guard.write_all(&[0; 4096]).await.is_ok());
        assert!(!guard.is_tripped());
        assert_eq!(reader.await.ok(), Some(4096));
    }

    #[tokio::test(start_paused = true)]
    async fn a_parked_reader_is_woken_when_the_guard_trips() {
        let (_peer, server) = tokio::io::duplex(64);
        let (mut read_half, mut write_half) = tokio::io::split(guard(server));
        let reader = tokio::spawn(async move { read_half.read(&mut [0; 8]).await.map_err(|e| e.kind()) });
        tokio::task::yield_now().await;
        assert!(write_half.write_all(&[0; 1024]).await.is_err());
        assert_eq!(reader.await.ok(), Some(Err(io::ErrorKind::TimedOut)));
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_read_while_a_write_waits_on_the_peer() {
        let (mut peer, server) = tokio::io::duplex(64);
        peer.write_all(b"hello").await.unwrap();
        let (mut read_half, mut write_half) = tokio::io::split(guard(server));
        let writer = tokio::spawn(async move { write_half.write_all(&[7; 1024]).await.map_err(|e| e.kind()) });
        tokio::task::yield_now().await;
        let mut got = [0; 5];
        let held = tokio::time::timeout(LIMIT / 2, read_half.read_exact(&mut got)).await;
        assert!(held.is_err(), "the request waiting in the pipe is not read while the answer waits");
        // The peer reads the answer: the write goes through and reading resumes.
        let mut answer = vec![0; 1024];
        peer.read_exact(&mut answer).await.unwrap();
        assert_eq!(writer.await.ok(), Some(Ok(())));
        read_half.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_held_back_trips_the_guard_when_the_write_is_abandoned() {
        let (_peer, server) = tokio::io::duplex(64);
        let (mut read_half, mut write_half) = tokio::io::split(guard(server));
        // The write starts, stalls, and is dropped before its deadline.
        let abandoned = tokio::time::timeout(LIMIT / 10, write_half.write_all(&[0; 1024])).await;
        assert!(abandoned.is_err());
        let started = Instant::now();
        let read = read_half.read(&mut [0; 8]).await.map_err(|e| e.kind());
        assert_eq!(read, Err(io::ErrorKind::TimedOut));
        assert!(started.elapsed() >= LIMIT * 8 / 10, "at the first write's deadline, not before");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_read_while_the_backlog_is_full() {
        let (mut peer, server) = tokio::io::duplex(64);
        peer.write_all(b"hello").await.unwrap();
        let (mut guard, ticket) = StallGuard::new(server, LIMIT, 0, 4, usize::MAX);
        // The connection's own ticket plus five frames in hand: two over the limit.
        let in_hand: Vec<BacklogTicket> = (0..5).map(|_| ticket.clone()).collect();
        let mut got = [0; 5];
        let held = tokio::time::timeout(LIMIT / 2, guard.read_exact(&mut got)).await;
        assert!(held.is_err(), "nothing is read over the limit");
        // One answer computed: still over the limit, still held.
        let mut in_hand = in_hand.into_iter();
        drop(in_hand.next());
        let reader = tokio::spawn(async move {
            let mut got = [0; 5];
            guard.read_exact(&mut got).await.map(|_| got)
        });
        tokio::time::sleep(LIMIT / 2).await;
        assert!(!reader.is_finished(), "held while over the limit");
        drop(in_hand.next());
        assert_eq!(reader.await.ok().and_then(Result::ok), Some(*b"hello"));
        drop(in_hand);
    }

    /// Answers waiting for the socket over the budget hold reading; the socket taking enough of
    /// them resumes it. What the socket takes beyond the answers counted (frame headers,
    /// notifications) never makes the count go below zero.
    #[tokio::test(start_paused = true)]
    async fn nothing_is_read_while_the_unsent_answers_exceed_the_budget() {
        let (mut peer, server) = tokio::io::duplex(1024);
        peer.write_all(b"hello").await.unwrap();
        let (guard, ticket) = StallGuard::new(server, LIMIT, 0, 1024, 100);
        let (mut read_half, mut write_half) = tokio::io::split(guard);
        // Bytes sent before any answer was counted leave the count at zero.
        write_half.write_all(&[0; 20]).await.unwrap();
        ticket.unsent().answered(150);
        let reader = tokio::spawn(async move {
            let mut got = [0; 5];
            read_half.read_exact(&mut got).await.map(|_| got)
        });
        tokio::time::sleep(LIMIT / 2).await;
        assert!(!reader.is_finished(), "held while 150 bytes wait, over the budget of 100");
        write_half.write_all(&[0; 40]).await.unwrap();
        tokio::time::sleep(LIMIT / 10).await;
        assert!(!reader.is_finished(), "still held with 110 waiting");
        write_half.write_all(&[0; 10]).await.unwrap();
        let got = tokio::time::timeout(LIMIT / 10, reader).await;
        assert_eq!(got.ok().and_then(Result::ok).and_then(Result::ok), Some(*b"hello"), "read once 100 waited");
        drop(ticket);
    }

    /// A client that goes away while answers over the budget wait for it: the write fails, and
    /// the reader held by the count is released to see the end, instead of waiting for bytes
    /// nothing will send.
    #[tokio::test(start_paused = true)]
    async fn a_failed_write_releases_what_the_unsent_answers_held() {
        let (peer, server) = tokio::io::duplex(64);
        let (guard, ticket) = StallGuard::new(server, LIMIT, 0, 1024, 100);
        let (mut read_half, mut write_half) = tokio::io::split(guard);
        ticket.unsent().answered(150);
        let reader = tokio::spawn(async move { read_half.read(&mut [0; 8]).await.map_err(|e| e.kind()) });
        tokio::time::sleep(LIMIT / 10).await;
        assert!(!reader.is_finished(), "held while the answers wait");
        drop(peer);
        assert!(write_half.write_all(&[0; 10]).await.is_err(), "the client is gone");
        let read = tokio::time::timeout(LIMIT / 10, reader).await;
        assert!(matches!(read, Ok(Ok(Ok(0) | Err(_)))), "the reader sees the end: {read:?}");
        let room = tokio::time::timeout(LIMIT / 10, ticket.unsent().room()).await;
        assert!(room.is_ok(), "calls are no longer held");
    }

    /// Over the budget, a write waiting on the client still leaves it the read-ahead (it may
    /// need to finish a message before it reads), and then the stall limit applies.
    #[tokio::test(start_paused = true)]
    async fn over_the_budget_a_waiting_write_still_leaves_the_read_ahead() {
        let (mut peer, server) = tokio::io::duplex(64);
        peer.write_all(b"hello world").await.unwrap();
        let (guard, ticket) = StallGuard::new(server, LIMIT, 5, 1024, 100);
        let (mut read_half, mut write_half) = tokio::io::split(guard);
        // Still over the budget once the pipe has taken its 64 bytes.
        ticket.unsent().answered(1000);
        let writer = tokio::spawn(async move { write_half.write_all(&[0; 1024]).await.map_err(|e| e.kind()) });
        let mut got = [0; 5];
        let read = tokio::time::timeout(LIMIT / 10, read_half.read_exact(&mut got)).await;
        assert!(matches!(read, Ok(Ok(5))), "the read-ahead is read: {read:?}");
        assert_eq!(&got, b"hello");
        let more = tokio::time::timeout(LIMIT * 2, read_half.read(&mut [0; 8])).await;
        assert!(matches!(more, Ok(Err(_))), "then held until the stall limit trips: {more:?}");
        assert_eq!(writer.await.ok(), Some(Err(io::ErrorKind::TimedOut)));
        drop(peer);
    }

    /// The timer wakes both sides: a reader that polled it last and then went away (jsonrpsee
    /// stops reading at shutdown) does not leave the parked writer stuck past the deadline.
    #[tokio::test(start_paused = true)]
    async fn a_writer_is_tripped_at_the_deadline_after_the_reader_went_away() {
        let (_peer, server) = tokio::io::duplex(64);
        let (mut read_half, mut write_half) = tokio::io::split(guard(server));
        let writer = tokio::spawn(async move { write_half.write_all(&[0; 1024]).await.map_err(|e| e.kind()) });
        tokio::task::yield_now().await;
        // The reader polls once while the write waits (so it is the timer's last poller), then
        // is dropped.
        assert!(tokio::time::timeout(LIMIT / 10, read_half.read(&mut [0; 8])).await.is_err());
        drop(read_half);
        let outcome = tokio::time::timeout(LIMIT * 2, writer).await;
        assert_eq!(outcome.ok().and_then(Result::ok), Some(Err(io::ErrorKind::TimedOut)));
    }

    /// While a write waits, a client may still send up to the read-ahead, then nothing.
    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_leaves_room_for_the_read_ahead_only() {
        let (mut peer, server) = tokio::io::duplex(64);
        peer.write_all(b"hello").await.unwrap();
        let (mut read_half, mut write_half) = tokio::io::split(StallGuard::new(server, LIMIT, 3, 1024, usize::MAX).0);
        let writer = tokio::spawn(async move { write_half.write_all(&[7; 1024]).await.map_err(|e| e.kind()) });
        tokio::task::yield_now().await;
        let mut got = [0; 5];
        let mut read = 0;
        while let Ok(Ok(n)) = tokio::time::timeout(LIMIT / 10, read_half.read(&mut got[read..])).await {
            read += n;
        }
        assert_eq!(&got[..read], b"hel", "three bytes of read-ahead while the answer waits");
        let mut answer = vec![0; 1024];
        peer.read_exact(&mut answer).await.unwrap();
        assert_eq!(writer.await.ok(), Some(Ok(())));
        read_half.read_exact(&mut got[read..]).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
